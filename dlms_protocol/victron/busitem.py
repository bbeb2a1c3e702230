"""The ``com.victronenergy.BusItem`` interface, exported on dbus-fast's low-level API.

Why our own layer instead of dbus-fast's ``ServiceInterface``: Venus consumers call
``GetValue``/``SetValue`` *without* an interface name (velib's ``VeDbusItemImport``), ask the
root ``/`` and intermediate nodes (``/Ac``) for dict-valued ``GetValue``/``GetText``, and scan
services with ``GetItems``. One message handler that looks the path up in a dict answers all of
that with one object per service instead of one exported object per path, and lets us send one
``ItemsChanged`` per update batch, the signal every Victron consumer understands.

Behaviour follows velib (``vedbus.py``) where velib and aiovelib differ:

* an invalid value is ``GetValue() -> ai []`` and ``GetText() -> '---'``;
* ``/ProductId`` reads as hexadecimal text (``0xFFFF``);
* ``SetValue`` returns 0 (done or unchanged), 1 (not writeable / wrong type), 2 (refused by the
  owner's callback); an accepted write from the bus is announced with ``PropertiesChanged`` on the
  item's path, a batch from :meth:`BusItemService.update` with one ``ItemsChanged`` on ``/``;
* root ``GetValue``/``GetText`` return every value/text keyed by path relative to the node:
  ``v`` holding ``a{sv}`` and ``v`` holding ``a{ss}``, exactly what velib's ``VeDbusTreeExport``
  puts on the wire (its GetText returns a plain str dict, which dbus-python sends as ``a{ss}``).
"""
from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Set, Tuple

from dbus_fast import Message, MessageFlag, MessageType, Variant

from .wire import Entry, Shape, append_entry, changed_signal, finish_body, measurement_shape, measurement_shapes

LOG = logging.getLogger(__name__)

IFACE = "com.victronenergy.BusItem"
INTROSPECTABLE = "org.freedesktop.DBus.Introspectable"

SET_OK = 0
SET_NOT_ALLOWED = 1  # not writeable, or a value of the wrong type
SET_REFUSED = 2  # the owner's callback said no

_INT32 = (-(2 ** 31), 2 ** 31 - 1)
_INT64 = (-(2 ** 63), 2 ** 63 - 1)

_UNSET = object()
#: signals waiting for a dbus-daemon that reads nothing before the connection is given up (about
#: 2.5 minutes of pushes at 4 a second, 0.8 MB; a service under Venus OS has a 100 MB address cap)
MAX_BACKLOG = 600

#: Callback for writes from the bus: (path, new value) -> accept?
OnSet = Callable[[str, Any], bool]
TextFn = Callable[[Any], str]


#: what dbus-fast's ``_MessageWriter`` holds that ``_write_now`` uses; checked once per class
_WRITER_STATE = ("messages", "buf", "offset", "unix_fds", "fut", "sock", "loop", "fd", "negotiate_unix_fd",
                 "write_callback")
_WRITERS: Dict[type, bool] = {}


def _write_now(bus: Any, writer: Any, msg: Message) -> bool:
    """Write a signal straight to the bus socket while dbus-fast's writer has nothing pending;
    False to leave it to ``bus.send``.

    Why: ``bus.send`` makes a future nobody awaits for a signal, queues the bytes and pops them
    again before the one ``send`` system call: 30 to 40 us of a push's 250 us of D-Bus work under
    Venus OS's Python 3.8 and pure-Python dbus-fast, 10 to 15 us under 3.11. The order on the wire
    stays dbus-fast's: only an empty writer is bypassed, and what the socket does not take at once
    becomes the writer's unfinished buffer, which its own write callback finishes before anything
    queued later (dbus-fast 2.x to 5.x keep that state as ``buf``/``offset``; anything else about
    the writer leaves the message to it). A full socket takes 0 bytes (``service._WaitingSocket``,
    which every bus of the service writes through).
    """
    known = _WRITERS.get(type(writer))
    if known is None:  # (once per writer class: a dbus-fast whose writer keeps other state is left alone)
        known = _WRITERS[type(writer)] = all(hasattr(writer, name) for name in _WRITER_STATE)
    if not known or writer.buf is not None or msg.unix_fds or not getattr(bus, "unique_name", None):
        return False
    if not msg.serial:
        msg.serial = bus.next_serial()
    data = msg._marshall(writer.negotiate_unix_fd)
    try:
        sent = writer.sock.send(data)
    except OSError:
        return False  # nothing went out: dbus-fast's own write meets the error and ends the bus
    if sent < len(data):  # (the socket's buffer is full: the writer goes on when it takes more)
        writer.buf, writer.offset, writer.unix_fds, writer.fut = memoryview(data), sent, None, None
        writer.loop.add_writer(writer.fd, writer.write_callback)
    return True


def wrap(value: Any) -> Variant:
    """Python value -> D-Bus variant the way velib's ``wrap_dbus_value`` does (None = invalid)."""
    if value is None:
        return Variant("ai", [])
    if isinstance(value, bool):
        return Variant("b", value)
    if isinstance(value, int):
        if _INT32[0] <= value <= _INT32[1]:
            return Variant("i", value)
        if _INT64[0] <= value <= _INT64[1]:
            return Variant("x", value)
        return Variant("d", float(value))
    if isinstance(value, float):
        return Variant("d", value)
    if isinstance(value, Decimal):
        return Variant("d", float(value))
    if isinstance(value, str):
        # a D-Bus string cannot hold NUL (dbus-fast refuses the whole message, so one NUL-padded
        # meter text made the service's GetItems fail): the NULs are dropped
        return Variant("s", value.replace("\0", "") if "\0" in value else value)
    if isinstance(value, (list, tuple)):
        if not value:
            # velib: an empty list of *signed* ints means "invalid", so an empty list is 'au'
            return Variant("au", [])
        if all(isinstance(v, str) for v in value):
            return Variant("as", [v.replace("\0", "") for v in value])
        return Variant("av", [wrap(v) for v in value])
    if isinstance(value, dict):
        return Variant("a{sv}", {str(k): wrap(v) for k, v in value.items()})
    raise TypeError(f"cannot put a {type(value).__name__} on D-Bus")


def unwrap(value: Any) -> Any:
    """D-Bus variant (possibly nested) -> plain Python value; ``ai []`` -> None (invalid)."""
    if isinstance(value, Variant):
        if value.signature == "ai" and value.value == []:
            return None
        return unwrap(value.value)
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    return value


class Item:
    """One exported path: its value, how to print it, and whether the bus may write it."""

    __slots__ = ("path", "value", "writeable", "on_set", "text_fn", "valuetype", "description",
                 "_variant", "text", "_props", "fmt", "shapes")

    def __init__(self, path: str, value: Any = None, writeable: bool = False, on_set: Optional[OnSet] = None,
                 text: Optional[TextFn] = None, valuetype: Optional[type] = None, description: str = "",
                 fmt: Optional[str] = None) -> None:
        self.path = path
        #: a measurement's text format (``fmt % value`` for a float; what ``text`` gives for one):
        #: lets ``BusItemService.update`` set it without a call per path
        self.fmt = fmt
        #: with ``fmt``: its entry's shapes by text length, for ``update`` (None: not written there)
        self.shapes: Optional[Dict[int, Shape]] = measurement_shapes(path, fmt)
        self.writeable = writeable
        self.on_set = on_set
        self.text_fn = text
        self.valuetype = valuetype
        self.description = description
        self.value: Any = _UNSET
        self._variant: Optional[Variant] = None
        self.text = "---"
        self._props: Optional[Dict[str, Variant]] = None
        self.set(value)

    def set(self, value: Any) -> bool:
        """Store a value, refresh the cached variant/text; True when it changed."""
        if isinstance(value, Decimal):
            value = float(value)
        elif isinstance(value, str) and "\0" in value:
            value = value.replace("\0", "")  # (see wrap: a D-Bus string carries no NUL)
        if value == self.value and type(value) is type(self.value):
            return False
        self.value = value
        # a measurement (float) on every push goes on the wire without a Variant (wire.marshal_entries):
        # its Variant is made only when asked for; any other value is wrapped now (wrap refuses a type
        # D-Bus cannot carry here, not later in the bus thread)
        self._variant = None if type(value) is float else wrap(value)
        self._props = None
        if value is None:
            self.text = "---"
        elif self.text_fn is not None:
            try:
                self.text = self.text_fn(value)
            except (TypeError, ValueError):
                self.text = str(value)
        elif self.path == "/ProductId" and isinstance(value, int):
            self.text = "0x%X" % value
        elif isinstance(value, (list, tuple)):
            self.text = ", ".join(str(v) for v in value)
        else:
            self.text = str(value)
        return True

    @property
    def variant(self) -> Variant:
        """The value as D-Bus variant (velib's wrap_dbus_value)."""
        var = self._variant
        if var is None:
            var = self._variant = Variant("d", self.value, False)  # (a float: nothing to verify)
        return var

    @property
    def props(self) -> Dict[str, Variant]:
        """``{"Value": variant, "Text": text}``: the item in GetItems, ItemsChanged, PropertiesChanged."""
        props = self._props
        if props is None:
            props = self._props = {"Value": self.variant, "Text": Variant("s", self.text)}
        return props

    def entry(self) -> Entry:
        """(path, signature, value, text): the item as ``wire.marshal_entries`` writes it."""
        var = self._variant
        if var is None:
            return self.path, "d", self.value, self.text
        return self.path, var.signature, var.value, self.text


def _set_float(item: Item, value: float, fmt: str) -> bool:
    """A float into a path with a format: what ``BusItemService.update`` does inline for most
    paths (``Item.set``'s float case, its text from the format); True when it changed."""
    old = item.value
    if value == old and type(old) is float:
        return False
    item.value = value
    item._variant = item._props = None
    item.text = fmt % value
    return True


def _parents(path: str) -> Iterable[str]:
    """'/Ac/L1/Power' -> '/', '/Ac', '/Ac/L1'."""
    yield "/"
    parts = path.strip("/").split("/")
    for i in range(1, len(parts)):
        yield "/" + "/".join(parts[:i])


class BusItemService:
    """All paths of one Victron service, answering BusItem calls on one dbus-fast connection.

    Build the tree with :meth:`add_path`, hand the connection over with :meth:`attach`, then
    claim the name with :meth:`register` (last, so no consumer ever scans a half-built service).
    :meth:`update` changes many paths and emits one ``ItemsChanged``. Not thread-safe: use it
    from the connection's event loop only.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.items: Dict[str, Item] = {}
        self._nodes: Set[str] = {"/"}
        self.bus: Any = None
        self.registered = False

    # ------------------------------------------------------------------ building
    def add_path(self, path: str, value: Any = None, writeable: bool = False, on_set: Optional[OnSet] = None,
                 text: Optional[TextFn] = None, valuetype: Optional[type] = None, description: str = "",
                 fmt: Optional[str] = None) -> Item:
        if not path.startswith("/") or path == "/" or path.endswith("/"):
            raise ValueError(f"bad D-Bus object path {path!r}")
        if path in self._nodes:
            raise ValueError(f"{path} is already a node with children")
        item = Item(path, value, writeable, on_set, text, valuetype, description, fmt)
        self.items[path] = item
        self._nodes.update(_parents(path))
        if self.registered:
            self._emit_changed([item])
        return item

    def __contains__(self, path: str) -> bool:
        return path in self.items

    def __getitem__(self, path: str) -> Any:
        return self.items[path].value

    def attach(self, bus: Any) -> None:
        """Answer BusItem calls arriving on ``bus`` (a connected dbus-fast MessageBus)."""
        self.bus = bus
        bus.add_message_handler(self._handle)

    def detach(self) -> None:
        if self.bus is not None:
            try:
                self.bus.remove_message_handler(self._handle)
            except ValueError:
                pass
        self.bus = None
        self.registered = False

    async def register(self) -> None:
        """Claim the well-known name; raise RuntimeError if another process holds it."""
        from dbus_fast.constants import NameFlag, RequestNameReply

        reply = await self.bus.request_name(self.name, NameFlag.DO_NOT_QUEUE)
        if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
            raise RuntimeError(f"D-Bus name {self.name} is owned by another process")
        self.registered = True

    # ------------------------------------------------------------------- updates
    def update(self, changes: Mapping[str, Any]) -> int:
        """Set many paths; one ItemsChanged carries the ones that really changed. Returns that count.

        The signal's body is written here, entry by entry as the items change (a measurement with
        one ``pack`` of its shape, ``wire.measurement_shape``): a push's paths are walked once, not
        again by ``wire.marshal_entries``. Each entry is padded to 8 bytes, the last one's is cut."""
        changed: List[Item] = []
        text: str
        keep = changed.append
        items = self.items
        body = bytearray(8)
        pad = 0
        whole = True  # False once an entry is one that wire.py leaves to dbus-fast: then the whole body is
        for path, value in changes.items():
            item = items.get(path)
            if item is None:
                continue
            old = item.value
            shapes = item.shapes  # (set for a path with a format that wire.py writes)
            if shapes is not None and type(value) is float:
                # a measurement, most of every push: Item.set's float case and its entry, inline
                if value == old and type(old) is float:
                    continue
                item.value = value
                item._variant = item._props = None
                text = item.text = item.fmt % value  # type: ignore[operator,assignment]  # (shapes: fmt is set)
                keep(item)
                raw = text.encode()
                pack, head, mid, pad = shapes.get(len(raw)) or measurement_shape(shapes, path, raw)
                body += pack(head, value, mid, raw)
            elif type(value) is type(old) and value == old:
                continue  # what Item.set finds unchanged (a stored value is no Decimal, no str with a NUL)
            elif item.fmt is not None and type(value) is float:
                if _set_float(item, value, item.fmt):  # (a format wire.py leaves to dbus-fast)
                    keep(item)
                    whole = False
            elif item.set(value):
                keep(item)
                pad = append_entry(body, item.entry())
                if pad < 0:
                    whole = False
        if changed and self.registered:
            if whole:
                self._send(changed_signal([], lambda: {it.path: it.props for it in changed}, finish_body(body, pad)))
            else:
                self._emit_changed(changed)
        return len(changed)

    def set_one(self, path: str, value: Any) -> bool:
        """Set one path and announce it with PropertiesChanged (velib's single-value behaviour)."""
        item = self.items[path]
        if not item.set(value):
            return False
        if self.registered:
            self._emit_props(item)
        return True

    def _emit_changed(self, changed: List[Item]) -> None:
        self._send(changed_signal([item.entry() for item in changed], lambda: {it.path: it.props for it in changed}))

    def _emit_props(self, item: Item) -> None:
        self._send(Message.new_signal(item.path, IFACE, "PropertiesChanged", "a{sv}", [item.props]))

    def _send(self, msg: Message) -> None:
        bus = self.bus
        if bus is None or not bus.connected:
            return
        writer = getattr(bus, "_writer", None)
        queued = getattr(writer, "messages", ())
        if len(queued) >= MAX_BACKLOG:
            # dbus-daemon has read nothing for minutes: rather than hold every signal since (a
            # push's is about 1.3 kB, 4 a second), end the connection; the service registers
            # again when the bus reads again, with every value at once (service.MeterService._watch)
            LOG.warning("victron: D-Bus has taken none of the last %d signals of %s; dropping the connection",
                        len(queued), self.name)
            bus.disconnect()
            return
        if queued or not _write_now(bus, writer, msg):
            bus.send(msg)

    # ----------------------------------------------------------- incoming calls
    def _handle(self, msg: Message) -> Any:
        """dbus-fast message handler: a reply Message, True (handled, no reply), or None (not ours)."""
        if msg.message_type is not MessageType.METHOD_CALL:
            return None
        iface = msg.interface
        path = msg.path or ""
        if iface is not None and iface != IFACE:
            if iface == INTROSPECTABLE and msg.member == "Introspect" and (path in self.items or path in self._nodes):
                return self._reply(msg, "s", [self._introspect(path)])
            return None
        item = self.items.get(path)
        member = msg.member
        if item is not None:
            if member == "GetValue":
                return self._reply(msg, "v", [item.variant])
            if member == "GetText":
                return self._reply(msg, "s", [item.text])
            if member == "SetValue" and msg.signature == "v":
                return self._reply(msg, "i", [self._set_from_bus(item, msg.body[0])])
            if member == "GetDescription":
                return self._reply(msg, "s", [item.description or "No description given"])
            return None
        if path in self._nodes:
            if member == "GetItems" and path == "/":
                return self._reply(msg, "a{sa{sv}}", [{p: it.props for p, it in self.items.items()}])
            if member == "GetValue":
                return self._reply(msg, "v", [Variant("a{sv}", self._subtree(path, False))])
            if member == "GetText":
                return self._reply(msg, "v", [Variant("a{ss}", self._subtree(path, True))])
            if member == "SetValue":
                return self._reply(msg, "i", [SET_NOT_ALLOWED])
        return None

    @staticmethod
    def _reply(msg: Message, signature: str, body: List[Any]) -> Any:
        if msg.flags & MessageFlag.NO_REPLY_EXPECTED:
            return True
        return Message.new_method_return(msg, signature, body)

    def _subtree(self, node: str, texts: bool) -> Dict[str, Any]:
        prefix = "/" if node == "/" else node + "/"
        n = len(prefix)
        if texts:
            return {p[n:]: it.text for p, it in self.items.items() if p.startswith(prefix)}
        return {p[n:]: it.variant for p, it in self.items.items() if p.startswith(prefix)}

    def _set_from_bus(self, item: Item, raw: Any) -> int:
        if not item.writeable:
            return SET_NOT_ALLOWED
        value = unwrap(raw)
        if item.valuetype is not None and value is not None:
            if isinstance(value, (list, dict)):
                return SET_NOT_ALLOWED
            try:
                value = item.valuetype(value)
            except (TypeError, ValueError):
                return SET_NOT_ALLOWED
        if value == item.value:
            return SET_OK
        if item.on_set is not None:
            try:
                accepted = item.on_set(item.path, value)
            except Exception:  # a callback bug must not kill the bus connection
                LOG.exception("SetValue callback for %s failed", item.path)
                return SET_REFUSED
            if not accepted:
                return SET_REFUSED
        if item.set(value) and self.registered:
            self._emit_props(item)
        return SET_OK

    def _introspect(self, path: str) -> str:
        prefix = "/" if path == "/" else path + "/"
        children = sorted({p[len(prefix):].split("/", 1)[0] for p in list(self.items) + list(self._nodes)
                           if p.startswith(prefix) and p != path})
        methods = (
            '<method name="GetValue"><arg direction="out" type="v"/></method>'
            '<method name="GetText"><arg direction="out" type="%s"/></method>'
            '<method name="SetValue"><arg direction="in" type="v"/><arg direction="out" type="i"/></method>'
            % ("s" if path in self.items else "v")
        )
        if path == "/":
            methods += ('<method name="GetItems"><arg direction="out" type="a{sa{sv}}"/></method>'
                        '<signal name="ItemsChanged"><arg type="a{sa{sv}}"/></signal>')
        if path in self.items:
            methods += '<signal name="PropertiesChanged"><arg type="a{sv}"/></signal>'
        nodes = "".join(f'<node name="{c}"/>' for c in children)
        return (
            '<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n'
            ' "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n'
            f'<node><interface name="{INTROSPECTABLE}"><method name="Introspect">'
            '<arg direction="out" type="s"/></method></interface>'
            f'<interface name="{IFACE}">{methods}</interface>{nodes}</node>'
        )

    def snapshot(self) -> Dict[str, Tuple[Any, str]]:
        """{path: (value, text)} for diagnostics (web interface, --check)."""
        return {p: (it.value, it.text) for p, it in self.items.items()}


__all__ = ["IFACE", "BusItemService", "Item", "wrap", "unwrap", "SET_OK", "SET_NOT_ALLOWED", "SET_REFUSED"]
