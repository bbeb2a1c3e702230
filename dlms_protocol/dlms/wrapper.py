"""DLMS/IP wrapper (IEC 62056-9-7) and the extent of a bare xDLMS APDU.

The wrapper header is ``00 01 | source wPort(2) | destination wPort(2) | length(2)``, then the APDU.

A raw APDU has no frame around it at all, so the only way to know where it ends (in a TCP
stream, a capture file, or behind a converter that strips HDLC) is to walk its structure:
``apdu_extent`` sizes a data-notification by walking its A-XDR data, and a ciphered or GBT
APDU by its BER length. It does not decode values (that is ``apdu.py``); it only answers "how
many bytes belong to this APDU, or is this no APDU at all". The walk is strict on purpose (the
date-time field must be 0 or 12 bytes, the security control byte must be a known one, lengths
must fit the buffer bound), because these frames carry no checksum and the same function tells
the deframer whether bytes in a noisy stream are an APDU, and tells security.py whether a
decryption produced one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..errors import FramingError

WRAPPER_VERSION = 1
WRAPPER_HEADER = 8

DATA_NOTIFICATION = 0x0F
EVENT_NOTIFICATION = 0xC2
GLO_CIPHERING = 0xDB
DED_CIPHERING = 0xDC
GENERAL_CIPHERING = 0xDD
GENERAL_BLOCK_TRANSFER = 0xE0
#: APDUs a push can start with (what the deframer accepts as a raw APDU); an event-notification
#: (C2) carries no register values, so it is not looked for in a stream
PUSH_TAGS = frozenset((DATA_NOTIFICATION, GLO_CIPHERING, DED_CIPHERING, GENERAL_CIPHERING,
                       GENERAL_BLOCK_TRANSFER))
CIPHERED_TAGS = frozenset((GLO_CIPHERING, DED_CIPHERING, GENERAL_CIPHERING))

#: A-XDR data types of fixed size (tag -> content bytes)
_FIXED = {0x00: 0, 0x03: 1, 0x05: 4, 0x06: 4, 0x0D: 1, 0x0F: 1, 0x10: 2, 0x11: 1, 0x12: 2, 0x14: 8,
          0x15: 8, 0x16: 1, 0x17: 4, 0x18: 8, 0x19: 12, 0x1A: 5, 0x1B: 4}
_STRINGS = (0x09, 0x0A, 0x0C)
_MAX_DEPTH = 32


class _NeedMore(Exception):
    """Internal: the buffer ends inside the APDU."""


class _Invalid(Exception):
    """Internal: the bytes cannot be the APDU."""


@dataclass(frozen=True)
class WrapperHeader:
    version: int
    source: int
    destination: int
    length: int


def parse_wrapper_header(buf: bytes, pos: int = 0) -> Optional[WrapperHeader]:
    """The 8-byte header at ``buf[pos]``, None when fewer bytes are there; FramingError if it is none."""
    if pos + WRAPPER_HEADER > len(buf):
        return None
    version = (buf[pos] << 8) | buf[pos + 1]
    if version != WRAPPER_VERSION:
        raise FramingError(f"DLMS/IP wrapper version {version} is not 1", "resynchronising")
    length = (buf[pos + 6] << 8) | buf[pos + 7]
    if length == 0:
        raise FramingError("DLMS/IP wrapper with an empty APDU", "resynchronising")
    return WrapperHeader(version, (buf[pos + 2] << 8) | buf[pos + 3], (buf[pos + 4] << 8) | buf[pos + 5],
                         length)


class _Walker:
    __slots__ = ("buf", "end", "limit", "memo", "base", "described")

    def __init__(self, buf: bytes, end: int, limit: int, memo: Optional[dict] = None, base: int = 0,
                 described: bool = False) -> None:
        self.buf = buf
        #: a structure of 2 that starts with 00 is {untagged attribute descriptor, value} (apdu.py)
        self.described = described
        self.end = end  # bytes available
        self.limit = limit  # the APDU may not extend beyond this
        #: containers walked in an earlier call on the same bytes: offset from ``base`` -> (items done,
        #: offset after them), so a walk resumed after more bytes arrived does not start over
        self.memo = memo
        self.base = base

    def need(self, i: int, n: int) -> None:
        if i + n > self.limit:
            raise _Invalid()
        if i + n > self.end:
            raise _NeedMore()

    def byte(self, i: int) -> int:
        self.need(i, 1)
        return self.buf[i]

    def length(self, i: int) -> tuple:
        """A-XDR/BER length at i: (value, next index)."""
        first = self.byte(i)
        if first < 0x80:
            return first, i + 1
        n = first & 0x7F
        if n == 0 or n > 4:
            raise _Invalid()
        self.need(i + 1, n)
        return int.from_bytes(bytes(self.buf[i + 1:i + 1 + n]), "big"), i + 1 + n

    def octets(self, i: int) -> int:
        n, i = self.length(i)
        self.need(i, n)
        return i + n

    def data(self, i: int, depth: int = 0) -> int:
        """Index after the A-XDR Data item at i."""
        if depth > _MAX_DEPTH:
            raise _Invalid()
        tag = self.byte(i)
        i += 1
        size = _FIXED.get(tag)
        if size is not None:
            self.need(i, size)
            return i + size
        if tag in _STRINGS:
            return self.octets(i)
        if tag in (0x01, 0x02):
            if self.described and tag == 0x02 and self.byte(i) == 2 and self.byte(i + 1) == 0:
                return self.described_entry(i, depth)
            return self.container(i, depth)
        if tag == 0x04:
            bits, i = self.length(i)
            n = (bits + 7) // 8
            self.need(i, n)
            return i + n
        if tag == 0x13:
            i = self.type_description(i, depth + 1)
            return self.octets(i)
        raise _Invalid()

    def container(self, i: int, depth: int) -> int:
        """An array or structure whose tag was at ``i - 1``: its items, resumable through ``memo``."""
        count, j = self.length(i)
        if count > self.limit - j:
            raise _Invalid()
        memo = self.memo
        key = i - self.base
        done = 0
        if memo is not None and key in memo:
            done, offset = memo[key]
            j = offset + self.base
        while done < count:
            j = self.data(j, depth + 1)
            done += 1
            if memo is not None:
                memo[key] = (done, j - self.base)
        return j

    def described_entry(self, i: int, depth: int) -> int:
        """{attribute descriptor, value} after its structure tag: count 2, class-id 00 nn (not 0),
        logical name, attribute (1-127), then the value."""
        self.need(i, 10)
        if not self.buf[i + 2] or not 1 <= self.buf[i + 9] <= 0x7F:
            raise _Invalid()
        return self.data(i + 10, depth + 1)

    def type_description(self, i: int, depth: int) -> int:
        if depth > _MAX_DEPTH:
            raise _Invalid()
        tag = self.byte(i)
        i += 1
        if tag == 0x01:
            self.need(i, 2)
            return self.type_description(i + 2, depth + 1)
        if tag == 0x02:
            count, i = self.length(i)
            if count > self.limit - i:
                raise _Invalid()
            for _ in range(count):
                i = self.type_description(i, depth + 1)
            return i
        if tag in _FIXED or tag in _STRINGS or tag in (0x04, 0x13):
            return i
        raise _Invalid()

    def date_time_field(self, i: int) -> int:
        """The optional date-time of a data-notification: ``00``, ``0C`` + 12, or Kaifa's ``09 0C`` + 12."""
        first = self.byte(i)
        if first == 0x00:
            return i + 1
        if first == 0x0C:
            self.need(i + 1, 12)
            return i + 13
        if first == 0x09 and self.byte(i + 1) == 0x0C:
            self.need(i + 2, 12)
            return i + 14
        raise _Invalid()

    def ciphered_content(self, i: int) -> int:
        n, i = self.length(i)
        if n < 5:
            raise _Invalid()
        sc = self.byte(i)
        if not valid_security_control(sc):
            raise _Invalid()
        if sc & 0x10 and n < 5 + 12:
            raise _Invalid()
        self.need(i, n)
        return i + n

    def apdu(self, i: int) -> int:
        tag = self.byte(i)
        if tag == DATA_NOTIFICATION:
            self.need(i + 1, 4)
            return self.data(self.date_time_field(i + 5))
        if tag in (GLO_CIPHERING, DED_CIPHERING):
            title, j = self.length(i + 1)
            if title != 8:
                raise _Invalid()
            self.need(j, 8)
            return self.ciphered_content(j + 8)
        if tag == GENERAL_CIPHERING:
            j = i + 1
            for _ in range(5):  # transaction-id, originator, recipient, date-time, other-information
                j = self.octets(j)
            present = self.byte(j)
            j += 1
            if present == 0x01:
                choice = self.byte(j)
                if choice == 0x00:  # identified-key: key-id
                    self.need(j + 1, 1)
                    j += 2
                elif choice == 0x01:  # wrapped-key: kek-id, key-ciphered-data
                    self.need(j + 1, 1)
                    j = self.octets(j + 2)
                elif choice == 0x02:  # agreed-key: key-parameters, key-ciphered-data
                    j = self.octets(self.octets(j + 1))
                else:
                    raise _Invalid()
            elif present != 0x00:
                raise _Invalid()
            return self.ciphered_content(j)
        if tag == GENERAL_BLOCK_TRANSFER:
            self.need(i + 1, 5)
            if (self.buf[i + 2] << 8 | self.buf[i + 3]) == 0:
                raise _Invalid()
            return self.octets(i + 6)
        if tag == EVENT_NOTIFICATION:
            j = i + 1
            present = self.byte(j)
            if present == 0x01:
                j = self.octets(j + 1)
            elif present == 0x00:
                j += 1
            else:
                raise _Invalid()
            self.need(j, 9)  # class-id(2) instance-id(6) attribute-id(1)
            return self.data(j + 9)
        raise _Invalid()


def valid_security_control(sc: int) -> bool:
    """Security control byte of a ciphered APDU we can process: suite 0-2, A and/or E, no compression."""
    return (sc & 0x0F) <= 2 and sc & 0x30 != 0 and not sc & 0x80


def apdu_extent(buf: bytes, pos: int = 0, end: Optional[int] = None, max_len: int = 65535,
                memo: Optional[dict] = None) -> Optional[int]:
    """Number of bytes of the push APDU that starts at ``buf[pos]``.

    None: the buffer ends inside the APDU (feed more bytes). FramingError: these bytes are not
    a push APDU (unknown tag, impossible length, malformed data), or it would be longer than
    ``max_len``. ``memo``: a dict kept by the caller for repeated calls on the same APDU start
    while more bytes arrive (the bytes already there must not change): each call then costs the
    new bytes only, not a walk from the start.
    """
    end = len(buf) if end is None else end
    try:
        try:
            return _Walker(buf, end, pos + max_len, memo, pos).apdu(pos) - pos
        except _Invalid:
            if buf.find(b"\x02\x02\x00", pos, end) < 0:
                raise
        # the Czech HAN form with untagged attribute descriptors (apdu.py), only when the bytes are
        # no A-XDR; its steps in a memo of their own (they differ from the A-XDR reading's)
        described = memo.setdefault("described", {}) if memo is not None else None
        return _Walker(buf, end, pos + max_len, described, pos, described=True).apdu(pos) - pos
    except _NeedMore:
        return None
    except _Invalid:
        raise FramingError("bytes are not a complete push APDU", "resynchronising") from None
    except RecursionError:
        raise FramingError("APDU nests too deeply", "resynchronising") from None


def is_complete_apdu(data: bytes) -> bool:
    """True when ``data`` is exactly one well-formed push APDU (used to judge a decryption)."""
    try:
        return apdu_extent(data, 0, len(data), len(data)) == len(data)
    except FramingError:
        return False


__all__ = ["WRAPPER_VERSION", "WRAPPER_HEADER", "WrapperHeader", "parse_wrapper_header", "apdu_extent",
           "is_complete_apdu", "valid_security_control", "PUSH_TAGS", "CIPHERED_TAGS", "DATA_NOTIFICATION",
           "EVENT_NOTIFICATION", "GLO_CIPHERING", "DED_CIPHERING", "GENERAL_CIPHERING", "GENERAL_BLOCK_TRANSFER"]
