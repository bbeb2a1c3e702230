"""Pushes of a known layout, decoded from where their values sit.

A meter pushes the same structure every time: the same tags, lengths, texts, logical names,
scalers and object lists; only the numbers and the clocks change. Once a frame has been
decoded the full way (``apdu.decode_apdu`` + ``payload.interpret``), ``learn`` records the byte
offset of every value that may change. A later plaintext APDU of the same length whose every
other byte (APDU tag, date-time length, type tags, lengths, texts, OBIS codes, scalers) equals
the learned one is read at those offsets by the template's ``interpret``.

Why that is the full path's result: A-XDR is parsed from its tag and length bytes alone, so
equal structural bytes give the same elements at the same offsets; the texts and codes are
equal, so the shape, the profile choice (markers, OBIS sequence, object list) and the meter
id are the same; each changing value goes through the very builder call the full path made
for it (recorded while learning), every other reading is the learned one with the new time.
``tests/test_frame_template.py`` holds this against the full path on mutated frames. A frame
that differs anywhere else takes the full path (and is learned).

Kinds: positional frames (a profile plan per position, ``PositionalTemplate``) and frames
that name their values (OBIS pairs and structures, push object lists: ``CallTemplate``).
Pure: bytes in, an ``Interpretation`` out.
"""
from __future__ import annotations

import struct
from datetime import datetime
from decimal import Decimal
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ..errors import DecodeError
from ..model import Reading, _new_object, _set_field, frozen_of, new_reading
from .apdu import _INTS, TYPE_NAMES, Notification, notification_header, parse_datetime
from .payload import Interpretation, _Builder, _plan, interpret, place
from .profiles import Profile

#: fixed-size integer tags -> struct format character, and each character's size (apdu's table)
_INT_CHARS = {tag: fmt[1:] for tag, (fmt, _) in _INTS.items()}
_SIZES = {fmt[1:]: size for fmt, size in _INTS.values()}
MAX_DEPTH = 16
#: a byte range read per frame: (start, end, struct format of it; "4x": read by nobody)
_Range = Tuple[int, int, str]
#: where a leaf value sits: (offset of its bytes, struct format, DLMS type name)
_Leaf = Tuple[int, str, str]


class _Layout:
    """The bytes that must equal the learned frame's, and one struct that reads the others."""

    def __init__(self, plain: bytes, variable: List[_Range]) -> None:
        self.length = len(plain)
        mask = bytearray(b"\xff" * len(plain))
        fmt = [">"]
        pos = 0
        for start, end, char in sorted(variable):
            mask[start:end] = bytes(end - start)
            if start > pos:
                fmt.append(f"{start - pos}x")
            fmt.append(char)
            pos = end
        self.mask = int.from_bytes(mask, "big")
        self.expected = int.from_bytes(plain, "big") & self.mask
        self.unpack = struct.Struct("".join(fmt)).unpack_from

    def values(self, plain: bytes) -> Optional[Tuple[Any, ...]]:
        """The variable values of ``plain`` in byte order, or None when it is not of this layout."""
        if len(plain) != self.length or int.from_bytes(plain, "big") & self.mask != self.expected:
            return None
        return self.unpack(plain)


def _restamped(r: Reading, timestamp: Optional[datetime]) -> Reading:
    """A learned reading of unchanging bytes, at this frame's time."""
    return new_reading(r.code, r.obis, r.value, r.unit, r.raw, r.scaler, r.index, timestamp, r.details, r.derived,
                       r.extra)


class _Template:
    """What both kinds share: the layout check, the header clock, the result."""

    def __init__(self, layout: _Layout, has_clock: bool, interp: Interpretation, profile: Optional[Profile]) -> None:
        self.layout = layout
        self.has_clock = has_clock
        self.profile = profile
        self.interp = interp

    def _begin(self, plain: bytes) -> Optional[Tuple[Tuple[Any, ...], _Builder]]:
        """The variable values and a builder at the frame's time; None when not of this layout."""
        values = self.layout.values(plain)
        if values is None:
            return None
        return values, _Builder(parse_datetime(values[0]) if self.has_clock else None, self.profile)

    def _result(self, builder: _Builder) -> Tuple[Interpretation, Optional[datetime]]:
        base = self.interp
        return frozen_of(Interpretation, {
            "readings": tuple(builder.readings), "profile": base.profile, "shape": base.shape, "unknown_layout": False,
            "unscaled": tuple(builder.unscaled), "meter_id": base.meter_id, "family": base.family,
            "timestamp": builder.ts, "capture_objects": base.capture_objects, "notes": ()}), builder.ts


#: how a PositionalTemplate makes the reading of a position: the learned one at the new time, a
#: number from its prepared fields, or the profile plan's ``place`` (any other kind of field)
_FIXED, _NUMBER, _PLACE = 0, 1, 2
#: (kind, prepared Reading fields, 10**scaler as Decimal or None, position in the unpacked values,
#: plan step, index, type name)
_Op = Tuple[int, Optional[Dict[str, Any]], Optional[Decimal], int, Any, int, str]


class PositionalTemplate(_Template):
    """A positional frame: which positions change, read through the profile plan."""

    def __init__(self, layout: _Layout, slots: Dict[int, Tuple[int, str]], has_clock: bool,
                 interp: Interpretation, profile: Profile, types: Tuple[str, ...]) -> None:
        super().__init__(layout, has_clock, interp, profile)
        self.slots = slots  # element index -> (position in the unpacked values, type name)
        self.plan = _plan(profile, types)
        self.fixed = {r.index: r for r in interp.readings if r.index not in slots}
        self.ops = tuple(self._op(i, step) for i, step in enumerate(self.plan))

    def _op(self, index: int, step: Any) -> _Op:
        """The reading of a number is ``place``'s, with every field that is the same in each frame
        prepared once (a push has dozens of numbers, and naming eleven fields per value cost more
        than the values)."""
        slot = self.slots.get(index)
        if slot is None:
            return (_FIXED, dict(self.fixed[index].__dict__), None, -1, step, index, "")
        if step is not None and step[4]:
            fields = dict(code=step[2], obis=step[1], value=None, unit=step[6], raw=None, scaler=step[5],
                          index=index, timestamp=None, extra=(), derived=False, details=step[3])
            # value * 10**scaler is value.scaleb(scaler) digit for digit (the same coefficient, the
            # exponents added, the same rounding by the context), at a quarter of its cost
            scale = Decimal(1).scaleb(step[5]) if step[5] else None
            return (_NUMBER, fields, scale, slot[0], step, index, slot[1])
        return (_PLACE, None, None, slot[0], step, index, slot[1])

    def interpret(self, plain: bytes) -> Optional[Tuple[Interpretation, Optional[datetime]]]:
        """The interpretation and header date-time of ``plain``; None when it is not of this layout."""
        begun = self._begin(plain)
        if begun is None:
            return None
        values, builder = begun
        ts = builder.ts
        add = builder.readings.append
        for kind, fields, scale, at, step, index, type_name in self.ops:
            if fields is None:
                place(builder, step, index, values[at], type_name)
                continue
            if kind == _NUMBER:
                value = values[at]
                if value.__class__ is not int:  # (struct reads integers; kept for what place checks)
                    place(builder, step, index, value, type_name)
                    continue
                # (one dict display: fewer steps than a copy and three stores, a few dozen per push)
                made = {**fields, "value": Decimal(value) * scale if scale is not None else Decimal(value),
                        "raw": value, "timestamp": ts}
            else:
                made = fields.copy()
                made["timestamp"] = ts
            reading = _new_object(Reading)  # model.frozen_of inline (a push makes a few dozen):
            _set_field(reading, "__dict__", made)  # ``made`` has every field, a fresh dict it takes over
            add(reading)
        return self._result(builder)


#: one step of a CallTemplate: a builder call with the value read per frame, or the readings
#: (and unscaled codes) a call made of unchanging bytes added
_Call = Tuple[str, Tuple[Any, ...], int, int]
_Fixed = Tuple[Tuple[Reading, ...], Tuple[str, ...]]


class CallTemplate(_Template):
    """A frame that names its values (OBIS pairs/structures, push object lists): the builder
    calls of the full path, replayed with the values that changed."""

    def __init__(self, layout: _Layout, steps: List[Any], has_clock: bool, interp: Interpretation,
                 profile: Optional[Profile]) -> None:
        super().__init__(layout, has_clock, interp, profile)
        self.steps = steps  # _Call or _Fixed, in reading order

    def interpret(self, plain: bytes) -> Optional[Tuple[Interpretation, Optional[datetime]]]:
        begun = self._begin(plain)
        if begun is None:
            return None
        values, builder = begun
        for step in self.steps:
            if len(step) == 2:  # readings of unchanging bytes: the learned ones at the new time
                builder.readings.extend(_restamped(r, builder.ts) for r in step[0])
                builder.unscaled.extend(step[1])
            else:
                name, args, at, slot = step
                call = list(args)
                call[at] = values[slot]
                getattr(builder, name)(*call)
        return self._result(builder)


Template = Union[PositionalTemplate, CallTemplate]


# ----------------------------------------------------------------------- learning
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


def _leaves(plain: bytes, pos: int, depth: int, path: Tuple[int, ...], out: Dict[Tuple[int, ...], _Leaf]
            ) -> Optional[int]:
    """Walk the element at ``pos``: note where its fixed-size integers and 12-byte octet-strings
    sit (by path of element indices); the position after it, or None for data no template reads."""
    if pos >= len(plain) or depth > MAX_DEPTH:
        return None
    tag = plain[pos]
    char = _INT_CHARS.get(tag)
    if char is not None:
        out[path] = (pos + 1, char, TYPE_NAMES[tag])
        end = pos + 1 + _SIZES[char]
        return end if end <= len(plain) else None
    if tag in (9, 10):  # octet-string, visible-string
        size = _length(plain, pos + 1)
        if size is None:
            return None
        if tag == 9 and size[0] == 12:
            out[path] = (size[1], "12s", "octet-string")
        return size[1] + size[0]
    if tag in (1, 2):  # array, structure
        counted = _length(plain, pos + 1)
        if counted is None:
            return None
        nxt: Optional[int] = counted[1]
        for j in range(counted[0]):
            nxt = _leaves(plain, nxt, depth + 1, path + (j,), out)  # type: ignore[arg-type]
            if nxt is None:
                return None
        return nxt
    if tag in (0, 3):  # null-data, boolean: kept byte for byte
        return pos + (1 if tag == 0 else 2)
    return None  # floats, dates, bit-strings, utf8: the full path only


def _markers(profiles: Dict[str, Profile]) -> Tuple[set, list]:
    """Element indices and OBIS codes whose text some profile looks at: kept byte for byte."""
    indices = {mk["index"] for p in profiles.values() for mk in p.match.get("markers", ())}
    wants = [want for p in profiles.values() if p.rules is not None for want, _ in p.rules.obis_markers]
    return indices, wants


def _width(char: str) -> int:
    return 12 if char == "12s" else _SIZES[char]


def _positions(ranges: List[_Range]) -> Dict[int, int]:
    """Start offset of each range that is read -> its place in the unpacked values."""
    out: Dict[int, int] = {}
    for start, _, char in sorted(ranges):
        if char != "4x":
            out[start] = len(out)
    return out


def _positional(notification: Notification, leaves: Dict[Tuple[int, ...], _Leaf], interp: Interpretation,
                profile: Profile, marker_indices: set) -> Optional[Tuple[List[_Range], Dict[int, Tuple[int, str]]]]:
    """The changing ranges of a flat positional frame: every integer, and the clocks of datetime
    fields no marker looks at; with the element index and type each range belongs to."""
    body = notification.body
    readings = interp.readings
    if (any(isinstance(e, list) for e in body) or len(readings) != len(body)
            or [r.index for r in readings] != list(range(len(readings)))):
        return None  # nested data, or not one reading per element
    ranges: List[_Range] = []
    chosen: Dict[int, Tuple[int, str]] = {}
    for (index,), (offset, char, type_name) in leaves.items():
        if char == "12s":
            fld = profile.field_at(index)
            if fld is None or fld.kind != "datetime" or index in marker_indices:
                continue  # 12 bytes that are no clock (a meter number): kept byte for byte
        ranges.append((offset, offset + _width(char), char))
        chosen[offset] = (index, type_name)
    return ranges, chosen


class _Recorder(_Builder):
    """A builder that notes how each reading was made: (method, arguments, readings, unscaled)."""

    def __init__(self, timestamp: Optional[datetime], profile: Optional[Profile]) -> None:
        super().__init__(timestamp, profile)
        self.calls: List[Tuple[str, Tuple[Any, ...], Tuple[Reading, ...], Tuple[str, ...]]] = []

    def _record(self, name: str, args: Tuple[Any, ...]) -> None:
        n, u = len(self.readings), len(self.unscaled)
        getattr(_Builder, name)(self, *args)
        self.calls.append((name, args, tuple(self.readings[n:]), tuple(self.unscaled[u:])))

    def obis_value(self, code: Any, index: int, value: Any, type_name: str, scaler_unit: Any = None,
                   class_id: Optional[int] = None, attribute: int = 2) -> None:
        self._record("obis_value", (code, index, value, type_name, scaler_unit, class_id, attribute))

    def unmapped(self, index: int, value: Any, type_name: str) -> None:
        self._record("unmapped", (index, value, type_name))


def _value_path(name: str, args: Tuple[Any, ...], body: Sequence[Any], shape: str) -> Tuple[Tuple[int, ...], int]:
    """Where the value of a recorded call sits in the body, and which argument it is."""
    index = args[1] if name == "obis_value" else args[0]
    at = 2 if name == "obis_value" else 1
    if name == "obis_value" and shape == "obis":  # an {obis, value, ...} structure, or a code then its value
        return ((index, 1) if isinstance(body[index], list) else (index + 1,)), at
    return (index,), at


def _is_clock_call(name: str, args: Tuple[Any, ...], wants: list) -> bool:
    """A clock value (class 8, or 0-0:1.0.0) no profile marker looks at: its 12 bytes may change."""
    if name != "obis_value":
        return False
    code, class_id = args[0], args[5]
    clock = class_id == 8 or (code.a == 0 and (code.c, code.d, code.e) == (1, 0, 0))
    return clock and not any(want.matches(code) for want in wants)


def _calls(plain: bytes, notification: Notification, interp: Interpretation, leaves: Dict[Tuple[int, ...], _Leaf],
           wants: list, rerun: Any) -> Optional[Tuple[List[_Range], List[Any]]]:
    """The steps of a CallTemplate from a recorded rerun of the full path."""
    recorders: List[_Recorder] = []

    def make(timestamp: Optional[datetime], profile: Optional[Profile]) -> _Builder:
        recorders.append(_Recorder(timestamp, profile))
        return recorders[-1]

    again = rerun(make)
    if again != interp or len(recorders) != 1:
        return None
    variable: List[_Range] = []
    steps: List[Any] = []
    body = notification.body
    for name, args, added, unscaled in recorders[0].calls:
        path, at = _value_path(name, args, body, interp.shape)
        leaf = leaves.get(path)
        value = args[at]
        usable = leaf is not None and (
            (leaf[1] != "12s" and value.__class__ is int)
            or (leaf[1] == "12s" and isinstance(value, bytes) and _is_clock_call(name, args, wants)))
        if not usable:
            steps.append((added, unscaled))
            continue
        offset, char, _ = leaf  # type: ignore[misc]
        if struct.unpack_from(">" + char, plain, offset)[0] != value:
            return None  # the path does not lead to this value: learn nothing rather than guess
        variable.append((offset, offset + _width(char), char))
        steps.append((name, args, at, offset))
    return variable, steps


def learn(plain: bytes, notification: Notification, interp: Interpretation, profiles: Dict[str, Profile],
          profile_setting: Optional[str] = None, family: Optional[str] = None) -> Optional[Template]:
    """A template from a frame the full path decoded, or None when the frame is not of the kind a
    template can read (see the module docstring)."""
    if (interp.unknown_layout or interp.notes or interp.shape not in ("positional", "obis", "push-list")
            or notification.described):  # (its untagged descriptors are no A-XDR the offsets could be learned from)
        return None
    profile = profiles.get(interp.profile) if interp.profile else None
    if interp.profile and profile is None:
        return None  # a profile from a file path: not in the set this template can name
    plain = bytes(plain)
    try:
        dt_at, body_at = notification_header(plain)
    except DecodeError:
        return None
    leaves: Dict[Tuple[int, ...], _Leaf] = {}
    if _leaves(plain, body_at, 0, (), leaves) != len(plain) or not isinstance(notification.body, list):
        return None
    indices, wants = _markers(profiles)
    clock: List[_Range] = [(dt_at, dt_at + 12, "12s")] if dt_at is not None else []
    invoke: List[_Range] = [(1, 5, "4x")]  # the invoke id: free, never read
    if interp.shape == "positional":
        if profile is None or interp.unscaled:
            return None
        built = _positional(notification, leaves, interp, profile, indices)
        if built is None:
            return None
        ranges, chosen = built
        places = _positions(invoke + clock + ranges)
        slots = {index: (places[offset], type_name) for offset, (index, type_name) in chosen.items()}
        types = tuple(notification.body.types)  # type: ignore[attr-defined]
        return PositionalTemplate(_Layout(plain, invoke + clock + ranges), slots, dt_at is not None, interp,
                                  profile, types)
    found = _calls(plain, notification, interp, leaves, wants,
                   lambda make: interpret(notification, profile_setting, profiles=profiles, family=family,
                                          builder=make))
    if found is None:
        return None
    ranges, steps = found
    places = _positions(invoke + clock + ranges)
    numbered = [(s[0], s[1], s[2], places[s[3]]) if len(s) == 4 else s for s in steps]
    return CallTemplate(_Layout(plain, invoke + clock + ranges), numbered, dt_at is not None, interp, profile)


__all__ = ["PositionalTemplate", "CallTemplate", "Template", "learn"]
