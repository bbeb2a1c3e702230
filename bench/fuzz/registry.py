"""The one registry of fuzz targets, and the mutations they share.

A target module (``targets_*.py`` next to this file) calls ``register(Target(...))``; ``run.py``
imports every such module, so adding a parser's target means adding a file, not editing the
runner. A target supplies seeds (valid inputs of its parser: corpus frames and generated ones)
and ``check``: run the parser on one mutated input and say what came out. The runner mutates,
times, catches what escapes and adds up the verdicts.

What a ``Verdict`` counts (the figures the closing notes of issue 13 quote):

* ``accepted``: values/messages the parser handed out;
* ``unchecked``: accepted ones that no checksum/tag verified although the framing has one
  (must be 0);
* ``unprotected``: accepted from a framing that has no checksum at all and no keys (a plain
  DLMS/IP wrapper frame or bare APDU): reported, not a failure; nothing can verify them;
* ``foreign``: accepted ones, from a checksummed or keyed stream, that the meter never sent in an
  intact frame: a splice, a replay, a checksum collision, or a parser bug (must be 0 up to
  collisions);
* ``mismatch``: inputs whose result depended on how they were cut into reads (must be 0).

Crashes (an exception outside the documented ``DlmsError`` hierarchy) and hangs are counted by
the runner.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Sequence


@dataclass
class Verdict:
    accepted: int = 0
    unchecked: int = 0
    unprotected: int = 0
    foreign: int = 0
    mismatch: int = 0
    errors: int = 0  #: DlmsErrors reported (expected: most mutations are damage)
    notes: List[str] = field(default_factory=list)  #: why a case counted as unchecked/foreign/mismatch


@dataclass(frozen=True)
class Seed:
    """One valid input and whatever the target needs to judge its mutations (keys, expected values)."""

    data: bytes
    context: Any = None


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    seeds: Callable[[], Sequence[Seed]]
    check: Callable[[bytes, Seed, random.Random], Verdict]


#: name -> target; filled by the ``targets_*.py`` modules
TARGETS: Dict[str, Target] = {}


def register(target: Target) -> Target:
    if target.name in TARGETS:
        raise ValueError(f"fuzz target {target.name!r} registered twice")
    TARGETS[target.name] = target
    return target


def _flip(rng: random.Random, b: bytearray, others: Sequence[bytes]) -> None:
    if b:
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)


def _replace(rng: random.Random, b: bytearray, others: Sequence[bytes]) -> None:
    if b:
        b[rng.randrange(len(b))] = rng.choice((0x00, 0x7E, 0x68, 0x16, 0xFF, 0x0F, 0xE0, 0xDB, rng.randrange(256)))


def _insert(rng: random.Random, b: bytearray, others: Sequence[bytes]) -> None:
    i = rng.randrange(len(b) + 1)
    b[i:i] = bytes(rng.randrange(256) for _ in range(rng.choice((1, 1, 2, 5, 20))))


def _delete(rng: random.Random, b: bytearray, others: Sequence[bytes]) -> None:
    if b:
        i = rng.randrange(len(b))
        del b[i:i + rng.choice((1, 1, 2, 8, 40, 200))]


def _duplicate(rng: random.Random, b: bytearray, others: Sequence[bytes]) -> None:
    if b:
        i = rng.randrange(len(b))
        j = min(len(b), i + rng.randrange(1, 200))
        k = rng.randrange(len(b) + 1)
        b[k:k] = b[i:j]


def _truncate(rng: random.Random, b: bytearray, others: Sequence[bytes]) -> None:
    if b:
        del b[rng.randrange(len(b)):]


def _splice(rng: random.Random, b: bytearray, others: Sequence[bytes]) -> None:
    """Part of another seed in the middle of this one (two meters on one line, a lost stretch)."""
    if others:
        o = rng.choice(others)
        if o:
            i = rng.randrange(len(o))
            piece = o[i:i + rng.randrange(1, 300)]
            k = rng.randrange(len(b) + 1)
            b[k:k + rng.choice((0, 0, len(piece)))] = piece


def _repeat_prefix(rng: random.Random, b: bytearray, others: Sequence[bytes]) -> None:
    """The same bytes again (a replayed frame)."""
    b += b[:rng.randrange(1, len(b) + 1)] if b else b""


MUTATIONS: List[Callable[[random.Random, bytearray, Sequence[bytes]], None]] = [
    _flip, _flip, _flip, _replace, _replace, _insert, _delete, _duplicate, _truncate, _splice, _repeat_prefix,
]


def mutate(rng: random.Random, data: bytes, others: Sequence[bytes] = (), max_len: int = 1 << 16) -> bytes:
    """1 to 4 random mutations of ``data`` (bit flips most often: a noisy line)."""
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
        rng.choice(MUTATIONS)(rng, b, others)
    return bytes(b[:max_len])


def chunks(rng: random.Random, data: bytes) -> List[bytes]:
    """``data`` cut into random reads (1 byte to a few hundred)."""
    out, i = [], 0
    while i < len(data):
        n = rng.choice((1, 1, 2, 3, 7, 16, 64, 300))
        out.append(data[i:i + n])
        i += n
    return out


__all__ = ["Verdict", "Seed", "Target", "TARGETS", "register", "mutate", "chunks", "MUTATIONS"]
