"""The unit of energy counters a list does not state, found from the meter's own power readings.

Kamstrup's ``Kamstrup_V0001`` lists carry their counters without a scaler. Norwegian meters
count in 10 Wh (the NVE convention every public parser applies), but grid operators set the
register resolution: Swedish and Swiss owners report the same list with counters in Wh, which
a fixed ×10 shows ten times too high. Nothing in the frame tells the two apart, and a counter
ten times too high is a wrong value, so such counters are held back (value None, raw kept)
until the meter itself settles it:

between two lists with the counter, the energy its measured power adds up to (the power of
every list in between, held until the next one; meter time) must match the counter's increase
at one of the profile's ``choices`` of scaler, within a factor of ``TOLERANCE``. The choices are
a factor of ten apart, so the match is unambiguous once enough energy flowed (``MIN_WH``) and
the power was seen often enough (no gap over ``MAX_GAP`` s, at least ``MIN_COVER`` of the span
covered). Until then, and for a meter whose lists carry no clock, the counters stay held back:
a profile file without ``scale_check`` (or the user's own copy of the profile) gives them a fixed
scaler instead. Sans-io: the times are the meter's, from each notification's date-time.

What it rests on: the lists show the power at their instant. A load that holds each level for a
list period or longer keeps the energy of those samples within a factor of 2 of the real one
(tests/test_scale_check.py checks decisions against such loads at any phase); only a load pulsing
faster than the lists and in step with them for a whole hour could pass for the other unit.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from ..model import HELD_DETAIL, Reading
from ..obis import Obis

#: the counter's increase and the power's energy may differ by this factor (sampling of a
#: switching load, the counter's resolution); the choices differ by ten
TOLERANCE = 1.5
#: energy (Wh, from the power readings) a comparison needs: at 10 Wh per count, 20 counts or more
MIN_WH = 200.0
#: the power readings may be this far apart (s) for the energy between them to count
MAX_GAP = 120.0
#: share of the span between two counter readings the power readings must cover
MIN_COVER = 0.9
#: the shortest span (s) between two counter readings that is compared
MIN_SPAN = 600.0

_EPOCH = datetime(1970, 1, 1)
#: the detail a held-back counter carries (``Reading.details``), for the item's explanation
HELD = (HELD_DETAIL, "held back until the meter's power readings show the counters' unit (the meter's list does "
                     "not say it); that takes an hour or more of power readings after the start (see the log)")


def _seconds(stamp: Optional[datetime]) -> Optional[float]:
    if stamp is None:
        return None
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone(timezone.utc).replace(tzinfo=None)
    return (stamp - _EPOCH).total_seconds()  # (one meter's clock: naive times compare among themselves)


@dataclass
class _Track:
    """One counter and the power that drives it."""

    counter: Obis
    power: Obis
    last_t: Optional[float] = None  # the last power reading: time and W
    last_w: float = 0.0
    wh: float = 0.0  # energy of the power readings since the anchor
    covered: float = 0.0  # seconds of that span the readings covered
    anchor: Optional[Tuple[float, int]] = None  # (time, raw count) of the counter to compare with

    def power_at(self, t: float, watts: float) -> None:
        if self.last_t is not None:
            dt = t - self.last_t
            if 0 < dt <= MAX_GAP:
                self.wh += self.last_w * dt / 3600.0
                self.covered += dt
        self.last_t, self.last_w = t, watts

    def counter_at(self, t: float, raw: int, choices: Sequence[int]) -> Tuple[Optional[int], Optional[str]]:
        """(the choice the counter's increase fits, or None; a note when it fits none)."""
        anchor = self.anchor
        if anchor is None or t <= anchor[0] or raw < anchor[1]:
            self._restart(t, raw)
            return None, None
        span = t - anchor[0]
        if self.covered < MIN_COVER * span:
            self._restart(t, raw)  # too little of the span seen: start again from here
            return None, None
        if span < MIN_SPAN or self.wh < MIN_WH:
            return None, None  # keep adding up from the same anchor
        counted = raw - anchor[1]
        for choice in choices:
            expected = self.wh / (10.0 ** choice)
            if expected / TOLERANCE <= counted <= expected * TOLERANCE:
                return choice, None
        note = (f"{self.counter}: +{counted} counts in {span / 60:.0f} min against {self.wh:.0f} Wh of measured "
                f"power fit none of the units 10^{'/10^'.join(str(c) for c in choices)} Wh; the counters stay "
                "held back")
        self._restart(t, raw)
        return None, note

    def _restart(self, t: float, raw: int) -> None:
        self.anchor, self.wh, self.covered = (t, raw), 0.0, 0.0


class ScaleCheck:
    """One meter's held-back counters of one profile (``profiles.Profile.scale_check``)."""

    def __init__(self, profile: str, spec: Dict[str, Any]) -> None:
        self.profile = profile
        self.choices: Tuple[int, ...] = tuple(spec["choices"])
        self.counters = frozenset(Obis.parse(c) for c in spec["counters"])
        self.tracks = [_Track(Obis.parse(c), Obis.parse(p)) for c, p in spec["pairs"]]
        self._roles: Dict[Obis, List[Tuple[str, _Track]]] = {}
        for track in self.tracks:
            self._roles.setdefault(track.power, []).append(("power", track))
            self._roles.setdefault(track.counter, []).append(("counter", track))
        self.scaler: Optional[int] = None  # decided: every counter's scaler
        self.told_held = False
        self.misfits = 0  # comparisons that fit no choice

    def apply(self, readings: Tuple[Reading, ...],
              timestamp: Optional[datetime]) -> Tuple[Tuple[Reading, ...], List[Tuple[str, str]]]:
        """The readings with the counters scaled as decided, or held back; notes for the log."""
        notes: List[Tuple[str, str]] = []
        if self.scaler is None:
            self._observe(readings, _seconds(timestamp), notes)
        if not any(r.obis in self.counters for r in readings):
            return readings, notes
        if self.scaler is None and not self.told_held:
            self.told_held = True
            notes.append(("info", f"profile {self.profile}: the energy counters' unit is not in the list "
                                  f"(10^{' or 10^'.join(str(c) for c in self.choices)} Wh, set by the grid operator); "
                                  "they are held back until the counter's increase over an hour or more matches the "
                                  "meter's measured power (a profile file with a fixed scaler skips this)"))
        return tuple(self._scaled(r) if r.obis in self.counters else r for r in readings), notes

    def _observe(self, readings: Tuple[Reading, ...], t: Optional[float], notes: List[Tuple[str, str]]) -> None:
        if t is None:
            return
        counters: List[Tuple[_Track, int]] = []
        for r in readings:
            for role, track in self._roles.get(r.obis, ()):  # type: ignore[arg-type]
                if role == "power" and isinstance(r.value, Decimal) and r.value.is_finite():
                    track.power_at(t, float(r.value))
                elif role == "counter" and isinstance(r.raw, int) and not isinstance(r.raw, bool):
                    counters.append((track, r.raw))
        for track, raw in counters:  # (after the powers of the same list: they end the span)
            choice, note = track.counter_at(t, raw, self.choices)
            if note:
                # (the first time as a warning; a meter whose counters never fit says it hourly at info)
                notes.append(("info" if self.misfits else "warning", f"profile {self.profile}: {note}"))
                self.misfits += 1
            if choice is not None and self.scaler is None:
                self.scaler = choice
                notes.append(("info", f"profile {self.profile}: the energy counters count 10^{choice} Wh "
                                      f"({track.counter}: +{raw - track.anchor[1]} in "  # type: ignore[index]
                                      f"{(t - track.anchor[0]) / 60:.0f} min against {track.wh:.0f} Wh of "  # type: ignore[index]
                                      "measured power)"))

    def _scaled(self, r: Reading) -> Reading:
        raw = r.raw
        if self.scaler is None or not isinstance(raw, int) or isinstance(raw, bool):
            return replace(r, value=None, scaler=None, details=r.details + (HELD,))
        if r.scaler == self.scaler and r.value is not None:
            return r
        return replace(r, value=Decimal(raw).scaleb(self.scaler), scaler=self.scaler)


class RangeCheck:
    """Fields whose scaler differs between meter types of one list (``profiles.Profile.range_check``).

    Why: a Kamstrup Omnipower of type 684143 (Denmark, N1) sends the Kamstrup_V0001 list with
    its voltages in 0.01 V, where every other type sends whole volts: 23593 read as 23 593 V
    (amsreader-firmware issue 814), and a power factor derived from it. The choices are further
    apart than the range is wide, so at most one puts a value into the range; a value that none
    puts there is held back (value None, raw kept), never published. Sans-io; it keeps only what
    it has said in the log.
    """

    def __init__(self, profile: str, spec: Dict[str, Any]) -> None:
        self.profile = profile
        self.fields = frozenset(Obis.parse(c) for c in spec["fields"])
        self.choices: Tuple[int, ...] = tuple(spec["choices"])
        self.low, self.high = (Decimal(b) for b in spec["range"])
        self.told: Set[Tuple[str, Optional[int]]] = set()  # (field, scaler) said once in the log

    def apply(self, readings: Tuple[Reading, ...]) -> Tuple[Tuple[Reading, ...], List[Tuple[str, str]]]:
        """The readings with each checked field at the scaler its range decides; notes for the log."""
        notes: List[Tuple[str, str]] = []
        out = tuple(self._checked(r, notes) if r.obis in self.fields else r for r in readings)
        return out, notes

    def _checked(self, r: Reading, notes: List[Tuple[str, str]]) -> Reading:
        raw = r.raw
        if not isinstance(raw, int) or isinstance(raw, bool) or raw == 0:
            return r  # (0 is 0 at every scaler)
        for choice in self.choices:
            value = Decimal(raw).scaleb(choice)
            if self.low <= abs(value) <= self.high:
                if choice == r.scaler:
                    return r
                self._say(notes, r, choice, f"profile {self.profile}: {r.code} sends {raw}, which is "
                                            f"{value} {r.unit or ''} at 10^{choice} (this meter type's unit)")
                return replace(r, value=value, scaler=choice)
        self._say(notes, r, None, f"profile {self.profile}: {r.code} sends {raw}, which is outside "
                                  f"{self.low}-{self.high} {r.unit or ''} at every scaler 10^"
                                  f"{'/10^'.join(str(c) for c in self.choices)}; it is held back")
        return replace(r, value=None, details=r.details + (OUT_OF_RANGE,))

    def _say(self, notes: List[Tuple[str, str]], r: Reading, choice: Optional[int], text: str) -> None:
        key = (r.code, choice)
        if key not in self.told and len(self.told) < 64:
            self.told.add(key)
            notes.append(("info" if choice is not None else "warning", text))


#: the detail a value outside every choice's range carries (``Reading.details``)
OUT_OF_RANGE = (HELD_DETAIL, "held back: outside the possible range at every scaler of the profile (see the log)")

__all__ = ["ScaleCheck", "RangeCheck", "HELD", "OUT_OF_RANGE", "TOLERANCE", "MIN_WH", "MAX_GAP", "MIN_COVER",
           "MIN_SPAN"]
