"""``python -m dlms_protocol serve --config FILE`` with an [mqtt] section, end to end on real parts.

The service runs as its own process; the meter is a simulator on a real pseudo-terminal (an
encrypted DLMS push meter, and a D0 meter read in request mode), the broker a private
mosquitto, the consumer a real paho subscriber. What the subscriber gets must be what the
simulator sent: values, units, Home Assistant entities, ``online`` while data comes and
``offline`` after SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Iterator

import pytest

from dlms_protocol.simulator.push import PushSimulator
from test_mqtt import WAIT, Broker, Subscriber

ROOT = Path(__file__).resolve().parent.parent
EK = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
AK = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
PASSWORD = "mqtt-Pa55-for-serve"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path, users={"meter": PASSWORD}).start()
    try:
        yield b
    finally:
        b.kill()


def _mqtt_section(port: int) -> str:
    return (
        f"[mqtt]\nhost = 127.0.0.1\nport = {port}\nprefix = serve\nnode = house\n"
        f"username = meter\npassword = {PASSWORD}\nreconnect_max = 2\n"
    )


def _serve(cfg: Path, log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-m", "dlms_protocol", "serve", "--config", str(cfg)],
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


def _stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_serve_push_meter_to_mqtt(broker: Broker, tmp_path: Path) -> None:
    sim = PushSimulator(key=EK, auth_key=AK, security=0x30, seed=5, interval=1.0)
    port = sim.open_pty(baudrate=115200, parity="N")
    cfg = tmp_path / "serve.ini"
    cfg.write_text(
        f"[meter]\nmode = push\nport = {port}\nbaudrate = 115200\nparity = N\nkey = {EK.hex()}\n"
        f"auth_key = {AK.hex()}\n\n" + _mqtt_section(broker.port)
    )
    check = subprocess.run(
        [sys.executable, "-m", "dlms_protocol", "serve", "--config", str(cfg), "--check-config"],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr
    assert "output mqtt" in check.stdout and PASSWORD not in check.stdout + check.stderr
    sub = Subscriber(broker.port, ("serve/#", "homeassistant/#"), username="meter", password=PASSWORD)
    proc = _serve(cfg, tmp_path / "serve.log")
    try:
        sub.wait(sub.has("serve/house/status", "offline"), "the service is connected (not yet online)")
        topic = "serve/SIM0000012345/1-0:1.7.0/value"
        deadline = time.monotonic() + WAIT
        while sub.last(topic) is None:  # the service opens the port when it is up; push until it listens
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            sim.send_once()
            time.sleep(0.5)
        for _ in range(2):
            sim.send_once()
            raw, scaler, _unit = sim.last_registers["1-0:1.7.0.255"]
            want = Decimal(raw).scaleb(scaler)
            sub.wait(lambda want=want: Decimal(sub.last(topic) or "0") == want, "power")
        sub.wait(sub.has("serve/house/status", "online"), "online")
        body = json.loads(sub.last("serve/SIM0000012345/1-0:1.8.0") or "")
        raw, scaler, _unit = sim.last_registers["1-0:1.8.0.255"]
        assert Decimal(str(body["value"])) == Decimal(raw).scaleb(scaler) and body["unit"] == "Wh"
        net = json.loads(sub.last("serve/SIM0000012345/1-0:16.7.0") or "")
        assert net["derived"] is True
        config = json.loads(sub.last("homeassistant/sensor/house/sim0000012345_1_0_1_8_0/config") or "")
        assert (config["device_class"], config["state_class"], config["unit_of_measurement"]) == (
            "energy",
            "total_increasing",
            "Wh",
        )
        assert config["device"]["serial_number"] == "SIM0000012345" and config["device"]["manufacturer"] == "SIM"
        assert _stop(proc) == 0
        sub.wait(sub.has("serve/house/status", "offline"), "offline after SIGTERM")
    finally:
        _stop(proc)
        sub.close()
        sim.stop()
    assert PASSWORD not in (tmp_path / "serve.log").read_text()


@pytest.mark.slow
def test_serve_readout_meter_to_mqtt(broker: Broker, tmp_path: Path) -> None:
    from dlms_protocol.simulator.d0 import SimulatedMeter

    meter = SimulatedMeter("lgz_e350", mode="C", baudrate=9600).start()
    cfg = tmp_path / "readout.ini"
    cfg.write_text(f"[meter]\nmode = readout\nport = {meter.port}\ninterval = 2\n\n" + _mqtt_section(broker.port))
    sub = Subscriber(broker.port, ("serve/#", "homeassistant/#"), username="meter", password=PASSWORD)
    proc = _serve(cfg, tmp_path / "serve.log")
    try:
        sub.wait(sub.has("serve/house/status", "online"), "online after the first readout")
        sub.wait(lambda: any(t.endswith("/1.8.0") for t in sub.messages), "1.8.0")
        energy = [t for t in sub.messages if t.endswith("/1.8.0")]
        body = json.loads(sub.last(energy[0]) or "")
        assert body["unit"] == "kWh" and isinstance(body["value"], (int, float))
        assert any(t.startswith("homeassistant/sensor/house/") for t in sub.messages)
        assert _stop(proc) == 0
        sub.wait(sub.has("serve/house/status", "offline"), "offline after SIGTERM")
    finally:
        _stop(proc)
        sub.close()
        meter.stop()


def test_check_config_checks_the_mqtt_options(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.ini"
    cfg.write_text(
        "[meter]\nmode = push\nport = /dev/null\n\n[mqtt]\nport = http\npassword = x-secret-x\nusername = u\n"
    )
    check = subprocess.run(
        [sys.executable, "-m", "dlms_protocol", "serve", "--config", str(cfg), "--check-config"],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 2 and "mqtt option port='http'" in check.stderr
    assert "x-secret-x" not in check.stdout + check.stderr
