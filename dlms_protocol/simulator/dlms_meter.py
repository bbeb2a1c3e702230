"""A simulated DLMS/COSEM meter to poll: on a pty (optical mode E or RS485 HDLC) or on TCP (wrapper).

::

    with DlmsPtyMeter(demo_model(), mode_e=True, time_scale=10) as meter:
        ...  # poll meter.port
    with DlmsTcpMeter(demo_model()) as meter:
        ...  # poll meter.url (tcp://127.0.0.1:<port>)

The pty meter behaves like an optical port of an E450/ZMD: at 300 Bd 7E1 it answers ``/?!`` with
an identification announcing mode E (``/LGZ5\\2...``, 9600 Bd), switches to 8N1 at the
acknowledged rate after ``ACK 2 Z 2`` and then speaks HDLC until DISC or its inactivity time-out,
after which it listens for a sign-on again. ``mode_e=False`` is a meter on RS485: HDLC at
``baudrate`` 8N1 from the start. Characters are paced at the real character time (``time_scale``
divides it); ``turnaround`` is the meter's reaction time before each answer frame; ``echo``
reflects every byte the client sends, as many half-duplex optical heads do.

The TCP meter accepts any number of connections, each with its own association and the DLMS/IP
wrapper; all share one model, the meter's invocation counter and the counters it has seen.
"""
from __future__ import annotations

import logging
import re
import socket
import threading
import time
from typing import Dict, List, Optional, Tuple

from .cosem_model import MeterModel, demo_model
from .dlms_server import ClientAccount, CosemServer, HdlcServer, ServerSecurity, WrapperServer
from .pty import PtyLink

log = logging.getLogger(__name__)

_REQUEST = re.compile(rb"/\?([^!/\r\n]{0,32})!\r\n")
_ACK = re.compile(rb"\x06([0-9])([0-9])([0-9])\r\n")
_RATES = {"0": 300, "1": 600, "2": 1200, "3": 2400, "4": 4800, "5": 9600, "6": 19200}
_CHARS = {v: k for k, v in _RATES.items()}


class _Shared:
    """State that outlives one connection: the meter's counter and the client counters it has seen."""

    def __init__(self, model: MeterModel, accounts: Optional[Dict[int, ClientAccount]],
                 security: Optional[ServerSecurity], max_pdu: int) -> None:
        self.model = model
        self.accounts = accounts
        self.security = security
        self.max_pdu = max_pdu
        self.seen: Dict[bytes, int] = {}
        self.events: List[Tuple[str, str]] = []

    def server(self) -> CosemServer:
        app = CosemServer(self.model, self.accounts, self.security, self.max_pdu, events=self.events)
        app.seen_counters = self.seen
        return app

    def event_names(self) -> List[str]:
        return [name for name, _ in list(self.events)]


class DlmsPtyMeter:
    """The meter on a pseudo-terminal; ``port`` is what a client opens."""

    def __init__(self, model: Optional[MeterModel] = None, *, mode_e: bool = True, baudrate: int = 9600,
                 time_scale: float = 1.0, accounts: Optional[Dict[int, ClientAccount]] = None,
                 security: Optional[ServerSecurity] = None, logical: int = 1, physical: int = 17,
                 address_size: int = 2, max_info: int = 128, max_pdu: int = 512,
                 identification: Optional[bytes] = None, reaction_time: float = 0.2, turnaround: float = 0.02,
                 inactivity: float = 120.0, echo: bool = False, deaf_sign_ons: int = 0) -> None:
        self.shared = _Shared(model or demo_model(), accounts, security, max_pdu)
        self.mode_e = mode_e
        self.baudrate = baudrate
        self.logical, self.physical, self.address_size, self.max_info = logical, physical, address_size, max_info
        self.identification = identification or b"/LGZ" + _CHARS[baudrate].encode() + b"\\2ZMD4104407.B32\r\n"
        self.reaction_time = reaction_time
        self.turnaround = turnaround
        self.inactivity = inactivity
        #: a half-duplex IR head that reflects everything the client sends (in both phases)
        self.echo = echo
        #: sign-on requests to ignore first (an optical port that wakes up on the first one)
        self.deaf_sign_ons = deaf_sign_ons
        if mode_e:
            self.link = PtyLink(baudrate=300, time_scale=time_scale)
        else:
            self.link = PtyLink(baudrate=baudrate, bytesize=8, parity="N", time_scale=time_scale)
        self.sessions = 0
        self._thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------------ public
    @property
    def port(self) -> str:
        return self.link.port

    @property
    def model(self) -> MeterModel:
        return self.shared.model

    @property
    def events(self) -> List[Tuple[str, str]]:
        """Server events plus the line's (``sign-on``, ``identification``, ``mode-e`` ...)."""
        return list(self.shared.events)

    def event_names(self) -> List[str]:
        return self.shared.event_names()

    def start(self) -> "DlmsPtyMeter":
        self._thread = threading.Thread(target=self._main, name="simulated-dlms-meter", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.link.close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> "DlmsPtyMeter":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def describe(self) -> str:
        how = (f"optical port, mode E sign-on at 300 Bd then HDLC at {self.baudrate} Bd" if self.mode_e
               else f"HDLC at {self.baudrate} Bd 8N1")
        return f"DLMS meter {self.model.serial}: {how}, server address {self.logical}/{self.physical}"

    # ---------------------------------------------------------------- internals
    def _event(self, name: str, detail: str = "") -> None:
        self.shared.events.append((name, detail))
        self.link.event(name, detail)

    def _main(self) -> None:
        try:
            while not self.link.closed:
                if self.mode_e:
                    rate = self._sign_on()
                    if rate is None:
                        continue
                    self._line(rate, 8, "N")
                self._hdlc()
                if not self.mode_e:
                    continue
        except Exception as exc:  # the simulator thread must report, not vanish silently
            log.exception("simulated DLMS meter stopped")
            self._event("crashed", repr(exc))

    def _receive(self, timeout: float) -> bytes:
        data = self.link.receive(timeout)
        if data and self.echo:
            self.link.raw_write(self.link.last_raw)
        return data

    def _line(self, rate: int, bytesize: int, parity: str) -> None:
        link = self.link
        link.baudrate, link.bytesize, link.parity = rate, bytesize, parity
        link.parity_bit = bytesize == 7

    def _sign_on(self) -> Optional[int]:
        """Wait for ``/?!``, identify, wait for ``ACK 2 Z 2``; the HDLC rate, or None."""
        link = self.link
        self._line(300, 7, "E")
        buf = bytearray()
        while not link.closed:
            data = self._receive(0.05)
            if not data:
                continue
            buf += data
            del buf[:-128]
            if not _REQUEST.search(buf):
                continue
            if self.deaf_sign_ons <= 0:
                break
            self.deaf_sign_ons -= 1
            self._event("sign-on-ignored")
            buf.clear()
        else:
            return None
        self._event("sign-on")
        if not link.sleep(max(0.0, link.rx_done + link.scaled(self.reaction_time) - time.monotonic())):
            return None
        if not link.send(self.identification):
            return None
        self._event("identification", self.identification.decode("ascii", "replace").strip())
        deadline = time.monotonic() + link.scaled(1.5)
        buf.clear()
        while time.monotonic() < deadline and not link.closed:
            buf += self._receive(0.02)
            m = _ACK.search(buf)
            if m is None:
                continue
            protocol, z, option = (g.decode() for g in m.groups())
            self._event("ack", repr(m.group(0)))
            rate = _RATES.get(z)
            if protocol != "2" or option != "2" or rate is None or rate > self.baudrate:
                self._event("ack-unsupported", f"V={protocol} Z={z} Y={option}: this meter only does HDLC")
                return None
            link.sleep(max(0.0, link.rx_done + link.scaled(self.reaction_time) - time.monotonic()))
            self._event("mode-e", f"HDLC at {rate} Bd")
            return rate
        self._event("no-ack")
        return None

    def _hdlc(self) -> None:
        """One HDLC session: until DISC, the inactivity time-out or the link closing."""
        link = self.link
        hdlc = HdlcServer(self.shared.server(), self.logical, self.physical, self.address_size, self.max_info)
        last = time.monotonic()
        while not link.closed:
            data = self._receive(0.02)
            if not data:
                if time.monotonic() - last > link.scaled(self.inactivity):
                    self._event("inactivity-timeout")
                    return
                continue
            last = time.monotonic()
            was_connected = hdlc.connected
            for frame in hdlc.feed(data):
                link.sleep(max(0.0, link.rx_done + link.scaled(self.turnaround) - time.monotonic()))
                if not link.send(frame):
                    return
            if was_connected and not hdlc.connected:
                self.sessions += 1
                self._event("session-end", str(self.sessions))
                if self.mode_e:
                    return
            last = time.monotonic()


class DlmsTcpMeter:
    """The meter behind a DLMS/IP wrapper on 127.0.0.1 (``url`` = ``tcp://127.0.0.1:<port>``)."""

    def __init__(self, model: Optional[MeterModel] = None, *, host: str = "127.0.0.1", port: int = 0,
                 accounts: Optional[Dict[int, ClientAccount]] = None, security: Optional[ServerSecurity] = None,
                 logical: int = 1, max_pdu: int = 512) -> None:
        self.shared = _Shared(model or demo_model(), accounts, security, max_pdu)
        self.logical = logical
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self._sock.listen(4)
        self._sock.settimeout(0.1)
        self.host, self.port = self._sock.getsockname()[:2]
        self._stop = threading.Event()
        self._threads: List[threading.Thread] = []
        self.connections = 0

    @property
    def url(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    @property
    def model(self) -> MeterModel:
        return self.shared.model

    @property
    def events(self) -> List[Tuple[str, str]]:
        return list(self.shared.events)

    def event_names(self) -> List[str]:
        return self.shared.event_names()

    def describe(self) -> str:
        return f"DLMS meter {self.model.serial}: DLMS/IP wrapper on {self.url}, logical device {self.logical}"

    def start(self) -> "DlmsTcpMeter":
        t = threading.Thread(target=self._accept, name="simulated-dlms-tcp", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._sock.close()
        for t in list(self._threads):
            t.join(2)

    def __enter__(self) -> "DlmsTcpMeter":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            t = threading.Thread(target=self._serve, args=(conn,), name="simulated-dlms-conn", daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, conn: socket.socket) -> None:
        wrapper = WrapperServer(self.shared.server(), self.logical)
        conn.settimeout(0.1)
        with conn:
            while not self._stop.is_set():
                try:
                    data = conn.recv(4096)
                except socket.timeout:
                    continue
                except OSError:
                    return
                if not data:
                    self.shared.events.append(("tcp-closed", ""))
                    return
                for frame in wrapper.feed(data):
                    conn.sendall(frame)


__all__ = ["DlmsPtyMeter", "DlmsTcpMeter"]
