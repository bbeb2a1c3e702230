"""Split the byte stream of a push-only D0 meter into telegrams (sans-io).

EasyMeter Q3D, eBZ DD3, EMH/Hager eHZ, Logarex and DSMR P1 meters send a telegram every
second or two without being asked: ``/ident CR LF ... ! CR LF`` (DSMR 4/5: ``!`` + CRC16 hex +
CR LF; rarely ``STX ... ! CR LF ETX BCC``). A listener opens the port at any moment, so the
first bytes are usually the tail of a telegram, and noise on the line can hit anywhere
(ioBroker.smartmeter#32: ``0-@P\\`R+*B*U-L(RLx/EBZ5DD3BZ06ETA_107``).

The splitter only cuts; ``parse_readout`` checks. It starts a telegram only at a line that has
the shape of an identification (``/`` + three letters + printable characters + line end),
restarts when a new identification appears before the ``!``, drops whatever lies between
telegrams, and never holds more than ``max_buffer`` bytes. Bytes are searched with bit 7
masked, so a 7E1 stream read as 8N1 splits the same; telegrams are returned as received.

With ``require_etx`` (the reader sets it when ``use_checksum`` is on) a telegram that began
with STX is only returned together with its ETX (or EOT) and BCC: when noise damaged the ETX,
the telegram would otherwise reach the parser as an unframed one, and no BCC would check it.
Such a telegram is dropped and counted in ``unchecked``, the same rule request mode follows.
An unframed telegram is only cut once the byte after its line end is known: an ETX there
(its STX was damaged) takes the BCC along, so that the parser checks it; any other byte right
after the end (an ETX damaged by noise) drops it as unchecked. ``pending`` tells a reader that
the current telegram waits only for that byte, ``take_pending`` cuts it after a short silence.
"""
from __future__ import annotations

import re
from typing import List, Optional, Tuple


_MASK = bytes(b & 0x7F for b in range(256))
_IDENT_START = re.compile(rb"/[A-Za-z]{3}")
_IDENT_CH = rb"[\x02\x20\x22-\x27\x2a-\x2e\x30-\x7e]"  # printable without ! ( ) / ; 0x02 = '\2' artefact
_IDENT_LINE = re.compile(rb"/[A-Za-z]{3}" + _IDENT_CH + rb"{1,40}(?:\r\n|\n)")
_IDENT_PARTIAL = re.compile(rb"/[A-Za-z]{3}" + _IDENT_CH + rb"{0,40}\r?")
_END_OR_START = re.compile(rb"!|/[A-Za-z]{3}")
_HEX = b"0123456789ABCDEFabcdef"
_KEEP = 3  # bytes kept from garbage: a split '/AB' may be the start of the next telegram
_TAIL = 46  # longest identification line a telegram may start with


class D0StreamSplitter:
    """Feed raw chunks, get complete telegrams; see the module docstring.

    ``dropped`` counts bytes thrown away (garbage, broken telegrams), ``telegrams`` the
    telegrams returned, so a listener can tell a noisy line from a silent one; ``unchecked``
    the telegrams dropped by ``require_etx``.
    """

    def __init__(self, max_buffer: int = 64 * 1024, *, require_etx: bool = False) -> None:
        self.max_buffer = max(int(max_buffer), 256)
        self.require_etx = require_etx
        self.dropped = 0
        self.telegrams = 0
        self.unchecked = 0
        self._raw = bytearray()
        self._masked = bytearray()
        self._started = False   # buffer[0] is the '/' of a telegram
        self._scan = 0          # where the search for the end resumes (relative to buffer[0])

    def feed(self, chunk: bytes) -> List[bytes]:
        """Add bytes; return the telegrams they complete (each exactly once, in order)."""
        if not chunk:
            return []
        self._raw += chunk
        self._masked += bytes(chunk).translate(_MASK)
        out: List[bytes] = []
        cut = self._split(out)
        self._consume(cut)
        if len(self._raw) > self.max_buffer:
            keep = min(len(self._raw), _TAIL)  # the tail may hold the start of the next telegram
            self.dropped += len(self._raw) - keep
            self._consume(len(self._raw) - keep)
            self._started = False
            self._scan = 0
        return out

    @property
    def pending(self) -> bool:
        """A telegram is complete up to its line end and waits only for the byte after it."""
        return self._pending_end() is not None

    def take_pending(self) -> List[bytes]:
        """After a silence: cut the telegram that waits only for the byte after its line end."""
        end = self._pending_end()
        if end is None:
            return []
        self.telegrams += 1
        telegram = bytes(self._raw[:end])
        self._consume(end)
        self._started = False
        self._scan = 0
        return [telegram]

    def _pending_end(self) -> Optional[int]:
        if not self._started or not self.require_etx:
            return None
        bang = self._masked.find(b"!", self._scan)
        if bang < 0 or self._framed(0, bang):
            return None
        found = self._telegram_end(0, bang, final=True)
        return found[0] if found is not None and found[1] and found[0] == len(self._masked) else None

    @property
    def buffered(self) -> int:
        """Bytes held back (a telegram in progress, or the tail that may start one)."""
        return len(self._raw)

    def flush(self) -> List[bytes]:
        """At the end of a stream: a telegram complete up to its ``!`` but not its line end."""
        out: List[bytes] = []
        if self._started:
            bang = self._masked.find(b"!", self._scan)
            if bang >= 0 and self.require_etx and self._framed(0, bang):
                self.unchecked += 1  # its ETX and BCC never came
            elif bang >= 0:
                out.append(bytes(self._raw[:bang + 1]))
                self.telegrams += 1
        self.dropped += len(self._raw) - sum(len(t) for t in out)
        self._raw.clear()
        self._masked.clear()
        self._started = False
        self._scan = 0
        return out

    # ------------------------------------------------------------------ internals
    def _split(self, out: List[bytes]) -> int:
        """Emit telegrams from the buffer; return how many leading bytes are done with."""
        m = self._masked
        n = len(m)
        base = 0  # start of the current telegram, or of what has not been looked at
        scan = self._scan
        while True:
            if not self._started:
                found = self._find_start(base)
                if found is None:  # no telegram start: keep only what may begin one
                    keep = max(base, n - _KEEP)
                    self.dropped += keep - base
                    self._scan = 0
                    return keep
                start, complete = found
                self.dropped += start - base
                base = start
                if not complete:  # wait for the rest of the identification line
                    self._scan = 0
                    return base
                self._started = True
                scan = m.find(b"\n", base) + 1
            hit = _END_OR_START.search(m, scan)
            if hit is None:
                self._scan = max(scan, n - _KEEP) - base
                return base
            j = hit.start()
            if hit.group() != b"!":
                if _IDENT_LINE.match(m, j) is not None:
                    # a new identification before '!': the telegram before it is broken
                    self.dropped += j - base
                    base = j
                    self._started = False
                elif self._could_start(j):
                    self._scan = j - base  # maybe a new identification: wait and see
                    return base
                else:
                    scan = j + 1
                continue
            found_end = self._telegram_end(base, j)
            if found_end is None:  # need more bytes to see how the telegram ends
                self._scan = j - base
                return base
            end, checked = found_end
            if checked:
                out.append(bytes(self._raw[base:end]))
                self.telegrams += 1
            else:
                self.unchecked += 1
                self.dropped += end - base
            base = scan = end
            self._started = False

    def _find_start(self, pos: int) -> Optional[Tuple[int, bool]]:
        """(position, complete) of the first identification line from ``pos``; None if there is none."""
        m = self._masked
        for cand in _IDENT_START.finditer(m, pos):
            if _IDENT_LINE.match(m, cand.start()) is not None:
                return cand.start(), True
            if self._could_start(cand.start()):
                return cand.start(), False
        return None

    def _could_start(self, i: int) -> bool:
        """Is ``m[i:]`` an identification line cut off by the end of the buffer?"""
        m = self._masked
        return len(m) - i <= _TAIL and _IDENT_PARTIAL.fullmatch(m, i) is not None

    def _framed(self, base: int, bang: int) -> bool:
        """Does the telegram at ``base`` hold an STX after its identification line?"""
        line_end = self._masked.find(b"\n", base, bang) + 1
        return line_end > 0 and self._masked.find(b"\x02", line_end, bang) >= 0

    def _telegram_end(self, base: int, bang: int, final: bool = False) -> Optional[Tuple[int, bool]]:
        """(end (exclusive), may be returned) of a telegram whose '!' is at ``bang``; None while
        undecided. Not to be returned (with ``require_etx``): framed with STX without ETX + BCC,
        or unframed with a byte right after its end that is no ETX. ``final``: no byte follows."""
        m = self._masked
        n = len(m)
        stx = self._framed(base, bang)
        pos = bang + 1
        # DSMR 4/5: four hex digits of CRC16 after '!' (three where a meter drops a leading zero,
        # as the NWA Warmtelink heat meter does: "!B9F"; the parser checks what they say)
        hex_run = 0
        while pos + hex_run < n and hex_run < 4 and m[pos + hex_run] in _HEX:
            hex_run += 1
        if hex_run and pos + hex_run == n:
            return None
        has_crc = hex_run == 4 or (hex_run == 3 and m[pos + 3] in (0x0D, 0x0A))
        if has_crc:
            pos += hex_run
        if pos == n:
            return None
        if m[pos] == 0x0D:
            if pos + 1 == n:
                return None
            pos += 2 if m[pos + 1] == 0x0A else 1
        elif m[pos] == 0x0A:
            pos += 1
        if stx:
            if pos == n:
                return None
            if m[pos] in (0x03, 0x04):
                if pos + 1 == n:
                    return None
                return pos + 2, True  # ETX/EOT and exactly one BCC byte (which may be any value)
            return pos, not self.require_etx
        if not self.require_etx or has_crc:  # a DSMR CRC16 covers the telegram, whatever follows
            return pos, True
        if pos == n:
            return (pos, True) if final else None
        if m[pos] in (0x03, 0x04):  # an ETX whose STX was damaged: the BCC comes along and is checked
            return (pos + 2, True) if pos + 1 < n else None
        return pos, m[pos] in b"/\r\n"  # a next telegram or a blank line; anything else: a damaged end

    def _consume(self, cut: int) -> None:
        if cut > 0:
            del self._raw[:cut]
            del self._masked[:cut]


__all__ = ["D0StreamSplitter"]
