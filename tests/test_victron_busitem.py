"""The BusItem export layer against a real dbus-daemon on a private bus."""
from __future__ import annotations

from decimal import Decimal
from typing import Any, Iterator, List, Tuple

import pytest
from dbus_fast import BusType, Message, Variant
from dbus_fast.aio import MessageBus
from hypothesis import given, settings
from hypothesis import strategies as st

from dbus_fixtures import BUSITEM, DbusDaemon, LoopThread, VenusClient, close_bus
from dlms_protocol.victron import busitem, wire
from dlms_protocol.victron.busitem import BusItemService, unwrap, wrap


class Exported:
    """A BusItemService on its own connection and loop thread."""

    def __init__(self, address: str, name: str) -> None:
        self.lt = LoopThread("exporter")
        self.svc = BusItemService(name)
        self.refused: List[Tuple[str, Any]] = []
        self.bus = self.lt.run(self._connect(address))

    @staticmethod
    async def _connect(address: str) -> MessageBus:
        return await MessageBus(bus_address=address, bus_type=BusType.SESSION).connect()

    def build(self) -> None:
        def refuse_negative(path: str, value: Any) -> bool:
            if value < 0:
                self.refused.append((path, value))
                return False
            return True

        s = self.svc
        s.add_path("/DeviceInstance", 41)
        s.add_path("/ProductId", 0xFFFF)
        s.add_path("/ProductName", "Test meter")
        s.add_path("/Ac/Power", 1234.5, text=lambda v: "%.0f W" % v)
        s.add_path("/Ac/L1/Power", -12.0, text=lambda v: "%.0f W" % v)
        s.add_path("/Ac/L1/Voltage", None)
        s.add_path("/CustomName", "", writeable=True, valuetype=str)
        s.add_path("/Position", 0, writeable=True, valuetype=int, on_set=refuse_negative)
        s.add_path("/AllowedRoles", ["grid", "pvinverter"])
        s.add_path("/Big", 2 ** 40)

    def start(self) -> None:
        async def go() -> None:
            self.svc.attach(self.bus)
            await self.svc.register()
        self.lt.run(go())

    def update(self, changes: Any) -> int:
        async def go() -> int:
            return self.svc.update(changes)
        return self.lt.run(go())

    def stop(self) -> None:
        self.lt.run(close_bus(self.bus))
        self.lt.close()


@pytest.fixture
def exported(daemon: DbusDaemon) -> Iterator[Tuple[Exported, VenusClient, str]]:
    name = "com.victronenergy.grid.test_busitem"
    exp = Exported(daemon.address, name)
    exp.build()
    client = VenusClient(daemon.address)
    exp.start()
    client.wait_for(lambda c: name in c.cache, 20)
    yield exp, client, name
    exp.stop()
    client.stop()


def test_wrap_follows_velib_types() -> None:
    assert (wrap(None).signature, wrap(None).value) == ("ai", [])
    assert wrap(5).signature == "i" and wrap(2 ** 40).signature == "x"
    assert wrap(1.5).signature == "d" and wrap("x").signature == "s"
    assert wrap(["a", "b"]).signature == "as" and wrap([]).signature == "au"
    assert unwrap(Variant("ai", [])) is None and unwrap(Variant("d", 2.5)) == 2.5


def test_scan_getitems_values_and_texts(exported: Tuple[Exported, VenusClient, str]) -> None:
    _exp, client, name = exported
    items = client.get_items(name)
    assert items["/DeviceInstance"] == {"Value": 41, "Text": "41"}
    assert items["/ProductId"]["Text"] == "0xFFFF"
    assert items["/Ac/Power"]["Value"] == 1234.5 and items["/Ac/Power"]["Text"] in ("1234 W", "1235 W")
    assert items["/Ac/L1/Voltage"] == {"Value": None, "Text": "---"}
    assert items["/AllowedRoles"]["Value"] == ["grid", "pvinverter"]
    assert items["/Big"]["Value"] == 2 ** 40


def test_per_path_calls_with_and_without_interface(exported: Tuple[Exported, VenusClient, str]) -> None:
    _exp, client, name = exported
    for iface in (BUSITEM, None):  # velib's VeDbusItemImport calls without an interface name
        assert client.get_value(name, "/Ac/L1/Power", iface=iface) == -12.0
        raw = client.get_raw(name, "/Ac/L1/Voltage", iface=iface)
        assert (raw.signature, raw.value) == ("ai", [])
    assert client.get_text(name, "/Ac/L1/Power") == "-12 W"
    assert client.get_text(name, "/Ac/L1/Voltage") == "---"
    with pytest.raises(RuntimeError, match="UnknownMethod|UnknownObject"):
        client.get_value(name, "/No/Such/Path")


def test_root_and_subtree_getvalue_return_dicts(exported: Tuple[Exported, VenusClient, str]) -> None:
    _exp, client, name = exported
    root = client.call(name, "/", "GetValue")[0]
    assert root.signature == "a{sv}"
    values = unwrap(root)
    assert values["Ac/Power"] == 1234.5 and values["DeviceInstance"] == 41 and values["Ac/L1/Voltage"] is None
    sub = unwrap(client.call(name, "/Ac", "GetValue")[0])
    assert set(sub) == {"Power", "L1/Power", "L1/Voltage"}
    texts = unwrap(client.call(name, "/Ac/L1", "GetText")[0])
    assert texts == {"Power": "-12 W", "Voltage": "---"}
    # velib's VeDbusTreeExport.GetText returns a plain {str: str} for out_signature 'v', which
    # dbus-python marshals as a variant holding a{ss} (checked against velib 588697e on
    # dbus-python 1.3.2: '/' and '/Ac/L1' both answer v -> a{ss}); the values are not variants
    for node in ("/", "/Ac/L1"):
        raw = client.call(name, node, "GetText")[0]
        assert raw.signature == "a{ss}" and all(isinstance(v, str) for v in raw.value.values())
    assert unwrap(client.call(name, "/", "GetText")[0])["DeviceInstance"] == "41"
    introspection = client.call(name, "/Ac", "Introspect", iface="org.freedesktop.DBus.Introspectable")[0]
    assert '<node name="L1"/>' in introspection and '<node name="Power"/>' in introspection


def test_setvalue_codes_and_propertieschanged(exported: Tuple[Exported, VenusClient, str]) -> None:
    exp, client, name = exported
    client.clear_events()
    assert client.set_value(name, "/Ac/Power", Variant("d", 1.0)) == 1  # not writeable
    assert client.set_value(name, "/Position", Variant("s", "abc")) == 1  # wrong type
    assert client.set_value(name, "/Position", Variant("i", -1)) == 2  # refused by the owner
    assert exp.refused == [("/Position", -1)]
    assert client.set_value(name, "/Position", Variant("i", 2), iface=None) == 0
    assert client.set_value(name, "/CustomName", Variant("s", "Hausanschluss")) == 0
    client.wait_for(lambda c: c.value(name, "/CustomName") == "Hausanschluss")
    assert client.get_value(name, "/Position") == 2
    kinds = {(e[2], tuple(e[3])) for e in client.events}
    assert ("PropertiesChanged", ("/Position",)) in kinds
    assert ("PropertiesChanged", ("/CustomName",)) in kinds
    assert client.set_value(name, "/Position", Variant("i", 2)) == 0  # unchanged: still ok


def test_one_itemschanged_per_batch_with_only_changed_paths(exported: Tuple[Exported, VenusClient, str]) -> None:
    exp, client, name = exported
    client.clear_events()
    assert exp.update({"/Ac/Power": -300.0, "/Ac/L1/Power": -12.0, "/Ac/L1/Voltage": 231.0, "/Nope": 1}) == 2
    client.wait_for(lambda c: c.value(name, "/Ac/Power") == -300.0)
    assert exp.update({"/Ac/Power": -300.0}) == 0  # nothing changed: no signal
    assert exp.update({"/Ac/L1/Voltage": None}) == 1  # invalidation is a change
    client.wait_for(lambda c: len(c.events) >= 2)
    assert [(e[2], sorted(e[3])) for e in client.events] == [
        ("ItemsChanged", ["/Ac/L1/Voltage", "/Ac/Power"]),
        ("ItemsChanged", ["/Ac/L1/Voltage"]),
    ]
    assert client.value(name, "/Ac/L1/Voltage") is None


def test_name_is_claimed_only_by_register(daemon: DbusDaemon) -> None:
    client = VenusClient(daemon.address)
    exp = Exported(daemon.address, "com.victronenergy.grid.test_late")
    try:
        exp.build()
        exp.svc.attach(exp.bus)
        owner = client.call("org.freedesktop.DBus", "/org/freedesktop/DBus", "NameHasOwner", "s",
                            ["com.victronenergy.grid.test_late"], iface="org.freedesktop.DBus")[0]
        assert owner is False
        exp.lt.run(exp.svc.register())
        client.wait_for(lambda c: "com.victronenergy.grid.test_late" in c.cache)
        # the first scan already sees every path with its value
        assert client.value("com.victronenergy.grid.test_late", "/Ac/Power") == 1234.5
        second = Exported(daemon.address, "com.victronenergy.grid.test_late")
        second.svc.attach(second.bus)
        with pytest.raises(RuntimeError, match="owned by another process"):
            second.lt.run(second.svc.register())
        second.stop()
    finally:
        exp.stop()
        client.stop()


def test_no_reply_expected_calls_are_answered_silently(exported: Tuple[Exported, VenusClient, str]) -> None:
    exp, client, name = exported

    async def go() -> None:
        from dbus_fast import MessageFlag
        msg = Message(destination=name, path="/CustomName", interface=BUSITEM, member="SetValue",
                      signature="v", body=[Variant("s", "quiet")], flags=MessageFlag.NO_REPLY_EXPECTED)
        await client.bus.send(msg)

    client.lt.run(go())
    client.wait_for(lambda c: c.value(name, "/CustomName") == "quiet")


# ------------------------------------------------------------------ ItemsChanged marshalled by wire.py
_values = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False), st.integers(-2 ** 63, 2 ** 63 - 1),
                    st.text(max_size=12), st.lists(st.text(max_size=3), max_size=2),
                    st.lists(st.integers(0, 9), max_size=2))
_paths = st.text(alphabet="ACLPVaceloprtw/123", min_size=1, max_size=14).map(lambda t: "/" + t.strip("/"))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_paths, st.tuples(_values, st.text(max_size=10)), max_size=24), st.integers(1, 2 ** 32 - 1))
def test_itemschanged_from_entries_is_dbus_fasts(items: Any, serial: int) -> None:
    """The signal the service sends (from each item's path, signature, value and text, with no
    Variant made) is byte for byte dbus-fast's; a body it leaves to dbus-fast (a list, a NUL in a
    text) is marshalled by dbus-fast from the Variants, with dbus-fast's own error where it fails."""
    made = {p: busitem.Item(p, v, text=lambda _v, t=t: t) for p, (v, t) in items.items()}
    body = {p: {"Value": wrap(v), "Text": Variant("s", made[p].text)} for p, (v, _t) in items.items()}
    ours = wire.changed_signal([it.entry() for it in made.values()], lambda: {p: it.props for p, it in made.items()})
    ref = Message.new_signal("/", wire.IFACE, "ItemsChanged", "a{sa{sv}}", [body])
    ours.serial = ref.serial = serial
    try:
        expected = bytes(ref._marshall(False))
    except Exception as exc:
        with pytest.raises(type(exc)):
            ours._marshall(False)
        return
    assert bytes(ours._marshall(False)) == expected


class _Sent:
    connected = True

    def __init__(self) -> None:
        self.sent: List[bytes] = []

    def send(self, msg: Message) -> None:
        msg.serial = 7
        self.sent.append(bytes(msg._marshall(False)))


_formats = st.sampled_from(["%.0f", "%.1f", "%.2f", "%.3f", "%.0f W", "%.2f kWh"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_formats, st.lists(st.one_of(st.floats(), st.none(), st.integers(-5, 5),
                                                       st.text(max_size=4)), min_size=1, max_size=4)),
                min_size=1, max_size=8))
def test_update_with_a_format_is_update_with_its_text_function(paths: Any) -> None:
    """``update`` sets a float into a path with ``fmt`` inline: every value, text, signal byte and
    changed count is the one the text function's path (``Item.set``) gives, NaN and types included."""
    fast, slow = BusItemService("com.victronenergy.grid.a"), BusItemService("com.victronenergy.grid.a")
    for i, (fmt, _values) in enumerate(paths):
        def text(v: Any, fmt: str = fmt) -> str:  # (what mapping.PathSpec.text does with a format)
            return fmt % v if isinstance(v, (int, float)) else str(v)
        fast.add_path(f"/P{i}", None, text=text, fmt=fmt)
        slow.add_path(f"/P{i}", None, text=text)
    for svc in (fast, slow):
        svc.bus, svc.registered = _Sent(), True
    for step in range(max(len(v) for _f, v in paths)):
        changes = {f"/P{i}": v[step] for i, (_f, v) in enumerate(paths) if step < len(v)}
        assert fast.update(changes) == slow.update(changes)
        for path in changes:
            a, b = fast.items[path], slow.items[path]
            assert (repr(a.value), type(a.value), a.text, a.entry()[:2]) == (repr(b.value), type(b.value), b.text,
                                                                            b.entry()[:2])
    assert fast.bus.sent == slow.bus.sent


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([None, "%.0f W", "%.2f kWh", "%.3f", "x\0%.1f", "%.1f \udc80", "%.1f °C"]),
                          st.lists(st.one_of(st.floats(), st.none(), st.integers(-5, 2 ** 40), st.text(max_size=4),
                                             st.sampled_from(["a\0", "a", 1.5, Decimal("1.5"), Decimal("2"), 2]),
                                             st.lists(st.integers(0, 9), max_size=2)), min_size=1, max_size=3)),
                min_size=1, max_size=8),
       st.sampled_from(["/P", "/Ac/L1/Energy/Forward", "/\udc80", "/N\0"]))
def test_update_writes_dbus_fasts_itemschanged(paths: Any, stem: str) -> None:
    """The body ``update`` writes while it sets the items (measurement shapes, other entries, each
    padded to 8 bytes) is byte for byte dbus-fast's signal of the changed items' Variants; a body
    left to dbus-fast fails where dbus-fast's own fails."""
    svc = BusItemService("com.victronenergy.grid.a")
    shadow = {}  # the same items, set one by one with Item.set: which of them change
    for i, (fmt, _values) in enumerate(paths):
        def text(v: Any, fmt: Any = fmt) -> str:
            return fmt % v if fmt is not None and isinstance(v, (int, float)) else str(v)
        svc.add_path(f"{stem}{i}", None, text=text, fmt=fmt)
        shadow[f"{stem}{i}"] = busitem.Item(f"{stem}{i}", None, text=text)
    svc.bus, svc.registered = _Sent(), True
    for step in range(max(len(v) for _f, v in paths)):
        changes = {f"{stem}{i}": v[step] for i, (_f, v) in enumerate(paths) if step < len(v)}
        sent: List[Message] = []
        svc._send = sent.append  # type: ignore[method-assign]
        n = svc.update(changes)
        assert n == len([p for p, v in changes.items() if shadow[p].set(v)])
        assert all(repr((it.value, type(it.value), it.text)) == repr((shadow[p].value, type(shadow[p].value),
                                                                      shadow[p].text)) for p, it in svc.items.items())
        assert len(sent) == (1 if n else 0)
        if not sent:
            continue
        props = sent[0].props_of()  # (the changed items, in the order of the changes)
        assert len(props) == n and list(props) == [p for p in changes if p in props]
        ref = Message.new_signal("/", wire.IFACE, "ItemsChanged", "a{sa{sv}}", [props])
        sent[0].serial = ref.serial = 9
        try:
            expected = bytes(ref._marshall(False))
        except Exception as exc:
            with pytest.raises(type(exc)):
                sent[0]._marshall(False)
            continue
        assert bytes(sent[0]._marshall(False)) == expected


def test_fast_itemschanged_reaches_a_venus_client(exported: Tuple[Exported, VenusClient, str]) -> None:
    """On the real bus: the wire.py signal is understood like dbus-fast's."""
    exp, client, name = exported
    client.clear_events()
    assert exp.update({"/Ac/Power": -301.5, "/Ac/L1/Voltage": 231.25, "/Big": 2 ** 41, "/ProductName": "Zähler"}) == 4
    client.wait_for(lambda c: c.value(name, "/ProductName") == "Zähler")
    assert exp.update({"/Ac/L1/Voltage": None, "/Position": 2}) == 2
    client.wait_for(lambda c: len(c.events) >= 2)
    assert [(e[2], sorted(e[3])) for e in client.events] == [
        ("ItemsChanged", ["/Ac/L1/Voltage", "/Ac/Power", "/Big", "/ProductName"]),
        ("ItemsChanged", ["/Ac/L1/Voltage", "/Position"]),
    ]
    assert (client.value(name, "/Ac/Power"), client.value(name, "/Big"), client.value(name, "/Position")) == \
        (-301.5, 2 ** 41, 2)
    assert client.value(name, "/Ac/L1/Voltage") is None


@pytest.mark.parametrize("paths", [20, 400])  # signals of about 1.3 kB, and larger than the socket buffer
def test_signals_written_past_dbus_fast_keep_their_bytes_and_order_on_a_full_socket(
        paths: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A signal goes straight to the socket while dbus-fast's writer is idle (busitem._write_now).
    When the socket takes only part of it (dbus-daemon reads nothing for a while), dbus-fast's own
    writer must finish exactly that rest before the signals queued after it: on the wire every
    signal whole, in the order sent, with serials counting up. (dbus-fast's real writer on a
    socketpair with small buffers.)"""
    import asyncio
    import socket
    from types import SimpleNamespace

    from dbus_fast.aio import message_bus

    from dlms_protocol.victron.service import _WaitingSocket

    sent: List[Message] = []
    made = busitem.changed_signal

    def recording(*args: Any) -> Message:
        msg = made(*args)
        sent.append(msg)
        return msg

    monkeypatch.setattr(busitem, "changed_signal", recording)
    loop = asyncio.new_event_loop()
    ours, theirs = socket.socketpair()
    try:
        for sock, opt in ((ours, socket.SO_SNDBUF), (theirs, socket.SO_RCVBUF)):
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, opt, 4096)
        serials = iter(range(1, 10 ** 6))
        bus = SimpleNamespace(_negotiate_unix_fd=False, _sock=ours, _loop=loop, _fd=ours.fileno(), unique_name=":1.7",
                              connected=True, _user_disconnect=False, next_serial=lambda: next(serials))
        bus._writer = message_bus._MessageWriter(bus)  # type: ignore[arg-type]
        bus._writer.sock = _WaitingSocket(ours)  # (as service.connect sets it up)
        bus.send = lambda msg: message_bus.MessageBus.send(bus, msg)  # type: ignore[arg-type]
        svc = BusItemService("com.victronenergy.grid.full")
        for i in range(paths):
            svc.add_path(f"/P{i}", None, fmt="%.1f")
        svc.bus, svc.registered = bus, True
        whole = partial = 0
        for n in range(60):
            idle = not bus._writer.messages and bus._writer.buf is None
            assert svc.update({f"/P{i}": float(n * 1000 + i) for i in range(paths)}) == paths
            whole += idle and bus._writer.buf is None and not bus._writer.messages
            partial += idle and bus._writer.buf is not None and bus._writer.offset > 0
        # every way was taken: whole to the socket, a part of one (larger signals), queued by dbus-fast
        assert (whole >= 2 if paths == 20 else partial >= 1) and bus._writer.messages
        wire_bytes = bytearray()
        for _ in range(2000):
            try:
                wire_bytes += theirs.recv(65536)
            except BlockingIOError:
                if not bus._writer.messages and bus._writer.buf is None:
                    break
                loop.run_until_complete(asyncio.sleep(0.001))  # (the writer's add_writer callback)
        assert [m.serial for m in sent] == list(range(1, 61))
        assert bytes(wire_bytes) == b"".join(bytes(m._marshall(False)) for m in sent)
    finally:
        ours.close()
        theirs.close()
        loop.close()
