"""When a periodic push meter's next frame will be complete (sans-io: the caller passes times).

Why: on a line that hands a push over in pieces (one byte per read on some adapters, 64-byte
USB packets on others) every piece wakes the waiting thread, in the kernel or in Python, and
each wake-up costs CPU on a GX. Push meters send at a fixed period (1 s, 10 s ...), so once
the period and the moment a frame ends are known, the listener can sleep through the whole
transmission and read the frame in one go when it is complete.

``Cadence`` learns that from measured frame ends (``observe``: the time a waiting read saw the
frame's last byte, or where the line's byte rate puts it); it locks when ``MEMORY`` intervals
in a row agree (the least-squares line through the ends strays from none by more than half the
tolerance). While locked, ``wake_at`` says when to read: the predicted end plus the spread
of the intervals seen plus the caller's margin. Each such read reports ``hit`` (exactly the
frame was there) or ``miss`` (none, a part, or more than it): a miss unlocks and the listener
waits for bytes again, so a meter that changes its period or stops costs at most one late read,
never a frame. After ``RELOCK`` pushes one frame is read the usual way again and its end checked
against the prediction (``observe``): near it (within an eighth of a period) it re-anchors the
beat, which keeps the phase from drifting with the meter's clock; elsewhere it unlocks.

Each such measurement costs a second wake-up and a frame decoded in two parts. The re-anchor
measures the period over the whole gap, so its error shrinks as the gap grows: when twice the
end's distance from the prediction is within the spread the wake adds (at least SPREAD_MIN),
the next gap is twice as long, up to ``RELOCK_MAX`` pushes and ``RELOCK_SPAN`` seconds (a
meter pushing every second is measured about once a minute, not every eighth second);
anything less close starts again at ``RELOCK``.
"""
from __future__ import annotations

from collections import deque
from typing import Deque, Optional

#: intervals in a row that must agree before the listener sleeps through a push
MEMORY = 4
#: after this many pushes one is read the usual way, to measure its end again (the first gap)
RELOCK = 8
#: the gap doubles after each close measurement, up to this many pushes and about this many seconds
RELOCK_MAX = 64
RELOCK_SPAN = 64.0
#: intervals agree when they differ by at most this many seconds, or SPREAD_SHARE of the period
SPREAD_MIN = 0.002
SPREAD_SHARE = 0.02
#: sum of (i - MEMORY/2)**2 over the MEMORY + 1 ends (the least-squares fit's denominator)
_SQUARES = sum((i - MEMORY / 2) ** 2 for i in range(MEMORY + 1))


class Cadence:
    """Frame ends of one periodic meter (module docstring); all times in seconds of one clock."""

    def __init__(self) -> None:
        self._ends: Deque[float] = deque(maxlen=MEMORY + 1)
        self.period: Optional[float] = None  #: seconds between frame ends while locked
        self._anchor = 0.0  #: the last measured frame end while locked
        self._spread = 0.0  #: how far the learned intervals strayed from the period
        self._since = 0  #: pushes read by sleeping through since the anchor
        self._gap = RELOCK  #: pushes from the anchor to the next measured one

    @property
    def locked(self) -> bool:
        return self.period is not None

    def reset(self) -> None:
        """Forget everything (a reconnect, other frame lengths, a miss)."""
        self._ends.clear()
        self.period = None
        self._since = 0
        self._gap = RELOCK

    def observe(self, end: float) -> None:
        """A frame ended at ``end`` (read the usual way): learn, lock, or check the lock."""
        if self.period is not None:
            due = self._anchor + (self._since + 1) * self.period
            off = abs(end - due)
            if off <= max(self._tolerance(self.period), self.period / RELOCK):
                # on the beat, give or take what a few periods of the learned one add up to: the
                # long baseline makes the period exact and the anchor follows the meter's clock
                self.period = (end - self._anchor) / (self._since + 1)
                self._anchor, self._since = end, 0
                self._gap = self._next_gap(off)
                return
            self.reset()
        ends = self._ends
        if ends and end <= ends[-1]:
            self.reset()  # (a clock that went backwards, or two ends of one push)
        ends.append(end)
        if len(ends) <= MEMORY:
            return
        # the least-squares line through the ends: its slope is the period, its last point the
        # anchor (one late end moves neither much), the largest distance from it the spread
        mid = MEMORY / 2
        mean = sum(ends) / len(ends)
        period = sum((i - mid) * (t - mean) for i, t in enumerate(ends)) / _SQUARES
        spread = max(abs(t - (mean + (i - mid) * period)) for i, t in enumerate(ends))
        if period > 0 and spread <= self._tolerance(period) / 2:
            self.period, self._spread, self._since = period, spread, 0
            self._anchor = mean + mid * period

    def wake_at(self, margin: float) -> Optional[float]:
        """When to read the next frame whole (``margin`` after its predicted end, plus the spread
        seen); None when it is to be read the usual way (not locked, or time to measure again)."""
        if self.period is None or self._since + 1 >= self._gap:
            return None
        return self._anchor + (self._since + 1) * self.period + self._spread + margin

    def hit(self) -> None:
        """The read at ``wake_at`` found exactly one whole frame."""
        self._since += 1

    def miss(self) -> None:
        """The read at ``wake_at`` found no frame, a part of one, or more: learn anew."""
        self.reset()

    def _next_gap(self, off: float) -> int:
        """The gap after a measurement ``off`` seconds from its prediction: twice the last when
        twice ``off`` (what the doubled gap may add up to) stays within the spread the wake
        allows, else RELOCK."""
        if self.period is None or 2.0 * off > self._spread + SPREAD_MIN:
            return RELOCK
        return max(RELOCK, min(2 * self._gap, RELOCK_MAX, int(RELOCK_SPAN / self.period)))

    @staticmethod
    def _tolerance(period: float) -> float:
        return max(SPREAD_MIN, SPREAD_SHARE * period)


__all__ = ["Cadence", "MEMORY", "RELOCK", "RELOCK_MAX", "RELOCK_SPAN"]
