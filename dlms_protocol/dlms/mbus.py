"""Wired M-Bus long frames carrying DLMS (EN 13757-2 link layer, DLMS transport per IEC 62056-7-6).

A telegram is ``68 L L 68 | C A CI STSAP DTSAP data… | CS 16`` where L counts the bytes from C
to the end of the data and CS is their sum modulo 256. Austrian meters (Kaifa MA309, Sagemcom
T210-D on the EVN/TINETZ customer interface) split one APDU over two telegrams: the CI field's
low nibble is a sequence number and bit 0x10 marks the last segment (CI 0x00 first of several,
0x11 second and last, 0x10 the only one).

Sans-io: ``parse_telegram`` checks one complete telegram; joining segments is the deframer's job.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..errors import ChecksumError, FramingError

START = 0x68
STOP = 0x16
#: C + A + CI + STSAP + DTSAP: the smallest L of a telegram that carries DLMS data
MIN_L = 5


@dataclass(frozen=True)
class MbusTelegram:
    control: int
    address: int
    ci: int
    stsap: int
    dtsap: int
    data: bytes  # the DLMS transport payload (an APDU or a part of one)
    raw: bytes

    @property
    def sequence(self) -> int:
        return self.ci & 0x0F

    @property
    def last(self) -> bool:
        return bool(self.ci & 0x10)


def telegram_length(buf: bytes, pos: int = 0, end: Optional[int] = None) -> Optional[int]:
    """Total length of the telegram starting at ``buf[pos]``, None when the header is not complete.

    Raises FramingError when the four header bytes are not ``68 L L 68`` with a usable L.
    """
    end = len(buf) if end is None else end
    if pos + 4 > end:
        return None
    if buf[pos] != START or buf[pos + 3] != START or buf[pos + 1] != buf[pos + 2]:
        raise FramingError("no M-Bus long-frame header (68 L L 68)", "resynchronising")
    return user_data_length(buf[pos + 1]) + 6


def user_data_length(field: int) -> int:
    """The user data bytes an L field stands for.

    L below 3 cannot hold C, A and CI, so it is a longer telegram's length wrapped past 255:
    Sagemcom T210-D meters send 257 bytes with L = 1 (public captures, checksum and stop byte
    where 257 puts them). Those are read as 256-258 bytes, which the checksum and the stop byte
    then confirm; every other L is what it says.
    """
    return field + 256 if field < 3 else field


def parse_telegram(buf: bytes, pos: int = 0) -> MbusTelegram:
    """Check one complete long frame (header, checksum, stop byte) and split its fields."""
    total = telegram_length(buf, pos)
    if total is None or pos + total > len(buf):
        raise FramingError("M-Bus telegram truncated", "the telegram ended before its declared length")
    length = total - 6
    body = bytes(buf[pos + 4:pos + 4 + length])
    if buf[pos + total - 1] != STOP:
        raise FramingError("M-Bus telegram not closed by 0x16 at its declared length",
                           "damaged length or lost bytes; resynchronising")
    got = buf[pos + 4 + length]
    want = sum(body) & 0xFF
    if got != want:
        raise ChecksumError("M-Bus checksum", want, got)
    if length < MIN_L:
        raise FramingError(f"M-Bus telegram with L={length} carries no DLMS transport header",
                           "this is no DLMS-over-M-Bus telegram")
    ci = body[2]
    if ci > 0x1F:
        raise FramingError(f"M-Bus CI 0x{ci:02x} is not a DLMS transport segment (0x00-0x1f)",
                           "this meter sends no DLMS over M-Bus; check the meter type and wrapper setting")
    return MbusTelegram(body[0], body[1], ci, body[3], body[4], body[5:], bytes(buf[pos:pos + total]))


__all__ = ["START", "STOP", "MbusTelegram", "telegram_length", "parse_telegram"]
