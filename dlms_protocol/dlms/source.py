"""DLMS/COSEM push meters as a pipeline ``Source`` (the listener thread does the I/O).

The listener already owns the port, reconnect with back-off and decoding; this wrapper turns
its callbacks into the pipeline's ``emit``/``report`` and its rate limit is left at 0, because
each output keeps its own.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Dict, Optional, Tuple

from ..config import ListenerConfig
from ..errors import DlmsError, TransportError
from ..model import Statistics
from ..pipeline import Emit, Health, LoopGuest, Source
from .listener import PushListener, open_port


class PushSource(Source):
    """Listens for pushes on ``config.port``; ``stale_after`` is ``listen_timeout``."""

    kind = "push"
    logs_errors = True  # the listener logs decode and port errors itself (rate-limited)

    def __init__(self, config: ListenerConfig, listen_timeout: float = 60.0, *,
                 opener: Callable[..., Any] = open_port, stats: Optional[Statistics] = None,
                 on_problem: Optional[Callable[[DlmsError], None]] = None, **listener_options: Any) -> None:
        """``on_problem``: every decode error (bad frame, wrong key) that does not change the health,
        except the tail of a message the port was opened into (``DlmsError.lead_in``)."""
        super().__init__(stats)
        self._on_problem = on_problem
        self.config = dataclasses.replace(config, min_interval=0.0)
        self.name = config.port
        self.stale_after = float(listen_timeout)
        self._opener = opener
        self._options = listener_options
        self.listener: Optional[PushListener] = None
        self._guest: Optional[LoopGuest] = None
        #: the last frame that arrived but failed (monotonic time, error), for ``stale_hint``
        self._problem: Optional[Tuple[float, DlmsError]] = None

    def start(self, emit: Emit, report: Callable[[Health], None]) -> None:
        def on_error(exc: DlmsError) -> None:
            # decode errors are counted by the decoder; a lost port is an error state until data returns
            if isinstance(exc, TransportError):
                report(Health(Health.ERROR, str(exc), source=self.name, error=exc))
                return
            if exc.lead_in:
                return  # (the tail of a message the port was opened into: counted and said at INFO by
                # the decoder, normal at every other start; no host's failure or warning, no stale hint)
            self._problem = (time.monotonic(), exc)
            if self._on_problem is not None:
                self._on_problem(exc)

        self.listener = self._make_listener(emit, on_error)
        if self._guest is not None:
            self.listener.host_loop(self._guest)
        self.listener.start()

    def host_loop(self, guest: LoopGuest) -> bool:
        """The listener thread runs ``guest`` while it waits (``pipeline.LoopGuest``): on a local
        serial port, whose waits are this package's own; a URL's (``socket://``, ``rfc2217://``)
        wait inside pyserial."""
        if self.listener is not None or "://" in self.config.port:
            return False
        self._guest = guest
        guest.hosted = True
        return True

    def _make_listener(self, emit: Emit, on_error: Callable[[DlmsError], None]) -> PushListener:
        """The listener thread that owns the port (a subclass reads other protocols on it)."""
        return PushListener(self.config, emit, stats=self.stats, on_error=on_error, opener=self._opener,
                            **self._options)

    def stop(self, timeout: float = 2.0) -> None:
        if self.listener is not None:
            self.listener.stop(timeout=timeout)

    @property
    def running(self) -> bool:
        return self.listener is None or self.listener.running

    def stale_hint(self) -> Optional[str]:
        """Frames that arrived within ``stale_after`` but failed: their last error names the cause
        and the fix (a profile that does not fit, a wrong key), where "check the cable" would mislead."""
        problem = self._problem
        if problem is None or time.monotonic() - problem[0] > self.stale_after:
            return None
        return f"frames arrive but fail; the last one: {problem[1]}"

    def status(self) -> Dict[str, Any]:
        listener = self.listener
        return {"connected": bool(listener and listener.connected), "connects": listener.connects if listener else 0}


def make_push_source(config: ListenerConfig, listen_timeout: float = 60.0, **kwargs: Any) -> PushSource:
    return PushSource(config, listen_timeout, **kwargs)


__all__ = ["PushSource", "make_push_source"]
