"""``detect PORT``: listen at the usual speeds and formats, then sign on; report what answered.

Safe order: everything passive first (a self-sending meter must not be disturbed, and a
request would be noise on an RS485 bus), the IEC 62056-21 sign-on at 300 Bd 7E1 last. Each
passive window lasts ``listen`` seconds, grows to ``dwell`` seconds as soon as bytes arrive
(a push period can be 10 s), and ends early once a message *passed its checks* (CRC, FCS,
BCC) and a second one gave the push period; everything together never exceeds ``total``.
When bytes came at some settings but others stayed quiet, the meter pushes with pauses longer
than a window, so the quiet settings are tried once more with ``dwell``-long windows before the
sign-on (the right one may have fallen between two pushes).
A protocol is only reported from verified bytes (or, for encrypted DLMS, from a frame whose
FCS/checksum held and whose ciphering header parses), never from a byte pattern alone.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..config import ListenerConfig, ReadoutConfig, format_name, parse_format
from ..errors import ConfigurationError, DlmsError
from ..model import MeterData, Statistics
from ..ratelimit import log_notes
from ..transport import Transport
from .decoders import AutoDecoder

log = logging.getLogger(__name__)

#: passive probes in order: (baud rate, format); the most common first
PASSIVE: Tuple[Tuple[int, str], ...] = (
    (9600, "8N1"),    # SML (German INFO interface), DSMR 2/3 P1 is 9600 7E1
    (9600, "7E1"),    # push-only D0 (EasyMeter Q3D, eBZ DD3, Logarex), DSMR 2/3
    (2400, "8E1"),    # DLMS push over M-Bus (Austria)
    (115200, "8N1"),  # DLMS push on P1/HAN (Kaifa, Kamstrup, Aidon, DSMR 4/5)
    (2400, "8N1"),    # DLMS push over RS485 (Norway Kaifa/Aidon, some Swiss)
    (300, "7E1"),     # old push-only D0
    (4800, "7E1"),
    (19200, "8N1"),
)


@dataclass
class Finding:
    """What detect found on the port."""

    protocol: str  # "sml", "dlms", "d0-push", "d0-request"
    port: str
    baudrate: int
    char_format: str
    meter_id: Optional[str] = None
    manufacturer: Optional[str] = None
    encrypted: bool = False
    security: Optional[int] = None  # security control byte of ciphered frames
    wrapper: Optional[str] = None  # DLMS link framing (hdlc, mbus, ...)
    period: Optional[float] = None  # seconds between pushes
    data: Optional[MeterData] = None  # a verified snapshot (None when encrypted without key)
    notes: List[str] = field(default_factory=list)
    #: the tags verified with a published authentication key (security.PUBLISHED_AUTH_KEYS): none to ask for
    published_auth: Optional[str] = None

    def summary(self) -> List[str]:
        """The lines ``detect`` prints."""
        name = {"sml": "SML (optical INFO interface)", "dlms": "DLMS/COSEM push",
                "d0-push": "IEC 62056-21 push-only D0", "d0-request": "IEC 62056-21 request mode (D0 sign-on)"}
        lines = [f"protocol:   {name.get(self.protocol, self.protocol)}",
                 f"port:       {self.port}",
                 f"speed:      {self.baudrate} Bd" + (" (after sign-on at 300 Bd)" if self.protocol == "d0-request"
                                                    and self.baudrate != 300 else ""),
                 f"format:     {self.char_format}"]
        if self.wrapper:
            lines.append(f"framing:    {self.wrapper}")
        if self.meter_id or self.manufacturer:
            maker = f" ({self.manufacturer})" if self.manufacturer else ""
            lines.append(f"meter:      {self.meter_id or '?'}{maker}")
        if self.protocol == "dlms":
            lines.append("encryption: " + (f"encrypted, security 0x{self.security:02X}: ask your grid operator for "
                                           "the key" if self.encrypted and self.data is None else
                                           f"encrypted, security 0x{self.security:02X}" if self.encrypted else "none")
                         + (f", tags verified with the published {self.published_auth} authentication key"
                            if self.published_auth else ""))
        if self.period:
            lines.append(f"period:     {self.period:.1f} s")
        if self.data is not None:
            lines.append(f"values:     {len(self.data.readings)} readings")
        lines += [f"note:       {n}" for n in self.notes]
        return lines


@dataclass
class _Window:
    """What one passive window saw."""

    bytes_seen: int = 0
    messages: List[Tuple[float, Any, str]] = field(default_factory=list)  # (time, message, protocol)
    ciphered: List[Tuple[float, int, bytes, str]] = field(default_factory=list)  # (time, sc, system title, wrapper)
    errors: Dict[str, DlmsError] = field(default_factory=dict)
    raw: bytearray = field(default_factory=bytearray)


class Detector:
    """Probe one port (see module docstring). ``progress(text)`` is told each step.

    ``opener(url, baudrate, bytesize, parity, stopbits)`` opens the port (Transport.open);
    ``reader_options`` go to the D0 reader of the sign-on (tests: ``time_scale``).
    """

    def __init__(self, port: str, *, listen: float = 3.0, dwell: float = 12.0, total: float = 120.0,
                 passive: Sequence[Tuple[int, str]] = PASSIVE, sign_on: bool = True,
                 progress: Optional[Callable[[str], None]] = None, opener: Callable[..., Transport] = Transport.open,
                 reader_options: Optional[Dict[str, Any]] = None, clock: Callable[[], float] = time.monotonic,
                 key: Optional[bytes] = None, auth_key: Optional[bytes] = None) -> None:
        self.port = port
        self.listen = listen
        self.dwell = max(dwell, listen)
        self.total = total
        self.passive = [(baud, format_name(fmt)) for baud, fmt in passive]  # a bad format fails here, at once
        self.sign_on = sign_on
        self.progress = progress or (lambda text: None)
        self.opener = opener
        self.reader_options = dict(reader_options or {})
        self.clock = clock
        self.key, self.auth_key = key, auth_key
        self.seen: List[str] = []  #: what was seen where nothing could be read (for the diagnosis)
        #: speeds and formats whose listening window stayed silent (a meter that pushes rarely)
        self.silent: List[str] = []
        self._deadline = 0.0
        self._heard = False  #: some window got bytes: the meter sends

    @property
    def remote(self) -> bool:
        """A socket:// or rfc2217:// port: the serial server sets speed and format, one passive pass."""
        return "://" in self.port

    def run(self) -> Optional[Finding]:
        """Probe until something is found or the time is up; None when nothing answered."""
        self._deadline = self.clock() + self.total
        self._heard = False
        probes = self.passive[:1] if self.remote else self.passive
        finding = self._listen_at(probes, self.listen, "listening at")
        if finding is None and self._heard and self.silent:
            # Bytes came at other settings, so the meter sends, with pauses: a window that stayed
            # quiet fell between two pushes (a 5-10 s push period against a 3 s window), and the
            # setting it tried may be the right one. Each gets a window as long as a dwell.
            again = [(baud, fmt) for baud, fmt in self.passive if f"{baud} Bd {fmt}" in self.silent]
            self.silent = []
            finding = self._listen_at(again, self.dwell, "listening longer (it was quiet between pushes) at")
        if finding is not None:
            return finding
        if self.sign_on and self._deadline - self.clock() > 1.0:
            self.progress("signing on at 300 Bd 7E1 (IEC 62056-21) …")
            return self._request()
        return None

    # ------------------------------------------------------------------ passive
    def _listen_at(self, probes: Sequence[Tuple[int, str]], window: float, what: str) -> Optional[Finding]:
        """One passive window per (baud, format), each ``window`` s unless bytes arrive."""
        for baud, fmt in probes:
            if self._deadline - self.clock() <= 0.5:
                break
            self.progress(f"{what} {baud} Bd {fmt} …" if not self.remote else "listening …")
            finding = self._passive(baud, fmt, window)
            if finding is not None:
                if self.remote:
                    finding.notes.append("speed and format are those set on the serial server (ser2net); the "
                                         "values above only matter for a local port")
                return finding
        return None

    def _passive(self, baud: int, fmt: str, window: float) -> Optional[Finding]:
        bytesize, parity, stopbits = parse_format(fmt)
        try:
            port = self.opener(self.port, baud, bytesize, parity, stopbits)
        except DlmsError as exc:
            if isinstance(exc, ConfigurationError):
                raise
            self.seen.append(f"{baud} {fmt}: cannot open the port ({exc})")
            raise
        try:
            heard = self._collect(port, window)
        finally:
            port.close()
        self._heard = self._heard or heard.bytes_seen > 0
        return self._judge(heard, baud, fmt)

    def _collect(self, port: Transport, listen: float) -> _Window:
        from ..dlms.deframer import Deframer

        w = _Window()
        decoder = AutoDecoder(ListenerConfig(port="-", key=self.key, auth_key=self.auth_key), Statistics())
        deframer = Deframer("auto")
        start = self.clock()
        end = min(start + listen, self._deadline)
        first_at: Optional[float] = None
        while self.clock() < end:
            chunk = port.read_some(4096, 0.1)
            now = self.clock()
            if chunk:
                if not w.bytes_seen:
                    end = min(max(end, now + self.dwell), self._deadline)
                w.bytes_seen += len(chunk)
                if len(w.raw) < 65536:
                    w.raw += chunk
            # a quiet line decides what waited for more bytes (a bare APDU first on the line)
            for msg in decoder.feed(chunk) if chunk else decoder.settle():
                w.messages.append((now, msg, decoder.protocol or "?"))
            if chunk:
                self._ciphered(deframer, chunk, now, w)
            count = len(w.messages) or len(w.ciphered)
            if count and first_at is None:
                first_at = now
                end = min(max(end, now + self.dwell), self._deadline)  # wait for a second one: the period
            if count >= 2:
                break
        w.errors = dict(decoder.errors)
        log_notes(log, decoder.take_notes())  # (the recognised decoder's: a profile problem, the AES engine)
        return w

    @staticmethod
    def _ciphered(deframer: Any, chunk: bytes, now: float, w: _Window) -> None:
        """Ciphered APDUs from checksummed frames (HDLC FCS, M-Bus checksum): encrypted DLMS push."""
        from ..dlms.security import parse_ciphered
        from ..dlms.wrapper import CIPHERED_TAGS

        for item in deframer.feed(chunk):
            if isinstance(item, DlmsError) or item.wrapper not in ("hdlc", "mbus"):
                continue
            apdu = item.apdu
            if apdu[:1] and apdu[0] in CIPHERED_TAGS:
                try:
                    p = parse_ciphered(bytes(apdu))
                except DlmsError:
                    continue
                w.ciphered.append((now, p.security_control, p.system_title, item.wrapper))

    def _judge(self, w: _Window, baud: int, fmt: str) -> Optional[Finding]:
        if w.messages:
            return self._from_messages(w, baud, fmt)
        if w.ciphered:
            _, sc, title, wrapper = w.ciphered[0]
            maker = title[:3].decode("ascii", "replace") if title[:3].isalpha() else None
            finding = Finding("dlms", self.port, baud, fmt, meter_id=title.hex().upper(), manufacturer=maker,
                              encrypted=True, security=sc, wrapper=wrapper, period=_period([t for t, *_ in w.ciphered]))
            if self.key:
                finding.notes.append(f"frames do not decrypt with the given key ({w.errors.get('dlms')})")
            return finding
        if w.bytes_seen:
            self.seen.append(f"{baud} Bd {fmt}: {w.bytes_seen} bytes, nothing that passed a check")
        else:
            self.silent.append(f"{baud} Bd {fmt}")
        return None

    def _from_messages(self, w: _Window, baud: int, fmt: str) -> Finding:
        _, msg, protocol = w.messages[0]
        data = msg.to_meter_data()
        period = _period([t for t, *_ in w.messages])
        if protocol == "sml":
            finding = Finding("sml", self.port, baud, fmt, meter_id=data.meter_id, manufacturer=msg.manufacturer,
                              period=period, data=data, notes=list(msg.notes))
        elif protocol == "dlms":
            sc = None
            if msg.ciphered and w.ciphered:
                sc = w.ciphered[0][1]
            finding = Finding("dlms", self.port, baud, fmt, meter_id=data.meter_id, encrypted=bool(msg.ciphered),
                              security=sc, wrapper=msg.wrapper, period=period, data=data)
            if msg.ciphered and sc is None:
                finding.security = _security_of(msg)
            if msg.tag_verified and not self.auth_key:
                from ..dlms.security import PUBLISHED_AUTH_KEYS
                finding.published_auth = PUBLISHED_AUTH_KEYS[0][0]
        else:
            ident = msg.readout.identification
            finding = Finding("d0-push", self.port, baud, _d0_format(fmt, bytes(w.raw)), meter_id=data.meter_id,
                              manufacturer=getattr(ident, "manufacturer", None), period=period, data=data)
        return finding

    # ------------------------------------------------------------------ active
    def _request(self) -> Optional[Finding]:
        from ..iec62056_21.reader import D0Reader

        config = ReadoutConfig(port=self.port, baudrate="auto", retries=0)
        reader = D0Reader(config, Statistics(), **self.reader_options)
        try:
            data = reader.read()
        except DlmsError as exc:
            self.seen.append(f"sign-on at 300 Bd 7E1: {exc.cause}")
            return None
        finally:
            reader.close()
        result = reader.last_result
        baud = result.baudrate if result is not None else 300
        ident = reader.last_readout.identification if reader.last_readout is not None else None
        return Finding("d0-request", self.port, baud, "7E1", meter_id=data.meter_id,
                       manufacturer=getattr(ident, "manufacturer", None), data=data)


def _period(times: List[float]) -> Optional[float]:
    if len(times) < 2:
        return None
    gaps = sorted(b - a for a, b in zip(times, times[1:]))
    return gaps[len(gaps) // 2]


def _security_of(msg: Any) -> Optional[int]:
    from ..dlms.security import parse_ciphered

    raw = getattr(msg, "raw", b"")
    for tag in (0xDB, 0xDF, 0xDD):  # the ciphered APDU inside the frame
        pos = raw.find(bytes([tag]))
        if pos >= 0:
            try:
                return parse_ciphered(raw[pos:]).security_control
            except (DlmsError, IndexError, ValueError):
                continue
    return None


def _d0_format(fmt: str, raw: bytes) -> str:
    """A D0 telegram read at 8N1 whose bytes all carry even parity in bit 7 was sent 7E1."""
    if fmt.startswith("8") and raw and any(b & 0x80 for b in raw):
        if all(bin(b).count("1") % 2 == 0 for b in raw):
            return "7E1"
    return fmt


__all__ = ["Detector", "Finding", "PASSIVE"]
