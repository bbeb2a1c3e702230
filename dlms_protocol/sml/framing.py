"""SML transport protocol v1: cut a byte stream into transmissions and check their CRC (sans-io).

A transmission is ``1B1B1B1B 01010101 <payload> 1B1B1B1B 1A pp c1 c2``: escape sequences sit
on 4-byte boundaries counted from the start sequence, an escape sequence inside the payload is
sent twice, ``pp`` padding bytes make the payload a multiple of 4, and ``c1 c2`` is the
CRC-16/X.25 over everything before it, low byte first.

Why our own framer and not smllib's ``SmlStreamReader``: a reader on a real line must

* resynchronise after a *cut* transmission (the end sequence lost): smllib searches for the
  end and swallows the next, good transmission with the damaged one; here a new start
  sequence before the end ends the damaged one, which is counted and dropped;
* never hold more than ``max_size`` bytes (smllib silently drops the oldest bytes, which can
  splice two transmissions), and say so in the statistics;
* try the CRC-16/KERMIT of early Holley DTZ541 firmware *without* guessing: the framer only
  reports which CRC held, the decoder accepts KERMIT when the quirk table allows it.

Nothing here raises: damaged input becomes ``FramingError``/``ChecksumError`` objects handed to
``on_error`` (counted by the caller); only transmissions whose CRC holds are returned.
"""
from __future__ import annotations

import binascii
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

from ..errors import ChecksumError, DlmsError, FramingError

ESCAPE = b"\x1b\x1b\x1b\x1b"
START = ESCAPE + b"\x01\x01\x01\x01"
_END_MARK = 0x1A
#: a transmission longer than this is no SML transmission (real ones: 200 B to 2 KiB)
MAX_SIZE = 16 * 1024

_REVERSED = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def _reflected_crc(data: bytes, init: int) -> int:
    """CRC-16 with the reflected polynomial 0x1021 (binascii's C routine on bit-reversed bytes)."""
    crc = binascii.crc_hqx(bytes(data).translate(_REVERSED), init)
    return (_REVERSED[crc & 0xFF] << 8) | _REVERSED[crc >> 8]


def crc16_x25(data: bytes) -> int:
    """CRC-16/X.25 (init 0xFFFF, final XOR 0xFFFF): SML's transport and message CRC."""
    return _reflected_crc(data, 0xFFFF) ^ 0xFFFF


def crc16_kermit(data: bytes) -> int:
    """CRC-16/KERMIT (init 0, no final XOR): what early Holley DTZ541 firmware sends instead."""
    return _reflected_crc(data, 0)


@dataclass(frozen=True)
class Transmission:
    """One complete transmission whose CRC holds. ``crc`` names the algorithm that held."""

    raw: bytes  # the whole transmission as received, start sequence to CRC
    payload: bytes  # the SML messages: escapes undone, padding removed
    crc: str  # "x25" or "kermit"
    offset: int  # stream position of its first byte (bytes fed before it)


def _damage_hint(raw: bytes) -> str:
    """What a transmission whose CRC fails says about the line: damaged bytes, or (no byte with its
    top bit set, 0x7F where SML has 0xFF: the OBIS codes' last group) a line read with 7 data bits."""
    if raw and max(raw) < 0x80 and b"\x7f" in raw:
        return ("no byte of it has its top bit set (0xFF arrives as 0x7F): the line is read with 7 data bits; "
                "SML needs 8N1 (9600 Bd, 8 data bits, no parity); the transmission is dropped")
    return "bytes were damaged on the line; the transmission is dropped"


def check_crc(raw: bytes) -> Optional[str]:
    """Which CRC the transmission's last two bytes carry: "x25" (low byte first, the standard),
    "kermit" (high byte first, Holley DTZ541), or None when neither holds."""
    body, sent_lo_first = raw[:-2], raw[-2] | raw[-1] << 8
    if crc16_x25(body) == sent_lo_first:
        return "x25"
    if crc16_kermit(body) == (raw[-2] << 8 | raw[-1]):
        return "kermit"
    return None


class SmlFramer:
    """Feed chunks, get CRC-checked transmissions; damaged ones go to ``on_error``.

    ``crc_errors``, ``cut`` (a new start before the end), ``oversized`` and ``bad_escapes``
    count what was dropped; ``skipped`` counts bytes outside any transmission.
    """

    def __init__(self, on_error: Optional[Callable[[DlmsError], None]] = None, max_size: int = MAX_SIZE) -> None:
        self.on_error = on_error
        self.max_size = max(64, int(max_size))
        self._buf = bytearray()
        self._pos = 0  # stream offset of _buf[0]
        #: how far the unfinished transmission at the buffer's start was scanned (position, doubled
        #: escapes so far, where to look for a start sequence): the next bytes continue from there,
        #: so a long one fed in small pieces is scanned once, not once per piece
        self._scanned: Optional[Tuple[int, List[int], int]] = None
        self.crc_errors = 0
        self.cut = 0
        self.oversized = 0
        self.bad_escapes = 0
        self.skipped = 0

    def reset(self) -> None:
        """Forget buffered bytes (a reopened port starts mid-transmission)."""
        self._pos += len(self._buf)
        self._buf.clear()
        self._scanned = None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    @property
    def in_transmission(self) -> bool:
        """True when the buffer holds the start of a transmission that has not ended yet."""
        return self._buf.find(START) >= 0

    def end_off_grid(self) -> Optional[Tuple[int, bool]]:
        """How many bytes the end sequence of the buffered, unfinished transmission sits off SML's
        4-byte grid (it is there, but bytes were lost before it), and whether the CRC after it
        matches all the same (then nothing was lost: the sender did not pad it); else None."""
        start = self._buf.find(START)
        if start < 0:
            return None
        idx = self._buf.find(ESCAPE + bytes([_END_MARK]), start + 8)
        while idx >= 0:
            if (idx - start) % 4:
                raw = bytes(self._buf[start:idx + 8])
                return (idx - start) % 4, len(raw) == idx + 8 - start and check_crc(raw) is not None
            idx = self._buf.find(ESCAPE + bytes([_END_MARK]), idx + 1)
        return None

    def feed(self, chunk: bytes) -> List[Transmission]:
        self._buf += chunk
        out: List[Transmission] = []
        while self._step(out):
            pass
        return out

    # ------------------------------------------------------------------ internals
    def _drop(self, n: int, count_skipped: bool = True) -> None:
        if count_skipped:
            self.skipped += n
        del self._buf[:n]
        self._pos += n
        self._scanned = None

    def _error(self, exc: DlmsError) -> None:
        if self.on_error is not None:
            self.on_error(exc)

    def _step(self, out: List[Transmission]) -> bool:
        """Handle what the buffer starts with; False when more bytes are needed."""
        buf = self._buf
        start = buf.find(START)
        if start < 0:
            # keep a tail that may be the beginning of a start sequence
            keep = min(len(buf), len(START) - 1)
            if len(buf) > keep:
                self._drop(len(buf) - keep)
            return False
        if start:
            self._drop(start)
        end, escapes = self._find_end()
        if end is None:
            return False
        if end < 0:  # damaged: resynchronise at the next start sequence after this one
            nxt = self._buf.find(START, 1)
            # without a next start, keep the tail: it may be the first bytes of one
            self._drop(nxt if nxt > 0 else len(self._buf) - (len(START) - 1), count_skipped=False)
            return True
        raw = bytes(self._buf[:end])
        offset = self._pos
        self._drop(end, count_skipped=False)
        self._accept(raw, escapes, offset, out)
        return True

    def _find_end(self) -> Tuple[Optional[int], List[int]]:
        """Length of the transmission at buffer start (None: incomplete, -1: damaged) and the
        positions of the doubled escape sequences inside it."""
        buf = self._buf
        # a resumed scan: escapes are looked for from where it stopped, start sequences from where
        # the last search for one began or where one could begin in the new bytes (every one before
        # is data: the scan stops at any other)
        pos, escapes, origin = self._scanned if self._scanned is not None else (8, [], 8)
        self._scanned = None
        next_start = buf.find(START, origin)
        for e in escapes[-2:]:  # (a start completed by the new bytes may be a doubled escape's data)
            if next_start == e + 4:
                origin = e + 8
                next_start = buf.find(START, origin)
        while True:
            idx = buf.find(ESCAPE, pos)
            limit = next_start if next_start >= 0 else len(buf)
            if idx < 0 or idx >= limit:
                return self._unfinished(next_start, escapes, max(pos, len(buf) - len(ESCAPE) + 1), origin)
            if idx + 8 > self.max_size:  # decided by position, not by how much happens to be buffered
                return self._oversized(), escapes
            if idx % 4:  # not on a 4-byte boundary: payload bytes that only look like an escape
                pos = idx + 1
                continue
            if len(buf) < idx + 8:
                return self._unfinished(next_start, escapes, idx, origin)
            mark = buf[idx + 4:idx + 8]
            if mark == ESCAPE:
                escapes.append(idx)
                pos = idx + 8
                if next_start == idx + 4:  # the doubled escape followed by 01010101 is data, no start
                    origin = pos
                    next_start = buf.find(START, origin)
                continue
            if mark[0] == _END_MARK:
                # a start sequence overlapping this end is part of it (the CRC decides): waiting for
                # bytes after the end would delay every transmission until the next one arrives
                return idx + 8, escapes
            self.bad_escapes += 1
            self._error(FramingError(f"SML transmission has an invalid escape sequence (…1B1B1B1B {mark.hex()})",
                                     "bytes were lost or damaged on the line; the next transmission is read"))
            return -1, escapes

    def _unfinished(self, next_start: int, escapes: List[int], scanned: int, origin: int
                    ) -> Tuple[Optional[int], List[int]]:
        """Cut off, too long, or (None) waiting for more bytes: then the scan goes on at ``scanned``
        (and looks for a start sequence from ``origin`` or the last bytes one could begin in)."""
        if next_start >= 0:
            return self._cut(), escapes
        if len(self._buf) > self.max_size + 8:
            return self._oversized(), escapes
        self._scanned = (scanned, escapes, max(origin, len(self._buf) - len(START) + 1))
        return None, escapes

    def _oversized(self) -> int:
        self.oversized += 1
        self._error(FramingError(f"SML transmission longer than {self.max_size} bytes",
                                 "the line carries no SML or bytes were lost; the next transmission is read"))
        return -1

    def _cut(self) -> int:
        self.cut += 1
        self._error(FramingError("SML transmission cut off: a new one began before its end",
                                 "bytes were lost on the line (loose reading head, wrong speed); nothing of it "
                                 "is used"))
        return -1

    def _accept(self, raw: bytes, escapes: List[int], offset: int, out: List[Transmission]) -> None:
        crc = check_crc(raw)
        if crc is None:
            self.crc_errors += 1
            sent = raw[-2] | raw[-1] << 8
            self._error(ChecksumError("SML transport CRC-16/X.25", crc16_x25(raw[:-2]), sent, _damage_hint(raw),
                                      digits=4))
            return
        padding = raw[-3]
        body_end = len(raw) - 8 - padding
        if padding > 3 + 4 or body_end < 8:  # 0..3 by the spec; DZG sends 4
            self.bad_escapes += 1
            self._error(FramingError(f"SML transmission with {padding} padding bytes",
                                     "the meter's framing is broken; the transmission is dropped"))
            return
        payload = bytearray()
        last = 8
        for idx in escapes:  # undo the doubling: keep one of the two escape sequences
            payload += raw[last:idx + 4]
            last = idx + 8
        payload += raw[last:body_end] if last <= body_end else b""
        out.append(Transmission(raw=raw, payload=bytes(payload), crc=crc, offset=offset))


__all__ = ["SmlFramer", "Transmission", "crc16_x25", "crc16_kermit", "check_crc", "START", "ESCAPE", "MAX_SIZE"]
