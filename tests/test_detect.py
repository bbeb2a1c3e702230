"""``detect PORT`` over real pseudo-terminals against simulated meters, each at a speed or format
that is not its protocol's default; the printed plugin.yaml block and items, loaded into the
SmartHomeNG test double, read that meter (values compared with what the simulator sent)."""
from __future__ import annotations

import logging
import threading
import time
from decimal import Decimal
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from shng_double import SmartHome, yaml12
from shng_double.testing import plugins_dir, wait_for

from dlms_protocol.cli import main
from dlms_protocol.detect.probe import PASSIVE, Detector
from dlms_protocol.detect.report import diagnose, plugin_parameters
from dlms_protocol.model import Statistics
from dlms_protocol.simulator import SimulatedMeter
from dlms_protocol.simulator.push import PushSimulator
from dlms_protocol.simulator.sml import SmlSimulator

pytestmark = pytest.mark.slow
EK = bytes(range(16))
AK = bytes(range(16, 32))
FAST = ["--listen", "0.4", "--dwell", "1.5", "--total", "40"]


class Pusher:
    """Sends one push every ``interval`` s from a test thread, so the test can pause the meter."""

    def __init__(self, sim: Any, interval: float = 0.3) -> None:
        self.sim = sim
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sim.send_once()

    def halt(self) -> None:
        self._stop.set()
        self._thread.join(5)


def detect(capsys, port: str, *extra: str) -> Tuple[int, List[str], str]:
    code = main(["detect", port, *FAST, *extra])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def section(lines: List[str], title: str) -> str:
    start = lines.index(title) + 1
    block = []
    for line in lines[start:]:
        if not line.strip():
            break
        block.append(line)
    return "\n".join(block) + "\n"


def field(lines: List[str], name: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in lines if line.startswith(name + ":"))


@pytest.fixture
def shng() -> Iterator[SmartHome]:
    sh = SmartHome(plugins_dir())
    yield sh
    sh.stop()


def start_plugin(sh: SmartHome, lines: List[str], fill: Dict[str, str] = None, extra_items: Dict = None,
                 time_scale: float = 1.0) -> Any:
    """Load the printed plugin.yaml block and items exactly as printed (placeholders filled in)."""
    conf = yaml12.load(section(lines, "plugin.yaml:"))
    for key, value in (fill or {}).items():
        assert str(conf["dlms"][key]).startswith("<")  # the block asked for it
        conf["dlms"][key] = value
    (plugin,) = sh.load_plugins(conf)
    plugin._reader_options = {"time_scale": time_scale}
    sh.load_item_tree(yaml12.load(section(lines, "items:")) or {})
    sh.load_item_tree(extra_items or {})
    sh.start()
    return plugin


def item(sh: SmartHome, path: str) -> Any:
    found = sh.items.return_item(path)
    assert found is not None, path
    return found()


def one_more(plugin: Any, pusher: "Pusher", send: Any) -> None:
    """Halt the meter's pushes, wait until the plugin has counted the last of them (a push still
    on its way when the pusher stopped would otherwise pass for the new one), then send one more
    message and wait until the plugin has it."""
    wait_for(lambda: plugin.status()["successes"] > 0, timeout=30)
    pusher.halt()
    before = plugin.status()["successes"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # (still until no push arrives for longer than a push takes)
        time.sleep(0.8)
        now = plugin.status()["successes"]
        if now == before:
            break
        before = now
    assert send()
    wait_for(lambda: plugin.status()["successes"] > before, timeout=30)


# ------------------------------------------------------------------------------ SML
def test_sml_meter_at_19200_8n1(capsys, shng) -> None:
    sim = SmlSimulator(seed=4, interval=0.3)
    port = sim.open_pty(baudrate=19200, parity="N")
    pusher = Pusher(sim)
    try:
        code, lines, err = detect(capsys, port)
        assert code == 0, err
        assert field(lines, "protocol").startswith("SML")
        assert (field(lines, "speed"), field(lines, "format")) == ("19200 Bd", "8N1")
        assert field(lines, "meter") == "0A0153494D0012345678 (SIM)"
        assert 0.1 < float(field(lines, "period").split()[0]) < 1.5
        assert "listening at 9600 Bd 8N1" in err and "listening at 19200 Bd 8N1" in err  # progress, in order
        assert err.index("9600 Bd 8N1") < err.index("19200 Bd 8N1") and "signing on" not in err
        plugin = start_plugin(shng, lines)
        one_more(plugin, pusher, sim.send_once)
        for code_, expected in sim.last_registers.items():
            name = "meter.obis_" + code_.split(":")[1].split("*")[0].replace(".", "_")
            assert item(shng, name) == pytest.approx(float(expected), abs=1e-6)
    finally:
        pusher.halt()
        sim.stop()


# ------------------------------------------------------------------------------ DLMS push
def test_plain_dlms_push_at_9600_8n1(capsys, shng) -> None:
    sim = PushSimulator(wrapper="hdlc", seed=5)
    port = sim.open_pty(baudrate=9600, parity="N")
    pusher = Pusher(sim)
    try:
        code, lines, err = detect(capsys, port)
        assert code == 0, err
        assert field(lines, "protocol") == "DLMS/COSEM push"
        assert (field(lines, "speed"), field(lines, "format"), field(lines, "framing")) == ("9600 Bd", "8N1", "hdlc")
        assert field(lines, "encryption") == "none"
        plugin = start_plugin(shng, lines)
        one_more(plugin, pusher, sim.send_once)
        raw, scaler, _ = sim.last_registers["1-0:1.8.0.255"]
        assert item(shng, "meter.obis_1_8_0") == pytest.approx(float(Decimal(raw).scaleb(scaler)))
    finally:
        pusher.halt()
        sim.stop()


class LateMeter:
    """A DLMS push meter at 9600 8N1 that is quiet while the first window listens (as if its push
    had come just before), then pushes every 0.3 s: the pause of a 5-10 s push period, made certain."""

    def __init__(self) -> None:
        from dlms_protocol.simulator.pty import PtyLink

        self.sim = PushSimulator(wrapper="hdlc", seed=5)
        self.link = PtyLink(baudrate=9600, bytesize=8, parity="N")
        self.go = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.go.wait(0.05):
                for frame in self.sim.build():
                    self.link.send(frame, stop=self._stop.is_set)
                self._stop.wait(0.3)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.link.close()


def test_a_setting_that_was_quiet_between_two_pushes_is_listened_to_again() -> None:
    meter = LateMeter()
    progress: List[str] = []

    def told(text: str) -> None:
        progress.append(text)
        if len(progress) == 2:  # the first window is over
            meter.go.set()

    try:
        finding = Detector(meter.link.port, listen=0.4, dwell=1.0, total=40, sign_on=False, progress=told,
                           passive=PASSIVE[:3]).run()
    finally:
        meter.stop()
    assert finding is not None, progress
    assert (finding.protocol, finding.baudrate, finding.char_format, finding.wrapper) == ("dlms", 9600, "8N1", "hdlc")
    # every other setting got the pushes as garbage; then the quiet one, once more, with a longer window
    assert progress[0] == "listening at 9600 Bd 8N1 …" and len(progress) == 3 + 1
    assert progress[-1] == "listening longer (it was quiet between pushes) at 9600 Bd 8N1 …"


def test_encrypted_dlms_push_at_115200_8n1_without_key(capsys, shng) -> None:
    sim = PushSimulator(wrapper="hdlc", key=EK, auth_key=AK, security=0x30, seed=6)
    port = sim.open_pty(baudrate=115200, parity="N")
    pusher = Pusher(sim)
    try:
        code, lines, err = detect(capsys, port)
        assert code == 0, err
        assert field(lines, "protocol") == "DLMS/COSEM push"
        assert (field(lines, "speed"), field(lines, "format")) == ("115200 Bd", "8N1")
        assert field(lines, "encryption") == "encrypted, security 0x30: ask your grid operator for the key"
        assert EK.hex() not in "\n".join(lines).lower()
        # the user pastes the block and fills in the two keys it asks for
        assert "no values yet" in section(lines, "items:")
        plugin = start_plugin(shng, lines, {"key": EK.hex(), "auth_key": AK.hex()},
                              {"meter": {"energy": {"type": "num", "dlms_obis_code": "1-0:1.8.0*255"}}})
        one_more(plugin, pusher, sim.send_once)
        raw, scaler, _ = sim.last_registers["1-0:1.8.0.255"]
        assert item(shng, "meter.energy") == pytest.approx(float(Decimal(raw).scaleb(scaler)))
    finally:
        pusher.halt()
        sim.stop()


class HanMeter:
    """A Czech HAN meter (the Sagemcom XT211's layout, ``test_push_described``) on a pty at
    9600 8N1: one bare APDU per push, no date-time, no checksum, no encryption."""

    def __init__(self) -> None:
        from dlms_protocol.simulator.pty import PtyLink

        # imported here, not at the first push: a first import of a test module (pytest rewrites
        # it) can take longer than the detector listens at the meter's setting
        from test_push_described import han_push, xt211_values

        self._han_push, self._values = han_push, xt211_values
        self.link = PtyLink(baudrate=9600, bytesize=8, parity="N")
        self.sent = 0
        self.last: List[Any] = []

    def send_once(self) -> bool:
        self.sent += 1
        self.last = self._values((100 + self.sent, 2000 - self.sent, 30), (0, 0, 7), 4000 + self.sent, 90)
        # at the line's rate, as a UART sends it: a reader at another speed or format gets garbage
        return self.link.send(self._han_push(self.last, invoke_id=0x80000000 + self.sent))

    def stop(self) -> None:
        self.link.close()


def test_czech_han_push_at_9600_8n1(capsys, shng) -> None:
    meter = HanMeter()
    # between two pushes (a Czech HAN meter pushes once a minute) every window is silent: the
    # report says how to listen long enough
    code, lines, err = detect(capsys, meter.link.port, "--listen", "0.2", "--dwell", "0.2", "--total", "3",
                              "--no-sign-on")
    assert code == 1
    hint = lines[-1]
    assert "nothing arrived at 9600 Bd 8N1, 9600 Bd 7E1" in hint and "within 0.2 s each" in hint
    assert f"detect {meter.link.port} --listen 65 --dwell 65 --total 585" in hint
    pusher = Pusher(meter, interval=0.6)  # (a push of 355 bytes takes 0.37 s at 9600 Bd, then 0.6 s quiet)
    try:
        code, lines, err = detect(capsys, meter.link.port, "--listen", "1.5", "--dwell", "3")
        assert code == 0, err
        assert field(lines, "protocol") == "DLMS/COSEM push"
        assert (field(lines, "speed"), field(lines, "format"), field(lines, "framing")) == ("9600 Bd", "8N1", "apdu")
        assert field(lines, "meter") == "5100000042" and field(lines, "encryption") == "none"
        plugin = start_plugin(shng, lines)
        one_more(plugin, pusher, meter.send_once)
        sent = meter.last
        assert item(shng, "meter.obis_21_7_0") == sent[9] and item(shng, "meter.obis_41_7_0") == sent[10]
        assert item(shng, "meter.obis_62_7_0") == 7
        assert item(shng, "meter.obis_1_8_1") == sent[17] and item(shng, "meter.obis_1_8_0") == sent[16]
        assert item(shng, "meter.obis_96_14_0") == "T1"
    finally:
        pusher.halt()
        meter.stop()


def test_silent_serial_server_gets_the_hint_without_a_speed(capsys) -> None:
    """A socket:// port's speed and format are the serial server's: the hint names none."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    try:
        port = f"socket://127.0.0.1:{server.getsockname()[1]}"
        code, lines, _ = detect(capsys, port, "--listen", "0.3", "--dwell", "0.3", "--total", "2", "--no-sign-on")
        assert code == 1
        assert lines[-1].startswith("nothing arrived within 0.3 s each: a meter that pushes only now and then")
        assert f"detect {port} --listen 65" in lines[-1]
    finally:
        server.close()


# ------------------------------------------------------------------------------ D0
def test_push_only_d0_at_4800_7e1(capsys, shng) -> None:
    meter = SimulatedMeter("easymeter_push", baudrate=4800, push_interval=0.3, time_scale=5.0).start()
    try:
        code, lines, err = detect(capsys, meter.port)
        assert code == 0, err
        assert field(lines, "protocol") == "IEC 62056-21 push-only D0"
        assert (field(lines, "speed"), field(lines, "format")) == ("4800 Bd", "7E1")
        assert field(lines, "meter").startswith("/ESY5Q3DB1024")
        params = plugin_parameters_from(lines)
        assert (params["mode"], params["only_listen"], params["char_format"]) == ("readout", True, "7E1")
        cycle = next(x for x in section(lines, "plugin.yaml:").splitlines() if "update_cycle" in x)
        assert f"newest telegram every {params['update_cycle']} s" in cycle, cycle  # what the cycle does here
        start_plugin(shng, lines, time_scale=5.0)
        wait_for(lambda: item(shng, "meter.obis_1_8_0") not in (None, 0, 0.0), timeout=30)
        assert item(shng, "meter.obis_1_8_0") == pytest.approx(12345.6789012)  # the sample meter's 1.8.0
        assert item(shng, "meter.obis_2_8_0") == pytest.approx(4321.0987654)
    finally:
        meter.stop()


def test_request_mode_d0_signs_on_and_reports_the_offered_speed(capsys, shng) -> None:
    # real time; switch_grace as in the readout tests: a loaded machine must not garble a correct baud
    # switch (strict switch timing is test_d0_cli's subject, what detect reports is this one's)
    meter = SimulatedMeter("lgz_e350", baudrate=4800, switch_grace=1.0).start()
    try:
        code, lines, err = detect(capsys, meter.port)
        assert code == 0, err
        assert "signing on at 300 Bd 7E1" in err
        assert err.index("listening at 19200") < err.index("signing on")  # passive first, sign-on last
        assert field(lines, "protocol") == "IEC 62056-21 request mode (D0 sign-on)"
        assert (field(lines, "speed"), field(lines, "format")) == ("4800 Bd (after sign-on at 300 Bd)", "7E1")
        assert field(lines, "meter") == "/LGZ4ZMF110CC.S27 (LGZ)"
        start_plugin(shng, lines)
        wait_for(lambda: item(shng, "meter.obis_1_8_0") not in (None, 0, 0.0), timeout=60)
        assert item(shng, "meter.obis_1_8_0") == pytest.approx(12345.678)  # the sample meter's 1.8.0
    finally:
        meter.stop()


def plugin_parameters_from(lines: List[str]) -> Dict[str, Any]:
    return dict(yaml12.load(section(lines, "plugin.yaml:"))["dlms"])


# ------------------------------------------------------------------------------ nothing / diagnosis
def test_silent_port_reports_nothing_within_the_time_bound(capsys) -> None:
    sim = SmlSimulator(seed=1)
    port = sim.open_pty(baudrate=9600)
    try:
        code, lines, err = detect(capsys, port, "--no-sign-on")
        assert code == 1 and lines[0] == "nothing readable found."
    finally:
        sim.stop()


def test_diagnose_names_cause_and_fix() -> None:
    sim = PushSimulator(wrapper="hdlc", key=EK, auth_key=AK, security=0x30, seed=7)
    frames = sim.emit()
    assert diagnose(frames) == "encrypted, security 0x30: ask your grid operator for the key"
    assert "nothing arrives" in diagnose(b"", Statistics(), 9600, "8N1")
    damaged = bytearray(SmlSimulator(seed=2).build())
    damaged[40] ^= 0x01
    assert "SML transmissions at 9600 Bd 8N1 whose CRC fails" in diagnose(bytes(damaged), None, 9600, "8N1")
    assert "wrong speed or format" in diagnose(bytes([0x55, 0xAA, 0x13]) * 300)


def test_detector_budget_is_bounded() -> None:
    sim = SmlSimulator(seed=1)
    port = sim.open_pty(baudrate=9600)
    clock = iter(range(10**6)).__next__  # one "second" per call: the budget runs out at once
    try:
        assert Detector(port, total=3, clock=lambda: float(clock())).run() is None
    finally:
        sim.stop()


def test_plugin_parameters_for_each_protocol() -> None:
    from dlms_protocol.detect.probe import Finding

    sml = plugin_parameters(Finding("sml", "/dev/x", 9600, "8N1", period=2.0))
    assert sml["mode"] == "listen" and sml["protocol"] == "sml" and sml["listen_format"] == "8N1"
    dlms = plugin_parameters(Finding("dlms", "/dev/x", 2400, "8E1", encrypted=True, security=0x20))
    assert "key" in dlms and "auth_key" not in dlms


def test_d0_telegram_read_at_8n1_with_parity_bits_is_reported_7e1() -> None:
    from dlms_protocol.detect.probe import _d0_format
    from dlms_protocol.transport import add_parity

    telegram = b"/ESY5Q3DB1024 V3.08\r\n\r\n1-0:1.8.0*255(00012345.6789012*kWh)\r\n!\r\n"
    assert _d0_format("8N1", add_parity(telegram, "E")) == "7E1"
    assert _d0_format("8N1", telegram) == "8N1"  # plain 7-bit text: nothing says 7E1
    assert _d0_format("7E1", telegram) == "7E1"


class SmartyMeter:
    """A Luxembourg P1 port ("Smarty") on a pty at 115200 8N1: a DSMR telegram in a bare
    general-glo-ciphering APDU (0x30), tagged with the published authentication key."""

    def __init__(self) -> None:
        from dlms_protocol.simulator.pty import PtyLink

        from test_push_security import SMARTY_AK, _smarty_frames  # (before the first push: HanMeter)

        self._ak, self._frames = SMARTY_AK, _smarty_frames
        self.link = PtyLink(baudrate=115200, bytesize=8, parity="N")
        self.sent = 0

    def send_once(self) -> bool:
        self.sent += 1
        return self.link.send(self._frames(self._ak, n=1, ic=900 + self.sent, key=EK)[0])

    def stop(self) -> None:
        self.link.close()


def test_luxembourg_smarty_needs_only_the_key(capsys, shng) -> None:
    meter = SmartyMeter()
    pusher = Pusher(meter)
    try:
        code, lines, err = detect(capsys, meter.link.port, "--key", EK.hex(), "--no-sign-on")
        assert code == 0, err
        assert (field(lines, "speed"), field(lines, "format"), field(lines, "framing")) == ("115200 Bd", "8N1", "apdu")
        assert field(lines, "encryption") == ("encrypted, security 0x30, tags verified with the published "
                                              "Luxembourg (Smarty) authentication key")
        block = yaml12.load(section(lines, "plugin.yaml:"))["dlms"]
        assert block["key"].startswith("<") and "auth_key" not in block  # nothing more to ask the operator for
        plugin = start_plugin(shng, lines, fill={"key": EK.hex()})
        one_more(plugin, pusher, meter.send_once)
        assert item(shng, "meter.obis_1_8_0") == 7112944
    finally:
        pusher.halt()
        meter.stop()


def test_encrypted_push_with_the_key_is_decoded_and_reports_its_security_byte(capsys, caplog) -> None:
    caplog.set_level(logging.INFO, logger="dlms_protocol.detect")
    sim = PushSimulator(wrapper="hdlc", key=EK, auth_key=AK, security=0x30, seed=8)
    port = sim.open_pty(baudrate=9600, parity="N")
    pusher = Pusher(sim)
    try:
        code, lines, err = detect(capsys, port, "--key", EK.hex(), "--auth-key", AK.hex(), "--no-sign-on")
    finally:
        pusher.halt()
        sim.stop()
    assert code == 0, err
    # the sans-io decoder's note, logged by the probe that drove it (-v shows it)
    assert [r.name for r in caplog.records if r.getMessage().startswith("deciphering AES-GCM with")] == [
        "dlms_protocol.detect.probe"]
    assert field(lines, "encryption") == "encrypted, security 0x30"
    assert int(field(lines, "values").split()[0]) > 3
    block = yaml12.load(section(lines, "plugin.yaml:"))["dlms"]
    assert block["key"].startswith("<") and block["auth_key"].startswith("<")  # placeholders, never the key
    assert EK.hex() not in "\n".join(lines).lower() and EK.hex() not in err.lower()
