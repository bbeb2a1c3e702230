"""HDLC frames as DLMS meters push them (IEC 62056-46, frame format type 3).

A frame is ``7E | format(2) | dst(1,2,4) | src(1,2,4) | control | HCS(2) | info | FCS(2) | 7E``.
The format field holds the type nibble 0xA, the segmentation bit and an 11-bit length that
counts every byte between the flags. HCS and FCS are CRC-16/X.25.

Push meters send UI frames (control 0x13/0x03), but Kaifa MA304 sends I-frames (0x10, 0x32 …):
gurux's client drops those because their sequence numbers do not follow a connection it set
up. A push listener has no connection, so any frame carrying an information field is accepted
here, whatever its N(S)/N(R).

This module is sans-io: ``parse_header`` and ``parse_frame`` take bytes and return results or
raise ``ChecksumError``/``FramingError``; the stream logic lives in ``deframer.py``.
"""
from __future__ import annotations

import binascii
from dataclasses import dataclass
from typing import Optional, Tuple

from ..errors import ChecksumError, FramingError

FLAG = 0x7E
#: LLC headers that precede the APDU in the first (or only) frame of a message
LLC_HEADERS = (b"\xE6\xE7\x00", b"\xE6\xE6\x00")
#: longest frame the 11-bit length field can describe (plus both flags)
MAX_FRAME = 2047 + 2


#: byte -> the byte with its bit order reversed
_REVERSED = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def crc16_x25(data: bytes, start: int = 0, end: Optional[int] = None) -> int:
    """CRC-16/X.25 (reflected poly 0x1021, init and xorout 0xFFFF) over ``data[start:end]``.

    Computed with the C routine ``binascii.crc_hqx`` (the same polynomial, not reflected) on
    the bit-reversed bytes, then reflected back: about 20 times faster than a Python loop,
    which matters for a Venus OS GX device decoding every push.
    """
    chunk = bytes(data[start:len(data) if end is None else end]).translate(_REVERSED)
    crc = binascii.crc_hqx(chunk, 0xFFFF)
    return ((_REVERSED[crc & 0xFF] << 8) | _REVERSED[crc >> 8]) ^ 0xFFFF


@dataclass(frozen=True)
class HdlcHeader:
    """What the first bytes of a frame say, validated by the HCS when the frame has an info field."""

    length: int  # bytes between the flags
    segmented: bool
    dst: bytes
    src: bytes
    control: int
    header_len: int  # format + addresses + control (the bytes the HCS covers)

    @property
    def total(self) -> int:
        """Bytes of the whole frame including both flags."""
        return self.length + 2

    @property
    def has_info(self) -> bool:
        return self.length > self.header_len + 2

    @property
    def kind(self) -> str:
        """``I`` (information), ``S`` (supervisory) or ``U`` (unnumbered; 0x03/0x13 is UI)."""
        if not self.control & 0x01:
            return "I"
        return "S" if self.control & 0x03 == 0x01 else "U"

    @property
    def carries_data(self) -> bool:
        """I-frames and UI frames carry an APDU; S-frames and other U-frames (SNRM, UA …) do not."""
        return self.has_info and (self.kind == "I" or self.control & 0xEF == 0x03)


@dataclass(frozen=True)
class HdlcFrame:
    header: HdlcHeader
    info: bytes
    raw: bytes


def _address(buf: bytes, pos: int, end: int) -> Optional[int]:
    """Length of the HDLC address starting at ``pos`` (1, 2 or 4 bytes; LSB=1 ends it).

    Returns -1 when more bytes are needed, None when it is no valid address.
    """
    for n in range(4):
        if pos + n >= end:
            return -1
        if buf[pos + n] & 1:
            return n + 1 if n + 1 in (1, 2, 4) else None
    return None


def header_length(buf: bytes, pos: int = 0) -> int:
    """Bytes from the flag at ``pos`` up to the HCS (flag, format, addresses, control) of a header
    whose HCS failed: where its information field would start, 2 bytes later."""
    i = pos + 3
    for _ in range(2):
        n = _address(buf, i, len(buf))
        i += n if n and n > 0 else 1
    return i + 1 - pos


def parse_header(buf: bytes, pos: int = 0, end: Optional[int] = None) -> Optional[HdlcHeader]:
    """Parse and check the header of a frame whose opening flag is at ``buf[pos]``.

    Returns None when more bytes are needed. Raises FramingError when the bytes cannot be a
    frame header (wrong format type, bad address) and ChecksumError when the HCS is wrong.
    The HCS is checked before waiting for the rest of the frame, so a false start in noise
    is rejected at once instead of stalling the stream for up to 2 KB.
    """
    end = len(buf) if end is None else end
    if pos + 3 > end:
        return None
    if buf[pos] != FLAG:
        raise FramingError("HDLC frame does not start with the flag 0x7E", "resynchronising")
    fmt = (buf[pos + 1] << 8) | buf[pos + 2]
    if fmt >> 12 != 0xA:
        raise FramingError("HDLC format type is not 0xA", "resynchronising")
    length = fmt & 0x07FF
    i = pos + 3
    n = _address(buf, i, end)
    if n is None:
        raise FramingError("HDLC destination address is not 1, 2 or 4 bytes", "resynchronising")
    if n < 0:
        return None
    dst = bytes(buf[i:i + n])
    i += n
    n = _address(buf, i, end)
    if n is None:
        raise FramingError("HDLC source address is not 1, 2 or 4 bytes", "resynchronising")
    if n < 0:
        return None
    src = bytes(buf[i:i + n])
    i += n
    if i >= end:
        return None
    control = buf[i]
    header_len = i + 1 - (pos + 1)
    if length < header_len + 2:
        raise FramingError(f"HDLC length {length} shorter than its header", "resynchronising")
    header = HdlcHeader(length, bool(fmt & 0x0800), dst, src, control, header_len)
    if header.has_info:
        if pos + 1 + header_len + 2 > end:
            return None
        hcs_at = pos + 1 + header_len
        got = buf[hcs_at] | (buf[hcs_at + 1] << 8)
        want = crc16_x25(buf, pos + 1, hcs_at)
        if got != want:
            raise ChecksumError("HDLC HCS", want, got, digits=4)
    return header


def parse_frame(buf: bytes, pos: int = 0, header: Optional[HdlcHeader] = None) -> HdlcFrame:
    """Check the complete frame at ``buf[pos:]`` (flags, HCS, FCS) and return its info field.

    The caller guarantees ``header.total`` bytes are present, or ``header.total - 1`` when the
    input ended where the closing flag would be. A frame with an information field whose HCS and
    FCS both verify is taken even when its closing flag is missing or damaged (a capture cut one
    byte short, a flag hit by a bit error): two CRCs over the whole frame prove it intact, and its
    length sits under the HCS. Its ``raw`` then ends before that byte. A frame without
    information has only its FCS, so it still needs its flag.
    """
    if header is None:
        header = parse_header(buf, pos)
        if header is None or pos + header.total > len(buf):
            raise FramingError("HDLC frame truncated", "the frame ended before its declared length")
    end = pos + header.total
    closed = end <= len(buf) and buf[end - 1] == FLAG
    fcs_at = end - 3
    got = buf[fcs_at] | (buf[fcs_at + 1] << 8)
    want = crc16_x25(buf, pos + 1, fcs_at)
    if not closed and (got != want or not header.has_info):
        raise FramingError("HDLC frame not closed by the flag 0x7E at its declared length",
                           "damaged length or lost bytes; resynchronising")
    if got != want:
        raise ChecksumError("HDLC FCS", want, got, digits=4)
    info = bytes(buf[pos + 1 + header.header_len + 2:fcs_at]) if header.has_info else b""
    return HdlcFrame(header, info, bytes(buf[pos:end if closed else end - 1]))


def strip_llc(info: bytes) -> Tuple[bytes, bool]:
    """Remove the LLC header ``E6 E7 00`` (or ``E6 E6 00``); returns (rest, had_llc)."""
    if info[:3] in LLC_HEADERS:
        return info[3:], True
    return info, False


__all__ = ["FLAG", "MAX_FRAME", "LLC_HEADERS", "crc16_x25", "HdlcHeader", "HdlcFrame", "parse_header", "header_length",
           "parse_frame", "strip_llc"]
