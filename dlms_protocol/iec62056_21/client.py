"""One IEC 62056-21 readout as a sans-io dialogue: actions out, received bytes in.

The dialogue never touches a port. It tells its driver what to do next (``Send`` bytes,
``Drain`` the output, ``Wait``, ``SetBaudrate``, ``ResetInput``, ``Receive`` with a time-out,
``Quiet`` the line) and is fed whatever arrived. ``reader.D0Reader`` drives it over a
``Transport``; tests can drive it with scripted bytes. The protocol facts it follows are in
docs/iec62056-21.md; the choices that matter in the field:

* **Sign-on** ``/<query code><address>!CR LF`` at 300 Bd, optionally after the NUL wake-up of
  battery meters (2.2 s of NULs, 1.6 s pause). Echoes of the reader's own bytes (half-duplex IR
  heads) and noise before ``/`` are skipped; a line ending in ``!`` is an echo of a request,
  never an identification.
* **Mode C/E**: rest for the meter's reaction time (200 ms, 20 ms with the lower-case hint),
  send ``ACK 0 Z 0`` at the old rate, drain, and re-program the UART ``baud_switch_delay`` after
  handing over the ACK, but never before the ACK has left the wire. ``baudrate`` ``auto``
  follows the meter's offer; a number is a ceiling (300 keeps the whole readout at 300 Bd).
  Mode E (HDLC offered) is read as mode C. **Mode B** switches without an ACK, **mode A** stays.
* **End of the data message**: ``ETX`` and exactly one BCC byte (the BCC may be any byte,
  even STX or ETX), then stop at once — no waiting for a time-out. Frames without STX (and,
  with ``use_checksum`` off, also framed ones without ETX) end at ``!`` CR LF after a grace of a
  few character times; with ``use_checksum`` a message that began with STX must end in ETX + BCC.
* **Time-outs**: ``identification_timeout`` after the sign-on is on the wire, then the
  per-character time-out ``timeout`` (ta) between bytes, never one time-out for a whole message
  (a 9.5 kB readout at 300 Bd takes five minutes).
* **Fallback**: a failed attempt is retried ``retries`` times; when it failed above the initial
  rate, the next attempt asks for the next lower rate.
* **Push-only D0 meters** (``mode="push"``): listen at ``push_baudrate``, resynchronise on ``/``
  and take the first complete telegram; with ``use_checksum`` a telegram that began with STX
  but lost its ETX is skipped (``stream.D0StreamSplitter(require_etx=True)``).
* **Parity**: ``transport.Transport`` checks the parity bit of 7E1 characters and hands over a
  damaged one as ``PARITY_ERROR`` (0x80). That byte matches no structure character here (bit 7
  is masked: NUL), an identification line holding one is refused as damaged, and the data
  block parser turns it into U+FFFD, which no address or value may contain.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Dict, Generator, List, Optional, Tuple, Union

from ..config import FORMATS, PARITY_ERROR, ReadoutConfig, bits_per_char
from ..errors import (ChecksumMissingError, ConfigurationError, FramingError, IdentificationError, NoResponseError,
                      ProtocolError)
from .datablock import CHECKSUMS, MAX_READOUT, Readout, parse_readout
from .identification import RATE_TO_BAUD_CHAR_C, Identification, parse_identification
from .stream import D0StreamSplitter


STX, ETX, ACK, NAK, NUL, LF, CR = 0x02, 0x03, 0x06, 0x15, 0x00, 0x0A, 0x0D

#: standard rates, lowest first (the ceiling for fallbacks walks down this list)
STANDARD_RATES: Tuple[int, ...] = tuple(sorted(RATE_TO_BAUD_CHAR_C))
WAKEUP_SECONDS = 2.2   # NULs on the wire (standard: 2.1-2.3 s)
WAKEUP_PAUSE = 1.6     # silence before the sign-on (standard: 1.5-1.7 s)
REACTION_TIME = 0.2    # tr min; 20 ms when the meter announces it
SHORT_REACTION_TIME = 0.02
MAX_MESSAGE = MAX_READOUT - 256  # a data message bigger than this is not a readout (with its identification line)
MIN_MESSAGE_CAP = 16384     # the byte cap sized from the line speed is never below this
MAX_NOISE = 1024            # bytes of noise/echo tolerated before the identification
MAX_IDENT_LINE = 128
MAX_JUNK_BEFORE_DATA = 64   # unprintable bytes before STX / the first data line
END_GRACE_CHARS = 12        # character times to wait for ETX after '!' CR LF
END_GRACE_JITTER = 0.05     # plus this (seconds, not scaled): USB latency, scheduling
_REQUEST_CHARS = re.compile(r"[\x22-\x2e\x30-\x7e]{0,32}")  # printable ASCII except ! and /


# --------------------------------------------------------------------------- actions
@dataclass(frozen=True)
class Send:
    """Write these bytes."""

    data: bytes
    what: str


@dataclass(frozen=True)
class Drain:
    """Wait until everything written has left the wire (tcdrain plus the estimated wire time)."""


@dataclass(frozen=True)
class Wait:
    """Sleep this long (seconds, already time-scaled)."""

    seconds: float
    what: str


@dataclass(frozen=True)
class SetBaudrate:
    """Re-program the port (input and output) to this rate."""

    baudrate: int


@dataclass(frozen=True)
class ResetInput:
    """Discard everything in the receive buffer."""


@dataclass(frozen=True)
class Receive:
    """Wait up to ``timeout`` s for bytes; feed what arrived, or ``b""`` on time-out."""

    timeout: float
    what: str


@dataclass(frozen=True)
class Quiet:
    """Read and discard until the line was silent for ``seconds`` (but at most ``limit`` s)."""

    seconds: float
    limit: float


@dataclass(frozen=True)
class DialogueResult:
    """A verified readout and how it went."""

    readout: Readout
    timings: Dict[str, float]
    baudrate: int           # rate of the data message
    bytes_received: int     # bytes of identification + data message
    attempts: int


@dataclass(frozen=True)
class Done:
    """The dialogue is over; ``result`` holds the readout."""

    result: DialogueResult


Action = Union[Send, Drain, Wait, SetBaudrate, ResetInput, Receive, Quiet, Done]


def choose_rate(offer: int, ceiling: Union[str, int]) -> int:
    """The highest standard rate <= the meter's offer and <= the configured ceiling."""
    limit = offer if ceiling == "auto" else min(offer, int(ceiling))
    fitting = [r for r in STANDARD_RATES if r <= limit]
    return fitting[-1] if fitting else STANDARD_RATES[0]


def sign_on_request(query_code: str = "?", address: str = "") -> bytes:
    """``/?!CR LF``, ``/?<address>!CR LF`` or ``/2!CR LF`` (query code '2', e.g. Elster AS1440)."""
    return b"/" + query_code.encode("ascii") + address.encode("ascii") + b"!\r\n"


def acknowledgement(rate: int, protocol: str = "0", mode: str = "0") -> bytes:
    """``ACK V Z Y CR LF``: V=0 normal procedure, Z the rate's character, Y=0 data readout."""
    return b"\x06" + protocol.encode() + RATE_TO_BAUD_CHAR_C[rate].encode() + mode.encode() + b"\r\n"


def check_request_options(config: ReadoutConfig) -> None:
    """Raise ConfigurationError for a query code or device address that cannot go into a sign-on.

    Called when a reader is created, so a typo stops the start-up with one clear error instead
    of failing every cycle.
    """
    if not isinstance(config.query_code, str) or len(config.query_code) != 1 \
            or not _REQUEST_CHARS.fullmatch(config.query_code):
        raise ConfigurationError(f"query code {config.query_code!r} must be one character",
                                 "use ? (standard) or e.g. 2 for /2! (Elster AS1440)")
    if not isinstance(config.device_address, str) or not _REQUEST_CHARS.fullmatch(config.device_address):
        raise ConfigurationError(f"device address {config.device_address!r} cannot go into a sign-on",
                                 "use up to 32 printable ASCII characters without / and !, or leave it empty")


# ------------------------------------------------------------------------- dialogue
class D0Dialogue:
    """The readout dialogue for one ``ReadoutConfig``. Usage (what a driver does)::

        dialogue = D0Dialogue(config, clock=time.monotonic)
        action = dialogue.start()
        while not isinstance(action, Done):
            ...perform action...
            action = dialogue.step(received_bytes_or_None)

    ``step`` raises the DlmsError that ends the dialogue (NoResponseError, IdentificationError,
    FramingError, ChecksumError). ``time_scale`` divides the times the protocol fixes (reaction
    time, wake-up, end grace), for simulated meters that run faster than real ones; the
    configured time-outs and the baud-switch delay are used as given.
    """

    def __init__(self, config: ReadoutConfig, *, time_scale: float = 1.0,
                 clock: Callable[[], float], expect: Optional[str] = None) -> None:
        check_request_options(config)
        if expect is not None and expect not in CHECKSUMS:
            raise ConfigurationError(f"checksum {expect!r} unknown", "expect BCC, CRC16 or None")
        self.config = config
        #: the checksum this meter sent before (``BCC``/``CRC16``): a readout without it is rejected
        self.expect = expect if config.use_checksum else None
        self.time_scale = time_scale
        self.clock = clock
        bytesize, parity, stopbits = FORMATS[config.char_format]
        self.bits = bits_per_char(bytesize, parity, stopbits)
        #: what the dialogue is doing: start, wakeup, identification, acknowledge, data, push, done
        self.phase = "start"
        #: bytes of the current data message so far (for progress displays)
        self.data_bytes = 0
        self.rate = config.initial_baudrate
        self.identification: Optional[Identification] = None
        self.timings: Dict[str, float] = {}
        #: errors of failed attempts that were retried (the reader counts them in its statistics)
        self.failures: List[ProtocolError] = []
        #: what the driver logs, (level name, text) each: ``take_notes`` (the dialogue has no logger)
        self.notes: List[Tuple[str, str]] = []
        self._gen = self._run()
        self._started = False
        self._stx_seen = False

    # ----------------------------------------------------------------- driver side
    def take_notes(self) -> List[Tuple[str, str]]:
        """The notes since the last call ("info" or "debug", text), for the driver's log."""
        notes, self.notes = self.notes, []
        return notes

    def _note(self, level: str, text: str) -> None:
        self.notes.append((level, text))

    def start(self) -> Action:
        if self._started:
            raise RuntimeError("dialogue already started")
        self._started = True
        return next(self._gen)

    def step(self, received: Optional[bytes] = None) -> Action:
        """Continue after the last action; pass the bytes a ``Receive`` got (``b""`` = time-out)."""
        return self._gen.send(received)

    # ------------------------------------------------------------------- protocol
    def _scaled(self, seconds: float) -> float:
        return seconds / self.time_scale

    def _char_time(self, rate: int) -> float:
        return self.bits / rate / self.time_scale

    def _run(self) -> Generator[Action, Optional[bytes], None]:
        t0 = self.clock()
        if self.config.mode == "push":
            readout, nbytes = yield from self._push()
            attempts = 1
        else:
            readout, nbytes, attempts = yield from self._with_retries()
        self.timings["total"] = self.clock() - t0
        self.phase = "done"
        yield Done(DialogueResult(readout, dict(self.timings), self.rate, nbytes, attempts))

    def _with_retries(self) -> Generator[Action, Optional[bytes], Tuple[Readout, int, int]]:
        cfg = self.config
        ceiling: Union[str, int] = cfg.baudrate
        tries = 1 + max(0, int(cfg.retries))
        for attempt in range(1, tries + 1):
            if attempt > 1:
                # Let the meter finish (or give up on) the failed session and fall back to 300 Bd.
                yield SetBaudrate(cfg.initial_baudrate)
                self.rate = cfg.initial_baudrate
                yield Quiet(max(cfg.timeout, self._scaled(1.5)), 30.0)
            try:
                readout, nbytes = yield from self._attempt(ceiling)
                return readout, nbytes, attempt
            except ProtocolError as exc:
                failed_at = self.rate
                if attempt >= tries:
                    if self.failures:
                        _keep_first_cause(exc, self.failures[0])
                    raise
                self.failures.append(exc)
                if failed_at > cfg.initial_baudrate:
                    lower = [r for r in STANDARD_RATES if cfg.initial_baudrate <= r < failed_at]
                    ceiling = lower[-1] if lower else cfg.initial_baudrate
                # info, not warning: a retry that works is routine (the statistics count it), and a
                # readout that fails in the end is reported once by the caller
                self._note("info", f"readout attempt {attempt} failed at {failed_at} Bd ({exc}); retrying"
                           + (f" at up to {ceiling} Bd" if ceiling != "auto" else ""))
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempt(self, ceiling: Union[str, int]) -> Generator[Action, Optional[bytes], Tuple[Readout, int]]:
        cfg = self.config
        self.rate = cfg.initial_baudrate
        self.data_bytes = 0
        yield SetBaudrate(self.rate)
        yield ResetInput()
        if cfg.wakeup:
            self.phase = "wakeup"
            tw = self.clock()
            count = math.ceil(WAKEUP_SECONDS * self.rate / self.bits)
            yield Send(b"\x00" * count, "wake-up")
            yield Drain()
            if not cfg.no_waiting:
                yield Wait(self._scaled(WAKEUP_PAUSE), "wake-up pause")
            yield ResetInput()  # IR heads echo the NULs
            self.timings["wakeup"] = self.clock() - tw

        # --- sign-on and identification
        self.phase = "identification"
        request = sign_on_request(cfg.query_code, cfg.device_address)
        t_signon = self.clock()
        yield Send(request, "sign-on")
        yield Drain()
        ident, line, leftover = yield from self._receive_identification()
        t_ident = self.clock()
        self.identification = ident
        self.timings["identification"] = t_ident - t_signon
        self._note("debug", f"identification {ident.raw!r}: mode {ident.mode}, up to {ident.baudrate} Bd")

        # --- mode-specific switch
        self.phase = "acknowledge"
        if ident.mode in ("C", "E"):
            if ident.mode == "E":
                self._note("info", f"meter {ident.raw} offers mode E (HDLC); reading it in mode C")
            target = choose_rate(ident.baudrate, ceiling)
            if not cfg.no_waiting:
                rest = self._scaled(SHORT_REACTION_TIME if ident.short_reaction else REACTION_TIME)
                remaining = t_ident + rest - self.clock()
                if remaining > 0:
                    yield Wait(remaining, "reaction time")
            t_ack = self.clock()
            yield Send(acknowledgement(target), "acknowledgement")
            if target != self.rate:
                yield Drain()
                remaining = t_ack + cfg.baud_switch_delay - self.clock()
                if remaining > 0:
                    yield Wait(remaining, "baud switch delay")
                yield SetBaudrate(target)
                self.rate = target
        elif ident.mode == "B":
            if ceiling != "auto" and ident.baudrate > int(ceiling):
                self._note("info", f"mode B meter {ident.raw} switches to {ident.baudrate} Bd by itself; the "
                                   f"ceiling {ceiling} cannot lower that")
            leftover = b""  # anything after the identification is at the new rate
            if ident.baudrate != self.rate:
                yield SetBaudrate(ident.baudrate)
                self.rate = ident.baudrate
        message, has_bcc, t_first = yield from self._receive_data(leftover)
        t_end = self.clock()
        self.timings["switch"] = max(0.0, t_first - t_ident)
        self.timings["data"] = t_end - t_first
        raw = line + message
        # use_checksum also covers a DSMR CRC16 after '!' (frames without ETX/BCC)
        readout = parse_readout(raw, use_checksum=cfg.use_checksum, expect=self.expect)
        if cfg.use_checksum and not has_bcc:
            self._note("debug", f"data message without BCC from {ident.raw}: nothing to check")
        return readout, len(raw)

    def _receive_identification(self) -> Generator[Action, Optional[bytes], Tuple[Identification, bytes, bytes]]:
        cfg = self.config
        buf = bytearray()
        skipped = 0
        echoes = 0
        in_line = False
        bad: Optional[IdentificationError] = None
        while True:
            timeout = cfg.timeout if in_line else cfg.identification_timeout
            chunk = yield Receive(timeout, "identification")
            if not chunk:
                raise self._no_identification(buf, echoes, skipped, bad, timeout)
            buf += chunk
            while True:
                start = buf.find(b"/")
                if start < 0:
                    skipped += len(buf)
                    buf.clear()
                    in_line = False
                    break
                if start:
                    skipped += start
                    del buf[:start]
                end = buf.find(b"\n")
                if end < 0:
                    if len(buf) > MAX_IDENT_LINE:  # a '/' in noise, not a line: look for the next one
                        skipped += 1
                        del buf[:1]
                        continue
                    in_line = True
                    break
                line = bytes(buf[:end + 1])
                del buf[:end + 1]
                in_line = False
                body = bytes(b & 0x7F for b in line).rstrip(b"\r\n")
                if body.endswith(b"!"):
                    echoes += 1
                    self._note("debug", f"skipping echo of a request: {line!r}")
                    continue
                if PARITY_ERROR in line:
                    bad = IdentificationError(
                        f"identification {bytes(body)!r} damaged on the line (parity error)",
                        "check the IR head's position and the cable; the reader tries again")
                    skipped += len(line)
                    self._note("debug", f"damaged identification: {line!r}")
                    continue
                try:
                    return parse_identification(line), line, bytes(buf)
                except IdentificationError as exc:
                    bad = exc
                    skipped += len(line)
                    self._note("debug", f"not an identification: {line!r} ({exc})")
            if skipped > MAX_NOISE:
                if bad is not None:
                    raise bad
                raise IdentificationError(
                    f"only noise ({skipped} bytes) and no identification after the sign-on",
                    "check the character format (7E1) and that the IR head sits straight on the meter's "
                    "optical port; a push-only meter needs mode push")

    def _no_identification(self, buf: bytearray, echoes: int, skipped: int,
                           bad: Optional[IdentificationError], timeout: float) -> ProtocolError:
        if bad is not None:
            return bad
        if buf:
            return NoResponseError(
                f"identification stopped after {len(buf)} bytes ({bytes(buf[:40])!r}): nothing for {timeout:g} s",
                "check the IR head's position and cable; keep sunlight off the optical port")
        hints = "" if self.config.wakeup else "; battery-powered meters (heat, water) need wakeup: true"
        if self.config.device_address:
            hints += f"; check the device address {self.config.device_address!r} (empty works with one meter)"
        if self.config.query_code != "?":
            hints += f"; check the query code {self.config.query_code!r} (the standard one is ?)"
        if echoes:
            return NoResponseError(
                f"the IR head echoes the sign-on but the meter did not answer within {timeout:g} s",
                "the port and head work: put the head straight onto the meter's optical port "
                f"(cable downwards on most meters){hints}")
        return NoResponseError(
            f"no identification within {timeout:g} s after sign-on",
            f"check the IR head's position and the port{hints}")

    def _receive_data(self, leftover: bytes) -> Generator[Action, Optional[bytes], Tuple[bytes, bool, float]]:
        """Collect the data message; return (message bytes, ends with ETX+BCC, time of its start)."""
        cfg = self.config
        self.phase = "data"
        self._stx_seen = False
        buf = bytearray(leftover)
        st = _DataScan(t_chunk=self.clock())
        if leftover:
            st.t_first = st.t_chunk
        grace = min(cfg.timeout, END_GRACE_CHARS * self._char_time(self.rate) + END_GRACE_JITTER)
        # STX came (or this meter sent a BCC before) and use_checksum is on: only ETX + BCC may end it
        st.must_check = cfg.use_checksum and self.expect == "BCC"
        cap, deadline = self._caps()
        while True:
            if st.etx_at >= 0 and st.etx_at + 1 < len(buf):
                return self._cut(buf, st.stx_at, st.etx_at + 2), True, st.t_first or self.clock()
            if self._scan_data(buf, st):  # an unframed message ended at '!' CR LF
                return self._cut(buf, st.stx_at, st.end_at), False, st.t_first or self.clock()
            if st.etx_at >= 0:
                if st.etx_at + 1 < len(buf):
                    continue
                chunk = yield Receive(cfg.timeout, "block check character")
                if not chunk:
                    raise NoResponseError(f"no BCC after ETX within {cfg.timeout:g} s",
                                          "the message was cut off: check the IR head's position and try again")
            elif st.end_at >= 0 and st.scan >= st.end_at:
                chunk = yield Receive(cfg.timeout if st.must_check else grace, "end of message")
                if not chunk:
                    if st.must_check:
                        raise self._no_etx()
                    return self._cut(buf, st.stx_at, st.end_at), False, st.t_first or self.clock()
            else:
                self._check_caps(len(buf), cap, deadline)
                chunk = yield Receive(cfg.timeout, "data message")
                if not chunk:
                    raise self._no_data(buf, st.stx_at)
            st.t_chunk = self.clock()
            if st.t_first is None and not buf:
                st.t_first = st.t_chunk  # provisional, for frames without STX
            buf += chunk
            self.data_bytes = len(buf)

    def _scan_data(self, buf: bytearray, st: "_DataScan") -> bool:
        """Advance over the new bytes; True when an unframed message ended at '!' CR LF."""
        use_checksum = self.config.use_checksum
        n = len(buf)
        while st.scan < n and st.etx_at < 0:
            b = buf[st.scan] & 0x7F
            if st.end_at >= 0:
                # after '!' CR LF only an ETX (and then the BCC) still belongs to the message;
                # anything else there is an ETX that noise turned into another byte
                if b != ETX:
                    if use_checksum:
                        raise self._no_etx()
                    return True
                st.etx_at = st.scan
            elif b == STX and st.stx_at < 0:
                st.stx_at = st.scan
                self._stx_seen = True
                st.in_paren = False
                st.t_first = st.t_chunk
                st.must_check = use_checksum
            elif b == ETX and st.stx_at >= 0:
                st.etx_at = st.scan
            elif st.bang_at >= 0:
                if b == LF:
                    st.end_at = st.scan + 1
                elif b != CR:
                    st.bang_at = -1
            elif b == 0x28:  # (
                st.in_paren = True
            elif b in (0x29, CR, LF):  # ) or line end
                st.in_paren = False
            elif b == 0x21 and not st.in_paren:  # !
                st.bang_at = st.scan
            if st.stx_at < 0 and not (0x20 <= b < 0x7F or b in (CR, LF, ACK, STX)):
                st.junk += 1
                if st.junk > MAX_JUNK_BEFORE_DATA:
                    raise FramingError(
                        f"garbled answer at {self.rate} Bd ({st.junk} unreadable bytes, no data message start)",
                        "the baud switch failed or the line is noisy: set a lower baudrate "
                        "or adjust baud_switch_delay")
            st.scan += 1
        return False

    def _caps(self) -> Tuple[int, float]:
        """(byte cap, deadline) of a data message: ``max_read_time`` at this line speed, and that time."""
        cps = self.rate / self.bits  # characters per second on the wire
        limit = self.config.max_read_time
        cap = min(MAX_MESSAGE, max(MIN_MESSAGE_CAP, int(cps * limit * 1.2)))
        return cap, self.clock() + limit

    def _check_caps(self, size: int, cap: int, deadline: float) -> None:
        fix = ("the meter keeps sending: check the mode (push meters need mode push); for a very long "
               "readout (load profile) raise max_read_time or the baud rate")
        if size > cap:
            raise FramingError(f"data message longer than {cap} bytes at {self.rate} Bd without an end", fix)
        if self.clock() > deadline:
            raise FramingError(f"data message without an end after {self.config.max_read_time:g} s "
                               f"({size} bytes at {self.rate} Bd)", fix)

    def _cut(self, buf: bytearray, stx_at: int, end: int) -> bytes:
        if stx_at >= 0:
            return bytes(buf[stx_at:end])
        message = bytes(buf[:end])
        # frames without STX: drop an echoed ACK line and line noise in front of the first data line
        while message[:1] == b"\x06":
            lf = message.find(b"\n")
            message = message[lf + 1:] if lf >= 0 else b""
        # (not PARITY_ERROR: a damaged first character of the first address must stay in front
        # of it, so that the parser drops that data set instead of reading a shorter address)
        return message.lstrip(b"\x00\x7f\xff")

    def _no_etx(self) -> ChecksumMissingError:
        if self.expect == "BCC":
            started = "this meter sent a BCC before, but no ETX and BCC followed"
        elif self.phase == "data" and self._stx_seen:
            started = "the data message started with STX, but no ETX and BCC followed"
        else:
            started = "a byte that is no ETX followed"
        return ChecksumMissingError(
            "BCC",
            f"the end of the readout was damaged on the line: {started} its end ('!'), "
            "so its values cannot be checked",
            "check the IR head's position and try again; only for a meter that never sends a BCC "
            "set use_checksum off")

    def _no_data(self, buf: bytearray, stx_at: int) -> ProtocolError:
        cfg = self.config
        ident = self.identification
        if stx_at < 0 and NAK in buf.translate(_MASK).lstrip(b"\r\n\x00"):
            return ProtocolError(
                f"the meter answered the acknowledgement for {self.rate} Bd with NAK (it refused it)",
                "the meter does not accept this rate or mode: set a lower baudrate (or 300), or check the "
                "query code and device address")
        if stx_at < 0 and not buf.strip(b"\x06\r\n0123456789"):
            if ident is not None and ident.mode in ("C", "E") and self.rate != cfg.initial_baudrate:
                return NoResponseError(
                    f"no data message within {cfg.timeout:g} s after the acknowledgement for {self.rate} Bd",
                    "the meter may not support that rate or the switch came at the wrong time: set a lower "
                    "baudrate (or 300) or another baud_switch_delay (USB adapters: 0.2-0.5 s)")
            return NoResponseError(f"no data message within {cfg.timeout:g} s after the identification",
                                   "check the IR head's position; try baudrate 300")
        return NoResponseError(
            f"data message stopped after {len(buf)} bytes (nothing for {cfg.timeout:g} s)",
            "check the IR head's position (sunlight, loose fit) and the cable; try a lower baudrate")

    # ------------------------------------------------------------------------ push
    def _push(self) -> Generator[Action, Optional[bytes], Tuple[Readout, int]]:
        cfg = self.config
        self.phase = "push"
        self.rate = cfg.push_baudrate
        yield SetBaudrate(cfg.push_baudrate)
        yield ResetInput()
        splitter = D0StreamSplitter(require_etx=cfg.use_checksum, max_buffer=MAX_MESSAGE)
        wait = max(5.0, 4 * cfg.timeout)
        t_start = self.clock()
        deadline = t_start + wait
        seen = 0
        grace = END_GRACE_CHARS * self._char_time(self.rate) + END_GRACE_JITTER
        while True:
            remaining = deadline - self.clock()
            chunk: Optional[bytes] = b""
            if splitter.pending and remaining > 0:
                # complete up to its line end: an ETX + BCC may still follow within a few characters
                chunk = yield Receive(min(grace, remaining), "end of telegram")
                if not chunk:
                    for telegram in splitter.take_pending():
                        return self._push_telegram(telegram, t_start)
                    continue
            elif remaining > 0:
                chunk = yield Receive(remaining, "push telegram")
            if not chunk:
                if splitter.unchecked:
                    raise ChecksumMissingError(
                        "BCC",
                        f"the end of the readout was damaged on the line: {splitter.unchecked} telegram(s) "
                        "had no ETX and BCC after their end ('!') although they began with STX (or a byte "
                        f"that is no ETX followed), so they could not be checked, and no other came within {wait:g} s",
                        "check the IR head's position; only for a meter that never sends a BCC "
                        "set use_checksum off")
                if seen:
                    raise NoResponseError(
                        f"{seen} bytes but no complete telegram within {wait:g} s at {cfg.push_baudrate} Bd",
                        "check the character format (7E1), the baud rate (push_baudrate) and the head's position")
                raise NoResponseError(
                    f"no push telegram within {wait:g} s at {cfg.push_baudrate} Bd",
                    "put the head on the meter's info interface and enable its data output (PIN at the utility "
                    "for the full data set); request-mode meters need mode request")
            seen += len(chunk)
            self.data_bytes = seen
            for telegram in splitter.feed(chunk):
                return self._push_telegram(telegram, t_start)

    def _push_telegram(self, telegram: bytes, t_start: float) -> Tuple[Readout, int]:
        # BCC or DSMR CRC16, and the one this meter sent before
        readout = parse_readout(telegram, use_checksum=self.config.use_checksum, expect=self.expect)
        self.timings["data"] = self.clock() - t_start
        return readout, len(telegram)


_MASK = bytes(b & 0x7F for b in range(256))


@dataclass
class _DataScan:
    """Where the scan of a data message stands (positions in its buffer, -1: not seen)."""

    t_chunk: float
    t_first: Optional[float] = None  # when STX (or, without STX, the first chunk) arrived
    scan: int = 0
    stx_at: int = -1
    in_paren: bool = False
    bang_at: int = -1       # a '!' outside parentheses, waiting for its LF
    end_at: int = -1        # just after the LF of '!' CR LF
    etx_at: int = -1        # an ETX that ends the message; the next byte is the BCC
    junk: int = 0
    must_check: bool = False  # only ETX + BCC may end the message


def _keep_first_cause(exc: ProtocolError, first: ProtocolError) -> None:
    """The last attempt's error also names the first attempt's cause: that is usually the real one
    (the retry runs at a lower rate and often fails only because the meter is still busy)."""
    if first.cause == exc.cause:
        return
    exc.cause = f"{first.cause}; the retry failed too: {exc.cause}"
    exc.fix = first.fix or exc.fix
    exc.args = (f"{exc.cause}: {exc.fix}" if exc.fix else exc.cause,)


__all__ = [
    "D0Dialogue", "DialogueResult", "Action", "Send", "Drain", "Wait", "SetBaudrate", "ResetInput",
    "Receive", "Quiet", "Done", "choose_rate", "sign_on_request", "acknowledgement", "STANDARD_RATES",
]
