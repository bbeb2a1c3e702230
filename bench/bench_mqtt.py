"""Benchmark: what the MQTT output costs per MeterData (19 readings) against paho's raw publish.

Set-up (real parts): a private ``mosquitto`` on a free loopback port and one paho client per
run. One MeterData of 19 typical readings (energy per tariff, power per phase, voltages,
currents, power factor, frequency) is sent ``--rounds`` times by

* **raw paho** (the lower bound): ``client.publish`` of exactly the 38 state messages the
  output sends for it (JSON + plain value per reading), prepared beforehand;
* **output, worker path**: ``MqttOutput.deliver`` (names, JSON, plain values, then the same
  ``client.publish`` calls) — what the output's worker thread does per snapshot;
* **output, source thread**: ``MqttOutput.publish`` as the pipeline calls it — the hand-over
  only (the part the meter's thread pays); the worker sends in the background.

Each run ends with a QoS 1 marker and ``wait_for_publish``, so the wall time includes the
network until the broker has everything; the CPU time is the calling thread's alone (less
sensitive to other load on the machine). Printed: median µs per MeterData of ``--repeat`` runs
and the ratios to raw paho. ``--full`` uses 10000 rounds instead of 2000.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dlms_protocol.model import MeterData, Reading  # noqa: E402
from dlms_protocol.mqtt.discovery import keys_of, state_payloads  # noqa: E402
from dlms_protocol.mqtt.output import MqttOutput, parse_options  # noqa: E402
from dlms_protocol.obis import Obis  # noqa: E402

READINGS = [
    ("1-0:1.8.0", "31358.606", "kWh"),
    ("1-0:2.8.0", "7.619", "kWh"),
    ("1-0:1.8.1", "20000.100", "kWh"),
    ("1-0:1.8.2", "11358.506", "kWh"),
    ("1-0:2.8.1", "5.000", "kWh"),
    ("1-0:2.8.2", "2.619", "kWh"),
    ("1-0:1.7.0", "1.234", "kW"),
    ("1-0:2.7.0", "0", "kW"),
    ("1-0:21.7.0", "0.400", "kW"),
    ("1-0:41.7.0", "0.500", "kW"),
    ("1-0:61.7.0", "0.334", "kW"),
    ("1-0:32.7.0", "236.1", "V"),
    ("1-0:52.7.0", "237.0", "V"),
    ("1-0:72.7.0", "235.9", "V"),
    ("1-0:31.7.0", "1.70", "A"),
    ("1-0:51.7.0", "2.11", "A"),
    ("1-0:71.7.0", "1.42", "A"),
    ("1-0:13.7.0", "0.981", None),
    ("1-0:14.7.0", "50.01", "Hz"),
]


def snapshot() -> MeterData:
    readings = tuple(Reading(code=c, obis=Obis.parse(c), value=Decimal(v), unit=u) for c, v, u in READINGS)
    return MeterData(kind="push", readings=readings, meter_id="4C475A6772A9A111")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_broker(folder: Path) -> Tuple[subprocess.Popen, int]:
    exe = shutil.which("mosquitto")
    if exe is None:
        sys.exit("mosquitto is not installed (python3 tools/dev.py test installs it as root)")
    port = free_port()
    conf = folder / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(400):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("mosquitto did not open its port")


def connected_output(port: int) -> MqttOutput:
    out = MqttOutput(parse_options(host="127.0.0.1", port=port, node="bench", meter="bench"))
    out.start()
    deadline = time.monotonic() + 20
    while not out.connected and time.monotonic() < deadline:
        time.sleep(0.01)
    if not out.connected:
        sys.exit("the output did not connect to mosquitto")
    out.publish_health(_ok())
    return out


def _ok() -> Any:
    from dlms_protocol.pipeline import Health

    return Health(Health.OK)


def drain(client: Any) -> None:
    """Until the broker has everything sent so far (QoS 1 is acknowledged in order)."""
    client.publish("bench/marker", "1", qos=1).wait_for_publish(30)


def timed(rounds: int, step: Callable[[], None], client: Any) -> Tuple[float, float]:
    """(wall µs, CPU µs of the calling thread) per round; the wall time includes the network."""
    t0, c0 = time.perf_counter(), time.thread_time()
    for _ in range(rounds):
        step()
    cpu = time.thread_time() - c0
    drain(client)
    return (time.perf_counter() - t0) / rounds * 1e6, cpu / rounds * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--rounds", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rounds = args.rounds or (10000 if args.full else 2000)
    data = snapshot()
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_broker(Path(tmp))
        try:
            out = connected_output(port)
            client = out._client
            out.deliver(data)  # discovery configs once; every later round is the steady state
            messages: List[Tuple[str, str]] = []
            for key, r in keys_of(data):
                body, plain = state_payloads(r, data)
                messages += [(f"dlms/bench/{key}", body), (f"dlms/bench/{key}/value", plain)]

            def raw() -> None:
                for topic, payload in messages:
                    client.publish(topic, payload, qos=0, retain=True)

            names = (
                "raw paho publish (lower bound)",
                "output, worker path (deliver)",
                "output, source thread (publish)",
            )
            steps = (raw, lambda: out.deliver(data), lambda: out.publish(data))
            runs: Dict[str, List[Tuple[float, float]]] = {name: [] for name in names}
            for _ in range(args.repeat):
                for name, step in zip(names, steps):
                    runs[name].append(timed(rounds, step, client))
            out.stop()
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(10)
    base_wall = statistics.median(w for w, _ in runs[names[0]])
    base_cpu = statistics.median(c for _, c in runs[names[0]])
    print(
        f"MQTT output: one MeterData of {len(READINGS)} readings = {len(messages)} messages, {rounds} rounds, "
        f"median of {args.repeat}"
    )
    print(f"{'path':<34} {'wall us':>9} {'ratio':>7} {'CPU us':>9} {'ratio':>7}")
    for name, values in runs.items():
        wall = statistics.median(w for w, _ in values)
        cpu = statistics.median(c for _, c in values)
        print(f"{name:<34} {wall:>9.1f} {wall / base_wall:>6.3f}x {cpu:>9.1f} {cpu / base_cpu:>6.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
