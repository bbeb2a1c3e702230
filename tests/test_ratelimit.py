"""The core's rate limits (ratelimit.py): one retry rule (Backoff) for the serial listener, the
D-Bus connection and the scheduled readout/poll loop (delays double up to a ceiling and start
over after a success), and one "log it once" (Once)."""
from __future__ import annotations

import re
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from dlms_protocol.ratelimit import Backoff

ROOT = Path(__file__).resolve().parent.parent


def test_delays_double_up_to_the_ceiling_and_start_over() -> None:
    b = Backoff(0.5, 4.0)
    assert b.first
    assert [b.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert not b.first
    b.reset()
    assert b.first and b.next() == 0.5


@given(st.floats(0.01, 10), st.floats(0.01, 100), st.integers(1, 40))
def test_a_delay_is_never_above_the_ceiling_nor_below_the_start(initial: float, ceiling: float, n: int) -> None:
    b = Backoff(initial, max(initial, ceiling))
    delays = [b.next() for _ in range(n)]
    assert delays[0] == initial and all(initial <= d <= max(initial, ceiling) for d in delays)
    assert delays == sorted(delays)


def test_no_other_doubling_loop_in_the_core() -> None:
    """A new reconnect loop uses Backoff instead of its own ``delay * 2``."""
    own = [str(p.relative_to(ROOT)) for p in (ROOT / "dlms_protocol").rglob("*.py")
           if "simulator" not in p.parts and p.name != "ratelimit.py"
           and re.search(r"min\(\w+ \* 2,", p.read_text(encoding="utf-8"))]
    assert own == []


def test_once_tells_each_key_once_and_stays_bounded() -> None:
    from dlms_protocol.ratelimit import Once

    once = Once(limit=3)
    assert [once.first(k) for k in ("a", "b", "a", ("x", 1), ("x", 1))] == [True, True, False, True, False]
    assert not once.first("d")  # the bound: a stream of new keys cannot grow it


def test_no_hand_written_once_sets_in_the_core() -> None:
    """'Log once' goes through ratelimit.Once, not a private set per module."""
    own = [str(p.relative_to(ROOT)) for p in (ROOT / "dlms_protocol").rglob("*.py")
           if "simulator" not in p.parts and re.search(r"if \w+ not in self\._warned|_WARNED\.add\(",
                                                        p.read_text(encoding="utf-8"))]
    assert own == []
