"""``ItemsChanged`` put on the wire without dbus-fast's generic marshaller, where that one is slow.

Why: on Venus OS dbus-fast is pure Python (no compiled extension in the image), and marshalling
the one ``ItemsChanged`` of a push (``a{sa{sv}}``, about 16 changed paths with their value and
text) was the largest part of the D-Bus thread's work (about 0.24 ms on this machine, so several
ms on a GX). The signal's layout is fixed, so its bytes are written here directly with ``struct``:
the header fields (path ``/``, interface, member, signature) are marshalled once by dbus-fast
itself and reused, the body holds only the variant types ``busitem.wrap`` makes for
measurements (``d``, ``i``, ``x``, ``s``, ``b``, the empty ``ai``/``au`` of an invalid value).
Anything else (a list, a dict) is left to dbus-fast's own marshaller. The bytes are the ones
dbus-fast writes (tests/test_victron_busitem.py compares them for random bodies); where dbus-fast
is compiled, its marshaller is faster than this module and is used as it is.
"""
from __future__ import annotations

import struct
from typing import Any, Dict, Optional

from dbus_fast import Message, MessageType

IFACE = "com.victronenergy.BusItem"
SIGNATURE = "a{sa{sv}}"

_U32 = struct.Struct("<I")
_HEAD = struct.Struct("<II")  # body length, serial
_ZEROS = b"\0" * 8


def dbus_fast_is_compiled() -> bool:
    """True when dbus-fast's marshaller is a compiled extension (then it is the faster one)."""
    import importlib

    try:
        module = importlib.import_module("dbus_fast._private.marshaller")
    except ImportError:  # another layout: take dbus-fast as it is
        return True
    return not str(getattr(module, "__file__", "")).endswith(".py")


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


def marshal_items(items: Dict[str, Dict[str, Any]]) -> Optional[bytearray]:
    """The body of an ItemsChanged (``a{sa{sv}}``) as dbus-fast writes it, or None when a value
    has a type this module leaves to dbus-fast. Offsets are body-relative: the header ends aligned
    to 8, so every alignment is the same as in the whole message."""
    try:
        return _items(items)
    except (_LeaveIt, TypeError, struct.error):  # dbus-fast's marshaller raises its own errors for these
        return None


def _items(items: Dict[str, Dict[str, Any]]) -> Optional[bytearray]:
    buf = bytearray(8)  # array length (filled in below) and the padding to the first 8-aligned entry
    for path, props in items.items():
        _pad(buf, 8)
        _string(buf, path)
        _pad(buf, 4)
        at = len(buf)
        buf += b"\0\0\0\0"
        _pad(buf, 8)
        start = len(buf)
        for name, var in props.items():
            _pad(buf, 8)
            _string(buf, name)
            if not _variant(buf, var.signature, var.value):
                return None
        _U32.pack_into(buf, at, len(buf) - start)
    _U32.pack_into(buf, 0, len(buf) - 8)
    return buf


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
    """dbus-fast's signal with a faster ``_marshall`` for the simple bodies (module docstring)."""

    def _marshall(self, negotiate_unix_fd: bool) -> bytearray:
        body = marshal_items(self.body[0]) if not self.flags else None
        if body is None:
            return super()._marshall(negotiate_unix_fd)
        return bytearray(_Header.build(len(body), self.serial)) + body


def items_changed(items: Dict[str, Dict[str, Any]], fast: bool) -> Message:
    """The ItemsChanged signal for ``items``: through this module's marshalling when ``fast``."""
    if fast:
        return ItemsChanged(message_type=MessageType.SIGNAL, path="/", interface=IFACE, member="ItemsChanged",
                            signature=SIGNATURE, body=[items])
    return Message.new_signal("/", IFACE, "ItemsChanged", SIGNATURE, [items])


__all__ = ["marshal_items", "items_changed", "ItemsChanged", "dbus_fast_is_compiled"]
