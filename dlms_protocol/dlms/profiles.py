"""Meter profiles: what the values of a push mean when the frame does not say it itself.

A profile is one JSON file (``data/profiles/*.json`` built in, plus user files or folders).
Three kinds, by ``match.shape``:

``positional``
    The frame has no OBIS codes (Iskraemeco AM550 in Slovenia and Austria, L+G E450
    Burgenland, Kaifa MA304 in Norway, Iskraemeco IE.5): ``fields`` say by ``index`` which
    OBIS code, scaler and unit each position has.
``obis``
    OBIS/value pairs or {obis, value} structures without {scaler, unit} (Kamstrup, Kaifa in
    Sweden, some L+G E450): ``fields`` give scaler and unit by ``obis``.
``push-list``
    Element 0 is the push object list (Swiss VSE pushes): the list names every value, but a
    pushed register carries no scaler or unit, so ``fields`` give them by ``obis``.

Auto-selection (``select_profile``) is by structure only and must be unambiguous:
``elements`` (body length), ``types`` (DLMS type per element; ``"integer"``, ``"text"``,
``"number"`` and ``"*"`` are groups), ``markers`` (an element's text equals / starts with
a string, e.g. the list id ``KFM_001``), ``obis_markers`` (the value of an OBIS code),
``obis_codes`` (the exact OBIS sequence of a pair frame) and ``capture_objects`` (the exact
push object list, ``"class:obis:attribute"``). A profile with ``requires_family`` (Kaifa
list 1: a lone power value) is only chosen after the same meter sent a frame of that family.
Two matching profiles select none: the frame stays an unknown layout and the user forces one.

Schema of a file::

    {"name": "...", "description": "...", "source": "where the facts come from",
     "family": "optional group name", "match": {...},
     "fields": [{"index": 2, "obis": "1-0:1.7.0.255", "name": "...", "kind": "number",
                 "scaler": 0, "unit": "W"}, ...]}

``kind`` is ``number`` (scaled: value = raw·10^scaler), ``enum``, ``bool``, ``text``,
``datetime`` (a 12-byte COSEM date-time; ``"deviation": "utc_offset"`` for a meter that writes
its UTC offset where COSEM wants UTC minus local time: ZPA's +120 for CEST) or ``bytes``.
``"meter_id": true`` marks the field
that identifies the meter. ``scale_check`` (``dlms.scalecheck``) names energy counters whose
scaler is decided from the meter's own power; ``range_check`` names fields whose scaler differs
between meter types of one list (a Kamstrup N1 sends its voltages in 0.01 V, the others in V):
``{"fields": [...], "choices": [0, -2], "range": [50, 500]}`` takes the one choice that puts the
value in the physically possible range, and holds the value back when none does.

Every document is checked against ``SCHEMA`` (the JSON type of each known key) before anything
else looks at it, so a malformed file is a ConfigurationError naming the file and the field
(``match.types[0]``), never a TypeError or RecursionError deep inside matching.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from ..errors import ConfigurationError
from ..obis import Obis
from .. import DATA_DIR
from . import units
from .apdu import DESCRIPTOR, INTEGER_TYPES, TYPE_NAMES, Notification, Structure, parse_datetime


if TYPE_CHECKING:
    from pathlib import Path

    BUILTIN_DIR: Path  # made by __getattr__ below

#: the built-in profiles' folder as text; ``BUILTIN_DIR`` is the same as a Path (made on first use:
#: pathlib is no part of a decoder's start-up, which every push command and the Victron service pay)
_BUILTIN = os.path.join(DATA_DIR, "profiles")
SHAPES = ("positional", "obis", "push-list", "single")
KINDS = ("number", "enum", "bool", "text", "datetime", "bytes")
DEVIATIONS = ("cosem", "utc_offset")
TEXT_TYPES = frozenset({"octet-string", "visible-string", "utf8-string"})
TYPE_GROUPS: Dict[str, frozenset] = {
    "integer": frozenset(INTEGER_TYPES),
    "number": frozenset(INTEGER_TYPES | {"float32", "float64"}),
    "text": TEXT_TYPES,
}
_MATCH_KEYS = {"shape", "elements", "types", "markers", "obis_markers", "obis_codes", "capture_objects",
               "requires_family"}


@dataclass(frozen=True)
class Field:
    """One value of a profile: by ``index`` (positional) or by ``obis`` (obis / push-list)."""

    index: Optional[int]
    obis: Optional[str]
    scaler: int
    unit: Optional[str]
    name: str
    kind: str = "number"
    meter_id: bool = False
    #: a date-time's deviation field: ``cosem`` (UTC - local, the standard) or ``utc_offset`` (local - UTC)
    deviation: str = "cosem"

    @property
    def code(self) -> Optional[Obis]:
        return _parse_obis(self.obis) if self.obis else None


@dataclass(frozen=True)
class _Rules:
    """A profile's match rules and field lookups, compiled once (matching runs for every frame)."""

    types: Tuple[str, ...]
    obis_markers: Tuple[Tuple[Obis, dict], ...]
    obis_codes: Optional[Tuple[str, ...]]
    capture_objects: Optional[Tuple[str, ...]]
    by_index: Dict[int, Field]
    by_obis: Dict[Obis, Field]
    short: Tuple[Tuple[Obis, Field], ...]
    #: positions a positional profile reads a clock from: there the frame must carry a date-time
    clocks: Tuple[int, ...] = ()


@dataclass(frozen=True)
class Profile:
    """A meter layout from one JSON file (see the module docstring for the schema)."""

    name: str
    description: str
    match: dict
    fields: Tuple[Field, ...]
    source: str
    family: Optional[str] = None
    path: Optional[str] = None
    rules: Optional[_Rules] = field(default=None, compare=False, repr=False)
    #: counters whose scaler the list does not state: {choices, counters, pairs} (``scalecheck``)
    scale_check: Optional[Dict[str, Any]] = None
    #: fields whose scaler the possible range decides: {fields, choices, range} (``scalecheck.RangeCheck``)
    range_check: Optional[Dict[str, Any]] = None

    def __post_init__(self) -> None:
        if self.rules is None:
            object.__setattr__(self, "rules", _compile(self))

    @property
    def shape(self) -> str:
        return self.match.get("shape", "positional")

    def field_at(self, index: int) -> Optional[Field]:
        return self.rules.by_index.get(index)  # type: ignore[union-attr]

    def field_for(self, code: Obis) -> Optional[Field]:
        """The field for an OBIS code: the exact code, else a short code (``31.7.0``) that matches it."""
        rules = self.rules
        assert rules is not None
        found = rules.by_obis.get(code)
        if found is None and code.f == 255:
            found = rules.by_obis.get(Obis(code.a, code.b, code.c, code.d, code.e, None))
        if found is not None:
            return found
        for pattern, fld in rules.short:
            if pattern.matches(code):
                return fld
        return None


def _compile(profile: Profile) -> _Rules:
    m = profile.match
    by_obis: Dict[Obis, Field] = {}
    short: List[Tuple[Obis, Field]] = []
    for f in profile.fields:
        code = f.code
        if code is None:
            continue
        if code.a is not None and code.b is not None:
            by_obis.setdefault(code, f)
        else:
            short.append((code, f))
    return _Rules(
        types=tuple(m.get("types") or ()),
        obis_markers=tuple((_parse_obis(mk["obis"]), mk) for mk in m.get("obis_markers", ())),
        obis_codes=tuple(_parse_obis(c).dotted() or c for c in m["obis_codes"]) if "obis_codes" in m else None,
        capture_objects=tuple(":".join(str(x) for x in _capture_or_fail(c, profile.name))
                              for c in m["capture_objects"]) if "capture_objects" in m else None,
        by_index={f.index: f for f in profile.fields if f.index is not None},
        by_obis=by_obis,
        short=tuple(short),
        clocks=tuple(sorted(f.index for f in profile.fields if f.index is not None and f.kind == "datetime"))
        if m.get("shape", "positional") == "positional" else (),
    )


@lru_cache(maxsize=512)
def _parse_obis(text: str) -> Obis:
    return Obis.parse(text)


@lru_cache(maxsize=4096)
def obis_of(raw: bytes) -> Obis:
    """The Obis of a 6-byte logical name (cached: the same codes arrive every few seconds)."""
    return Obis.from_bytes(raw)


# ------------------------------------------------------------------------ loading
def _fail(where: str, cause: str) -> ConfigurationError:
    return ConfigurationError(f"profile {where}: {cause}",
                              "fix the JSON file (schema in dlms_protocol/dlms/profiles.py) or remove it")


_STR, _INT, _BOOL, _NULL = "string", "integer", "boolean", "null"
_JSON_TYPES = {_STR: (str,), _INT: (int,), _BOOL: (bool,), _NULL: (type(None),)}


def _obj(props: Dict[str, Any], required: Tuple[str, ...] = ()) -> Tuple[str, Dict[str, Any], Tuple[str, ...]]:
    return ("object", props, required)


def _arr(item: Any) -> Tuple[str, Any]:
    return ("array", item)


_MARKER = _obj({"index": _INT, "obis": _STR, "equals": _STR, "prefix": _STR, "not_prefix": _STR, "absent": _BOOL})
#: the JSON type of every key a profile may have (unknown keys of a field or the document are
#: allowed for comments; unknown match rules are refused by ``_check_match``)
SCHEMA = _obj({
    "name": _STR, "description": _STR, "source": _STR, "family": (_STR, _NULL),
    "match": _obj({"shape": _STR, "elements": _INT, "types": _arr(_STR), "markers": _arr(_MARKER),
                   "obis_markers": _arr(_MARKER), "obis_codes": _arr(_STR), "capture_objects": _arr(_STR),
                   "requires_family": _STR}),
    "fields": _arr(_obj({"index": (_INT, _NULL), "obis": (_STR, _NULL), "name": _STR, "kind": _STR,
                         "scaler": (_INT, _NULL), "unit": (_STR, _NULL), "meter_id": _BOOL,
                         "deviation": _STR})),
    "scale_check": _obj({"choices": _arr(_INT), "counters": _arr(_STR), "pairs": _arr(_arr(_STR))},
                        required=("choices", "counters", "pairs")),
    "range_check": _obj({"fields": _arr(_STR), "choices": _arr(_INT), "range": _arr(_INT)},
                        required=("fields", "choices", "range")),
}, required=("name", "match", "fields"))


def _json_type_ok(value: Any, spec: str) -> bool:
    if spec in (_INT, _STR, _NULL) and isinstance(value, bool):
        return False  # JSON true is no number
    return isinstance(value, _JSON_TYPES[spec])


#: a leaf node of ``SCHEMA`` (a type name or a tuple of them) -> (Python types, does a bool pass)
_LEAF_TYPES: Dict[Any, Tuple[Tuple[type, ...], bool]] = {}
#: id of an object node's properties -> (the properties, their checks: key, node, leaf types or None)
_PLANS: Dict[int, Tuple[Dict[str, Any], Tuple[Tuple[str, Any, Optional[Tuple[Tuple[type, ...], bool]]], ...]]] = {}


def _leaf(spec: Any) -> Optional[Tuple[Tuple[type, ...], bool]]:
    """``_json_type_ok`` of a leaf node as one isinstance: (types, does a bool pass); None for an
    object or array node. The schema walk runs for every key of every built-in profile at start."""
    if isinstance(spec, tuple) and spec[0] in ("object", "array"):
        return None
    entry = _LEAF_TYPES.get(spec)
    if entry is None:
        names = (spec,) if isinstance(spec, str) else spec
        entry = (tuple(t for n in names for t in _JSON_TYPES[n]), _BOOL in names)
        _LEAF_TYPES[spec] = entry
    return entry


def _plan(props: Dict[str, Any]) -> Tuple[Tuple[str, Any, Optional[Tuple[Tuple[type, ...], bool]]], ...]:
    entry = _PLANS.get(id(props))
    if entry is None or entry[0] is not props:
        entry = (props, tuple((key, sub, _leaf(sub)) for key, sub in props.items()))
        _PLANS[id(props)] = entry
    return entry[1]


def validate_schema(value: Any, spec: Any = SCHEMA, path: str = "") -> None:
    """Check ``value`` against a ``SCHEMA`` node; ConfigurationError names the field (``where`` added by callers).

    A leaf that passes its one isinstance is not walked into; anything else is, for the message."""
    label = path or "the document"
    if isinstance(spec, str):
        spec = (spec,)
    if isinstance(spec, tuple) and spec[0] == "object":
        _, props, required = spec
        if not isinstance(value, dict):
            raise ConfigurationError(f"{label} must be a JSON object, not {_json_name(value)}")
        for key in required:
            if key not in value:
                raise ConfigurationError(f"'{path + '.' if path else ''}{key}' is missing")
        for key, sub, leaf in _plan(props):
            if key in value:
                item = value[key]
                if leaf is None or not isinstance(item, leaf[0]) or (not leaf[1] and isinstance(item, bool)):
                    validate_schema(item, sub, f"{path}.{key}" if path else key)
        return
    if isinstance(spec, tuple) and spec[0] == "array":
        if not isinstance(value, list):
            raise ConfigurationError(f"{label} must be a JSON list, not {_json_name(value)}")
        leaf = _leaf(spec[1])
        for i, item in enumerate(value):
            if leaf is None or not isinstance(item, leaf[0]) or (not leaf[1] and isinstance(item, bool)):
                validate_schema(item, spec[1], f"{path}[{i}]")
        return
    if not any(_json_type_ok(value, t) for t in spec):
        raise ConfigurationError(f"{label} must be {' or '.join(spec)}, not {_json_name(value)}")


def _json_name(value: Any) -> str:
    for name, kinds in (("a list", list), ("an object", dict), ("true/false", bool), ("null", type(None)),
                        ("a number", (int, float)), ("a string", str)):
        if isinstance(value, kinds):
            return name
    return type(value).__name__


def parse_profile(data: Any, where: str = "<json>") -> Profile:
    """Validate one profile document and build a Profile; ConfigurationError names the problem."""
    if not isinstance(data, dict):
        raise _fail(where, "the file must hold one JSON object")
    name = data.get("name")
    if isinstance(name, str):
        where = f"{name!r} ({where})"
    try:
        validate_schema(data)
    except ConfigurationError as exc:
        raise _fail(where, exc.cause) from None
    name = str(data["name"])  # the schema made sure it is a string
    if not name.strip() or name.strip().lower() in ("auto", "dsmr"):
        raise _fail(where, f"'name' must be a non-empty string other than auto/dsmr, not {name!r}")
    match = data["match"]
    unknown = set(match) - _MATCH_KEYS
    if unknown:
        raise _fail(where, f"unknown match rule(s) {sorted(unknown)}; known: {sorted(_MATCH_KEYS)}")
    shape, elements = _check_match(match, where)
    seen_index: Dict[int, str] = {}
    fields = [_parse_field(raw, i, shape, elements, seen_index, where) for i, raw in enumerate(data["fields"])]
    return Profile(
        name=name.strip(), description=str(data.get("description", "")), match=match,
        fields=tuple(fields), source=str(data.get("source", "")), family=data.get("family"),
        scale_check=_check_scale_check(data.get("scale_check"), fields, where),
        range_check=_check_range_check(data.get("range_check"), fields, where),
    )


def _check_range_check(spec: Optional[Dict[str, Any]], fields: List[Field], where: str) -> Optional[Dict[str, Any]]:
    """``range_check``: number fields, and choices so far apart that at most one of them puts a
    value into the range (the next choice's factor exceeds the range's own span)."""
    if spec is None:
        return None
    numbers = {f.code for f in fields if f.kind == "number" and f.code is not None}
    codes = []
    for text in spec["fields"]:
        code = _try_obis(text)
        if code is None or code not in numbers:
            raise _fail(where, f"range_check: {text!r} is no number field of this profile")
        codes.append(str(code))
    choices, bounds = spec["choices"], spec["range"]
    if len(bounds) != 2 or not 0 < bounds[0] < bounds[1]:
        raise _fail(where, "range_check.range is [lowest, highest] magnitude, both above 0")
    steps = [b - a for a, b in zip(sorted(choices), sorted(choices)[1:])]
    if len(choices) < 2 or not all(-128 <= c <= 127 for c in choices) or min(steps, default=0) < 1 \
            or 10 ** min(steps) <= bounds[1] / bounds[0]:
        raise _fail(where, "range_check.choices must be two or more scalers (-128 to 127) further apart than the "
                           "range is wide, so that at most one of them fits")
    if not codes:
        raise _fail(where, "range_check.fields must name at least one field")
    return {"fields": codes, "choices": list(choices), "range": list(bounds)}


def _check_scale_check(spec: Optional[Dict[str, Any]], fields: List[Field], where: str) -> Optional[Dict[str, Any]]:
    """``scale_check`` (``scalecheck`` module): choices of scaler a factor of ten or more apart (so
    a match is unambiguous), counters that are number fields, pairs of (counter, power field)."""
    if spec is None:
        return None
    numbers = {f.code: f for f in fields if f.kind == "number" and f.code is not None}
    choices = spec["choices"]
    if len(choices) < 2 or len(set(choices)) != len(choices) or not all(-128 <= c <= 127 for c in choices):
        raise _fail(where, "scale_check.choices must name two or more different scalers (-128 to 127)")
    codes: Dict[str, Obis] = {}
    for text in list(spec["counters"]) + [c for pair in spec["pairs"] for c in pair]:
        code = _try_obis(text)
        if code is None or code not in numbers:
            raise _fail(where, f"scale_check: {text!r} is no number field of this profile")
        codes[text] = code
    for pair in spec["pairs"]:
        if len(pair) != 2 or pair[0] not in spec["counters"] or pair[1] in spec["counters"]:
            raise _fail(where, "scale_check.pairs are [counter, power]: a listed counter and a power that is none")
        if numbers[codes[pair[1]]].unit != "W":
            raise _fail(where, f"scale_check: the power {pair[1]!r} must be in W")
    if not spec["pairs"]:
        raise _fail(where, "scale_check.pairs must name at least one [counter, power]")
    return {"choices": list(choices), "counters": [str(codes[c]) for c in spec["counters"]],
            "pairs": [[str(codes[c]), str(codes[p])] for c, p in spec["pairs"]]}


def _check_match(match: Dict[str, Any], where: str) -> Tuple[str, Optional[int]]:
    """Validate a profile's ``match`` rules; its shape and element count."""
    shape = match.setdefault("shape", "positional")
    if shape not in SHAPES:
        raise _fail(where, f"match.shape {shape!r} is none of {', '.join(SHAPES)}")
    elements = match.get("elements")
    if elements is not None and (not isinstance(elements, int) or elements < 0):
        raise _fail(where, "match.elements must be a whole number")
    types = match.get("types")
    if types is not None:
        if not isinstance(types, list) or (elements is not None and len(types) != elements):
            raise _fail(where, "match.types must be a list with one entry per element")
        for t in types:
            if t != "*" and t not in TYPE_GROUPS and t not in TYPE_NAMES.values():
                raise _fail(where, f"match.types has unknown DLMS type {t!r}")
    if shape in ("positional", "single") and elements is None:
        raise _fail(where, f"a {shape} profile needs match.elements")
    if shape == "single" and elements != 1:
        raise _fail(where, "a single-value profile has match.elements 1")
    for marker in match.get("markers", []):
        if not isinstance(marker, dict) or not isinstance(marker.get("index"), int) or \
                not any(k in marker for k in ("equals", "prefix", "not_prefix")):
            raise _fail(where, "each marker needs 'index' and 'equals', 'prefix' or 'not_prefix'")
    for marker in match.get("obis_markers", []):
        if not isinstance(marker, dict) or "obis" not in marker or \
                not any(k in marker for k in ("equals", "prefix", "not_prefix", "absent")):
            raise _fail(where, "each obis_marker needs 'obis' and 'equals', 'prefix', 'not_prefix' or 'absent'")
        _obis_or_fail(marker["obis"], where)
    for code in match.get("obis_codes", []):
        _obis_or_fail(code, where)
    for entry in match.get("capture_objects", []):
        _capture_or_fail(entry, where)
    return shape, elements


@lru_cache(maxsize=1024)
def _try_obis(text: str) -> Optional[Obis]:
    """Obis.try_parse, cached: the built-in profiles name the same few codes hundreds of times."""
    return Obis.try_parse(text)


def _obis_or_fail(text: Any, where: str) -> Obis:
    code = _try_obis(text) if isinstance(text, str) else None
    if code is None:
        raise _fail(where, f"{text!r} is not an OBIS code")
    return code


def _capture_or_fail(entry: Any, where: str) -> Tuple[int, str, int]:
    parts = entry.split(":") if isinstance(entry, str) else []
    try:
        class_id, attr = int(parts[0]), int(parts[-1])
        code = ":".join(parts[1:-1])
    except (ValueError, IndexError):
        raise _fail(where, f"capture object {entry!r} must look like '3:1-0:1.8.0.255:2'") from None
    return class_id, _obis_or_fail(code, where).dotted() or code, attr


def _parse_field(raw: dict, i: int, shape: str, elements: Optional[int], seen: Dict[int, str],
                 where: str) -> Field:
    label = f"fields[{i}]"
    index = raw.get("index")
    obis = raw.get("obis")
    if shape in ("positional", "single"):
        if not isinstance(index, int) or index < 0 or (elements is not None and index >= elements):
            raise _fail(where, f"{label}: 'index' must be 0..{(elements or 1) - 1}")
        if index in seen:
            raise _fail(where, f"{label}: index {index} is already used by {seen[index]!r}")
        seen[index] = raw.get("name", "")
    elif obis is None:
        raise _fail(where, f"{label}: an {shape} profile names its fields by 'obis'")
    if obis is not None:
        obis = _obis_or_fail(obis, where)
        obis = obis.dotted() or str(obis)
    kind = raw.get("kind", "number")
    if kind not in KINDS:
        raise _fail(where, f"{label}: kind {kind!r} is none of {', '.join(KINDS)}")
    scaler = raw.get("scaler", 0 if kind != "number" else None)
    if kind == "number":
        if not isinstance(scaler, int) or isinstance(scaler, bool) or not -128 <= scaler <= 127:
            raise _fail(where, f"{label} ({raw.get('name', '')}): a number needs an integer 'scaler' "
                               f"(value = raw·10^scaler), not {scaler!r}")
    unit = raw.get("unit")
    if unit is not None and unit not in units.known_symbols():
        raise _fail(where, f"{label}: unit {unit!r} is no DLMS unit symbol (e.g. W, Wh, var, varh, V, A, Hz)")
    if kind != "number" and unit is not None:
        raise _fail(where, f"{label}: only numbers have a unit")
    deviation = raw.get("deviation", "cosem")
    if deviation not in DEVIATIONS or (deviation != "cosem" and kind != "datetime"):
        raise _fail(where, f"{label}: 'deviation' is {' or '.join(DEVIATIONS)}, and only for a datetime")
    return Field(index=index, obis=obis, scaler=int(scaler or 0), unit=unit,
                 name=str(raw.get("name", "")), kind=kind, meter_id=bool(raw.get("meter_id", False)),
                 deviation=deviation)


def _load_file(path: Union[str, Path]) -> Profile:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.loads(f.read())
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"profile file {path} cannot be read ({exc.__class__.__name__})",
                                 "check the path and the file permissions") from None
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"profile file {path} is not valid JSON (line {exc.lineno}: {exc.msg})",
                                 "fix the JSON syntax") from None
    except RecursionError:
        raise ConfigurationError(f"profile file {path} nests too deeply to be a profile",
                                 "a profile is an object with match and fields; fix the file") from None
    profile = parse_profile(data, str(path))
    return Profile(**{**profile.__dict__, "path": str(path)})


def _files(where: Path) -> List[Path]:
    from pathlib import Path  # only for user folders and files: not at start-up

    where = Path(where)
    if where.is_dir():
        return sorted(where.glob("*.json"))
    if where.is_file():
        return [where]
    raise ConfigurationError(f"profile path {where} does not exist",
                             "give a profile JSON file or a folder of them")


@lru_cache(maxsize=1)
def _builtin() -> Tuple[Profile, ...]:
    names = sorted(n for n in os.listdir(_BUILTIN) if n.endswith(".json"))
    return tuple(_load_file(os.path.join(_BUILTIN, n)) for n in names)


def load_profiles(extra_dirs: Sequence[Path] = ()) -> Dict[str, Profile]:
    """Built-in profiles plus user folders/files; a user profile replaces a built-in of the same name
    (``profiles`` lists it with its file)."""
    profiles: Dict[str, Profile] = {}
    for profile in _builtin():
        if profile.name in profiles:
            raise ConfigurationError(f"two built-in profiles are named {profile.name!r}", "rename one")
        profiles[profile.name] = profile
    for where in extra_dirs:
        for path in _files(where):  # type: ignore[arg-type]
            profile = _load_file(path)
            profiles[profile.name] = profile
    return profiles


def load_profile(name_or_path: str, extra_dirs: Sequence[Path] = ()) -> Profile:
    """A profile by name, or from a JSON file path; the error lists the available names."""
    from pathlib import Path  # a name or a user's file: not at start-up

    text = str(name_or_path).strip()
    path = Path(text)
    if text.endswith(".json") or path.is_file():
        if not path.is_file():
            raise ConfigurationError(f"profile file {text} does not exist", "check the path")
        return _load_file(path)
    profiles = load_profiles(extra_dirs)
    if text in profiles:
        return profiles[text]
    raise ConfigurationError(
        f"unknown profile {text!r}",
        "use auto, a JSON file path, or one of: " + ", ".join(sorted(profiles)),
    )


def resolve(selection: Optional[str], profiles: Dict[str, Profile]) -> Optional[List[Profile]]:
    """The candidates a user's ``profile`` setting allows: None = all (auto), else a list.

    A family name (``si-sodo-elektromaribor``) allows all of its profiles, which is what a
    meter that pushes several lists needs.
    """
    if selection is None or str(selection).strip().lower() in ("", "auto"):
        return None
    text = str(selection).strip()
    if text in profiles:
        return [profiles[text]]
    family = [p for p in profiles.values() if p.family == text]
    if family:
        return family
    return [load_profile(text)]


# ---------------------------------------------------------------------- matching
def is_obis_octets(value: Any) -> bool:
    """6 bytes that can be a logical name: A is a defined medium (0-15), B a channel (0-127)."""
    return isinstance(value, (bytes, bytearray)) and len(value) == 6 and value[0] <= 15 and value[1] <= 127


def is_scaler_unit(value: Any, type_name: str) -> bool:
    return (type_name == "structure" and isinstance(value, list) and len(value) == 2
            and tuple(getattr(value, "types", ())) == ("integer", "enum"))


_CAPTURE_TYPES = (("long-unsigned", "octet-string", "integer", "long-unsigned"),
                  ("long-unsigned", "octet-string", "integer", "unsigned"))


def is_capture_list(value: Any, type_name: str) -> bool:
    """An array of {class-id, logical-name, attribute-index, data-index} structures, or of the
    push setup's later form that adds {restriction, columns} (Blue Book ed. 13 on; Energomera):
    which attribute each value is does not change with them."""
    if type_name != "array" or not isinstance(value, list) or not value:
        return False
    for entry in value:
        if not isinstance(entry, list) or not is_obis_octets(entry[1] if len(entry) > 1 else None):
            return False
        types = tuple(getattr(entry, "types", ()))
        if not (types[:4] in _CAPTURE_TYPES and (len(types) == 4 or types[4:] == _RESTRICTED)):
            return False
    return True


#: the types a capture entry of the later form adds: restriction {type, element}, columns
_RESTRICTED = ("structure", "array")


def capture_key(object_list: list) -> Tuple[Tuple[Any, ...], ...]:
    """A push object list as a cache key: class, logical name, attribute and data index of each
    entry (the later form's restriction and columns are lists, and say nothing about which value
    is which)."""
    return tuple(tuple(e[:4]) for e in object_list)


def is_described(value: Any) -> bool:
    """A structure {attribute descriptor, value} (``apdu.DESCRIPTOR``)."""
    return isinstance(value, list) and getattr(value, "types", ())[:1] == (DESCRIPTOR,)


def reading_body(notification: Notification) -> Any:
    """The body as profiles and the walker read it: a Czech HAN body with its arrays of
    {attribute descriptor, value} entries spliced in (``_spliced``), any other as it came."""
    return _spliced(notification.body) if notification.described else notification.body


def _spliced(body: Any) -> Any:
    """A body whose arrays of {attribute descriptor, value} entries are spliced in where they
    stand (module docstring), so each entry is an element like a pair structure is."""
    if not isinstance(body, list):
        return body
    types = tuple(getattr(body, "types", ()))
    out, out_types = Structure(), []
    for elem, type_name in zip(body, types):
        if type_name == "array" and elem and all(is_described(e) for e in elem):
            out.extend(elem)
            out_types.extend(elem.types)
        else:
            out.append(elem)
            out_types.append(type_name)
    out.types = tuple(out_types)
    return out


def obis_groups(body: Any) -> List[Tuple[int, Obis, Any, str, Optional[Any]]]:
    """The OBIS-keyed values of a body: (index, code, value, value type, {scaler, unit} or None).

    An element is keyed when it is a logical name followed by a value (and maybe a
    {scaler, unit} structure), a structure {logical name, value[, {scaler, unit}]}, or a
    structure {attribute descriptor, value} (``apdu.DESCRIPTOR``).
    """
    out: List[Tuple[int, Obis, Any, str, Optional[Any]]] = []
    if not isinstance(body, list):
        return out
    types = tuple(getattr(body, "types", ()))
    i = 0
    n = len(body)
    while i < n:
        elem = body[i]
        if elem.__class__ is int:  # most elements of a push; never a logical name
            i += 1
            continue
        if is_obis_octets(elem) and i + 1 < n:
            su = body[i + 2] if i + 2 < n and is_scaler_unit(body[i + 2], types[i + 2]) else None
            out.append((i, obis_of(bytes(elem)), body[i + 1], types[i + 1], su))
            i += 3 if su is not None else 2
            continue
        if is_described(elem):
            out.append((i, obis_of(bytes(elem[0][1])), elem[1], elem.types[1], None))
        elif isinstance(elem, list) and len(elem) in (2, 3) and is_obis_octets(elem[0]):
            etypes = tuple(getattr(elem, "types", ()))
            su = elem[2] if len(elem) == 3 else None
            out.append((i, obis_of(bytes(elem[0])), elem[1], etypes[1], su))
        i += 1
    return out


class BodyFacts:
    """What matching needs to know about one body, computed once per frame (not per profile)."""

    def __init__(self, body: Any, body_type: Optional[str] = None) -> None:
        self.body = body
        self.length, self.types = signature(body, body_type)
        self._shape: Optional[str] = None
        self._groups: Optional[list] = None

    @property
    def groups(self) -> list:
        if self._groups is None:
            self._groups = obis_groups(self.body)
        return self._groups

    @property
    def shape(self) -> str:
        if self._shape is None:
            self._shape = self._detect()
        return self._shape

    def _detect(self) -> str:
        body = self.body
        if not isinstance(body, list):
            return "single"
        if body and self.types and is_capture_list(body[0], self.types[0]):
            return "push-list"
        groups = self.groups
        consumed = sum(1 if isinstance(body[i], list) else (3 if su is not None else 2)
                       for i, _, _, _, su in groups)
        return "obis" if groups and consumed * 2 >= len(body) else "positional"

    def obis_sequence(self) -> Tuple[str, ...]:
        return tuple(code.dotted() or str(code) for _, code, _, _, _ in self.groups)

    def capture_signature(self) -> Tuple[str, ...]:
        if self.shape != "push-list":
            return ()
        key = capture_key(self.body[0])  # a meter sends the same object list every time
        hit = _SIGNATURES.get(key)
        if hit is None:
            hit = tuple(f"{e[0]}:{obis_of(bytes(e[1])).dotted()}:{e[2]}" for e in self.body[0])
            if len(_SIGNATURES) >= 64:
                _SIGNATURES.clear()
            _SIGNATURES[key] = hit
        return hit


_SIGNATURES: Dict[tuple, Tuple[str, ...]] = {}


def detect_shape(body: Any) -> str:
    """``push-list``, ``obis`` (pairs/structures with OBIS codes), ``positional`` or ``single``."""
    return BodyFacts(body).shape


def obis_sequence(body: Any) -> Tuple[str, ...]:
    """The OBIS codes of a pair/structure frame in order (dotted), for ``obis_codes`` rules."""
    return BodyFacts(body).obis_sequence()


def obis_values(body: Any) -> Dict[str, Any]:
    """OBIS code (dotted) -> raw value of a pair/structure frame (first occurrence)."""
    out: Dict[str, Any] = {}
    for _, code, value, _, _ in obis_groups(body):
        out.setdefault(code.dotted() or str(code), value)
    return out


def capture_signature(body: Any) -> Tuple[str, ...]:
    """``class:obis:attribute`` of each entry of a push object list (element 0)."""
    return BodyFacts(body).capture_signature()


def _text_of(value: Any) -> Optional[str]:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("latin-1")
    return None


def _marker_key(value: Any) -> str:
    """What a marker rule sees of a present value (cache key): its text, or that it is no text
    (never None, which stands for an absent code)."""
    text = _text_of(value)
    return text if text is not None else "\x00 not text"


def _marker_ok(value: Any, marker: dict) -> bool:
    text = _text_of(value)
    if text is None:
        return False
    if "equals" in marker and text != marker["equals"]:
        return False
    if "prefix" in marker and not text.startswith(marker["prefix"]):
        return False
    return not ("not_prefix" in marker and text.startswith(marker["not_prefix"]))


def _marker_text(marker: dict) -> str:
    return ", ".join(f"{k} {marker[k]!r}" for k in ("equals", "prefix", "not_prefix", "absent") if k in marker)


def _type_ok(actual: str, wanted: str) -> bool:
    return wanted == "*" or actual == wanted or actual in TYPE_GROUPS.get(wanted, ())


def signature(body: Any, body_type: Optional[str] = None) -> Tuple[int, Tuple[str, ...]]:
    """(element count, DLMS type per element); a scalar body counts as one element."""
    if isinstance(body, list):
        return len(body), tuple(getattr(body, "types", ()))
    if body_type is None:
        body_type = {bytes: "octet-string", str: "visible-string", bool: "boolean"}.get(type(body), "*")
    return 1, (body_type,)


def mismatch(profile: Profile, body: Any, family: Optional[str] = None, forced: bool = False,
             body_type: Optional[str] = None, facts: Optional[BodyFacts] = None) -> Optional[str]:
    """Why a profile does not fit a body (a sentence), or None when it fits.

    ``forced`` (the user named the profile): identity rules (markers, OBIS sequence, push
    list, family) are skipped, the structure (shape, element count, types) must still fit.
    """
    facts = facts if facts is not None else BodyFacts(body, body_type)
    m = profile.match
    rules = profile.rules
    assert rules is not None
    if m["shape"] != facts.shape:
        return f"the frame is {facts.shape}, the profile is for {m['shape']} frames"
    if not forced and m.get("requires_family") and m["requires_family"] != family:
        return f"it is only chosen after a frame of family {m['requires_family']!r}"
    elements = m.get("elements")
    if elements is not None and facts.length != elements:
        return f"the frame has {facts.length} elements, the profile expects {elements}"
    types = facts.types
    for i, wanted in enumerate(rules.types):
        if i >= len(types) or not _type_ok(types[i], wanted):
            got = types[i] if i < len(types) else "nothing"
            return f"element {i} is {got}, the profile expects {wanted}"
    for i in rules.clocks:
        if not isinstance(body, list) or i >= len(body) or not _is_clock(body[i]):
            return f"element {i} is no date-time (12 bytes), the profile reads a clock there"
    if forced:
        return None
    for marker in m.get("markers", ()):
        idx = marker["index"]
        if not isinstance(body, list) or idx >= len(body) or not _marker_ok(body[idx], marker):
            return f"element {idx} is not the marker {_marker_text(marker)}"
    for want, marker in rules.obis_markers:
        found = [value for _, code, value, _, _ in facts.groups if want.matches(code)]
        if marker.get("absent"):  # the list must not carry this code (another list of the same id does)
            if found:
                return f"{want} is in the frame, the profile is for lists without it"
            continue
        if not found or not _marker_ok(found[0], marker):
            return f"{want} is not the marker {_marker_text(marker)}"
    if rules.obis_codes is not None and facts.obis_sequence() != rules.obis_codes:
        return "the frame's OBIS codes differ from the profile's obis_codes"
    if rules.capture_objects is not None and facts.capture_signature() != rules.capture_objects:
        return "the frame's push object list differs from the profile's capture_objects"
    return None


def select_profile(body: Any, profiles: Dict[str, Profile], family: Optional[str] = None,
                   body_type: Optional[str] = None) -> Optional[Profile]:
    """The one profile whose rules fit this body, or None (none, or more than one, fits: ``choose``
    says why; ``payload.interpret`` puts it in the interpretation's notes)."""
    return choose(body, profiles.values(), family, body_type=body_type)[0]


def _is_clock(value: Any) -> bool:
    """A COSEM date-time where a profile reads a clock: 12 octets (valid or 'not specified'), or
    a date-time the A-XDR decoder already made. A 16-byte meter number there is another layout:
    an Iskra AM550 list of the same types once took the Wiener Netze profile, every value
    shifted by one (a 7 MW reading)."""
    if isinstance(value, (bytes, bytearray)):
        return len(value) == 12
    return isinstance(value, datetime)


class _Needs:
    """What of a body the candidates' rules look at (beyond shape, length and types)."""

    def __init__(self, everyone: Tuple[Profile, ...], candidates: Tuple[Profile, ...]) -> None:
        self.everyone = everyone  # kept, so the ids in the cache key stay theirs
        self.marker_indices = tuple(sorted({mk["index"] for p in candidates for mk in p.match.get("markers", ())}))
        wants = {want for p in candidates if p.rules is not None for want, _ in p.rules.obis_markers}
        self.obis_wants = tuple(sorted(wants, key=str))
        self.obis_codes = any(p.rules is not None and p.rules.obis_codes is not None for p in candidates)
        self.captures = any(p.rules is not None and p.rules.capture_objects is not None for p in candidates)
        self.clock_indices = tuple(sorted({i for p in candidates if p.rules is not None for i in p.rules.clocks}))

    def key(self, facts: BodyFacts) -> tuple:
        body = facts.body
        elems = body if isinstance(body, list) else []
        markers = tuple(_text_of(elems[i]) if i < len(elems) else None for i in self.marker_indices)
        obis_values: Tuple[Optional[str], ...] = ()
        if self.obis_wants and isinstance(body, list):
            obis_values = tuple(next((_marker_key(v) for _, code, v, _, _ in facts.groups if want.matches(code)), None)
                                for want in self.obis_wants)
        seq = facts.obis_sequence() if self.obis_codes and isinstance(body, list) else ()
        caps = facts.capture_signature() if self.captures else ()
        clocks = tuple(i < len(elems) and _is_clock(elems[i]) for i in self.clock_indices)
        return (facts.shape, facts.length, facts.types, markers, obis_values, seq, caps, clocks)


class Candidates(tuple):
    """A fixed candidate list with the ids ``choose`` keys its caches by, worked out once per
    profile set rather than per frame (``Candidates.of(profiles)``)."""

    ids: Tuple[int, ...]

    @staticmethod
    def of(profiles: Dict[str, Profile]) -> "Candidates":
        hit = _SETS.get(id(profiles))
        if hit is None or hit[0] is not profiles or len(hit[1]) != len(profiles):
            cands = Candidates(profiles.values())
            cands.ids = tuple(id(p) for p in cands)
            if len(_SETS) >= 16:
                _SETS.clear()
            hit = _SETS[id(profiles)] = (profiles, cands)
        return hit[1]


_SETS: Dict[int, Tuple[Dict[str, Profile], Candidates]] = {}
_NEEDS: Dict[Tuple[Tuple[int, ...], str], _Needs] = {}
_CHOICES: Dict[tuple, Tuple[Optional[Profile], Tuple[str, ...]]] = {}
_CACHE_MAX = 256


def choose(body: Any, candidates: Iterable[Profile], family: Optional[str] = None,
           forced: bool = False, body_type: Optional[str] = None,
           facts: Optional[BodyFacts] = None) -> Tuple[Optional[Profile], List[str]]:
    """Like select_profile over a candidate list; also returns why each candidate did not fit.

    A meter sends the same few structures over and over, so the outcome is cached by everything
    the rules look at (shape, element count and types, marker values, OBIS sequence, push object
    list, family): matching every profile against every frame cost more than decoding it."""
    facts = facts if facts is not None else BodyFacts(body, body_type)
    if isinstance(candidates, Candidates):
        cands: Tuple[Profile, ...] = candidates
        ids = candidates.ids
    else:
        cands = tuple(candidates)
        ids = tuple(id(p) for p in cands)
    shape = facts.shape
    needs = _NEEDS.get((ids, shape))
    if needs is None:
        if len(_NEEDS) >= _CACHE_MAX:
            _NEEDS.clear()
            _CHOICES.clear()  # their keys hold ids of the candidates dropped here
        # rules beyond the shape are read only for the candidates of this shape (mismatch())
        needs = _NEEDS[(ids, shape)] = _Needs(cands, tuple(p for p in cands if p.match["shape"] == shape))
    key = (ids, family, forced) + needs.key(facts)
    hit = _CHOICES.get(key)
    if hit is None:
        chosen, reasons = _choose(body, cands, family, forced, facts)
        if len(_CHOICES) >= _CACHE_MAX:
            _CHOICES.clear()
        hit = _CHOICES[key] = (chosen, tuple(reasons))
    return hit[0], list(hit[1])


def _choose(body: Any, candidates: Iterable[Profile], family: Optional[str], forced: bool,
            facts: BodyFacts) -> Tuple[Optional[Profile], List[str]]:
    fits: List[Profile] = []
    reasons: List[str] = []
    for p in candidates:
        why = mismatch(p, body, family, forced, facts=facts)
        if why is None:
            fits.append(p)
        else:
            reasons.append(f"{p.name}: {why}")
    if len(fits) == 1:
        return fits[0], reasons
    if len(fits) > 1:
        reasons.append("several profiles fit: " + ", ".join(sorted(p.name for p in fits)))
    return None, reasons


# ---------------------------------------------------------------------- template
def _kind_guess(value: Any, type_name: str) -> str:
    if type_name == "enum":
        return "enum"
    if type_name == "boolean":
        return "bool"
    if isinstance(value, (bytes, bytearray)):
        if len(value) == 12 and parse_datetime(bytes(value)) is not None:
            return "datetime"
        return "text" if all(0x20 <= b < 0x7F for b in value) else "bytes"
    if isinstance(value, str):
        return "text"
    if type_name in ("date-time",):
        return "datetime"
    if isinstance(value, list) or value is None:
        return "bytes"
    return "number"


def _example(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
        return raw.decode("ascii") if raw and all(0x20 <= b < 0x7F for b in raw) else raw.hex().upper()
    if isinstance(value, list):
        return [_example(v) for v in value]
    if isinstance(value, (int, bool, str)) or value is None:
        return value
    return str(value)


def profile_template(notification: Notification) -> dict:
    """A JSON skeleton for a new profile, made from one frame of an unknown meter.

    Every position (or every OBIS code without an in-frame scaler) gets an entry with its
    DLMS type and example value; ``scaler`` is left null for numbers on purpose, so the file
    does not load until a person has filled in what the grid operator's document says.
    """
    body = reading_body(notification)
    shape = detect_shape(body)
    stamp = notification.timestamp.isoformat() if notification.timestamp else "unknown time"
    template: dict = {
        "name": "my-meter",
        "description": "FILL IN: meter, grid operator, which push list",
        "family": None,
        "source": f"template from a frame of {stamp}; FILL IN where obis, scaler and unit come from "
                  "(the grid operator's customer-interface document)",
    }
    types = tuple(getattr(body, "types", ()))
    fields: List[dict] = []
    if shape in ("positional", "single"):
        elems = list(body) if isinstance(body, list) else [body]
        if not isinstance(body, list):
            types = (notification.body_type,)
        template["match"] = {"shape": shape, "elements": len(elems), "types": list(types)}
        for i, (value, type_name) in enumerate(zip(elems, types)):
            kind = _kind_guess(value, type_name)
            entry = {"index": i, "name": "", "obis": None, "kind": kind, "type": type_name,
                     "example": _example(value)}
            if kind == "number":
                entry.update(scaler=None, unit=None)
            fields.append(entry)
    elif shape == "obis":
        template["match"] = {"shape": "obis", "obis_codes": list(obis_sequence(body))}
        for code, value in obis_values(body).items():
            if isinstance(value, bool) or not isinstance(value, int):
                continue
            fields.append({"obis": code, "name": "", "kind": "number", "scaler": None,
                           "unit": _parse_obis(code).unit(), "example": value})
    else:  # push-list
        template["match"] = {"shape": "push-list", "capture_objects": list(capture_signature(body))}
        for capture, value, type_name in zip(body[0], body, types):
            if capture[0] in (3, 4, 5) and capture[2] == 2 and type_name in TYPE_GROUPS["number"]:
                obis = Obis.from_bytes(bytes(capture[1]))
                fields.append({"obis": obis.dotted(), "name": obis.name() or "", "kind": "number",
                               "scaler": None, "unit": obis.unit(), "example": _example(value)})
    template["fields"] = fields
    return template


def __getattr__(name: str) -> Any:
    """``BUILTIN_DIR`` as a Path, made on first use (PEP 562)."""
    if name == "BUILTIN_DIR":
        from pathlib import Path

        return Path(_BUILTIN)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Field", "Profile", "load_profiles", "load_profile", "parse_profile", "select_profile",
    "profile_template", "detect_shape", "mismatch", "choose", "signature", "BodyFacts", "obis_groups",
    "obis_of", "resolve", "is_obis_octets", "is_scaler_unit", "is_capture_list", "capture_key", "obis_sequence",
    "obis_values", "capture_signature", "BUILTIN_DIR",
]
