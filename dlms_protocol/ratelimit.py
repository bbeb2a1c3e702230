"""One rate limit for log lines that repeat (the plugin's warnings, the service's errors).

A problem that goes on (a readout longer than its cycle, a meter sending with a wrong key)
must show in the log without a line per cycle: the first occurrence is logged in full, then
one line with the count per interval.
"""
from __future__ import annotations

import time
from typing import Callable, Dict, Tuple


class RepeatLimiter:
    """Rate limit for a warning that repeats (a readout longer than the cycle, every cycle).

    The first occurrence of a key is logged in full; repeats within ``interval`` seconds are
    only counted (the caller logs them at debug level), and the first repeat after the interval
    is logged with the number of repeats since the last line, so the log shows a problem that
    goes on without a line per cycle. ``clear(key)`` (the problem went away) starts afresh.
    ``clock`` is injectable so tests need no waiting.
    """

    def __init__(self, interval: float = 600.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._last: Dict[str, float] = {}
        self._repeats: Dict[str, int] = {}

    def check(self, key: str) -> Tuple[bool, int]:
        """(log this one?, repeats suppressed since the last logged line)."""
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._repeats[key] = self._repeats.get(key, 0) + 1
            return False, self._repeats[key]
        self._last[key] = now
        return True, self._repeats.pop(key, 0)

    def clear(self, key: str) -> None:
        self._last.pop(key, None)
        self._repeats.pop(key, None)

    def summary(self, repeats: int) -> str:
        """Text to append to a logged repeat, e.g. ' (7 more times in the last 10 min)'."""
        if not repeats:
            return ""
        minutes = self.interval / 60.0
        return f" ({repeats} more time{'s' if repeats != 1 else ''} in the last {minutes:g} min)"


__all__ = ["RepeatLimiter"]
