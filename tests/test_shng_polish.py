"""Issue 10 through the SmartHomeNG test double: what a SmartHomeNG user hits in the first hour.

1. an empty ``dlms_obis_readout`` switches the raw readout on (dlms 1.9.5: presence = on);
2. ``dlms_scale`` reaches the plugin as written (decimal comma works, a bad value gets the
   plugin's own error, not SmartHomeNG's silent blank);
3. a line of bare 7-bit characters (network IR head) or a socket carrying 8-bit bytes with the
   parity bit is read after one try of the other reading, and the log says how to configure it;
   when nothing works the error names the parity errors;
4. warnings that repeat every cycle are rate-limited (first, then a summary);
5. start-up noise: no ``visu_acl`` NOTICEs from the structs, joining a push stream mid-message
   is INFO, not WARNING.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import socket
import threading
from decimal import Decimal
from typing import Any, Dict, Iterator, List

import pytest
import serial
import yaml

from shng_double import SmartHome
from shng_double.testing import ROOT, plugin_package, plugins_dir, support, wait_for

from dlms_protocol.simulator import SimulatedMeter
from dlms_protocol.simulator.meters import MeterImage, load_meter
from dlms_protocol.simulator.push import PushSimulator


def short_e350() -> MeterImage:
    """The E350 with seven lines of its data message (error register, serial and the energy and
    power registers these tests read): where a test reads or waits out the whole message at
    300 Bd, 5 s instead of 28 s."""
    full = load_meter("lgz_e350")
    lines = full.block.split(b"\r\n")
    keep = [line for line in lines if line.split(b"(")[0] in (b"F.F", b"0.0.0", b"1.8.0", b"1.8.1", b"1.8.2",
                                                                 b"2.8.0", b"1.7.0")]
    return dataclasses.replace(full, block=b"\r\n".join(keep) + b"\r\n!\r\n")


@pytest.fixture
def shng() -> Iterator[SmartHome]:
    sh = SmartHome(plugins_dir())
    yield sh
    sh.stop()


def start(sh: SmartHome, section: Dict[str, Any], items: Dict[str, Any]) -> Any:
    loaded = sh.load_plugins({"dlms": dict(section, plugin_name="dlms")})
    assert len(loaded) == 1
    sh.load_item_tree(items)
    sh.start()
    return sh.plugin("dlms")


def value(sh: SmartHome, path: str) -> Any:
    item = sh.items.return_item(path)
    assert item is not None, f"item {path} was not created"
    return item()


def messages(caplog, level: int, text: str) -> List[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level and text in r.getMessage()]


@pytest.fixture
def meter() -> Iterator[SimulatedMeter]:
    m = SimulatedMeter("lgz_e350").start()
    yield m
    m.stop()


# =========================================================================== 1. dlms_obis_readout
@pytest.mark.parametrize("written, on", [
    ("", True), ("yes", True), ("readout", True), (None, True), ([], True), (True, True), ("True", True),
    ("no", False), ("false", False), ("OFF", False), ("0", False), (False, False), (0, False),
])
def test_readout_attribute_presence_means_on(written: Any, on: bool) -> None:
    assert support().is_enabled(written) is on


def test_empty_readout_attribute_gets_the_readout(shng: SmartHome, meter: SimulatedMeter, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="plugins.dlms")
    items = {"meter": {
        "readout_empty": {"type": "str", "dlms_obis_readout": ""},
        "readout_yes": {"type": "str", "dlms_obis_readout": "yes"},
        "readout_off": {"type": "str", "dlms_obis_readout": "no"},
        "connected": {"type": "bool", "dlms_status": "connected"},
    }}
    start(shng, {"serialport": meter.port, "update_cycle": 60}, items)
    wait_for(lambda: value(shng, "meter.connected"), timeout=30)
    text = value(shng, "meter.readout_empty")
    assert "/LGZ5ZMF110CC.S27" in text and "1.8.0(012345.678*kWh)" in text
    assert value(shng, "meter.readout_yes") == text
    assert value(shng, "meter.readout_off") == ""
    assert "meter.readout_off: dlms_obis_readout is 'no', so the raw readout is off" in caplog.text


# =========================================================================== 2. dlms_scale
def test_parsed_attributes_pass_smarthomeng_unchanged() -> None:
    """Attributes the plugin parses itself must not be cast (and blanked) by SmartHomeNG first."""
    attrs = yaml.safe_load((ROOT / "plugin.yaml").read_text(encoding="utf-8"))["item_attributes"]
    assert {name: a["type"] for name, a in attrs.items()} == {
        "dlms_obis_code": "foo", "dlms_obis_readout": "str", "dlms_status": "str", "dlms_unit": "str",
        "dlms_scale": "str", "dlms_profile": "str"}


def test_scale_with_decimal_comma_and_a_bad_scale(shng: SmartHome, meter: SimulatedMeter, caplog) -> None:
    caplog.set_level(logging.INFO)
    items = {"meter": {
        "half": {"type": "num", "dlms_obis_code": "1.8.0", "dlms_scale": "0,5"},
        "ct": {"type": "num", "dlms_obis_code": "1.7.0", "dlms_scale": 40},
        "bad": {"type": "num", "dlms_obis_code": "1.8.0", "dlms_scale": "abc"},
        "unquoted": {"type": "num", "dlms_obis_code": 1.8},
        "as_text": {"type": "num", "dlms_obis_code": "['1.8.1', 0, 'Value', 'num']"},
        "connected": {"type": "bool", "dlms_status": "connected"},
    }}
    plugin = start(shng, {"serialport": meter.port, "update_cycle": 60}, items)
    wait_for(lambda: value(shng, "meter.connected"), timeout=30)
    assert value(shng, "meter.half") == pytest.approx(12345.678 * 0.5)   # 1.8.0(012345.678*kWh)
    assert value(shng, "meter.ct") == pytest.approx(0.845 * 40)          # 1.7.0(00.845*kW)
    assert value(shng, "meter.as_text") == 8123.456                      # 1.8.1(008123.456*kWh)
    assert value(shng, "meter.bad") == 0                                  # never written
    assert "meter.bad" not in plugin._obis_items
    errors = messages(caplog, logging.ERROR, "")
    assert any("item meter.bad: dlms_scale 'abc' is not a number: write e.g. 1000 or 0.001" in m for m in errors)
    assert any("item meter.unquoted: dlms_obis_code 1.8 was read as a number" in m for m in errors)
    assert "can not be converted" not in caplog.text                     # SmartHomeNG passed them through


# =========================================================================== 3. character format
def test_seven_bit_line_is_read_after_one_try(shng: SmartHome, caplog) -> None:
    """A pty that delivers bare 7-bit characters (a network head): found by itself, and the log says how."""
    caplog.set_level(logging.DEBUG, logger="plugins.dlms")
    meter = SimulatedMeter(short_e350(), parity_bit=False).start()
    try:
        items = {"meter": {"energy": {"type": "num", "dlms_obis_code": "1.8.0"},
                           "connected": {"type": "bool", "dlms_status": "connected"}}}
        # retries 0: with a retry, the meter first sends its whole readout at 300 Bd (no ACK came)
        plugin = start(shng, {"serialport": meter.port, "update_cycle": 60, "retries": 0}, items)
        wait_for(lambda: value(shng, "meter.connected"), timeout=110)   # after the 300 Bd readout without ACK
        assert value(shng, "meter.energy") == 12345.678
        found = messages(caplog, logging.WARNING, "delivers 7-bit characters without a parity bit")
        assert len(found) == 1 and "Set char_format: 8N1" in found[0]
        assert plugin._reader.reading == "plain"
        assert plugin.status()["counters"]["parity_errors"] > 0         # the first try is counted, not hidden
        # the next read uses the reading that worked at once: no second try, no second warning
        before = plugin.status()["successes"]
        # the first readout may still be closing its port when the items are written: read_now
        # starts a readout only when none runs (False until then), so it is asked again
        wait_for(plugin.read_now, timeout=30)
        wait_for(lambda: plugin.status()["successes"] > before, timeout=30)
        assert len(messages(caplog, logging.WARNING, "delivers 7-bit characters")) == 1
    finally:
        shng.stop()
        meter.stop()


def test_parity_errors_are_named_when_nothing_works() -> None:
    """7-bit line and a damaged data message: the error says parity errors, not 'check the head'."""
    plugin_package()
    from plugins.dlms.dlms_protocol.config import ReadoutConfig
    from plugins.dlms.dlms_protocol.errors import NoResponseError
    from plugins.dlms.dlms_protocol.iec62056_21.reader import D0Reader

    meter = SimulatedMeter(short_e350(), parity_bit=False, corrupt_at=120).start()
    try:
        reader = D0Reader(ReadoutConfig(port=meter.port, retries=0))
        with pytest.raises(NoResponseError) as err:     # the first reading's error, explained
            reader.read()
        text = str(err.value)
        assert text.startswith("no identification within")
        assert "characters arrived with a parity error" in text
        assert "(read as 7-bit characters without parity bit it failed too)" in text
        assert "char_format 8N1" in text
        assert reader.reading == "parity"                                  # nothing that worked is kept
        assert reader.stats.get("checksum_errors") >= 1                  # the 8N1 reading got the damaged BCC
    finally:
        meter.stop()


class _RawBridge:
    """A TCP server that passes bytes unchanged to and from a meter's pty (a bridge whose UART runs 8N1)."""

    def __init__(self, port_path: str) -> None:
        self.serial = serial.Serial(port_path, 300, timeout=0.05)
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(1)
        self.url = f"socket://127.0.0.1:{self.server.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.server.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except socket.timeout:
                continue
            conn.settimeout(0.02)
            try:
                while not self._stop.is_set():
                    try:
                        data = conn.recv(4096)
                        if not data:
                            break
                        self.serial.write(data)
                    except socket.timeout:
                        pass
                    back = self.serial.read(4096)
                    if back:
                        conn.sendall(back)
            except OSError:
                pass
            finally:
                conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.server.close()
        self.serial.close()


def test_socket_with_parity_bits_is_read_after_one_try(caplog) -> None:
    """socket:// starts with plain bytes; a bridge that passes the parity bit needs it added here."""
    plugin_package()
    from plugins.dlms.dlms_protocol.config import ReadoutConfig
    from plugins.dlms.dlms_protocol.iec62056_21.reader import D0Reader

    caplog.set_level(logging.WARNING)
    meter = SimulatedMeter(short_e350(), baudrate=300).start()
    bridge = _RawBridge(meter.port)
    try:
        reader = D0Reader(ReadoutConfig(port=bridge.url, retries=0, baudrate=300))
        assert reader.reading == "plain"
        data = reader.read()
        assert any(r.code == "1.8.0" and str(r.value) == "12345.678" for r in data.readings)
        assert reader.reading == "parity"
        found = messages(caplog, logging.WARNING, "passes the meter's 7E1 characters as 8-bit bytes")
        assert len(found) == 1 and "SerialConfig 7E1" in found[0]
        reader.close()
    finally:
        bridge.stop()
        meter.stop()


# =========================================================================== 4. repeated warnings
def test_repeat_limiter_first_then_summary() -> None:
    now = [1000.0]
    limiter = support().RepeatLimiter(600.0, clock=lambda: now[0])
    assert limiter.check("slow") == (True, 0)
    for n in range(1, 10):
        now[0] += 60.0
        assert limiter.check("slow") == (False, n)                          # counted, not logged
    now[0] += 60.0
    assert limiter.check("slow") == (True, 9)                               # 600 s later: one line with the count
    assert limiter.summary(9) == " (9 more times in the last 10 min)"
    assert limiter.check("other") == (True, 0)                              # keys are independent
    limiter.clear("slow")
    assert limiter.check("slow") == (True, 0)


def test_readout_longer_than_cycle_warns_once_then_summarises(shng: SmartHome, meter: SimulatedMeter,
                                                              caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="plugins.dlms")
    items = {"meter": {"energy": {"type": "num", "dlms_obis_code": "1.8.0"}}}
    plugin = start(shng, {"serialport": meter.port, "update_cycle": 1}, items)
    clock = [0.0]
    plugin._repeats.clock = lambda: clock[0]
    wait_for(lambda: plugin.status()["overlaps"] >= 3 and plugin.status()["successes"] >= 2, timeout=60)
    assert len(messages(caplog, logging.WARNING, "readout skipped: the previous one is still running")) == 1
    assert len(messages(caplog, logging.WARNING, "longer than update_cycle (1 s)")) == 1
    assert len(messages(caplog, logging.DEBUG, "readout skipped")) >= 2     # the repeats stay in the debug log
    clock[0] = 601.0
    overlaps = plugin.status()["overlaps"]
    wait_for(lambda: plugin.status()["overlaps"] > overlaps, timeout=30)
    summary = messages(caplog, logging.WARNING, "readout skipped")
    assert len(summary) == 2 and "more time" in summary[1] and "in the last 10 min)" in summary[1]


def test_overlap_advice_goes_by_the_last_readout_that_delivered(shng: SmartHome, meter: SimulatedMeter,
                                                                 caplog) -> None:
    """A failed attempt is no measure of a readout: a missing port fails at once, and the advice
    after it said "last complete readout took 0.0 s" (found with a USB adapter pulled and put back)."""
    import importlib
    import time

    caplog.set_level(logging.WARNING, logger="plugins.dlms")
    items = {"meter": {"energy": {"type": "num", "dlms_obis_code": "1.8.0"}}}
    plugin = start(shng, {"serialport": meter.port, "update_cycle": 1}, items)
    errors = importlib.import_module(type(plugin).__module__ + ".dlms_protocol.errors")
    wait_for(lambda: plugin.status()["successes"] >= 1, timeout=60)
    took = plugin.status()["duration"]
    assert took > 1.0  # (a readout of this meter takes seconds: the cycle of 1 s overlaps it)
    # just after the next readout began: a failed attempt of 0.0 s in between, then the overlaps
    wait_for(lambda: plugin._read_lock.locked() and time.monotonic() - plugin._read_started < 0.3, timeout=30)
    plugin._record_error(errors.TransportError("port gone", "plug it in"), 0.0)
    plugin._repeats.clear("overlap")
    caplog.clear()
    wait_for(lambda: messages(caplog, logging.WARNING, "readout skipped"), timeout=30)
    (advice,) = messages(caplog, logging.WARNING, "readout skipped")
    assert "complete readout took 0.0 s" not in advice and "complete readout took" in advice


# =========================================================================== 5. start-up messages
def test_structs_log_no_undefined_attribute_without_smartvisu(shng: SmartHome, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    shng.load_plugins({"dlms": {"plugin_name": "dlms", "serialport": "/dev/null-dlms-test"}})
    shng.load_item_tree({"hausanschluss": {"struct": "dlms.grid_meter"}})
    assert value(shng, "hausanschluss.energy_import") == 0
    assert value(shng, "hausanschluss.health.connected") is False
    assert "Attribute is undefined" not in caplog.text
    # the double really reports attributes nobody declares (so the assertion above can fail)
    shng.load_item_tree({"other": {"type": "num", "visu_acl": "ro"}})
    assert "attribute 'visu_acl': Attribute is undefined" in caplog.text


def test_joining_a_push_stream_mid_message_is_no_warning(caplog) -> None:
    plugin_package()
    from plugins.dlms.dlms_protocol.config import ListenerConfig
    from plugins.dlms.dlms_protocol.dlms.listener import PushListener

    caplog.set_level(logging.INFO)
    sim = PushSimulator(wrapper="hdlc", seed=5)
    first, second, third = sim.emit(), sim.emit(), sim.emit()
    passed_on: list = []
    # the listener's decoder, fed as its thread would: the decoder is sans-io, the listener logs
    decoder = PushListener(ListenerConfig(port="test"), lambda data: None, on_error=passed_on.append).decoder
    got = decoder.feed(first[len(first) // 2:] + second + third)       # the port opened mid-message
    assert len(got) == 2
    joined = [r for r in caplog.records if "noise skipped" in r.getMessage()]
    assert joined and all(r.levelno == logging.INFO for r in joined)
    assert "listening began inside a message" in joined[0].getMessage()
    # said and counted, but marked as what a start brings: the plugin counted a failure for it and
    # logged 'meter data valid again' at every other start
    assert [e.lead_in for e in passed_on] == [True] and decoder.stats.get("framing_errors") == 1
    caplog.clear()
    got = decoder.feed(b"\x55" * 40 + sim.emit())                         # noise later on is a warning
    assert len(got) == 1
    assert [r.levelno for r in caplog.records if "noise skipped" in r.getMessage()] == [logging.WARNING]
    assert [e.lead_in for e in passed_on] == [True, False] and decoder.stats.get("framing_errors") == 2
    decoder.reset()                                                        # reopened port: joining again
    caplog.clear()
    frame = sim.emit()
    assert len(decoder.feed(frame[5:] + sim.emit())) == 1
    assert [r.levelno for r in caplog.records if "noise skipped" in r.getMessage()] == [logging.INFO]


def test_snippet_offers_second_value_groups(shng: SmartHome, meter: SimulatedMeter) -> None:
    items = {"meter": {"connected": {"type": "bool", "dlms_status": "connected"},
                       "max_at": {"type": "foo", "dlms_obis_code": ["1.6.0", 1, "Value", "ZST10"]}}}
    plugin = start(shng, {"serialport": meter.port, "update_cycle": 60}, items)
    wait_for(lambda: value(shng, "meter.connected"), timeout=30)
    snippet = plugin.webif_data()["snippet"]
    assert "visu_acl" not in snippet
    tree = yaml.safe_load(snippet)["meter"]
    demand = next(node for node in tree.values() if node.get("dlms_obis_code") in ("1.6.0", "1-0:1.6.0*255"))
    code = demand["dlms_obis_code"]
    assert demand["index_1"] == {"type": "foo", "dlms_obis_code": [code, 1, "Value", "ZST10"]}
    # pasted as it is, the offered item gets the time of the maximum demand: 1.6.0(04.812*kW)(2403121815)
    import datetime
    assert value(shng, "meter.max_at") == datetime.datetime(2024, 3, 12, 18, 15)


def test_the_checksum_state_is_shown_in_the_page_language(shng: SmartHome, meter: SimulatedMeter) -> None:
    """The status line 'Prüfsumme' of a D0 meter was the core's English text in the German page."""
    items = {"meter": {"connected": {"type": "bool", "dlms_status": "connected"}}}
    plugin = start(shng, {"serialport": meter.port, "update_cycle": 60}, items)
    wait_for(lambda: value(shng, "meter.connected"), timeout=30)
    assert plugin.status()["checksum"] == "BCC required (the meter sends one)"  # (the log and the API: English)
    german = "BCC verlangt (der Zähler sendet sie)"
    page = shng.webif("dlms").index()
    assert german in page and "the meter sends one" not in page
    assert json.loads(shng.webif("dlms").get_data_html("overview"))["status"]["checksum"] == german


def _child_groups(snippet: str) -> Dict[str, Any]:
    """Item name -> its ``index_N`` children, for every item of a snippet that has any."""
    tree = yaml.safe_load(snippet)["meter"]
    return {name: {k: v for k, v in node.items() if k.startswith("index_")} for name, node in tree.items()
            if any(k.startswith("index_") for k in node)}


def test_push_and_sml_snippets_offer_only_value_groups_the_meter_sent() -> None:
    """A DLMS push or SML reading has one value group: what its decoder notes about it (the type
    it came in, an SML status word) is no second one. Offered as ``index_1`` (as before), the
    pasted item would have received the label ``dlms_type``; bound by hand, it gets a clear error."""
    from dlms_protocol.config import ListenerConfig
    from dlms_protocol.dlms.decoder import PushDecoder
    from dlms_protocol.dlms.payload import interpret_text
    from dlms_protocol.model import MeterData
    from dlms_protocol.simulator.sml import SmlSimulator
    from dlms_protocol.sml.decoder import SmlDecoder
    from test_push_profiles import _telegram

    ps = support()
    push = PushDecoder(ListenerConfig(port="test")).feed(PushSimulator(wrapper="hdlc", seed=4).emit())
    sml = SmlDecoder().feed(SmlSimulator(seed=4).build())
    assert len(push) == 1 and len(sml) == 1
    for data, label in ((push[0].to_meter_data(), "dlms_type"), (sml[0].to_meter_data(), "sml_type")):
        assert len(data.readings) >= 8 and _child_groups(ps.items_snippet(data)) == {}
        energy = next(r for r in data.readings if r.obis is not None and r.obis.short() == "1.8.0")
        assert label in dict(energy.details)  # (still known: the decoder's own JSON and checks use it)
        with pytest.raises(ps.ValueProblem, match="no index 1"):
            ps.value_group(energy, 1)

    # a DSMR line inside a push does have two: the gas meter's capture time, then its reading;
    # the index is the bracket's position on the line, as for the same line in a readout
    line = "0-1:24.2.1(230817150000S)(01234.567*m3)"
    text = interpret_text(_telegram(["0-0:1.0.0(230817152425S)", "1-0:1.8.0(007112944*Wh)", line]))
    gas = text.by_code()["0-1:24.2.1.255"]
    assert (gas.value, gas.unit, gas.raw, gas.extra) == (Decimal("1234.567"), "m3", "230817150000S",
                                                         (("01234.567", "m3"),))
    assert ps.value_group(gas, 0) == ("230817150000S", None) and ps.value_group(gas, 1) == ("01234.567", "m3")
    from dlms_protocol.iec62056_21.datablock import parse_readout
    readout = parse_readout(_telegram([line]), use_checksum=True).to_meter_data().readings[0]
    assert [ps.value_group(readout, i) for i in (0, 1)] == [ps.value_group(gas, i) for i in (0, 1)]
    data = MeterData.of("push", text.readings, 0.0, text.timestamp, None, "", b"", "dsmr", "none", None)
    groups = _child_groups(ps.items_snippet(data))
    assert list(groups) == ["obis_24_2_1"]
    assert groups["obis_24_2_1"]["index_1"]["dlms_obis_code"] == ["0-1:24.2.1*255", 1, "Value", "num"]


# =========================================================================== 6. web interface
WEB_ITEMS = {"meter": {
    "energy": {"type": "num", "dlms_obis_code": "1.8.0"},
    "ghost": {"type": "num", "dlms_obis_code": "99.99.99"},
    "max_at": {"type": "num", "dlms_obis_code": ["1.6.0", 1, "Value", "ZST10"]},
    "readout": {"type": "str", "dlms_obis_readout": ""},
    "connected": {"type": "bool", "dlms_status": "connected"},
}}


@pytest.mark.parametrize("language, texts, not_texts", [
    ("de", ["Code 99.99.99 ist nicht in den Daten dieses Zählers", "Zeichen", "Erfolgreiche Lesungen/Nachrichten",
            "Empfangene Bytes", "Auslesungen", "Dauer Identifikation (s)", "Weitere Wertegruppen"],
     ["is not in the data", " characters<", ">reads<", ">bytes<"]),
    ("en", ["code 99.99.99 is not in the data of this meter", " characters", "Successful readouts/messages",
            "Bytes received", "Readouts", "Duration identification (s)", "Further value groups"],
     ["ist nicht in den Daten", "Zeichen<"]),
])
def test_web_interface_speaks_the_language(meter: SimulatedMeter, language: str, texts: List[str],
                                           not_texts: List[str]) -> None:
    sh = SmartHome(plugins_dir(), language=language)
    try:
        plugin = start(sh, {"serialport": meter.port, "update_cycle": 60}, WEB_ITEMS)
        wait_for(lambda: value(sh, "meter.connected"), timeout=30)
        webif = sh.webif("dlms")
        page = webif.index()
        for text in texts:
            assert text in page, text
        for text in not_texts:
            assert text not in page, text
        # every table is a DataTable, initialised the way the official plugins do it
        assert "$(window).trigger('datatables_defaults')" in page
        for table in ("itemtable", "configtable", "codetable", "statstable"):
            assert f'<table id="{table}"' in page and f"$('#{table}').DataTable(" in page
        # the second value group of 1.6.0(04.812*kW)(2403121815) is shown with its index
        assert "[1] 2403121815" in page
        data = json.loads(webif.get_data_html("overview"))
        problem = {i["path"]: i["problem"] for i in data["items"]}["meter.ghost"]
        assert problem.startswith("Code 99.99.99" if language == "de" else "code 99.99.99")
        assert data["labels"]["checksum_errors"] == ("Prüfsummenfehler" if language == "de" else "Checksum errors")
        assert "code 99.99.99 is not in the data" in plugin._item_problems["meter.ghost"]   # the log stays English
        # OBIS meanings and the snippet's comments in the interface's language too
        names = {c["normalized"]: c["name"] for c in data["discovered"]}
        assert names["1.8.0"] == ("Wirk Bezug (+A), Zählerstand" if language == "de" else
                                  "Active import (+A), energy")
        assert ("# Wirk Bezug (+A)" if language == "de" else "# Active import (+A)") in data["snippet"]
    finally:
        sh.stop()


def test_unquoted_formats_in_plugin_yaml_need_no_quotes(shng: SmartHome, caplog) -> None:
    """YAML reads an unquoted 8E1 as 80.0 (seen in a real SmartHomeNG 1.11): no WARNING, the meant format."""
    caplog.set_level(logging.INFO)
    loaded = shng.load_plugins({
        "dlms": {"plugin_name": "dlms", "serialport": "/dev/null-a", "mode": "listen", "listen_format": 80.0},
        "dlms_d0": {"plugin_name": "dlms", "instance": "d0", "serialport": "/dev/null-b", "char_format": 70.0},
    })
    assert len(loaded) == 2
    listener = shng.plugin("dlms")._listener_config
    assert (listener.bytesize, listener.parity, listener.stopbits) == (8, "E", 1)
    assert ("listen_format", "8E1") in shng.plugin("dlms").config_rows()  # the web interface showed 80.0
    assert shng.plugin("dlms_d0")._readout_config.char_format == "7E1"
    assert "Invalid value" not in caplog.text and "invalid value" not in caplog.text
    fmt = support().format_name
    assert [fmt(v) for v in ("8e1", " 8N1 ", "80.0", 80.0, "70.0", "7E1")] == ["8E1", "8N1", "8E1", "8E1", "7E1", "7E1"]


def test_a_bad_format_stops_the_start_with_the_plugins_own_error(shng: SmartHome, caplog) -> None:
    assert shng.load_plugins({"dlms": {"plugin_name": "dlms", "serialport": "/dev/null-a", "mode": "listen",
                                       "listen_format": "8X1"}}) == []
    assert "serial format '8X1' unknown: write data bits, parity, stop bits such as 8E1 or 8N1" in caplog.text
    assert shng.load_plugins({"dlms_b": {"plugin_name": "dlms", "instance": "b", "serialport": "/dev/null-b",
                                         "char_format": "9Z9"}}) == []
    assert "character format '9Z9' unknown" in caplog.text


# =========================================================================== 7. user_doc
def _logged_texts() -> List[str]:
    """The fixed start of every message the plugin class logs at INFO or above."""
    import ast
    source = (ROOT / "__init__.py").read_text(encoding="utf-8")
    texts = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        name = node.func.attr
        args = node.args
        if name in ("error", "warning", "info", "exception") and isinstance(node.func.value, ast.Attribute) \
                and node.func.value.attr == "logger":
            first = args[0] if args else None
        elif name == "_log_once":
            first = args[2] if len(args) > 2 else None
        elif name == "_log_repeat":
            first = args[1] if len(args) > 1 else None
        else:
            continue
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            texts.append(first.value)
    return texts


def test_troubleshooting_explains_every_message_the_plugin_logs() -> None:
    doc = (ROOT / "user_doc.rst").read_text(encoding="utf-8")
    section = doc.split("Meldungen im Log", 1)[1]
    texts = _logged_texts()
    assert len(texts) >= 20
    missing = []
    for text in texts:
        words = text.split("%")[0].split("(")[0].strip(" :;,")[:45]
        if len(words) < 6:          # '%s' alone, or 'item %s: %s': the message is the error's own text
            continue
        if words not in section:
            missing.append(words)
    assert missing == []
