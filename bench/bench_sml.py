"""Benchmark: SML transmissions per second and CPU per transmission, ours vs smllib's own loop.

Input: every transmission of the real captures in ../shared/corpus/sml whose CRC holds
(X.25; the KERMIT one included for ours), cut at their start sequences and fed one by one,
as a reader gets them from the line; without the corpus, generated transmissions
(``simulator.sml``) of the same size class.

Rows:

* smllib alone: ``SmlStreamReader.add`` + ``get_frame`` (transport CRC) + ``SmlFrame.parse_frame``,
  i.e. smllib's own parse loop and nothing else (no units, no Decimal, no checks beyond its CRC);
* smllib + ``get_obis()``: its fast path (skips OBIS codes with A != 1, falls back to nothing);
* ours: ``SmlDecoder.feed``: framing with resynchronisation, transport CRC (X.25, KERMIT quirk),
  smllib's ``parse_frame`` through our builders, every message CRC, readings with Decimal values,
  units from the DLMS unit table, quirk and reduced-data-set detection.

Reported: transmissions/s (wall clock) and CPU µs per transmission (process time), median of 3
runs after a warm-up, and the ratio ours/smllib (how much our extra checks and conversion cost).
``--full`` repeats the input 50 times per run instead of 5.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, List, Tuple

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from dlms_protocol.simulator.sml import SmlSimulator, split_capture  # noqa: E402
from dlms_protocol.sml.decoder import SmlDecoder  # noqa: E402
from dlms_protocol.sml.framing import START, check_crc  # noqa: E402

CORPUS = Path(os.environ.get("DLMS_CORPUS", Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"))


def transmissions() -> Tuple[List[bytes], str]:
    """Complete X.25 transmissions (smllib's default CRC), and where they came from."""
    out: List[bytes] = []
    folder = CORPUS / "sml"
    for path in sorted(folder.glob("*.bin")) if folder.is_dir() else []:
        for chunk in split_capture(path.read_bytes()):
            if chunk.startswith(START) and check_crc(chunk) == "x25":
                out.append(chunk)
    if out:
        return out, f"{len(out)} real transmissions from {folder}"
    sim = SmlSimulator(seed=1)
    return [sim.build() for _ in range(40)], "40 generated transmissions (corpus not found)"


def smllib_alone(data: List[bytes], obis_fast_path: bool = False) -> Callable[[], int]:
    from smllib import SmlStreamReader

    reader = SmlStreamReader()

    def run() -> int:
        got = 0
        for tx in data:
            reader.add(tx)
            frame = reader.get_frame()
            if frame is None:
                continue
            entries = frame.get_obis() if obis_fast_path else frame.parse_frame()
            got += 1 if entries else 0
        return got
    return run


def ours(data: List[bytes]) -> Callable[[], int]:
    decoder = SmlDecoder()

    def run() -> int:
        got = 0
        for tx in data:
            got += len(decoder.feed(tx))
        return got
    return run


def measure(run: Callable[[], int], expected: int, repeats: int = 3) -> Tuple[float, float]:
    """(transmissions per second wall clock, CPU µs per transmission), medians after a warm-up."""
    got = run()
    if got != expected:
        raise SystemExit(f"decoded {got} of {expected} transmissions: the pipeline is broken")
    rates, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        run()
        w1, c1 = time.perf_counter(), time.process_time()
        rates.append(expected / (w1 - w0))
        cpus.append((c1 - c0) / expected * 1e6)
    return statistics.median(rates), statistics.median(cpus)


def main(argv: List[str] = None) -> int:  # type: ignore[assignment]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="50 passes over the input per run (default 5)")
    args = parser.parse_args(argv)
    base, origin = transmissions()
    data = base * (50 if args.full else 5)
    n = len(data)
    size = sum(len(t) for t in base) / len(base)
    rows = [
        ("smllib 1.7 alone: SmlStreamReader + parse_frame", measure(smllib_alone(data), n)),
        ("smllib 1.7 alone: SmlStreamReader + get_obis (fast path)", measure(smllib_alone(data, True), n)),
        ("ours: SmlDecoder.feed (resync, 2 CRC levels, readings, units)", measure(ours(data), n)),
    ]
    ref_rate, ref_cpu = rows[0][1]
    print(f"SML: {origin}, {size:.0f} bytes on average, {n} transmissions x 3 runs (median)")
    print(f"{'pipeline':<64} {'tx/s':>8} {'CPU us/tx':>10} {'CPU ratio':>10} {'rate ratio':>11}")
    for name, (rate, cpu) in rows:
        print(f"{name:<64} {rate:>8.0f} {cpu:>10.0f} {cpu / ref_cpu:>9.2f}x {rate / ref_rate:>10.2f}x")
    print("ratios are relative to smllib's parse_frame loop (CPU ratio > 1: ours costs that much more per "
          "transmission; rate ratio < 1: ours handles that share of its rate). A meter sends one "
          "transmission every 1 to 4 s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
