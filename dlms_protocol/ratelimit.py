"""The two rate limits of the core: log lines that repeat, and retries after a failure.

A problem that goes on (a readout longer than its cycle, a meter sending with a wrong key)
must show in the log without a line per cycle: the first occurrence is logged in full, then
one line with the count per interval (``RepeatLimiter``). A port, a bus or a meter that is gone
is retried ever less often, up to a ceiling, and at once at full rate after a success
(``Backoff``: the serial listener, the D-Bus connection and the scheduled readout/poll loop).
``Once`` says a thing once; ``log_notes`` puts what a sans-io layer noted (it has no logger) into
its driver's log.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Dict, Hashable, Iterable, Set, Tuple


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


class Backoff:
    """Retry delays that double from ``initial`` up to ``maximum``; ``reset()`` after a success."""

    def __init__(self, initial: float = 1.0, maximum: float = 30.0) -> None:
        self.initial = float(initial)
        self.maximum = float(maximum)
        self.delay = self.initial

    @property
    def first(self) -> bool:
        """Is this the first failure in a row (worth a warning; the repeats are logged at info)?"""
        return self.delay == self.initial

    def next(self) -> float:
        """The delay to wait now; the following one is twice as long (at most ``maximum``)."""
        delay = self.delay
        self.delay = min(delay * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self.delay = self.initial


class Once:
    """Keys already told: a configuration problem that repeats with every frame is logged once.

    Bounded (``limit`` keys), so a stream of distinct problems cannot grow it without end.
    """

    def __init__(self, limit: int = 256) -> None:
        self.limit = limit
        self._seen: Set[Hashable] = set()

    def first(self, key: Hashable) -> bool:
        """True the first time ``key`` is asked for (while fewer than ``limit`` keys are kept)."""
        if key in self._seen or len(self._seen) >= self.limit:
            return False
        self._seen.add(key)
        return True


def log_notes(logger: logging.Logger, notes: Iterable[Tuple[str, str]]) -> None:
    """A sans-io layer's notes, (level name, text) each, through its driver's logger: the layer
    has no logger of its own (``PushDecoder.take_notes``, ``D0Dialogue.take_notes``)."""
    for level, text in notes:
        logger.log(_LEVELS.get(level, logging.WARNING), "%s", text)


_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

__all__ = ["RepeatLimiter", "Backoff", "Once", "log_notes"]
