"""General-Block-Transfer (GBT, ``E0 …``) reassembly for pushes.

L+G E450/E570 split one APDU, often a ciphered ``DB …`` one, into blocks
``E0 | block-control | block-number(2) | block-number-ack(2) | length | data``; bit 0x80 of the
block control marks the last block. The blocks are joined by their numbers, before decryption,
and never by timing: a 3-second gap before the last block (esphome #16942) is fine here.

Anything that does not continue the sequence drops what was collected, with a counted error,
because a message with a hole would decode into wrong values. A new block 1 also starts over:
the scs/smartmeter-datacollector E450 capture holds blocks 1-2 of one push followed by a
complete push (blocks 1-4), and only the complete one may yield readings. Blocks of one message
must come from one sender (the same HDLC address pair, M-Bus address or wrapper ports): a block
from another one drops the collected blocks rather than joining two meters' data.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Union

from ..errors import DlmsError, FramingError, IncompleteMessageError
from .wrapper import GENERAL_BLOCK_TRANSFER


@dataclass(frozen=True)
class GbtBlock:
    last: bool
    streaming: bool
    window: int
    number: int
    acknowledged: int
    data: bytes


def parse_block(apdu: bytes) -> GbtBlock:
    """Split one ``E0`` APDU into its fields; FramingError when it is malformed."""
    if len(apdu) < 7 or apdu[0] != GENERAL_BLOCK_TRANSFER:
        raise FramingError("general-block-transfer APDU too short", "damaged frame")
    control = apdu[1]
    number = (apdu[2] << 8) | apdu[3]
    ack = (apdu[4] << 8) | apdu[5]
    first = apdu[6]
    i = 7
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 4 or 7 + n > len(apdu):
            raise FramingError("general-block-transfer length field malformed", "damaged frame")
        length = int.from_bytes(apdu[7:7 + n], "big")
        i = 7 + n
    if i + length != len(apdu):
        raise FramingError(f"general-block-transfer block {number} declares {length} bytes, "
                           f"carries {len(apdu) - i}", "damaged frame")
    return GbtBlock(bool(control & 0x80), bool(control & 0x40), control & 0x3F, number, ack, apdu[i:])


class GbtAssembler:
    """Joins GBT blocks into one APDU; ``feed`` returns completed APDUs and errors in order."""

    def __init__(self, max_size: int = 64 * 1024) -> None:
        self.max_size = max_size
        self._parts: List[bytes] = []
        self._size = 0
        self._next = 1
        self._source: object = None
        #: messages begun (block 1) so far: tells a pause inside this message from one in an earlier
        #: (``PushDecoder.settle``)
        self.started = 0

    @property
    def pending(self) -> int:
        """Blocks collected for an incomplete message."""
        return len(self._parts)

    def reset(self, reason: Optional[str] = None) -> Optional[FramingError]:
        """Drop an incomplete message; returns the error to count when something was dropped."""
        error = None
        if self._parts:
            error = IncompleteMessageError(
                f"incomplete block-transfer message dropped after block {self._next - 1}",
                reason or "a block was lost or damaged; the next complete message will be decoded")
        self._parts = []
        self._size = 0
        self._next = 1
        self._source = None
        return error

    def feed(self, apdu: bytes, source: object = None) -> List[Union[bytes, DlmsError]]:
        """One APDU in; a non-GBT APDU passes straight through (after dropping an incomplete one).

        ``source`` names the sender (``RawApdu.source``); blocks from different senders never join.
        """
        out: List[Union[bytes, DlmsError]] = []
        if not apdu or apdu[0] != GENERAL_BLOCK_TRANSFER:
            dropped = self.reset("another APDU arrived before the last block")
            if dropped:
                out.append(dropped)
            out.append(apdu)
            return out
        try:
            block = parse_block(apdu)
        except FramingError as exc:
            dropped = self.reset()
            if dropped:
                out.append(dropped)
            out.append(exc)
            return out
        if self._parts and source != self._source:
            dropped = self.reset("a block from another sender arrived before the last block")
            if dropped:
                out.append(dropped)
        if block.number == 1:
            dropped = self.reset("a new message began (block 1) before the last block of the previous one")
            if dropped:
                out.append(dropped)
            self.started += 1
        elif block.number != self._next:
            dropped = self.reset()
            if dropped:
                out.append(dropped)
            out.append(IncompleteMessageError(f"block-transfer block {block.number} out of sequence",
                                              "a block was lost; waiting for the next block 1"))
            return out
        self._source = source
        self._parts.append(block.data)
        self._size += len(block.data)
        self._next = block.number + 1
        if self._size > self.max_size:
            dropped = self.reset(f"the message grew beyond {self.max_size} bytes")
            if dropped:
                out.append(dropped)
            return out
        if block.last:
            whole = b"".join(self._parts)
            self._parts = []
            self._size = 0
            self._next = 1
            self._source = None
            out.append(whole)
        return out


__all__ = ["GbtBlock", "parse_block", "GbtAssembler"]
