"""A DLMS push meter on a pseudo-terminal: frames at an interval, values that change like a house's.

``PushSimulator`` builds each push from a register table (OBIS, DLMS type, scaler, unit) with
the builders in ``dlms/encode.py``: HDLC (UI or I frames, optional segmentation), wired M-Bus
(with continuation telegrams), the DLMS/IP wrapper or a raw APDU; plain or AES-GCM ciphered
(security 0x20 or 0x30); optionally split into General-Block-Transfer blocks. Power wanders,
energy counters only grow, voltages and currents follow, so a demo looks alive and tests can
compare what was decoded with ``last_values`` (what was sent).

Three layouts: ``"obis"`` (self-describing: an array of {OBIS, value, {scaler, unit}} like the
Aidon/Sagemcom pushes), ``"positional"`` (bare values in register order, like the Iskraemeco
AM550: only a profile gives them meaning) and ``"profile"`` (positional, in the order a meter
profile from ``data/profiles`` describes).

It writes to a serial line of its own (``simulator.pty.PtyLink``: a pty paced at the meter's
baud rate; ``path``, optionally reachable through a stable symlink, which ``unplug``/``replug``
re-point the way udev re-creates ``/dev/serial/by-id`` after a USB replug) or to a file
descriptor the caller gives (a socket).
"""
from __future__ import annotations

import logging
import math
import random
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..dlms import encode
from ..dlms.apdu import DESCRIPTOR, Array, Structure, encode_notification
from ..dlms.units import code_of
from .pty import PtyLink, publish_link, remove_link

log = logging.getLogger(__name__)

DEFAULT_SYSTEM_TITLE = b"SIM\x00\x00\x01\x23\x45"


@dataclass(frozen=True)
class SimRegister:
    """One simulated value: its OBIS code, DLMS type, scaler and unit symbol."""

    obis: str
    type: str
    scaler: int = 0
    unit: Optional[str] = None


#: the simulated meter: an AM550-like set of 18 instantaneous and energy values plus the serial
DEMO_REGISTERS: Tuple[SimRegister, ...] = (
    SimRegister("0-0:96.1.0.255", "octet-string"),
    SimRegister("1-0:1.8.0.255", "double-long-unsigned", 0, "Wh"),
    SimRegister("1-0:2.8.0.255", "double-long-unsigned", 0, "Wh"),
    SimRegister("1-0:3.8.0.255", "double-long-unsigned", 0, "varh"),
    SimRegister("1-0:4.8.0.255", "double-long-unsigned", 0, "varh"),
    SimRegister("1-0:1.7.0.255", "double-long-unsigned", 0, "W"),
    SimRegister("1-0:2.7.0.255", "double-long-unsigned", 0, "W"),
    SimRegister("1-0:3.7.0.255", "double-long-unsigned", 0, "var"),
    SimRegister("1-0:4.7.0.255", "double-long-unsigned", 0, "var"),
    SimRegister("1-0:32.7.0.255", "long-unsigned", -1, "V"),
    SimRegister("1-0:52.7.0.255", "long-unsigned", -1, "V"),
    SimRegister("1-0:72.7.0.255", "long-unsigned", -1, "V"),
    SimRegister("1-0:31.7.0.255", "long-unsigned", -2, "A"),
    SimRegister("1-0:51.7.0.255", "long-unsigned", -2, "A"),
    SimRegister("1-0:71.7.0.255", "long-unsigned", -2, "A"),
    SimRegister("1-0:21.7.0.255", "double-long-unsigned", 0, "W"),
    SimRegister("1-0:41.7.0.255", "double-long-unsigned", 0, "W"),
    SimRegister("1-0:61.7.0.255", "double-long-unsigned", 0, "W"),
    SimRegister("1-0:14.7.0.255", "long-unsigned", -2, "Hz"),
)

_RANGES = {"double-long-unsigned": (0, 2**32 - 1), "long-unsigned": (0, 65535), "unsigned": (0, 255),
           "double-long": (-2**31, 2**31 - 1), "long": (-32768, 32767), "integer": (-128, 127),
           "long64": (-2**63, 2**63 - 1), "long64-unsigned": (0, 2**64 - 1)}
#: concrete type used for a profile's type group
_GROUP_TYPE = {"integer": "double-long-unsigned", "number": "double-long-unsigned", "text": "octet-string",
               "*": "double-long-unsigned"}


#: a value of each type for a position a positional profile does not name
_FILLERS: Dict[str, Callable[[], Any]] = {
    **{t: (lambda: 0) for t in _RANGES}, "boolean": lambda: False, "enum": lambda: 0,
    "array": lambda: _typed_array()}


def _typed_array() -> Any:
    empty = Array()
    empty.types = ()
    return empty


#: codes whose value may be negative (net powers, power factors): a signed type (Q+ 3.7.0 and Q- 4.7.0 are not)
_SIGNED = {"16.7.0", "36.7.0", "56.7.0", "76.7.0", "13.7.0", "33.7.0", "53.7.0", "73.7.0"}


def _marker_texts(match: Dict[str, Any], serial: str) -> Dict[int, str]:
    """The text a positional profile's markers look for, by position: what ``equals`` names,
    or the serial after the ``prefix`` (a meter of that profile sends it, so auto finds it)."""
    out: Dict[int, str] = {}
    for marker in match.get("markers", ()):
        if "equals" in marker:
            out[marker["index"]] = marker["equals"]
        elif "prefix" in marker:
            out[marker["index"]] = marker["prefix"] + serial
    return out


def short_code(code: str) -> str:
    """C.D.E of an OBIS code in any spelling."""
    return ".".join(code.split(":")[-1].replace("*", ".").split(".")[:3])


def logical_name(text: str) -> bytes:
    """The 6 bytes of a COSEM logical name (``1-0:1.8.0.255``; groups not written are 255)."""
    from ..obis import Obis
    code = Obis.parse(text)
    return bytes(g if g is not None else 255 for g in code.groups)


#: one object of a Czech HAN push: (class-id, logical name, attribute, DLMS type of its value)
HanObject = Tuple[int, str, int, str]


def han_notification(objects: Sequence[HanObject], values: Sequence[Any], invoke_id: int = 0x80000001) -> bytes:
    """A Czech HAN push as the Sagemcom XT211 sends it (``dlms.apdu`` module docstring): a bare
    data-notification without date-time whose body is {enum 1, array of {attribute descriptor,
    value}}, one entry per object."""
    entries = Array()
    for (class_id, code, attribute, type_name), value in zip(objects, values):
        entry = Structure([Structure([class_id, logical_name(code), attribute]), value])
        entry.types = (DESCRIPTOR, type_name)
        entries.append(entry)
    entries.types = ("structure",) * len(entries)
    body = Structure([1, entries])
    body.types = ("enum", "array")
    return encode_notification(body, None, invoke_id=invoke_id)


class _House:
    """Physical state of the simulated installation: a load that wanders, PV in the afternoon."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.t = 0.0
        self.import_wh = 12_345_678.0
        self.export_wh = 2_345_678.0
        self.rimport = 1_234_567.0
        self.rexport = 234_567.0
        self.phase_w = [400.0, 250.0, 300.0]

    def step(self, seconds: float) -> Dict[str, float]:
        self.t += seconds
        for i in range(3):
            self.phase_w[i] = max(-3000.0, min(6000.0, self.phase_w[i] + self.rng.uniform(-150, 150)))
        net = sum(self.phase_w)
        imp, exp = max(net, 0.0), max(-net, 0.0)
        self.import_wh += imp * seconds / 3600.0
        self.export_wh += exp * seconds / 3600.0
        q = 0.2 * abs(net)
        self.rimport += q * seconds / 3600.0
        volts = [230.0 + 4 * math.sin(self.t / 60 + k) + self.rng.uniform(-0.5, 0.5) for k in range(3)]
        values = {
            "1.8.0": self.import_wh, "2.8.0": self.export_wh, "3.8.0": self.rimport, "4.8.0": self.rexport,
            "1.7.0": imp, "2.7.0": exp, "3.7.0": q, "4.7.0": 0.0,
            "32.7.0": volts[0], "52.7.0": volts[1], "72.7.0": volts[2],
            "14.7.0": 50.0 + self.rng.uniform(-0.05, 0.05),
        }
        for k, (cur, pin, pout) in enumerate((("31.7.0", "21.7.0", "22.7.0"), ("51.7.0", "41.7.0", "42.7.0"),
                                              ("71.7.0", "61.7.0", "62.7.0"))):
            values[cur] = abs(self.phase_w[k]) / volts[k]
            values[pin] = max(self.phase_w[k], 0.0)
            values[pout] = max(-self.phase_w[k], 0.0)
        return values


class PushSimulator:
    """Build and emit push frames; see the module docstring.

    ``security``: None (plain), 0x20 (encryption only) or 0x30 (authenticated encryption; needs
    ``auth_key``). ``segmented``: HDLC segments of ``max_info`` bytes (M-Bus: telegrams of
    ``max_info`` data bytes). ``gbt``: General-Block-Transfer blocks of ``block_size`` bytes.
    """

    def __init__(self, wrapper: str = "hdlc", key: Optional[bytes] = None, auth_key: Optional[bytes] = None,
                 security: Optional[int] = None, segmented: bool = False, gbt: bool = False,
                 interval: float = 1.0, layout: str = "obis", profile: Optional[str] = None,
                 registers: Tuple[SimRegister, ...] = DEMO_REGISTERS, serial: str = "SIM0000012345",
                 system_title: bytes = DEFAULT_SYSTEM_TITLE, hdlc_kind: str = "ui",
                 dst: bytes = b"\xCF", src: bytes = b"\x02\x23", max_info: int = 128, block_size: int = 100,
                 frame_gap: float = 0.0, seed: Optional[int] = None, invocation_counter: int = 1,
                 utc_offset_minutes: int = 60, clock: Optional[Callable[[], datetime]] = None) -> None:
        if wrapper not in ("hdlc", "mbus", "wrapper", "apdu"):
            raise ValueError("wrapper is hdlc, mbus, wrapper or apdu")
        if security is not None and key is None:
            raise ValueError("a ciphered push needs key")
        if security is not None and security & 0x10 and auth_key is None:
            raise ValueError("security 0x30 needs auth_key")
        if layout not in ("obis", "positional", "profile"):
            raise ValueError("layout is obis, positional or profile")
        self.wrapper = wrapper
        self.key = key
        self.auth_key = auth_key
        self.security = security
        self.segmented = segmented
        self.gbt = gbt
        self.interval = interval
        self.layout = layout
        self.registers = registers
        self.serial = serial
        self.system_title = system_title
        self.hdlc_kind = hdlc_kind
        self.dst, self.src = dst, src
        self.max_info = max_info
        self.block_size = block_size
        self.frame_gap = frame_gap
        self.invocation_counter = invocation_counter
        self.tz = timezone(timedelta(minutes=utc_offset_minutes))
        self._clock = clock  # the meter's clock (tests pin it: the time is part of every frame)
        self._house = _House(random.Random(seed))
        self._profile = None
        if layout == "profile":
            if not profile:
                raise ValueError("layout 'profile' needs a profile name")
            from ..dlms.profiles import load_profile
            self._profile = load_profile(profile)
            if self._profile.match.get("shape") not in ("positional", "push-list"):
                from ..errors import ConfigurationError
                raise ConfigurationError(f"profile {profile} names its values by OBIS code in the frame",
                                         "the simulator sends such a list without --profile (its OBIS layout, "
                                         "with scalers); --profile takes positional and push-list profiles")
        #: what the last push carried: dotted OBIS -> raw value as transmitted
        self.last_values: Dict[str, Any] = {}
        #: dotted OBIS -> (raw, scaler, unit) of the last push (scaler None for text values)
        self.last_registers: Dict[str, Tuple[Any, Optional[int], Optional[str]]] = {}
        self.last_timestamp: Optional[datetime] = None
        self.last_apdu: bytes = b""
        self.sent = 0  #: pushes written
        self.dropped = 0  #: pushes nobody could take (pty buffer full)
        self._pty: Optional[PtyLink] = None
        self._pty_args: Dict[str, Any] = {}
        self._link: Optional[str] = None
        self.path: Optional[str] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ building
    def _raw(self, reg: SimRegister, physical: Dict[str, float]) -> Any:
        if reg.type in ("octet-string", "visible-string"):
            return self.serial.encode("ascii") if reg.type == "octet-string" else self.serial
        value = physical.get(short_code(reg.obis), 0.0)
        lo, hi = _RANGES.get(reg.type, (0, 2**32 - 1))
        return max(lo, min(hi, int(round(value / 10 ** reg.scaler))))

    def _body(self, physical: Dict[str, float]) -> Any:
        self.last_values, self.last_registers = {}, {}
        if self.layout == "obis":
            items = Array()
            types = []
            for reg in self.registers:
                raw = self._raw(reg, physical)
                entry = Structure([logical_name(reg.obis), raw])
                entry.types = ("octet-string", reg.type)
                if reg.unit is not None:
                    su = Structure([reg.scaler, code_of(reg.unit) or 255])
                    su.types = ("integer", "enum")
                    entry.append(su)
                    entry.types = entry.types + ("structure",)
                items.append(entry)
                types.append("structure")
                self.last_values[reg.obis] = raw
                self.last_registers[reg.obis] = (raw, reg.scaler if reg.unit is not None else None, reg.unit)
            items.types = tuple(types)
            return items
        if self.layout == "positional":
            body = Structure()
            for reg in self.registers:
                raw = self._raw(reg, physical)
                body.append(raw)
                self.last_values[reg.obis] = raw
                self.last_registers[reg.obis] = (raw, reg.scaler if reg.unit is not None else None, reg.unit)
            body.types = tuple(reg.type for reg in self.registers)
            return body
        profile = self._profile
        assert profile is not None  # layout 'profile' is only chosen with a loaded profile
        if profile.match.get("shape") == "push-list":
            return self._push_list_body(profile, physical)
        count = int(profile.match.get("elements") or (max(f.index for f in profile.fields if f.index is not None) + 1))
        wanted = list(profile.match.get("types") or ["*"] * count)
        marked = _marker_texts(profile.match, self.serial)
        body = Structure()
        types = []
        for i in range(count):
            f = profile.field_at(i)
            type_name = _GROUP_TYPE.get(wanted[i], wanted[i]) if i < len(wanted) else "double-long-unsigned"
            if f is None and type_name in _FILLERS:  # a position the profile does not name: a value of its type
                value: Any = _FILLERS[type_name]()
            elif f is None or f.kind in ("text", "bytes") or type_name in ("octet-string", "visible-string"):
                text = marked.get(i, self.serial)  # (a list id such as KFM_001 where the profile looks for it)
                value = text.encode("latin-1") if type_name == "octet-string" else text
                if f is not None and f.kind == "datetime":
                    from ..dlms.apdu import encode_datetime_value
                    value = encode_datetime_value(self._now())
            else:
                reg = SimRegister(f.obis or "0-0:0.0.0.255", type_name, f.scaler, f.unit)
                value = self._raw(reg, physical) if f.kind == "number" else 0
                if f.obis:
                    self.last_values[f.obis] = value
                    self.last_registers[f.obis] = (value, f.scaler, f.unit)
            body.append(value)
            types.append(type_name)
        body.types = tuple(types)
        return body

    def _push_list_body(self, profile: Any, physical: Dict[str, float]) -> Structure:
        """A push-list profile's frame (Swiss VSE, Cyprus E450): its push object list first, then
        each object's value: a logical name, the clock's time, a register's number at the
        profile's scaler, the serial for any other object (a status word a 0)."""
        from ..obis import Obis

        fields = {Obis.parse(f.obis).dotted(): f for f in profile.fields if f.obis}
        objects, values, types = Array(), [], []  # type: Array, List[Any], List[str]
        for entry in profile.match["capture_objects"]:
            cls_text, rest = entry.split(":", 1)
            code, attr = rest.rsplit(":", 1)
            cls = int(cls_text)
            item = Structure([cls, logical_name(code), int(attr), 0])
            item.types = ("long-unsigned", "octet-string", "integer", "long-unsigned")
            objects.append(item)
            if cls == 40 and attr == "2":  # the push setup's object list: element 0 (added below)
                continue
            f = fields.get(Obis.parse(code).dotted())
            if attr == "1":  # a logical name (the push setup's own, in Swiss lists)
                values.append(logical_name(code))
                types.append("octet-string")
            elif cls == 8:
                from ..dlms.apdu import encode_datetime_value
                values.append(encode_datetime_value(self._now()))
                types.append("octet-string")
            elif f is not None and f.kind == "number":
                signed = short_code(code) in _SIGNED
                reg = SimRegister(code, "double-long" if signed else "double-long-unsigned", f.scaler, f.unit)
                raw = self._raw(reg, physical)
                self.last_values[f.obis] = raw
                self.last_registers[f.obis] = (raw, f.scaler, f.unit)
                values.append(raw)
                types.append(reg.type)
            elif cls == 1 and short_code(code).startswith("96.3"):
                values.append(0)
                types.append("double-long-unsigned")
            else:
                values.append(self.serial.encode("ascii"))
                types.append("octet-string")
        objects.types = ("structure",) * len(objects)
        body = Structure([objects, *values])
        body.types = ("array", *types)
        return body

    def _now(self) -> datetime:
        now = self._clock() if self._clock is not None else datetime.now(self.tz)
        return now.replace(microsecond=0)

    def build(self) -> List[bytes]:
        """The frames of the next push (values advance by ``interval``)."""
        physical = self._house.step(max(self.interval, 0.001))
        timestamp = self._now()
        apdu = encode_notification(self._body(physical), timestamp, invoke_id=self.sent + 1)
        self.last_timestamp = timestamp
        self.last_apdu = apdu
        if self.security is not None:
            apdu = encode.encipher(apdu, self.key, self.system_title, self.invocation_counter,  # type: ignore[arg-type]
                                   self.security, self.auth_key)
            self.invocation_counter += 1
        apdus = encode.gbt_blocks(apdu, self.block_size) if self.gbt else [apdu]
        frames: List[bytes] = []
        for part in apdus:
            if self.wrapper == "hdlc":
                frames += encode.hdlc_frames(part, self.dst, self.src, self.hdlc_kind,
                                             self.max_info if self.segmented else None)
            elif self.wrapper == "mbus":
                frames += encode.mbus_telegrams(part, self.max_info if self.segmented else 245)
            elif self.wrapper == "wrapper":
                frames.append(encode.wrap(part))
            else:
                frames.append(part)
        return frames

    def emit(self) -> bytes:
        """The next push as one byte string (all frames back to back)."""
        return b"".join(self.build())

    # ----------------------------------------------------------------------- I/O
    def open_pty(self, link: Optional[str] = None, baudrate: int = 2400, bytesize: int = 8, parity: str = "E",
                 stopbits: int = 1, time_scale: float = 1.0) -> str:
        """Create the meter's serial line (a paced ``PtyLink``); returns the path a listener opens.

        ``link``: also publish it under this symlink (a stable ``/dev/serial/by-id`` stand-in).
        The listener must use the same baud rate: at another rate it reads what a UART would,
        i.e. garbage, exactly like a real port.
        """
        pty = PtyLink(baudrate=baudrate, bytesize=bytesize, parity=parity, stopbits=stopbits,
                      time_scale=time_scale)
        self._pty_args = dict(baudrate=baudrate, bytesize=bytesize, parity=parity, stopbits=stopbits,
                              time_scale=time_scale)
        with self._lock:
            self._pty = pty
            self.path = pty.port
        if link:
            self._link = link
            return publish_link(pty.port, link)
        return pty.port

    def close_pty(self) -> None:
        with self._lock:
            pty, self._pty = self._pty, None
        if pty is not None:
            pty.close()

    def unplug(self) -> None:
        """Like pulling the USB adapter: the pty goes away and the stable link dangles."""
        self.close_pty()
        remove_link(self._link)

    def replug(self) -> str:
        """Like plugging it back in: a new pty (new /dev/pts number) behind the same link."""
        return self.open_pty(self._link, **self._pty_args)

    def reader_ready(self) -> bool:
        """True when a reader has the pty open at this line's baud rate (so pushes reach it intact)."""
        with self._lock:
            pty = self._pty
        if pty is None:
            return False
        pty.receive(0.0)  # updates pty.connected; a push meter reads nothing else
        return pty.connected and pty.peer_baudrate() == pty.baudrate

    def send_once(self) -> bool:
        """Build one push and write it; False when nobody could take it (counted in ``dropped``)."""
        frames = self.build()
        ok = True
        for n, frame in enumerate(frames):
            if n and self.frame_gap:
                self._stop.wait(self.frame_gap)
            ok = self._write(frame) and ok
        if ok:
            self.sent += 1
        else:
            self.dropped += 1
        return ok

    def _write(self, data: bytes) -> bool:
        with self._lock:
            pty = self._pty
        if pty is not None:
            return pty.send(data, stop=self._stop.is_set) and not pty.closed
        return False

    def start(self) -> None:
        """Push every ``interval`` seconds in a background thread (open a pty first)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="push-simulator", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self.send_once()
            except Exception:  # the demo meter keeps pushing whatever happens
                log.exception("push simulator: sending failed")
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            try:
                self._thread.join(timeout)
            except RuntimeError:  # a signal (simulate-push's SIGTERM) ended start() before the thread ran
                pass  # (if it runs after all, it sees the stop at once)
        self.unplug() if self._link else self.close_pty()

    def __enter__(self) -> "PushSimulator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["PushSimulator", "SimRegister", "DEMO_REGISTERS", "logical_name", "han_notification", "HanObject"]
