"""Builders for push frames: the inverse of the deframer and of security.py.

Used by the push simulator, the tests and the benchmark to make frames the way meters do:
HDLC UI or I frames (any address length, segmentation at a chosen information size), M-Bus
long frames with CI continuation, the DLMS/IP wrapper, General-Block-Transfer blocks and
AES-128-GCM ciphering (general-glo/ded-ciphering and general-ciphering, security control
0x10/0x20/0x30). The plaintext APDU comes from ``apdu.encode_notification``.
"""
from __future__ import annotations

from typing import List, Optional


from .hdlc import FLAG, crc16_x25
from .security import TAG_LEN, Cipher, algorithms, modes  # cryptography loaded on first use
from .wrapper import DED_CIPHERING, GENERAL_BLOCK_TRANSFER, GENERAL_CIPHERING, GLO_CIPHERING

LLC = b"\xE6\xE7\x00"


def ber_length(n: int) -> bytes:
    """A-XDR/BER length: one byte below 128, else 0x8N followed by N bytes."""
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def hdlc_address(value: int, size: int = 1) -> bytes:
    """An HDLC address of 1, 2 or 4 bytes: 7 bits per byte, LSB=1 on the last byte.

    A 2-byte server address holds upper (logical device) and lower (physical) halves of 7
    bits each; a 4-byte one 14 bits each. ``value`` is the concatenation of those bits.
    """
    if size not in (1, 2, 4):
        raise ValueError("an HDLC address has 1, 2 or 4 bytes")
    out = bytearray()
    for i in range(size):
        shift = 7 * (size - 1 - i)
        out.append(((value >> shift) & 0x7F) << 1)
    out[-1] |= 1
    return bytes(out)


def hdlc_frame(info: bytes, dst: bytes = b"\xCF", src: bytes = b"\x02\x23", control: int = 0x13,
               segmented: bool = False) -> bytes:
    """One HDLC frame (flags included) around ``info``; addresses are given already encoded."""
    header_len = 2 + len(dst) + len(src) + 1
    length = header_len + (2 + len(info) if info else 0) + 2
    if length > 0x7FF:
        raise ValueError(f"HDLC frame of {length} bytes exceeds the 11-bit length field; segment it")
    fmt = 0xA000 | (0x0800 if segmented else 0) | length
    head = bytes([fmt >> 8, fmt & 0xFF]) + dst + src + bytes([control])
    body = bytearray(head)
    if info:
        hcs = crc16_x25(head)
        body += bytes([hcs & 0xFF, hcs >> 8]) + info
    fcs = crc16_x25(bytes(body))
    body += bytes([fcs & 0xFF, fcs >> 8])
    return bytes([FLAG]) + bytes(body) + bytes([FLAG])


def hdlc_frames(apdu: bytes, dst: bytes = b"\xCF", src: bytes = b"\x02\x23", kind: str = "ui",
                max_info: Optional[int] = None, llc: bool = True, first_ns: int = 0) -> List[bytes]:
    """Frames carrying one APDU, segmented when ``max_info`` is smaller than LLC + APDU.

    ``kind="ui"``: control 0x03 for segments and 0x13 for the last frame (as the Iskra AM550);
    ``kind="i"``: I-frames with P/F set and N(S) counting from ``first_ns`` (as the Kaifa MA304).
    """
    data = (LLC if llc else b"") + apdu
    size = max_info or len(data)
    chunks = [data[i:i + size] for i in range(0, len(data), size)] or [b""]
    frames = []
    for n, chunk in enumerate(chunks):
        last = n == len(chunks) - 1
        if kind == "ui":
            control = 0x13 if last else 0x03
        elif kind == "i":
            control = (((first_ns + n) & 7) << 1) | 0x10
        else:
            raise ValueError("kind is 'ui' or 'i'")
        frames.append(hdlc_frame(chunk, dst, src, control, segmented=not last))
    return frames


def mbus_telegrams(apdu: bytes, max_data: int = 245, address: int = 0xFF, control: int = 0x53,
                   stsap: int = 0x01, dtsap: int = 0x67) -> List[bytes]:
    """Wired M-Bus long frames carrying one APDU; CI = sequence number, 0x10 set on the last one."""
    if not 1 <= max_data <= 250:
        raise ValueError("an M-Bus long frame carries 1 to 250 bytes of DLMS data")
    chunks = [apdu[i:i + max_data] for i in range(0, len(apdu), max_data)]
    out = []
    for n, chunk in enumerate(chunks):
        ci = (n & 0x0F) | (0x10 if n == len(chunks) - 1 else 0)  # the 4-bit sequence number wraps
        body = bytes([control, address, ci, stsap, dtsap]) + chunk
        out.append(bytes([0x68, len(body), len(body), 0x68]) + body + bytes([sum(body) & 0xFF, 0x16]))
    return out


def wrap(apdu: bytes, source: int = 1, destination: int = 1) -> bytes:
    """DLMS/IP wrapper frame (version 1)."""
    return (b"\x00\x01" + source.to_bytes(2, "big") + destination.to_bytes(2, "big")
            + len(apdu).to_bytes(2, "big") + apdu)


def gbt_blocks(apdu: bytes, block_size: int) -> List[bytes]:
    """Split an APDU into General-Block-Transfer blocks (streaming, no acknowledgements)."""
    chunks = [apdu[i:i + block_size] for i in range(0, len(apdu), block_size)]
    out = []
    for n, chunk in enumerate(chunks, start=1):
        control = 0x40 | (0x80 if n == len(chunks) else 0)
        out.append(bytes([GENERAL_BLOCK_TRANSFER, control]) + n.to_bytes(2, "big") + b"\x00\x00"
                   + ber_length(len(chunk)) + chunk)
    return out


def encipher(apdu: bytes, key: bytes, system_title: bytes, invocation_counter: int,
             security: int = 0x30, auth_key: Optional[bytes] = None, tag: int = GLO_CIPHERING,
             recipient_title: bytes = b"", transaction_id: bytes = b"\x00" * 8) -> bytes:
    """Cipher a plaintext APDU as general-glo (DB), general-ded (DC) or general-ciphering (DD).

    ``security`` is the security control byte (0x10 authentication, 0x20 encryption, 0x30 both,
    plus the suite in the low nibble). An authentication tag needs ``auth_key``.
    """
    if len(system_title) != 8:
        raise ValueError("system title must have 8 bytes")
    iv = system_title + invocation_counter.to_bytes(4, "big")
    extra = b""
    if tag == GENERAL_CIPHERING and security & 0x0F:
        extra = (ber_length(len(transaction_id)) + transaction_id + ber_length(8) + system_title
                 + ber_length(len(recipient_title)) + recipient_title + b"\x00\x00")
    if security & 0x10 and auth_key is None:
        raise ValueError("an authentication tag needs auth_key")
    if security & 0x30 == 0x20:
        enc = Cipher(algorithms.AES(key), modes.CTR(iv + b"\x00\x00\x00\x02")).encryptor()
        body = enc.update(apdu) + enc.finalize()
    else:
        enc = Cipher(algorithms.AES(key), modes.GCM(iv)).encryptor()
        aad = bytes([security]) + (auth_key or b"") + extra
        if security & 0x20:
            enc.authenticate_additional_data(aad)
            body = enc.update(apdu)
        else:
            enc.authenticate_additional_data(aad + apdu)
            body = apdu
        enc.finalize()
        body += enc.tag[:TAG_LEN]
    content = bytes([security]) + invocation_counter.to_bytes(4, "big") + body
    if tag in (GLO_CIPHERING, DED_CIPHERING):
        return bytes([tag]) + ber_length(8) + system_title + ber_length(len(content)) + content
    if tag == GENERAL_CIPHERING:
        return (bytes([tag]) + ber_length(len(transaction_id)) + transaction_id + ber_length(8) + system_title
                + ber_length(len(recipient_title)) + recipient_title + b"\x00" + b"\x00" + b"\x00"
                + ber_length(len(content)) + content)
    raise ValueError(f"tag 0x{tag:02x} is no ciphering APDU")


__all__ = ["LLC", "ber_length", "hdlc_address", "hdlc_frame", "hdlc_frames", "mbus_telegrams", "wrap",
           "gbt_blocks", "encipher"]
