"""Benchmark: where the Victron service's CPU per push goes, stage by stage, in the running service.

Why: timers inside the service change what they measure (each wrapper is one more cold
function per push), and an in-process loop runs warmer than a service that sleeps a quarter of
a second between pushes while other processes use the caches. So each stage's cost is measured
by taking it away: the service of ``bench_victron.py`` (same bus, settings stand-in, pty, AM550
frames at 4/s, whole-frame writes) runs once per row, and after it registered, a signal makes
the named function do nothing from then on (its code object is swapped, so references bound
at start-up do nothing too). A row's CPU per push minus the next row's is what that stage costs
with the caches as cold as the service really finds them:

* the D-Bus update (items, ``ItemsChanged`` marshalled and written) = row 1 - row 2;
* enriching, mapping, the bridge and the outputs' bookkeeping = row 2 - row 3;
* turning the decoded push into ``MeterData`` and handing it on = row 3 - row 4;
* decoding (deframing, deciphering, the layout) = row 4 - row 5;
* row 5 is the listener's own reading, with the process's wake-up.

The rows take turns in rounds (each round in another order); each figure is the median of its
rounds. Reading the table: the figures are the whole process's CPU (all threads), so they move
with the machine's state as ``bench_victron.py``'s do; compare rows of one run only.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import bench_victron as bv

ROOT = bv.ROOT
#: (label, "module:Class.method" replaced by nothing after registration, what the nothing returns)
STAGES: Tuple[Tuple[str, Optional[str], str], ...] = (
    ("the whole service", None, ""),
    ("without the D-Bus update", "dlms_protocol.victron.service:MeterService.update", "0"),
    ("without enrich, map, bridge, outputs", "dlms_protocol.pipeline:Pipeline.feed", "None"),
    ("without MeterData and delivery", "dlms_protocol.dlms.listener:PushListener._send", "None"),
    ("without decoding (the listener alone)", "dlms_protocol.dlms.decoder:PushDecoder.feed", "[]"),
)
#: what each difference of consecutive rows is
COSTS = ("the D-Bus update", "enrich, map, bridge, outputs", "MeterData and delivery", "decoding", "")

#: runs the service as ``python -m dlms_protocol``; SIGUSR1 makes argv[1]'s function do nothing
STAGE_SCRIPT = r"""
import importlib, runpy, signal, sys
target, result = sys.argv[1], sys.argv[2]
sys.argv = ["dlms_protocol"] + sys.argv[3:]

def off(*_):
    module, _, qual = target.partition(":")
    owner = importlib.import_module(module)
    for part in qual.split("."):
        owner = getattr(owner, part)  # AttributeError: the stage was renamed; fix STAGES
    owner.__code__ = eval("lambda *a, **k: " + result).__code__
    print("stage off:", target, flush=True)

signal.signal(signal.SIGUSR1, off)
runpy.run_module("dlms_protocol", run_name="__main__", alter_sys=True)
"""


def run_stage(target: Optional[str], result: str, pushes: int, rounds_left: List[float],
              address: str, client: object, tmp: Path, env: Dict[str, str]) -> None:
    """One service with ``target`` taken away after registration: its CPU per push, appended."""
    link = bv.PtyLink(baudrate=bv.BAUD, bytesize=8, parity="N")
    sim = bv.PushSimulator(wrapper="hdlc", key=bv.EK, auth_key=bv.AK, security=0x30, layout="profile",
                           profile=bv.PROFILE, seed=5, interval=bv.PERIOD, invocation_counter=1000)
    cfg = tmp / "dlms-meter.ini"
    cfg.write_text(f"[meter]\nport = {link.port}\nbaudrate = {bv.BAUD}\nparity = N\nkey = {bv.EK.hex()}\n"
                   f"auth_key = {bv.AK.hex()}\n\n[victron]\nbus = {address}\ntimeout = 5\n\n"
                   "[logging]\nlevel = warning\n")
    script = tmp / "stage.py"
    script.write_text(STAGE_SCRIPT)
    log_path = tmp / "service.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([bv.SERVICE_PYTHON[0], str(script), target or "-", result, "victron",
                                 "--config", str(cfg)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        whole = bv.paced_writer(link, None)
        end = time.monotonic() + 60
        while client.service("grid") is None and time.monotonic() < end:  # type: ignore[attr-defined]
            whole(sim.emit())
            time.sleep(bv.PERIOD)
        if client.service("grid") is None:  # type: ignore[attr-defined]
            raise RuntimeError("the service did not register; log:\n" + log_path.read_text())
        bv.push_run(proc, sim, whole, 12)  # warm-up: caches, the measured period
        if target:
            proc.send_signal(__import__("signal").SIGUSR1)
            time.sleep(0.3)
            if "stage off" not in log_path.read_text():
                raise RuntimeError(f"{target} was not taken away; log:\n" + log_path.read_text())
        bv.push_run(proc, sim, whole, bv.WARM_UP)
        rounds_left.append(bv.push_run(proc, sim, whole, pushes))
        if proc.poll() is not None:
            raise RuntimeError("the service ended during the run; log:\n" + log_path.read_text())
    finally:
        bv.end_process(proc)
        link.close()
        client.wait_for(lambda c: c.service("grid") is None, 30)  # type: ignore[attr-defined]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--full", action="store_true", help="6 rounds (default 3)")
    ap.add_argument("--rounds", type=int, help="rounds of all rows (default 3, --full 6)")
    ap.add_argument("--pushes", type=int, default=60, help="counted pushes per row and round (default 60)")
    ap.add_argument("--service-python", metavar="PATH",
                    help="run the service under this interpreter (e.g. .venv-matrix/py38-venus35/bin/python)")
    args = ap.parse_args()
    if args.service_python:
        bv.SERVICE_PYTHON[0] = args.service_python
    args.rounds = args.rounds or (6 if args.full else 3)
    subprocess.run([bv.SERVICE_PYTHON[0], "-m", "compileall", "-q", str(ROOT / "dlms_protocol")], check=True,
                   stdout=subprocess.DEVNULL)
    from dbus_fixtures import DbusDaemon, SettingsStandIn, VenusClient

    daemon = DbusDaemon()
    settings = SettingsStandIn(daemon.address)
    client = VenusClient(daemon.address)
    tmp = Path(tempfile.mkdtemp(prefix="bench-victron-stages-"))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    env.update(bv.run_script_env())
    per: List[List[float]] = [[] for _ in STAGES]
    try:
        for r in range(args.rounds):
            order = list(range(len(STAGES)))
            order = order[r % len(order):] + order[:r % len(order)]
            for i in order:
                _, target, result = STAGES[i]
                run_stage(target, result, args.pushes, per[i], daemon.address, client, tmp, env)
    finally:
        client.stop()
        settings.stop()
        daemon.stop()
        shutil.rmtree(tmp, ignore_errors=True)  # (the config with the test keys, the log)

    med = [statistics.median(p) * 1e3 for p in per]
    version = subprocess.run([bv.SERVICE_PYTHON[0], "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True).stdout.strip()
    print(f"Victron service, CPU per push by stage (Python {version}; whole-frame writes, AM550 HDLC 0x30, "
          f"{args.pushes} pushes x {args.rounds} rounds per row; median, rounds in brackets)")
    head = ("service", "CPU per push", "rounds", "difference to the next row", "that is")
    rows = []
    for i, (label, _, _) in enumerate(STAGES):
        diff = f"{med[i] - med[i + 1]:.3f} ms ({(med[i] - med[i + 1]) / med[0]:.0%})" if i + 1 < len(STAGES) else ""
        rows.append((label, f"{med[i]:.3f} ms", f"{min(per[i]) * 1e3:.2f}-{max(per[i]) * 1e3:.2f}", diff, COSTS[i]))
    widths = [max(len(r[k]) for r in rows + [head]) for k in range(5)]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
