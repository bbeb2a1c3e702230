"""One unit table and one conversion function for every part (items, chart, derived registers).

Why one: unit prefixes were converted in four places with four tables, so the same reading could
be converted differently by two outputs. A unit is a base (``W``, ``Wh``, ``var``, ``V`` ...) and
a decimal prefix; conversion only between the same base, exactly (Decimal), never guessed: a
unit we do not know is no unit to convert. DLMS unit *codes* (the numbers in a scaler_unit) are
``dlms/units.py``; the Victron mapping keeps the per-path units Venus OS wants (victron_mapping.json).
"""
from __future__ import annotations

from decimal import Decimal
from typing import Optional, Tuple

#: base units and the prefixes we convert between (longest names first for suffix matching)
BASES = ("varh", "VAh", "Wh", "var", "VA", "Hz", "m3", "W", "V", "A", "J")  # (J: heat meters' GJ, MJ)
PREFIXES = {"": Decimal(1), "k": Decimal(1000), "M": Decimal(1000000), "G": Decimal(1000000000),
            "m": Decimal("0.001")}


class UnitMismatch(ValueError):
    """The two units are no prefixes of the same base (or one is unknown)."""


def parse_unit(unit: str) -> Optional[Tuple[str, Decimal]]:
    """``'kWh'`` → ``('Wh', 1000)``; None for units we do not convert (also ``'KWH'`` of old meters)."""
    text = unit.strip().replace("³", "3")
    for base in BASES:
        if text.endswith(base) and text[: -len(base)] in PREFIXES:
            return base, PREFIXES[text[: -len(base)]]
    upper = text.upper()
    for base in BASES:
        if upper.endswith(base.upper()):
            prefix = text[: len(text) - len(base)]
            if prefix in ("k", "K"):
                return base, PREFIXES["k"]
            if prefix == "":
                return base, PREFIXES[""]
    return None


def unit_from_bytes(raw: bytes) -> str:
    """The text of a unit a meter sent with bytes above 0x7F (a DSMR P1 port is 8N1): UTF-8 when the
    bytes are valid UTF-8 (``m\\xc2\\xb3``), else Latin-1 (``m\\xb3``, ``\\xb0C``). Why: either way it must be
    the one spelling the rest uses, ``m³`` (the ``m3`` base of ``parse_unit``) and ``°C`` (the DLMS
    symbol of unit code 9), never the mojibake ``mÂ³`` that no table knows."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")
    return text if text.isprintable() else raw.decode("latin-1")


def same_quantity(unit: str, other: str) -> Optional[bool]:
    """Do two units measure the same quantity (one base, any prefix: kWh and Wh, not Wh and varh)?
    None when either is no unit of the table (then nothing can be said)."""
    a, b = parse_unit(unit), parse_unit(other)
    if a is None or b is None:
        return None
    return a[0] == b[0]


def factor(from_unit: str, to_unit: str) -> Decimal:
    """The exact factor from one unit to another of the same base; UnitMismatch otherwise."""
    src, dst = parse_unit(from_unit), parse_unit(to_unit)
    if src is None or dst is None or src[0] != dst[0]:
        raise UnitMismatch(f"cannot convert {from_unit!r} to {to_unit!r}")
    return src[1] / dst[1]


def convert(value: Decimal, from_unit: str, to_unit: str) -> Decimal:
    """``value`` in ``from_unit`` expressed in ``to_unit`` (exact); UnitMismatch for other quantities."""
    return value * factor(from_unit, to_unit)


__all__ = ["BASES", "PREFIXES", "UnitMismatch", "parse_unit", "unit_from_bytes", "same_quantity", "factor", "convert"]
