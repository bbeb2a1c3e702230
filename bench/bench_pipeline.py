"""Benchmark of the one seam: what the pipeline costs per snapshot, what the plugin costs per push,
and the whole ``read`` process against the wire bound.

Run: ``.venv/bin/python bench/bench_pipeline.py`` (quick) or ``--full``. Written so that it also
runs on commits before the pipeline refactor (for the "before" column of the closing note).

* pipeline: ``Pipeline.feed`` of one enriched snapshot to 3 outputs, against calling the same
  3 outputs' ``publish`` directly (the overhead of the seam itself: health, lock, fan-out);
  and ``enrich`` alone (derived net power), against the same direct fan-out.
* plugin: one push into the items (all DEMO registers with a unit, plus serial, readout and two
  status items), the whole per-push path of the plugin (old: ``_on_push``; new:
  ``Pipeline.feed`` with the items output and the chart history), against looking each item's
  code up in the snapshot (what any sink must do).
* read: ``python -m dlms_protocol read`` as its own process (interpreter start, imports,
  sign-on at 300 Bd, switch to 9600 Bd, 305 data lines) against the lower bound the wire and the
  meter impose (bench_readout.lower_bounds); target <= 1.02.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Dict

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT), str(ROOT / "bench")]

from dlms_protocol.model import MeterData  # noqa: E402
from dlms_protocol.pipeline import Output, Pipeline, Source, enrich  # noqa: E402

READ_TARGET = 1.02


def _median(fn: Callable[[], Any], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class _Null(Output):
    name = "null"

    def __init__(self) -> None:
        self.n = 0

    def publish(self, data: MeterData) -> None:
        self.n += 1


class _Manual(Source):
    name = "bench"

    def start(self, emit: Any, report: Any) -> None:
        pass

    def stop(self, timeout: float = 2.0) -> None:
        pass


def _push_snapshot() -> MeterData:
    from dlms_protocol.config import ListenerConfig
    from dlms_protocol.dlms.decoder import decode_bytes
    from dlms_protocol.simulator.push import PushSimulator

    sim = PushSimulator(wrapper="hdlc", interval=1.0, seed=1)
    frames = b"".join(sim.build())
    return decode_bytes(frames, ListenerConfig(port="bench"), strict=True)[0].to_meter_data()


def bench_pipeline(rounds: int) -> Dict[str, float]:
    raw = _push_snapshot()
    data = enrich(raw)
    outs = [_Null(), _Null(), _Null()]
    pipe = Pipeline(_Manual(), outs, enricher=lambda d: d)
    pipe.start(ticker=False)
    direct = _median(lambda: [o.publish(data) for o in outs], rounds)
    fed = _median(lambda: pipe.feed(data), rounds)
    enriched = _median(lambda: enrich(raw), rounds)
    return {"direct": direct, "feed": fed, "enrich": enriched, "codes": float(len(raw.readings))}


def bench_plugin(rounds: int) -> Dict[str, float]:
    from shng_double import SmartHome
    from shng_double.testing import plugins_dir, wait_for

    from dlms_protocol.simulator.push import PushSimulator

    sim = PushSimulator(wrapper="hdlc", interval=1.0, seed=1)
    sim.open_pty(baudrate=115200, parity="N")
    sh = SmartHome(plugins_dir())
    try:
        sh.load_plugins({"dlms": {"plugin_name": "dlms", "serialport": sim.path, "mode": "listen",
                                  "listen_baudrate": 115200, "listen_format": "8N1"}})
        items: Dict[str, Any] = {"m": {f"c{i}": {"type": "num", "dlms_obis_code": reg.obis}
                                       for i, reg in enumerate(sim.registers) if reg.unit is not None}}
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
        raw = replace(data, readings=tuple(r for r in data.readings if not getattr(r, "derived", False)))
        pipeline = getattr(plugin, "_pipeline", None)
        per_push = (lambda: pipeline.feed(raw)) if pipeline is not None else (lambda: plugin._on_push(data))
        bindings = [b for _item, b in plugin._obis_items.values()]
        n_items = len(bindings) + len(plugin._readout_items) + len(plugin._status_items)
        push = _median(per_push, rounds)
        bound = _median(lambda: [b.select(data) for b in bindings], rounds)
        return {"push": push, "bound": bound, "items": float(n_items), "codes": float(len(raw.readings))}
    finally:
        sh.stop()
        sim.stop()


def bench_read(repeat: int) -> Dict[str, float]:
    from bench_readout import lower_bounds

    from dlms_protocol.simulator.d0 import SimulatedMeter

    runs = []
    bound = 0.0
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for _ in range(repeat):
        with SimulatedMeter("lgz_zmd_large", mode="C", baudrate=9600) as meter:
            bound = lower_bounds(meter)["total"]
            t0 = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "dlms_protocol", "read", "--json", meter.port], cwd=ROOT,
                                  env=env, capture_output=True, text=True, timeout=120)
            runs.append(time.perf_counter() - t0)
            assert done.returncode == 0, done.stderr[-1000:]
    return {"process": statistics.median(runs), "bound": bound}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="more rounds, three read processes (median)")
    args = parser.parse_args()
    rounds = 20000 if args.full else 3000
    p = bench_pipeline(rounds)
    s = bench_plugin(rounds // 10)
    r = bench_read(3 if args.full else 1)
    print(f"{'measure':58} {'value':>10} {'reference':>10} {'ratio':>7}")
    print(f"{'pipeline feed, 3 outputs (vs direct publish to the 3)':58} {p['feed'] * 1e6:8.1f}us "
          f"{p['direct'] * 1e6:8.1f}us {p['feed'] / p['direct']:7.2f}")
    print(f"{'enrich once (%d codes; vs direct publish to 3 outputs)' % p['codes']:58} {p['enrich'] * 1e6:8.1f}us "
          f"{p['direct'] * 1e6:8.1f}us {p['enrich'] / p['direct']:7.2f}")
    print(f"{'plugin, one push into %d items (vs code lookups only)' % s['items']:58} {s['push'] * 1e6:8.1f}us "
          f"{s['bound'] * 1e6:8.1f}us {s['push'] / s['bound']:7.2f}")
    ratio = r["process"] / r["bound"]
    print(f"{'whole read process, 305 lines 300->9600 Bd (vs wire bound)':58} {r['process']:9.3f}s "
          f"{r['bound']:9.3f}s {ratio:7.3f}  target <= {READ_TARGET}: {'met' if ratio <= READ_TARGET else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
