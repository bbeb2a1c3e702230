"""Fuzz runner: ``python bench/fuzz/run.py --target hdlc --cases 200000`` (or ``--target all``).

Also ``python3 tools/dev.py fuzz --target X --cases N``, or short ``python3 tools/dev.py fuzz X N``.
Every ``targets_*.py`` beside this file registers its targets in ``registry.TARGETS``; this script mutates their seeds
(``registry.mutate``: bit flips, replaced/inserted/deleted bytes, duplicated, truncated,
spliced and replayed stretches), runs each case with a per-case alarm, and prints one table
row per target: cases, crashes (an exception outside ``DlmsError``), hangs, values accepted,
accepted unchecked (a checksum/tag existed but was not verified), unprotected (the framing has
none), foreign (never sent intact), chunking mismatches. The first findings of each
kind are printed as hex with the case number, so ``--seed S --only CASE`` reproduces one.
Exit status 1 when a target had a crash, hang, unchecked value or mismatch.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import random
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent.parent))

from registry import TARGETS, Target, Verdict, mutate  # noqa: E402

from dlms_protocol.errors import DlmsError  # noqa: E402


class Hang(Exception):
    """Raised by the alarm inside a case that took too long."""


def _alarm(signum: int, frame: object) -> None:
    raise Hang()


def load_targets() -> None:
    for path in sorted(HERE.glob("targets_*.py")):
        importlib.import_module(path.stem)


def _case_input(target_seeds: list, datas: list, rng: random.Random) -> tuple:
    seed = rng.choice(target_seeds)
    return seed, mutate(rng, seed.data, datas)


def run_target(target: Target, cases: int, base_seed: int, hang: float, show: int,
               only: Optional[int] = None) -> Dict[str, object]:
    seeds = list(target.seeds())
    if not seeds:
        raise SystemExit(f"target {target.name}: no seeds (corpus missing?)")
    datas = [s.data for s in seeds]
    totals = {"cases": 0, "crashes": 0, "hangs": 0, "accepted": 0, "unchecked": 0, "unprotected": 0, "foreign": 0,
              "mismatch": 0, "errors": 0}
    shown: Dict[str, int] = {}
    started = time.perf_counter()
    report_every = max(1, cases // 10)
    for n in range(cases):
        if only is not None and n != only:
            continue
        rng = random.Random(f"{base_seed}:{target.name}:{n}")
        seed, data = _case_input(seeds, datas, rng)
        kind: Optional[str] = None
        detail = ""
        signal.setitimer(signal.ITIMER_REAL, hang)
        try:
            verdict = target.check(data, seed, rng)
        except Hang:
            kind, verdict = "hangs", Verdict()
        except DlmsError as exc:  # a target that lets one through still counts it as handled
            verdict = Verdict(errors=1)
            detail = repr(exc)
        except Exception:  # noqa: BLE001 - a crash is what the fuzzer looks for
            kind, verdict = "crashes", Verdict()
            detail = traceback.format_exc(limit=4)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        totals["cases"] += 1
        for k in ("accepted", "unchecked", "unprotected", "foreign", "mismatch", "errors"):
            totals[k] += getattr(verdict, k)
        if kind:
            totals[kind] += 1
        for what in [kind] + [k for k in ("unchecked", "foreign", "mismatch") if getattr(verdict, k)]:
            if what and shown.get(what, 0) < show:
                shown[what] = shown.get(what, 0) + 1
                print(f"[{target.name}] {what} in case {n}: {data.hex()}", file=sys.stderr)
                for line in ([detail] if detail and what in ("crashes", "hangs") else []) + verdict.notes[:3]:
                    print("    " + line.rstrip().replace("\n", "\n    "), file=sys.stderr)
        if (n + 1) % report_every == 0 and only is None:
            print(f"[{target.name}] {n + 1}/{cases} cases, {time.perf_counter() - started:.0f} s", file=sys.stderr,
                  flush=True)
    totals["seconds"] = round(time.perf_counter() - started, 1)
    return totals


COLUMNS = ("target", "cases", "crashes", "hangs", "accepted", "unchecked", "unprotected", "foreign", "mismatch",
           "errors", "seconds")


def print_table(rows: List[Dict[str, object]]) -> None:
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in COLUMNS]
    print("  ".join(c.rjust(w) for c, w in zip(COLUMNS, widths)))
    for r in rows:
        print("  ".join(str(r[c]).rjust(w) for c, w in zip(COLUMNS, widths)))


def main(argv: Optional[List[str]] = None) -> int:
    load_targets()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("positional", nargs="*", metavar="TARGET [N]",
                   help="short form: a target name and the number of cases (tools/dev.py fuzz d0_dialogue 200000)")
    p.add_argument("--target", action="append", help="target name (repeatable) or 'all'; see --list")
    p.add_argument("--cases", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=1, help="base seed: the same seed gives the same cases")
    p.add_argument("--hang", type=float, default=5.0, metavar="S", help="a case slower than S seconds is a hang")
    p.add_argument("--show", type=int, default=3, help="findings printed per kind and target")
    p.add_argument("--only", type=int, metavar="CASE", help="run only this case number (reproduce a finding)")
    p.add_argument("--list", action="store_true", help="list the targets")
    args = p.parse_args(argv)
    if args.positional:
        args.target = (args.target or []) + [args.positional[0]]
        if len(args.positional) > 1:
            try:
                args.cases = int(args.positional[1])
            except ValueError:
                p.error(f"number of cases {args.positional[1]!r} is not a number")
    if args.list or not args.target:
        for name, t in sorted(TARGETS.items()):
            print(f"{name:<14} {t.description}")
        return 0 if args.list else 2
    names = sorted(TARGETS) if "all" in args.target else args.target
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        print(f"unknown target(s): {', '.join(unknown)}; known: {', '.join(sorted(TARGETS))}", file=sys.stderr)
        return 2
    if args.cases < 1 or not args.hang > 0:
        print("--cases and --hang must be positive", file=sys.stderr)
        return 2
    signal.signal(signal.SIGALRM, _alarm)
    logging.disable(logging.CRITICAL)  # damaged input is logged as warnings; hundreds of thousands are noise
    os.environ.setdefault("DLMS_FUZZ", "1")
    rows = []
    for name in names:
        row = run_target(TARGETS[name], args.cases, args.seed, args.hang, args.show, args.only)
        rows.append({"target": name, **row})
    print_table(rows)
    bad = any(r["crashes"] or r["hangs"] or r["unchecked"] or r["mismatch"] for r in rows)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
