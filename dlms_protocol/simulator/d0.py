"""A simulated IEC 62056-21 meter on a pseudo-terminal, for the demo, the tests and the benchmark.

::

    with SimulatedMeter("lgz_e350", mode="C", baudrate=9600) as meter:
        reader = D0Reader(ReadoutConfig(port=meter.port))
        data = reader.read()

It behaves like a meter behind an optical port, as far as a reader can tell:

* answers ``/?!`` (or its query code / device address) at 300 Bd after its reaction time,
  with the identification for its mode (A, B, C, E) and rate; ignores requests that arrive at
  the wrong baud rate (they reach it as garbage, see ``pty.PtyLink``), with a wrong address or
  query code, or — for a battery meter (``wakeup=True``) — without the NUL wake-up first;
* mode C/E: waits up to ``ack_timeout`` for ``ACK 0 Z 0``, switches to Z's rate only after the
  ACK has fully arrived plus ``ack_reaction_time`` (default: the reaction time; real meters often
  take longer here, which is why readers' 300-400 ms switch delays work); without an ACK it sends the readout at 300 Bd
  (``readout_without_ack``), as many real meters do; mode B switches by itself after the
  identification; mode A stays at 300 Bd; after the readout it drops back to 300 Bd;
* paces every character at the real character time of its current rate (``time_scale``
  divides all times, for fast tests);
* optional IR-head echo, noise before the identification, a bit flipped on the line in one
  character of the data message (``corrupt_at``, in every telegram of a push meter), bit errors
  above a rate (``unreliable_above``, a meter whose fast rate does not work). Both hit the bits
  on the wire after the parity bit was added, so a reader sees the parity error real noise causes;
* 7E1 characters travel as the bytes an 8N1 UART reads (parity bit in bit 7, see ``pty.PtyLink``);
  ``parity_bit=False`` is for peer tools that expect bare 7-bit characters from a pty;
* push-only mode: a telegram every ``push_interval`` s at ``push_baudrate``, no request.

A real meter does not wait for a reader that switches late; ``switch_grace`` (seconds, real
time, default 0 = strict) lets a time-scaled meter in a test hold its first character at the
new rate until the reader has switched, so that a loaded test machine cannot turn a correct
dialogue into a garbled one. The benchmark and the demo run strict.

``events`` records what happened (``sign-on``, ``identification``, ``ack``, ``data-end``,
``disconnected`` when the reader closed the port, ``idle-timeout`` when a reader kept the port
open and silent for ``idle_timeout`` after a readout, ``ignored-*`` for refused requests).
"""
from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path
from typing import Callable, List, Optional, Tuple, Union

from ..errors import ConfigurationError
from .meters import (MODES, MeterImage, compose_identification, frame_message, load_meter)
from .pty import PtyLink

log = logging.getLogger(__name__)

WAKEUP_NULS = 40          # NULs a battery meter needs to see (about 1.3 s at 300 Bd)
AWAKE_SECONDS = 10.0      # how long it stays awake after the wake-up
_REQUEST = re.compile(rb"/([?0-9#A-Za-z])([^!/\r\n]{0,32})!\r\n")
_ACK = re.compile(rb"\x06([0-9])([0-9])([0-9])\r\n")
_C_RATES = {"0": 300, "1": 600, "2": 1200, "3": 2400, "4": 4800, "5": 9600, "6": 19200}


class SimulatedMeter:
    """A meter in a thread, reachable through ``port`` (a pty path a reader opens like a serial port)."""

    def __init__(self, meter: Union[str, Path, MeterImage, None] = None, *, mode: Optional[str] = None,
                 baudrate: Optional[int] = None, reaction_time: float = 0.2,
                 ack_reaction_time: Optional[float] = None, time_scale: float = 1.0,
                 echo: bool = False, noise: bytes = b"", wakeup: Optional[bool] = None,
                 address: Optional[str] = None, query_code: Optional[str] = None, keep_bytes: bool = False,
                 framing: Optional[str] = None, corrupt_at: Optional[int] = None,
                 unreliable_above: Optional[int] = None, ack_timeout: float = 1.5,
                 readout_without_ack: bool = True, idle_timeout: Optional[float] = None,
                 push_interval: float = 1.0, push_baudrate: Optional[int] = None,
                 switch_grace: float = 0.0, parity_bit: bool = True) -> None:
        self.image = load_meter(meter)
        self.mode = mode or self.image.mode
        if self.mode not in MODES:
            raise ConfigurationError(f"meter mode {self.mode!r} unknown", "use A, B, C, E or push")
        if baudrate:
            rate = int(baudrate)
        elif self.mode == "A":
            rate = 300
        elif (self.mode == "push") != (self.image.mode == "push"):
            rate = 9600  # a push image read in request mode or vice versa: the usual rate
        else:
            rate = self.image.baudrate
        if self.mode == "B" and rate < 600:
            rate = 9600
        self.baudrate = rate
        self.reaction_time = reaction_time
        self.ack_reaction_time = reaction_time if ack_reaction_time is None else ack_reaction_time
        self.echo = echo
        self.noise = noise
        self.wakeup = self.image.wakeup if wakeup is None else wakeup
        self.address = self.image.address if address is None else address
        self.query_code = query_code or self.image.query_code
        self.keep_bytes = keep_bytes
        self.framing = framing or self.image.framing
        self.corrupt_at = corrupt_at
        self.unreliable_above = unreliable_above
        self.ack_timeout = ack_timeout
        self.readout_without_ack = readout_without_ack
        self.idle_timeout = idle_timeout
        self.push_interval = push_interval
        self.switch_grace = switch_grace
        self.push_baudrate = int(push_baudrate or (self.baudrate if self.mode == "push" else 9600))
        self.identification = compose_identification(self.image, self.mode, self.baudrate)
        self.message = self._message()
        self.link = PtyLink(baudrate=self.push_baudrate if self.mode == "push" else 300, time_scale=time_scale,
                            parity_bit=parity_bit)
        self.readouts = 0
        self._thread: Optional[threading.Thread] = None
        self._awake_until = 0.0
        self._nul_run = 0
        self._error: Optional[BaseException] = None

    # ------------------------------------------------------------------ public
    @property
    def port(self) -> str:
        return self.link.port

    @property
    def time_scale(self) -> float:
        return self.link.time_scale

    @property
    def events(self) -> List[Tuple[float, str, str]]:
        return list(self.link.events)

    def event_names(self) -> List[str]:
        return [name for _, name, _ in self.link.events]

    def wait_for(self, name: str, timeout: float = 5.0, after: int = 0) -> bool:
        """Wait until event ``name`` was recorded (at index >= ``after``); False on time-out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if name in self.event_names()[after:]:
                return True
            time.sleep(0.005)
        return False

    def start(self) -> "SimulatedMeter":
        self._thread = threading.Thread(target=self._main, name=f"simulated-meter-{self.image.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.link.close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> "SimulatedMeter":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def describe(self) -> str:
        ident = self.identification.decode("ascii", "replace").strip()
        if self.mode == "push":
            return f"{ident} push-only, a telegram every {self.push_interval:g} s at {self.push_baudrate} Bd 7E1"
        rate = f"300 -> {self.baudrate} Bd" if self.mode in ("B", "C", "E") and self.baudrate != 300 else "300 Bd"
        extra = [x for x, on in (("echo", self.echo), ("needs wake-up", self.wakeup),
                                 (f"address {self.address}", bool(self.address))) if on]
        tail = ", " + ", ".join(extra) if extra else ""
        return f"{ident} mode {self.mode}, {rate}, {self.image.lines} lines{tail}"

    # ---------------------------------------------------------------- internals
    def _message(self) -> bytes:
        if self.keep_bytes and self.image.capture is not None:
            return self.image.capture
        return frame_message(self.image.block, self.framing)

    def _noise(self, rate: int, offset: int = 0) -> Optional[Callable[[int, int], int]]:
        """Bit errors on the line for a send of the data message starting at ``offset``."""
        flip_at = None
        if self.corrupt_at is not None:
            flip_at = offset + min(max(1, self.corrupt_at), len(self.message) - 3)
        unreliable = self.unreliable_above is not None and rate > self.unreliable_above
        if flip_at is None and not unreliable:
            return None

        def corrupt(index: int, byte: int) -> int:
            if index == flip_at:
                byte ^= 0x01  # one bit flipped by noise on the line
            if unreliable and (index - offset) % 97 == 50:
                byte ^= 0x08
            return byte
        return corrupt

    def _main(self) -> None:
        try:
            if self.mode == "push":
                self._push_loop()
            else:
                self._request_loop()
        except Exception as exc:  # the simulator thread must report, not vanish silently
            self._error = exc
            log.exception("simulated meter stopped")
            self.link.event("crashed", repr(exc))

    def _wait_until(self, when: float) -> bool:
        return self.link.sleep(when - time.monotonic())

    def _note_nuls(self, data: bytes) -> None:
        for byte in data:
            if byte == 0:
                self._nul_run += 1
                if self._nul_run == WAKEUP_NULS:
                    # counted from when the NULs have arrived on the (simulated) wire
                    self._awake_until = self.link.rx_done + self.link.scaled(AWAKE_SECONDS)
                    self.link.event("woken")
            else:
                self._nul_run = 0

    def _receive(self, timeout: float) -> bytes:
        data = self.link.receive(timeout)
        if data and self.echo:
            self.link.raw_write(self.link.last_raw)  # the reader's bytes as they were on the line
        if data:
            self._note_nuls(data)
        return data

    def _request_loop(self) -> None:
        link = self.link
        buf = bytearray()
        idle_deadline: Optional[float] = None
        while not link.closed:
            link.baudrate = 300
            data = self._receive(0.02)
            if not data:
                if idle_deadline is not None and time.monotonic() >= idle_deadline:
                    if link.connected:
                        link.event("idle-timeout")
                    idle_deadline = None
                if not link.connected:
                    idle_deadline = None
                continue
            idle_deadline = None
            buf += data
            del buf[:-256]
            m = _REQUEST.search(buf)
            if m is None:
                continue
            code, address = m.group(1).decode(), m.group(2).decode("ascii", "replace")
            request = bytes(m.group(0))
            del buf[:m.end()]  # (after reading the groups: they are views of the bytearray)
            if self.wakeup and time.monotonic() > self._awake_until:
                link.event("ignored-asleep", repr(request))
                continue
            if code != self.query_code:
                link.event("ignored-query-code", repr(request))
                continue
            if address and address != self.address:
                link.event("ignored-address", repr(request))
                continue
            link.event("sign-on", repr(request))
            if self._session():
                self.readouts += 1
                link.event("data-end", f"{self.readouts}")
                if self.idle_timeout is not None:
                    idle_deadline = time.monotonic() + link.scaled(self.idle_timeout)
            buf.clear()

    def _session(self) -> bool:
        """Identification, mode switch, data message. False when the session was abandoned."""
        link = self.link
        reaction = link.scaled(self.reaction_time)
        if not self._wait_until(link.rx_done + reaction):
            return False
        if self.noise and not link.send(self.noise):
            return False
        if not link.send(self.identification):
            return False
        link.event("identification", self.identification.decode("ascii", "replace").strip())
        rate = 300
        if self.mode == "A":
            if not link.sleep(reaction):
                return False
        elif self.mode == "B":
            rate = self.baudrate
            link.baudrate = rate
            if not link.sleep(reaction):
                return False
        else:
            acked = self._await_ack()
            if acked is None:
                return False
            rate = acked
            if not self._wait_until(link.rx_done + link.scaled(self.ack_reaction_time)):
                return False
        link.baudrate = rate
        link.event("data-start", f"{rate} Bd")
        ok = link.send(self.message, corrupt=self._noise(rate),
                       wait_for_peer=self.switch_grace if rate != 300 else 0.0)
        link.baudrate = 300
        return ok

    def _await_ack(self) -> Optional[int]:
        """Wait for the acknowledgement; the rate to send at, or None to abandon the session."""
        link = self.link
        deadline = time.monotonic() + link.scaled(self.ack_timeout)
        buf = bytearray()
        while time.monotonic() < deadline and not link.closed:
            data = self._receive(min(0.02, max(0.0, deadline - time.monotonic())))
            if not data:
                continue
            buf += data
            m = _ACK.search(buf)
            if m is None:
                continue
            protocol, z, option = (g.decode("ascii") for g in m.groups())
            link.event("ack", repr(m.group(0)))
            if protocol != "0" or option != "0":
                link.event("ack-unsupported", f"V={protocol} Y={option}: only the data readout is simulated")
                return None
            rate = _C_RATES.get(z)
            if rate is None or rate > self.baudrate:
                link.event("ack-bad-rate", f"Z={z}")
                return None
            return rate
        if link.closed:
            return None
        if self.readout_without_ack:
            link.event("no-ack", "sending the readout at 300 Bd")
            return 300
        link.event("no-ack", "session abandoned")
        return None

    def _push_loop(self) -> None:
        link = self.link
        link.baudrate = self.push_baudrate
        telegram = self.identification + self.message
        noise = self._noise(self.push_baudrate, len(self.identification))
        while not link.closed:
            started = time.monotonic()
            link.poll_connection()
            if not link.send(telegram, corrupt=noise):
                return
            self.readouts += 1
            link.event("telegram", str(self.readouts))
            next_start = started + link.scaled(self.push_interval)
            while time.monotonic() < next_start:
                link.poll_connection()  # notices readers coming and going, keeps the line re-openable
                if not link.sleep(min(0.02, next_start - time.monotonic())):
                    return


__all__ = ["SimulatedMeter", "WAKEUP_NULS"]
