"""Energy counters never go backwards in what the outputs get: one rule, before every output.

Why: a register such as 1.8.0 only grows until its meter is swapped or the register rolls over.
A lower reading is damage that passed every check of its channel: two bytes hit in one M-Bus
telegram of a push without a tag (an 8-bit sum: one such hit in 256 passes), bits of one column
of a D0 readout (its BCC is an XOR), any damage on a push-only D0 meter (it sends no checksum at
all). Home Assistant reads a drop of a ``total_increasing`` sensor as a meter reset and counts the
whole next reading as consumption; SmartHomeNG's database and charts show a dip; VRM sums the
increments. So such a reading is held back: its data set stays, without a value, and the
``held`` detail says why (items keep their value, MQTT and D-Bus publish nothing for it). It is
published once ``CONFIRM`` following readings stay below the old level and do not go backwards
among themselves (a new meter, a rollover); a reading back at or above the old level drops the
held ones. Per meter and code, compared in the unit's base (Wh, varh, VAh), so a list in kWh and
one in Wh of the same meter are one counter.

Only cumulative energy (OBIS D = 8) of electricity, not the net quantities (C = 16, 36, 56, 76:
import minus export), which fall while a plant exports.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from decimal import Decimal
from typing import Any, Dict, Hashable, List, Optional, Set, Tuple

from .model import HELD_DETAIL, LayoutMemo, MeterData, Obis, Reading, Statistics
from .units import parse_unit

log = logging.getLogger(__name__)

#: following lower readings that confirm a counter went down (a meter swap, a rollover)
CONFIRM = 3
#: net energy (import minus export): falls while exporting
_NET = frozenset((16, 36, 56, 76))
_BASES = frozenset(("Wh", "varh", "VAh"))
_ONE = Decimal(1)
HELD_TEXT = "held back: below the last reading of this counter (damage that passed the checks, or a swapped meter)"

#: a code's groups (A, B, C, D, E, F), and a counter's key: the meter id and its code
_Code = Tuple[Optional[int], ...]
_Key = Tuple[Optional[str], _Code]


def _counter_indexes(codes: Tuple[Optional[Obis], ...]) -> Tuple[Tuple[int, _Code], ...]:
    """Positions of the cumulative energy registers among a snapshot's codes, each with its code
    as a tuple (a key hashed in C: ``Obis.__hash__`` is a Python call per lookup, three per counter
    and push): the first of a code that comes twice (the one items take; a second one, an older
    value, is not judged)."""
    seen = set()
    out = []
    for i, code in enumerate(codes):
        if code is not None and code.d == 8 and code.a in (None, 1) and code.c not in _NET and code not in seen:
            seen.add(code)
            out.append((i, (code.a, code.b, code.c, code.d, code.e, code.f)))
    return tuple(out)


#: what ``CounterRule.offer`` says of a value
PASS, BACK, HOLD, CONFIRMED = "pass", "back", "hold", "confirmed"


class CounterRule:
    """The rule itself, per key (a code, a D-Bus path): the last value passed on and the lower
    ones held since. The guard below and the Victron output's D-Bus paths use it; each says why
    in its own words."""

    def __init__(self) -> None:
        self.last: Dict[Hashable, Any] = {}
        self.held: Dict[Hashable, List[Any]] = {}

    def offer(self, key: Hashable, value: Any) -> Tuple[str, List[Any]]:
        """PASS; BACK (passes, and the lower values held before are dropped: returned); HOLD (the
        values held now, the first one alone the first time); CONFIRMED (passes: the held values
        that confirmed the new level, this one last)."""
        last = self.last.get(key)
        if last is None or value >= last:
            dropped = self.held.pop(key, [])
            self.last[key] = value
            return (BACK if dropped else PASS), dropped
        held = self.held.setdefault(key, [])
        if held and value < held[-1]:
            held.clear()  # not even rising among themselves: start over
        held.append(value)
        if len(held) > CONFIRM:
            del self.held[key]
            self.last[key] = value
            return CONFIRMED, held
        return HOLD, held


class CounterGuard:
    """Holds back a counter reading below the last one passed on (module docstring); one per source."""

    def __init__(self, stats: Optional[Statistics] = None) -> None:
        self.stats = stats
        self._rule = CounterRule()
        self._layouts = LayoutMemo(16)
        self._units: Dict[Optional[str], Optional[Decimal]] = {}
        self._warned: Set[_Key] = set()

    def apply(self, data: MeterData) -> MeterData:
        """``data``, with each counter reading that went backwards held back."""
        readings = data.readings
        held: List[int] = []
        for i, code in self._layouts.get(readings, _counter_indexes):
            reading = readings[i]
            value = reading.value
            if reading.derived or not isinstance(value, Decimal) or not value.is_finite():
                continue
            scale = self._scale(reading.unit)
            if scale is None:
                continue
            base = value if scale is _ONE else value * scale
            if not self._passes((data.meter_id, code), base, scale, reading):
                held.append(i)
        if not held:
            return data
        out = list(readings)
        for i in held:
            out[i] = replace(readings[i], value=None, details=readings[i].details + ((HELD_DETAIL, HELD_TEXT),))
        if self.stats is not None:
            self.stats.count("counter_holds", len(held))
        return data.with_readings(tuple(out))

    def _scale(self, unit: Optional[str]) -> Optional[Decimal]:
        """The factor to the unit's base when it is an energy unit, else None (cached: a meter has a few)."""
        if unit in self._units:
            return self._units[unit]
        parsed = parse_unit(unit) if unit else None
        scale = parsed[1] if parsed is not None and parsed[0] in _BASES else None
        if scale is not None and scale == 1:
            scale = _ONE  # (Wh: no multiplication per push)
        if len(self._units) < 64:
            self._units[unit] = scale
        return scale

    def _passes(self, key: _Key, value: Decimal, scale: Decimal, reading: Reading) -> bool:
        """Record ``value`` (in the unit's base); False when it is to be held back."""
        last: Decimal = self._rule.last.get(key, value)  # (HOLD: there is one)
        verdict, held = self._rule.offer(key, value)
        if verdict == BACK:
            log.debug("%s is back at %s; the lower reading(s) before were discarded", reading.code, reading.value)
        elif verdict == CONFIRMED:
            log.warning("%s went down and %d following readings confirmed it (meter swapped or register "
                        "rolled over?): passing on %s", reading.code, CONFIRM, reading.value)
        elif verdict == HOLD and len(held) == 1:
            log.log(logging.DEBUG if key in self._warned else logging.WARNING,
                    "%s reads %s %s, below its last reading %s: held back until the next readings confirm it "
                    "(damage that passed the checks, or a swapped meter)", reading.code, reading.value,
                    reading.unit, last / scale)
            if len(self._warned) < 256:
                self._warned.add(key)  # (the next ones at debug level: the statistics count them all)
        return verdict != HOLD
