"""``ItemsChanged`` put on the wire without dbus-fast's generic marshaller.

Why: the one ``ItemsChanged`` of a push (``a{sa{sv}}``, about 20 changed paths with their value
and text) was the largest part of the D-Bus thread's work: two ``Variant`` objects per path and
the generic marshaller walking them (about 0.24 ms per push on this machine with pure-Python
dbus-fast, as on Venus OS; about half the thread's instructions with the compiled one). The
signal's layout is fixed, so its bytes are written here directly with ``struct``: the header
fields (path ``/``, interface, member, signature) are marshalled once by dbus-fast itself and
reused; a measurement (``d``) is written from its path's bytes, prepared once, its value and its
text (``marshal_entries``, no Variant made at all); the other variant types ``busitem.wrap``
makes (``i``, ``x``, ``s``, ``b``, the empty ``ai``/``au`` of an invalid value) are written one
by one. Anything else (a list, a dict, a NUL in a text) is left to dbus-fast's own marshaller.
The bytes are the ones dbus-fast writes (tests/test_victron_busitem.py compares them for random
bodies).
"""
from __future__ import annotations

import struct
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from dbus_fast import Message, MessageType

IFACE = "com.victronenergy.BusItem"
SIGNATURE = "a{sa{sv}}"

_U32 = struct.Struct("<I")
_HEAD = struct.Struct("<II")  # body length, serial
_ZEROS = b"\0" * 8


def _pad(buf: bytearray, align: int) -> None:
    rest = len(buf) % align
    if rest:
        buf += _ZEROS[:align - rest]


class _LeaveIt(Exception):
    """A value dbus-fast must judge itself (it refuses a NUL in a string, for one)."""


def _string(buf: bytearray, text: str) -> None:
    if "\0" in text:
        raise _LeaveIt
    _pad(buf, 4)
    try:
        raw = text.encode("utf-8")
    except UnicodeError:
        raise _LeaveIt from None
    buf += _U32.pack(len(raw))
    buf += raw
    buf += b"\0"


#: fixed-size variant types: signature -> (alignment, struct of the value)
_FIXED = {"d": (8, struct.Struct("<d")), "i": (4, struct.Struct("<i")), "x": (8, struct.Struct("<q")),
          "b": (4, _U32)}


def _variant(buf: bytearray, signature: str, value: Any) -> bool:
    """Append one variant of a simple type; False for a type left to dbus-fast."""
    fixed = _FIXED.get(signature)
    if fixed is not None:
        buf += b"\x01" + signature.encode("ascii") + b"\0"
        _pad(buf, fixed[0])
        buf += fixed[1].pack((1 if value else 0) if signature == "b" else value)
    elif signature == "s":
        buf += b"\x01s\0"
        _string(buf, value)
    elif signature in ("ai", "au") and not value:
        buf += b"\x02" + signature.encode("ascii") + b"\0"
        _pad(buf, 4)
        buf += b"\0\0\0\0"  # an empty array of 4-byte elements: no padding after the length
    else:
        return False
    return True


def _entry(buf: bytearray, path: str, props: Iterable[Tuple[str, str, Any]]) -> bool:
    """One ``{path: a{sv}}`` entry at an 8-aligned end of ``buf``; False for a type left to dbus-fast."""
    _string(buf, path)
    _pad(buf, 4)
    at = len(buf)
    buf += b"\0\0\0\0"
    _pad(buf, 8)
    start = len(buf)
    for name, signature, value in props:
        _pad(buf, 8)
        _string(buf, name)
        if not _variant(buf, signature, value):
            return False
    _U32.pack_into(buf, at, len(buf) - start)
    return True


#: one item of an ItemsChanged: (path, value signature, value, text)
Entry = Tuple[str, str, Any, str]
#: the fixed parts of a measurement's entry: the "Value" key with the variant signature ``d``
#: and the padding to its 8-aligned double, then the "Text" key with ``s`` (4-aligned after it)
_VALUE_D = b"\x05\0\0\0Value\0\x01d\0\0\0\0"
_TEXT_S = b"\x04\0\0\0Text\0\x01s\0"
#: per path, a struct that writes a measurement's dict entry up to its text: the path, its
#: ``a{sv}`` length, the value and the text's length (an entry starts 8-aligned, so everything
#: else in it is the same bytes in every signal)
_MEASUREMENTS: Dict[str, Tuple[struct.Struct, bytes, bytes]] = {}


def _measurement(path: str) -> Tuple[struct.Struct, bytes, bytes]:
    made = _MEASUREMENTS.get(path)
    if made is None:
        buf = bytearray()
        _string(buf, path)
        _pad(buf, 4)
        before = bytes(buf)
        buf += b"\0\0\0\0"
        _pad(buf, 8)
        after = bytes(buf[len(before) + 4:]) + _VALUE_D
        made = (struct.Struct(f"<{len(before)}sI{len(after)}sd{len(_TEXT_S)}sI"), before, after)
        if len(_MEASUREMENTS) < 1024:
            _MEASUREMENTS[path] = made
    return made


#: a measurement's whole entry for a text of a given length: (the ``pack`` of its struct, its fixed
#: bytes before the value, after it, the zeros it ends with to the next 8-aligned entry)
Shape = Tuple[Callable[..., bytes], bytes, bytes, int]


def measurement_shapes(path: str, fmt: Optional[str]) -> Optional[Dict[int, Shape]]:
    """An empty cache of ``path``'s entry shapes by text length (``measurement_shape``) when a float
    formatted with ``fmt`` always goes on the wire here; None when ``marshal_entries`` would leave
    it to dbus-fast (a NUL or an unencodable character in the path or format) or there is no format.

    Why: ``BusItemService.update`` writes a push's measurements right where it formats their texts,
    with one ``pack`` each, instead of a list of entries walked a second time. A float's ``%``
    formatting adds ASCII only, so the format alone says whether every text of it can be written."""
    if fmt is None or "\0" in fmt or "\0" in path:
        return None
    try:
        fmt.encode("utf-8")
        path.encode("utf-8")
    except UnicodeError:
        return None
    return {}


def measurement_shape(shapes: Dict[int, Shape], path: str, raw: bytes) -> Shape:
    """The shape of ``path``'s entry with the text ``raw`` (UTF-8), kept in ``shapes`` for every text
    of its length: the bytes of ``marshal_entries`` (path, a{sv} length, "Value" d, "Text" s and
    length | the text, its NUL), padded to 8 bytes."""
    n = len(raw)
    layout, before, after = _MEASUREMENTS.get(path) or _measurement(path)
    head = before + _U32.pack(41 + n) + after
    mid = _TEXT_S + _U32.pack(n)
    pad = -(len(head) + 8 + len(mid) + n + 1) & 7
    made = shapes[n] = (struct.Struct(f"<{len(head)}sd{len(mid)}s{n + 1 + pad}s").pack, head, mid, pad)
    return made


def append_entry(buf: bytearray, entry: Entry) -> int:
    """Append one entry of any type to a body being built (8-aligned end) and pad it to 8 bytes:
    the zeros added, or -1 for a value this module leaves to dbus-fast (as ``marshal_entries``)."""
    one = marshal_entries((entry,))
    if one is None:
        return -1
    buf += memoryview(one)[8:]
    pad = -len(buf) & 7
    buf += _ZEROS[:pad]
    return pad


def finish_body(buf: bytearray, pad: int) -> bytearray:
    """A body built entry by entry, each padded to 8 bytes: without the last entry's padding, and
    with the array's length in front (what ``marshal_entries`` gives for the same entries)."""
    if pad:
        del buf[-pad:]
    _U32.pack_into(buf, 0, len(buf) - 8)
    return buf


def marshal_entries(entries: Iterable[Entry]) -> Optional[bytearray]:
    """The body of an ItemsChanged (``a{sa{sv}}``) from (path, signature, value, text) per item,
    as dbus-fast writes it; None when a value is one this module leaves to dbus-fast."""
    try:
        buf = bytearray(8)  # array length (filled in below) and the padding to the first entry
        for path, signature, value, text in entries:
            rest = len(buf) & 7
            if rest:
                buf += _ZEROS[rest:]  # to the 8-aligned start of the entry
            if signature == "d":
                if "\0" in text:
                    raise _LeaveIt
                raw = text.encode("utf-8")
                layout, before, after = _MEASUREMENTS.get(path) or _measurement(path)
                # the a{sv} length: "Value" entry 16 + 8, "Text" entry 12 + 4 + the text + its NUL
                buf += layout.pack(before, 41 + len(raw), after, value, _TEXT_S, len(raw))
                buf += raw
                buf += b"\0"
            elif not _entry(buf, path, (("Value", signature, value), ("Text", "s", text))):
                return None
        _U32.pack_into(buf, 0, len(buf) - 8)
        return buf
    except (_LeaveIt, UnicodeError, TypeError, struct.error):  # dbus-fast raises its own errors for these
        return None


class _Header:
    """The fixed part of the ItemsChanged header, marshalled once by dbus-fast itself."""

    fields: Optional[bytes] = None

    @classmethod
    def build(cls, body_len: int, serial: int) -> bytes:
        fields = cls.fields
        if fields is None:
            probe = Message(message_type=MessageType.SIGNAL, path="/", interface=IFACE, member="ItemsChanged",
                            signature=SIGNATURE, body=[{}], serial=1)
            whole = bytes(probe._marshall(False))
            body = len(whole) - _U32.unpack_from(whole, 4)[0]
            fields = cls.fields = whole[12:body]  # after endianness, type, flags, version, length, serial
        return whole_head(body_len, serial) + fields


def whole_head(body_len: int, serial: int) -> bytes:
    """Endianness 'l', type 4 (signal), no flags, protocol 1, then body length and serial."""
    return b"l\x04\x00\x01" + _HEAD.pack(body_len, serial)


class ItemsChanged(Message):  # type: ignore[misc]
    """dbus-fast's signal with a faster ``_marshall`` (module docstring): made from entries by
    ``changed_signal``; its body as Variants is built only when dbus-fast has to marshal it."""

    entries: List[Entry] = []
    props_of: Optional[Callable[[], Dict[str, Dict[str, Any]]]] = None
    #: the body already written from the entries (``BusItemService.update``), else None
    ready: Optional[bytearray] = None

    def _marshall(self, negotiate_unix_fd: bool) -> bytearray:
        body = None if self.flags else self.ready if self.ready is not None else marshal_entries(self.entries)
        if body is None:
            if self.props_of is not None:
                self.body = [self.props_of()]
            return super()._marshall(negotiate_unix_fd)
        return bytearray(_Header.build(len(body), self.serial)) + body


def changed_signal(entries: List[Entry], props_of: Callable[[], Dict[str, Dict[str, Any]]],
                   ready: Optional[bytearray] = None) -> Message:
    """The ItemsChanged signal of ``entries`` (or of the body ``ready`` written from them);
    ``props_of`` gives the same as Variants, for the rare body this module leaves to dbus-fast."""
    msg = ItemsChanged(message_type=MessageType.SIGNAL, path="/", interface=IFACE, member="ItemsChanged",
                       signature=SIGNATURE, body=[{}], validate=False)
    msg.entries = entries
    msg.props_of = props_of
    msg.ready = ready
    return msg


__all__ = ["marshal_entries", "changed_signal", "ItemsChanged", "Entry", "Shape", "measurement_shapes",
           "measurement_shape", "append_entry", "finish_body"]
