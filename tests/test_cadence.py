"""The cadence of a periodic push meter (``dlms.cadence``): when it locks, where it says to wake,
and that anything off the beat unlocks it (the listener then reads the usual way, so a wrong
guess costs a wake-up, never a frame: tests/test_push_coalesce.py runs it on a real pty)."""
from __future__ import annotations

from typing import List

from hypothesis import given, settings
from hypothesis import strategies as st

from dlms_protocol.dlms.cadence import MEMORY, RELOCK, RELOCK_MAX, RELOCK_SPAN, SPREAD_MIN, Cadence

MARGIN = 0.003


def learned(period: float, start: float = 100.0, jitter: List[float] = ()) -> Cadence:  # type: ignore[assignment]
    c = Cadence()
    for i in range(MEMORY + 1):
        c.observe(start + i * period + (jitter[i] if i < len(jitter) else 0.0))
    return c


def test_locks_after_memory_plus_one_regular_ends_and_wakes_after_the_next_end():
    c = Cadence()
    for i in range(MEMORY):
        c.observe(10.0 + i)
        assert not c.locked and c.wake_at(MARGIN) is None
    c.observe(10.0 + MEMORY)
    assert c.locked and c.period == 1.0
    assert c.wake_at(MARGIN) == 10.0 + MEMORY + 1 + MARGIN


def test_each_hit_moves_the_wake_one_period_on_and_every_relock_th_push_is_measured():
    c = learned(0.25)
    last = 100.0 + MEMORY * 0.25
    wakes = []
    while (w := c.wake_at(MARGIN)) is not None:
        wakes.append(w)
        c.hit()
    assert len(wakes) == RELOCK - 1
    assert [round(w - last - MARGIN, 9) for w in wakes] == [round(0.25 * k, 9) for k in range(1, RELOCK)]
    # the measured push lands on the beat: locked again, anchored on it
    c.observe(last + RELOCK * 0.25 + 0.0004)
    assert c.locked and abs(c.wake_at(0.0) - (last + (RELOCK + 1) * 0.25 + 0.0004)) < 1e-3


def measured_gaps(c: Cadence, period: float, anchor: float, count: int, off: float = 0.0) -> List[int]:
    """Pushes between the measured ones of a locked cadence whose measured ends land ``off`` from the beat."""
    gaps, k = [], 0
    while len(gaps) < count:
        gap = 0
        while c.wake_at(MARGIN) is not None:
            c.hit()
            gap += 1
        k += gap + 1
        c.observe(anchor + k * period + off)
        assert c.locked
        gaps.append(gap + 1)
    return gaps


def test_close_measurements_double_the_gap_up_to_its_bounds():
    """A steady meter is measured after 8, 16, 32, 64 pushes, then every 64 (or every
    RELOCK_SPAN seconds, never below RELOCK: a 10 s meter stays at every eighth push)."""
    assert measured_gaps(learned(0.25), 0.25, 100.0 + MEMORY * 0.25, 6) == [RELOCK, 16, 32, RELOCK_MAX, RELOCK_MAX,
                                                                          RELOCK_MAX]
    assert measured_gaps(learned(2.0), 2.0, 100.0 + MEMORY * 2.0, 4) == [RELOCK, 16, int(RELOCK_SPAN / 2.0),
                                                                        int(RELOCK_SPAN / 2.0)]
    assert measured_gaps(learned(10.0), 10.0, 100.0 + MEMORY * 10.0, 3) == [RELOCK] * 3


def test_a_measurement_on_the_beat_but_not_close_starts_the_gap_again():
    """Half a spread's worth off is enough to stay locked (within an eighth of a period) but
    not to trust a longer gap: the next measurement comes after RELOCK pushes again."""
    c = learned(1.0)
    anchor = 100.0 + MEMORY
    assert measured_gaps(c, 1.0, anchor, 2) == [RELOCK, 16]
    assert measured_gaps(c, 1.0, anchor + RELOCK + 16, 2, off=0.004) == [32, RELOCK]
    assert c.locked


def test_a_measured_end_off_the_beat_unlocks():
    c = learned(1.0)
    for _ in range(RELOCK - 1):
        c.hit()
    c.observe(100.0 + MEMORY + RELOCK + 0.5)  # the meter moved (restarted, another period)
    assert not c.locked and c.wake_at(MARGIN) is None


def test_a_miss_unlocks_and_learning_starts_again():
    c = learned(1.0)
    c.miss()
    assert not c.locked and c.wake_at(MARGIN) is None
    for i in range(MEMORY):
        c.observe(200.0 + i)
        assert not c.locked
    c.observe(200.0 + MEMORY)
    assert c.locked


def test_irregular_or_skipped_pushes_never_lock():
    c = Cadence()
    for t in (0.0, 1.0, 2.0, 4.0, 5.0, 6.0, 8.0, 9.0):  # a skipped push every few
        c.observe(t)
        assert not c.locked
    c = Cadence()
    for t in (0.0, 1.0, 2.03, 3.0, 4.0):  # 30 ms off on a 1 s beat: more than the 20 ms allowed
        c.observe(t)
    assert not c.locked


def test_a_clock_that_goes_back_or_a_repeated_end_starts_afresh():
    c = Cadence()
    for t in (5.0, 6.0, 7.0, 6.5, 7.5, 8.5, 9.5):
        c.observe(t)
    assert not c.locked  # only 4 ends since it went back
    c.observe(10.5)
    assert c.locked and c.period == 1.0


def test_reset_forgets_the_lock():
    c = learned(2.0)
    c.reset()
    assert not c.locked and c.wake_at(MARGIN) is None


#: ends of a steady meter the property below follows: learning and gaps of 8, 16, 32, 64 and 64
_STEADY = MEMORY + 1 + RELOCK + 16 + 32 + 2 * RELOCK_MAX


@settings(max_examples=300, deadline=None)
@given(period=st.floats(0.05, 30.0), start=st.floats(0.0, 1e6),
       jitter=st.lists(st.floats(-0.0005, 0.0005), min_size=_STEADY, max_size=_STEADY))
def test_with_a_steady_meter_every_wake_comes_after_the_frame_it_waits_for(period, start, jitter):
    """Jitter within a millisecond: the lock holds and no wake comes before the end it waits for
    (else the listener would find half a frame and fall back: a lost wake-up, though no frame),
    also as the gaps between measured pushes grow."""
    ends = [start + k * period + j for k, j in enumerate(jitter)]
    c = Cadence()
    for e in ends[:MEMORY + 1]:
        c.observe(e)
    assert c.locked
    for k in range(MEMORY + 1, len(ends)):
        w = c.wake_at(MARGIN)
        if w is None:
            c.observe(ends[k])
            assert c.locked
            continue
        assert w >= ends[k], (k, w - ends[k])
        assert w <= ends[k] + MARGIN + 4 * 0.001 + 2 * 0.001  # late by the margin, the spread, twice a jitter
        c.hit()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["observe", "hit", "miss", "reset"]), st.floats(0.0, 1e5)),
                max_size=60))
def test_any_sequence_keeps_the_promises(steps):
    """Whatever the listener reports: a wake is only given while locked, lies after the anchor,
    and the tolerance is never below SPREAD_MIN."""
    c = Cadence()
    for op, t in steps:
        if op == "observe":
            c.observe(t)
        else:
            getattr(c, op)()
        w = c.wake_at(MARGIN)
        assert (w is None) or c.locked
        if w is not None:
            assert c.period is not None and c.period > 0
            assert w > c._anchor
        assert Cadence._tolerance(c.period or 0.0) >= SPREAD_MIN
