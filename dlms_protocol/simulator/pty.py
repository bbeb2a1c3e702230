"""A serial line made of a pseudo-terminal pair, with the timing and baud rates of a real one.

The reader under test opens ``PtyLink.port`` (the pty slave, e.g. ``/dev/pts/7``) with pyserial
exactly as it would open ``/dev/ttyUSB0``; the simulated device (meter) holds the master side.

A pty moves bytes instantly and has no baud rate, so this module emulates the wire:

* **Pacing**: ``send()`` releases each character when its stop bit would have ended at the
  sender's current rate (``bits_per_char / baudrate / time_scale`` apart), so a reader sees
  a 9600 Bd readout arrive at 960 characters per second.
* **Baud rates of both ends**: the device side sets ``PtyLink.baudrate``. The reader's rate is
  the speed it configured on its end with termios (pyserial's ``baudrate``): on Linux a
  ``tcgetattr`` on the pty master returns the slave's settings, so ``peer_baudrate()`` reads
  the reader's ispeed at the moment bytes pass. When the two rates differ, the bytes are not
  passed on unchanged but *resampled*: the sender's bit stream (start bit, data bits LSB first,
  parity, stop bits) is sampled at the receiver's bit rate, as a UART would, which yields the
  same garbage a real receiver gets. A meter therefore ignores a sign-on sent at the wrong rate,
  and a reader that switches too late sees a garbled start. Bytes from the reader are tagged
  with the reader's rate when the device reads them, which is right as long as the reader does
  not re-program its port before the device has read what it wrote (any real drain or
  baud-switch delay guarantees that).
  When the device reads bytes only after they would have left the wire (a loaded machine),
  the reader's rate before the bytes came is taken instead, so a reader that correctly switches
  after its ACK is never punished for the simulator's own lateness.
* **Incoming wire time**: ``rx_done`` is when the last received character would have finished
  arriving at the reader's rate, so reaction times are measured from the real end of a request.
* **Open/close of the reader**: when no process has the slave open, reading the master fails
  with EIO; ``receive()`` (or ``poll_connection()``) reports that as ``connected = False`` and
  records the event, which lets tests see exactly when a reader closed the port.
* **Re-opening**: the Linux pty driver forces 8-bit characters, and tcsetattr (glibc) fails with
  EINVAL when none of the requested changes took (pyserial opening 7E1 or 8E1 at the rate the
  slave already has: the pty cannot keep the parity bit). So once no reader has had the port
  open for ``PARK_AFTER`` (50 ms), the link parks the slave at 38400 Bd with two stop bits (a pty
  ignores both), and the next open by pyserial changes a control flag. Not at once: a reader
  that re-opens at once (a poller's next session, its fallback to the readout) configures the
  port in those very moments, and a park written over its settings left its sign-on at the
  closed reader's rate (a CI failure of test_poll_pty; 2 in 150 runs of four sessions under
  load here, none in 200 since). A reader
  that re-opens within ``PARK_AFTER`` at the same rate with hardware parity, or reconfigures its
  open port to the settings it already has, can still get EINVAL (Transport.set_baudrate skips
  that); one the park finds back keeps its settings (``PtyLink._park``).
  Readers with software parity (Transport's default for 7E1) open 8N1, which the pty keeps as
  asked, so pyserial finds nothing to change and such re-opens work at once.
* **Parity bit (7E1, 7O1)**: the pty driver forces 8-bit characters on its slave and drops a
  reader's parity setting, so the character format a reader asked for cannot be seen and no
  UART adds or strips a parity bit. The link therefore carries each 10-bit 7E1 frame as the
  byte an 8N1 UART reads from it (7E1 and 8N1 frames are the same bits): what the device sends
  gets its parity bit in bit 7, what the reader wrote is checked and stripped to 7 bits (a
  byte with a wrong parity bit reaches the device as ``transport.PARITY_ERROR`` and is
  recorded as ``rx-parity-error``), and resampling at another rate works on those same bits.
  ``corrupt`` in ``send()`` flips bits of these wire bytes, so it is seen as the parity error
  real noise causes. This is exactly what ``transport.Transport`` with software parity (its
  default for 7E1) sends and expects. ``parity_bit=False`` hands over bare 7-bit characters
  instead, for a peer tool that relies on a 7E1 UART, which a pty cannot give it.

Limits: 8-bit formats with parity (8E1, 11 bits) do not fit into a pty byte; there both sides
are assumed to use ``bytesize``/``parity`` and characters pass unchanged. Linux only.
"""
from __future__ import annotations

import errno
import logging
import os
import select
import termios
import threading
import time
import tty
from typing import Callable, List, Optional, Tuple

from ..transport import PARITY_ERROR, add_parity, bits_per_char, check_parity

log = logging.getLogger(__name__)
_SEVEN_BITS = bytes(b & 0x7F for b in range(256))

_SPEEDS = {getattr(termios, f"B{rate}"): rate for rate in (
    50, 75, 110, 134, 150, 200, 300, 600, 1200, 1800, 2400, 4800, 9600, 19200, 38400,
    57600, 115200, 230400, 460800) if hasattr(termios, f"B{rate}")}

#: how long a send() sleeps at most before it checks whether it should stop
_TICK = 0.002
#: how long (real seconds) a slave stays closed before it is parked (module docstring)
PARK_AFTER = 0.05


def uart_resample(data: bytes, sender_baud: int, receiver_baud: int, bytesize: int = 7,
                  parity: str = "E", stopbits: int = 1) -> bytes:
    """What a UART at ``receiver_baud`` reads when ``data`` is sent back-to-back at ``sender_baud``.

    Equal rates return ``data`` unchanged (masked to ``bytesize`` bits). Otherwise the line level
    is reconstructed bit by bit and sampled in the middle of each receiver bit, starting at each
    falling edge (start bit) after the line was idle (high). Framing and parity errors are
    delivered as the sampled byte, as Linux does when input parity checking is off (pyserial's
    default).
    """
    mask = (1 << bytesize) - 1
    if sender_baud == receiver_baud:
        return bytes(b & mask for b in data)
    levels: List[int] = []
    for byte in data:
        bits = [(byte >> i) & 1 for i in range(bytesize)]
        levels.append(0)
        levels.extend(bits)
        if parity in ("E", "O"):
            ones = sum(bits)
            levels.append(ones & 1 if parity == "E" else 1 - (ones & 1))
        levels.extend([1] * stopbits)
    levels.extend([1] * (bytesize + 4))  # idle line after the burst
    ts = 1.0 / sender_baud
    tr = 1.0 / receiver_baud
    frame_bits = bytesize + (1 if parity in ("E", "O") else 0)
    total = len(levels) * ts

    def level_at(t: float) -> int:
        k = int(t / ts)
        return levels[k] if 0 <= k < len(levels) else 1

    out = bytearray()
    k = 0
    while k < len(levels):
        if levels[k] != 0:  # idle: wait for the falling edge of a start bit
            k += 1
            continue
        start = k * ts
        value = 0
        for i in range(bytesize):
            value |= level_at(start + (1.5 + i) * tr) << i
        out.append(value & mask)
        end = start + (1 + frame_bits + 0.5) * tr  # middle of the stop bit
        if end >= total:
            break
        # the receiver hunts for a new start bit only after it sees the line high again
        k = int(end / ts)
        while k < len(levels) and levels[k] == 0:
            k += 1
        while k < len(levels) and levels[k] == 1:
            k += 1
    return bytes(out)


class PtyLink:
    """The device end of an emulated serial line (see module docstring).

    ``time_scale`` > 1 makes everything faster (20 = twenty times real speed), for tests.
    ``on_event(name, detail)`` is called for ``connected``/``disconnected`` and whatever the
    device records with ``event()``; ``events`` keeps ``(monotonic time, name, detail)``.
    ``parity_bit`` (7E1/7O1 only): carry the parity bit in bit 7 of each pty byte (see the
    module docstring); ``last_raw`` holds the pty bytes behind the last ``receive()``.
    """

    def __init__(self, *, baudrate: int = 300, bytesize: int = 7, parity: str = "E", stopbits: int = 1,
                 time_scale: float = 1.0, on_event: Optional[Callable[[str, str], None]] = None,
                 parity_bit: bool = True) -> None:
        self.master, slave = os.openpty()
        self.port = os.ttyname(slave)
        tty.setraw(slave)  # no echo, no line editing before the reader configures the port
        os.close(slave)
        os.set_blocking(self.master, False)
        self.baudrate = baudrate
        self.bytesize = bytesize
        self.parity = parity
        self.stopbits = stopbits
        self.parity_bit = bool(parity_bit) and bytesize == 7 and parity in ("E", "O")
        self.time_scale = time_scale
        self.connected = False
        self.rx_done = 0.0
        self.events: List[Tuple[float, str, str]] = []
        self._on_event = on_event
        self._closed = threading.Event()
        self._pending = bytearray()
        self._pending_raw = bytearray()
        self.last_raw = b""
        self.bytes_sent = 0
        self.bytes_received = 0
        self._hangup = select.poll()  # (made once: each park checks the slave twice)
        self._hangup.register(self.master, select.POLLIN)
        self._park_at: Optional[float] = None  #: when the closed slave is to be parked (_park)
        self._park()

    # ------------------------------------------------------------------- basics
    def char_time(self, baudrate: Optional[int] = None) -> float:
        """Seconds per character at ``baudrate`` (default: this side's rate), divided by time_scale."""
        rate = baudrate or self.baudrate
        return bits_per_char(self.bytesize, self.parity, self.stopbits) / rate / self.time_scale

    def scaled(self, seconds: float) -> float:
        return seconds / self.time_scale

    def encode(self, data: bytes) -> bytes:
        """The pty bytes that carry these characters (the parity bit in bit 7, see above)."""
        return add_parity(data, self.parity) if self.parity_bit else bytes(data)

    def decode(self, data: bytes) -> bytes:
        """Characters from pty bytes: parity checked and stripped (errors as PARITY_ERROR)."""
        if self.parity_bit:
            return check_parity(data, self.parity)
        # a line of bare 7-bit characters cannot carry bit 7 (a bridge's 7E1 UART drops it)
        return bytes(data).translate(_SEVEN_BITS) if self.bytesize == 7 else bytes(data)

    def _wire_format(self) -> Tuple[int, str, int]:
        """The format to resample pty bytes in: a 7E1 frame is an 8N1 frame of the same bits."""
        return (8, "N", self.stopbits) if self.parity_bit else (self.bytesize, self.parity, self.stopbits)

    def peer_baudrate(self) -> Optional[int]:
        """The input speed the reader configured on its end (None if unknown)."""
        try:
            attrs = termios.tcgetattr(self.master)
        except (termios.error, OSError):
            return None
        return _SPEEDS.get(attrs[4])

    def event(self, name: str, detail: str = "") -> None:
        self.events.append((time.monotonic(), name, detail))
        if len(self.events) > 20000:  # a simulator left running for days
            del self.events[:10000]
        log.debug("pty %s: %s %s", self.port, name, detail)
        if self._on_event is not None:
            self._on_event(name, detail)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        try:
            os.close(self.master)
        except OSError:
            pass

    def sleep(self, seconds: float) -> bool:
        """Sleep unless closed; False when the link was closed meanwhile."""
        return not self._closed.wait(max(0.0, seconds))

    # --------------------------------------------------------------------- input
    def _set_connected(self, value: bool) -> None:
        if value != self.connected:
            self.connected = value
            self.event("connected" if value else "disconnected")
            self._park_at = None if value else time.monotonic() + PARK_AFTER

    def _park_when_due(self) -> None:
        """Park the closed slave once it has stayed closed for ``PARK_AFTER``."""
        if self._park_at is not None and time.monotonic() >= self._park_at:
            self._park_at = None
            self._park()

    def _park(self) -> None:
        """Set the closed slave to 38400 Bd and two stop bits, so that the next open by pyserial
        changes a control flag (see the module docstring). Never done while a reader has the port:
        a read-modify-write of its settings could undo a change it makes at the same moment.

        So the park is written only when the slave is closed just before (a reader that is back
        keeps what it set: ``park-skipped``). When a reader opened in the moment between (the
        slave is open right after the write) and has not configured the port since, the settings
        read before the write are put back (``park-undone``): its own, or those of the reader
        that closed, which the new one re-programs on its open anyway. Left: a reader that
        configures the port between the park's read and write (in this process: when the GIL
        passes to it there) loses its settings; ``PARK_AFTER`` makes a re-open that late rare."""
        master = self.master
        try:
            if not self._slave_closed():
                self.event("park-skipped", "the reader opened the port again meanwhile")
                return
            before = termios.tcgetattr(master)
            parked = list(before)
            parked[2] = before[2] | termios.CSTOPB
            parked[4] = parked[5] = termios.B38400
            termios.tcsetattr(master, termios.TCSANOW, parked)
            parked = termios.tcgetattr(master)  # as the tty keeps them (the speed is in c_cflag too)
            if self._slave_closed():
                return
            if termios.tcgetattr(master) == parked:  # (a reader that configured since keeps that)
                termios.tcsetattr(master, termios.TCSANOW, before)
            self.event("park-undone", "the reader opened the port again meanwhile")
        except (termios.error, OSError) as exc:
            log.debug("pty %s: cannot park the line: %s", self.port, exc)

    def _slave_closed(self) -> bool:
        """No reader has the slave open (the master reports a hang-up), without reading from it."""
        ready = self._hangup.poll(0)
        return bool(ready) and bool(ready[0][1] & select.POLLHUP)

    def poll_connection(self) -> bool:
        """Check at once whether a reader has the port open (for devices that never read)."""
        raw, data = self._read_once(0.0)
        if raw:
            self._pending += data
            self._pending_raw += raw
            del self._pending[:-4096]  # a device that never reads keeps only the latest bytes
            del self._pending_raw[:-4096]
        return self.connected

    def receive(self, timeout: float) -> bytes:
        """Bytes from the reader within ``timeout`` s, as this side decodes them at ``baudrate``.

        Returns b"" on time-out or while no reader has the port open.
        """
        if self._pending_raw:
            data, self._pending = bytes(self._pending), bytearray()
            self.last_raw, self._pending_raw = bytes(self._pending_raw), bytearray()
            return data
        self.last_raw, data = self._read_once(timeout)
        return data

    def _read_once(self, timeout: float) -> Tuple[bytes, bytes]:
        """(pty bytes as the reader wrote them, characters as this side decodes them)."""
        none = (b"", b"")
        if self._closed.is_set():
            return none
        before = self.peer_baudrate()  # the reader's rate before anything arrived
        waiting_since = time.monotonic()
        try:
            ready, _, _ = select.select([self.master], [], [], max(0.0, timeout))
        except (OSError, ValueError):
            return none
        if not ready:
            # with no slave open the master would be readable (EIO), so a reader has the port
            self._set_connected(True)
            return none
        try:
            data = os.read(self.master, 4096)
        except BlockingIOError:
            return none
        except OSError as exc:
            if exc.errno == errno.EIO:  # no reader has the slave open
                self._set_connected(False)
                self._park_when_due()
                self._closed.wait(min(timeout, 0.005))
                return none
            if self._closed.is_set():
                return none
            raise
        now = time.monotonic()
        self._set_connected(True)
        peer = self.peer_baudrate() or self.baudrate
        if peer != self.baudrate and before == self.baudrate \
                and now - waiting_since > len(data) * self.char_time(before):
            # We read these bytes only after they would have left the wire (a busy machine), and
            # the reader had our rate before they came: they were sent before it switched.
            peer = before
        self.rx_done = max(now, self.rx_done) + len(data) * self.char_time(peer)
        self.bytes_received += len(data)
        wire = data
        if peer != self.baudrate:
            wire = uart_resample(data, peer, self.baudrate, *self._wire_format())
        decoded = self.decode(wire)
        if peer != self.baudrate:
            self.event("rx-wrong-baud",
                       f"reader {peer} Bd, device {self.baudrate} Bd: {data[:20]!r} -> {decoded[:20]!r}")
        elif self.parity_bit and PARITY_ERROR in decoded:
            self.event("rx-parity-error", f"{decoded.count(PARITY_ERROR)} of {len(data)} bytes: {data[:20]!r}")
        return data, decoded

    def raw_write(self, data: bytes) -> None:
        """Write pty bytes at once, unpaced and unchanged: an echo of ``last_raw`` (the IR head's
        own reflection), or characters from ``encode()`` that arrive all at once."""
        self._write_all(data)

    # -------------------------------------------------------------------- output
    def send(self, data: bytes, *, stop: Optional[Callable[[], bool]] = None,
             corrupt: Optional[Callable[[int, int], int]] = None, wait_for_peer: float = 0.0) -> bool:
        """Send ``data`` at this side's rate with real character timing.

        Each character is released when its stop bit would have ended. If the reader's port is
        set to another rate at that moment, it gets what a UART at its rate would decode.
        ``corrupt(index, byte)`` may alter the bits on the line (noise): it gets the pty byte,
        i.e. with the parity bit in bit 7 on a 7E1 link, so a flipped bit is a parity error.
        ``wait_for_peer`` (seconds, real time) holds the first character until the reader's port
        has this side's rate, at most that long: a lenient meter for tests on loaded machines
        (0 = strict, like a real one).
        Returns False when interrupted (link closed or ``stop()`` true).
        """
        if wait_for_peer > 0:
            give_up = time.monotonic() + wait_for_peer
            while self.peer_baudrate() != self.baudrate and time.monotonic() < give_up:
                if not self.sleep(0.002):
                    return False
        ct = self.char_time()
        start = time.monotonic()
        sent = 0
        n = len(data)
        while sent < n:
            if self._closed.is_set() or (stop is not None and stop()):
                return False
            now = time.monotonic()
            due = min(n, int((now - start) / ct))  # characters whose stop bit has ended
            if due <= sent:
                self._closed.wait(min(_TICK, start + (sent + 1) * ct - now))
                continue
            self.poll_connection()  # notice a reader that opens or closes while we talk
            chunk = self.encode(bytes(data[sent:due]))
            if corrupt is not None:
                chunk = bytes(corrupt(sent + i, b) & 0xFF for i, b in enumerate(chunk))
            peer = self.peer_baudrate() or self.baudrate
            if peer != self.baudrate:
                chunk = uart_resample(chunk, self.baudrate, peer, *self._wire_format())
            self._write_all(chunk)
            self.bytes_sent += due - sent
            sent = due
        return True

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        give_up = time.monotonic() + 0.5
        while view and not self._closed.is_set():
            try:
                written = os.write(self.master, view)
                view = view[written:]
            except BlockingIOError:
                # The reader does not read and the pty buffer is full. A real line has no
                # back-pressure: after a short while the characters are lost (receiver overrun).
                if time.monotonic() > give_up:
                    self.event("overrun", f"{len(view)} bytes lost")
                    return
                select.select([], [self.master], [], 0.05)
            except OSError as exc:
                if exc.errno == errno.EIO or self._closed.is_set():
                    return
                raise


def publish_link(port: str, link: str) -> str:
    """Also publish ``port`` under the symlink ``link`` (a stable ``/dev/serial/by-id`` stand-in),
    replaced atomically so a reader never finds it missing; returns ``link``."""
    tmp = f"{link}.tmp{os.getpid()}"
    os.symlink(port, tmp)
    os.replace(tmp, link)
    return link


def remove_link(link: Optional[str]) -> None:
    """Remove a link ``publish_link`` made (like pulling the adapter: nothing if it is gone)."""
    if link and os.path.islink(link):
        os.unlink(link)


def stop_on_terminate() -> None:
    """A simulator command ends on SIGTERM as on Ctrl-C (its ``finally`` removes its ``--link``):
    killed with the default SIGTERM it left the link to a pty number the system gives out again,
    so a later reader could open another program's terminal through it."""
    import signal
    import threading

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():  # (only there can a handler be set)
        signal.signal(signal.SIGTERM, interrupt)


__all__ = ["PtyLink", "uart_resample", "publish_link", "remove_link", "stop_on_terminate"]
