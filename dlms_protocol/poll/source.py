"""A polled DLMS/COSEM meter as a pipeline ``Source`` (kind ``poll``).

Like the D0 ``ReadoutSource``: its own cycle (or an external scheduler calling
``read_now``/``read_once``), health after each attempt, and a bug in one read never ends the
schedule. The first read discovers the object list and the scalers; later reads fetch only
the selected objects (and the new rows of the configured load profiles).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from ..model import MeterData, Statistics
from ..pipeline import ScheduledSource
from .config import PollConfig
from .poller import DlmsPoller, ProfileRow
from .session import Opener, default_opener


def mode_c_readout(config: PollConfig, time_scale: float) -> Callable[[], Any]:
    """The D0 reader for a meter whose optical port refuses mode E (mode C readout instead)."""
    def make() -> Any:
        from ..config import ReadoutConfig
        from ..iec62056_21.reader import D0Reader
        return D0Reader(ReadoutConfig(port=config.port, baudrate=config.baudrate, device_address=config.device_address),
                        time_scale=time_scale)
    return make


class PollSource(ScheduledSource):
    """Polls a meter every ``cycle`` seconds (0: only when ``read_now``/``read_once`` is called)."""

    kind = "poll"

    def __init__(self, config: PollConfig, cycle: float = 0.0, *, opener: Opener = default_opener,
                 time_scale: float = 1.0, on_profile: Optional[Callable[[str, List[ProfileRow]], None]] = None,
                 stats: Optional[Statistics] = None, stale_after: Optional[float] = None) -> None:
        super().__init__(config.port, cycle, stats=stats, stale_after=stale_after)
        self.config = config
        self.poller = DlmsPoller(config, self.stats, opener=opener, time_scale=time_scale,
                                 readout_factory=mode_c_readout(config, time_scale) if config.mode_e else None)
        self.on_profile = on_profile

    def _read(self) -> MeterData:
        return self.poller.read()

    def _close(self) -> None:
        self.poller.close()

    def _after_emit(self) -> None:
        if self.on_profile is not None:
            for code, rows in self.poller.last_profile_rows.items():
                if rows:
                    self.on_profile(code, rows)

    def status(self) -> Dict[str, Any]:
        return {"duration": self.last_duration, "timings": dict(self.poller.last_timings),
                "unreadable": {code: str(err) for code, err in self.poller.unreadable.items()},
                "mode_e_refused": self.poller.mode_e_refused}


def make_poll_source(config: PollConfig, cycle: float = 0.0, **kwargs: Any) -> PollSource:
    return PollSource(config, cycle, **kwargs)


__all__ = ["PollSource", "make_poll_source"]
