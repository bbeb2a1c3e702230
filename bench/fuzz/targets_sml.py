"""Fuzz target of the SML stream decoder (framing, CRC X.25/KERMIT, smllib parse, readings).

Seeds are short streams of one meter: every real capture (raw serial dumps with their damaged
transmissions included) and generated ones (full and reduced data set, Holley KERMIT CRC, an
escaped octet string). A case decodes the mutated stream in one read and, for a share of cases,
in random reads (sometimes one byte per read), and judges every telegram: it must be byte for
byte a transmission whose CRC holds (``unchecked`` otherwise) and one the meter sent intact
(``foreign`` otherwise, where a complete transmission spliced in from another seed counts as
sent: a CRC collision of a damaged transmission, p ~ 2^-16 per damaged one).
"""
from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import List, Sequence

from registry import Seed, Target, Verdict, chunks, register

from dlms_protocol.simulator.sml import SmlSimulator, encode_sml, entry, octets, unsigned
from dlms_protocol.sml.decoder import SmlDecoder, SmlTelegram
from dlms_protocol.sml.framing import check_crc

logging.disable(logging.CRITICAL)

ROOT = Path(__file__).resolve().parent.parent.parent
CORPUS = Path(os.environ.get("DLMS_CORPUS", ROOT.parent / "shared" / "corpus")) / "sml"
CHUNKED = 0.3
#: every transmission any seed's meter sent intact: the ``splice`` mutation puts one meter's
#: complete transmission into another's stream (two meters on one line); such a one is genuine
SENT: set = set()


def _decode(reads: Sequence[bytes]) -> List[SmlTelegram]:
    dec = SmlDecoder()
    out: List[SmlTelegram] = []
    for r in reads:
        out += dec.feed(r)
    return out + dec.finish()


def check(data: bytes, seed: Seed, rng: random.Random) -> Verdict:
    sent = seed.context
    v = Verdict()
    whole = _decode([data])
    for tel in whole:
        v.accepted += 1
        if check_crc(tel.raw) is None:
            v.unchecked += 1
            v.notes.append(f"accepted without a CRC that holds: {tel.raw.hex()[:120]}")
        if tel.raw not in sent and tel.raw not in SENT:
            v.foreign += 1
            v.notes.append(f"a transmission the meter never sent intact: {tel.raw.hex()[:120]}")
    if rng.random() < CHUNKED:
        reads = [data[i:i + 1] for i in range(len(data))] if rng.random() < 0.1 else chunks(rng, data)
        cut = _decode(reads)
        if [(t.raw, t.readings) for t in cut] != [(t.raw, t.readings) for t in whole]:
            v.mismatch += 1
            v.notes.append(f"{len(whole)} telegram(s) in one read, {len(cut)} in {len(reads)} reads")
    return v


def _seed(data: bytes) -> Seed:
    good = frozenset(t.raw for t in _decode([data]))
    if not good:
        raise RuntimeError(f"fuzz seed does not decode: {data[:40].hex()}…")
    SENT.update(good)
    return Seed(data, good)


def seeds() -> List[Seed]:
    out = [_seed(p.read_bytes()) for p in sorted(CORPUS.glob("*.bin"))] if CORPUS.is_dir() else []
    for kw in ({}, {"reduced": True}, {"crc": "kermit", "manufacturer": "HLY"}):
        sim = SmlSimulator(seed=3, **kw)  # type: ignore[arg-type]
        out.append(_seed(b"".join(sim.build() for _ in range(2))))
    out.append(_seed(encode_sml(b"\x0a\x01SIM\x00\x00\x00\x00\x01", [
        entry("8181c78203ff", octets(b"\x1b" * 12)), entry("0100010800ff", unsigned(5, 4), 30, 0)])))
    return out


register(Target("sml", "SML transport v1 stream (X.25/KERMIT CRC, escapes, smllib parse) via SmlDecoder",
                seeds, check))
