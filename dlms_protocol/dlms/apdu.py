"""xDLMS Data-Notification APDUs and A-XDR data (IEC 62056-5-3 / -6-2), decoded without gurux.

Input is the PLAINTEXT APDU: LLC removed, deciphered and block-transfer reassembled by the
pipeline. Output is a plain Python tree, so profiles and the generic walker can work on it
without knowing A-XDR:

=====================  ==============================================================
A-XDR type             Python value in ``Notification.body``
=====================  ==============================================================
structure / array      ``Structure`` / ``Array`` (``list`` subclasses; ``.types`` holds
                       the DLMS type name of each element, so a dump can say what came)
integer types, enum    ``int``
boolean                ``bool``
octet-string           ``bytes`` - also when 12 bytes look like a date-time: whether it
                       IS one depends on the layout (an EVN meter number is 12 ASCII
                       digits), so ``payload`` decides with the profile or the OBIS code
visible-string         ``str`` (latin-1, lossless)
utf8-string            ``str``
float32 / float64      ``Decimal`` (from the IEEE value; NaN/Infinity kept as Decimal)
date-time/date/time    ``datetime`` / ``date`` / ``time`` when fully specified and valid,
                       else the raw ``bytes`` (wildcards such as "every day" have no
                       Python equivalent)
bit-string             ``BitString``
null-data              ``None``
=====================  ==============================================================

**Attribute descriptors.** Czech HAN pushes (Sagemcom XT211, the ČEZ/EG.D RS485 interface)
send each object as a structure {COSEM attribute descriptor, value}, where the descriptor
(class-id, logical name, attribute) is written as 9 raw bytes without A-XDR tags:
``02 02 | 00 03 | 01 00 01 07 00 FF | 02 | 06 00 00 07 A4``. Read as A-XDR, the ``00`` would be a
null-data and the rest garbage, so such a body never parses; only then is it read again with
descriptors (``Notification.described``). Each entry becomes a ``Structure`` of the descriptor
(``[class_id, logical name bytes, attribute]``, type name ``DESCRIPTOR``) and the value.

Everything malformed raises ``DecodeError`` (never IndexError/struct.error): lengths are
checked against the remaining bytes before anything is allocated, and nesting is bounded.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, Dict, List, Optional, Tuple

from ..errors import DecodeError

#: A-XDR data type tags (IEC 62056-6-2, "Data" CHOICE)
TYPE_NAMES: Dict[int, str] = {
    0: "null-data", 1: "array", 2: "structure", 3: "boolean", 4: "bit-string",
    5: "double-long", 6: "double-long-unsigned", 9: "octet-string", 10: "visible-string",
    12: "utf8-string", 13: "bcd", 15: "integer", 16: "long", 17: "unsigned", 18: "long-unsigned",
    19: "compact-array", 20: "long64", 21: "long64-unsigned", 22: "enum", 23: "float32",
    24: "float64", 25: "date-time", 26: "date", 27: "time",
}
TYPE_TAGS: Dict[str, int] = {v: k for k, v in TYPE_NAMES.items()}

#: fixed-size integer types: tag -> (struct format, size)
_INTS: Dict[int, Tuple[str, int]] = {
    5: (">i", 4), 6: (">I", 4), 15: (">b", 1), 16: (">h", 2), 17: (">B", 1), 18: (">H", 2),
    20: (">q", 8), 21: (">Q", 8), 22: (">B", 1), 13: (">B", 1),
}
#: the type name of an untagged COSEM attribute descriptor (module docstring)
DESCRIPTOR = "attribute-descriptor"
_DESCRIPTOR_TYPES = ("long-unsigned", "octet-string", "integer")
INTEGER_TYPES = frozenset(TYPE_NAMES[t] for t in _INTS if t not in (22, 13))
#: fast path of _decode: tag -> (compiled struct, size, type name) for the fixed-size integers
_FIXED = {tag: (struct.Struct(fmt), size, TYPE_NAMES[tag]) for tag, (fmt, size) in _INTS.items()}

#: APDU tags that are not a plaintext data-notification, with the reason a user can act on
_OTHER_APDUS: Dict[int, Tuple[str, str]] = {
    0xDB: ("general-glo-ciphering", "the APDU is still ciphered: decrypt it first (configure the key)"),
    0xDC: ("general-ded-ciphering", "the APDU is still ciphered: decrypt it first (configure the key)"),
    0xDD: ("general-ciphering", "the APDU is still ciphered: decrypt it first (configure the key)"),
    0xDF: ("general-signing", "signed APDUs are not supported: switch the meter's push to unsigned"),
    0xE0: ("general-block-transfer", "reassemble the GBT blocks first"),
    0xC2: ("event-notification-request", "event notifications carry no push values; ignore them"),
    0xC4: ("get-response", "this is an answer to a client request, not a push"),
    0x60: ("AARQ", "this is association traffic, not a push"),
    0x61: ("AARE", "this is association traffic, not a push"),
    0x2F: ("'/' (text)", "the plaintext is a DSMR/P1 text telegram: parse it as text"),
    0xE6: ("LLC header E6", "remove the LLC header (E6 E7 00) before decoding"),
    0x7E: ("HDLC flag", "this is an HDLC frame: deframe it first"),
    0x68: ("M-Bus start", "this is an M-Bus telegram: deframe it first"),
}

MAX_DEPTH = 16  # real pushes nest 3 deep; a bound keeps garbage from recursing


# --------------------------------------------------------------------------- values
class Structure(list):
    """A DLMS structure: a list that also remembers each element's DLMS type name."""

    types: Tuple[str, ...] = ()


class Array(list):
    """A DLMS array: a list that also remembers each element's DLMS type name."""

    types: Tuple[str, ...] = ()


@dataclass(frozen=True)
class BitString:
    """A DLMS bit-string; ``bits`` like ``"1011"`` (first bit first)."""

    bits: str

    def __str__(self) -> str:
        return self.bits


@dataclass(frozen=True)
class Notification:
    """One decoded Data-Notification.

    ``timestamp`` is the header date-time: tz-aware when the meter gave a deviation (COSEM
    deviation -120 = UTC+02:00), naive when it sent 0x8000 ("not specified"), None when the
    header had no date-time or an invalid one (``datetime_raw`` keeps the 12 bytes then).
    ``body`` is the plain tree described in the module docstring, ``body_type`` its DLMS type.
    """

    invoke_id: Optional[int]
    timestamp: Optional[datetime]
    body: Any
    body_type: str = "structure"
    datetime_raw: Optional[bytes] = field(default=None, repr=False)
    clock_status: Optional[int] = None
    priority_high: bool = False
    #: the body holds untagged attribute descriptors (module docstring)
    described: bool = False


# ------------------------------------------------------------------ date and time
#: fixed-offset zones by COSEM deviation (at most 1441, each made once)
_ZONES: Dict[int, timezone] = {}
#: a date-time's 12 bytes: year, month, day, weekday, hour, minute, second, hundredths,
#: deviation (signed minutes), clock status
_DATE_TIME = struct.Struct(">HBBBBBBBhB")


def parse_datetime(raw: bytes) -> Optional[datetime]:
    """A COSEM date-time (12 bytes) as datetime, or None when it is not a concrete, valid one.

    Strict on purpose: the generic walker uses this to recognise date-times inside
    octet-strings, so "0x3137..." (ASCII digits of a meter number) must not pass.
    """
    if len(raw) != 12:
        return None
    year, month, day, weekday, hour, minute, second, hundredths, deviation, _status = _DATE_TIME.unpack(raw)
    if year == 0xFFFF or not 1970 <= year <= 2255:
        return None
    if not (1 <= month <= 12 and 1 <= day <= 31 and (weekday <= 7 or weekday == 0xFF)):
        return None
    if hour > 23 or minute > 59 or second > 59:
        return None
    if hundredths == 0xFF:
        hundredths = 0
    elif hundredths > 99:
        return None
    tz: Optional[timezone] = None
    if deviation != -0x8000:
        if not -720 <= deviation <= 720:
            return None
        tz = _ZONES.get(deviation)
        if tz is None:  # (a push's clock: the same one or two zones all year)
            tz = _ZONES[deviation] = timezone(timedelta(minutes=-deviation))  # COSEM: deviation = UTC - local
    try:
        moment = datetime(year, month, day, hour, minute, second, hundredths * 10000, tzinfo=tz)
    except ValueError:  # 31 February and the like
        return None
    if weekday == 0 and moment.isoweekday() != 7:
        return None  # Aidon meters count Sunday as 0 (COSEM: 7); any other day 0 is no date-time
    return moment


def parse_date(raw: bytes) -> Optional[date]:
    """A COSEM date (5 bytes: year, month, day, weekday) or None when not concrete/valid."""
    if len(raw) != 5:
        return None
    year = (raw[0] << 8) | raw[1]
    if year == 0xFFFF or not 1970 <= year <= 2255:
        return None
    try:
        return date(year, raw[2], raw[3])
    except ValueError:
        return None


def parse_time(raw: bytes) -> Optional[time]:
    """A COSEM time (4 bytes: hour, minute, second, hundredths) or None when not concrete."""
    if len(raw) != 4:
        return None
    hour, minute, second, hundredths = raw
    if hundredths == 0xFF:
        hundredths = 0
    if hour > 23 or minute > 59 or second > 59 or hundredths > 99:
        return None
    return time(hour, minute, second, hundredths * 10000)


# ------------------------------------------------------------------------ decoder
class _Reader:
    __slots__ = ("buf", "pos", "described")

    def __init__(self, buf: bytes, pos: int = 0, described: bool = False) -> None:
        self.buf = buf
        self.pos = pos
        self.described = described  # a structure of 2 that starts with 00 is {descriptor, value}

    def remaining(self) -> int:
        return len(self.buf) - self.pos

    def take(self, n: int, what: str) -> bytes:
        if n > self.remaining():
            raise DecodeError(
                f"APDU truncated: {what} needs {n} bytes at offset {self.pos}, {self.remaining()} left",
                "the frame was cut off or deciphered with a wrong key",
            )
        chunk = self.buf[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def byte(self, what: str) -> int:
        return self.take(1, what)[0]

    def length(self, what: str) -> int:
        """A-XDR length: one byte below 0x80, else 0x8N followed by N big-endian bytes."""
        first = self.byte(what)
        if first < 0x80:
            return first
        n = first & 0x7F
        if not 1 <= n <= 4:
            raise DecodeError(
                f"invalid A-XDR length prefix 0x{first:02x} for {what} at offset {self.pos - 1}",
                "the bytes are no DLMS data (wrong key or wrong layer)")
        return int.from_bytes(self.take(n, what), "big")


def _decode(r: _Reader, depth: int) -> Tuple[Any, str]:
    offset = r.pos
    buf = r.buf
    if offset < len(buf):  # fast path for the integers that make up most of a push (no checks skipped)
        fixed = _FIXED.get(buf[offset])
        if fixed is not None and offset + 1 + fixed[1] <= len(buf):
            r.pos = offset + 1 + fixed[1]
            return fixed[0].unpack_from(buf, offset + 1)[0], fixed[2]
    return _decode_any(r, depth)


def _decode_any(r: _Reader, depth: int) -> Tuple[Any, str]:
    """One element; strings and structures with a one-byte length (nearly all) are read here
    directly, everything else and every error by ``_decode_general``."""
    buf = r.buf
    pos = r.pos
    end = len(buf)
    if pos + 1 < end:
        tag = buf[pos]
        n = buf[pos + 1]
        if n < 0x80:
            if tag == 9 or tag == 10:
                stop = pos + 2 + n
                if stop <= end:
                    r.pos = stop
                    raw = buf[pos + 2:stop]
                    return (raw, "octet-string") if tag == 9 else (raw.decode("latin-1"), "visible-string")
            elif (tag == 2 or tag == 1) and depth < MAX_DEPTH and n <= end - pos - 2:
                if r.described and tag == 2 and n == 2 and buf[pos + 2] == 0:
                    return _described_entry(r, depth), "structure"
                r.pos = pos + 2
                return _elements(r, depth, n, Structure() if tag == 2 else Array()), TYPE_NAMES[tag]
    return _decode_general(r, depth)


def _described_entry(r: _Reader, depth: int) -> Structure:
    """{attribute descriptor, value} at ``02 02 00``: class-id (< 256), logical name, attribute
    (1-127, the attributes a class has), each untagged, then the tagged value."""
    at = r.pos
    r.pos += 2
    head = r.take(9, "attribute descriptor")
    class_id, attribute = head[1], head[8]
    if not class_id or not 1 <= attribute <= 0x7F:
        raise DecodeError(f"no attribute descriptor at offset {at} (class {class_id}, attribute {attribute})",
                          "the bytes are no DLMS data (wrong key, or a layer was not removed)")
    descriptor = Structure([class_id, head[2:8], attribute])
    descriptor.types = _DESCRIPTOR_TYPES
    value, vtype = _decode(r, depth + 1)
    entry = Structure([descriptor, value])
    entry.types = (DESCRIPTOR, vtype)
    return entry


def _elements(r: _Reader, depth: int, count: int, items: list) -> list:
    """``count`` elements into ``items`` (a Structure or Array), with their types in ``.types``."""
    types: List[str] = []
    buf = r.buf
    end = len(buf)
    fixed_types = _FIXED
    for _ in range(count):
        pos = r.pos  # the fixed-size integers of _decode's fast path, inline (most elements)
        fixed = fixed_types.get(buf[pos]) if pos < end else None
        if fixed is not None and pos + 1 + fixed[1] <= end:
            r.pos = pos + 1 + fixed[1]
            items.append(fixed[0].unpack_from(buf, pos + 1)[0])
            types.append(fixed[2])
            continue
        value, vtype = _decode_any(r, depth + 1)
        items.append(value)
        types.append(vtype)
    items.types = tuple(types)  # type: ignore[attr-defined]
    return items


def _decode_general(r: _Reader, depth: int) -> Tuple[Any, str]:
    offset = r.pos
    tag = r.byte("data type tag")
    name = TYPE_NAMES.get(tag)
    if name is None:
        raise DecodeError(f"unknown A-XDR data type 0x{tag:02x} at offset {offset}",
                          "the bytes are no DLMS data (wrong key, or a layer was not removed)")
    if tag in (1, 2):
        if depth >= MAX_DEPTH:
            raise DecodeError(f"data nested deeper than {MAX_DEPTH} levels at offset {offset}",
                              "the bytes are no DLMS push data")
        count = r.length(name)
        if count > r.remaining():  # every element needs at least its tag byte
            raise DecodeError(f"{name} of {count} elements at offset {offset} cannot fit in "
                              f"{r.remaining()} remaining bytes", "the frame is truncated or garbled")
        return _elements(r, depth, count, Structure() if tag == 2 else Array()), name
    if tag in _INTS:
        fmt, size = _INTS[tag]
        return struct.unpack(fmt, r.take(size, name))[0], name
    if tag == 0:
        return None, name
    if tag == 3:
        return r.byte(name) != 0, name
    if tag == 9:
        return r.take(r.length(name), name), name
    if tag == 10:
        return r.take(r.length(name), name).decode("latin-1"), name
    if tag == 12:
        raw = r.take(r.length(name), name)
        try:
            return raw.decode("utf-8"), name
        except UnicodeDecodeError:
            raise DecodeError(f"utf8-string at offset {offset} is not valid UTF-8",
                              "the bytes are no DLMS data (wrong key?)") from None
    if tag == 4:
        nbits = r.length(name)
        raw = r.take((nbits + 7) // 8, name)
        bits = "".join(f"{b:08b}" for b in raw)[:nbits]
        return BitString(bits), name
    if tag == 23:
        return _float(struct.unpack(">f", r.take(4, name))[0]), name
    if tag == 24:
        return _float(struct.unpack(">d", r.take(8, name))[0]), name
    if tag == 25:
        raw = r.take(12, name)
        return parse_datetime(raw) or raw, name
    if tag == 26:
        raw = r.take(5, name)
        return parse_date(raw) or raw, name
    if tag == 27:
        raw = r.take(4, name)
        return parse_time(raw) or raw, name
    raise DecodeError(f"A-XDR type {name} (0x{tag:02x}) at offset {offset} is not supported in pushes",
                      "please report the frame (python -m dlms_protocol dump --hex ...) so it can be added")


def _float(value: float) -> Decimal:
    return Decimal(repr(value))  # repr is the shortest exact round-trip; 'nan'/'inf' parse too


def decode_data(raw: bytes, pos: int = 0) -> Tuple[Any, str, int]:
    """Decode one A-XDR ``Data`` item at ``pos``; return (value, DLMS type name, next position)."""
    r = _Reader(bytes(raw), pos)
    value, name = _decode(r, 0)
    return value, name, r.pos


def notification_header(apdu: bytes) -> Tuple[Optional[int], int]:
    """Where the 12 date-time bytes (None: no date-time) and the body of a plaintext
    Data-Notification start; DecodeError for anything else (see ``decode_apdu``)."""
    if not apdu:
        raise DecodeError("empty APDU", "nothing was received after the frame header")
    tag = apdu[0]
    if tag != 0x0F:
        known = _OTHER_APDUS.get(tag)
        if known:
            raise DecodeError(f"APDU 0x{tag:02x} ({known[0]}) is not a data-notification", known[1])
        raise DecodeError(f"APDU 0x{tag:02x} is not a data-notification (0x0f)",
                          "wrong decryption key, or the meter pushes something else; dump the frame")
    r = _Reader(apdu, 1)
    r.take(4, "long-invoke-id-and-priority")
    dt_at: Optional[int] = None
    n = r.byte("date-time length")
    if n == 0x09 and r.remaining() >= 13 and apdu[r.pos] == 0x0C:  # Kaifa: 09 0C <12 bytes>
        n = r.byte("date-time length")
    if n == 12:
        dt_at = r.pos
        r.take(12, "date-time")
    elif n != 0:
        raise DecodeError(f"data-notification date-time has {n} bytes, a COSEM date-time has 12",
                          "the bytes are no valid notification (wrong key or wrong layer)")
    if r.remaining() == 0:
        raise DecodeError("data-notification has no body", "the frame was cut off")
    return dt_at, r.pos


def decode_apdu(apdu: bytes) -> Notification:
    """Decode a plaintext Data-Notification APDU (tag 0x0F).

    Accepts the date-time header absent (``00``), standard (``0C`` + 12 bytes) and in the
    Kaifa MA304 form (``09 0C`` + 12 bytes, an extra octet-string tag). Any other APDU type
    raises DecodeError naming it and what to do; so do trailing bytes after the body, since
    a half-understood frame must not produce values.
    """
    apdu = bytes(apdu)
    dt_at, body_at = notification_header(apdu)
    inv = int.from_bytes(apdu[1:5], "big")
    dt_raw = apdu[dt_at:dt_at + 12] if dt_at is not None else None
    try:
        body, body_type = _body(_Reader(apdu, body_at))
        described = False
    except DecodeError:
        again = _described_body(apdu, body_at)
        if again is None:
            raise  # (the first error: the frame is not of that form either)
        body, body_type = again
        described = True
    return Notification(
        invoke_id=inv & 0x00FFFFFF,
        timestamp=parse_datetime(dt_raw) if dt_raw is not None else None,
        body=body,
        body_type=body_type,
        datetime_raw=dt_raw,
        clock_status=dt_raw[11] if dt_raw is not None else None,
        priority_high=bool(inv & 0x80000000),
        described=described,
    )


def _described_body(apdu: bytes, body_at: int) -> Optional[Tuple[Any, str]]:
    """The body read with untagged attribute descriptors (module docstring), or None when it
    does not read that way either."""
    if b"\x02\x02\x00" not in apdu[body_at:]:
        return None
    try:
        return _body(_Reader(apdu, body_at, described=True))
    except DecodeError:
        return None


def _body(r: _Reader) -> Tuple[Any, str]:
    """The notification body: one element that ends exactly where the APDU ends."""
    body, body_type = _decode(r, 0)
    if r.remaining():
        raise DecodeError(f"{r.remaining()} bytes left after the notification body",
                          "the frame is garbled or has an unknown trailer; dump it and report it")
    return body, body_type


# ------------------------------------------------------------------------ encoder
def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def encode_data(value: Any, type_name: Optional[str] = None) -> bytes:
    """Encode a value as A-XDR (used by the simulator, the profile template and the tests).

    Without ``type_name`` the type follows the value: bool→boolean, int→double-long(-unsigned)
    or long64(-unsigned), bytes→octet-string, str→visible-string, list→structure (an
    ``Array``/``Structure`` keeps its kind and its element ``types``), None→null-data.
    """
    if type_name is None:
        type_name = _natural_type(value)
    if type_name == DESCRIPTOR:  # [class-id, logical name, attribute], untagged (module docstring)
        class_id, name, attribute = value
        return struct.pack(">H6sb", class_id, bytes(name), attribute)
    tag = TYPE_TAGS.get(type_name)
    if tag is None:
        raise ValueError(f"unknown DLMS type {type_name!r}")
    if tag in (1, 2):
        elems = list(value)
        types = getattr(value, "types", ()) or (None,) * len(elems)
        return bytes([tag]) + _length(len(elems)) + b"".join(
            encode_data(v, t) for v, t in zip(elems, types))
    if tag in _INTS:
        return bytes([tag]) + struct.pack(_INTS[tag][0], int(value))
    if tag == 0:
        return b"\x00"
    if tag == 3:
        return bytes([3, 1 if value else 0])
    if tag in (9, 10, 12):
        raw = value if isinstance(value, (bytes, bytearray)) else \
            str(value).encode("utf-8" if tag == 12 else "latin-1")
        return bytes([tag]) + _length(len(raw)) + bytes(raw)
    if tag == 4:
        bits = value.bits if isinstance(value, BitString) else str(value)
        padded = bits + "0" * (-len(bits) % 8)
        raw = bytes(int(padded[i:i + 8], 2) for i in range(0, len(padded), 8))
        return bytes([4]) + _length(len(bits)) + raw
    if tag == 23:
        return bytes([23]) + struct.pack(">f", float(value))
    if tag == 24:
        return bytes([24]) + struct.pack(">d", float(value))
    if tag in (25, 26, 27):
        raw = value if isinstance(value, (bytes, bytearray)) else encode_datetime_value(value)
        return bytes([tag]) + bytes(raw)
    raise ValueError(f"cannot encode DLMS type {type_name!r}")


def _natural_type(value: Any) -> str:
    if value is None:
        return "null-data"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        if -2**31 <= value < 2**31:
            return "double-long"
        if 0 <= value < 2**32:
            return "double-long-unsigned"
        return "long64" if value < 0 or value < 2**63 else "long64-unsigned"
    if isinstance(value, (bytes, bytearray)):
        return "octet-string"
    if isinstance(value, str):
        return "visible-string"
    if isinstance(value, Array):
        return "array"
    if isinstance(value, (list, tuple)):
        return "structure"
    if isinstance(value, BitString):
        return "bit-string"
    if isinstance(value, datetime):
        return "date-time"
    raise ValueError(f"no natural DLMS type for {type(value).__name__}")


def encode_datetime_value(value: Any, clock_status: int = 0) -> bytes:
    """12-byte COSEM date-time (or 5-byte date / 4-byte time) from a Python value."""
    if isinstance(value, datetime):
        off = value.utcoffset()
        deviation = -0x8000 if off is None else -int(off.total_seconds() // 60)
        return struct.pack(">HBBBBBBBhB", value.year, value.month, value.day, value.isoweekday(),
                           value.hour, value.minute, value.second, value.microsecond // 10000,
                           deviation, clock_status)
    if isinstance(value, date):
        return struct.pack(">HBBB", value.year, value.month, value.day, value.isoweekday())
    if isinstance(value, time):
        return bytes([value.hour, value.minute, value.second, value.microsecond // 10000])
    raise ValueError(f"not a date/time: {value!r}")


def encode_notification(body: Any, timestamp: Optional[datetime] = None, invoke_id: int = 1,
                        body_type: Optional[str] = None, kaifa_datetime: bool = False,
                        clock_status: int = 0) -> bytes:
    """Build a plaintext Data-Notification APDU (simulator, fixtures, tests)."""
    head = b"\x0f" + struct.pack(">I", invoke_id & 0xFFFFFFFF)
    if timestamp is None:
        head += b"\x00"
    else:
        head += b"\x09" if kaifa_datetime else b""
        head += b"\x0c" + encode_datetime_value(timestamp, clock_status)
    return head + encode_data(body, body_type)


def type_signature(body: Any) -> Tuple[str, ...]:
    """The DLMS type names of a body's elements (``()`` for a scalar body)."""
    return tuple(getattr(body, "types", ()))


__all__ = [
    "Notification", "Structure", "Array", "BitString", "decode_apdu", "decode_data",
    "encode_data", "encode_notification", "encode_datetime_value", "parse_datetime",
    "parse_date", "parse_time", "TYPE_NAMES", "TYPE_TAGS", "INTEGER_TYPES", "type_signature",
]
