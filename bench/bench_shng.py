"""SmartHomeNG plugin benchmark: cost of writing items per message, and how fast stop() returns.

Run: ``.venv/bin/python bench/bench_shng.py`` (quick) or ``--full``. The plugin runs inside the
SmartHomeNG test double (tests/shng_double), against simulated meters on real pseudo-terminals.

* apply: time for the plugin to turn one verified MeterData into item writes (all DEMO codes, one
  item per code, plus status and readout items), against the lower bound of merely looking each
  code up in the MeterData (what any sink has to do).
* stop: how long ``stop()`` takes while a D0 readout is in the middle of its dialogue, and while a
  push listener is receiving; the budget SmartHomeNG allows a plugin is 2 s.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from shng_double import SmartHome  # noqa: E402
from shng_double.testing import plugins_dir, wait_for  # noqa: E402

from dlms_protocol.simulator import SimulatedMeter  # noqa: E402
from dlms_protocol.simulator.push import PushSimulator  # noqa: E402


def bench_apply(rounds: int) -> Dict[str, float]:
    sim = PushSimulator(wrapper="hdlc", interval=1.0, seed=1)
    sim.open_pty(baudrate=115200, parity="N")
    sh = SmartHome(plugins_dir())
    try:
        sh.load_plugins({"dlms": {"plugin_name": "dlms", "serialport": sim.path, "mode": "listen",
                                  "listen_baudrate": 115200, "listen_format": "8N1"}})
        items = {"m": {f"c{i}": {"type": "num", "dlms_obis_code": reg.obis} for i, reg in enumerate(sim.registers)
                       if reg.unit is not None}}
        items["m"]["serial"] = {"type": "str", "dlms_obis_code": "0-0:96.1.0.255"}
        items["m"]["readout"] = {"type": "str", "dlms_obis_readout": "yes"}
        items["m"]["ok"] = {"type": "bool", "dlms_status": "connected"}
        items["m"]["summary"] = {"type": "dict", "dlms_status": "summary"}
        sh.load_item_tree(items)
        sh.start()
        plugin = sh.plugin("dlms")
        wait_for(lambda: plugin._listener is not None and plugin._listener.connected)
        sim.send_once()
        wait_for(lambda: plugin._last_data is not None)
        data = plugin._last_data
        plugin.stop()  # measure _apply alone, without the listener thread competing
        plugin.alive = True
        bindings = [b for _item, b in plugin._obis_items.values()]
        t_apply: List[float] = []
        t_bound: List[float] = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            plugin._apply(data)
            t_apply.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for b in bindings:
                b.select(data)
            t_bound.append(time.perf_counter() - t0)
        plugin.alive = False
        return {"codes": float(len(data.readings)), "items": float(len(bindings)),
                "apply": statistics.median(t_apply), "bound": statistics.median(t_bound)}
    finally:
        sh.stop()
        sim.stop()


def bench_stop_readout(rounds: int) -> List[float]:
    durations = []
    for _ in range(rounds):
        meter = SimulatedMeter("lgz_e350").start()
        sh = SmartHome(plugins_dir())
        try:
            sh.load_plugins({"dlms": {"plugin_name": "dlms", "serialport": meter.port, "update_cycle": 60}})
            sh.load_item_tree({"e": {"type": "num", "dlms_obis_code": "1.8.0"}})
            sh.start()
            meter.wait_for("identification", timeout=20)
            plugin = sh.plugin("dlms")
            t0 = time.perf_counter()
            plugin.stop()
            durations.append(time.perf_counter() - t0)
        finally:
            sh.stop()
            meter.stop()
    return durations


def bench_stop_listen(rounds: int) -> List[float]:
    durations = []
    sim = PushSimulator(wrapper="hdlc", interval=0.2, seed=2)
    sim.open_pty(baudrate=115200, parity="N")
    sim.start()
    sh = SmartHome(plugins_dir())
    try:
        sh.load_plugins({"dlms": {"plugin_name": "dlms", "serialport": sim.path, "mode": "listen",
                                  "listen_baudrate": 115200, "listen_format": "8N1"}})
        sh.load_item_tree({"e": {"type": "num", "dlms_obis_code": "1.8.0"}})
        sh.start()
        plugin = sh.plugin("dlms")
        for _ in range(rounds):
            before = plugin.status()["successes"]
            wait_for(lambda before=before: plugin.status()["successes"] > before)
            t0 = time.perf_counter()
            plugin.stop()
            durations.append(time.perf_counter() - t0)
            plugin.run()
    finally:
        sh.stop()
        sim.stop()
    return durations


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="more rounds")
    args = parser.parse_args()
    rounds = 2000 if args.full else 200
    stops = 5 if args.full else 2
    a = bench_apply(rounds)
    print(f"{'measure':42} {'value':>12} {'reference':>12} {'ratio':>8}")
    print(f"{'apply one message (%d codes, %d items)' % (a['codes'], a['items']):42} "
          f"{a['apply'] * 1e6:10.0f}us {a['bound'] * 1e6:10.0f}us {a['apply'] / a['bound']:8.1f}"
          "  (ref: code lookups only)")
    r = bench_stop_readout(stops)
    print(f"{'stop() during a D0 readout (max of %d)' % stops:42} {max(r) * 1e3:10.0f}ms {2000:10.0f}ms "
          f"{max(r) / 2.0:8.2f}  (ref: SmartHomeNG's 2 s)")
    s = bench_stop_listen(stops)
    print(f"{'stop() while listening (max of %d)' % stops:42} {max(s) * 1e3:10.0f}ms {2000:10.0f}ms "
          f"{max(s) / 2.0:8.2f}  (ref: SmartHomeNG's 2 s)")
    return 0 if max(r + s) < 2.0 else 1


if __name__ == "__main__":
    sys.exit(main())
