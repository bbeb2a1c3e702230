"""Plugin-side helpers of the SmartHomeNG dlms plugin that need no SmartHomeNG.

They turn item attributes into bindings, pick the value a binding asks for out of a verified
``MeterData``, convert it the way dlms 1.9.5 did (``Z6``, ``D6``, ``ZST12``, ``num`` ...), fit it
to the item's type, and build what discovery and the web interface show. Kept out of
``__init__.py`` so they can be tested without a SmartHomeNG, and out of ``dlms_protocol`` because
the core must not know SmartHomeNG's item types.

Every failure raises ``BindingError`` (bad attribute, found at start-up) or ``ValueProblem``
(this reading cannot be written into this item); the plugin then leaves the item unchanged and
shows the message in the status, because a wrong value is worse than an old one.
"""
from __future__ import annotations

import datetime as _dt
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

from .dlms_protocol.iec62056_21.datablock import to_number
from .dlms_protocol.model import HELD_DETAIL, MeterData, Reading
from .dlms_protocol.items import items_snippet  # noqa: F401 - the one generator, in the core
from .dlms_protocol import units as _units
from .dlms_protocol.config import format_name, parse_format  # noqa: F401 - the one format parser, in the core
from .dlms_protocol.pipeline import Output
from .dlms_protocol.derive import derive
from .dlms_protocol.obis import Obis
from .dlms_protocol.ratelimit import RepeatLimiter  # noqa: F401 - used by the plugin as ps.RepeatLimiter

#: value conversions of the dlms 1.9.5 list form ``[code, index, Value|Unit, conversion]``
CONVERSIONS = ("Z6", "Z4", "D6", "ZST10", "ZST12", "str", "float", "int", "num")
_CONVERSION_OF = {c.lower(): c for c in CONVERSIONS}

#: what a ``dlms_status`` item can show
STATUS_KEYS = (
    "connected", "last_success", "last_error", "last_error_time", "successes", "failures",
    "duration", "overlaps", "summary",
)

#: values that switch an attribute off; anything else (also an empty value) switches it on, as in dlms 1.9.5
_FALSE_WORDS = ("no", "n", "false", "f", "0", "off", "none")

#: how meters write numbers: optional sign, ASCII digits, '.' or ',' as decimal mark. Python's
#: int()/float() also take '1E5' (a hex status word would become 100000), '1_000' and non-ASCII digits.
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")
_DECIMAL_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:[.,][0-9]*)?|[.,][0-9]+)")
_DIGITS = re.compile(r"[0-9]+")


def _whole_number(text: str) -> Optional[int]:
    """int for a meter's whole number ('00051206', '-12'), else None."""
    if not _INTEGER_TEXT.fullmatch(text):
        return None
    try:
        return int(text)
    except ValueError:  # more digits than int() converts (Python 3.11+ limit)
        return None


class BindingError(ValueError):
    """An item attribute cannot be used; the text says what to write instead."""


class ValueProblem(ValueError):
    """This reading cannot go into this item (missing group, not a number, wrong unit)."""


class NotYet(ValueProblem):
    """Nothing to write yet (no successful read so far): the item keeps its value, never a fake 0."""


def is_enabled(value: Any) -> bool:
    """Whether an attribute that is *present* switches its feature on (``dlms_obis_readout``).

    In dlms 1.9.5 the presence of the attribute alone switched the raw readout on, whatever its
    value, so ``''``, ``yes`` or ``readout`` all mean on; only an explicit false word
    (``no``/``false``/``off``/``0``/``none``) or ``False``/``0`` switches it off.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    if isinstance(value, list):
        return not value or is_enabled(value[0])
    if value is None:
        return True
    return str(value).strip().lower() not in _FALSE_WORDS


# --------------------------------------------------------------------------- bindings
@dataclass(frozen=True)
class ObisBinding:
    """What one item with ``dlms_obis_code`` wants.

    ``legacy`` is True for the dlms 1.9.5 list form: then the value group ``index`` is taken
    as transmitted, ``key`` picks value or unit and ``conversion`` converts it as 1.9.5 did.
    Otherwise (a plain code) the physical value is fitted to the item type, optionally with
    ``unit`` conversion and ``scale``.
    """

    text: str
    obis: Optional[Obis]
    index: int = 0
    key: str = "Value"
    conversion: str = ""
    legacy: bool = False
    unit: Optional[str] = None
    scale: Optional[Decimal] = None

    @property
    def label(self) -> str:
        if not self.legacy:
            return self.text
        return f"{self.text} [{self.index}, {self.key}{', ' + self.conversion if self.conversion else ''}]"

    def matches(self, reading: Reading) -> bool:
        if self.obis is None:
            return reading.code.strip() == self.text
        return reading.obis is not None and self.obis.matches(reading.obis)

    def select(self, data: MeterData) -> Optional[Reading]:
        """The first reading of this code, in meter order (meters sometimes repeat a line).

        A code written with ``A-B:`` also finds a reading the meter sent without them (D0 meters
        often send ``1.8.0``), but only when no reading carries A and B that match: the meter's
        own short form names the same register, a different medium would carry its own A.
        """
        code = self.obis
        if code is None:
            return next((r for r in data.readings if self.matches(r)), None)
        found = data.find(code)  # the snapshot's code index: no scan per item
        if found:
            return found[0]
        if code.a is None:
            return None
        short = data.find(Obis(None, None, code.c, code.d, code.e, code.f))
        return next((r for r in short if r.obis is not None and r.obis.a is None and r.obis.b is None), None)

    def select_or_derive(self, data: MeterData) -> Optional[Reading]:
        """select(), else a register that follows exactly from sent ones (net power = import - export)."""
        reading = self.select(data)
        if reading is None and self.obis is not None and not self.legacy:
            reading = derive(data, self.obis)
        return reading


def _obis_parts(value: Any) -> List[Any]:
    """The entries of a ``dlms_obis_code`` value (string, ``a | b`` or list), stripped; BindingError if empty."""
    parts: List[Any]
    if isinstance(value, (list, tuple)):
        parts = list(value)
    elif isinstance(value, str) and "|" in value:
        parts = [p.strip() for p in value.split("|")]
    elif isinstance(value, str) and value.strip().startswith("[") and value.strip().endswith("]"):
        # the list written as text (.conf, or a quoted YAML value): SmartHomeNG's string_to_list form
        parts = [p.strip().strip("'\"") for p in value.strip()[1:-1].split(",")]
    elif isinstance(value, str):
        parts = [value]
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        raise BindingError(f"dlms_obis_code {value!r} was read as a number: write the code in quotes, e.g. '1.8.0'")
    else:
        raise BindingError(f"dlms_obis_code {value!r} is empty or of the wrong type: "
                           "write a code like '1-0:1.8.0' (in quotes when it has only one dot)")
    parts = [p.strip() if isinstance(p, str) else p for p in parts]
    while parts and parts[-1] == "":
        parts.pop()
    if not parts or parts[0] in ("", None):
        raise BindingError("dlms_obis_code is empty: write a code like '1-0:1.8.0' "
                           "(quote codes with one dot, e.g. '1.8', or YAML reads them as numbers)")
    return parts


def parse_obis_attribute(value: Any, unit: Any = None, scale: Any = None) -> ObisBinding:
    """Turn a ``dlms_obis_code`` value (any accepted form) into a binding or raise BindingError.

    Accepted: ``'1.8.0'``, ``'1-0:1.8.0*255'``, ``'1-0:1.8.0.255'``, ``['1.8.0']``, the 1.9.5 list
    ``['1-1:1.8.1', 0, 'Value', 'num']`` (from YAML, or ``a | b | c | d`` from ``.conf``) and
    shorter lists (index, key and conversion have the 1.9.5 defaults 0, Value, none).
    """
    parts = _obis_parts(value)
    if len(parts) > 4:
        raise BindingError(f"dlms_obis_code has {len(parts)} entries: the list form is "
                           "[code, index, Value|Unit, conversion]")
    code = parts[0]
    if not isinstance(code, str):
        raise BindingError(f"dlms_obis_code {code!r} is not text: write the code in quotes, e.g. '1.8.0'")
    obis = Obis.try_parse(code)
    legacy = len(parts) > 1
    index = 0
    key = "Value"
    conversion = ""
    if len(parts) > 1:
        raw_index = parts[1]
        try:  # (1 and '1' and 1.0; not 1.5, and not inf or nan, which int() refuses with OverflowError)
            index = int(raw_index)
            if isinstance(raw_index, float) and raw_index != index:
                raise ValueError(raw_index)
        except (TypeError, ValueError, OverflowError):
            raise BindingError(f"dlms_obis_code index {raw_index!r} is not a whole number: "
                               "use 0 for the first value group, 1 for the second ...") from None
        if index < 0:
            raise BindingError(f"dlms_obis_code index {index} is negative: use 0 for the first value group")
    if len(parts) > 2:
        raw_key = str(parts[2]).strip().lower()
        if raw_key not in ("value", "unit"):
            raise BindingError(f"dlms_obis_code third entry {parts[2]!r} is neither Value nor Unit: "
                               "write Value for the number or Unit for its unit")
        key = raw_key.capitalize()
    if len(parts) > 3:
        raw_conv = str(parts[3]).strip()
        conversion = _CONVERSION_OF.get(raw_conv.lower(), "") if raw_conv else ""
        if raw_conv and not conversion:
            raise BindingError(f"dlms_obis_code conversion {raw_conv!r} is unknown: "
                               "use one of " + ", ".join(CONVERSIONS))
    target_unit = None
    if unit not in (None, "") and not (isinstance(unit, list) and not unit):
        target_unit = str(unit).strip()
        if parse_unit(target_unit) is None:
            raise BindingError(f"dlms_unit {target_unit!r} is not a unit this plugin can convert to: "
                               "use e.g. Wh, kWh, W, kW, V, A, var, varh, VA, VAh or m3")
        if legacy:
            raise BindingError("dlms_unit works with a plain code only: drop the list form or dlms_unit")
    factor = None
    if scale not in (None, ""):
        try:
            factor = Decimal(str(scale).strip().replace(",", "."))
        except InvalidOperation:
            raise BindingError(f"dlms_scale {scale!r} is not a number: write e.g. 1000 or 0.001") from None
        if not factor.is_finite():
            raise BindingError(f"dlms_scale {scale!r} is not a finite number: write e.g. 1000 or 0.001")
        if legacy:
            raise BindingError("dlms_scale works with a plain code only: drop the list form or dlms_scale")
    return ObisBinding(text=code, obis=obis, index=index, key=key, conversion=conversion,
                       legacy=legacy, unit=target_unit, scale=factor)


def parse_status_attribute(value: Any) -> str:
    """``dlms_status`` names one of STATUS_KEYS or a statistics counter (e.g. checksum_errors)."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    key = str(value).strip().lower() if value is not None else ""
    if key in ("", "yes", "true", "1", "on"):
        return "summary"
    if not re.fullmatch(r"[a-z_]{2,40}", key):
        raise BindingError(f"dlms_status {value!r} is unknown: use one of " + ", ".join(STATUS_KEYS)
                           + " or a counter such as checksum_errors, tag_failures, timeouts")
    return key


# --------------------------------------------------------------------------- values
def value_group(reading: Reading, index: int) -> Tuple[Any, Optional[str]]:
    """Value group ``index`` of a reading as transmitted: 0 is the first ``(value*unit)``."""
    if index == 0:
        if not isinstance(reading.raw, str):
            return reading.value, reading.unit
        # the value may come from a later group (a DSMR set that starts with its time, datablock.
        # reading_value): then the reading's unit is not this group's
        number = reading.numeric()
        return reading.raw, reading.unit if number is None or to_number(reading.raw) == number else None
    extra = reading.extra
    if index - 1 < len(extra):
        return extra[index - 1]
    raise ValueProblem(f"{reading.code} has {1 + len(extra)} value group(s), there is no index {index}: "
                       f"use an index from 0 to {len(extra)}")


def legacy_value(binding: ObisBinding, reading: Reading) -> Any:
    """The dlms 1.9.5 list form: value group, value or unit, then its conversion."""
    raw, unit = value_group(reading, binding.index)
    if binding.key == "Unit":
        if not unit:
            raise ValueProblem(f"{reading.code} value group {binding.index} has no unit: "
                               "use Value, or another index")
        return unit
    return convert_legacy(raw, binding.conversion, reading.code)


def convert_legacy(raw: Any, conversion: str, code: str = "") -> Any:
    """Convert one transmitted value the way dlms 1.9.5 did; raise ValueProblem instead of None."""
    if not isinstance(raw, str):
        raw = plain_value(raw)
        if conversion in ("", "str"):
            return raw
        raw = format_value(raw)
    text = raw.strip()
    where = f" of {code}" if code else ""
    if conversion in ("", "str"):
        return raw
    if conversion in ("float", "num", "int"):
        whole = _whole_number(text)
        if conversion in ("int", "num") and whole is not None:
            return whole
        if conversion == "int":
            raise ValueProblem(f"value {text!r}{where} is not a whole number: "
                               "use conversion num or float")
        if not _DECIMAL_TEXT.fullmatch(text):
            raise ValueProblem(f"value {text!r}{where} is not a number: use conversion str")
        number = float(text.replace(",", "."))
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueProblem(f"value {text!r}{where} is not a finite number: use conversion str")
        return number
    digits = {"Z6": 6, "Z4": 4, "D6": 6, "ZST10": 10, "ZST12": 12}[conversion]
    if len(text) != digits or not _DIGITS.fullmatch(text):
        raise ValueProblem(f"value {text!r}{where} is not {digits} digits as {conversion} needs: "
                           "check the index, or use conversion str")
    n = [int(text[i:i + 2]) for i in range(0, digits, 2)]
    try:
        if conversion == "Z6":
            return _dt.time(n[0], n[1], n[2])
        if conversion == "Z4":
            return _dt.time(n[0], n[1])
        if conversion == "D6":
            return _dt.date(2000 + n[0], n[1], n[2])
        if conversion == "ZST10":
            return _dt.datetime(2000 + n[0], n[1], n[2], n[3], n[4])
        return _dt.datetime(2000 + n[0], n[1], n[2], n[3], n[4], n[5])
    except ValueError:
        raise ValueProblem(f"value {text!r}{where} is no valid {conversion} date/time: "
                           "check the index, or use conversion str") from None


def plain_value(value: Any) -> Any:
    """Python value for SmartHomeNG: Decimal → int or float (the core's num cast would truncate)."""
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueProblem(f"value {value} is not a finite number")
        if value == value.to_integral_value() and abs(value) < Decimal(10) ** 15:
            return int(value)
        return float(value)
    return value


def format_value(value: Any) -> str:
    """Text form of a value: no exponent for numbers, ISO for times, upper-case hex for bytes."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex().upper()  # as the web page's meter id, the CLI and JSON write them
    if value is None:
        return ""
    return str(value)


def physical_value(binding: ObisBinding, reading: Reading) -> Any:
    """A plain code: the physical value, with optional unit conversion and scaling."""
    if reading.value is None:
        held = dict(reading.details).get(HELD_DETAIL)
        if held:
            raise ValueProblem(f"{reading.code} is {held}")  # (the detail says why and for how long)
        raise ValueProblem(f"{reading.code} has no physical value (raw {format_value(reading.raw)}): the scaler "
                           "of this value is unknown for this meter's layout; add it in a profile (see dump)")
    if binding.unit is None and binding.scale is None:
        return reading.value
    number = reading.numeric()
    if number is None:
        raise ValueProblem(f"{reading.code} value {format_value(reading.value)!r} is not a number, "
                           "so dlms_unit/dlms_scale cannot apply: remove them for this item")
    if binding.unit is not None:
        if not reading.unit:
            raise ValueProblem(f"{reading.code} is sent without a unit, so it cannot be converted to "
                               f"{binding.unit}: use dlms_scale instead of dlms_unit")
        number = convert_unit(number, reading.unit, binding.unit)
    if binding.scale is not None:
        number = number * binding.scale
    return number


def item_value(binding: ObisBinding, reading: Reading, item_type: str) -> Any:
    """What the item of ``item_type`` gets from ``reading``; raises ValueProblem (never a decimal error)."""
    try:
        if binding.legacy:
            value = legacy_value(binding, reading)
        elif item_type == "str" and binding.unit is None and binding.scale is None \
                and isinstance(reading.raw, str):
            value = reading.raw.strip()  # as transmitted: a serial number keeps its leading zeros
        else:
            value = physical_value(binding, reading)
    except ArithmeticError as exc:
        raise ValueProblem(f"value of {reading.code} cannot be converted ({type(exc).__name__})") from None
    return fit_to_type(value, item_type, reading.code, binding.unit or reading.unit)


#: longest value (digits or characters) an item gets: no meter register has more, and a longer
#: one (noise, a hostile line) must not cost memory or time in SmartHomeNG
MAX_VALUE_CHARS = 1024
_FLOAT_MAX = Decimal("1.7976931348623157e308")


def fit_to_type(value: Any, item_type: str, code: str = "", unit: Optional[str] = None) -> Any:
    """Make ``value`` something SmartHomeNG stores unchanged in an item of ``item_type``.

    Raises ValueProblem when the item type cannot hold it (the core would only log a warning
    and the status would wrongly look fine).
    """
    where = f" of {code}" if code else ""
    try:
        return _fit(value, item_type, where, code, unit)
    except ArithmeticError as exc:  # decimal.Overflow/InvalidOperation: never out of _apply
        raise ValueProblem(f"value{where} cannot be converted ({type(exc).__name__})") from None


def _check_size(value: Any, where: str) -> None:
    size = len(value) if isinstance(value, (str, bytes, bytearray)) else \
        len(value.as_tuple().digits) if isinstance(value, Decimal) and value.is_finite() else 0
    if size > MAX_VALUE_CHARS:
        raise ValueProblem(f"value{where} has {size} digits or characters (at most {MAX_VALUE_CHARS}): "
                           "no meter sends such a value; the line is noisy or the value is not a reading")


def _fit(value: Any, item_type: str, where: str, code: str, unit: Optional[str]) -> Any:
    _check_size(value, where)
    fit = _FITS.get(item_type)
    if fit is None:  # foo (and anything else): the Python value, numbers as int/float
        return plain_value(value)
    return fit(value, where, code, unit)


def _fit_num(value: Any, where: str, _code: str, _unit: Optional[str]) -> Any:
    if isinstance(value, Decimal) and value.is_finite() and abs(value) > _FLOAT_MAX:
        raise ValueProblem(f"value{where} is too large for a num item")
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (Decimal, int, float)):
        v = plain_value(value)
        if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
            raise ValueProblem(f"value{where} is not a finite number")
        return v
    if isinstance(value, str):
        return _num_of_text(value, where)
    raise ValueProblem(f"value {format_value(value)!r}{where} is a {type(value).__name__}, not a number: "
                       "use a foo or str item")


def _num_of_text(value: str, where: str) -> Any:
    text = value.strip()
    whole = _whole_number(text)
    if whole is not None:
        return whole
    if not _DECIMAL_TEXT.fullmatch(text):
        raise ValueProblem(f"value {value!r}{where} is not a number for a num item: "
                           "use a str item, or check the index of the list form")
    number = float(text.replace(",", "."))  # D0 meters may send a decimal comma (000007,4)
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueProblem(f"value {value!r}{where} is not a finite number")
    return number


def _fit_str(value: Any, _where: str, _code: str, _unit: Optional[str]) -> Any:
    if isinstance(value, Decimal) and value.is_finite() and abs(value) >= Decimal(10) ** 15:
        return format_value(value)  # exactly as a number, never as a rounded float or 'inf'
    return format_value(plain_value(value) if isinstance(value, Decimal) else value) \
        if not isinstance(value, str) else value


def _fit_bool(value: Any, where: str, _code: str, _unit: Optional[str]) -> Any:
    v = plain_value(value) if isinstance(value, Decimal) else value
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)) and v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.strip().lower() in ("0", "1", "true", "false", "on", "off", "yes", "no"):
        return v.strip().lower() in ("1", "true", "on", "yes")
    raise ValueProblem(f"value {format_value(v)!r}{where} is no 0/1 for a bool item: use a num item")


def _fit_scene(value: Any, where: str, _code: str, _unit: Optional[str]) -> Any:
    v = plain_value(value)
    if isinstance(v, int) and 0 <= v < 256:
        return v
    raise ValueProblem(f"value {format_value(v)!r}{where} is no scene number (0..255)")


#: an item type -> how a reading's value becomes that type's value (SmartHomeNG's item types;
#: any other type, foo included, takes the plain Python value)
_FITS: Dict[str, Callable[[Any, str, str, Optional[str]], Any]] = {
    "num": _fit_num,
    "str": _fit_str,
    "bool": _fit_bool,
    "list": lambda value, _where, _code, unit: [plain_value(value), unit],
    "dict": lambda value, _where, code, unit: {"value": plain_value(value), "unit": unit, "code": code},
    "scene": _fit_scene,
}


# --------------------------------------------------------------------------- units
def parse_unit(unit: str) -> Optional[Tuple[str, Decimal]]:
    """``'kWh'`` → ``('Wh', 1000)``; None for units we do not convert (the core's one unit table)."""
    return _units.parse_unit(unit)


def convert_unit(value: Decimal, from_unit: str, to_unit: str) -> Decimal:
    """The core's one conversion, with the plugin's ValueProblem (cause and fix for the item)."""
    try:
        return _units.convert(value, from_unit, to_unit)
    except _units.UnitMismatch:
        raise ValueProblem(f"cannot convert {from_unit} to {to_unit}: the meter sends {from_unit}, "
                           "set dlms_unit to a unit of the same quantity") from None
    except ArithmeticError:  # decimal.Overflow of a value no meter sends (2 MB of digits)
        raise ValueProblem(f"value in {from_unit} cannot be converted to {to_unit}: it is out of range") from None


# --------------------------------------------------------------------------- summaries
#: codes for the chart and the Victron-like summary: (key, candidate patterns, target unit)
_POWER_SUM = "16.7.0"


def grid_summary(data: MeterData) -> Dict[str, float]:
    """Net power (W) and import/export energy (Wh) where the meter sends them with a unit.

    Net power is 16.7.0 as the pipeline has it: sent by the meter, or derived once in the core
    (``derive``: import minus export, only when both are known). No rule of its own here, so the
    chart shows what the items and D-Bus show. Values without a unit are left out: guessing kW
    vs W would draw a curve off by 1000.
    """
    def get(code: str, unit: str) -> Optional[Decimal]:
        pat = Obis.parse(code)
        for r in data.readings:
            if r.obis is None or not pat.matches(r.obis) or r.obis.a not in (None, 1):
                continue
            n = r.numeric()
            if n is None or not r.unit:
                return None
            try:
                converted = convert_unit(n, r.unit, unit)
            except ValueProblem:
                return None
            return converted if converted.is_finite() and abs(converted) <= _FLOAT_MAX else None
        return None

    out: Dict[str, float] = {}
    for key, code, unit in (("power", _POWER_SUM, "W"), ("import", "1.8.0", "Wh"), ("export", "2.8.0", "Wh")):
        value = get(code, unit)
        if value is not None:
            out[key] = float(value)
    return out


# --------------------------------------------------------------------------- discovery
@dataclass
class Discovered:
    code: str
    normalized: str
    value: str
    unit: str
    name: str
    items: List[str]
    extra: List[str]


def discover(data: MeterData, users: Dict[str, List[ObisBinding]], language: str = "de") -> List[Discovered]:
    """Every code of a verified snapshot with value, unit, meaning and the items that use it.

    ``users`` maps item path → binding text; an item is listed for the first reading its
    binding selects, exactly as the plugin writes it.
    """
    rows: List[Discovered] = []
    for reading in data.readings:
        # what the maker says it is (signed net power, a fuse threshold), else the code's name
        # where the unit is that quantity's: a heat meter's 6.8 in GJ is no reactive energy
        name = reading.label(language) or ""
        rows.append(Discovered(
            code=reading.code,
            normalized=reading.obis.normalized() or str(reading.obis) if reading.obis is not None else reading.code,
            value=format_value(plain_value(reading.value) if isinstance(reading.value, Decimal) else reading.value)
            if not isinstance(reading.raw, str) else reading.raw,
            unit=reading.unit or "",
            name=name,
            items=[],
            extra=[f"{v}{'*' + u if u else ''}" for v, u in reading.extra],
        ))
    for path, binding_list in users.items():
        for binding in binding_list:
            chosen = binding.select(data)
            for row, reading in zip(rows, data.readings):
                if reading is chosen:
                    row.items.append(path)
                    break
    return rows


def time_value(epoch: Optional[float], item_type: str, tz: Optional[_dt.tzinfo] = None) -> Any:
    """A point in time for a status item: epoch for num, ISO text for str, datetime for foo."""
    if epoch is None:
        if item_type == "num":
            raise NotYet("no such moment yet")
        return {"bool": False}.get(item_type, "")
    if item_type == "num":
        return round(epoch, 3)
    moment = _dt.datetime.fromtimestamp(epoch, tz) if tz is not None else \
        _dt.datetime.fromtimestamp(epoch).astimezone()
    if item_type == "str":
        return moment.isoformat(timespec="seconds")
    return moment


def downsample(points: Sequence[Tuple[float, Any]], limit: int) -> List[Tuple[float, Any]]:
    """At most ``limit`` points, evenly picked, keeping the newest (for the web chart)."""
    n = len(points)
    if n <= limit or limit <= 0:
        return list(points)
    step = n / float(limit)
    picked = [points[int(i * step)] for i in range(limit - 1)]
    picked.append(points[-1])
    return picked


class ChartHistory(Output):
    """The web interface's chart as a pipeline output: net power and energies of the last hour.

    It gets every verified snapshot (no rate limit: the chart is downsampled when drawn), so the
    chart shows what D-Bus shows, not only what the items were allowed to take.
    """

    name = "history"

    def __init__(self, seconds: float = 3600.0, maxlen: int = 4000) -> None:
        self.seconds = seconds
        self._points: Deque[Tuple[float, Dict[str, float]]] = deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def publish(self, data: MeterData) -> None:
        summary = grid_summary(data)
        if not summary:
            return
        cutoff = time.time() - self.seconds
        with self._lock:
            self._points.append((data.received, summary))
            while self._points and self._points[0][0] < cutoff:
                self._points.popleft()

    def points(self) -> List[Tuple[float, Dict[str, float]]]:
        with self._lock:
            return list(self._points)


#: texts the web interface shows per item (ValueProblem messages, the readout length), as
#: templates: the web interface matches a text against them and shows it translated from
#: locale.yaml (the log keeps the English text). A text that matches none stays as it is.
PROBLEM_TEMPLATES = (
    "code {code} is not in the data of this meter: see the list of discovered codes in the web interface "
    "or the debug log",
    "{code} has {groups} value group(s), there is no index {index}: use an index from 0 to {last}",
    "{code} value group {index} has no unit: use Value, or another index",
    "value {value} of {code} is not a whole number: use conversion num or float",
    "value {value} of {code} is not a number: use conversion str",
    "value {value} of {code} is not a finite number: use conversion str",
    "value {value} of {code} is not {digits} digits as {conversion} needs: check the index, or use conversion str",
    "value {value} of {code} is no valid {conversion} date/time: check the index, or use conversion str",
    "{code} has no physical value (raw {raw}): the scaler of this value is unknown for this meter's layout; "
    "add it in a profile (see dump)",
    "{code} value {value} is not a number, so dlms_unit/dlms_scale cannot apply: remove them for this item",
    "{code} is sent without a unit, so it cannot be converted to {unit}: use dlms_scale instead of dlms_unit",
    "{code} is held back: below the last reading of this counter (damage that passed the checks, or a swapped "
    "meter)",
    "{code} is held back: further above the last reading of this counter than any supply draws in the time since "
    "(damage that passed the checks)",
    "value {value} of {code} is not a number for a num item: use a str item, or check the index of the list form",
    "value {value} of {code} is a {kind}, not a number: use a foo or str item",
    "value {value} of {code} is no 0/1 for a bool item: use a num item",
    "value {value} of {code} is no scene number (0..255)",
    "cannot convert {src} to {dst}: the meter sends {src}, set dlms_unit to a unit of the same quantity",
    "{n} characters",
    # how a D0 meter's readouts are checked (D0Reader.checksum_state, the status line 'checksum')
    "{check} required (the meter sends one)",
    "unchecked (the meter has sent no checksum)",
    "unchecked (use_checksum off)",
    "not known yet",
)


def _template_pattern(template: str) -> "re.Pattern[str]":
    seen: set = set()

    def group(match: "re.Match[str]") -> str:
        name = match.group(1)
        if name in seen:
            return f"(?P={name})"
        seen.add(name)
        return f"(?P<{name}>.+?)"

    return re.compile(re.sub(r"\\\{(\w+)\\\}", group, re.escape(template)), re.S)


_TEMPLATE_PATTERNS = [(t, _template_pattern(t)) for t in PROBLEM_TEMPLATES]


def translate_problem(text: str, translate: Callable[..., str]) -> str:
    """``text`` in the web interface's language: ``translate(template, vars)`` for a known template."""
    for template, pattern in _TEMPLATE_PATTERNS:
        m = pattern.fullmatch(text)
        if m is not None:
            return translate(template, m.groupdict())
    return text


__all__ = [
    "CONVERSIONS", "STATUS_KEYS", "BindingError", "ValueProblem", "ObisBinding", "is_enabled",
    "parse_obis_attribute", "parse_status_attribute", "value_group", "legacy_value", "convert_legacy",
    "plain_value", "format_value", "physical_value", "item_value", "fit_to_type", "parse_unit", "convert_unit",
    "grid_summary", "Discovered", "discover", "items_snippet", "RepeatLimiter", "time_value", "downsample",
    "parse_format", "ChartHistory", "PROBLEM_TEMPLATES", "translate_problem", "format_name",
]
