"""A D0 ``read`` loads nothing of the push, SML, polling, MQTT or D-Bus stacks (lazy imports):
checked with ``python -X importtime`` on a real readout against the simulated meter on a pty."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from dlms_protocol.simulator.d0 import SimulatedMeter

ROOT = Path(__file__).resolve().parent.parent
#: stacks a D0 readout never needs
FOREIGN = ("dlms_protocol.dlms.", "dlms_protocol.sml", "dlms_protocol.poll", "dlms_protocol.mqtt",
           "dlms_protocol.victron", "dlms_protocol.detect", "dbus_fast", "smllib", "gurux_dlms", "paho",
           "cryptography")


def imported_modules(stderr: str) -> set:
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


def test_d0_read_loads_no_other_stack() -> None:
    with SimulatedMeter("lgz_e350") as meter:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        done = subprocess.run([sys.executable, "-X", "importtime", "-m", "dlms_protocol", "read", "--json",
                               meter.port], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["datasets"]                           # a real readout happened
    modules = imported_modules(done.stderr)
    assert "dlms_protocol.iec62056_21.reader" in modules and "serial" in modules
    foreign = sorted(m for m in modules if m.startswith(FOREIGN))
    assert foreign == []
