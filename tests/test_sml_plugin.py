"""The SmartHomeNG plugin (test double) reading SML: ``protocol: auto`` recognises it, items get
the values the simulator sent, the reduced data set is logged and shown in the status with how to
unlock it, and a line of damaged transmissions gets the diagnosis in the log."""
from __future__ import annotations

import importlib
import logging
from typing import Iterator

import pytest

from shng_double import SmartHome
from shng_double.testing import plugins_dir, wait_for

from dlms_protocol.simulator.sml import SmlSimulator

pytestmark = pytest.mark.slow


@pytest.fixture
def shng() -> Iterator[SmartHome]:
    sh = SmartHome(plugins_dir())
    yield sh
    sh.stop()


def start(sh: SmartHome, port: str, **extra) -> object:
    (plugin,) = sh.load_plugins({"dlms": dict(plugin_name="dlms", mode="listen", serialport=port,
                                              listen_baudrate=9600, listen_format="8N1", **extra)})
    sh.load_item_tree({"meter": {
        "energy": {"type": "num", "dlms_obis_code": "1-0:1.8.0*255"},
        "power": {"type": "num", "dlms_obis_code": "16.7.0"},
        "server": {"type": "str", "dlms_obis_code": "0.0.9"},
    }})
    sh.start()
    return plugin


def test_auto_reads_an_sml_meter_into_items(shng) -> None:
    sim = SmlSimulator(seed=11)
    port = sim.open_pty(baudrate=9600, parity="N")
    try:
        plugin = start(shng, port)  # protocol left at its default: auto
        wait_for(lambda: plugin._listener is not None and plugin._listener.connected)
        wait_for(sim.reader_ready)
        assert sim.send_once()
        wait_for(lambda: plugin.status()["successes"] > 0)
        assert shng.items.return_item("meter.energy")() == pytest.approx(float(sim.last_registers["1-0:1.8.0*255"]))
        assert shng.items.return_item("meter.power")() == pytest.approx(float(sim.last_registers["1-0:16.7.0*255"]))
        assert plugin._listener.detected_protocol == "sml"
        # the server ID as everywhere else (web page header, CLI, JSON, MQTT): upper-case hex; it was
        # lower case in the item and the code table only (seen in a real SmartHomeNG)
        assert shng.items.return_item("meter.server")() == sim.server_id.hex().upper()
    finally:
        sim.stop()


def test_reduced_data_set_is_logged_and_in_the_status(shng, caplog) -> None:
    caplog.set_level(logging.WARNING)
    sim = SmlSimulator(seed=12, reduced=True)
    port = sim.open_pty(baudrate=9600, parity="N")
    try:
        plugin = start(shng, port, protocol="sml")
        wait_for(lambda: plugin._listener is not None and plugin._listener.connected)
        wait_for(sim.reader_ready)
        assert sim.send_once()
        wait_for(lambda: plugin.status()["successes"] > 0)
        (note,) = plugin.status()["notes"]
        assert "reduced data set" in note and "PIN" in note and "InF" in note
        assert note in caplog.text
        assert shng.items.return_item("meter.energy")() == pytest.approx(float(sim.last_registers["1-0:1.8.0*255"]))
    finally:
        sim.stop()


def test_damaged_transmissions_only_give_the_diagnosis(shng, caplog) -> None:
    caplog.set_level(logging.WARNING)
    sim = SmlSimulator(seed=13)
    port = sim.open_pty(baudrate=9600, parity="N")
    try:
        plugin = start(shng, port, protocol="sml", listen_timeout=5)
        wait_for(lambda: plugin._listener is not None and plugin._listener.connected)
        wait_for(sim.reader_ready)
        for _ in range(3):
            bad = bytearray(sim.build())
            bad[60] ^= 0x04
            assert sim.pty.send(bytes(bad))
        wait_for(lambda: "whose CRC fails" in caplog.text, timeout=30)
        assert plugin.status()["successes"] == 0
        assert shng.items.return_item("meter.energy")() == 0  # never a value from a damaged transmission
        assert plugin.status()["counters"].get("checksum_errors", 0) >= 2
    finally:
        sim.stop()


def test_protocol_sml_listens_at_9600_8n1_unless_told(shng) -> None:
    """``protocol: sml`` alone: the plugin listened at the DLMS default 2400 8E1 and an SML meter
    only gave garbage (seen in a real SmartHomeNG 1.11: bytes counted, no message, the watchdog's
    'wrong speed or format' after a minute). Speed and format left out are the protocol's usual."""
    sim = SmlSimulator(seed=13)
    port = sim.open_pty(baudrate=9600, parity="N")
    try:
        (plugin,) = shng.load_plugins({"dlms": dict(plugin_name="dlms", mode="listen", serialport=port,
                                                    protocol="sml")})
        shng.load_item_tree({"meter": {"energy": {"type": "num", "dlms_obis_code": "1-0:1.8.0*255"}}})
        shng.start()
        rows = dict(plugin.config_rows())
        assert (rows["protocol"], rows["listen_baudrate"], rows["listen_format"]) == ("sml", "9600", "8N1")
        wait_for(lambda: plugin._listener is not None and plugin._listener.connected)
        wait_for(sim.reader_ready)
        assert sim.send_once()
        wait_for(lambda: plugin.status()["successes"] > 0)
        assert shng.items.return_item("meter.energy")() == pytest.approx(float(sim.last_registers["1-0:1.8.0*255"]))
    finally:
        sim.stop()


def test_with_nothing_named_the_plugin_finds_the_meters_line(shng, caplog, monkeypatch) -> None:
    """``mode: listen`` and a port only (protocol auto): the plugin listened at 2400 8E1, so an SML
    meter (9600 8N1) gave nothing. Now it searches the usual lines like ``detect`` and keeps the
    one whose message passed its checks, and says how to skip the search."""
    caplog.set_level(logging.INFO)
    sim = SmlSimulator(seed=14, interval=0.5)
    port = sim.open_pty(baudrate=9600, parity="N")
    try:
        (plugin,) = shng.load_plugins({"dlms": dict(plugin_name="dlms", mode="listen", serialport=port)})
        assert plugin._search[:2] == ((2400, "8E1"), (9600, "8N1"))  # the former default first
        stream = importlib.import_module(type(plugin).__module__ + ".dlms_protocol.sml.source")
        monkeypatch.setattr(stream, "SEARCH_LISTEN", 1.0)  # (the plugin's own copy of the core)
        monkeypatch.setattr(stream, "SEARCH_DWELL", 2.0)
        shng.load_item_tree({"meter": {"energy": {"type": "num", "dlms_obis_code": "1-0:1.8.0*255"}}})
        sent: list = []
        build = sim.build

        def recording_build() -> bytes:
            data = build()
            sent.append(float(sim.last_registers["1-0:1.8.0*255"]))
            return data

        sim.build = recording_build  # type: ignore[method-assign]
        sim.start()
        shng.start()
        wait_for(lambda: plugin.status()["successes"] > 0)
        sim.stop()
        # the item holds a reading the meter sent (the energy grows with every transmission)
        wait_for(lambda: float(plugin._last_data.get("1-0:1.8.0").value) == shng.items.return_item("meter.energy")())
        assert float(plugin._last_data.get("1-0:1.8.0").value) in sent
        rows = dict(plugin.config_rows())
        assert (rows["listen_baudrate"], rows["listen_format"]) == ("9600 (gefunden)", "8N1")
        (note,) = [n for n in plugin.status()["notes"] if n.startswith("line search")]
        assert "9600 Bd 8N1" in note and "set this speed and format" in note
        assert note in caplog.text
    finally:
        sim.stop()


def test_the_line_a_configuration_leaves_out_follows_the_protocol(shng) -> None:
    """DLMS push and auto stay at 2400 8E1 (M-Bus); d0 is 9600 7E1; what is set is kept. Auto with
    no line named searches the usual lines (the test above)."""
    plugins = shng.load_plugins({
        "a": dict(plugin_name="dlms", instance="a", mode="listen", serialport="/dev/null-a"),
        "b": dict(plugin_name="dlms", instance="b", mode="listen", serialport="/dev/null-b", protocol="dlms"),
        "c": dict(plugin_name="dlms", instance="c", mode="listen", serialport="/dev/null-c", protocol="d0"),
        "d": dict(plugin_name="dlms", instance="d", mode="listen", serialport="/dev/null-d", protocol="sml",
                  listen_baudrate=2400, listen_format="8E1"),
    })
    lines = [(p._listener_config.baudrate, p._listener_config.bytesize, p._listener_config.parity,
              p._listener_config.stopbits) for p in plugins]
    assert lines == [(2400, 8, "E", 1), (2400, 8, "E", 1), (9600, 7, "E", 1), (2400, 8, "E", 1)]
    assert [bool(p._search) for p in plugins] == [True, False, False, False]
