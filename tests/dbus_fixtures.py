"""Real D-Bus parts for the Victron tests: a private dbus-daemon, a localsettings stand-in,
and a client that discovers and follows services the way Venus OS consumers do.

Nothing here is a mock of our code: the daemon is the real ``dbus-daemon``, and the settings
stand-in and the client are independent implementations of the Victron conventions
(localsettings' ``AddSettings``/``ClassAndVrmInstance`` rules; velib dbusmonitor's scan with
``GetItems`` on ``/`` plus ``ItemsChanged``/``PropertiesChanged`` tracking), written against
the public interface descriptions, so the bridge is tested against behaviour, not against itself.
"""
from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.constants import NameFlag

BUSITEM = "com.victronenergy.BusItem"
SETTINGS_IFACE = "com.victronenergy.Settings"
SETTINGS_NAME = "com.victronenergy.settings"
DBUS = "org.freedesktop.DBus"

_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


# --------------------------------------------------------------------------- daemon
class DbusDaemon:
    """``dbus-daemon --config-file=<temp> --print-address --nofork`` on a private socket."""

    def __init__(self) -> None:
        exe = shutil.which("dbus-daemon")
        if exe is None:
            raise FileNotFoundError("dbus-daemon")
        self.dir = Path(tempfile.mkdtemp(prefix="dlms-dbus-"))
        sock = self.dir / "bus"
        cfg = self.dir / "bus.conf"
        cfg.write_text(_CONFIG.format(socket=sock))
        # stderr goes to a file: a pipe nobody reads would stop the daemon once its warnings
        # filled the pipe's buffer (a module's tests share one daemon)
        self.log = self.dir / "stderr.log"
        with open(self.log, "w") as err:
            self.proc = subprocess.Popen([exe, f"--config-file={cfg}", "--print-address", "--nofork"],
                                         stdout=subprocess.PIPE, stderr=err, text=True)
        line = self.proc.stdout.readline().strip() if self.proc.stdout else ""
        if not line:
            raise RuntimeError(f"dbus-daemon did not start: {self.log.read_text(errors='replace')}")
        self.address = line

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout:
            self.proc.stdout.close()
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------------- loop thread
class LoopThread:
    """An asyncio loop in a daemon thread, with a blocking ``run(coro)`` for test code."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 20.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        if not self.thread.is_alive():
            self.loop.close()


def _unwrap(v: Any) -> Any:
    if isinstance(v, Variant):
        if v.signature == "ai" and v.value == []:
            return None
        return _unwrap(v.value)
    if isinstance(v, list):
        return [_unwrap(x) for x in v]
    if isinstance(v, dict):
        return {k: _unwrap(x) for k, x in v.items()}
    return v


async def _connect(address: str) -> MessageBus:
    return await MessageBus(bus_address=address, bus_type=BusType.SESSION).connect()


async def close_bus(bus: MessageBus) -> None:
    """Disconnect and wait, so dbus-fast's end-of-stream error is retrieved (no stray warnings)."""
    if not bus.connected:
        return
    bus.disconnect()
    try:
        await asyncio.wait_for(bus.wait_for_disconnect(), 5)
    except Exception:  # noqa: BLE001 - EOF on our own disconnect is the expected end
        pass


def _ret(msg: Message, sig: str, body: List[Any]) -> Message:
    return Message.new_method_return(msg, sig, body)


# ----------------------------------------------------------------- settings stand-in
class SettingsStandIn:
    """``com.victronenergy.settings`` with localsettings' rules, on its own loop thread.

    AddSettings/AddSetting keep an existing record as it is; ``ClassAndVrmInstance`` values
    are unique per class: adding or setting a taken ``class:n`` stores the next free ``n``.
    Every change is announced with ``PropertiesChanged`` on the setting's path, as localsettings
    does. ``values`` can be read (and pre-loaded) by the test.
    """

    def __init__(self, address: str, preload: Optional[Dict[str, Tuple[str, Any]]] = None) -> None:
        self.address = address
        self.values: Dict[str, Any] = {}
        self.types: Dict[str, str] = {}
        self.limits: Dict[str, Tuple[Any, Any]] = {}
        self.calls: List[str] = []
        for path, (typ, value) in (preload or {}).items():
            self.values[path] = value
            self.types[path] = typ
        self.bus: Optional[MessageBus] = None
        self.lt = LoopThread("settings-standin")
        self.lt.run(self._start())

    async def _start(self) -> None:
        bus = await _connect(self.address)
        bus.add_message_handler(self._handle)
        self.bus = bus
        await bus.request_name(SETTINGS_NAME, NameFlag.DO_NOT_QUEUE)

    def stop(self) -> None:
        if self.bus is not None:
            self.lt.run(close_bus(self.bus))
        self.lt.close()

    # localsettings rules
    def _free_instance(self, path: str, value: str) -> str:
        cls, _, inst = value.partition(":")
        n = int(inst)
        taken = {v for p, v in self.values.items()
                 if p != path and p.endswith("/ClassAndVrmInstance") and isinstance(v, str)
                 and v.startswith(cls + ":")}
        while f"{cls}:{n}" in taken:
            n += 1
        return f"{cls}:{n}"

    @staticmethod
    def _valid_ci(value: Any) -> bool:
        if not isinstance(value, str) or value.count(":") != 1:
            return False
        try:
            int(value.split(":")[1])
            return True
        except ValueError:
            return False

    def _add(self, path: str, default: Any, typ: str, lo: Any, hi: Any) -> Tuple[int, Any]:
        if not path.startswith("/Settings/"):
            return 7, None  # localsettings: NotInSettings
        if path in self.values:
            if self.types[path] != typ:
                return 4, None  # TypeDiffer
            return 0, self.values[path]
        if path.endswith("/ClassAndVrmInstance"):
            if not self._valid_ci(default):
                return 5, None
            default = self._free_instance(path, default)
        self.values[path] = default
        self.types[path] = typ
        self.limits[path] = (lo, hi)
        self._emit(path)
        return 0, default

    def _set(self, path: str, value: Any) -> int:
        typ = self.types[path]
        try:
            value = {"i": int, "f": float, "s": str}[typ](value)
        except (TypeError, ValueError):
            return -1
        lo, hi = self.limits.get(path, (None, None))
        if typ != "s" and ((lo is not None and value < lo) or (hi is not None and value > hi)):
            return -1
        if path.endswith("/ClassAndVrmInstance"):
            if not self._valid_ci(value):
                return -1
            value = self._free_instance(path, value)
        if value != self.values[path]:
            self.values[path] = value
            self._emit(path)
        return 0

    def _variant(self, path: str) -> Variant:
        typ, v = self.types[path], self.values[path]
        return Variant({"i": "i", "f": "d", "s": "s"}[typ], v)

    def _emit(self, path: str) -> None:
        if self.bus is None:
            return
        self.bus.send(Message.new_signal(path, BUSITEM, "PropertiesChanged", "a{sv}",
                                         [{"Value": self._variant(path),
                                           "Text": Variant("s", str(self.values[path]))}]))

    def _handle(self, msg: Message) -> Any:
        if msg.message_type is not MessageType.METHOD_CALL or msg.interface not in (None, BUSITEM, SETTINGS_IFACE):
            return None
        member, path = msg.member, msg.path
        self.calls.append(f"{path} {member}")
        if member == "AddSettings" and msg.signature == "aa{sv}":
            out = []
            for entry in msg.body[0]:
                p = _unwrap(entry.get("path"))
                d = entry.get("default")
                res: Dict[str, Variant] = {}
                if not isinstance(p, str):
                    res["error"] = Variant("i", 1)
                    out.append(res)
                    continue
                res["path"] = Variant("s", p)
                typ = {"i": "i", "x": "i", "d": "f", "s": "s"}.get(d.signature if isinstance(d, Variant) else "", "")
                if not typ:
                    res["error"] = Variant("i", 3)
                    out.append(res)
                    continue
                err, val = self._add(p, _unwrap(d), typ, _unwrap(entry.get("min")), _unwrap(entry.get("max")))
                res["error"] = Variant("i", err)
                if err == 0:
                    res["value"] = self._variant(p)
                out.append(res)
            return _ret(msg, "aa{sv}", [out])
        if member == "AddSetting" and msg.signature == "ssvsvv":
            group, name, default, typ, lo, hi = msg.body
            group = group if group.startswith("/") else "/" + group
            base = "" if path == "/" else path
            full = base + group + ("" if name.startswith("/") else "/") + name
            err, _ = self._add(full, _unwrap(default), typ, _unwrap(lo), _unwrap(hi))
            return _ret(msg, "i", [err])
        if path == "/" and member == "GetItems":
            items = {p: {"Value": self._variant(p), "Text": Variant("s", str(self.values[p]))} for p in self.values}
            return _ret(msg, "a{sa{sv}}", [items])
        if path in self.values:
            if member == "GetValue":
                return _ret(msg, "v", [self._variant(path)])
            if member == "GetText":
                return _ret(msg, "s", [str(self.values[path])])
            if member == "SetValue" and msg.signature == "v":
                return _ret(msg, "i", [self._set(path, _unwrap(msg.body[0]))])
        return None


# ---------------------------------------------------------------------- Venus client
class VenusClient:
    """Discovers ``com.victronenergy.*`` services and follows them like velib's dbusmonitor.

    On start and on every NameOwnerChanged it scans a service with ``GetItems`` on ``/``, and it
    keeps the values current from ``ItemsChanged`` (root) and ``PropertiesChanged`` (per path)
    signals, matched to the service through the sender's unique name. ``events`` records every
    signal with its arrival time (``time.perf_counter()``), for the latency benchmark.
    """

    def __init__(self, address: str, prefix: str = "com.victronenergy.") -> None:
        self.address = address
        self.prefix = prefix
        self.cache: Dict[str, Dict[str, Any]] = {}
        self.owners: Dict[str, str] = {}  # unique name -> service name
        self.events: List[Tuple[float, str, str, Dict[str, Any]]] = []
        self.on_items: Optional[Callable[[float, Dict[str, Any]], None]] = None
        self.cond = threading.Condition()
        self.lt = LoopThread("venus-client")
        self.bus: MessageBus = self.lt.run(self._start())

    async def _start(self) -> MessageBus:
        bus = await _connect(self.address)
        bus.add_message_handler(self._on_message)
        for rule in (f"type='signal',sender='{DBUS}',member='NameOwnerChanged',arg0namespace='com.victronenergy'",
                     f"type='signal',interface='{BUSITEM}',member='ItemsChanged',path='/'",
                     f"type='signal',interface='{BUSITEM}',member='PropertiesChanged'"):
            await self._call(bus, DBUS, "/org/freedesktop/DBus", DBUS, "AddMatch", "s", [rule])
        names = (await self._call(bus, DBUS, "/org/freedesktop/DBus", DBUS, "ListNames"))[0]
        for name in names:
            if name.startswith(self.prefix) and name != SETTINGS_NAME:
                owner = (await self._call(bus, DBUS, "/org/freedesktop/DBus", DBUS, "GetNameOwner", "s", [name]))[0]
                await self._scan(bus, name, owner)
        return bus

    @staticmethod
    async def _call(bus: MessageBus, dest: str, path: str, iface: Optional[str], member: str,
                    sig: str = "", body: Optional[List[Any]] = None) -> List[Any]:
        reply = await bus.call(Message(destination=dest, path=path, interface=iface, member=member,
                                       signature=sig, body=body or []))
        if reply.message_type is MessageType.ERROR:
            raise RuntimeError(f"{dest}{path} {member}: {reply.error_name} {reply.body}")
        return list(reply.body)

    async def _scan(self, bus: MessageBus, name: str, owner: str) -> None:
        try:
            items = (await self._call(bus, name, "/", BUSITEM, "GetItems"))[0]
        except RuntimeError:
            return
        values = {p: _unwrap(props.get("Value")) for p, props in items.items()}
        if "/DeviceInstance" not in values:  # dbusmonitor skips such services
            return
        with self.cond:
            self.owners[owner] = name
            self.cache[name] = values
            self.cond.notify_all()

    def _on_message(self, msg: Message) -> Any:
        if msg.message_type is not MessageType.SIGNAL:
            return None
        now = time.perf_counter()
        if msg.member == "NameOwnerChanged" and msg.sender == DBUS:
            name, old, new = msg.body
            if not name.startswith(self.prefix) or name == SETTINGS_NAME:
                return None
            with self.cond:
                if old:
                    self.owners.pop(old, None)
                    self.cache.pop(name, None)
                self.cond.notify_all()
            if new:
                asyncio.get_running_loop().create_task(self._scan(self.bus, name, new))
            return None
        if msg.interface != BUSITEM:
            return None
        if msg.member == "ItemsChanged":
            changes = {p: _unwrap(props["Value"]) for p, props in msg.body[0].items() if "Value" in props}
        elif msg.member == "PropertiesChanged":
            if "Value" not in msg.body[0]:
                return None
            changes = {msg.path: _unwrap(msg.body[0]["Value"])}
        else:
            return None
        if msg.member == "ItemsChanged" and self.on_items is not None:
            self.on_items(now, changes)
        with self.cond:
            name = self.owners.get(msg.sender or "")
            if name is None:
                return None
            self.cache[name].update(changes)
            self.events.append((now, name, msg.member, changes))
            self.cond.notify_all()
        return None

    # ------------------------------------------------------------ blocking API
    def wait_for(self, predicate: Callable[["VenusClient"], Any], timeout: float = 30.0) -> Any:
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                result = predicate(self)
                if result:
                    return result
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"condition not met within {timeout} s; services: "
                                       f"{ {n: len(v) for n, v in self.cache.items()} }")
                self.cond.wait(min(left, 0.5))

    def service(self, kind: str) -> Optional[str]:
        """The one service whose name starts with com.victronenergy.<kind>."""
        found = [n for n in self.cache if n.startswith(f"{self.prefix}{kind}.")]
        return found[0] if len(found) == 1 else None

    def value(self, service: str, path: str) -> Any:
        with self.cond:
            return self.cache.get(service, {}).get(path)

    def call(self, dest: str, path: str, member: str, sig: str = "", body: Optional[List[Any]] = None,
             iface: Optional[str] = BUSITEM) -> List[Any]:
        return self.lt.run(self._call(self.bus, dest, path, iface, member, sig, body))

    def get_value(self, service: str, path: str, iface: Optional[str] = BUSITEM) -> Any:
        return _unwrap(self.call(service, path, "GetValue", iface=iface)[0])

    def get_raw(self, service: str, path: str, iface: Optional[str] = BUSITEM) -> Variant:
        return self.call(service, path, "GetValue", iface=iface)[0]

    def get_text(self, service: str, path: str) -> Any:
        return _unwrap(self.call(service, path, "GetText")[0])

    def set_value(self, service: str, path: str, value: Variant, iface: Optional[str] = BUSITEM) -> int:
        return int(self.call(service, path, "SetValue", "v", [value], iface=iface)[0])

    def get_items(self, service: str) -> Dict[str, Dict[str, Any]]:
        items = self.call(service, "/", "GetItems")[0]
        return {p: {k: _unwrap(v) for k, v in props.items()} for p, props in items.items()}

    def clear_events(self) -> None:
        with self.cond:
            self.events.clear()

    def stop(self) -> None:
        self.lt.run(close_bus(self.bus))
        self.lt.close()


def have_dbus() -> bool:
    return shutil.which("dbus-daemon") is not None


@contextmanager
def venus_bus() -> Iterator[Tuple[DbusDaemon, VenusClient]]:
    """A private bus with the localsettings stand-in (a service registers only after it answered)
    and a Venus-side client; all stopped at the end."""
    daemon = DbusDaemon()
    settings = SettingsStandIn(daemon.address)
    client = VenusClient(daemon.address)
    try:
        yield daemon, client
    finally:
        client.stop()
        settings.stop()
        daemon.stop()


__all__ = ["DbusDaemon", "SettingsStandIn", "VenusClient", "LoopThread", "close_bus", "have_dbus", "venus_bus",
           "BUSITEM"]
