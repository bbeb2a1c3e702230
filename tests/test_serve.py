"""``python -m dlms_protocol serve --config FILE``: any source with any outputs from one INI file,
run as its own process against a simulated meter on a real pseudo-terminal and a private
dbus-daemon (with the localsettings stand-in), read back by a Venus-style client."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Optional

import pytest

from dbus_fixtures import DbusDaemon, SettingsStandIn, VenusClient
from dlms_protocol.simulator.d0 import SimulatedMeter
from dlms_protocol.simulator.push import PushSimulator

ROOT = Path(__file__).resolve().parent.parent
WAIT = 60.0


@pytest.fixture
def bus_parts(daemon: DbusDaemon) -> Iterator[VenusClient]:
    settings = SettingsStandIn(daemon.address)
    client = VenusClient(daemon.address)
    yield client
    client.stop()
    settings.stop()


def serve(cfg: Path, log: Path) -> "subprocess.Popen[bytes]":
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-m", "dlms_protocol", "serve", "--config", str(cfg)],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def finish(proc: "subprocess.Popen[bytes]") -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_serve_d0_readout_to_victron(daemon: DbusDaemon, bus_parts: VenusClient, tmp_path: Path) -> None:
    """A D0 readout source (mode C, 300 -> 9600 Bd, real timing) and the Victron output, read every 2 s."""
    client = bus_parts
    meter = SimulatedMeter("lgz_e350", mode="C", baudrate=9600).start()
    cfg = tmp_path / "serve.ini"
    cfg.write_text(f"[meter]\nmode = readout\nport = {meter.port}\ninterval = 2\n\n"
                   f"[victron]\nbus = {daemon.address}\n")
    log = tmp_path / "serve.log"
    proc = serve(cfg, log)
    try:
        name = client.wait_for(lambda c: c.service("grid"), WAIT)
        # lgz_e350.txt: 1.7.0(00.845*kW), 2.7.0(00.000*kW), 1.8.0(012345.678*kWh), 2.8.0(003456.789*kWh)
        want = {"/Ac/Power": 845.0, "/Ac/Energy/Forward": 12345.678, "/Ac/Energy/Reverse": 3456.789,
                "/Ac/L1/Voltage": 231.4, "/Serial": "41827635"}
        client.wait_for(lambda c: all(c.cache[name].get(k) == v for k, v in want.items()), WAIT)
        sessions = meter.event_names().count("sign-on")
        client.wait_for(lambda c: meter.event_names().count("sign-on") > sessions + 1, WAIT)  # it keeps reading
        assert finish(proc) == 0
    finally:
        finish(proc)
        meter.stop()
    text = log.read_text()
    assert "IEC 62056-21 readout on" in text and "D-Bus" in text
    assert "Traceback" not in text


def test_serve_push_to_victron(daemon: DbusDaemon, bus_parts: VenusClient, tmp_path: Path) -> None:
    """A DLMS push source and the Victron output: the pushed values appear, the service stops on TERM."""
    client = bus_parts
    sim = PushSimulator(wrapper="hdlc", interval=0.5, seed=4)
    sim.open_pty(baudrate=115200, parity="N")
    cfg = tmp_path / "serve.ini"
    cfg.write_text(f"[meter]\nmode = push\nport = {sim.path}\nbaudrate = 115200\nparity = N\n\n"
                   f"[victron]\nbus = {daemon.address}\ntimeout = 5\ndevice_suffix = pushtest\n")
    proc = serve(cfg, tmp_path / "serve.log")
    try:
        sim.start()
        name = client.wait_for(lambda c: c.service("grid"), WAIT)
        assert name == "com.victronenergy.grid.pushtest"

        def sent_matches(c: VenusClient) -> bool:
            raw, scaler, _ = sim.last_registers["1-0:1.8.0.255"]
            return c.cache[name].get("/Ac/Energy/Forward") == pytest.approx(raw * 10 ** scaler / 1000)

        client.wait_for(sent_matches, WAIT)
        assert finish(proc) == 0
        client.wait_for(lambda c: c.service("grid") is None, WAIT)          # the service leaves the bus
    finally:
        finish(proc)
        sim.stop()


def run_cli(*args: str) -> "subprocess.CompletedProcess[str]":
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "dlms_protocol", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_check_config_shows_the_effective_configuration(tmp_path: Path) -> None:
    cfg = tmp_path / "serve.ini"
    cfg.write_text("[meter]\nmode = push\nport = /dev/ttyUSB7\nkey = 000102030405060708090A0B0C0D0E0F\n\n"
                   "[victron]\nrole = pvinverter\n")
    res = run_cli("serve", "--config", str(cfg), "--check-config")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "mode" in out and "push" in out and "/dev/ttyUSB7" in out
    assert "2400 8E1" in out                                              # the defaults that take effect
    assert "pvinverter" in out and "timeout" in out and "10 s" in out
    assert "key" in out and "set" in out and "000102030405" not in out    # never the key itself
    # the same file through `victron --config` (a special case of serve)
    assert run_cli("victron", "--config", str(cfg), "--check-config").stdout == out


def test_serve_without_an_output_says_which_sections_exist(tmp_path: Path) -> None:
    cfg = tmp_path / "serve.ini"
    cfg.write_text("[meter]\nmode = readout\nport = /dev/ttyUSB7\n")
    res = run_cli("serve", "--config", str(cfg))
    assert res.returncode == 2 and "names no output" in res.stderr and "[victron]" in res.stderr
    # `victron --config` needs no [victron] section: D-Bus is its output
    res = run_cli("victron", "--config", str(cfg), "--check-config")
    assert res.returncode == 0 and "role" in res.stdout



def test_an_unknown_section_is_named_with_the_outputs_there_are(tmp_path: Path) -> None:
    cfg = tmp_path / "serve.ini"
    cfg.write_text("[meter]\nmode = readout\nport = /dev/ttyUSB7\n\n[victorn]\nbus = system\n")
    res = run_cli("serve", "--config", str(cfg), "--check-config")
    assert res.returncode == 2 and "unknown section [victorn]" in res.stderr and "[victron]" in res.stderr


def test_the_tail_of_a_push_the_port_was_opened_into_is_no_warning(caplog) -> None:
    """The service logged it at WARNING next to the decoder's INFO line ('listening began inside
    a message') at every other start; a real framing error after it is still a WARNING, once. Through
    the push source, which keeps such a tail from every host (the plugin counted it as a failure)."""
    import logging
    import threading

    from dlms_protocol.config import ListenerConfig
    from dlms_protocol.dlms.source import PushSource
    from dlms_protocol.simulator.push import PushSimulator

    sim = PushSimulator(wrapper="hdlc", seed=5)
    first = sim.emit()
    reads = [first[len(first) // 2:] + sim.emit(), b"\x55" * 40 + sim.emit()]
    wanted = threading.Event()
    got: list = []

    class Line:
        """Hands out one piece per read, then stays quiet."""

        def read_some(self, max_bytes: int = 4096, timeout: Optional[float] = None, min_bytes: int = 1) -> bytes:
            if reads:
                return reads.pop(0)
            time.sleep(0.02)
            return b""

        def close(self) -> None:
            pass

    def emit(data: object) -> None:
        got.append(data)
        if len(got) == 2:
            wanted.set()

    caplog.set_level(logging.DEBUG)
    source = PushSource(ListenerConfig(port="/dev/fake", baudrate=9600), opener=lambda _cfg: Line())  # as serve
    source.start(emit, lambda health: None)
    try:
        assert wanted.wait(10)
    finally:
        source.stop()
    assert source.stats.get("framing_errors") == 2  # both counted
    # the real framing error is said once: by the listener (serve said it a second time, seen on Venus OS)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [(r.name, r.levelno) for r in warnings] == [("dlms_protocol.dlms.listener", logging.WARNING)]
    assert any("listening began inside a message" in r.getMessage() and r.levelno == logging.INFO
               for r in caplog.records)


def test_the_service_says_a_damaged_push_once(tmp_path: Path, caplog) -> None:
    """Seen on Venus OS: each bad push was logged by the listener and again by the service
    (two lines, two repeat counters). The listener's own, rate-limited line is the one."""
    import logging
    import threading

    from dlms_protocol.model import Statistics
    from dlms_protocol.pipeline import Output, Pipeline
    from dlms_protocol.serve import build_source
    from dlms_protocol.simulator.push import PushSimulator
    from dlms_protocol.victron.config_file import load_config

    class Recorder(Output):
        def __init__(self) -> None:
            self.event = threading.Event()

        def publish(self, data: object) -> None:
            self.event.set()

    sim = PushSimulator(wrapper="hdlc", seed=17)
    port = sim.open_pty(baudrate=2400, parity="E", time_scale=4)
    ini = tmp_path / "meter.ini"
    ini.write_text(f"[meter]\nmode = push\nport = {port}\nbaudrate = 2400\nparity = E\n")
    caplog.set_level(logging.INFO)
    out = Recorder()
    pipe = Pipeline(build_source(load_config(str(ini), victron=False), Statistics()), [out])
    pipe.start()
    try:
        deadline = time.monotonic() + 30
        while not sim.reader_ready() and time.monotonic() < deadline:
            time.sleep(0.05)
        bad = bytearray(sim.emit())
        bad[len(bad) // 2] ^= 0x10
        assert sim._write(bytes(bad))
        assert sim.send_once() and out.event.wait(20)
    finally:
        pipe.stop()
        sim.stop()
    said = [r for r in caplog.records if r.levelno >= logging.WARNING and "FCS mismatch" in r.getMessage()]
    assert len(said) == 1, [(r.name, r.getMessage()) for r in said]
