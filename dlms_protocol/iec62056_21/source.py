"""D0 meters as a pipeline ``Source``: scheduled request-mode readouts and push-only D0.

Why a wrapper and not the reader itself: the reader does one readout when asked; a source
also owns *when* (its own cycle, or an external scheduler calling ``read_now``/``read_once``),
reports health after each attempt and never lets a bug in one read end the schedule.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Dict, Optional

from ..config import ReadoutConfig
from ..errors import DlmsError, TransportError
from ..model import Statistics
from ..pipeline import Emit, Health, Source
from .reader import D0Reader

log = logging.getLogger(__name__)


class ReadoutSource(Source):
    """Reads a D0 meter every ``cycle`` seconds (0: only when ``read_now``/``read_once`` is called).

    A push-only D0 meter (``config.mode == "push"``) is read continuously in the source's own
    thread. After a port error the loop backs off (1 s doubling to 30 s), so a missing adapter
    is not hammered. ``stale_after`` defaults to 2.5 cycles (a readout meter is silent between
    reads), at least 10 s; ``stale_after`` given explicitly wins (an external scheduler's cycle).
    """

    kind = "readout"
    MAX_BACKOFF = 30.0

    def __init__(self, config: ReadoutConfig, cycle: float = 0.0, *, reader_options: Optional[Dict[str, Any]] = None,
                 reader_factory: Callable[..., D0Reader] = D0Reader, stats: Optional[Statistics] = None,
                 stale_after: Optional[float] = None) -> None:
        super().__init__(stats)
        self.config = config
        self.cycle = float(cycle)
        self.continuous = config.mode == "push"
        self.name = config.port
        if stale_after is not None:
            self.stale_after = float(stale_after)
        else:
            self.stale_after = max(10.0, 2.5 * self.cycle) if self.cycle else 0.0
        self.reader = reader_factory(config, stats=self.stats, **(reader_options or {}))
        self._emit: Optional[Emit] = None
        self._report: Optional[Callable[[Health], None]] = None
        self._stop = threading.Event()
        self._busy = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self.last_duration: Optional[float] = None
        self._port_failed = False

    def start(self, emit: Emit, report: Callable[[Health], None]) -> None:
        self._emit, self._report = emit, report
        self._stop.clear()
        if self.cycle > 0 or self.continuous:
            self._thread = threading.Thread(target=self._loop, name=f"dlms-readout {self.name}", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self.reader.close()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def read_now(self) -> bool:
        """Start one readout in the background; False while one is running."""
        if self._busy.locked() or self._stop.is_set():
            return False
        threading.Thread(target=self.read_once, name=f"dlms-readout-now {self.name}", daemon=True).start()
        return True

    def read_once(self) -> bool:
        """One readout in the caller's thread (a scheduler's); True when data went out."""
        if not self._busy.acquire(blocking=False):
            return False
        start = time.monotonic()
        try:
            data = self.reader.read()
        except DlmsError as exc:
            self.last_duration = time.monotonic() - start
            self._port_failed = isinstance(exc, TransportError)
            if not self._stop.is_set():
                self._tell(Health(Health.ERROR, str(exc), source=self.name, error=exc))
            return False
        except Exception as exc:  # a bug in one read must not end the schedule
            self.last_duration = time.monotonic() - start
            log.exception("unexpected error during the readout of %s", self.name)
            self.stats.error(exc)
            self._tell(Health(Health.ERROR, f"internal error: {exc!r}", source=self.name, error=exc))
            return False
        finally:
            self._busy.release()
        self.last_duration = time.monotonic() - start
        self._port_failed = False
        if self._stop.is_set() or self._emit is None:
            return False
        self._emit(data)
        return True

    @property
    def busy(self) -> bool:
        return self._busy.locked()

    def status(self) -> Dict[str, Any]:
        # checksum: whether readouts are checked (BCC/CRC16 required once seen) or read unchecked
        return {"duration": self.last_duration, "timings": dict(self.reader.last_timings),
                "checksum": getattr(self.reader, "checksum_state", "unknown")}

    def _tell(self, health: Health) -> None:
        if self._report is not None:
            self._report(health)

    def _loop(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            started = time.monotonic()
            self.read_once()
            if self._port_failed:
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.MAX_BACKOFF)
                continue
            backoff = 1.0
            if not self.continuous:
                self._stop.wait(max(0.0, self.cycle - (time.monotonic() - started)))


def make_readout_source(config: ReadoutConfig, cycle: float = 0.0, **kwargs: Any) -> ReadoutSource:
    return ReadoutSource(config, cycle, **kwargs)


__all__ = ["ReadoutSource", "make_readout_source"]
