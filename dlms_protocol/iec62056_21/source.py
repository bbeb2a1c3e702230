"""D0 meters as a pipeline ``Source``: scheduled request-mode readouts and push-only D0.

Why a wrapper and not the reader itself: the reader does one readout when asked; a source
also owns *when* (its own cycle, or an external scheduler calling ``read_now``/``read_once``),
reports health after each attempt and never lets a bug in one read end the schedule.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from ..config import ReadoutConfig
from ..model import MeterData, Statistics
from ..pipeline import ScheduledSource
from .reader import D0Reader


class ReadoutSource(ScheduledSource):
    """Reads a D0 meter every ``cycle`` seconds (0: only when ``read_now``/``read_once`` is called).

    A push-only D0 meter (``config.mode == "push"``) is read continuously in the source's own
    thread. Scheduling, back-off and health come from ``ScheduledSource``.
    """

    kind = "readout"

    def __init__(self, config: ReadoutConfig, cycle: float = 0.0, *, reader_options: Optional[Dict[str, Any]] = None,
                 reader_factory: Callable[..., D0Reader] = D0Reader, stats: Optional[Statistics] = None,
                 stale_after: Optional[float] = None) -> None:
        super().__init__(config.port, cycle, stats=stats, stale_after=stale_after)
        self.config = config
        self.continuous = config.mode == "push"
        self.reader = reader_factory(config, stats=self.stats, **(reader_options or {}))

    def _read(self) -> MeterData:
        return self.reader.read()

    def _close(self) -> None:
        self.reader.close()

    def status(self) -> Dict[str, Any]:
        # checksum: whether readouts are checked (BCC/CRC16 required once seen) or read unchecked
        return {"duration": self.last_duration, "timings": dict(self.reader.last_timings),
                "checksum": getattr(self.reader, "checksum_state", "unknown")}


def make_readout_source(config: ReadoutConfig, cycle: float = 0.0, **kwargs: Any) -> ReadoutSource:
    return ReadoutSource(config, cycle, **kwargs)


__all__ = ["ReadoutSource", "make_readout_source"]
