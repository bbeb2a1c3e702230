"""A polled DLMS/COSEM meter as a pipeline ``Source`` (kind ``poll``).

Like the D0 ``ReadoutSource``: its own cycle (or an external scheduler calling
``read_now``/``read_once``), health after each attempt, and a bug in one read never ends the
schedule. The first read discovers the object list and the scalers; later reads fetch only
the selected objects (and the new rows of the configured load profiles).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from ..errors import DlmsError
from ..model import Statistics
from ..pipeline import Emit, Health, Source
from .config import PollConfig
from .poller import DlmsPoller, ProfileRow
from .session import Opener, default_opener

log = logging.getLogger(__name__)


def _readout_factory(config: PollConfig, time_scale: float) -> Callable[[], Any]:
    """The D0 reader for a meter whose optical port refuses mode E (mode C readout instead)."""
    def make() -> Any:
        from ..config import ReadoutConfig
        from ..iec62056_21.reader import D0Reader
        return D0Reader(ReadoutConfig(port=config.port, baudrate=config.baudrate, device_address=config.device_address),
                        time_scale=time_scale)
    return make


class PollSource(Source):
    """Polls a meter every ``cycle`` seconds (0: only when ``read_now``/``read_once`` is called)."""

    kind = "poll"

    def __init__(self, config: PollConfig, cycle: float = 0.0, *, opener: Opener = default_opener,
                 time_scale: float = 1.0, on_profile: Optional[Callable[[str, List[ProfileRow]], None]] = None,
                 stats: Optional[Statistics] = None, stale_after: Optional[float] = None) -> None:
        super().__init__(stats)
        self.config = config
        self.cycle = float(cycle)
        self.name = config.port
        if stale_after is not None:  # an external scheduler's cycle
            self.stale_after = float(stale_after)
        else:
            self.stale_after = max(10.0, 2.5 * self.cycle) if self.cycle else 0.0
        self.poller = DlmsPoller(config, self.stats, opener=opener, time_scale=time_scale,
                                 readout_factory=_readout_factory(config, time_scale) if config.mode_e else None)
        self.on_profile = on_profile
        self._emit: Optional[Emit] = None
        self._report: Optional[Callable[[Health], None]] = None
        self._stop = threading.Event()
        self._busy = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self.last_duration: Optional[float] = None

    def start(self, emit: Emit, report: Callable[[Health], None]) -> None:
        self._emit, self._report = emit, report
        self._stop.clear()
        if self.cycle > 0:
            self._thread = threading.Thread(target=self._loop, name=f"dlms-poll {self.name}", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self.poller.close()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def read_now(self) -> bool:
        """Start one poll in the background; False while one is running."""
        if self._busy.locked() or self._stop.is_set():
            return False
        threading.Thread(target=self.read_once, name=f"dlms-poll-now {self.name}", daemon=True).start()
        return True

    def read_once(self) -> bool:
        """One poll in the caller's thread; True when data went out."""
        if not self._busy.acquire(blocking=False):
            return False
        start = time.monotonic()
        try:
            data = self.poller.read()
        except DlmsError as exc:
            if not self._stop.is_set():
                self._tell(Health(Health.ERROR, str(exc), source=self.name, error=exc))
            return False
        except Exception as exc:  # a bug in one read must not end the schedule
            log.exception("unexpected error while polling %s", self.name)
            self.stats.error(exc)
            self._tell(Health(Health.ERROR, f"internal error: {exc!r}", source=self.name, error=exc))
            return False
        finally:
            self.last_duration = time.monotonic() - start
            self._busy.release()
        if self._stop.is_set() or self._emit is None:
            return False
        self._emit(data)
        if self.on_profile is not None:
            for code, rows in self.poller.last_profile_rows.items():
                if rows:
                    self.on_profile(code, rows)
        return True

    @property
    def busy(self) -> bool:
        return self._busy.locked()

    def status(self) -> Dict[str, Any]:
        return {"duration": self.last_duration, "timings": dict(self.poller.last_timings),
                "unreadable": {code: str(err) for code, err in self.poller.unreadable.items()},
                "mode_e_refused": self.poller.mode_e_refused}

    def _tell(self, health: Health) -> None:
        if self._report is not None:
            self._report(health)

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.read_once()
            self._stop.wait(max(0.0, self.cycle - (time.monotonic() - started)))


def make_poll_source(config: PollConfig, cycle: float = 0.0, **kwargs: Any) -> PollSource:
    return PollSource(config, cycle, **kwargs)


__all__ = ["PollSource", "make_poll_source"]
