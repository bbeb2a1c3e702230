"""A push listener: one thread that owns the port, decodes, and hands verified data to a sink.

The thread opens the port through ``transport.Transport`` (serial device, ``/dev/serial/by-id``
path, ``socket://`` or ``rfc2217://``), feeds every chunk to a ``PushDecoder`` and calls
``on_data`` with a ``MeterData`` for each message that passed every check.

It never dies on bad input or a bad sink: decode errors are counted by the decoder and logged
here (each kind at most once per ``LOG_INTERVAL``; the tail of a message the port was opened
into at INFO), with what the decoder noted (``PushDecoder.take_notes``: it has no logger);
callback exceptions are logged and counted (``callback_errors``). When the port vanishes (USB unplug,
ser2net restart) it closes it, waits with exponential back-off (1 s, 2 s, 4 s … 30 s) and
reopens it, so a replugged adapter comes back by itself (user pain #20). A ConfigurationError
at open (a malformed port URL) ends the thread instead, since retrying cannot fix it.

Reads are coalesced (``_coalesce``): a serial line delivers a push in many small reads (one
byte per read on some adapters), and handing each to the decoder costs about as much as the
whole frame. After the first bytes the thread sleeps for as long as the frame's own length
field (HDLC format field, M-Bus L field) says the rest takes at the line's character time, then
takes what is buffered; it feeds the decoder at a frame end, or when the line stayed quiet for
a few character times (framings without a length, a stalled or damaged frame). Every wake-up
costs about a fifth of a push's CPU, so two rules keep it at one wake-up for the rest of the
frame: while the length field has not arrived yet (one byte per read; a lone flag or M-Bus
start byte may begin a frame), the wait is for the shortest of the last few complete frames
(push meters send the same lists again and again; a shorter frame than that only costs another
wait); and each wait has some slack (``SLACK_SHARE`` of the frame time, at most ``SLACK_MAX``),
because a USB adapter hands over its last bytes up to its latency timer after they left the
wire. Neither rule can change what is decoded, only when: a wait that ends early is followed by
another one.

On a local serial port the kernel can do the first wait as well (``Transport.read_some``'s
``min_bytes``: the tty's VMIN): when the last few frames all had one length, the thread asks to
be woken once that many bytes are there, and a push costs one wake-up of the thread. Linux still
wakes it inside the kernel for every piece the line hands over, to see whether enough is there
(about 12 us each on the development VM): that beats the thread's own second wake-up (about
250 us, Python included) on a line that delivers pieces of ``MIN_PIECE`` bytes or more (USB
adapters' packets, whole frames) and loses on one byte at a time. So the listener looks at the
size of the pieces (the first read of a push without the kernel's wait) and goes back to it
when a push woke the thread in the kernel more than ``MAX_PIECES`` times (the thread's
voluntary context switches, ``getrusage``; Linux). A frame shorter than the wait is not lost:
it is read when the idle read's time-out (``IDLE_READ``) ends, and the lengths are learned
anew.

On a line too piecemeal for the kernel's wait, a periodic meter's push is slept through
instead (``_sleep_through``, ``dlms.cadence``): once the frames' ends keep a steady beat, the
thread sleeps (without watching the port, so no piece wakes it) until just after the next
frame's predicted end and reads it whole: one wake-up per push instead of two. A read there
that finds no frame, a part of one or more than one falls back to the reads above; so does
a push now and then (the eighth, then after gaps that grow while the beat holds), which
measures the beat again. The sleep leaves the line unread for at most
``SLEEP_MAX`` and ``SLEEP_BYTES`` (the tty buffer holds 4096).

An output's event loop can run in this thread's waits (``host_loop``, ``pipeline.LoopGuest``):
on a local serial port every wait of the port (``Transport.waiter``) and the back-off between
reopens run it, so the Venus OS service does its D-Bus work in the thread that decoded the push
instead of waking a second one. A port that cannot (``socket://``) hands the loop back.

Rate limit (``config.min_interval``): *keep latest*. Within the interval after a delivery, a
newer message replaces the held one, which is delivered when the interval has passed; so
sinks get at most one MeterData per interval and never a stale one, and the last push before
a pause is not lost (dropping would hold back the freshest value until the next push).
"""
from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from typing import Callable, Deque, Optional, Tuple

from ..config import ListenerConfig
from ..errors import ConfigurationError, DlmsError, TransportError
from ..model import MeterData, Statistics
from ..pipeline import LoopGuest
from ..ratelimit import Backoff, RepeatLimiter, log_notes
from ..transport import DeviceWatch, Transport
from .cadence import Cadence
from .decoder import SETTLE_EVERY, PushDecoder, PushMessage
from .hdlc import FLAG
from .mbus import START, STOP, user_data_length

log = logging.getLogger(__name__)

try:
    import resource

    _RUSAGE_THREAD: Optional[int] = getattr(resource, "RUSAGE_THREAD", None)  # Linux
except ImportError:  # pragma: no cover - Windows
    _RUSAGE_THREAD = None

BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 30.0
#: seconds between two log lines about the same kind of decode error
LOG_INTERVAL = 60.0
#: longest wait for bytes in one read, so stop() and the rate limit are served promptly
READ_SLICE = 0.2
#: longest wait for bytes while nothing is held back by the rate limit
IDLE_READ = SETTLE_EVERY  # (the decoder's pause bound counts on a settle this often)
#: quiet time that ends a coalesced read: this many character times, but at least QUIET_MIN s
QUIET_CHARS = 3
QUIET_MIN = 0.001
#: a coalesced read is fed to the decoder at this size at the latest
COALESCE_MAX = 16384
#: bytes of a read whose frame ends are unknown (raw APDUs, wrapper, noise) before it is decoded
#: even though the line is not quiet yet; the decoder takes any chunking
UNFRAMED_MAX = 1024
#: slack added to a wait for the rest of a frame: this share of its wire time, at most SLACK_MAX s
#: (USB adapters hand over the tail up to their latency timer, 16 ms on FTDI, after the wire)
SLACK_SHARE = 0.125
SLACK_MAX = 0.016
#: complete frames whose lengths predict the next one (the shortest of them is used)
LENGTH_MEMORY = 4
#: the kernel waits for a whole push only on a line that hands over at least this many bytes at
#: once, and stops when a push came in more than MAX_PIECES pieces (module docstring)
MIN_PIECE = 32
MAX_PIECES = 8
#: below this many missing bytes the length field has not been read yet (HDLC flag + format)
_HEADER = 4
#: the listener sleeps through a push (``dlms.cadence``) for at most this long, and only while at
#: most SLEEP_BYTES could arrive meanwhile (half of Linux's 4096-byte tty buffer)
SLEEP_MAX = 10.0
SLEEP_BYTES = 2048


def missing_bytes(buf: bytes) -> Optional[int]:
    """Bytes still missing to complete the frames at the start of ``buf`` as their length fields
    announce (HDLC frames with shared or doubled flags, M-Bus long frames): 0 when the last frame
    is complete, None when the framing does not tell (wrapper, raw APDU, noise)."""
    i, n = 0, len(buf)
    while i < n:
        b = buf[i]
        if b == 0x7E:
            if i == n - 1:
                return 0 if i else 2  # a closing flag (or a lone opening one: the format field is next)
            if buf[i + 1] == 0x7E:
                i += 1
                continue
            if i + 3 > n:
                return i + 3 - n
            if buf[i + 1] & 0xF0 != 0xA0:
                return None
            end = i + (((buf[i + 1] & 0x07) << 8) | buf[i + 2]) + 2
            if end > n:
                return end - n
            i = end - 1  # the closing flag may open the next frame
            if buf[i] != 0x7E:
                return None
        elif b == 0x68:
            if i + 4 > n:
                return i + 4 - n
            if buf[i + 2] != buf[i + 1] or buf[i + 3] != 0x68:
                return None
            end = i + user_data_length(buf[i + 1]) + 6
            if end > n:
                return end - n
            i = end
        else:
            return None
    return 0


#: where a frame can begin: an HDLC flag and format byte, or an M-Bus long-frame header
_FRAME_START = re.compile(rb"\x7e[\xa0-\xaf]|\x68(.)\1\x68", re.S)


def _wake_ups() -> int:
    """The calling thread's voluntary context switches (0 where the system does not count them)."""
    if _RUSAGE_THREAD is None:
        return 0
    return int(resource.getrusage(_RUSAGE_THREAD).ru_nvcsw)


def frame_start(buf: bytes) -> Optional[int]:
    """Where the first frame in ``buf`` can begin (after the tail of a frame the port was opened
    into, or noise); None when no frame start is in sight."""
    m = _FRAME_START.search(buf)
    return m.start() if m else None


def frame_length(buf: bytes) -> Optional[int]:
    """Length of the frame ``buf`` starts with, as its length field says (HDLC from the opening
    flag to the closing one, M-Bus long frame); None when the bytes there tell no length."""
    i = 0
    while i + 1 < len(buf) and buf[i] == 0x7E and buf[i + 1] == 0x7E:
        i += 1  # doubled flags
    if len(buf) >= i + 3 and buf[i] == 0x7E and buf[i + 1] & 0xF0 == 0xA0:
        return i + (((buf[i + 1] & 0x07) << 8) | buf[i + 2]) + 2
    if len(buf) >= 4 and buf[0] == 0x68 and buf[1] == buf[2] and buf[3] == 0x68:
        return user_data_length(buf[1]) + 6
    return None


def open_port(config: ListenerConfig) -> Transport:
    """Open the configured port; TransportError/ConfigurationError with a fix on failure."""
    return Transport.open(config.port, config.baudrate, config.bytesize, config.parity, config.stopbits)


class PushListener:
    """Listen for pushes on ``config.port`` in a background thread (``start``/``stop``)."""

    def __init__(self, config: ListenerConfig, on_data: Callable[[MeterData], None],
                 stats: Optional[Statistics] = None, on_error: Optional[Callable[[DlmsError], None]] = None,
                 *, on_message: Optional[Callable[[PushMessage], None]] = None,
                 backoff_initial: float = BACKOFF_INITIAL, backoff_max: float = BACKOFF_MAX,
                 opener: Callable[[ListenerConfig], Transport] = open_port, text: bool = True) -> None:
        self.config = config
        self.on_data = on_data
        self.on_message = on_message
        self.on_error = on_error
        self.stats = stats if stats is not None else Statistics()
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._opener = opener
        self.text = text  #: False: MeterData.text stays empty (sinks that never show it save the rendering)
        self.decoder = PushDecoder(config, self.stats, on_error=self._decoder_error)
        #: each kind of decode error is logged at most once per LOG_INTERVAL, with the count since
        self._error_log = RepeatLimiter(LOG_INTERVAL)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._port: Optional[Transport] = None
        self._port_lock = threading.Lock()
        self.connected = False  #: True while the port is open
        self.connects = 0  #: successful opens (1 + reconnects)
        self._last_delivery = float("-inf")
        self._held: Optional[PushMessage] = None
        self._lengths: Deque[int] = deque(maxlen=LENGTH_MEMORY)  #: recent complete frames (``_coalesce``)
        self._carry = b""  #: bytes read behind the last complete frame: the start of the next read
        self._piece = 0  #: bytes the last read without the kernel's wait returned (``_idle_read``)
        self._cadence = Cadence()  #: when a periodic meter's next frame is complete (``_sleep_through``)
        self._guest: Optional[LoopGuest] = None  #: an event loop run in this thread's waits (``host_loop``)

    # ------------------------------------------------------------------ control
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the I/O thread (no-op when it runs)."""
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"dlms-push {self.config.port}", daemon=True)
        self._thread.start()

    def host_loop(self, guest: LoopGuest) -> None:
        """Run ``guest`` in this thread's waits (module docstring); before ``start``. The source
        decides whether its port can (``PushSource.host_loop``)."""
        self._guest = guest

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread and release the port; returns within ``timeout`` seconds."""
        self._stop.set()
        if self._guest is not None:
            self._guest.wake()  # (a back-off pause runs the guest's loop, not ``_stop.wait``)
        with self._port_lock:
            port = self._port
        if port is not None:
            port.close()  # ends a running read at once
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("push listener on %s did not stop within %.1f s", self.config.port, timeout)

    # ------------------------------------------------------------------- thread
    def _run(self) -> None:
        try:
            self._run_ports()
        finally:
            guest, self._guest = self._guest, None
            if guest is not None:
                guest.release()  # the output runs its loop itself while the process goes on

    def _pause(self, backoff: Backoff) -> None:
        """Back-off between reopens; a hosted loop goes on running meanwhile. It ends when the
        port's device is there again (``transport.DeviceWatch``: an adapter replugged), and the
        back-off starts over for the new device."""
        guest = self._guest

        def wait(seconds: float) -> bool:
            if guest is None:
                return self._stop.wait(seconds)
            guest.wait((), seconds)
            return self._stop.is_set()

        if DeviceWatch(self.config.port).pause(backoff, wait):
            log.info("%s is there again: opening it now", self.config.port)

    def _host_on(self, port: Transport) -> None:
        """Hand the hosted loop to the port's waits, or back to its output when the port cannot."""
        guest = self._guest
        if guest is None:
            return
        if getattr(port, "reads_all_buffered", False):
            port.waiter = guest.wait
        else:
            log.debug("%s: the port waits inside pyserial; the hosted loop goes back to its own thread",
                      self.config.port)
            self._guest = None
            guest.release()

    def _run_ports(self) -> None:
        backoff = Backoff(self.backoff_initial, self.backoff_max)
        while not self._stop.is_set():
            try:
                port = self._opener(self.config)
            except ConfigurationError as exc:
                self._report(exc)
                log.error("push listener on %s stopped: %s", self.config.port, exc)
                return
            except DlmsError as exc:
                self._report(exc)
                (log.warning if backoff.first else log.info)("%s; next attempt in %.1f s", exc, backoff.delay)
                self._pause(backoff)
                continue
            except Exception:  # the thread must survive anything; the log says what happened
                log.exception("push listener: opening %s failed unexpectedly; next attempt in %.1f s",
                              self.config.port, backoff.delay)
                self._pause(backoff)
                continue
            with self._port_lock:
                self._port = port
            if self._stop.is_set():
                port.close()
                break
            self._host_on(port)
            self.connected = True
            backoff.reset()
            self.connects += 1
            self.stats.count("connects")
            if self.connects > 1 and not self.searching:
                log.info("reconnected to %s", self.config.port)
            self.decoder.reset()
            self._cadence.reset()
            try:
                self._read_loop(port)
            except TransportError as exc:
                if not self._stop.is_set():
                    self._report(exc)
                    log.warning("lost %s: %s; reopening in %.1f s", self.config.port, exc, backoff.delay)
            except Exception:  # the thread must survive anything; the log says what happened
                log.exception("push listener on %s: unexpected error; reopening the port", self.config.port)
            finally:
                self.connected = False
                self._held = None  # held back by the rate limit; stale by the time the port is back
                self._carry = b""  # the rest of a read from the port that went away
                with self._port_lock:
                    self._port = None
                port.close()
            if not self._stop.is_set() and not self._next_line():
                self._pause(backoff)

    #: the listener tries line settings in turn (``sml.source.StreamListener``'s search)
    searching = False

    def _next_line(self) -> bool:
        """After the read loop ended: True when ``config`` now names the next line settings to
        try, to be opened at once (a subclass's search); the listener itself keeps its line."""
        return False

    def _read_loop(self, port: Transport) -> None:
        last_byte = time.monotonic()  # (the quiet before the first byte counts from the opening)
        while not self._stop.is_set():
            # a held message (rate limit) is due soon: short reads; otherwise stop() closes the
            # port, which ends the read at once, so the idle line costs one wake-up a second
            data, self._carry = self._carry, b""  # bytes behind the last decoded frame go first
            if not data:
                data = self._idle_read(port)
            if data:
                data, lost = self._coalesce(port, data)
                last_byte = time.monotonic()
                for msg in self.decoder.feed(data):
                    self._deliver(msg)
                self._log_notes()
                if lost is not None:
                    raise lost  # after the bytes that came before the port went away
            else:  # a whole read without a byte: nothing that waits for more bytes gets them now
                for msg in self.decoder.settle(time.monotonic() - last_byte):
                    self._deliver(msg)
                self._log_notes()
            self._flush()

    def _idle_read(self, port: Transport) -> bytes:
        """The first bytes of the next push; learns what the kernel's wait needs (``_expected``)."""
        steady = self._steady_length(port)
        if steady:
            data = self._sleep_through(port, steady)
            if data:
                return data
        expected = self._expected()
        woken = _wake_ups() if expected > 1 else 0
        data = port.read_some(4096, READ_SLICE if self._held is not None else IDLE_READ, expected)
        if not data or not getattr(port, "reads_all_buffered", False):
            return data  # (other ports read as they always do)
        if steady and len(data) <= steady and data[0] in (FLAG, START):
            # where the line's byte rate puts the end of the frame these bytes begin
            self._cadence.observe(time.monotonic() + (steady - len(data)) * self.char_time())
        if expected == 1:
            self._piece = len(data)  # what the line hands over at once when nobody waits for more
        elif len(data) < expected:
            self._lengths.clear()  # the wait was for more than came: wait for lengths seen anew
        elif _wake_ups() - woken > MAX_PIECES:
            self._piece = 0  # the line now hands over small pieces (another adapter): measure again
        return data

    def _steady_length(self, port: Transport) -> int:
        """The length of every recent frame when a periodic push could be slept through (a local
        port, nothing held back, the decoder between frames, a line that hands over pieces too
        small for the kernel's wait: with larger ones that wait costs as much as a sleep); else 0."""
        if (not 0 < self._piece < MIN_PIECE or self._held is not None
                or not getattr(port, "reads_all_buffered", False)):
            return 0
        return self._alike()

    def _sleep_through(self, port: Transport, length: int) -> bytes:
        """A periodic push read whole once it is complete, with one wake-up (``dlms.cadence``);
        b"" when it is to be read the usual way (not locked yet, time to measure, no frame)."""
        char = self.char_time()
        wake = self._cadence.wake_at(max(QUIET_MIN, QUIET_CHARS * char)
                                     + min(SLACK_MAX, SLACK_SHARE * length * char))
        if wake is None:
            return b""
        rest = wake - time.monotonic()
        if rest > SLEEP_MAX or rest > SLEEP_BYTES * char:
            self._cadence.miss()  # (too long to leave the line unread)
            return b""
        data = port.read_after(max(0.0, rest))  # (a hosted loop runs meanwhile; stop() ends it)
        if len(data) == length and frame_length(data) == length:
            self._cadence.hit()
        else:
            self._cadence.miss()  # early, late or another frame: the usual reads take over
        return data

    def _expected(self) -> int:
        """Bytes the next push has (the length of the last complete frames when they were all
        alike), for the port to wake the thread only then; 1 when the lengths vary or the decoder
        holds the start of a frame, whose rest may be shorter (the one byte it keeps after an HDLC
        frame is its closing flag, which the next frame may share; a read that comes short of
        the wait clears the lengths, ``_read_loop``)."""
        return (self._alike() if self._piece >= MIN_PIECE else 0) or 1

    def _alike(self) -> int:
        """The length of the last LENGTH_MEMORY complete frames when they all had it and the
        decoder holds no part of a frame (at most a closing flag); else 0."""
        lengths = self._lengths
        held = getattr(getattr(self.decoder, "deframer", None), "buffered", 2)
        if len(lengths) < LENGTH_MEMORY or not isinstance(held, int) or held > 1:
            return 0
        first = lengths[0]
        return first if lengths.count(first) == LENGTH_MEMORY else 0

    def char_time(self) -> float:
        """Seconds per character on the line (start + data + parity + stop bits)."""
        c = self.config
        bits = 1 + int(c.bytesize) + (0 if c.parity == "N" else 1) + float(c.stopbits)
        return bits / max(1, int(c.baudrate))

    def _coalesce(self, port: Transport, first: bytes) -> "Tuple[bytes, Optional[TransportError]]":
        """The first bytes plus what follows until a frame end or a quiet line (module docstring);
        and the error if the port went away meanwhile (raised once the bytes are decoded)."""
        length = frame_length(first)
        # exactly one whole frame (the usual push), from its first byte on: not after a doubled flag
        # (which frame_length counts in); a byte test, not _FRAME_START: no regular expression per push
        if length == len(first) and first[-1] in (FLAG, STOP) and (first[0] != FLAG or first[1] != FLAG):
            self._lengths.append(length)  # (what _missing says)
            return first, None
        char = self.char_time()
        quiet = max(QUIET_MIN, QUIET_CHARS * char)
        whole = getattr(port, "reads_all_buffered", False)
        buf = bytearray(first)
        try:
            while len(buf) < COALESCE_MAX and not self._stop.is_set():
                need, end = self._missing(buf)
                if need == 0:
                    # a complete frame: decode it now; what follows it (on a line that is never
                    # quiet, the next frame) starts the next read, so it cannot hold this one back
                    self._carry = bytes(buf[end:])
                    del buf[end:]
                    break
                if need is None and len(buf) >= UNFRAMED_MAX:
                    break  # a never-quiet line without frame ends: decode what is here
                wait = quiet
                if need is not None:
                    wire = need * char
                    wait = min(IDLE_READ, wire + quiet + min(SLACK_MAX, SLACK_SHARE * wire))
                if not self._wait_more(port, buf, wait, whole):  # what is buffered after the wait
                    break  # quiet, or a frame end: the decoder keeps a partial frame for the next read
        except TransportError as exc:
            return bytes(buf), exc
        return bytes(buf), None

    def _missing(self, buf: bytearray) -> Tuple[Optional[int], int]:
        """Bytes still missing to the end of the first frame in ``buf`` (after the tail of a frame
        the port was opened into, or noise): 0 when it is complete, None when framing does not tell;
        and where that frame ends when it is complete."""
        start = frame_start(buf)
        if start is None:
            if not buf or buf[-1] not in (FLAG, START):
                return None, 0
            start = len(buf) - 1  # one byte per read: a frame may begin here, its header is on its way
        frame = bytes(buf[start:])
        length = frame_length(frame)
        if length is not None and length <= len(frame):
            if frame[length - 1] in (FLAG, STOP):  # (a real frame's end, not noise that looked like a start)
                self._lengths.append(length)
            return 0, start + length
        need = missing_bytes(frame)
        if need is not None and need < _HEADER and self._lengths:
            need = max(need, min(self._lengths) - len(frame))  # the length field is still on its way
        return need, 0

    def _wait_more(self, port: Transport, buf: bytearray, wait: float, whole: bool) -> int:
        """One wake-up for the rest of the frame, not one per byte (a local port sleeps in one
        system call that stop() ends, and reads in the same call); the bytes appended to ``buf``."""
        if not whole:
            self._stop.wait(wait)
            return self._drain(port, buf)
        more = port.read_after(wait)
        buf += more
        return len(more) + (self._drain(port, buf) if len(more) >= 4096 else 0)

    @staticmethod
    def _drain(port: Transport, buf: bytearray) -> int:
        """Append everything buffered now to ``buf``; the count. Bytes read before the port went
        away stay in ``buf`` (the error follows them; a socket:// port hands them out in pieces)."""
        start = len(buf)
        whole = getattr(port, "reads_all_buffered", False)
        while len(buf) - start < COALESCE_MAX:
            more = port.read_some(4096, 0)
            buf += more
            if not more or (whole and len(more) < 4096):
                break  # (a short direct read emptied the buffer: no second system call to see it)
        return len(buf) - start

    # ----------------------------------------------------------------- delivery
    def _deliver(self, msg: PushMessage) -> None:
        if self.config.min_interval > 0 and time.monotonic() - self._last_delivery < self.config.min_interval:
            if self._held is not None:
                self.stats.count("rate_limited")
            self._held = msg
            return
        self._send(msg)

    def _flush(self) -> None:
        if self._held is not None and time.monotonic() - self._last_delivery >= self.config.min_interval:
            msg, self._held = self._held, None
            self._send(msg)

    def _send(self, msg: PushMessage) -> None:
        self._last_delivery = time.monotonic()
        if log.isEnabledFor(logging.DEBUG):
            _trace(msg)
        if self.on_message is not None:
            self._call(self.on_message, msg)
        self._call(self.on_data, msg.to_meter_data(self.text, time.time()))

    def _call(self, func: Callable, arg: object) -> None:
        try:
            func(arg)
        except Exception:  # a sink's bug must not kill the listener
            self.stats.count("callback_errors")
            log.exception("push listener callback %r failed", getattr(func, "__qualname__", func))

    def _decode_error(self, exc: DlmsError) -> None:
        if self.on_error is not None:
            self._call(self.on_error, exc)

    def _decoder_error(self, exc: DlmsError) -> None:
        """An error of the decoder (counted there): logged here, then passed on."""
        if self._logs_decode_errors():
            self._log_error(exc)
        else:
            log.debug("%s", exc)
        self._decode_error(exc)

    def _logs_decode_errors(self) -> bool:
        """Whether the decoder's errors are logged (a subclass whose decoders are searched is quieter)."""
        return True

    def _log_error(self, exc: DlmsError) -> None:
        """The tail of a message the port was opened into at INFO (normal at every start); any
        other kind at WARNING, at most once per LOG_INTERVAL with the count since."""
        if exc.lead_in:
            log.info("%s (normal right after the port was opened: listening began inside a message)", exc)
            return
        kind = type(exc).__name__
        show, more = self._error_log.check(kind)
        if not show:
            log.debug("%s: %s", kind, exc)
        elif more:
            log.warning("%s (and %d more like it in the last %.0f s)", exc, more, self._error_log.interval)
        else:
            log.warning("%s", exc)

    def _log_notes(self) -> None:
        """What the decoder noted (the AES engine, a profile problem, a counter restart)."""
        if getattr(self.decoder, "notes", None):
            log_notes(log, self.decoder.take_notes())

    def _report(self, exc: DlmsError) -> None:
        self.stats.error(exc)
        self._decode_error(exc)


def _trace(msg: PushMessage) -> None:
    """The debug line of a deciphered push (what its security header said)."""
    if getattr(msg, "ciphered", False):
        log.debug("deciphered APDU: security control 0x%02x, system title %s, invocation counter %d, %s",
                  msg.security_control or 0, (msg.system_title or b"").hex(), msg.invocation_counter or 0,
                  msg.protection())


__all__ = ["PushListener", "open_port", "missing_bytes", "frame_length", "BACKOFF_INITIAL", "BACKOFF_MAX",
           "LOG_INTERVAL"]
