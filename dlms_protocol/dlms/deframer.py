"""Turn a byte stream from a serial line, socket or file into push APDUs (sans-io).

``Deframer.feed(chunk)`` accepts bytes in any chunking and returns, in stream order, a list
whose items are either a ``RawApdu`` (one complete link-layer message: HDLC frames joined by
their segmentation bit, M-Bus telegrams joined by their CI sequence, one wrapper frame or one
raw APDU) or a ``DlmsError`` (``ChecksumError`` for a bad HCS/FCS/M-Bus CS, ``FramingError``
for noise, truncated frames, dropped incomplete messages). Errors are returned, not raised,
because a stream must go on after a damaged frame; the decoder counts them.

Design rules, each against a failure seen in the field (docs/user-pains.md #10, #11, #19):

* frames are found by their structure (flag, length, HCS) and never by timing gaps, so a
  meter that pauses 3 s between segments is fine;
* every check that can reject a false start early (HCS before waiting for 2 KB, M-Bus
  ``68 L L 68``) does so, and after a rejected start the scan resumes at the next byte, so a
  real frame hidden behind noise is still found;
* parts of a segmented message must follow each other with nothing but flags between them:
  noise or a damaged frame in between drops the incomplete message (counted), because a
  message with a hole would decode into wrong values;
* memory is bounded: a candidate frame can never need more than ``max_buffer`` bytes, chunks
  are processed in pieces so the buffer never exceeds it, and reassembly buffers are capped.

Raw APDUs and the DLMS/IP wrapper carry no checksum. In ``auto`` mode they are accepted
only when their structure is complete and consistent, and never

* when a checksummed frame (HDLC with a good HCS, a complete M-Bus telegram) starts inside
  them, so a false start in noise cannot swallow a real frame;
* when they sit where the payload of a damaged HDLC or M-Bus frame would be (right after an
  LLC header ``E6 E7 00``, or after the remains of an M-Bus header): a damaged frame whose
  flag or start byte was hit would otherwise hand out its payload unverified;
* once the stream has carried a verified HDLC or M-Bus frame: a meter does not switch to bare
  APDUs, so such bytes are far more likely the inside of a damaged frame. (Mixed captures
  can be decoded with an explicit ``wrapper``.)
* within the span an HDLC header claimed when its HCS was good but the frame was not closed
  where it said, or its HCS failed but an LLC follows it: that is a damaged frame, not noise,
  and its payload (a GBT block, the rest of a ciphered APDU) must not come out unchecked.

and a bare APDU must look like a push from its first bytes on: a data-notification needs a
valid date-time and a non-empty structure (without a date-time: a body that starts with a logical
name, an attribute descriptor or a text), a GBT block acknowledges nothing, a ciphered APDU's
system title starts with a manufacturer id. ``wrapper="apdu"`` drops these plausibility rules.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional, Tuple, Union

from ..errors import ChecksumError, ConfigurationError, DlmsError, FramingError, IncompleteMessageError
from . import hdlc, mbus
from .apdu import parse_datetime
from .wrapper import (DATA_NOTIFICATION, GENERAL_BLOCK_TRANSFER, GLO_CIPHERING, PUSH_TAGS, WRAPPER_HEADER,
                      apdu_extent, parse_wrapper_header)

WRAPPERS = ("auto", "hdlc", "mbus", "wrapper", "apdu")
#: noise bytes after which a FramingError is reported even though no frame followed yet
NOISE_REPORT = 256
#: bytes kept before the scan position after a read, so that checks looking back (an LLC header
#: before a would-be APDU) see the same bytes whatever the read boundaries were
CONTEXT = 24
#: auto mode: an HDLC frame start (flag, format 0xA) this close before a would-be bare APDU means
#: the APDU is the payload of a frame whose header or LLC was damaged (header 8-14 bytes + LLC 3)
_HDLC_LOOKBACK = 20
_STARTS = {
    "hdlc": b"\x7e",
    "mbus": b"\x68",
    "wrapper": b"\x00",
    "apdu": bytes(sorted(PUSH_TAGS)),
}
#: raw APDUs recognised in auto mode: data-notification, general-glo-ciphering, GBT. The
#: others (ded-ciphering, general-ciphering) occur in frames or with ``wrapper="apdu"``
#: only: each extra start byte lets more noise through as a would-be APDU.
_AUTO_RAW = bytes(sorted((DATA_NOTIFICATION, GLO_CIPHERING, GENERAL_BLOCK_TRANSFER)))
_STARTS["auto"] = _STARTS["hdlc"] + _STARTS["mbus"] + _STARTS["wrapper"] + _AUTO_RAW
_HDLC_START = re.compile(b"\x7e[\xa0-\xaf]")
_MBUS_START = re.compile(b"\x68(.)\\1\x68", re.DOTALL)
#: notification bodies accepted for a raw data-notification found in noise (auto mode)
_AUTO_BODY_TAGS = (0x01, 0x02)

Item = Union["RawApdu", DlmsError]


def _starts_with_llc(info: bytes) -> bool:
    """The first frame of a segmented message starts with the LLC (which may span tiny segments)."""
    if len(info) >= 3:
        return info[:3] in hdlc.LLC_HEADERS  # (every frame: no generator)
    return any(llc.startswith(info) for llc in hdlc.LLC_HEADERS)


def _inside_link_frame(buf: bytearray, q: int, floor: int = 0) -> bool:
    """Do the bytes before ``q`` (from ``floor`` on) look like the header of an HDLC or M-Bus frame around it?

    A flag right before, or a flag and an HDLC format byte less than 20 bytes before (a frame
    whose header lost, gained or changed bytes; random data matches that once in ~200 bytes); an
    LLC header (``E6 E7 00``) right before, even with one of its bytes damaged (a frame hit
    twice, in its header and its LLC, must not hand out its payload; noise matches 2 of 3 bytes
    about once in 10 000), or an M-Bus ``68`` where the long-frame header of a DLMS telegram would
    start (9 bytes before) or end (6 bytes before) with a DLMS transport CI (0x00-0x1f) 3 bytes
    before. Bytes of the message accepted before ``floor`` are no header: the last values of
    one bare APDU once made the next one look like a frame's payload (about 1 push in 200).
    """
    if q - 3 >= floor and _llc_like(buf, q - 3):
        return True
    if (q - 1 >= floor and buf[q - 1] == hdlc.FLAG) or _HDLC_START.search(buf, max(floor, q - _HDLC_LOOKBACK), q):
        return True
    return q - 3 >= floor and buf[q - 3] <= 0x1F and (
        (q - 9 >= floor and buf[q - 9] == mbus.START) or (q - 6 >= floor and buf[q - 6] == mbus.START))


def _llc_like(buf: bytearray, p: int) -> bool:
    """An LLC header at ``p``, or one with a single byte damaged."""
    return any(sum(a == b for a, b in zip(buf[p:p + 3], llc)) >= 2 for llc in hdlc.LLC_HEADERS)


def _plausible_notification(buf: bytearray, q: int) -> bool:
    """A bare data-notification in auto mode: a valid date-time header and a non-empty structure;
    or no date-time and a body that starts with an attribute descriptor entry (``_described_start``),
    with a text of at least 4 printable characters (ZPA's Czech HAN list: ``ZPA3HAN00200``) or with
    an OBIS code (``_obis_start``: the Nordic lists as raw-APDU dumps give them).

    Noise that starts with 0x0F followed by any data item would otherwise pass now and then;
    a real concrete COSEM date-time in random bytes is about a one-in-a-million event.
    """
    i = q + 5
    if buf[i] == 0x00:
        return _described_start(buf, i + 1) or _text_start(buf, i + 1) or _obis_start(buf, i + 1)
    if buf[i] == 0x09:
        i += 1
    if buf[i] != 0x0C or parse_datetime(bytes(buf[i + 1:i + 13])) is None:
        return False
    i += 13
    return buf[i] in _AUTO_BODY_TAGS and buf[i + 1] != 0


def _text_start(buf: bytearray, i: int) -> bool:
    """A non-empty array or structure whose first element is an octet- or visible-string of 4 to
    127 bytes, the first 4 printable ASCII."""
    return (buf[i] in _AUTO_BODY_TAGS and buf[i + 1] != 0 and buf[i + 2] in (0x09, 0x0A)
            and 4 <= buf[i + 3] < 0x80 and all(0x20 <= b < 0x7F for b in buf[i + 4:i + 8]))


def _obis_start(buf: bytearray, i: int) -> bool:
    """A non-empty array or structure whose first element is a logical name (``09 06``, A 0-15,
    B 0-127), alone or first in a structure of 2 or 3 (code, value, scaler-unit): Aidon's
    ``01 0D 02 02 09 06 01 01 00 02 81 FF``, Kaifa's Swedish pairs ``02 24 09 06 01 00 00 02 81 FF``.
    Random bytes after ``0F … 00`` pass about once in 10^8."""
    if buf[i] not in _AUTO_BODY_TAGS or buf[i + 1] == 0:
        return False
    j = i + 2
    if buf[j] == 0x02 and buf[j + 1] in (2, 3):
        j += 2
    return buf[j] == 0x09 and buf[j + 1] == 6 and buf[j + 2] <= 15 and buf[j + 3] <= 127


def _described_start(buf: bytearray, i: int) -> bool:
    """A Czech HAN body (``apdu`` module docstring): an array or structure whose first 15 bytes
    hold ``02 02 00``, a class-id byte other than 0 and, where already received, a logical name
    with A 0-15 and B 0-127 (the XT211: ``02 02 16 01 01 16 02 02 00 01 00 00 60 01 01 FF``)."""
    if buf[i] not in _AUTO_BODY_TAGS:
        return False
    at = bytes(buf[i:i + 15]).find(b"\x02\x02\x00")
    if at < 0:
        return False
    j = i + at + 3
    head = buf[j:j + 3]
    return len(head) > 0 and head[0] != 0 and (len(head) < 2 or head[1] <= 15) and (len(head) < 3 or head[2] <= 127)


#: the bytes that end a link frame after its payload: HDLC's FCS and closing flag (M-Bus: checksum
#: and stop byte)
LINK_TAIL = 3


def _plausible_push_block(buf: bytearray, q: int) -> bool:
    """A pushed GBT block acknowledges nothing and uses no window (``E0 x0/x0 nnnn 0000``).

    Only applied to raw APDUs found by auto-detection: an ``E0`` byte in noise followed by any
    length would otherwise pass as a block every few hundred bytes.
    """
    return buf[q + 1] & 0x3F == 0 and buf[q + 4] == 0 and buf[q + 5] == 0 and buf[q + 2] == 0


def _plausible_ciphered(buf: bytearray, q: int) -> bool:
    """A bare general-glo-ciphering APDU in auto mode: its system title starts with a FLAG
    manufacturer id (three capital letters: ISK, LGZ, KFM, SAG …). Noise passes 1 in 10^3."""
    return buf[q + 1] == 8 and all(0x41 <= b <= 0x5A for b in buf[q + 2:q + 5])


#: auto mode: bytes needed before, and the check of, a bare APDU's start
_AUTO_CHECKS = {GENERAL_BLOCK_TRANSFER: (6, _plausible_push_block), DATA_NOTIFICATION: (21, _plausible_notification),
                GLO_CIPHERING: (5, _plausible_ciphered)}


@dataclass(frozen=True)
class RawApdu:
    """One link-layer message: the APDU (LLC removed) and the exact frames it came in."""

    wrapper: str  # "hdlc", "mbus", "wrapper" or "apdu"
    apdu: bytes
    frames: int
    raw: bytes
    #: who sent it: ("hdlc", (dst, src)), ("mbus", address), ("wrapper", (source, destination)) or
    #: ("apdu", None); GBT blocks of one message must all have the same source
    source: Optional[Tuple[str, object]] = None

    @property
    def checksum(self) -> Optional[str]:
        """The link checksum these frames passed: ``HDLC FCS``, ``M-Bus checksum`` or None (none exists)."""
        return _LINK_CHECKS.get(self.wrapper)


_LINK_CHECKS = {"hdlc": "HDLC FCS", "mbus": "M-Bus checksum"}


# results of one candidate check
_NEED = 0
_REJECT = 1  # not a frame: skip one byte (counted as noise)
_ACCEPT = 2
_DAMAGED = 3  # a frame whose error was reported: skip ``arg`` bytes without counting them as noise


#: why ``settle`` drops a segmented message when its caller gives no other reason
QUIET_REASON = "the line went quiet before its last segment: a later push's segments are never joined to it"


def _bytes(count: int) -> str:
    return f"{count} byte{'s' if count != 1 else ''}"


class Deframer:
    """Stream deframer with auto-detection per frame; see the module docstring for the contract."""

    def __init__(self, wrapper: str = "auto", max_buffer: int = 64 * 1024) -> None:
        if wrapper not in WRAPPERS:
            raise ConfigurationError(f"wrapper {wrapper!r} unknown", "use " + ", ".join(WRAPPERS))
        if max_buffer < 2 * hdlc.MAX_FRAME:
            raise ConfigurationError(f"max_buffer {max_buffer} too small",
                                     f"use at least {2 * hdlc.MAX_FRAME} bytes")
        self.wrapper = wrapper
        self.max_buffer = max_buffer
        self._start = re.compile(b"[" + re.escape(_STARTS[wrapper]) + b"]")
        self._buf = bytearray()
        self.high_water = 0  #: largest size the stream buffer ever had (for tests and diagnostics)
        self.frames = 0  #: link-layer frames accepted (HDLC frames, M-Bus telegrams, wrapper frames, APDUs)
        self.skipped = 0  #: noise bytes skipped (flags between frames not counted)
        #: auto mode: a checksummed frame was verified, bare APDUs/wrapper frames are no longer taken
        self.checksummed = False
        self._noise = 0  # noise bytes since the last report
        # link-layer reassembly (HDLC segmentation, M-Bus CI sequence)
        self._parts: List[bytes] = []
        self._raws: List[bytes] = []
        #: segmented messages begun so far: tells a pause inside this message from one in an
        #: earlier (``PushDecoder.settle``)
        self.started = 0
        self._size = 0
        self._owner: Optional[Tuple[str, object]] = None
        self._next_seq = 0
        self._next_ns: Optional[int] = None  # HDLC I-frames: the N(S) the next segment must carry
        self._orphan = False  # inside the remaining segments of a message whose first frame was lost
        self._ctx = 0  # bytes at the start of _buf already processed (look-back context)
        self._consumed = 0  # bytes deleted from the front of _buf so far (absolute stream offsets)
        # incremental work on the one pending candidate (its absolute offset), so a frame arriving
        # one byte per read costs linear, not quadratic, time
        self._memo_at: Tuple[int, int] = (-1, 0)
        self._memo: dict = {}
        self._scan: Tuple[int, int] = (-1, 0)  # (candidate offset, offset scanned up to)
        #: auto mode: stream offset up to which a damaged frame's claimed span reaches (no bare APDUs)
        self._shadow_end = 0
        #: stream offset where the last bare APDU or wrapper frame ended (no header before it)
        self._accepted_end = 0
        self._final = False  # finish()/settle(): no frame starting inside a candidate will complete
        #: the bytes (flag to HCS) and the parsed header of the last HDLC data frame: a meter sends
        #: the same header every time, and the same bytes parse to the same header (its HCS included)
        self._header_bytes = b""
        self._header: Optional[hdlc.HdlcHeader] = None
        self._known_owner: Tuple[str, object] = ("hdlc", None)  # the message source of that header

    # ------------------------------------------------------------------ public
    @property
    def buffered(self) -> int:
        """Bytes held in the stream buffer plus reassembly buffers."""
        return len(self._buf) - self._ctx + self._size

    def feed(self, chunk: bytes) -> List[Item]:
        """Add bytes; return the complete messages and the errors they revealed, in order."""
        out: List[Item] = []
        view = memoryview(bytes(chunk))
        while view:
            if len(self._buf) >= self.max_buffer:  # cannot happen with bounded candidates; stay safe anyway
                drop = len(self._buf) - self.max_buffer // 2
                del self._buf[:drop]
                self._consumed += drop
                self.skipped += max(0, drop - self._ctx)
                self._ctx = max(0, self._ctx - drop)
                self._report(out, FramingError(f"stream buffer full: {drop} oldest bytes dropped",
                                               "the input carries no recognisable frames"))
            room = self.max_buffer - len(self._buf)
            piece, view = view[:room], view[room:]
            self._buf += piece
            self.high_water = max(self.high_water, len(self._buf))
            self._process(out)
        return out

    def finish(self) -> List[Item]:
        """End of input (file, closed socket): report what could not be completed."""
        out: List[Item] = []
        # nothing more can arrive: a frame that was waiting only for one that might start inside
        # it (and never completed) is decided now, instead of being counted as noise
        self._decide(out)
        rest = len(self._buf) - self._ctx - self._buf.count(hdlc.FLAG, self._ctx)
        tail = bytes(self._buf[self._ctx:])
        arrived = len(tail.lstrip(b"\x7e")) + (tail[:1] == b"\x7e")  # (with its opening flag)
        self.skipped += rest
        self._consumed += len(self._buf)
        self._buf.clear()
        self._ctx = 0
        if self._noise:  # skipped since the last frame, and no frame came after them
            count, self._noise = self._noise, 0
            where = "after the last frame" if self.frames else "in the input"
            out.append(FramingError(f"{_bytes(count)} {where} {'are' if count > 1 else 'is'} no frame",
                                    "check baud rate, parity and wiring if this keeps happening"))
        if rest > 0:  # what the buffer still held: the start of a frame that never ended
            out.append(FramingError(f"the input ended inside a frame ({_bytes(arrived)} of it arrived)",
                                    "a capture cut out of a running line ends so; else the sender stopped mid-frame"))
        self._drop_partial(out, "the input ended inside a segmented message")
        return out

    @property
    def pending_parts(self) -> int:
        """Segments of a message still waiting for its last one."""
        return len(self._parts)

    def settle(self, give_up: Optional[str] = QUIET_REASON) -> List[Item]:
        """The line has been quiet for a whole read: decide what waits only for a frame that
        might start inside it (frames are sent without pauses, so that one is not coming).

        An unverified candidate (bare APDU, wrapper frame) would otherwise be delivered only with
        the next push's bytes. A segmented message still waiting for segments is dropped with
        ``give_up`` as the reason, or kept when it is None: the caller knows how long the line
        was quiet and how long this meter pauses inside a message (``PushDecoder.settle``). HDLC
        UI segments and M-Bus telegrams carry nothing that tells two pushes apart, so joining the
        head of one push to the tail of the next would splice them, each frame's checksum intact.
        An incomplete frame stays buffered.
        """
        out: List[Item] = []
        if len(self._buf) > self._ctx:
            self._decide(out)
        if give_up is not None:
            self._drop_partial(out, give_up)
        return out

    def _decide(self, out: List[Item]) -> None:
        """Scan once more, taking a frame that starts inside a candidate and is not complete for none."""
        self._final = True
        try:
            self._process(out)
        finally:
            self._final = False

    def reset(self) -> None:
        """Forget everything buffered (after reopening a port)."""
        self._consumed += len(self._buf)
        self._buf.clear()
        self._ctx = 0
        self._noise = 0
        self._orphan = False
        self._next_ns = None
        self._parts, self._raws, self._size, self._owner = [], [], 0, None

    # ----------------------------------------------------------------- scanning
    def _process(self, out: List[Item]) -> None:
        buf = self._buf
        pos = self._ctx
        while pos < len(buf):
            if self._header is not None and buf[pos] == hdlc.FLAG:  # (an HDLC meter's pushes: _known_frame)
                end = self._known_frame(pos, out)
                if end < 0:
                    break
                if end:
                    pos = end
                    continue
            m = self._start.search(buf, pos)
            if m is None:
                self._skip(out, pos, len(buf))
                pos = len(buf)
                break
            q = m.start()
            if q > pos:
                self._skip(out, pos, q)
            kind, arg = self._candidate(q, out)
            if kind == _NEED:
                pos = q
                break
            if kind == _REJECT:
                self._skip(out, q, q + arg)
                pos = q + arg
            elif kind == _DAMAGED:
                pos = q + arg
            else:
                pos = arg
        cut = max(0, pos - CONTEXT)
        del buf[:cut]
        self._consumed += cut
        self._ctx = pos - cut
        if self._noise >= NOISE_REPORT:  # a line of pure noise (wrong baud rate) must show up soon
            self._flush_noise(out)

    def _known_frame(self, q: int, out: List[Item]) -> int:
        """A push like the last one, in one step: where it ends (its closing flag), 0 when not,
        -1 for a lone flag at the end (more bytes needed, as the scan would decide).

        Why: a meter sends the same header every push, and the general scan (a start search, the
        candidate checks, the frame and header objects, the message assembly) was a quarter of
        the decoder's cold-cache cost per push. This takes only what that scan would take the
        same way, with the same result (``tests/test_fast_paths.py`` holds the two equal): an
        unsegmented frame with the header bytes (HCS included) of the last data frame, complete,
        closed by a flag, its FCS right, opening a message with an LLC, while no segmented message
        is pending and no noise is waiting to be reported. Anything else is left to the scan.
        """
        header = self._header
        if header is None or header.segmented or self._parts or self._orphan or self._noise:
            return 0
        buf = self._buf
        if q + 1 == len(buf):
            return -1  # (the last frame's closing flag, which may open the next one)
        if buf[q + 1] == hdlc.FLAG:
            q += 1  # the closing flag of the frame before (the scan skips it, uncounted)
        known = self._header_bytes
        end = q + header.total - 1
        if end >= len(buf) or buf[q:q + len(known)] != known:
            return 0
        try:
            frame = hdlc.parse_frame(buf, q, header)  # (the closing flag and the FCS, as the scan checks them)
        except DlmsError:
            return 0  # (the scan reports it)
        apdu, has_llc = hdlc.strip_llc(frame.info)
        if not has_llc:
            return 0
        self.frames += 1
        out.append(RawApdu("hdlc", apdu, 1, frame.raw, self._known_owner))
        return end

    def _skip(self, out: List[Item], start: int, end: int) -> None:
        noise = end - start - self._buf.count(hdlc.FLAG, start, end)
        if noise > 0:
            self._noise += noise
            self.skipped += noise
            self._drop_partial(out, "noise arrived between the frames of a segmented message")

    def _flush_noise(self, out: List[Item]) -> None:  # (noise that a frame followed)
        if self._noise:
            out.append(FramingError(f"{_bytes(self._noise)} of noise skipped between frames",
                                    "check baud rate, parity and wiring if this keeps happening"))
            self._noise = 0

    def _candidate(self, q: int, out: List[Item]) -> Tuple[int, int]:
        first = self._buf[q]
        if first == hdlc.FLAG:
            return self._hdlc(q, out)
        if first == mbus.START:
            return self._mbus(q, out)
        if first == 0x00:
            return self._wrapped(q, out)
        return self._raw(q, out)

    # ------------------------------------------------------------------- HDLC
    def _hdlc(self, q: int, out: List[Item]) -> Tuple[int, int]:
        buf = self._buf
        if q + 1 < len(buf) and buf[q + 1] == hdlc.FLAG:
            return _REJECT, 1  # the closing flag of one frame before the opening flag of the next
        known = self._header_bytes
        if known and buf[q:q + len(known)] == known:
            header: Optional[hdlc.HdlcHeader] = self._header
        else:
            parsed = self._parse_header(q, out)
            if isinstance(parsed, tuple):
                return parsed
            header = parsed
        if header is None:
            return _NEED, 0
        if q + header.total > len(buf) and not (self._final and q + header.total - 1 == len(buf)):
            return _NEED, 0  # (at the end of input or a quiet line: a frame missing only its closing flag)
        try:
            frame = hdlc.parse_frame(buf, q, header)
        except ChecksumError as exc:
            self._report(out, exc)
            return _DAMAGED, header.total - 1  # the verified header says where the frame ends
        except FramingError as exc:
            self._report(out, exc)
            # a header with a good HCS whose frame lost or gained bytes: its payload is no bare APDU
            self._shadow_end = max(self._shadow_end, self._consumed + q + header.total)
            return _DAMAGED, 1
        self.frames += 1
        self.checksummed = True
        end = q + header.total - 1  # leave the closing flag: it may open the next frame
        if not header.carries_data:
            return _ACCEPT, end
        self._header_bytes, self._header = bytes(buf[q:q + header.header_len + 3]), header
        self._known_owner = ("hdlc", (header.dst, header.src))
        self._flush_noise(out)
        self._hdlc_data(header, frame, out)
        return _ACCEPT, end

    def _parse_header(self, q: int, out: List[Item]) -> Union[Optional[hdlc.HdlcHeader], Tuple[int, int]]:
        """The header of the frame at ``q`` (None: more bytes needed), or the scan's verdict on a
        header that is none (a false start, a failed HCS)."""
        buf = self._buf
        try:
            return hdlc.parse_header(buf, q)
        except ChecksumError as exc:
            llc = hdlc.header_length(buf, q) + 2  # the LLC would follow the HCS
            if self.wrapper == "auto" and q + llc + 3 > len(buf):
                return _NEED, 0  # decide with the LLC in view, whatever the read boundary
            self._report(out, exc)
            if self.wrapper == "auto" and _llc_like(buf, q + llc):
                self._shadow_end = max(self._shadow_end,
                                       self._consumed + q + ((buf[q + 1] << 8 | buf[q + 2]) & 0x07FF) + 2)
            return _DAMAGED, 1
        except FramingError:
            return _REJECT, 1

    def _hdlc_data(self, header: hdlc.HdlcHeader, frame: hdlc.HdlcFrame, out: List[Item]) -> None:
        """Join a verified data frame to its message; never to the rest of another one."""
        owner = ("hdlc", (header.dst, header.src))
        info = frame.info
        ns = (header.control >> 1) & 0x07 if header.kind == "I" else None
        if self._parts and self._owner != owner:
            self._drop_partial(out, "a frame from another address arrived before the last segment")
        elif self._parts and len(info) > 3 and info[:3] in hdlc.LLC_HEADERS and info[3] in PUSH_TAGS:
            # the last segment was lost: this frame opens the next message, it does not continue
            # the old one (joining them would lose the next message too)
            self._drop_partial(out, "a new message began before the last segment of the previous one")
        elif self._parts and ns != self._next_ns:
            # I-frames number their segments: a gap in N(S) is a lost segment (a UI frame has no number)
            self._drop_partial(out, f"HDLC I-frame N(S) {ns} arrived where {self._next_ns} was due: "
                                    "a segment was lost")
            self._orphan = True
        if not self._parts and not _starts_with_llc(info) and (
                header.segmented or self._orphan or not info or info[0] not in PUSH_TAGS):
            # no LLC: the rest of a message whose first frame was lost (or dropped)
            if not self._orphan:
                self._report(out, IncompleteMessageError("HDLC frame without the first frame of its message",
                                                         "the first frame was lost; waiting for the next message"))
            self._orphan = header.segmented
            return
        self._orphan = False
        if header.segmented or self._parts:
            self._owner = owner
            self._next_ns = None if ns is None else (ns + 1) & 0x07
            if not self._add_part(out, info, frame.raw) or header.segmented:
                return
            apdu, _ = hdlc.strip_llc(b"".join(self._parts))  # the LLC may even span segments
            out.append(RawApdu("hdlc", apdu, len(self._parts), b"".join(self._raws), owner))
            self._parts, self._raws, self._size, self._owner = [], [], 0, None
            return
        out.append(RawApdu("hdlc", hdlc.strip_llc(info)[0], 1, frame.raw, owner))

    # ------------------------------------------------------------------ M-Bus
    def _mbus(self, q: int, out: List[Item]) -> Tuple[int, int]:
        buf = self._buf
        try:
            total = mbus.telegram_length(buf, q)
        except FramingError:
            return _REJECT, 1
        if total is None:
            return _NEED, 0
        inner = self._strong_inside(q, min(q + total, len(buf))) if self.wrapper == "auto" else False
        if inner:
            # a 68 L L 68 header in noise must not stall the stream: give up as soon as a
            # checksummed frame starts inside the span it claims (complete or not, so that the
            # read boundaries never change the result)
            return _REJECT, 1
        if q + total > len(buf):
            return _NEED, 0
        try:
            # complete and verified (checksum, stop byte), it stands against a frame that merely
            # starts inside it and is not complete yet; otherwise that frame decides
            tel = mbus.parse_telegram(buf, q)
        except ChecksumError as exc:
            if inner is None:
                return _NEED, 0  # a frame starting inside it is not complete yet: decide with it
            self._report(out, exc)
            # the stop byte sits where L says: trust L and skip the telegram
            return _DAMAGED, (total if buf[q + total - 1] == mbus.STOP else 1)
        except FramingError as exc:
            if inner is None:
                return _NEED, 0
            if buf[q + total - 1] == mbus.STOP:  # a well-formed telegram that carries no DLMS
                self._report(out, exc)
                return _DAMAGED, total
            return _REJECT, 1
        self.frames += 1
        self.checksummed = True
        self._flush_noise(out)
        end = q + total
        owner = ("mbus", tel.address)
        data = tel.data
        if self._parts and (self._owner != owner or tel.sequence != self._next_seq):
            self._drop_partial(out, "an M-Bus segment is missing")
        if not self._parts:
            if tel.sequence != 0:
                self._report(out, IncompleteMessageError(
                    f"M-Bus segment {tel.sequence} without its first segment",
                    "the first telegram was lost; waiting for the next message"))
                return _ACCEPT, end
            if tel.last:
                out.append(RawApdu("mbus", hdlc.strip_llc(data)[0], 1, tel.raw, owner))
                return _ACCEPT, end
        self._owner = owner
        if not self._add_part(out, data, tel.raw):
            return _ACCEPT, end
        if tel.last:
            out.append(RawApdu("mbus", hdlc.strip_llc(b"".join(self._parts))[0], len(self._parts),
                               b"".join(self._raws), owner))
            self._parts, self._raws, self._size, self._owner = [], [], 0, None
        else:
            self._next_seq = (tel.sequence + 1) & 0x0F
        return _ACCEPT, end

    # --------------------------------------------------------- wrapper, raw APDU
    def _wrapped(self, q: int, out: List[Item]) -> Tuple[int, int]:
        buf = self._buf
        strict = self.wrapper == "wrapper"
        if not strict and (self.checksummed or self._consumed + q < self._shadow_end):
            return _REJECT, 1
        try:
            header = parse_wrapper_header(buf, q)
        except FramingError:
            return _REJECT, 1
        if header is None:
            return _NEED, 0
        if WRAPPER_HEADER + header.length > self.max_buffer:
            if strict:
                self._report(out, FramingError(f"DLMS/IP wrapper length {header.length} exceeds the buffer",
                                               "damaged header; resynchronising"))
                return _DAMAGED, 1
            return _REJECT, 1
        start = q + WRAPPER_HEADER
        try:
            extent = apdu_extent(buf, start, len(buf), header.length, self._memo_for(start, header.length))
        except FramingError:
            if strict:
                self._report(out, FramingError("DLMS/IP wrapper does not contain one push APDU of its length",
                                               "damaged frame; resynchronising"))
                return _DAMAGED, 1
            return _REJECT, 1
        if extent is None:
            if not strict and self._strong_inside(q, len(buf)):
                return _REJECT, 1
            return _NEED, 0
        inner = False if strict else self._strong_inside(q, start + extent)
        if extent != header.length or inner:
            return _REJECT, 1
        if inner is None:
            return _NEED, 0
        end = start + extent
        return self._emit_single(out, "wrapper", bytes(buf[start:end]), bytes(buf[q:end]), end,
                                 ("wrapper", (header.source, header.destination)))

    def _raw(self, q: int, out: List[Item]) -> Tuple[int, int]:
        buf = self._buf
        auto = self.wrapper == "auto"
        if auto:
            if (self.checksummed or _inside_link_frame(buf, q, max(0, self._accepted_end - self._consumed))
                    or self._consumed + q < self._shadow_end):
                return _REJECT, 1
            # cheap plausibility first, so that noise does not make the stream wait for a long "APDU"
            check = _AUTO_CHECKS.get(buf[q])
            if check is not None:
                needed, plausible = check
                if len(buf) - q < needed:
                    return _NEED, 0
                if not plausible(buf, q):
                    return _REJECT, 1
        try:
            extent = apdu_extent(buf, q, len(buf), self.max_buffer, self._memo_for(q, self.max_buffer))
        except FramingError:
            return _REJECT, 1
        if extent is None:
            if auto and self._strong_inside(q, len(buf)):
                return _REJECT, 1
            return _NEED, 0
        end = q + extent
        if auto and not self.frames:
            tail = self._link_tail(end)
            if tail is None:
                return _NEED, 0
            if tail:
                return _REJECT, 1
        inner = self._strong_inside(q, end) if auto else False
        if inner:
            return _REJECT, 1
        if inner is None:
            return _NEED, 0
        return self._emit_single(out, "apdu", bytes(buf[q:end]), bytes(buf[q:end]), end, ("apdu", None))

    def _link_tail(self, end: int) -> Optional[bool]:
        """Before anything was accepted (listening may begin inside a link frame): is the bare APDU
        candidate ending at ``end`` followed by the end of a link frame, an HDLC FCS and flag or an
        M-Bus checksum and stop byte? Then it is the payload of a frame whose start was lost, and
        nothing verified it. None: those bytes have not arrived yet (``settle`` decides without)."""
        buf = self._buf
        after = len(buf) - end
        if after < LINK_TAIL and not self._final:
            return None
        # whatever follows the flag or stop byte (the next frame may be damaged too). On a raw-APDU
        # line the pause after a push decides first (settle: no bytes after it); in a capture of
        # back-to-back APDUs the next one's bytes look so about once in 128: its first push is lost.
        if after >= 3 and buf[end + 2] == hdlc.FLAG:
            return True
        return after >= 2 and buf[end + 1] == mbus.STOP

    def _emit_single(self, out: List[Item], wrapper: str, apdu: bytes, raw: bytes, end: int,
                     source: Tuple[str, object]) -> Tuple[int, int]:
        self.frames += 1
        self._flush_noise(out)
        self._drop_partial(out, f"a {wrapper} frame arrived before the last segment")
        self._accepted_end = self._consumed + end
        out.append(RawApdu(wrapper, apdu, 1, raw, source))
        return _ACCEPT, end

    def _memo_for(self, q: int, limit: int) -> dict:
        """The walk memo of the candidate APDU at ``q`` (a fresh one when the candidate changed)."""
        at = (self._consumed + q, limit)
        if at != self._memo_at:
            self._memo_at, self._memo = at, {}
        return self._memo

    def _strong_inside(self, start: int, end: int) -> Optional[bool]:
        """Does a checksummed frame start in ``buf[start+1:end]``? Then bytes at ``start`` are no frame.

        None: one may, but it is not complete yet (the caller waits rather than decide on less
        than a single read would have seen). Every position is tried (overlapping matches too),
        and what was decided for this candidate in an earlier read is not looked at again, so the
        answer and the total cost do not depend on how the bytes were cut into reads.
        """
        buf = self._buf
        at = self._consumed + start
        lo = start + 1
        if self._scan[0] == at:
            lo = max(lo, self._scan[1] - self._consumed)
        undecided = max(lo, end - 3)  # a header may still be cut off at the end
        waiting = False
        for pattern, check in ((_HDLC_START, self._hdlc_header_at), (_MBUS_START, self._mbus_telegram_at)):
            m = pattern.search(buf, lo, end)
            while m is not None:
                verdict = check(m.start())
                if verdict:
                    return True
                if verdict is None and not self._final:  # at the end of input it never completes
                    undecided = min(undecided, m.start())
                    waiting = True
                    break
                m = pattern.search(buf, m.start() + 1, end)
        if not self._final:  # (a settled verdict is not remembered: more bytes may still come)
            self._scan = (at, self._consumed + undecided)
        return None if waiting else False

    def _hdlc_header_at(self, p: int) -> Optional[bool]:
        """A frame with information has a header checksum (HCS) to go by; one without has only its
        FCS, so it counts once it is complete and verified (``7E A0 07`` and two address bytes
        occur in data every few thousand bytes)."""
        buf = self._buf
        try:
            header = hdlc.parse_header(buf, p)
            if header is None:
                return None
            if header.has_info:
                return True
            if p + header.total > len(buf):
                return None
            hdlc.parse_frame(buf, p, header)
            return True
        except (FramingError, ChecksumError):
            return False

    def _mbus_telegram_at(self, p: int) -> Optional[bool]:
        buf = self._buf
        try:
            total = mbus.telegram_length(buf, p)
            if total is None or p + total > len(buf):
                return None
            mbus.parse_telegram(buf, p)
            return True
        except (FramingError, ChecksumError):
            return False

    # -------------------------------------------------------------- reassembly
    def _add_part(self, out: List[Item], data: bytes, raw: bytes) -> bool:
        if not self._parts:
            self.started += 1
        self._parts.append(data)
        self._raws.append(raw)
        self._size += len(data) + len(raw)
        if self._size > self.max_buffer:
            self._drop_partial(out, f"the segmented message grew beyond {self.max_buffer} bytes")
            return False
        return True

    def _drop_partial(self, out: List[Item], reason: str) -> None:
        if self._parts:
            out.append(IncompleteMessageError(
                f"incomplete segmented message dropped after {len(self._parts)} frame(s)", reason))
            # its remaining HDLC segments may still come: they are not a message of their own
            self._orphan = self._owner is not None and self._owner[0] == "hdlc"
        self._parts, self._raws, self._size, self._owner = [], [], 0, None
        self._next_ns = None

    def _report(self, out: List[Item], exc: DlmsError) -> None:
        exc.with_traceback(None)  # errors are kept by callers; their frames must not pin the buffer
        self._flush_noise(out)
        self._drop_partial(out, "a damaged frame arrived before the last segment")
        out.append(exc)


__all__ = ["Deframer", "RawApdu", "WRAPPERS", "Item"]
