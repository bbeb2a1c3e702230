"""One stream-decoder interface for SML, DLMS push and push-only D0 (sans-io), and ``AutoDecoder``.

Every decoder has ``feed(bytes) -> [message]``, ``settle(quiet)``, ``finish()`` and ``reset()``, logs nothing
(its driver does: errors through ``on_error``, notes through ``take_notes`` where it has any), and a
message has ``to_meter_data(text, received)``, ``to_json()`` and ``render()`` (``PushMessage``, ``SmlTelegram``,
``D0Telegram``), so the push listener's thread, the CLI and ``detect`` drive any of them.
``AutoDecoder`` feeds every candidate until one delivers a *verified* message and then keeps
only that one: nothing is guessed from byte patterns, a protocol is chosen by a checksum that held.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, List, Optional, Sequence

from ..config import ListenerConfig
from ..errors import ConfigurationError, DlmsError, SecurityError
from ..model import MeterData, Statistics

PROTOCOLS = ("auto", "dlms", "sml", "d0")
ErrorSink = Optional[Callable[[DlmsError], None]]


@dataclass(frozen=True)
class D0Telegram:
    """A push-only D0 telegram (``/ident … !``) that passed its checks."""

    readout: Any  # iec62056_21.datablock.Readout

    def to_meter_data(self, text: bool = True, received: Optional[float] = None) -> MeterData:
        data = replace(self.readout.to_meter_data(received), message=self)
        return data if text else replace(data, text="")

    def to_json(self) -> dict:
        return dict(self.readout.to_json(), protocol="d0")

    def render(self) -> str:
        return self.to_meter_data().text


class D0PushDecoder:
    """Push-only D0 telegrams from a byte stream: the readout side's splitter and parser."""

    def __init__(self, stats: Optional[Statistics] = None, on_error: ErrorSink = None,
                 use_checksum: bool = True) -> None:
        from ..iec62056_21.stream import D0StreamSplitter

        self.stats = stats if stats is not None else Statistics()
        self.on_error = on_error
        self.use_checksum = use_checksum
        self._splitter_cls = D0StreamSplitter
        self.splitter = D0StreamSplitter(require_etx=use_checksum)

    def feed(self, chunk: bytes) -> List[D0Telegram]:
        from ..iec62056_21.datablock import parse_readout

        if chunk:
            self.stats.count("bytes", len(chunk))  # (as the SML and DLMS decoders count them)
        out: List[D0Telegram] = []
        for telegram in self.splitter.feed(chunk):
            self.stats.count("frames")
            try:
                out.append(D0Telegram(parse_readout(telegram, use_checksum=self.use_checksum)))
            except DlmsError as exc:
                self.stats.error(exc)
                if self.on_error is not None:
                    self.on_error(exc)
                continue
            self.stats.success("messages")
        return out

    def settle(self, quiet: float = math.inf) -> list:
        """A quiet line: nothing here waits for it (a telegram ends with ``!`` and its checksum)."""
        return []

    def finish(self) -> list:
        return []

    def reset(self) -> None:
        self.splitter = self._splitter_cls(require_etx=self.use_checksum)


def make_decoder(protocol: str, config: Optional[ListenerConfig] = None, stats: Optional[Statistics] = None,
                 on_error: ErrorSink = None, *, quirks: Optional[Dict[str, str]] = None) -> Any:
    """The stream decoder for ``protocol`` (auto, dlms, sml, d0)."""
    config = config if config is not None else ListenerConfig(port="-")
    if protocol == "sml":
        from ..sml.decoder import SmlDecoder

        return SmlDecoder(stats, on_error, quirks=quirks)
    if protocol == "dlms":
        from ..dlms.decoder import PushDecoder

        return PushDecoder(config, stats, on_error=on_error)
    if protocol == "d0":
        return D0PushDecoder(stats, on_error)
    if protocol == "auto":
        return AutoDecoder(config, stats, on_error, quirks=quirks)
    raise ConfigurationError(f"protocol {protocol!r} unknown", "use " + ", ".join(PROTOCOLS))


#: frames that passed their link checksum (HDLC FCS, M-Bus checksum) but not the security check that
#: recognise their protocol: a wrong or missing key is then said, and a line search stops there
#: (two: one such frame in random bytes at a wrong speed is already rare)
KEYLESS_FRAMES = 2

#: the success counters a candidate keeps in its own statistics until it is recognised (its errors
#: are counted from ``_pending``, the bytes by the AutoDecoder itself, its messages as they come out)
_PROGRESS = ("frames", "apdus", "decrypted")


class AutoDecoder:
    """Feed every candidate protocol until one delivers a verified message, then only that one.

    Errors of the candidates are not reported while nothing has been recognised (a DLMS
    deframer sees SML as noise), except security errors (an encrypted push without a key is
    the answer, not noise); once one is recognised, its errors and its progress (frames, APDUs,
    decrypted messages) since the start are counted, so the figures are the ones that protocol's
    own decoder would show and do not depend on how the bytes were cut. ``errors`` keeps the
    last one per protocol for the diagnosis.
    """

    def __init__(self, config: Optional[ListenerConfig] = None, stats: Optional[Statistics] = None,
                 on_error: ErrorSink = None, *, candidates: Sequence[str] = ("sml", "dlms", "d0"),
                 quirks: Optional[Dict[str, str]] = None) -> None:
        self.stats = stats if stats is not None else Statistics()
        self.on_error = on_error
        self.protocol: Optional[str] = None
        self.errors: Dict[str, DlmsError] = {}
        self._pending: Dict[str, List[DlmsError]] = {}
        #: security errors of frames that passed their link checksum, per candidate: that is the
        #: meter's protocol, only the key is wrong or missing (``KEYLESS_FRAMES`` of them decide)
        self._keyless: Dict[str, int] = {}
        self._candidates: Dict[str, Any] = {}
        for name in candidates:
            self._candidates[name] = make_decoder(name, config, Statistics(), self._collector(name), quirks=quirks)

    def _collector(self, name: str) -> Callable[[DlmsError], None]:
        def collect(exc: DlmsError) -> None:
            self.errors[name] = exc
            if self.protocol is None:
                pending = self._pending.setdefault(name, [])
                if len(pending) < 1000:
                    pending.append(exc)
            early = self.protocol is None and isinstance(exc, SecurityError)
            if early:  # once recognised, the decoder counts into self.stats itself
                self.stats.error(exc)
                if exc.link_check:
                    self._keyless[name] = self._keyless.get(name, 0) + 1
            if (early or self.protocol == name) and self.on_error is not None:
                self.on_error(exc)
        return collect

    @property
    def decoder(self) -> Any:
        return self._candidates.get(self.protocol or "")

    @property
    def notes(self) -> List[Any]:
        """The recognised decoder's notes for the driver's log (``PushDecoder.take_notes``); none before."""
        return getattr(self.decoder, "notes", None) or []

    def take_notes(self) -> List[Any]:
        take = getattr(self.decoder, "take_notes", None)
        return take() if take is not None else []

    def feed(self, chunk: bytes) -> list:
        if self.protocol is not None:
            return list(self._candidates[self.protocol].feed(chunk))
        self.stats.count("bytes", len(chunk))
        for name, dec in list(self._candidates.items()):
            found = dec.feed(chunk)
            if found or self._keyless.get(name, 0) >= KEYLESS_FRAMES:
                return self._recognised(name, dec, found)
        return []

    def settle(self, quiet: float = math.inf) -> list:
        """A quiet line (the listener's read without a byte; ``quiet`` s since the last one): what a
        decoder held for more bytes."""
        if self.protocol is not None:
            return list(self._candidates[self.protocol].settle(quiet))
        for name, dec in list(self._candidates.items()):
            found = dec.settle(quiet)
            if found or self._keyless.get(name, 0) >= KEYLESS_FRAMES:
                return self._recognised(name, dec, found)
        return []

    def _recognised(self, name: str, dec: Any, found: list) -> list:
        """``name`` delivered its first messages: from now on only it decodes."""
        self.protocol = name
        # the recognised protocol's errors count from the start, however the bytes were cut
        for exc in self._pending.get(name, []):
            if not isinstance(exc, SecurityError):
                self.stats.error(exc)
                if self.on_error is not None:
                    self.on_error(exc)
        self._pending.clear()
        self._candidates = {name: dec}
        own, dec.stats = dec.stats, self.stats
        for counter in _PROGRESS:  # what it counted so far (its frames, not its messages: segments)
            n = own.get(counter)
            if n:
                self.stats.count(counter, n)
        for _ in found:
            self.stats.success("messages")
        return list(found)

    def finish(self) -> list:
        dec = self.decoder
        return list(dec.finish()) if dec is not None else []

    def reset(self) -> None:
        for dec in self._candidates.values():
            dec.reset()


__all__ = ["PROTOCOLS", "make_decoder", "AutoDecoder", "D0PushDecoder", "D0Telegram"]
