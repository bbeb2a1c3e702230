"""The standalone service end to end: a simulated push meter on a real pseudo-terminal, the
service as a separate process (``python -m dlms_protocol victron --config``), a private
dbus-daemon with the localsettings stand-in, and a Venus-style client; then the same service
installed by ``venus/install.sh`` and run under real daemontools (svscan/supervise/multilog)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

from dbus_fixtures import DbusDaemon, SettingsStandIn, VenusClient
from helpers import which
from dlms_protocol.simulator.push import DEMO_REGISTERS, PushSimulator, SimRegister

ROOT = Path(__file__).resolve().parent.parent
WAIT = 40.0

#: the demo meter plus per-phase export registers, so every per-phase path has a source
REGISTERS = DEMO_REGISTERS + tuple(SimRegister(f"1-0:{c}.7.0.255", "double-long-unsigned", 0, "W")
                                   for c in (22, 42, 62))


@pytest.fixture
def bus_parts(daemon: DbusDaemon) -> Iterator[VenusClient]:
    settings = SettingsStandIn(daemon.address)
    client = VenusClient(daemon.address)
    yield client
    client.stop()
    settings.stop()


def physical(sim: PushSimulator, code: str) -> Decimal:
    raw, scaler, _unit = sim.last_registers[code]
    return Decimal(raw).scaleb(scaler)


def expected(sim: PushSimulator) -> Dict[str, float]:
    """What Venus must see for the simulator's last push, computed from what was sent."""
    p = lambda c: physical(sim, f"1-0:{c}.255")  # noqa: E731
    out = {
        "/Ac/Power": float(p("1.7.0") - p("2.7.0")),
        "/Ac/Energy/Forward": float(p("1.8.0") / 1000),
        "/Ac/Energy/Reverse": float(p("2.8.0") / 1000),
        "/Ac/Frequency": float(p("14.7.0")),
    }
    for ph, (u, i, pin, pout) in enumerate((("32", "31", "21", "22"), ("52", "51", "41", "42"),
                                            ("72", "71", "61", "62")), start=1):
        net = p(f"{pin}.7.0") - p(f"{pout}.7.0")
        cur = p(f"{i}.7.0")
        out[f"/Ac/L{ph}/Power"] = float(net)
        out[f"/Ac/L{ph}/Voltage"] = float(p(f"{u}.7.0"))
        out[f"/Ac/L{ph}/Current"] = float(-cur if net < 0 else cur)
    return out


def matches(values: Dict[str, Any], want: Dict[str, float]) -> bool:
    return all(values.get(k) is not None and abs(values[k] - v) <= 1e-9 * max(1.0, abs(v)) for k, v in want.items())


def ini(port: str, address: str, timeout: float = 2.0, keys: str = "") -> str:
    return (f"[meter]\nmode = push\nport = {port}\nbaudrate = 115200\nparity = N\n{keys}\n"
            f"[victron]\nbus = {address}\ntimeout = {timeout}\ncustom_name = Simulated AM550\n\n"
            "[logging]\nlevel = info\n")


EK, AK = "000102030405060708090A0B0C0D0E0F", "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "aes-gcm"])
def test_standalone_push_service_end_to_end(daemon: DbusDaemon, bus_parts: VenusClient, tmp_path: Path,
                                            encrypted: bool) -> None:
    """As the GX runs it, its own process; encrypted: with the AES engine the environment chooses
    (Python's OpenSSL here; the version matrix forces cryptography 2.8 on Python 3.8 and 42.x on 3.12)."""
    client = bus_parts
    security = dict(key=bytes.fromhex(EK), auth_key=bytes.fromhex(AK), security=0x30) if encrypted else {}
    sim = PushSimulator(registers=REGISTERS, seed=11, interval=1.0, **security)  # type: ignore[arg-type]
    port = sim.open_pty(baudrate=115200, parity="N")
    cfg = tmp_path / "dlms-meter.ini"
    cfg.write_text(ini(port, daemon.address, keys=f"key = {EK}\nauth_key = {AK}\n" if encrypted else ""))
    log = (tmp_path / "service.log").open("w")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, "-m", "dlms_protocol", "victron", "--config", str(cfg)],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        name = None
        deadline = time.monotonic() + WAIT
        while name is None and time.monotonic() < deadline:  # the service opens the port when it is up
            sim.send_once()
            try:
                name = client.wait_for(lambda c: c.service("grid"), 1.0)
            except TimeoutError:
                pass
        assert name == "com.victronenergy.grid.dlms_SIM0000012345", (tmp_path / "service.log").read_text()
        assert client.get_value(name, "/CustomName") == "Simulated AM550"
        assert client.get_value(name, "/NrOfPhases") == 3
        for _ in range(3):
            sim.send_once()
            want = expected(sim)
            client.wait_for(lambda c, want=want: matches(c.cache[name], want), WAIT)
        # silence: after the time-out the meter is disconnected and its values are empty
        client.wait_for(lambda c: c.value(name, "/Connected") == 0, WAIT)
        assert client.value(name, "/Ac/Power") is None and client.value(name, "/Ac/Energy/Forward") is None
        sim.send_once()
        want = expected(sim)
        client.wait_for(lambda c: c.value(name, "/Connected") == 1 and matches(c.cache[name], want), WAIT)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        client.wait_for(lambda c: name not in c.cache, WAIT)  # the name left the bus
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
        sim.stop()
    text = (tmp_path / "service.log").read_text()
    assert "registered com.victronenergy.grid.dlms_SIM0000012345" in text
    assert "/Connected = 0" in text


def test_standalone_readout_service_end_to_end(daemon: DbusDaemon, bus_parts: VenusClient, tmp_path: Path) -> None:
    """``mode = readout``: an IEC 62056-21 meter (mode C, 300 -> 9600 Bd, real timing) read every 2 s."""
    from dlms_protocol.simulator.d0 import SimulatedMeter

    client = bus_parts
    meter = SimulatedMeter("lgz_e350", mode="C", baudrate=9600).start()
    cfg = tmp_path / "readout.ini"
    cfg.write_text(f"[meter]\nmode = readout\nport = {meter.port}\ninterval = 2\n\n"
                   f"[victron]\nbus = {daemon.address}\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    log = (tmp_path / "service.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "dlms_protocol", "victron", "--config", str(cfg)],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        name = client.wait_for(lambda c: c.service("grid"), 60)
        # the values of the sample readout (lgz_e350.txt), in Victron units
        want = {"/Ac/Power": 845.0, "/Ac/Energy/Forward": 12345.678, "/Ac/Energy/Reverse": 3456.789,
                "/Ac/L1/Voltage": 231.4, "/Ac/L3/Voltage": 232.1, "/Ac/PowerFactor": 0.95,
                "/Ac/L2/PowerFactor": 0.95, "/Serial": "41827635", "/FirmwareVersion": "B32",
                "/RefreshTime": 2000, "/NrOfPhases": 3}
        client.wait_for(lambda c: all(c.cache[name].get(k) == v for k, v in want.items()), 60)
        assert name == "com.victronenergy.grid.dlms_41827635"
        # per-phase import without per-phase export, total export 0 and the imports add up to the
        # total import: no phase exports, so each phase's power is its import (and currents are +)
        items = client.get_items(name)
        assert [items[f"/Ac/L{ph}/Power"]["Value"] for ph in (1, 2, 3)] == [312.0, 287.0, 246.0]
        assert [items[f"/Ac/L{ph}/Current"]["Value"] for ph in (1, 2, 3)] == [1.42, 1.31, 1.12]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
        meter.stop()


def test_standalone_poll_service_end_to_end(daemon: DbusDaemon, bus_parts: VenusClient, tmp_path: Path) -> None:
    """``mode = poll``: a DLMS/COSEM meter that answers only when asked (gurux's server side as the
    meter, over the DLMS/IP wrapper) polled every second, its registers on D-Bus in Victron units."""
    from dlms_protocol.simulator.cosem_model import demo_model
    from dlms_protocol.simulator.dlms_meter import DlmsTcpMeter

    client = bus_parts
    with DlmsTcpMeter(demo_model()) as meter:
        cfg = tmp_path / "poll.ini"
        cfg.write_text(f"[meter]\nmode = poll\nport = {meter.url}\ninterval = 1\ntimeout = 20\n"
                       "obis = 0-0:96.1.0, 1.8.0, 2.8.0, 1.7.0, 2.7.0, 32.7.0\n\n"
                       f"[victron]\nbus = {daemon.address}\n")
        check = subprocess.run([sys.executable, "-m", "dlms_protocol", "serve", "--config", str(cfg),
                                "--check-config"], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert check.returncode == 0 and "DLMS/IP wrapper" in check.stdout, check.stdout + check.stderr
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        env.pop("DBUS_SESSION_BUS_ADDRESS", None)
        log = (tmp_path / "service.log").open("w")
        proc = subprocess.Popen([sys.executable, "-m", "dlms_protocol", "victron", "--config", str(cfg)],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            name = client.wait_for(lambda c: c.service("grid"), 60)
            # demo_model: 1.8.0 12345678 Wh, 1.7.0 1234 W, 2.7.0 0 W, 32.7.0 230.1 V
            want = {"/Ac/Energy/Forward": 12345.678, "/Ac/Power": 1234.0, "/Ac/L1/Voltage": 230.1,
                    "/RefreshTime": 1000, "/Connected": 1}
            try:
                client.wait_for(lambda c: all(c.cache[name].get(k) == v for k, v in want.items()), 60)
            except TimeoutError:
                raise AssertionError(str({k: client.cache[name].get(k) for k in want})) from None
            assert client.get_value(name, "/Mgmt/Connection").startswith("DLMS poll tcp://")
            meter.model.set_value("1.0.1.7.0.255", 2000)  # the next cycle brings the new value
            client.wait_for(lambda c: c.cache[name].get("/Ac/Power") == 2000.0, 60)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            log.close()
    assert "DLMS/COSEM polling of tcp://" in (tmp_path / "service.log").read_text()


def test_config_error_exits_nonzero_without_touching_the_bus(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.ini"
    cfg.write_text("[meter]\nport = /dev/ttyUSB9\nparity = Q\n")
    res = subprocess.run([sys.executable, "-m", "dlms_protocol", "victron", "--config", str(cfg)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "parity" in res.stderr


# ------------------------------------------------------------------- daemontools
def _svstat(path: Path) -> str:
    res = subprocess.run(["svstat", str(path)], capture_output=True, text=True, timeout=10)
    return res.stdout + res.stderr


def _wait(cond: Any, timeout: float, what: str) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        time.sleep(0.2)
    raise TimeoutError(what)


def test_install_and_run_under_daemontools(daemon: DbusDaemon, bus_parts: VenusClient, tmp_path: Path) -> None:
    for tool in ("svscan", "supervise", "svstat", "svc", "multilog", "softlimit", "tai64nlocal"):
        which(tool)
    client = bus_parts
    data = tmp_path / "data"
    dest = data / "dbus-dlms-meter"
    service_root = tmp_path / "service"
    logdir = tmp_path / "log"
    dest.mkdir(parents=True)
    sim = PushSimulator(registers=REGISTERS, seed=3, interval=0.5)
    port = sim.open_pty(baudrate=115200, parity="N")
    (dest / "dlms-meter.ini").write_text(ini(port, daemon.address, timeout=5.0))
    (data / "rc.local").write_text("#!/bin/sh\necho other things\n")
    env = dict(os.environ, DLMS_METER_DIR=str(dest), DLMS_METER_SERVICE_ROOT=str(service_root),
               DLMS_METER_RC_LOCAL=str(data / "rc.local"), DLMS_METER_UDEV_DIR=str(tmp_path / "udev"),
               DLMS_METER_PYTHON=sys.executable, DLMS_METER_LOGDIR=str(logdir))
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    env.pop("PYTHONPATH", None)
    res = subprocess.run(["sh", str(ROOT / "venus" / "install.sh")], env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (service_root / "dbus-dlms-meter").resolve() == (dest / "service").resolve()
    rc_local = (data / "rc.local").read_text()
    assert f"{dest}/boot.sh" in rc_local and "echo other things" in rc_local
    assert os.access(data / "rc.local", os.X_OK)
    assert (dest / "dlms_protocol" / "victron" / "bridge.py").is_file()

    svscan = subprocess.Popen(["svscan", str(service_root)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    feeding = threading.Event()

    def feed() -> None:
        while not feeding.is_set():
            sim.send_once()
            feeding.wait(0.5)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    svc_dir = service_root / "dbus-dlms-meter"
    try:
        name = client.wait_for(lambda c: c.service("grid"), WAIT)
        status = _wait(lambda: (lambda s: s if ": up (pid " in s else None)(_svstat(svc_dir)), WAIT, "svstat up")
        pid = int(status.split("(pid ")[1].split(")")[0])
        assert ": up (pid " in _svstat(svc_dir / "log")
        current = logdir / "current"
        log_text = _wait(lambda: current.exists() and "registered com.victronenergy.grid" in current.read_text()
                         and current.read_text(), WAIT, "log line from multilog")
        assert "*** starting dbus-dlms-meter" in log_text
        assert all(line.startswith("@4000") for line in log_text.splitlines() if line)  # TAI64N stamps
        local = subprocess.run(["tai64nlocal"], input=log_text, capture_output=True, text=True, timeout=10).stdout
        assert local.splitlines()[0][:2] == "20"  # a readable date
        # a crash is restarted by supervise, and the meter comes back on the bus by itself
        os.kill(pid, signal.SIGKILL)
        _wait(lambda: (lambda s: ": up (pid " in s and f"(pid {pid})" not in s)(_svstat(svc_dir)), WAIT,
              "restart after kill")
        client.wait_for(lambda c: c.service("grid") == name and c.value(name, "/Connected") == 1, WAIT)
    finally:
        feeding.set()
        feeder.join(5)
        res = subprocess.run(["sh", str(dest / "uninstall.sh")], env=env, capture_output=True, text=True,
                             timeout=60)
        svscan.terminate()
        svscan.wait(10)
        sim.stop()
    assert res.returncode == 0, res.stdout + res.stderr
    assert not (service_root / "dbus-dlms-meter").exists()
    assert "boot.sh" not in (data / "rc.local").read_text()
    assert "echo other things" in (data / "rc.local").read_text()
    client.wait_for(lambda c: c.service("grid") is None, WAIT)
