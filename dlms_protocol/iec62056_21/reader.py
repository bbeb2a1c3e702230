"""Drive the sans-io readout dialogue over a real port: ``D0Reader(config).read()``.

This is the only D0 code that does I/O, and all of it goes through ``transport.Transport``.
It is meant to be called from a scheduler thread (SmartHomeNG, the CLI, the Victron service)
while another thread may call ``close()`` at any time: a running ``read()`` then ends within
about 0.2 s with a TransportError, and a later ``read()`` opens the port again.

The port is opened as the configured ``char_format`` says; for 7E1 that means 8N1 with the
parity bit added and checked in software (see ``transport``), because a UART set to 7E1 lets
characters with parity errors through. Damaged characters are counted as ``parity_errors``.

**Character format found by itself.** A 7E1 line reaches a reader in one of two readings:
``parity`` (8-bit bytes with the parity bit in bit 7: a local UART or USB head, opened 8N1 with
the parity bit handled in software) or ``plain`` (the bytes as they arrive, 7-bit characters
without a parity bit: a network head or ser2net whose own 7E1 UART handles the parity, read like
``char_format 8N1``). A serial device starts with ``parity``, a ``socket://`` with ``plain``.
When a read fails and the line looks like the other reading (a quarter or more of the characters
with a parity error; on a socket, no answer at all or bytes with bit 7 set), the other reading is
tried once; if it works it is kept, and the log says which one worked and how to configure it.
If not, the error names the parity errors when they are the likely cause.

Port handling follows the classic option ``reset_baudrate``: True opens the port at the initial
rate for every read and closes it afterwards; False keeps it open between reads. Either way the
dialogue starts with 300 Bd, because the meter itself drops back to 300 Bd after each readout.
A TransportError always closes the port, so an unplugged adapter is reopened on the next read.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional

from ..config import FORMATS, ReadoutConfig
from ..errors import DlmsError, ProtocolError, TransportError
from ..model import MeterData, Statistics
from ..ratelimit import log_notes
from .client import (D0Dialogue, DialogueResult, check_request_options, Done, Drain, Quiet, Receive, ResetInput, Send,
                     SetBaudrate, Wait)
from .datablock import Readout

if TYPE_CHECKING:  # the serial transport is imported when a port is opened, not with this module
    from ..transport import Transport

#: ``opener(port, baudrate, bytesize, parity, stopbits)`` → an open transport (a serial port, a
#: socket URL, a pty, a test fake); the default is the pyserial ``Transport``
Opener = Callable[[str, int, int, str, int], Any]


def open_serial(port: str, baudrate: int, bytesize: int, parity: str, stopbits: int,
                software_parity: Optional[bool] = None) -> "Transport":
    """The default opener: pyserial, imported only now (``software_parity``: see ``Transport.open``)."""
    from ..transport import Transport

    return Transport.open(port, baudrate, bytesize, parity, stopbits, software_parity=software_parity)

log = logging.getLogger(__name__)

#: the two readings of a 7E1 line (see the module docstring)
PARITY, PLAIN = "parity", "plain"
#: a read that failed with at least this many characters with a parity error, and at least this
#: share of all characters, points at the wrong reading of the line rather than at noise
MIN_BAD_CHARS = 4
BAD_SHARE = 0.25


@dataclass
class _LineCheck:
    """What one read saw of the line: characters, parity errors, bytes with bit 7 set (plain reading)."""

    chars: int = 0
    parity_errors: int = 0
    high_bytes: int = 0

    def mostly_parity_errors(self) -> bool:
        return self.parity_errors >= MIN_BAD_CHARS and self.parity_errors >= BAD_SHARE * self.chars

    def carries_parity_bits(self) -> bool:
        return self.chars == 0 or (self.high_bytes >= MIN_BAD_CHARS and self.high_bytes >= BAD_SHARE * self.chars)


class D0Reader:
    """Reads an IEC 62056-21 meter (request modes A/B/C/E, or a push-only D0 meter).

    ``progress`` is called with the number of bytes of the data message received so far,
    for displays of slow readouts. ``time_scale`` is for simulated meters only (see
    ``D0Dialogue``); keep 1.0 for real meters.
    """

    def __init__(self, config: ReadoutConfig, stats: Optional[Statistics] = None,
                 progress: Optional[Callable[[int], None]] = None, *, time_scale: float = 1.0,
                 opener: Opener = open_serial) -> None:
        check_request_options(config)  # a bad query code or address stops the start, not every read
        self.config = config
        self.stats = stats if stats is not None else Statistics()
        self.progress = progress
        self.time_scale = time_scale
        self._opener = opener
        self.last_readout: Optional[Readout] = None
        self.last_timings: Dict[str, float] = {}
        self.last_result: Optional[DialogueResult] = None
        #: the checksum this meter has sent (``BCC``/``CRC16``); once seen, a readout without it is
        #: rejected as damaged. None while the meter has sent none (its readouts are read unchecked).
        self.checksum_seen: Optional[str] = None
        self._read_lock = threading.Lock()   # one read at a time
        self._port_lock = threading.Lock()   # guards self._transport
        self._transport: Optional[Transport] = None
        self._transport_reading: Optional[str] = None
        self._closing = False
        #: how the line is read now (None: the configured character format has no other reading)
        self.reading: Optional[str] = self._configured_reading()
        self._tried_other = False
        #: the last read() also tried the other reading (it took longer than a normal read)
        self.last_read_tried_other = False
        self._check = _LineCheck()

    # ------------------------------------------------------------------ public API
    def read(self) -> MeterData:
        """One complete readout; raises a DlmsError subclass (also counted in ``stats``).

        A failed read that looks like the other reading of a 7E1 line is repeated once that way
        (see the module docstring); the reading that worked is kept for the following reads.
        """
        with self._read_lock:
            self._closing = False
            self.last_read_tried_other = False
            try:
                return self._read(self.reading)
            except ProtocolError as exc:
                check = self._check
                other = self._other_reading(check)
                if other is None:
                    raise self._explained(exc, check) from None
                self._tried_other = True
                self.last_read_tried_other = True
                log.debug("%s: read as %s failed (%s); trying the line as %s once", self.config.port,
                          self.reading, exc, other)
                try:
                    data = self._read(other, settle=True)
                except DlmsError as again:
                    log.debug("%s: read as %s failed too: %s", self.config.port, other, again)
                    raise self._explained(exc, check) from None
                self.reading = other
                log.warning("%s", self._found_text(other))
                return data

    def _read(self, reading: Optional[str], settle: bool = False) -> MeterData:
        """One readout with the line read as ``reading``; records what it saw in ``self._check``.

        ``settle``: first wait until the line is quiet (a mode C meter that got no ACK may send
        its whole readout at 300 Bd, which would swallow the next sign-on).
        """
        transport: Optional[Transport] = None
        dialogue = D0Dialogue(self.config, time_scale=self.time_scale, clock=time.monotonic,
                              expect=self.checksum_seen)
        parity_errors = 0
        bytes_read = 0
        self._check = _LineCheck()
        try:
            transport = self._port(reading)
            if settle:
                self._quiet(transport, Quiet(max(self.config.timeout, 1.5 / self.time_scale), 30.0))
            parity_errors = transport.parity_errors
            bytes_read = getattr(transport, "bytes_read", 0)
            result = self._drive(transport, dialogue)
        except DlmsError as exc:
            self._note_line(transport, parity_errors, bytes_read)
            self._count_parity_errors(transport, parity_errors)
            self._count_failures(dialogue)
            if isinstance(exc, TransportError) or self.config.reset_baudrate:
                self._drop(transport)
            if not (self._closing and isinstance(exc, TransportError)):
                self.stats.error(exc)
            log.debug("read from %s failed: %s", self.config.port, exc)
            raise
        self._count_parity_errors(transport, parity_errors)
        if self.config.reset_baudrate:
            self._drop(transport)
        self._count_failures(dialogue)
        self.last_result = result
        self.last_readout = result.readout
        self.last_timings = dict(result.timings)
        self.stats.count("bytes", result.bytes_received)
        for phase, seconds in result.timings.items():
            self.stats.timing(phase, seconds)
        self.stats.success("reads")
        self._learn_checksum(result.readout)
        return result.readout.to_meter_data(received=time.time())

    @property
    def checksum_state(self) -> str:
        """For status pages: how this meter's readouts are checked."""
        if not self.config.use_checksum:
            return "unchecked (use_checksum off)"
        if self.checksum_seen is not None:
            return f"{self.checksum_seen} required (the meter sends one)"
        if self.last_readout is not None:
            return "unchecked (the meter has sent no checksum)"
        return "not known yet"

    def close(self) -> None:
        """Close the port; a read running in another thread ends soon with TransportError."""
        self._closing = True
        with self._port_lock:
            transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()

    def __enter__(self) -> "D0Reader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------------- helpers
    def _learn_checksum(self, readout: Readout) -> None:
        """A meter that sent a BCC or CRC16 once must send it every time (see D0Dialogue ``expect``)."""
        if not self.config.use_checksum:
            return
        seen = readout.checksum
        if seen is not None and seen != self.checksum_seen:
            log.debug("meter on %s sends a %s: from now on every readout must carry one", self.config.port, seen)
            self.checksum_seen = seen
        elif seen is None and self.checksum_seen is None and self.stats.get("reads") == 1:
            log.info("meter on %s sends no checksum (BCC/CRC16): its readouts are read unchecked", self.config.port)

    def _count_failures(self, dialogue: D0Dialogue) -> None:
        """Attempts that failed and were retried still count: a noisy line must show in the statistics."""
        for exc in dialogue.failures:
            self.stats.error(exc)

    # ------------------------------------------------------------ character format
    def _configured_reading(self) -> Optional[str]:
        """The reading ``char_format`` gives: only 7E1 has two (see the module docstring)."""
        if self.config.char_format != "7E1":
            return None
        return PLAIN if str(self.config.port).startswith("socket://") else PARITY

    def _other_reading(self, check: _LineCheck) -> Optional[str]:
        """The reading to try once after a failed read, or None."""
        if self.reading is None or self._tried_other or self._closing:
            return None
        if self.reading == PARITY and check.mostly_parity_errors():
            return PLAIN
        if self.reading == PLAIN and check.carries_parity_bits():
            return PARITY
        return None

    def _note_line(self, transport: Optional[Transport], parity_errors: int, bytes_read: int) -> None:
        if transport is not None:
            self._check.parity_errors = transport.parity_errors - parity_errors
            self._check.chars = getattr(transport, "bytes_read", 0) - bytes_read

    def _found_text(self, reading: str) -> str:
        port = self.config.port
        if reading == PLAIN:
            return (f"{port} delivers 7-bit characters without a parity bit (a network IR head, or ser2net/Tasmota "
                    "at 7E1): reading it that way now, and it works. Set char_format: 8N1 to read it like this "
                    "from the start")
        return (f"{port} passes the meter's 7E1 characters as 8-bit bytes with the parity bit in bit 7 (the "
                "bridge's serial port runs 8N1): the parity bit is now added and checked here, and it works. "
                "Set the bridge's serial format to 7E1 (ser2net: 7DATABITS EVEN; Tasmota: SerialConfig 7E1), "
                "or leave it: the plugin finds this at every start")

    def _explained(self, exc: ProtocolError, check: _LineCheck) -> ProtocolError:
        """``exc``, naming the parity errors when they are the likely cause (same class, same counter)."""
        if not check.mostly_parity_errors():
            return exc
        tried = " (read as 7-bit characters without parity bit it failed too)" if self._tried_other else ""
        try:
            return type(exc)(
                f"{exc.cause}; {check.parity_errors} of {check.chars} characters arrived with a parity error{tried}",
                "so many parity errors mean a wrong character format rather than a bad position: a network IR "
                "head or ser2net delivering 7-bit characters needs char_format 8N1; otherwise check the IR head's "
                "position, the cable and the baud rate")
        except TypeError:  # an error class with another constructor: keep it as it is
            return exc

    def _count_parity_errors(self, transport: Optional[Transport], before: int) -> None:
        """Characters the transport found damaged (their data sets were dropped, or the read failed)."""
        if transport is not None and transport.parity_errors > before:
            self.stats.count("parity_errors", transport.parity_errors - before)

    def _port(self, reading: Optional[str] = None) -> Transport:
        with self._port_lock:
            current = self._transport
            if current is not None and current.is_open and self._transport_reading == reading:
                return current
        if current is not None:
            self._drop(current)
        cfg = self.config
        bytesize, parity, stopbits = FORMATS[cfg.char_format]
        rate = cfg.push_baudrate if cfg.mode == "push" else cfg.initial_baudrate
        if reading == PLAIN:  # the bytes as they arrive: 8N1, no parity bit added or checked
            transport = self._opener(cfg.port, rate, 8, "N", stopbits)
        elif reading == PARITY and self._opener is open_serial:  # also on socket://: parity bit in bit 7
            transport = open_serial(cfg.port, rate, bytesize, parity, stopbits, software_parity=True)
        else:
            transport = self._opener(cfg.port, rate, bytesize, parity, stopbits)
        transport.time_scale = self.time_scale
        with self._port_lock:
            if self._closing:  # close() came while we were opening
                transport.close()
                raise TransportError(f"reader for {cfg.port} was closed", "the plugin is stopping")
            self._transport = transport
            self._transport_reading = reading
        return transport

    def _drop(self, transport: Optional[Transport]) -> None:
        with self._port_lock:
            if transport is not None and self._transport is transport:
                self._transport = None
        if transport is not None:
            transport.close()

    @staticmethod
    def _log_notes(dialogue: D0Dialogue) -> None:
        log_notes(log, dialogue.take_notes())

    def _drive(self, transport: Transport, dialogue: D0Dialogue) -> DialogueResult:
        try:
            action = dialogue.start()
        finally:
            self._log_notes(dialogue)
        trace = _Trace(transport.url) if log.isEnabledFor(logging.DEBUG) else None
        while not isinstance(action, Done):
            received: Optional[bytes] = None
            if isinstance(action, Receive):
                received = transport.read_some(4096, action.timeout)
                if received:
                    if trace is not None:
                        trace.received(received)
                    if not getattr(transport, "software_parity", False):
                        self._check.high_bytes += sum(1 for b in received if b & 0x80)
            elif isinstance(action, Send):
                if trace is not None:
                    trace.flush()
                    log.debug("%s -> %r (%s)", transport.url, action.data[:80], action.what)
                transport.write(action.data)
            elif isinstance(action, Drain):
                transport.drain()
            elif isinstance(action, Wait):
                transport.sleep(action.seconds)
            elif isinstance(action, SetBaudrate):
                if transport.baudrate != action.baudrate:
                    transport.set_baudrate(action.baudrate)
            elif isinstance(action, ResetInput):
                transport.reset_input()
            elif isinstance(action, Quiet):
                self._quiet(transport, action)
            phase = dialogue.phase
            try:
                action = dialogue.step(received)
            finally:
                self._log_notes(dialogue)
            if received and self.progress is not None and phase in ("data", "push"):
                self.progress(dialogue.data_bytes)
        if trace is not None:
            trace.flush()
        return action.result

    @staticmethod
    def _quiet(transport: Transport, action: Quiet) -> None:
        """Discard bytes until the line was silent for ``action.seconds`` (at most ``action.limit``)."""
        deadline = time.monotonic() + action.limit
        while time.monotonic() < deadline:
            if not transport.read_some(4096, action.seconds):
                break
        transport.reset_input()


class _Trace:
    """The dialogue at debug level a line at a time: a meter read one byte per read (a slow USB
    adapter, a pty) gave one log line per byte, about 900 per readout."""

    __slots__ = ("url", "rx")
    MOST = 256  # bytes per log line (a line longer than that, or binary bytes, in several)

    def __init__(self, url: str) -> None:
        self.url = url
        self.rx = bytearray()

    def received(self, data: bytes) -> None:
        self.rx += data
        if b"\n" in data or len(self.rx) >= self.MOST:
            self.flush()

    def flush(self) -> None:
        while self.rx:
            log.debug("%s <- %r", self.url, bytes(self.rx[:self.MOST]))
            del self.rx[:self.MOST]


__all__ = ["D0Reader"]
