"""Positional pushes of a known layout, decoded from where their values sit.

A meter pushes the same structure every time: the same tags, lengths, texts and logical
names; only the numbers and the clocks change. Once a positional frame has been decoded the
full way (``apdu.decode_apdu`` + ``payload.interpret``), ``learn`` records the byte offset of
every value that may change. A later plaintext APDU of the same length whose every other
byte (APDU tag, date-time length, type tags, string lengths and contents) equals the learned
one is read at those offsets by ``FrameTemplate.interpret``.

Why that is the full path's result: A-XDR is parsed from its tag and length bytes alone, so
equal structural bytes give the same elements at the same offsets; texts are equal, so the
profile choice (markers, shape, meter id) is the same; the numbers go through the very step
of the profile plan the full path uses. ``tests/test_frame_template.py`` checks this on
mutated frames. A frame that differs anywhere else takes the full path (and is learned).
Pure: bytes in, an ``Interpretation`` out, nothing kept between calls but the template.
"""
from __future__ import annotations

import struct
from datetime import datetime
from decimal import Decimal
from typing import Any, Dict, List, Optional, Tuple

from ..model import Reading, new_reading
from .apdu import TYPE_NAMES, parse_datetime
from .payload import Interpretation, _Builder, _plan
from .profiles import Profile

#: fixed-size integer tags -> struct format character (as apdu._INTS)
_INT_CHARS = {5: "i", 6: "I", 15: "b", 16: "h", 17: "B", 18: "H", 20: "q", 21: "Q", 22: "B", 13: "B"}
_SIZES = {"i": 4, "I": 4, "b": 1, "h": 2, "B": 1, "H": 2, "q": 8, "Q": 8}
_STRINGS = (9, 10)  # octet-string, visible-string: length-prefixed, content kept byte for byte
#: an element whose value is read per frame: (index, type name, how: "int" or "octets")
_Slot = Tuple[int, str, str]


class FrameTemplate:
    """One learned layout: which bytes must be equal, where the values are, what is fixed."""

    def __init__(self, plain: bytes, variable: List[Tuple[int, int, str]], slots: List[_Slot],
                 dt_at: Optional[int], interp: Interpretation, profile: Profile, types: Tuple[str, ...]) -> None:
        self.length = len(plain)
        mask = bytearray(b"\xff" * len(plain))
        fmt = [">"]
        pos = 0
        for start, end, char in variable:  # in byte order, not overlapping
            mask[start:end] = bytes(end - start)
            if start > pos:
                fmt.append(f"{start - pos}x")
            fmt.append(char)
            pos = end
        self.mask = int.from_bytes(mask, "big")
        self.expected = int.from_bytes(plain, "big") & self.mask
        self.unpack = struct.Struct("".join(fmt)).unpack_from
        self.has_clock = dt_at is not None
        self.slots = {index: (n, type_name, how) for n, (index, type_name, how) in enumerate(slots)}
        self.profile = profile
        self.types = types
        self.plan = _plan(profile, types)
        self.fixed = {r.index: r for r in interp.readings if r.index not in self.slots}
        self.interp = interp

    def interpret(self, plain: bytes) -> Optional[Tuple[Interpretation, Optional[datetime]]]:
        """The interpretation and header date-time of ``plain``; None when it is not of this layout."""
        if len(plain) != self.length or int.from_bytes(plain, "big") & self.mask != self.expected:
            return None
        values = self.unpack(plain)
        first = 0
        timestamp: Optional[datetime] = None
        if self.has_clock:
            timestamp = parse_datetime(values[0])
            first = 1
        builder = _Builder(timestamp, self.profile)
        out = builder.readings
        slots = self.slots
        for i, step in enumerate(self.plan):
            slot = slots.get(i)
            if slot is None:
                r: Reading = self.fixed[i]
                out.append(new_reading(r.code, r.obis, r.value, r.unit, r.raw, r.scaler, r.index, timestamp, r.extra))
                continue
            value: Any = values[first + slot[0]]
            type_name = slot[1]
            if step is None:
                builder.unmapped(i, value, type_name)
            elif step[4] and value.__class__ is int:
                scaler = step[5]
                num = Decimal(value)
                out.append(new_reading(step[2], step[1], num.scaleb(scaler) if scaler else num, step[6], value,
                                       scaler, i, timestamp, step[3]))
            else:
                builder.from_field(step[0], i, value, type_name)
        base = self.interp
        return Interpretation(readings=tuple(out), profile=base.profile, shape=base.shape, unknown_layout=False,
                              unscaled=(), meter_id=base.meter_id, family=base.family, timestamp=timestamp,
                              capture_objects=(), notes=()), timestamp


def _length(plain: bytes, pos: int) -> Optional[Tuple[int, int]]:
    """An A-XDR length at ``pos``: (value, position after it), or None."""
    if pos >= len(plain):
        return None
    first = plain[pos]
    if first < 0x80:
        return first, pos + 1
    n = first & 0x7F
    if not 1 <= n <= 4 or pos + 1 + n > len(plain):
        return None
    return int.from_bytes(plain[pos + 1:pos + 1 + n], "big"), pos + 1 + n


def _header(plain: bytes) -> Optional[Tuple[Optional[int], int]]:
    """(offset of the 12 date-time bytes or None, offset of the body) of a data-notification."""
    if len(plain) < 7 or plain[0] != 0x0F:
        return None
    n = plain[5]
    if n == 0x09 and len(plain) - 6 >= 13 and plain[6] == 0x0C:  # Kaifa: 09 0C <12 bytes>
        return 7, 19
    if n == 12:
        return 6, 18
    return (None, 6) if n == 0 else None


def _elements(plain: bytes, pos: int, datetime_fields: Tuple[bool, ...]
              ) -> Optional[Tuple[List[Tuple[int, int, str]], List[_Slot]]]:
    """The variable byte ranges and slots of a flat body of integers, strings, booleans and nulls."""
    if pos >= len(plain) or plain[pos] not in (1, 2):
        return None
    counted = _length(plain, pos + 1)
    if counted is None or counted[0] != len(datetime_fields):
        return None
    pos = counted[1]
    variable: List[Tuple[int, int, str]] = []
    slots: List[_Slot] = []
    for index, is_clock in enumerate(datetime_fields):
        if pos >= len(plain):
            return None
        tag = plain[pos]
        char = _INT_CHARS.get(tag)
        if char is not None:
            variable.append((pos + 1, pos + 1 + _SIZES[char], char))
            slots.append((index, TYPE_NAMES[tag], "int"))
            pos += 1 + _SIZES[char]
        elif tag in _STRINGS:
            size = _length(plain, pos + 1)
            if size is None:
                return None
            start = size[1]
            pos = start + size[0]
            if tag == 9 and size[0] == 12 and is_clock:  # a clock: read per frame, judged by the profile
                variable.append((start, pos, "12s"))
                slots.append((index, "octet-string", "octets"))
        elif tag in (0, 3):  # null-data, boolean: kept byte for byte
            pos += 1 if tag == 0 else 2
        else:
            return None  # nested data, floats, dates, bit-strings: the full path only
    return (variable, slots) if pos == len(plain) else None


def _kind(profile: Profile, index: int) -> Optional[str]:
    fld = profile.field_at(index)
    return fld.kind if fld is not None else None


def learn(plain: bytes, interp: Interpretation, profiles: Dict[str, Profile]) -> Optional[FrameTemplate]:
    """A template from a positional frame the full path decoded with a profile, or None when
    the frame is not of the kind a template can read (see the module docstring)."""
    profile = profiles.get(interp.profile) if interp.profile else None
    if (profile is None or interp.shape != "positional" or interp.unknown_layout or interp.notes
            or interp.unscaled):
        return None
    head = _header(bytes(plain))
    if head is None:
        return None
    dt_at, body_at = head
    readings = interp.readings
    if [r.index for r in readings] != list(range(len(readings))):
        return None
    # a clock is read per frame only where no profile looks at the text (a marker could then
    # start to fit, and the full path would choose differently)
    markers = {mk["index"] for p in profiles.values() for mk in p.match.get("markers", ())}
    clocks = tuple(i not in markers and _kind(profile, i) == "datetime" for i in range(len(readings)))
    found = _elements(bytes(plain), body_at, clocks)
    if found is None:
        return None
    variable, slots = found
    types = tuple(dict(r.extra).get("dlms_type") or "" for r in readings)
    if dt_at is not None:
        variable.insert(0, (dt_at, dt_at + 12, "12s"))
    variable.insert(0, (1, 5, "4x"))  # the invoke id: free, never read
    return FrameTemplate(bytes(plain), variable, slots, dt_at, interp, profile, types)


__all__ = ["FrameTemplate", "learn"]
