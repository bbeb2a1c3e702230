"""Benchmark: a bare data-notification arriving one byte per read (2400 Bd) versus in one read.

Issue 13: the deframer used to walk the APDU from its start again for every byte, 1.6 ms per
byte after 7 KB. Now the walk resumes where it stopped, so the cost per byte must stay flat as the
APDU grows. Printed: CPU µs per byte, byte-per-read and whole, for three sizes, and the ratio of
the largest to the smallest size per byte (about 1 when linear; it was ~14 before).
"""
from __future__ import annotations

import os
import sys
import time
from datetime import datetime

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from dlms_protocol.dlms.apdu import Array, Structure, encode_notification  # noqa: E402
from dlms_protocol.dlms.deframer import Deframer  # noqa: E402


def notification(n: int) -> bytes:
    items = Array([Structure([b"\x01\x00\x01\x08\x00\xff", i]) for i in range(n)])
    for it in items:
        it.types = ("octet-string", "double-long-unsigned")
    items.types = ("structure",) * n
    return encode_notification(items, datetime(2024, 1, 1), invoke_id=1)


def per_byte(apdu: bytes, step: int) -> float:
    d = Deframer("auto")
    start = time.process_time()
    out = []
    for i in range(0, len(apdu), step):
        out += d.feed(apdu[i:i + step])
    spent = time.process_time() - start
    assert len(out) == 1, out
    return spent * 1e6 / len(apdu)


def main() -> int:
    rows = []
    for n in (100, 400, 1600):
        apdu = notification(n)
        rows.append((len(apdu), per_byte(apdu, 1), per_byte(apdu, len(apdu))))
    print(f"{'APDU bytes':>10}  {'1 byte/read µs/B':>17}  {'1 read µs/B':>12}")
    for size, bytewise, whole in rows:
        print(f"{size:>10}  {bytewise:>17.1f}  {whole:>12.2f}")
    print(f"per-byte cost {rows[-1][0]} B vs {rows[0][0]} B (1 byte/read): {rows[-1][1] / rows[0][1]:.2f}x "
          "(1.0 = linear)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
