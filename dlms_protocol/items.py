"""The one SmartHomeNG ``items.yaml`` generator: the plugin's web interface and debug log, the
``read``/``parse --items`` CLI and ``detect`` give the same snippet for the same data.

Why here: the snippet is knowledge about codes (names, which ones are no quantity, units), not
about SmartHomeNG's runtime, so it lives in the core and every front end prints it. Item names
follow the OBIS code (``obis_1_8_0``), so they stay stable whatever language the comment is in;
the meaning and unit go into a comment. Identifiers, clocks and status words (value group C 0,
96-99) are ``str`` items: digits, but no quantity (a num item would drop leading zeros). Further
value groups (the time of a maximum demand) are offered as child items in the dlms 1.9.5 list form.
No ``visu_acl``: that attribute belongs to the smartvisu plugin (a NOTICE for every item without it).
"""
from __future__ import annotations

import datetime as _dt
import re
from typing import List, Optional, Tuple

from .model import MeterData, Reading

_SAFE = re.compile(r"[^a-z0-9_]+")
#: value group C of abstract objects (IEC 62056-61): identifiers, clock, status, errors, profiles
_ABSTRACT = (0, 96, 97, 98, 99)


def _item_name(reading: Reading, taken: set) -> str:
    if reading.obis is not None:
        base = "obis_" + reading.obis.short().replace(".", "_").replace("*", "_")
    else:
        base = "code_" + reading.code
    base = _SAFE.sub("_", base.lower()).strip("_") or "code"
    name = base
    n = 2
    while name in taken:
        name = f"{base}_{n}"
        n += 1
    taken.add(name)
    return name


def items_snippet(data: MeterData, instance: str = "", root: str = "meter", language: str = "de",
                  with_status: bool = True) -> str:
    """A ready-to-paste ``items/*.yaml`` block for every code of a verified snapshot."""
    suffix = f"@{instance}" if instance else ""
    lines = [f"{root}:"]
    if with_status:
        lines += [
            "    readout:",
            "        type: str",
            f"        dlms_obis_readout{suffix}: 'yes'",
            "    connected:",
            "        type: bool",
            f"        dlms_status{suffix}: connected",
            "    last_error:",
            "        type: str",
            f"        dlms_status{suffix}: last_error",
        ]
    taken: set = set()
    seen_codes: set = set()
    for reading in data.readings:
        code = (reading.obis.normalized() if reading.obis is not None else None) or reading.code
        if code in seen_codes:
            continue
        seen_codes.add(code)
        name = _item_name(reading, taken)
        if reading.obis is not None and reading.obis.c in _ABSTRACT:
            typ = "str"  # serial numbers, times, status words: digits, but no quantity
        elif reading.numeric() is not None or reading.held:
            typ = "num"  # (a value held back for now is a number whenever it comes: a held counter, a garbled power)
        elif isinstance(reading.value, (_dt.datetime, _dt.date, _dt.time)):
            typ = "foo"
        else:
            typ = "str"
        meaning = reading.label(language)
        comment = "  # " + meaning + (f" [{reading.unit}]" if reading.unit else "") if meaning else \
            (f"  # [{reading.unit}]" if reading.unit else "")
        lines += [
            f"    {name}:{comment}",
            f"        type: {typ}",
            f"        dlms_obis_code{suffix}: '{code}'",
        ]
        for index, (value, unit) in enumerate(reading.extra, start=1):
            lines += _extra_group_lines(code, index, value, unit, suffix)
    return "\n".join(lines) + "\n"


_DIGITS = re.compile(r"[0-9]+")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:[.,][0-9]*)?|[.,][0-9]+)")


def _valid_stamp(text: str) -> bool:
    """YYMMDDhhmm[ss] that is a real moment (a 10-digit counter reading is not)."""
    n = [int(text[i:i + 2]) for i in range(0, len(text), 2)]
    try:
        _dt.datetime(2000 + n[0], n[1], n[2], n[3], n[4], n[5] if len(n) > 5 else 0)
    except ValueError:
        return False
    return True


def extra_group_form(value: object, unit: Optional[str]) -> Tuple[str, str]:
    """(item type, dlms 1.9.5 conversion) for a further value group, e.g. the time of a maximum demand.

    Only a conversion that works on this value is offered: ten or twelve digits that are a real
    YYMMDDhhmm[ss] become ZST10/ZST12 (foo item), a number with a unit (or a decimal point)
    becomes num, anything else stays str.
    """
    text = str(value).strip()
    for conversion, size in (("ZST12", 12), ("ZST10", 10)):
        if len(text) == size and _DIGITS.fullmatch(text) and _valid_stamp(text):
            return "foo", conversion
    if _NUMBER.fullmatch(text) and (unit or _DIGITS.fullmatch(text) is None):
        return "num", "num"
    return "str", "str"


def _extra_group_lines(code: str, index: int, value: object, unit: Optional[str], suffix: str) -> List[str]:
    """Child item for value group ``index`` (1 = the second bracket) in the dlms 1.9.5 list form."""
    typ, conversion = extra_group_form(value, unit)
    shown = f"{value}" + (f" {unit}" if unit else "")
    ordinal = {1: "second", 2: "third", 3: "fourth"}.get(index, f"{index + 1}th")
    return [
        f"        index_{index}:  # {ordinal} value group ({shown})",
        f"            type: {typ}",
        f"            dlms_obis_code{suffix}: ['{code}', {index}, 'Value', '{conversion}']",
    ]


__all__ = ["items_snippet", "extra_group_form"]
