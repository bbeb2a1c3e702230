"""SML meters (and ``protocol: auto``) on a port: the push listener's thread with another decoder.

The push listener already owns the port, reconnects with back-off, rate-limits and never dies
on bad input; a self-sending SML meter needs exactly that, so ``StreamListener`` only swaps
its decoder (``detect.decoders.make_decoder``: sml, dlms, d0 or auto) and logs each firmware
quirk and the reduced data set once, with what to do. ``SmlSource`` is the pipeline ``Source``.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from ..config import ListenerConfig, listen_line, parse_format
from ..dlms.listener import READ_SLICE, PushListener
from ..dlms.source import PushSource
from ..errors import DlmsError
from ..model import MeterData, Statistics
from ..pipeline import Emit
from ..transport import Transport

log = logging.getLogger(__name__)

#: the line search's window per line setting: seconds without a byte (a meter that pushes every
#: 10 s must send once inside it), and once bytes came (two such periods plus a long frame at
#: 2400 Bd: opened inside one push, the next must still end inside the window)
SEARCH_LISTEN, SEARCH_DWELL = 12.0, 25.0
#: in the first round, a line whose bytes came in this many bursts (each ended by SEARCH_QUIET s
#: without a byte: two empty reads of READ_SLICE) and none passed a check is left before
#: SEARCH_DWELL: a meter that pushes every second or two (SML, D0) heard at another line's speed
#: costs a few seconds, not 25. Four: opened inside a push whose message comes in two bursts (an
#: E450 pauses 3 s before its last frame), the next push is whole by the fourth. Later rounds give
#: every line the whole dwell.
SEARCH_BURSTS, SEARCH_QUIET = 4, 0.35


def usual_lines() -> Tuple[Tuple[int, str], ...]:
    """The search's order for a configuration that names no line: ``auto``'s usual one first (what
    such a configuration always listened at, so a DLMS push meter at 2400 8E1 is found at once),
    then the rest of ``detect``'s passive lines, most common first."""
    from ..detect.probe import PASSIVE

    first = listen_line("auto")
    return (first,) + tuple(line for line in PASSIVE if line != first)


class StreamListener(PushListener):
    """A ``PushListener`` whose decoder is chosen by ``protocol`` (default ``sml``).

    ``quirks``: SML quirk modes (``sml.decoder.parse_quirks``). ``notes`` keeps every note
    logged so far (quirks seen, reduced data set), for status displays.
    """

    def __init__(self, config: ListenerConfig, on_data: Callable[[MeterData], None],
                 stats: Optional[Statistics] = None, on_error: Optional[Callable[[DlmsError], None]] = None,
                 *, protocol: str = "sml", quirks: Optional[Dict[str, str]] = None,
                 search: Sequence[Tuple[int, str]] = (), **kwargs: Any) -> None:
        """``search``: (baud rate, format) line settings to try in turn, from ``config``'s,
        until a message passes its checks (a configuration that names no line: the usual ones
        of ``detect``); the line found is kept from then on."""
        self._lines = [(int(baud), parse_format(fmt)) for baud, fmt in search]
        if self._lines:  # (the search begins with the first)
            baud, (bytesize, parity, stopbits) = self._lines[0]
            config = dataclasses.replace(config, baudrate=baud, bytesize=bytesize, parity=parity, stopbits=stopbits)
        super().__init__(config, on_data, stats, on_error, **kwargs)
        self.protocol = protocol
        self.quirks = quirks
        self.decoder: Any = self._new_decoder()
        self.notes: Dict[str, str] = {}
        self.searching = bool(self._lines)
        self._line = 0
        self._rounds = 0  # times every setting was tried
        self._line_done = False
        self._reopen = False
        user_hook = self.on_message

        def on_message(msg: Any) -> None:
            self._note(msg)
            if user_hook is not None:
                user_hook(msg)

        self.on_message = on_message

    def _new_decoder(self) -> Any:
        from ..detect.decoders import make_decoder

        return _Recording(make_decoder(self.protocol, self.config, self.stats, self._decoder_error,
                                       quirks=self.quirks))

    def _logs_decode_errors(self) -> bool:
        # the DLMS decoder's errors, once it is the one in use (an auto search's candidates see
        # each other's bytes as noise); SML and D0 say theirs through the health and statistics
        return self.detected_protocol == "dlms" and not self.searching

    # ------------------------------------------------------------- the line search
    def _read_loop(self, port: Transport) -> None:
        if self.searching and not self._search_window(port):
            return  # (the port is closed and the next line opened: _next_line)
        super()._read_loop(port)

    def _search_window(self, port: Transport) -> bool:
        """Listen at this line like ``detect``: SEARCH_LISTEN s, SEARCH_DWELL s once bytes came
        (a push period can be 10 s), in the first round less once SEARCH_BURSTS bursts all failed;
        True when a message passed its checks (delivered)."""
        start = time.monotonic()
        end = start + SEARCH_LISTEN
        heard = False
        bursts, last_byte = 0, None  # (last_byte: None between bursts)
        while not self._stop.is_set():
            data = port.read_some(4096, READ_SLICE, 64)  # (not a wake-up per byte: a search is no hurry)
            now = time.monotonic()
            if not data and last_byte is not None and now - last_byte >= SEARCH_QUIET:
                bursts, last_byte = bursts + 1, None
                if bursts >= SEARCH_BURSTS and self._rounds == 0:
                    end = now  # (bursts that all failed: the line's meter speaks at another setting)
            if data:
                last_byte = now
                if not heard:
                    heard, end = True, start + SEARCH_DWELL
                messages = self.decoder.feed(data)
                # (auto recognises a protocol by a checksum that held: also an encrypted frame
                # without its key, whose error then says what is missing)
                if messages or self.detected_protocol is not None:
                    keep = self._found(time.monotonic() - start)  # (first: its outputs see the line found)
                    for msg in messages:
                        self._deliver(msg)
                    return keep
            if now >= end:
                self._line_done = True
                return False
        return False

    def _found(self, took: float) -> bool:
        """Keep the line (True), or reopen it once as 7E1 (False): a D0 telegram read as 8N1 is
        the same bits, but only 7E1 has its parity bits checked (``transport``)."""
        self.searching = False
        c = self.config
        if self.detected_protocol == "d0" and (c.bytesize, c.parity) == (8, "N"):
            self.config = dataclasses.replace(c, bytesize=7, parity="E")
            self.decoder = self._new_decoder()
            self._reopen = True
            c = self.config
        line = f"{c.baudrate} Bd {c.bytesize}{c.parity}{c.stopbits}"
        note = (f"line search: the meter sends at {line}; set this speed and format in the configuration "
                "to skip the search at every start")
        self.notes["line search"] = note
        log.info("%s: %s (found in %.0f s)", c.port, note, took)
        return not self._reopen

    def _next_line(self) -> bool:
        if self._reopen:  # (the line found, as 7E1)
            self._reopen = False
            return True
        if not self._line_done:
            return False
        self._line_done = False
        self._line = (self._line + 1) % len(self._lines)
        if self._line == 0:
            self._rounds += 1
        baud, (bytesize, parity, stopbits) = self._lines[self._line]
        self.config = dataclasses.replace(self.config, baudrate=baud, bytesize=bytesize, parity=parity,
                                          stopbits=stopbits)
        self.decoder = self._new_decoder()  # (a D0 decoder knows its character format)
        log.debug("%s: nothing passed a check; listening at %d Bd %d%s%d now", self.config.port, baud, bytesize,
                  parity, stopbits)
        return True

    @property
    def detected_protocol(self) -> Optional[str]:
        """The protocol in use: the configured one, or what ``auto`` recognised (None: not yet)."""
        return getattr(self.decoder.inner, "protocol", None) if self.protocol == "auto" else self.protocol

    def diagnosis(self) -> str:
        """Why nothing readable arrived (``detect.report.diagnose`` on the last bytes and counters)."""
        from ..detect.report import diagnose

        cfg = self.config
        if self.searching:
            lines = self._lines[:self._line + 1] if self._rounds == 0 else self._lines
            tried = ", ".join(f"{baud} {size}{parity}{stop}" for baud, (size, parity, stop) in lines)
            still = "" if self._rounds else f" so far (of {len(self._lines)})"
            return (f"searching the line setting: no message passed its checks at {tried}{still}; check that "
                    "the interface sends (an SML meter's optical INFO interface may need its PIN entered), or "
                    "run `python -m dlms_protocol detect PORT` with the plugin stopped")
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

    def stale_hint(self) -> Optional[str]:
        """The last frame that failed (``PushSource``), and what the bytes that came say with its
        fix (``StreamListener.diagnosis``: nothing arrives, a search, a wrong speed, CRCs that
        fail, a key that is missing): one text for every host, SmartHomeNG, serve and MQTT alike."""
        listener = self.listener
        said = [super().stale_hint(), listener.diagnosis() if isinstance(listener, StreamListener) else None]
        return "; ".join(text for text in said if text) or None

    def status(self) -> Dict[str, Any]:
        listener = self.listener
        if not isinstance(listener, StreamListener):
            return {"connected": False, "connects": 0}
        return {"connected": listener.connected, "connects": listener.connects,
                "protocol": listener.detected_protocol, "notes": list(listener.notes.values())}


def make_sml_source(config: ListenerConfig, listen_timeout: float = 30.0, **kwargs: Any) -> SmlSource:
    return SmlSource(config, listen_timeout, **kwargs)


__all__ = ["StreamListener", "SmlSource", "make_sml_source", "usual_lines"]
