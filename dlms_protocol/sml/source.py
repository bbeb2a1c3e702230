"""SML meters (and ``protocol: auto``) on a port: the push listener's thread with another decoder.

The push listener already owns the port, reconnects with back-off, rate-limits and never dies
on bad input; a self-sending SML meter needs exactly that, so ``StreamListener`` only swaps
its decoder (``detect.decoders.make_decoder``: sml, dlms, d0 or auto) and logs each firmware
quirk and the reduced data set once, with what to do. ``SmlSource`` is the pipeline ``Source``.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Optional

from ..config import ListenerConfig
from ..dlms.listener import PushListener
from ..dlms.source import PushSource
from ..errors import DlmsError
from ..model import MeterData, Statistics
from ..pipeline import Emit

log = logging.getLogger(__name__)


class StreamListener(PushListener):
    """A ``PushListener`` whose decoder is chosen by ``protocol`` (default ``sml``).

    ``quirks``: SML quirk modes (``sml.decoder.parse_quirks``). ``notes`` keeps every note
    logged so far (quirks seen, reduced data set), for status displays.
    """

    def __init__(self, config: ListenerConfig, on_data: Callable[[MeterData], None],
                 stats: Optional[Statistics] = None, on_error: Optional[Callable[[DlmsError], None]] = None,
                 *, protocol: str = "sml", quirks: Optional[Dict[str, str]] = None, **kwargs: Any) -> None:
        from ..detect.decoders import make_decoder

        super().__init__(config, on_data, stats, on_error, **kwargs)
        self.protocol = protocol
        self.decoder: Any = _Recording(make_decoder(protocol, config, self.stats, self._decode_error, quirks=quirks))
        self.notes: Dict[str, str] = {}
        user_hook = self.on_message

        def on_message(msg: Any) -> None:
            self._note(msg)
            if user_hook is not None:
                user_hook(msg)

        self.on_message = on_message

    @property
    def detected_protocol(self) -> Optional[str]:
        """The protocol in use: the configured one, or what ``auto`` recognised (None: not yet)."""
        return getattr(self.decoder.inner, "protocol", None) if self.protocol == "auto" else self.protocol

    def diagnosis(self) -> str:
        """Why nothing readable arrived (``detect.report.diagnose`` on the last bytes and counters)."""
        from ..detect.report import diagnose

        cfg = self.config
        return diagnose(bytes(self.decoder.tail), self.stats, cfg.baudrate, f"{cfg.bytesize}{cfg.parity}{cfg.stopbits}")

    def _note(self, msg: Any) -> None:
        for note in getattr(msg, "notes", ()):
            key = note.split(":")[0]
            if key not in self.notes:
                self.notes[key] = note
                log.warning("%s: %s", self.config.port, note)


class _Recording:
    """The decoder, keeping the last ``TAIL`` bytes fed to it (for the diagnosis)."""

    TAIL = 4096

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.tail = bytearray()

    def feed(self, chunk: bytes) -> list:
        self.tail += chunk
        if len(self.tail) > self.TAIL:
            del self.tail[:-self.TAIL]
        return list(self.inner.feed(chunk))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("inner", "tail"):
            object.__setattr__(self, name, value)
        else:
            setattr(self.inner, name, value)


class SmlSource(PushSource):
    """An SML meter on ``config.port`` as a pipeline source (``protocol`` may also be auto/dlms/d0).

    The same listener life cycle as a DLMS push meter; only the listener reads more protocols.
    """

    kind = "sml"

    def __init__(self, config: ListenerConfig, listen_timeout: float = 30.0, *, protocol: str = "sml",
                 quirks: Optional[Dict[str, str]] = None, **options: Any) -> None:
        super().__init__(config, listen_timeout, **options)
        self.protocol = protocol
        self.quirks = quirks

    def _make_listener(self, emit: Emit, on_error: Callable[[DlmsError], None]) -> StreamListener:
        return StreamListener(self.config, emit, stats=self.stats, on_error=on_error, opener=self._opener,
                              protocol=self.protocol, quirks=self.quirks, **self._options)

    def status(self) -> Dict[str, Any]:
        listener = self.listener
        if not isinstance(listener, StreamListener):
            return {"connected": False, "connects": 0}
        return {"connected": listener.connected, "connects": listener.connects,
                "protocol": listener.detected_protocol, "notes": list(listener.notes.values())}


def make_sml_source(config: ListenerConfig, listen_timeout: float = 30.0, **kwargs: Any) -> SmlSource:
    return SmlSource(config, listen_timeout, **kwargs)


__all__ = ["StreamListener", "SmlSource", "make_sml_source"]
