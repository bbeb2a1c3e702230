"""The one place that touches serial ports and sockets: a thin layer over pyserial.

Protocol code never calls pyserial itself; it asks a ``Transport`` to write, drain, read and
switch baud rates. ``serial_for_url`` is used so that ``/dev/ttyUSB0``,
``/dev/serial/by-id/...``, ``socket://host:port`` (ser2net) and ``rfc2217://host:port`` all work.

Why the extra machinery around pyserial:

* **Errors with a fix.** pyserial says ``[Errno 2] could not open port``; users need "port not
  found: check the cable and use /dev/serial/by-id/...". Every failure becomes a
  ``TransportError`` whose message names cause and fix, including a port that vanishes
  mid-read (USB unplugged).
* **Drain that means "on the wire".** ``flush()`` (tcdrain) returns as soon as a USB adapter has
  the bytes in its FIFO, long before they are on the wire at 300 Bd. ``drain()`` also waits for
  the time the written characters need at the current baud rate, which the port estimates from
  what it wrote (``time_scale`` divides that time for simulated meters that run faster than real).
* **close() from another thread returns at once.** Reads wait in slices of at most ``SLICE``
  seconds (``CANCELLABLE_SLICE`` where pyserial's ``cancel_read`` ends a read: fewer idle
  wake-ups) and ``cancel_read`` is used where it exists, so a plugin's stop() never
  hangs behind a 1.5 s character time-out. An I/O call that cannot be interrupted (tcdrain on a
  real UART: 66 wake-up NULs at 300 Bd keep it busy for 2.2 s) is not waited for: close() waits
  for the I/O lock at most ``SLICE`` s, marks the transport closed, and the call in progress
  closes the port when it returns. Long writes go out in chunks of about ``SLICE`` s of wire
  time, checking for close() in between, so the port never holds more than two chunks and the
  I/O thread ends quickly too.
* **Parity checked in software (7E1, 7O1).** A UART set to 7E1 does check the parity bit, but
  pyserial clears INPCK, so a character with a parity error is delivered as if it were fine;
  for meters without a BCC (push-only D0 meters, mode A, frames without ETX) one flipped bit in
  a digit would become a wrong value. 7E1 and 8N1 put the same 10 bits on the wire (start,
  7 data + parity = 8 bits, stop), so such ports are opened 8N1 and the parity bit is handled
  here: every byte written gets the right parity bit in bit 7 (``add_parity``), every byte
  read is checked and stripped to 7 bits, and a byte with a parity error becomes
  ``PARITY_ERROR`` (``check_parity``), which no later stage accepts as a character. Users keep
  configuring 7E1; ``bytesize``/``parity``/``char_time`` keep meaning the meter's format.
  ``socket://`` (ser2net) is the exception: there the remote serial server sets the format,
  so bytes pass unchanged (datablock still recognises parity bits in a 7E1 stream read 8N1).
* **Reads straight from the file descriptor** on a local serial port (pyserial's POSIX
  ``Serial`` exactly, whose descriptor is non-blocking): one ``select`` and one ``os.read`` of
  everything buffered, instead of pyserial's read(1) + in_waiting + read(n) (two selects, two
  reads and an ioctl), which a push service pays on every wake-up. It keeps pyserial's rules:
  ``cancel_read`` (its abort pipe) ends a wait, and a port that is "readable" but returns no data
  is gone (USB unplugged). Sockets, rfc2217 and other port objects read through pyserial.
* **The kernel waits for a whole push** (``read_some(min_bytes=...)``, same ports): a waiting
  read sets the tty's VMIN, and Linux (n_tty; BSD alike) reports the port readable only once
  that many bytes are buffered, so the reading thread returns once, with the whole push, instead
  of at its first bytes (the kernel still looks at every piece that arrives; the push listener
  decides when that pays, ``dlms/listener.py``). The read still returns whatever is
  buffered after the time-out. With VMIN above 0 an empty non-blocking read says EAGAIN and a
  hung-up one 0 bytes, so no select is needed to tell them apart; with VMIN above 64, Linux
  hands out at most 64 bytes per read, so the read goes on until the buffer is empty.
* **Another component's event loop can run while a read waits** (``waiter``, same ports): the
  Venus OS service lets its D-Bus loop run in the reading thread's waits instead of a thread of
  its own, because handing each push to another thread costs about a tenth of the push's CPU
  (``victron/bridge.py``). The waiter is called instead of ``select`` with the descriptors
  and the time-out and returns the ready ones; every rule above stays the same.
* **A sleep and the read after it in one call** (``read_after``, same ports): a push the
  listener sleeps through (``dlms/cadence.py``) is read the moment the thread wakes, in the
  call that slept; a second call to read it cost about as much as the read itself on a cold
  cache, once per push.
"""
from __future__ import annotations

import errno
import logging
import os
import select
import threading
import time
from typing import Any, Callable, Dict, List, Literal, Optional, Sequence, Tuple

import serial

try:  # pyserial lets termios.error through on POSIX (e.g. a setting the driver refuses)
    import termios
    from termios import error as _TermiosError
except ImportError:  # pragma: no cover - Windows
    termios = None  # type: ignore[assignment]

    class _TermiosError(Exception):  # type: ignore[no-redef]
        pass

from .config import PARITY_ERROR, bits_per_char  # noqa: F401 - re-exported
from .errors import ConfigurationError, TransportError
from .ratelimit import Backoff

#: waits until one of the descriptors is readable or the time-out (seconds) has passed; returns
#: the readable ones (``select``'s first list; the module docstring says who passes another)
Waiter = Callable[[Sequence[int], float], List[int]]


def select_waiter(fds: Sequence[int], timeout: float) -> List[int]:
    """The default ``Waiter``: ``select`` itself."""
    return select.select(fds, [], [], timeout)[0]  # type: ignore[no-any-return]

log = logging.getLogger(__name__)

#: longest single wait inside a read, so that close() from another thread is noticed quickly; also
#: how long close() waits for an I/O call in progress, and the wire time of one chunk of a long write
SLICE = 0.2
#: the wait slice of a port whose read close() interrupts (pyserial's cancel_read on POSIX): an
#: idle line then costs one wake-up every few seconds, not five a second
CANCELLABLE_SLICE = 5.0

#: what a received character with a parity error becomes under software parity. It has bit 7
#: set and an odd number of one bits, so every later stage refuses it: masked to 7 bits it is
#: NUL (no structure character, never part of an address or value), and datablock marks it
#: U+FFFD whether it reads a capture as 7-bit text or as 7E1 read 8N1.
_PARITY_ERROR_BYTE = bytes([PARITY_ERROR])


def _parity_tables(parity: str) -> Tuple[bytes, bytes]:
    """(encode, decode) translation tables for 7 data bits + parity carried as one 8-bit byte."""
    encode = bytearray(256)
    decode = bytearray(256)
    for byte in range(256):
        char = byte & 0x7F
        ones = bin(char).count("1") & 1
        bit = ones if parity == "E" else 1 - ones
        encode[byte] = char | (bit << 7)
        decode[byte] = char if byte >> 7 == bit else PARITY_ERROR
    return bytes(encode), bytes(decode)


_PARITY_TABLES: Dict[str, Tuple[bytes, bytes]] = {p: _parity_tables(p) for p in ("E", "O")}


def add_parity(data: bytes, parity: str = "E") -> bytes:
    """7-bit characters as the 8-bit bytes an 8N1 UART must send for a 7E1 (7O1) line:
    the parity bit in bit 7 (bit 7 of the input is ignored)."""
    return bytes(data).translate(_PARITY_TABLES[parity][0])


def check_parity(data: bytes, parity: str = "E") -> bytes:
    """Bytes an 8N1 UART received from a 7E1 (7O1) line as 7-bit characters; a byte whose
    parity bit is wrong becomes ``PARITY_ERROR``."""
    return bytes(data).translate(_PARITY_TABLES[parity][1])

_PARITY = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}
_BYTESIZE = {5: serial.FIVEBITS, 6: serial.SIXBITS, 7: serial.SEVENBITS, 8: serial.EIGHTBITS}
_STOPBITS = {1: serial.STOPBITS_ONE, 1.5: serial.STOPBITS_ONE_POINT_FIVE, 2: serial.STOPBITS_TWO}


def _by_id_hint() -> str:
    import glob  # only for this hint, after an error

    names = sorted(glob.glob("/dev/serial/by-id/*"))
    if names:
        return "ports present: " + ", ".join(names[:4])
    return "no USB serial adapter is listed in /dev/serial/by-id/"


def _open_error(url: str, exc: BaseException) -> TransportError:
    """Turn pyserial's open failure into a message that says what to do."""
    code = getattr(exc, "errno", None)
    text = str(exc)
    if isinstance(exc, ConnectionRefusedError) or "Connection refused" in text:
        return TransportError(f"connection to {url} refused",
                              "check that ser2net (or the remote serial server) runs and listens on that port")
    if url.startswith(("socket://", "rfc2217://")):
        return TransportError(f"cannot connect to {url} ({text})",
                              "check host name, port number and the network")
    if code == errno.ENOENT or "No such file" in text:
        return TransportError(
            f"port {url} not found",
            "check the cable and use a stable name from /dev/serial/by-id/ "
            f"(USB adapters can change their number after a replug; {_by_id_hint()})")
    if code == errno.EACCES or "Permission denied" in text:
        return TransportError(
            f"permission denied on {url}",
            "add the user to the dialout group (sudo usermod -aG dialout $USER; log in again), "
            "or for SmartHomeNG the user the service runs as")
    if code == errno.EBUSY or "exclusively lock" in text or "busy" in text.lower():
        return TransportError(
            f"port {url} is busy",
            "another program has it open (a second plugin instance, ModemManager, serial-getty, "
            "Venus OS serial-starter): stop it or choose another port")
    return TransportError(f"cannot open port {url} ({text})", "check the port name, the adapter and the cable")


class Transport:
    """An open serial line (or socket) with baud switching, drain, and bounded reads.

    Create it with ``Transport.open(url, baudrate, bytesize, parity, stopbits)``. All methods
    raise ``TransportError`` (never pyserial's exceptions). Thread-safety: one thread does the
    I/O; any other thread may call ``close()`` to end it. ``bytesize``/``parity``/``stopbits``
    are the line's character format; with ``software_parity`` the port itself runs 8N1 and
    this object adds and checks the parity bit (see the module docstring).
    """

    def __init__(self, port: Any, url: str, bytesize: int = 7, parity: str = "E", stopbits: float = 1,
                 *, software_parity: bool = False) -> None:
        if software_parity and (bytesize != 7 or parity not in _PARITY_TABLES):
            raise ConfigurationError(f"software parity is for 7E1 and 7O1, not {bytesize}{parity}{stopbits}",
                                     "leave software_parity unset")
        self._port = port
        self.url = url
        self.bytesize = bytesize
        self.parity = parity
        self.stopbits = stopbits
        self.software_parity = software_parity
        self._encode, self._decode = _PARITY_TABLES[parity] if software_parity else (b"", b"")
        #: received characters with a parity error (software parity only)
        self.parity_errors = 0
        self._port_closed = False
        #: simulated meters run faster than real ones; wire-time estimates are divided by this
        self.time_scale = 1.0
        self._lock = threading.RLock()
        self._closed = False
        self._wire_free = 0.0  # monotonic time when the last written character has left the wire
        #: (descriptor, pyserial's abort pipe) when reads may go straight to the descriptor
        self._direct = _direct_fds(port)
        #: the tty's VMIN as this object last set it (pyserial opens and re-programs ports with 0)
        self._vmin = 0
        self._vmin_stuck = False
        #: what a waiting read or ``sleep`` of the direct path waits in (module docstring)
        self.waiter: Waiter = select_waiter

    # ------------------------------------------------------------------ life cycle
    @classmethod
    def open(cls, url: str, baudrate: int = 300, bytesize: int = 7, parity: str = "E",
             stopbits: float = 1, *, exclusive: bool = True, software_parity: Optional[bool] = None) -> "Transport":
        """Open a port by path or URL; raise TransportError (with a fix) or ConfigurationError.

        ``software_parity`` None (the default) means: on for 7E1/7O1 except on ``socket://``,
        where the remote serial server decides the format.
        """
        if not url:
            raise ConfigurationError("no serial port configured",
                                     "set the port, e.g. /dev/serial/by-id/usb-...-if00-port0 or socket://host:port")
        if parity not in _PARITY or bytesize not in _BYTESIZE or stopbits not in _STOPBITS:
            raise ConfigurationError(f"character format {bytesize}{parity}{stopbits} not supported",
                                     "use 7E1 for IEC 62056-21, 8N1 or 8E1 for DLMS")
        possible = bytesize == 7 and parity in _PARITY_TABLES
        if software_parity is None:
            software_parity = possible and not url.startswith("socket://")
        elif software_parity and not possible:
            raise ConfigurationError(f"software parity is for 7E1 and 7O1, not {bytesize}{parity}{stopbits}",
                                     "leave software_parity unset")
        line_size, line_parity = (8, "N") if software_parity else (bytesize, parity)
        kwargs = dict(baudrate=baudrate, bytesize=_BYTESIZE[line_size], parity=_PARITY[line_parity],
                      stopbits=_STOPBITS[stopbits], timeout=0, write_timeout=10)
        if exclusive and "://" not in url:
            kwargs["exclusive"] = True
        try:
            port = serial.serial_for_url(url, **kwargs)
        except ValueError as exc:
            raise ConfigurationError(f"cannot use port {url!r} ({exc})",
                                     "write a device path or socket://host:port / rfc2217://host:port") from None
        except (serial.SerialException, OSError, _TermiosError) as exc:
            raise _open_error(url, exc) from None
        log.debug("opened %s at %d Bd %d%s%s%s", url, baudrate, bytesize, parity, stopbits,
                  " (as 8N1, parity bit in software)" if software_parity else "")
        return cls(port, url, bytesize, parity, stopbits, software_parity=software_parity)

    def close(self) -> None:
        """Close the port; safe to call twice and from another thread (ends a running read).

        Returns within about ``SLICE`` s: when an I/O call that cannot be interrupted is still
        running (tcdrain while a real UART sends), that call closes the port when it returns.
        """
        if self._closed:
            return
        self._closed = True
        for name in ("cancel_read", "cancel_write"):
            cancel = getattr(self._port, name, None)
            if cancel is not None:
                try:
                    cancel()
                except (serial.SerialException, OSError, AttributeError, TypeError) as exc:
                    log.debug("%s on %s: %s", name, self.url, exc)
        if self._lock.acquire(timeout=SLICE):
            try:
                self._close_port()
            finally:
                self._lock.release()
        else:
            log.debug("%s: closing when the I/O call in progress returns", self.url)

    def _close_port(self) -> None:
        """Close the pyserial port once; the caller holds the I/O lock."""
        if self._port_closed:
            return
        self._port_closed = True
        try:
            self._port.close()
        except (serial.SerialException, OSError) as exc:
            log.debug("closing %s: %s", self.url, exc)
        log.debug("closed %s", self.url)

    @property
    def is_open(self) -> bool:
        return not self._closed and bool(getattr(self._port, "is_open", False))

    def __enter__(self) -> "Transport":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        soft = " (8N1 + software parity)" if self.software_parity else ""
        return f"<Transport {self.url} {self.baudrate} Bd {self.bytesize}{self.parity}{self.stopbits}{soft} {state}>"

    @property
    def reads_all_buffered(self) -> bool:
        """True when a ``read_some`` that returned less than asked for emptied the receive buffer
        (direct descriptor reads); a socket:// port hands buffered bytes out in small pieces."""
        return self._direct is not None

    # -------------------------------------------------------------------- settings
    @property
    def baudrate(self) -> int:
        return int(self._port.baudrate)

    def set_baudrate(self, baudrate: int) -> None:
        """Re-program the UART (input and output speed) to a new rate (nothing to do if it has it)."""
        if baudrate == self.baudrate:
            return
        with self._io():
            try:
                self._port.baudrate = baudrate
                self._vmin = 0  # (pyserial wrote all its settings again)
            except ValueError as exc:
                raise ConfigurationError(f"baud rate {baudrate} not supported by {self.url} ({exc})",
                                         "use a standard rate: 300, 600, 1200, 2400, 4800, 9600, 19200") from None
        log.debug("%s: now %d Bd", self.url, baudrate)

    @property
    def char_time(self) -> float:
        """Seconds one character takes on the wire at the current rate (already divided by time_scale)."""
        return bits_per_char(self.bytesize, self.parity, self.stopbits) / self.baudrate / self.time_scale

    def reset_input(self) -> None:
        """Throw away whatever is in the receive buffer (echoes, noise, a previous meter answer)."""
        with self._io():
            self._port.reset_input_buffer()

    @property
    def in_waiting(self) -> int:
        with self._io():
            return int(self._port.in_waiting)

    # ---------------------------------------------------------------------- output
    def write(self, data: bytes) -> None:
        """Hand ``data`` to the port (with the parity bit added under software parity).

        More than two chunks of ``SLICE`` s wire time (the 2.2 s of wake-up NULs) go out chunk
        by chunk, each when the one before is about to leave the wire: the line stays busy, but
        the port never holds more than it sends in 0.4 s, so the tcdrain after it is short and a
        close() from another thread ends the write between two chunks.
        """
        data = bytes(data)
        if self.software_parity:
            data = data.translate(self._encode)
        ct = self.char_time
        per = max(1, int(SLICE / ct)) if ct > 0 else len(data)
        if len(data) <= 2 * per:
            self._write_now(data)
            return
        for offset in range(0, len(data), per):
            if offset:
                ahead = self._wire_free - time.monotonic() - per * ct
                if ahead > 0:
                    self.sleep(ahead)
            self._write_now(data[offset:offset + per])

    def _write_now(self, data: bytes) -> None:
        with self._io():
            self._port.write(data)
        now = time.monotonic()
        self._wire_free = max(now, self._wire_free) + len(data) * self.char_time

    def drain(self, wire: bool = True) -> None:
        """Wait until what was written has left: tcdrain, then (``wire``) the characters' wire time.

        USB adapters report "drained" once their FIFO holds the bytes, so the estimate of the
        wire time is what makes it safe to re-program the baud rate afterwards.
        """
        with self._io():
            self._port.flush()
        if self._closed:  # close() came while tcdrain waited (and left closing the port to it)
            raise self._closed_error()
        if wire:
            remaining = self._wire_free - time.monotonic()
            if remaining > 0:
                self.sleep(remaining)

    def sleep(self, seconds: float) -> None:
        """Sleep, but end early (with TransportError) when another thread closes the port: on a
        local serial port in one system call that close()'s ``cancel_read`` ends, else in slices."""
        if self._direct is not None and seconds > 0:
            with self._io():
                self._doze(self._direct[1], seconds)
            if self._closed:
                raise self._closed_error()
            return
        deadline = time.monotonic() + seconds
        while True:
            if self._closed:
                raise self._closed_error()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            time.sleep(min(remaining, SLICE))

    def read_after(self, seconds: float, max_bytes: int = 4096) -> bytes:
        """``sleep(seconds)``, then what has arrived meanwhile (up to ``max_bytes``), as
        ``read_some(max_bytes, 0)`` would return it; on a local serial port in one guarded call
        (module docstring). A close from another thread ends the sleep with TransportError."""
        if self._direct is None:
            self.sleep(seconds)
            return self.read_some(max_bytes, 0)
        with self._io():
            fds = self._direct
            if seconds > 0:
                self._doze(fds[1], seconds)
            if self._closed:
                raise self._closed_error()
            data = _read_fd(fds, max_bytes, 0, self._vmin, self.waiter)
        if data:
            return self._received(data)
        if self._closed:
            raise self._closed_error()
        return b""

    # ----------------------------------------------------------------------- input
    def read_some(self, max_bytes: int = 4096, timeout: Optional[float] = None, min_bytes: int = 1) -> bytes:
        """Whatever has arrived (up to ``max_bytes``), waiting at most ``timeout`` s for the first byte.

        Returns ``b""`` on time-out; ``timeout=None`` waits until data arrives or the port closes.
        This is the call protocol drivers use: it returns as soon as anything is there.
        ``min_bytes``: a waiting read returns early only once this many bytes (at most 255) are
        there, where the kernel can wait for that (a local serial port; module docstring); fewer
        bytes come after the time-out. Reads that do not wait keep the last waiting read's value.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        step = CANCELLABLE_SLICE if hasattr(self._port, "cancel_read") else SLICE
        while True:
            wait = step if deadline is None else min(step, max(0.0, deadline - time.monotonic()))
            with self._io():
                if self._direct is not None:
                    if wait > 0:
                        self._want_vmin(min(min_bytes, 255) if min_bytes > 1 else 0)
                    data = _read_fd(self._direct, max_bytes, wait, self._vmin, self.waiter)
                else:
                    self._set_wait(wait)
                    data = self._port.read(1)
                    if data:
                        waiting = self._port.in_waiting
                        if waiting and max_bytes > 1:
                            self._set_wait(0)
                            data += self._port.read(min(waiting, max_bytes - 1))
            if data:
                return self._received(data)
            if self._closed:
                raise self._closed_error()
            if deadline is not None and time.monotonic() >= deadline:
                return b""

    def read(self, n: int = 1, timeout: Optional[float] = None) -> bytes:
        """Up to ``n`` bytes: returns when ``n`` bytes arrived or ``timeout`` s passed (pyserial semantics)."""
        buf = bytearray()
        deadline = None if timeout is None else time.monotonic() + timeout
        while len(buf) < n:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            buf += self.read_some(n - len(buf), remaining)
        return bytes(buf)

    def read_until(self, terminator: bytes = b"\n", timeout: Optional[float] = None,
                   char_timeout: Optional[float] = None, max_bytes: int = 1 << 20) -> bytes:
        """Read up to and including ``terminator``; stop early at ``timeout`` (whole call),
        ``char_timeout`` (gap between two bytes) or ``max_bytes``. Returns what arrived; the
        caller checks ``endswith(terminator)`` to tell success from time-out.
        """
        buf = bytearray()
        deadline = None if timeout is None else time.monotonic() + timeout
        while len(buf) < max_bytes:
            waits = [w for w in (char_timeout if buf else None,
                                 None if deadline is None else deadline - time.monotonic()) if w is not None]
            wait = min(waits) if waits else None
            if wait is not None and wait <= 0:
                break
            # one byte at a time near the end would be slow; read what is there, then cut
            chunk = self.read_some(1, wait)
            if not chunk:
                break
            buf += chunk
            if buf.endswith(terminator):
                break
        return bytes(buf)

    # --------------------------------------------------------------------- helpers
    def _doze(self, abort: int, seconds: float) -> None:
        """Wait ``seconds`` on a local port's abort pipe, the I/O lock held: close()'s
        ``cancel_read`` ends it early (the caller then sees ``_closed`` and says so)."""
        try:
            if self.waiter([abort], seconds):
                os.read(abort, 1000)
        except OSError:
            pass  # (the port is being closed)

    def _received(self, data: Any) -> bytes:
        """Bytes read from the port as the meter sent them (parity checked and stripped)."""
        data = bytes(data)
        if self.software_parity:
            data = data.translate(self._decode)
            bad = data.count(_PARITY_ERROR_BYTE)
            if bad:
                self.parity_errors += bad
                log.debug("%s: %d character(s) with a parity error", self.url, bad)
        return data

    def _want_vmin(self, vmin: int) -> None:
        """Set the tty's VMIN (a system call only when it changes: a push meter keeps its length)."""
        if vmin == self._vmin or termios is None or self._direct is None or self._vmin_stuck:
            return
        fd = self._direct[0]
        try:
            attrs = termios.tcgetattr(fd)
            attrs[6][termios.VMIN] = vmin
            attrs[6][termios.VTIME] = 0
            termios.tcsetattr(fd, termios.TCSANOW, attrs)
        except termios.error as exc:  # reads still work, each wakes at its first bytes
            log.debug("%s: VMIN not settable (%s); reads wake at the first byte", self.url, exc)
            self._vmin_stuck = True  # (unchanged, so self._vmin still says what it is)
            return
        self._vmin = vmin

    def _set_wait(self, seconds: float) -> None:
        # pyserial's public ``timeout`` setter re-programs the whole port (tcsetattr) on every
        # change; its read() only consults ``_timeout``, so set that when it exists.
        if hasattr(self._port, "_timeout"):
            self._port._timeout = seconds
        else:
            self._port.timeout = seconds

    def _closed_error(self) -> TransportError:
        return TransportError(f"port {self.url} was closed while in use",
                              "the reader was stopped; the next read opens the port again")

    def _io(self) -> "_Guard":
        return _Guard(self)


def _direct_fds(port: Any) -> Optional[Tuple[int, int]]:
    """(descriptor, abort pipe) of a pyserial POSIX port opened non-blocking, else None: only
    there reading the descriptor directly is what pyserial's read does (module docstring)."""
    posix = getattr(serial, "serialposix", None)
    if posix is None or type(port) is not getattr(posix, "Serial", None):
        return None
    fd, abort = getattr(port, "fd", None), getattr(port, "pipe_abort_read_r", None)
    if not isinstance(fd, int) or not isinstance(abort, int) or fd < 0:
        return None
    try:
        import fcntl

        if not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK:
            return None
    except (ImportError, OSError):
        return None
    return fd, abort


#: what Linux's tty layer hands out per read while VMIN is above it (module docstring)
_TTY_CHUNK = 64
_RETRY = (errno.EAGAIN, errno.EALREADY, errno.EWOULDBLOCK, errno.EINPROGRESS, errno.EINTR)


def _read_fd(fds: Tuple[int, int], max_bytes: int, wait: float, vmin: int = 0,
             waiter: Waiter = select_waiter) -> bytes:
    """What pyserial's POSIX read does, in one select and one read of up to ``max_bytes``:
    b"" after ``wait`` s or a ``cancel_read``; SerialException when the port is gone. ``vmin``:
    the tty's VMIN (module docstring); above 0 the read tells an empty line from a gone port.
    ``waiter`` waits when ``wait`` is above 0 (a look without waiting: ``_look_fd``)."""
    fd, abort = fds
    try:
        # with VMIN 0 (pyserial's) an empty line reads as 0 bytes, the same as a hung-up one;
        # only "readable" tells them apart
        if wait <= 0 and not vmin:
            return _look_fd(fd, abort, max_bytes)
        if wait > 0:
            ready = waiter([fd, abort], wait)
            if abort in ready:
                os.read(abort, 1000)
                return b""
            if not ready and not vmin:
                return b""
        data = os.read(fd, max_bytes)  # (VMIN above 0 and a timed-out wait: what is there, or EAGAIN)
        last = len(data)
        while vmin > _TTY_CHUNK and last == _TTY_CHUNK and len(data) < max_bytes:
            try:
                more = os.read(fd, max_bytes - len(data))
            except OSError:
                break  # empty now (EAGAIN); any other error comes again with the next read
            data += more
            last = len(more)
    except OSError as exc:
        if exc.errno in _RETRY:
            return b""  # nothing buffered (non-blocking), or a signal: like an empty read
        raise serial.SerialException(f"read failed: {exc}") from None
    if not data:  # readable without data: a disconnected device (pyserial says the same)
        raise serial.SerialException("device reports readiness to read but returned no data "
                                     "(device disconnected or multiple access on port?)")
    return data


def _look_fd(fd: int, abort: int, max_bytes: int) -> bytes:
    """``_read_fd`` without a wait and with VMIN 0: the read first, the select only when it
    brought nothing. Most such reads find bytes (a frame the listener slept through, the rest
    of a push), and then the select in front of them was one system call per push for nothing;
    an empty read still needs it, to tell an empty line (not readable) from a gone port."""
    data = os.read(fd, max_bytes)  # (OSError: the caller's handling)
    if data:
        return data
    ready = select.select([fd, abort], [], [], 0)[0]
    if abort in ready:
        os.read(abort, 1000)
        return b""
    if fd in ready:
        data = os.read(fd, max_bytes)  # (a byte may have come between the read and the select)
        if data:
            return data
        raise serial.SerialException("device reports readiness to read but returned no data "
                                     "(device disconnected or multiple access on port?)")
    return b""


#: how often a back-off looks whether a local port's device came back (``DeviceWatch``)
REPLUG_POLL = 0.5


class DeviceWatch:
    """Whether a local port's device node is there again since the watch began: an adapter
    replugged (its node made anew), or one that was missing plugged in. A back-off after a lost
    or missing port (doubling up to 30 s, so a missing adapter is not hammered) ends then, so
    a replugged adapter is read again within ``REPLUG_POLL``, not after the rest of its pause.
    URLs (``socket://``) and a node that never went away: never (the back-off runs its course)."""

    def __init__(self, port: str) -> None:
        self.path: Optional[str] = port if port.startswith("/") else None
        self._seen = self._node()

    def _node(self) -> Optional[Tuple[int, int]]:
        """The node behind the path (device number, inode), following a by-id link; None: absent."""
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_rdev, st.st_ino

    def back(self) -> bool:
        """True once for each node that appeared since the last look (absent then, or another)."""
        node = self._node()
        new = node is not None and node != self._seen
        self._seen = node
        return new

    def pause(self, backoff: Backoff, wait: Callable[[float], Any]) -> bool:
        """``wait`` (a stop event's, or a hosted loop's) for the back-off's next delay, in slices;
        True when the device came back meanwhile: the back-off starts over, the caller opens it at once."""
        end = time.monotonic() + backoff.next()
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return False
            if wait(min(left, REPLUG_POLL) if self.path is not None else left):
                return False  # (stopped)
            if self.back():
                backoff.reset()
                return True


class _Guard:
    """Holds the I/O lock and turns pyserial/OS errors into TransportError with a fix."""

    def __init__(self, transport: Transport) -> None:
        self.t = transport

    def __enter__(self) -> None:
        if self.t._closed:
            raise self.t._closed_error()
        self.t._lock.acquire()
        if self.t._closed:
            self.t._lock.release()
            raise self.t._closed_error()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Literal[False]:
        try:
            if self.t._closed:  # close() came while this call ran and left the port to us
                self.t._close_port()
        finally:
            self.t._lock.release()
        if exc is None or isinstance(exc, (TransportError, ConfigurationError)):
            return False
        if isinstance(exc, (serial.SerialException, OSError, ValueError, TypeError, AttributeError, _TermiosError)):
            if self.t._closed:
                raise self.t._closed_error() from None
            raise TransportError(
                f"port {self.t.url} failed ({exc})",
                "the adapter was unplugged or the connection dropped: check the cable; "
                "the next read opens the port again") from None
        return False


__all__ = ["Transport", "DeviceWatch", "Waiter", "select_waiter", "bits_per_char", "SLICE", "PARITY_ERROR",
           "add_parity", "check_parity"]
