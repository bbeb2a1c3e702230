"""From a decoded notification to readings: generic walker first, profiles where the frame is silent.

Shapes (``profiles.detect_shape``):

* **push-list**: element 0 is the push object list, every further element is the value of
  the capture object at the same position (Swiss VSE pushes). Gurux' ``parsePushObjects``
  builds registers with the *default* scaler 1/unit 0 for these, because a push carries no
  scaler: here the scaler comes from an ``attribute 3`` capture in the same push, else from
  the profile, else it is unknown (see below).
* **obis**: OBIS/value pairs (Kamstrup, Kaifa in Sweden, L+G without list), OBIS/value/
  {scaler, unit} triples (Sagemcom T210-D flat lists), {obis, value[, {scaler, unit}]}
  structures (Aidon, Kaifa MA309M) - also mixed in one body; and {attribute descriptor,
  value} structures (Czech HAN, Sagemcom XT211: ``apdu.DESCRIPTOR``), whose array is read
  as if its entries were elements of the body (the XT211 sends {enum, array of them}), each
  value with its class and attribute as in a push list.
* **positional**: bare values (AM550 SI/AT, E450 Burgenland, Kaifa MA304 Norway, IE.5);
  they need a profile to mean anything.
* **single**: a body that is one value (an opaque octet-string).

Rules that keep wrong values out:

* A number's physical value is ``Decimal(raw).scaleb(scaler)``: exact, counters stay Decimal.
* When a register's scaler is neither in the frame nor in a profile, ``value`` is None and
  the code is listed in ``Interpretation.unscaled``; ``raw`` still holds the number and
  ``unit`` the usual unit of the OBIS code. A guessed scaler would be a ×10 or ×1000 error.
* Positional values without a profile, or at positions the profile does not name, get the
  code ``index N``, ``obis=None`` and (for numbers) ``value=None``: sinks map by OBIS code,
  so they can never land in an item; the dump command shows them to write a profile.
* ``Interpretation.unknown_layout`` is True when no profile explained a positional frame:
  the pipeline counts it under ``UnknownLayoutError.stat`` ("unknown_layouts") but still
  delivers the frame, so the raw values are visible.
* Octet-strings become text (printable ASCII), a datetime (12 bytes that are a valid COSEM
  date-time, or a clock object) or stay bytes; numbers of Data objects (class 1) and of
  abstract OBIS codes (A = 0) and enums are exact without a scaler.

``Reading.details`` carries ``dlms_type`` (as transmitted), ``name`` (profile field),
``clock_status`` (``0x80`` etc. of a date-time) and ``class_id``/``attribute`` (push lists);
``Reading.raw`` and ``Reading.extra`` the value groups of a DSMR line as sent (the only value groups
a push has), as a readout keeps them.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..errors import DecodeError, UnknownLayoutError
from ..model import Reading, new_reading
from ..obis import Obis, best_identity
from . import units
from .apdu import BitString, Notification, parse_datetime
from .profiles import (BodyFacts, Candidates, Field, Profile, capture_key, choose, is_described, is_scaler_unit,
                       load_profiles, obis_of, reading_body, resolve)

_REGISTER_CLASSES = (3, 4, 5)


@dataclass(frozen=True)
class CaptureObject:
    """One entry of a push object list: which attribute of which object a value is."""

    class_id: int
    obis: Obis
    attribute: int
    data_index: int = 0


@dataclass(frozen=True)
class Interpretation:
    """What a notification means: readings in frame order, plus how that was decided."""

    readings: Tuple[Reading, ...]
    profile: Optional[str]
    shape: str = "positional"
    unknown_layout: bool = False
    unscaled: Tuple[str, ...] = ()
    meter_id: Optional[str] = None
    family: Optional[str] = None
    timestamp: Optional[datetime] = None
    capture_objects: Tuple[CaptureObject, ...] = ()
    notes: Tuple[str, ...] = field(default=())

    def by_code(self) -> Dict[str, Reading]:
        """Readings by code (first one wins), for quick lookups in tests and the CLI."""
        out: Dict[str, Reading] = {}
        for r in self.readings:
            out.setdefault(r.code, r)
        return out


# ------------------------------------------------------------------------ helpers
def _printable(raw: bytes) -> bool:
    return bool(raw) and all(0x20 <= b < 0x7F for b in raw)


def _plain(value: Any) -> Any:
    """Structures/arrays as tuples of plain values (for ``Reading.raw``)."""
    if isinstance(value, list):
        return tuple(_plain(v) for v in value)
    return value


def _scaled(raw: Any, scaler: int) -> Optional[Decimal]:
    if isinstance(raw, bool):
        return None
    number = Decimal(raw) if isinstance(raw, int) else raw
    if not isinstance(number, Decimal) or not number.is_finite():
        return None
    return number.scaleb(scaler) if scaler else number


def _as_cosem(fld: Optional[Field], raw: bytes) -> bytes:
    """An octet-string as COSEM reads it: when the profile's field says the meter writes its UTC
    offset (local - UTC) into a date-time's deviation, that with COSEM's sign (UTC - local);
    'not specified' (0x8000) stays."""
    if fld is None or fld.deviation != "utc_offset" or len(raw) != 12 or raw[9:11] == b"\x80\x00":
        return raw
    return raw[:9] + struct.pack(">h", -struct.unpack(">h", raw[9:11])[0]) + raw[11:]


def _clock_details(raw: bytes) -> Tuple[Tuple[str, Optional[str]], ...]:
    return (("clock_status", f"0x{raw[11]:02x}"),) if len(raw) == 12 else ()


def _octets(raw: bytes, want_datetime: bool) -> Tuple[Any, Tuple[Tuple[str, Optional[str]], ...]]:
    """An octet-string's value: date-time, text or bytes (never guessing past what is valid)."""
    if len(raw) == 12:
        dt = parse_datetime(raw)
        if dt is not None:
            return dt, _clock_details(raw)
        if want_datetime:
            return None, _clock_details(raw)  # a clock that is not a valid date-time: no value
    if want_datetime:
        return None, ()
    text = raw.rstrip(b"\x00")  # (identifiers padded with NULs to a fixed size, ZPA's HAN list)
    if _printable(text):
        return text.decode("ascii"), ()
    return raw, ()


def _needs_scaler(code: Obis, class_id: Optional[int]) -> bool:
    """Does this number need a scaler to be a physical value?

    Registers (class 3/4/5) do; Data objects (class 1) hold exact counts, ids and states.
    Without a class (pair frames): electricity/gas/heat quantities (A > 0) and M-Bus values
    (C = 24) do, abstract objects (A = 0: counters, status words) do not.
    """
    if class_id is not None:
        return class_id in _REGISTER_CLASSES
    return code.a != 0 or code.c == 24


_Details = Tuple[Tuple[str, Optional[str]], ...]
_STATIC: Dict[Tuple[int, int, str], Tuple[Optional[Obis], str, _Details, Field]] = {}


def _field_static(fld: Field, index: int, type_name: str) -> Tuple[Optional[Obis], str, _Details, Field]:
    """(code, label, details) of a profile field: the same for every frame, so built once (the
    field itself is kept in the entry, so its id in the key stays its own)."""
    key = (id(fld), index, type_name)
    hit = _STATIC.get(key)
    if hit is None:
        code = fld.code
        details: _Details = (("dlms_type", type_name),)
        if fld.name:
            details += (("name", fld.name),)
        dotted = code.dotted() if code is not None else None
        hit = (code, dotted or f"index {index}", details, fld)
        if len(_STATIC) < 8192:
            _STATIC[key] = hit
    return hit


#: (code text, details, scaler applied to the number, Reading.scaler, unit, unscaled?) of a number
_NumberRule = Tuple[str, _Details, int, Optional[int], Optional[str], bool]
_NUMBER_RULES: Dict[tuple, Tuple[_NumberRule, Optional[Profile]]] = {}


# ------------------------------------------------------------------------ builder
class _Builder:
    def __init__(self, timestamp: Optional[datetime], profile: Optional[Profile]) -> None:
        self.ts = timestamp
        self.profile = profile
        self.readings: List[Reading] = []
        self.unscaled: List[str] = []
        self.meter_id_field: Optional[str] = None

    def add(self, **kw: Any) -> None:
        self.readings.append(Reading(timestamp=self.ts, **kw))

    # ---- values without meaning (positions nobody named)
    def unmapped(self, index: int, value: Any, type_name: str) -> None:
        details: _Details = (("dlms_type", type_name),)
        shown: Any = None
        if isinstance(value, (bytes, bytearray)):
            shown, more = _octets(bytes(value), False)
            details += more
        elif isinstance(value, (bool, str, datetime, date, time)) or type_name == "enum":
            shown = value
        elif isinstance(value, BitString):
            shown = value.bits
        self.add(code=f"index {index}", obis=None, value=shown, unit=None, raw=_plain(value),
                 scaler=None, index=index, details=details)

    # ---- positional profile field
    def from_field(self, fld: Field, index: int, value: Any, type_name: str) -> None:
        code, label, details, _ = _field_static(fld, index, type_name)
        kind = fld.kind
        shown: Any
        unit: Optional[str] = None
        scaler: Optional[int] = None
        if kind == "number":
            if value.__class__ is int:  # the common case, without the checks below
                scaler = fld.scaler
                num = Decimal(value)
                self.readings.append(new_reading(label, code, num.scaleb(scaler) if scaler else num, fld.unit,
                                                 value, scaler, index, self.ts, details))
                return
            if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
                raise self._misfit(index, fld, "a number", type_name)
            scaler, unit = fld.scaler, fld.unit
            shown = _scaled(value, scaler)
        elif kind == "datetime":
            if isinstance(value, datetime):
                shown = value
            elif isinstance(value, (bytes, bytearray)):
                shown, more = _octets(_as_cosem(fld, bytes(value)), True)
                details += more
            else:
                raise self._misfit(index, fld, "a date-time", type_name)
        elif kind == "text":
            if isinstance(value, (bytes, bytearray)):
                shown = bytes(value).rstrip(b"\x00").decode("ascii", "replace")  # (NUL padding: _octets)
            elif isinstance(value, str):
                shown = value.rstrip("\x00")
            else:
                raise self._misfit(index, fld, "text", type_name)
            if fld.meter_id and shown:
                self.meter_id_field = shown
        elif kind == "enum":
            if isinstance(value, bool) or not isinstance(value, int):
                raise self._misfit(index, fld, "an enum", type_name)
            shown = value
        elif kind == "bool":
            shown = bool(value) if isinstance(value, (bool, int)) else None
        else:  # bytes
            shown = bytes(value) if isinstance(value, (bytes, bytearray)) else None
        self.add(code=label, obis=code, value=shown, unit=unit, raw=_plain(value), scaler=scaler, index=index,
                 details=details)

    def _misfit(self, index: int, fld: Field, wanted: str, type_name: str) -> DecodeError:
        name = self.profile.name if self.profile is not None else "?"
        return DecodeError(f"profile {name}: element {index} ({fld.name}) should be {wanted}, "
                           f"but is {type_name}",
                           "the profile does not fit this frame; fix it or choose another")

    # ---- a value with an OBIS code (pairs, structures, push lists)
    def obis_value(self, code: Obis, index: int, value: Any, type_name: str,
                   scaler_unit: Optional[Sequence[int]] = None, class_id: Optional[int] = None,
                   attribute: int = 2) -> None:
        if value.__class__ is int and type_name != "enum":  # most values: the rule below, worked out once
            dotted, details, shown_scaler, scaler, unit, unscaled = self._number_rule(
                code, type_name, tuple(scaler_unit) if scaler_unit is not None else None, class_id, attribute)
            shown: Any = None
            if unscaled:
                self.unscaled.append(dotted)
            else:
                num = Decimal(value)
                shown = num.scaleb(shown_scaler) if shown_scaler else num
            self.readings.append(new_reading(dotted, code, shown, unit, value, scaler, index, self.ts, details))
            return
        self._obis_value(code, index, value, type_name, scaler_unit, class_id, attribute)

    def _number_rule(self, code: Obis, type_name: str, su: Optional[Tuple[int, ...]], class_id: Optional[int],
                     attribute: int) -> _NumberRule:
        """How ``_obis_value`` treats a number of this code, type and scaler: the same for every frame."""
        key = (code, type_name, su, class_id, attribute, id(self.profile))
        hit = _NUMBER_RULES.get(key)
        if hit is None or hit[1] is not self.profile:
            probe = _Builder(None, self.profile)
            probe._obis_value(code, 0, 1, type_name, su, class_id, attribute)
            r = probe.readings[0]
            unscaled = bool(probe.unscaled)
            shown_scaler = 0 if unscaled or r.value == 1 else int(r.value.adjusted())  # type: ignore[union-attr]
            if len(_NUMBER_RULES) >= 4096:
                _NUMBER_RULES.clear()
            hit = _NUMBER_RULES[key] = ((r.code, r.details, shown_scaler, r.scaler, r.unit, unscaled), self.profile)
        return hit[0]

    def _obis_value(self, code: Obis, index: int, value: Any, type_name: str,
                    scaler_unit: Optional[Sequence[int]] = None, class_id: Optional[int] = None,
                    attribute: int = 2) -> None:
        dotted = code.dotted() or str(code)
        details: _Details = (("dlms_type", type_name),)
        if class_id is not None:
            details += (("class_id", str(class_id)),)
        if attribute != 2:
            details += (("attribute", str(attribute)),)
        shown: Any = None
        unit: Optional[str] = None
        scaler: Optional[int] = None
        is_clock = class_id == 8 or (code.a == 0 and (code.c, code.d, code.e) == (1, 0, 0))
        if isinstance(value, bool):
            shown = value
        elif isinstance(value, (int, Decimal)) and type_name != "enum":
            fld = self.profile.field_for(code) if self.profile is not None else None
            if scaler_unit is not None:
                scaler, unit = int(scaler_unit[0]), units.symbol(int(scaler_unit[1]))
                shown = _scaled(value, scaler)
            elif fld is not None and fld.kind == "number":
                scaler, unit = fld.scaler, fld.unit
                shown = _scaled(value, scaler)
            elif not _needs_scaler(code, class_id):
                shown = _scaled(value, 0)
            else:
                unit = code.unit()
                self.unscaled.append(dotted)
        elif type_name == "enum":
            shown = value
        elif isinstance(value, (bytes, bytearray)):
            clock_field = self.profile.field_for(code) if self.profile is not None else None
            shown, more = _octets(_as_cosem(clock_field, bytes(value)), is_clock)
            details += more
        elif isinstance(value, str):
            shown = value.rstrip("\x00")  # (NUL padding of a visible-string, as of an octet-string: _octets)
        elif isinstance(value, (datetime, date, time)):
            shown = value
        elif isinstance(value, BitString):
            shown = value.bits
        self.add(code=dotted, obis=code, value=shown, unit=unit, raw=_plain(value), scaler=scaler,
                 index=index, details=details)


# ------------------------------------------------------------------------- shapes
def _walk_obis(b: _Builder, body: list, facts: BodyFacts) -> None:
    types = tuple(getattr(body, "types", ()))
    keyed = {i: (code, value, vtype, su) for i, code, value, vtype, su in facts.groups}
    covered = set()
    for i, (_code, _value, _vtype, su) in keyed.items():
        covered.add(i)
        if isinstance(body[i], list):
            if su is not None and not is_scaler_unit(su, body[i].types[2]):
                raise DecodeError(f"element {i}: third item of an {{obis, value, ...}} structure is "
                                  f"{body[i].types[2]}, not {{scaler, unit}}", "dump the frame and report it")
        else:
            covered.update((i + 1, i + 2) if su is not None else (i + 1,))
    scaler_units = _described_scaler_units(body)
    for i, elem in enumerate(body):
        if i in keyed:
            code, value, vtype, su = keyed[i]
            if not is_described(elem):
                b.obis_value(code, i, value, vtype, su)
                continue
            class_id, _ln, attribute = elem[0]
            if class_id in _REGISTER_CLASSES and attribute == 3 and code in scaler_units:
                continue  # a register's {scaler, unit}: given to its value
            b.obis_value(code, i, value, vtype, scaler_units.get(code) if attribute == 2 else None,
                         class_id, attribute)
        elif i not in covered:
            b.unmapped(i, elem, types[i] if i < len(types) else "?")


def _described_scaler_units(body: list) -> Dict[Obis, Sequence[int]]:
    """The {scaler, unit} a register's attribute 3 sends beside its value (as in a push list)."""
    out: Dict[Obis, Sequence[int]] = {}
    for elem in body:
        if is_described(elem):
            class_id, ln, attribute = elem[0]
            if class_id in _REGISTER_CLASSES and attribute == 3 and is_scaler_unit(elem[1], elem.types[1]):
                out[obis_of(bytes(ln))] = elem[1]
    return out


_CAPTURES: Dict[tuple, Tuple[CaptureObject, ...]] = {}


def _captures(object_list: list) -> Tuple[CaptureObject, ...]:
    """The push object list as CaptureObjects; a meter sends the same list every time."""
    key = capture_key(object_list)
    hit = _CAPTURES.get(key)
    if hit is None:
        hit = tuple(CaptureObject(int(e[0]), obis_of(bytes(e[1])), int(e[2]), int(e[3])) for e in object_list)
        if len(_CAPTURES) >= 64:
            _CAPTURES.clear()
        _CAPTURES[key] = hit
    return hit


def _walk_push_list(b: _Builder, body: list) -> Tuple[CaptureObject, ...]:
    types = tuple(getattr(body, "types", ()))
    captures = _captures(body[0])
    if len(captures) != len(body):
        raise DecodeError(f"the push object list names {len(captures)} objects but the push has "
                          f"{len(body)} values", "the frame is garbled, or the meter's list changed mid-push")
    # an attribute-3 capture (scaler_unit) of a register in the same push is the best source
    scaler_units: Dict[Obis, Sequence[int]] = {}
    for cap, value, type_name in zip(captures, body, types):
        if cap.class_id in _REGISTER_CLASSES and cap.attribute == 3 and is_scaler_unit(value, type_name):
            scaler_units[cap.obis] = value
    for i, (cap, value, type_name) in enumerate(zip(captures, body, types)):
        if i == 0 and cap.class_id == 40 and cap.attribute == 2:
            continue  # the object list itself (the shape push-list means element 0 is one)
        if cap.class_id in _REGISTER_CLASSES and cap.attribute == 3:
            continue  # consumed above
        su = scaler_units.get(cap.obis) if cap.attribute == 2 else None
        b.obis_value(cap.obis, i, value, type_name, su, cap.class_id, cap.attribute)
    return captures


#: (profile, per element: None or (field, code, label, details, number?, scaler, unit)), by (id(profile), types)
_Step = Tuple[Field, Optional[Obis], str, _Details, bool, int, Optional[str]]
_PLANS: Dict[Tuple[int, Tuple[str, ...]], Tuple[Profile, Tuple[Optional[_Step], ...]]] = {}


def _plan(profile: Profile, types: Tuple[str, ...]) -> Tuple[Optional[_Step], ...]:
    """What each position of a frame of these types means under ``profile``: the same for every
    frame of a meter, so worked out once (the entry keeps the profile, so its id stays its own)."""
    key = (id(profile), types)
    hit = _PLANS.get(key)
    if hit is None or hit[0] is not profile:
        steps: List[Optional[_Step]] = []
        for i, type_name in enumerate(types):
            fld = profile.field_at(i)
            if fld is None:
                steps.append(None)
                continue
            code, label, details, _ = _field_static(fld, i, type_name)
            steps.append((fld, code, label, details, fld.kind == "number", fld.scaler, fld.unit))
        if len(_PLANS) >= 256:
            _PLANS.clear()
        hit = _PLANS[key] = (profile, tuple(steps))
    return hit[1]


def _walk_positional(b: _Builder, chosen: Optional[Profile], elems: List[Any], types: Tuple[str, ...]) -> None:
    """Bare values: the profile names each position (``from_field``); the common case, an
    integer in a number field, is built right here (the same Reading, without the calls)."""
    if chosen is None:
        for i, (elem, type_name) in enumerate(zip(elems, types)):
            b.unmapped(i, elem, type_name)
        return
    for i, (elem, type_name, step) in enumerate(zip(elems, types, _plan(chosen, types))):
        place(b, step, i, elem, type_name)


def place(b: _Builder, step: Optional[_Step], index: int, value: Any, type_name: str) -> None:
    """The reading of one position under its plan step (also what a learned layout calls)."""
    if step is None:
        b.unmapped(index, value, type_name)
    elif step[4] and value.__class__ is int:
        scaler = step[5]
        num = Decimal(value)
        b.readings.append(new_reading(step[2], step[1], num.scaleb(scaler) if scaler else num, step[6], value,
                                      scaler, index, b.ts, step[3]))
    else:
        b.from_field(step[0], index, value, type_name)


def _meter_id(readings: Sequence[Reading], from_field: Optional[str]) -> Optional[str]:
    """The profile's meter-id field, else the best code of the one identity table (obis.best_identity)."""
    if from_field:
        return from_field
    return best_identity((r.obis, r.value.strip()) for r in readings if isinstance(r.value, str))


# --------------------------------------------------------------------- interpret
def interpret(notification: Notification, profile: Optional[str] = None, *,
              profiles: Optional[Dict[str, Any]] = None, family: Optional[str] = None,
              builder: Callable[[Optional[datetime], Optional[Profile]], "_Builder"] = _Builder) -> Interpretation:
    """Readings of one notification.

    ``profile``: None/``"auto"`` selects by structure; a profile name, a family name or a JSON
    path restricts the choice to that (a forced profile that does not fit raises
    UnknownLayoutError saying why). ``profiles``: the loaded profile set (default: built-in);
    the pipeline passes ``load_profiles(user_dirs)`` once. ``family``: the family of this
    meter's previous frame (``Interpretation.family``), which enables profiles such as Kaifa
    list 1 that are too plain to recognise alone. ``builder``: what collects the readings
    (``template.learn`` passes one that also records how each reading was made).
    """
    available = profiles if profiles is not None else load_profiles()
    body = reading_body(notification)
    facts = BodyFacts(body, notification.body_type)
    shape = facts.shape
    candidates = resolve(profile, available)
    forced = candidates is not None
    chosen: Optional[Profile] = None
    notes: List[str] = []
    if forced:
        chosen, reasons = choose(body, candidates or [], family, forced=True, facts=facts)
        if chosen is None and shape in ("positional", "single"):
            raise UnknownLayoutError(f"profile {profile!r} does not fit this frame ({'; '.join(reasons)})",
                                     "set profile to auto, to the meter's family, or write a profile "
                                     "(python -m dlms_protocol dump)")
        if chosen is None:  # the frame names its values itself: decode it without the profile
            notes.append(f"profile {profile!r} not used: " + "; ".join(reasons))
    else:
        chosen, reasons = choose(body, Candidates.of(available), family, facts=facts)
        if chosen is None and reasons and reasons[-1].startswith("several profiles fit"):
            notes.append(reasons[-1] + ": none is chosen; set the profile explicitly")
    b = builder(notification.timestamp, chosen)
    captures: Tuple[CaptureObject, ...] = ()
    unknown = False
    if shape == "push-list":
        captures = _walk_push_list(b, body)
    elif shape == "obis":
        _walk_obis(b, body, facts)
    else:  # positional or single: only a profile gives the positions a meaning
        elems = list(body) if isinstance(body, list) else [body]
        types = tuple(getattr(body, "types", ())) if isinstance(body, list) else (notification.body_type,)
        unknown = chosen is None
        _walk_positional(b, chosen, elems, types)
    readings = tuple(b.readings)
    return Interpretation(
        readings=readings,
        profile=chosen.name if chosen is not None else None,
        shape=shape,
        unknown_layout=unknown,
        unscaled=tuple(b.unscaled),
        meter_id=_meter_id(readings, b.meter_id_field),
        family=chosen.family if chosen is not None else family,
        timestamp=notification.timestamp,
        capture_objects=captures,
        notes=tuple(notes),
    )


def unknown_layout_error(n: int) -> UnknownLayoutError:
    """The error the pipeline counts (and may log) for a frame of ``n`` values no profile explained."""
    return UnknownLayoutError(
        f"positional push with {n} values matches no meter profile",
        "run `python -m dlms_protocol dump --hex ...` to see the values and write a profile, "
        "or set profile to one of `python -m dlms_protocol profiles`",
    )


# --------------------------------------------------------------------- DSMR text
def dsmr_crc(data: bytes) -> int:
    """CRC-16/ARC (poly 0xA001 reflected, init 0) as DSMR 4/5 puts after the '!' (tests, simulator)."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def interpret_text(text: bytes, require_crc: bool = True) -> Interpretation:
    """A DSMR/P1 ASCII telegram found inside a ciphered push (Energienetze Steiermark, Smarty).

    Parsed by the readout side's ``parse_readout``, which checks the CRC after ``!``
    (ChecksumError when wrong), and read by its ``reading_value``: the same rules as a plain P1
    telegram (numbers without a unit are numbers, identifiers stay text, a set that starts with
    its capture time has that time). A telegram without CRC raises DecodeError when
    ``require_crc``: a GCM tag that could not be verified must not be the only protection.
    Numbers keep the unit as sent (``kWh`` stays ``kWh``), ``scaler`` is 0 (the value is the
    transmitted number), ``raw`` the first group as sent; the clock ``0-0:1.0.0`` becomes the
    Interpretation's timestamp with its S/W offset (+02:00/+01:00), and every reading's time.
    """
    from ..iec62056_21.datablock import dsmr_clock, parse_readout, reading_value  # (only these rare meters)

    readout = parse_readout(bytes(text), use_checksum=True)
    if readout.crc == "absent" and require_crc:
        raise DecodeError("DSMR telegram has no CRC after '!'",
                          "this meter sends unprotected telegrams; accept them only knowingly "
                          "(require_crc=False)")
    if not readout.datasets:
        raise DecodeError("DSMR telegram has no data lines", "the plaintext is no DSMR telegram")
    stamp: Optional[datetime] = None
    rows: List[Tuple[Optional[Obis], str, Any, Optional[str], str, Optional[datetime], Tuple[Any, ...]]] = []
    for ds in readout.datasets:
        if not ds.values:
            continue
        _, value, unit, when = reading_value(ds)
        code = ds.obis
        if code is not None and code.a == 0 and (code.c, code.d, code.e) == (1, 0, 0) and isinstance(value, str):
            clock = dsmr_clock(value)
            if clock is not None:
                value = stamp = clock
        label = (code.dotted() if code is not None else None) or ds.code
        # the groups as sent, as a readout keeps them (datablock): the first in ``raw``, the others
        # in ``extra``, so an item's index is the bracket's position on the line either way
        extra = tuple((v.value, v.unit) for v in ds.values[1:])
        rows.append((code, label, value, unit, ds.values[0].value, when, extra))
    readings = tuple(
        Reading(code=label, obis=code, value=value, unit=unit, raw=raw,
                scaler=0 if isinstance(value, Decimal) and unit else None, index=i, timestamp=when or stamp,
                extra=extra)
        for i, (code, label, value, unit, raw, when, extra) in enumerate(rows))
    ident = readout.identification
    return Interpretation(
        readings=readings, profile="dsmr", shape="text", timestamp=stamp, family="dsmr",
        meter_id=(ident.raw.lstrip("/") if ident is not None else None),
    )


__all__ = ["Interpretation", "CaptureObject", "interpret", "interpret_text", "unknown_layout_error",
           "dsmr_crc"]
