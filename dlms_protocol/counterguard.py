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

A reading far above the last one is damage too (a hit digit of a push-only D0 meter, a high bit
of an M-Bus push): passed on, it would be counted whole by Home Assistant and the next, correct
reading would then be below it. So a reading that rose by more than ``MAX_POWER_W`` could add in
the time since the last one passed (the receive times, plus one step of the reading's resolution)
is held back the same way; the next reading on the old track drops it, and ``CONFIRM`` following
readings that go on from the new level (each no faster than ``MAX_POWER_W`` from the one before)
pass it on (a meter swapped for one with a higher count, a clock that jumped back). Values of a
past billing period (F 0..254) step up at each period's end: only the fall rule applies to them.

Only cumulative energy (OBIS D = 8) of electricity, not the net quantities (C = 16, 36, 56, 76:
import minus export), which fall while a plant exports.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from decimal import Decimal
from typing import Any, Callable, Dict, Hashable, List, Optional, Set, Tuple

from .model import HELD_DETAIL, LayoutMemo, MeterData, Obis, Reading, Statistics
from .units import parse_unit

log = logging.getLogger(__name__)

#: following lower readings that confirm a counter went down (a meter swap, a rollover)
CONFIRM = 3
#: the most power (W, var, VA) a supply this reads can draw: a large commercial site's transformer,
#: far above any home, farm or workshop (direct meters end at 100 A per phase, about 70 kW). A
#: counter that rose faster was hit; one of a site drawing more is passed on a few readings late
MAX_POWER_W = 10_000_000
#: the same per second, in the base units the counters are compared in (Wh, varh, VAh)
_MAX_RISE = MAX_POWER_W / 3600
#: net energy (import minus export): falls while exporting
_NET = frozenset((16, 36, 56, 76))
_BASES = frozenset(("Wh", "varh", "VAh"))
_ONE = Decimal(1)
HELD_TEXT = "held back: below the last reading of this counter (damage that passed the checks, or a swapped meter)"
RISE_TEXT = ("held back: further above the last reading of this counter than any supply draws in the time since "
             "(damage that passed the checks)")

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
PASS, BACK, HOLD, RISE, CONFIRMED = "pass", "back", "hold", "rise", "confirmed"
#: a held-back verdict's item detail, statistic and log line (after "<code> reads <value> <unit>, ")
_HELD = {
    HOLD: (HELD_TEXT, "counter_holds", "below its last reading %s: held back until the next readings confirm it "
                                       "(damage that passed the checks, or a swapped meter)"),
    RISE: (RISE_TEXT, "counter_rises", f"further above its last reading %s than {MAX_POWER_W / 1e6:g} MW draw in the "
                                       "time since: held back until the next readings confirm it (damage that "
                                       "passed the checks)"),
}


class CounterRule:
    """The rule itself, per key (a code, a D-Bus path): the last value passed on and the ones
    held since. The guard below and the Victron output's D-Bus paths use it; each says why in its
    own words. ``max_rise``: the most a value may rise per second (``offer`` with a time); None
    (the D-Bus paths, behind the guard): any rise passes."""

    def __init__(self, max_rise: Optional[float] = None) -> None:
        self.max_rise = max_rise
        self.last: Dict[Hashable, Any] = {}
        self.since: Dict[Hashable, float] = {}  # the time of the last value passed on (offers with one)
        self.held: Dict[Hashable, List[Any]] = {}
        self.rising: Dict[Hashable, List[Tuple[Any, float]]] = {}  # values held as too far above, with their times

    def offer(self, key: Hashable, value: Any, t: Optional[float] = None,
              step: Optional[Callable[[], Any]] = None) -> Tuple[str, List[Any]]:
        """PASS; BACK (passes, and the values held before are dropped: returned); HOLD (below the
        last: the values held now, the first one alone the first time); RISE (too far above the
        last, ``t`` the time in s and ``step()`` the value's resolution: the values held so);
        CONFIRMED (passes: the held values that confirmed the new level, this one last)."""
        last = self.last.get(key)
        if last is None or value >= last:
            if (last is not None and value != last and t is not None
                    and self._too_far(value - last, t, self.since.get(key), step)):
                return self._rise(key, value, t, step)
            self._pass(key, value, t)
            if key not in self.held and key not in self.rising:  # (the usual push: nothing held)
                return PASS, []
            return BACK, self.held.pop(key, []) + [v for v, _ in self.rising.pop(key, ())]
        self.rising.pop(key, None)  # (below the old level: no new level confirmed)
        held = self.held.setdefault(key, [])
        if held and value < held[-1]:
            held.clear()  # not even rising among themselves: start over
        held.append(value)
        if len(held) > CONFIRM:
            del self.held[key]
            self._pass(key, value, t)
            return CONFIRMED, held
        return HOLD, held

    def _pass(self, key: Hashable, value: Any, t: Optional[float]) -> None:
        self.last[key] = value
        if t is not None:
            self.since[key] = t

    def _too_far(self, rise: Any, t: float, since: Optional[float], step: Optional[Callable[[], Any]]) -> bool:
        """Whether ``rise`` since the value passed at ``since`` is more than the supply can add
        by ``t`` (a clock that went back allows nothing but one step). In floats: a physical
        bound, not a value that is passed on."""
        if self.max_rise is None or since is None:
            return False
        allowed = self.max_rise * (t - since if t > since else 0.0)
        return float(rise) > allowed and (step is None or float(rise) > allowed + float(step()))

    def _rise(self, key: Hashable, value: Any, t: float, step: Optional[Callable[[], Any]]) -> Tuple[str, List[Any]]:
        self.held.pop(key, None)  # (lower values held before: no swap, the counter went on)
        rising = self.rising.setdefault(key, [])
        if rising and (value < rising[-1][0] or self._too_far(value - rising[-1][0], t, rising[-1][1], step)):
            rising.clear()  # not one track among themselves: start over
        rising.append((value, t))
        if len(rising) > CONFIRM:
            del self.rising[key]
            self._pass(key, value, t)
            return CONFIRMED, [v for v, _ in rising]
        return RISE, [v for v, _ in rising]


def _resolution(value: Any, scale: Decimal) -> Decimal:
    """One step of the last digit ``value`` was sent with, in the unit's base (12345.678 kWh: 1 Wh)."""
    exponent = value.as_tuple().exponent
    return scale.scaleb(exponent) if isinstance(exponent, int) else Decimal(0)


class CounterGuard:
    """Holds back a counter reading below the last one passed on, or further above it than a
    supply draws (module docstring); one per source."""

    def __init__(self, stats: Optional[Statistics] = None) -> None:
        self.stats = stats
        self._rule = CounterRule(_MAX_RISE)
        self._layouts = LayoutMemo(16)
        self._units: Dict[Optional[str], Optional[Decimal]] = {}
        self._warned: Set[Tuple[_Key, str]] = set()

    def apply(self, data: MeterData) -> MeterData:
        """``data``, with each counter reading that went backwards or rose too fast held back."""
        readings = data.readings
        held: List[Tuple[int, str]] = []
        for i, code in self._layouts.get(readings, _counter_indexes):
            reading = readings[i]
            value = reading.value
            if reading.derived or not isinstance(value, Decimal) or not value.is_finite():
                continue
            scale = self._scale(reading.unit)
            if scale is None:
                continue
            base = value if scale is _ONE else value * scale
            # (a value of a past billing period, F 0..254, steps up at the period's end by design)
            t = data.received if code[5] is None or code[5] == 255 else None
            verdict = self._passes((data.meter_id, code), base, scale, reading, t)
            if verdict is not None:
                held.append((i, verdict))
        if not held:
            return data
        out = list(readings)
        for i, verdict in held:
            text, stat, _ = _HELD[verdict]
            out[i] = replace(readings[i], value=None, details=readings[i].details + ((HELD_DETAIL, text),))
            if self.stats is not None:
                self.stats.count(stat)
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

    def _passes(self, key: _Key, value: Decimal, scale: Decimal, reading: Reading, t: Optional[float]
                ) -> Optional[str]:
        """Record ``value`` (in the unit's base, received at ``t``; None: any rise passes); HOLD or
        RISE when it is to be held back, else None."""
        last: Decimal = self._rule.last.get(key, value)  # (HOLD, RISE: there is one)
        verdict, held = self._rule.offer(key, value, t, lambda: _resolution(reading.value, scale))
        if verdict == BACK:
            log.debug("%s is back at %s; the reading(s) held before were discarded", reading.code, reading.value)
        elif verdict == CONFIRMED:
            log.warning("%s went %s and %d following readings confirmed it (%s): passing on %s", reading.code,
                        "down" if value < last else "up", CONFIRM,
                        "meter swapped or register rolled over?" if value < last else
                        f"meter swapped, or a supply of more than {MAX_POWER_W / 1e6:g} MW?", reading.value)
        elif len(held) == 1 and verdict in _HELD:
            log.log(logging.DEBUG if (key, verdict) in self._warned else logging.WARNING,
                    "%s reads %s %s, " + _HELD[verdict][2], reading.code, reading.value, reading.unit, last / scale)
            if len(self._warned) < 256:
                self._warned.add((key, verdict))  # (the next ones at debug level: the statistics count them all)
        return verdict if verdict in _HELD else None
