"""The one SmartHomeNG ``items.yaml`` generator: the plugin's web interface and debug log, the
``read``/``parse --items`` CLI and ``detect`` give the same snippet for the same data.

Why here: the snippet is knowledge about codes (names, which ones are no quantity, units), not
about SmartHomeNG's runtime, so it lives in the core and every front end prints it. Item names
follow the OBIS code (``obis_1_8_0``), so they stay stable whatever language the comment is in;
the meaning and unit go into a comment. Identifiers, clocks and status words (value group C 0,
96-99) are ``str`` items: digits, but no quantity (a num item would drop leading zeros).
"""
from __future__ import annotations

import datetime as _dt
import re

from .model import MeterData, Reading
from .obis import describe

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
            "        visu_acl: ro",
            "    last_error:",
            "        type: str",
            f"        dlms_status{suffix}: last_error",
            "        visu_acl: ro",
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
        elif reading.numeric() is not None:
            typ = "num"
        elif isinstance(reading.value, (_dt.datetime, _dt.date, _dt.time)):
            typ = "foo"
        else:
            typ = "str"
        meaning = describe(reading.obis, language)[0] if reading.obis is not None else None
        comment = "  # " + meaning + (f" [{reading.unit}]" if reading.unit else "") if meaning else \
            (f"  # [{reading.unit}]" if reading.unit else "")
        lines += [
            f"    {name}:{comment}",
            f"        type: {typ}",
            f"        dlms_obis_code{suffix}: '{code}'",
            "        visu_acl: ro",
        ]
    return "\n".join(lines) + "\n"


__all__ = ["items_snippet"]
