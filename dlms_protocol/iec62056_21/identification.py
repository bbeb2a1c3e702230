"""The identification message of IEC 62056-21: ``/ X X X Z [\\W] ident CR LF``.

It is the meter's answer to the sign-on request ``/?!``. It tells the reader who made the meter
(``XXX``), which protocol mode and highest baud rate it offers (``Z``), whether it knows more
than the plain readout (``\\W``) and how quickly it may be answered (lower-case 3rd letter).

Peers get this wrong in three ways (docs/iec62056-21.md §8.4): they cut the ident at a fixed
offset, assuming ``\\W`` is always there; they keep the CR of LF-only line ends or drop a real
character instead; they take an echo of the reader's own ``/?!`` for the answer. Here the line
is found by its shape (``/`` + three letters), ``\\W`` is optional and every line end is
accepted.

Two transcription artefacts are read the way the meter meant them, because they appear in
published test data: ``\\2`` stored as the byte 0x02 (an octal escape in a C/JS/Python string
literal) counts as enhanced identification ``2``; a lost backslash (``/LGZ52ZMD...``) cannot be
told from an ident starting with ``2`` and is left as sent.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Optional, Union

from ..errors import IdentificationError

#: Baud-rate character -> baud rate. ``0``-``6`` are modes C and E, ``A``-``F`` mode B.
BAUD_CHAR_TO_RATE: Dict[str, int] = {
    "0": 300, "1": 600, "2": 1200, "3": 2400, "4": 4800, "5": 9600, "6": 19200,
    "A": 600, "B": 1200, "C": 2400, "D": 4800, "E": 9600, "F": 19200,
}

#: Baud rate -> the character a reader puts into the mode C/E acknowledgement ``ACK 0 Z 0``.
RATE_TO_BAUD_CHAR_C: Dict[int, str] = {
    300: "0", 600: "1", 1200: "2", 2400: "3", 4800: "4", 9600: "5", 19200: "6",
}

_MODE_CE_CHARS = "0123456789"  # 7-9 are reserved: mode C/E, but no known rate -> stay at 300
_MODE_B_CHARS = "ABCDEFGHI"    # G-I are reserved: mode B, no known rate
_LINE = re.compile(r"/(?P<man>[A-Za-z]{3})(?P<z>[^\r\n])(?P<rest>[^\r\n]*)")
_MASK = bytes(b & 0x7F for b in range(256))


@dataclass(frozen=True)
class Identification:
    """A parsed identification message.

    ``mode`` is ``A``/``B``/``C`` from the baud character, or ``E`` when a ``0``-``9``
    character comes with ``\\2`` (HDLC offered; a plain readout falls back to mode C).
    ``baudrate`` is the highest rate the meter offers (300 for mode A and for reserved
    characters, so that a reader never switches to a rate nobody defined).
    """

    manufacturer: str
    baud_char: str
    mode: str
    baudrate: int
    enhanced: Optional[str]
    ident: str
    short_reaction: bool
    raw: str

    @property
    def reaction_time(self) -> float:
        """Minimum time (s) before answering the meter: 20 ms if it said so, else 200 ms."""
        return 0.02 if self.short_reaction else 0.2


def _to_text(line: Union[bytes, bytearray, str]) -> str:
    if isinstance(line, (bytes, bytearray)):
        # The sign-on runs at 7E1; read as 8N1 the parity bit shows up as bit 7.
        return bytes(line).translate(_MASK).decode("ascii")
    if isinstance(line, str):
        return line
    raise IdentificationError(
        f"identification must be bytes or str, not {type(line).__name__}", "pass the line as read from the port")


def parse_identification(line: Union[bytes, str]) -> Identification:
    """Parse ``/XXXZ[\\W]ident`` (CR LF, LF or nothing at the end; noise or an echo before it).

    Raises IdentificationError when nothing in ``line`` has the shape of an identification.
    """
    text = _to_text(line)
    m = _LINE.search(text)
    if m is None:
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise IdentificationError(
            f"no identification message in {shown!r}",
            "the meter must answer '/?!' with '/XXXZident' at 300 Bd 7E1: check the IR head's position "
            "and the port's character format; an echo of '/?!' alone means the meter did not answer",
        )
    manufacturer, z, rest = m.group("man"), m.group("z"), m.group("rest")
    if z in "/!":
        raise IdentificationError(
            f"identification {m.group(0)!r} has {z!r} where the baud-rate character belongs",
            "the line is damaged: check the IR head's position and try again",
        )
    enhanced: Optional[str] = None
    if rest.startswith("\\") and len(rest) >= 2:
        enhanced, rest = rest[1], rest[2:]
    elif rest and "\x00" <= rest[0] <= "\x07":
        # '\2' written in a string literal is the octal escape for byte 0x02 (test-data artefact).
        enhanced, rest = str(ord(rest[0])), rest[1:]
    if z in _MODE_CE_CHARS:
        mode = "E" if enhanced == "2" else "C"
    elif z in _MODE_B_CHARS:
        mode = "B"
    else:
        mode = "A"
    return Identification(
        manufacturer=manufacturer,
        baud_char=z,
        mode=mode,
        baudrate=BAUD_CHAR_TO_RATE.get(z, 300) if mode != "A" else 300,
        enhanced=enhanced,
        ident=rest,
        short_reaction=manufacturer[2].islower(),
        raw=m.group(0),
    )


__all__ = ["Identification", "parse_identification", "BAUD_CHAR_TO_RATE", "RATE_TO_BAUD_CHAR_C"]
