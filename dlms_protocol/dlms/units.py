"""DLMS unit codes (the ``unit`` of a register's scaler_unit) as symbols, from data/units.json.

Symbols are the SI spellings sinks expect (``W``, ``Wh``, ``varh``, ``A``, ``V``, ``Hz``);
"count" (255), "other" (254), 0 and undefined codes have no symbol, so such a reading has
``unit=None`` rather than an invented one.
"""
from __future__ import annotations

import json
import os
from functools import lru_cache
from typing import Dict, FrozenSet, Optional, Tuple

from .. import DATA_DIR


@lru_cache(maxsize=1)
def _table() -> Dict[int, Tuple[Optional[str], str]]:
    with open(os.path.join(DATA_DIR, "units.json"), encoding="utf-8") as f:
        raw = json.load(f)["units"]
    return {int(code): (entry[0], entry[1]) for code, entry in raw.items()}


def symbol(code: int) -> Optional[str]:
    """The symbol of a DLMS unit code, or None for count/other/undefined codes."""
    entry = _table().get(code)
    return entry[0] if entry else None


def describe(code: int) -> Optional[str]:
    """What the unit code measures (``"active power"``), None for undefined codes."""
    entry = _table().get(code)
    return entry[1] if entry else None


def code_of(unit_symbol: str) -> Optional[int]:
    """The first DLMS unit code with this symbol (``"W"`` -> 27), None if there is none."""
    for code, (sym, _) in sorted(_table().items()):
        if sym == unit_symbol:
            return code
    return None


@lru_cache(maxsize=1)
def known_symbols() -> FrozenSet[str]:
    """Every symbol a profile may use for ``unit`` (typos are configuration errors)."""
    return frozenset(sym for sym, _ in _table().values() if sym)


__all__ = ["symbol", "describe", "code_of", "known_symbols"]
