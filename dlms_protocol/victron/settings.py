"""Client of Venus OS localsettings (``com.victronenergy.settings``) on a dbus-fast connection.

The driver keeps its VRM instance, role, custom name and position where every Victron driver
keeps them: ``/Settings/Devices/<UniqueID>/...``. ``AddSettings`` creates the records (an
existing record keeps its value; a taken ``ClassAndVrmInstance`` gets the next free instance),
and the GUI changes them with ``SetValue``; we follow those changes through the settings
service's ``PropertiesChanged`` (localsettings) or ``ItemsChanged`` (newer services) signals.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Optional, Tuple

from dbus_fast import Message, MessageType, Variant
from dbus_fast.errors import DBusError

from ..errors import TransportError
from .busitem import IFACE, unwrap, wrap

LOG = logging.getLogger(__name__)

SETTINGS_SERVICE = "com.victronenergy.settings"
SETTINGS_IFACE = "com.victronenergy.Settings"
_DBUS = "org.freedesktop.DBus"

#: called with (settings path, new value)
OnChange = Callable[[str, Any], None]
#: called with True when localsettings (re)appears, False when it leaves the bus
OnPresence = Callable[[bool], None]


class SettingsError(TransportError):
    """localsettings is missing or refused a request."""

    stat = "victron_settings_errors"


def parse_class_instance(value: Any) -> Optional[Tuple[str, int]]:
    """'grid:40' -> ('grid', 40); None for anything else (localsettings' own rule)."""
    if not isinstance(value, str) or value.count(":") != 1:
        return None
    cls, _, inst = value.partition(":")
    try:
        return cls, int(inst)
    except ValueError:
        return None


async def call(bus: Any, destination: str, path: str, interface: Optional[str], member: str,
               signature: str = "", body: Optional[List[Any]] = None) -> List[Any]:
    """One method call; DBusError for an error reply, TransportError when the bus is gone."""
    msg = Message(destination=destination, path=path, interface=interface, member=member,
                  signature=signature, body=body or [])
    try:
        reply = await bus.call(msg)
    except (EOFError, OSError, ConnectionError) as exc:
        raise TransportError(f"D-Bus connection lost during {member} ({exc})",
                             "the service reconnects by itself; check that dbus-daemon runs") from None
    if reply is None:
        return []
    if reply.message_type is MessageType.ERROR:
        raise DBusError(reply.error_name or "error", (reply.body or [""])[0] if reply.body else "")
    return list(reply.body)


async def add_match(bus: Any, rule: str) -> None:
    await call(bus, _DBUS, "/org/freedesktop/DBus", _DBUS, "AddMatch", "s", [rule])


class SettingsClient:
    """Reads, creates, writes and watches settings; one instance per control connection."""

    def __init__(self, bus: Any) -> None:
        self.bus = bus
        self.owner: Optional[str] = None  # unique name of localsettings, None while absent
        self._watches: Dict[str, OnChange] = {}
        self._presence: List[OnPresence] = []
        bus.add_message_handler(self._on_message)

    async def start(self) -> bool:
        """Subscribe to changes and to localsettings coming and going; True when it is there now."""
        await add_match(self.bus, f"type='signal',sender='{_DBUS}',interface='{_DBUS}',"
                                  f"member='NameOwnerChanged',arg0='{SETTINGS_SERVICE}'")
        await add_match(self.bus, f"type='signal',sender='{SETTINGS_SERVICE}',interface='{IFACE}',"
                                  "member='PropertiesChanged'")
        await add_match(self.bus, f"type='signal',sender='{SETTINGS_SERVICE}',interface='{IFACE}',"
                                  "member='ItemsChanged'")
        try:
            body = await call(self.bus, _DBUS, "/org/freedesktop/DBus", _DBUS, "GetNameOwner", "s",
                              [SETTINGS_SERVICE])
            self.owner = body[0] if body else None
        except DBusError:
            self.owner = None
        return self.owner is not None

    @property
    def available(self) -> bool:
        return self.owner is not None

    def watch(self, path: str, callback: OnChange) -> None:
        self._watches[path] = callback

    def unwatch(self, path: str) -> None:
        self._watches.pop(path, None)

    def on_presence(self, callback: OnPresence) -> None:
        self._presence.append(callback)

    async def add_settings(self, entries: List[Tuple[str, Any, Any, Any]]) -> Dict[str, Any]:
        """AddSettings([(path, default, min, max)]) -> {path: current value}."""
        request = []
        for path, default, lo, hi in entries:
            item: Dict[str, Variant] = {"path": Variant("s", path), "default": wrap(default)}
            if lo is not None:
                item["min"] = wrap(lo)
            if hi is not None:
                item["max"] = wrap(hi)
            request.append(item)
        try:
            body = await call(self.bus, SETTINGS_SERVICE, "/", SETTINGS_IFACE, "AddSettings", "aa{sv}", [request])
        except DBusError as exc:
            raise SettingsError(f"localsettings refused AddSettings ({exc.type}: {exc.text})",
                                "check that com.victronenergy.settings runs (svstat /service/localsettings)") from None
        out: Dict[str, Any] = {}
        for result in body[0] if body else []:
            res = {k: unwrap(v) for k, v in result.items()}
            if res.get("error", 0) != 0 or "value" not in res:
                raise SettingsError(f"localsettings refused {res.get('path')} (error {res.get('error')})",
                                    "remove the conflicting setting with dbus-spy or report a bug")
            out[str(res["path"])] = res["value"]
        return out

    async def set_value(self, path: str, value: Any) -> int:
        try:
            body = await call(self.bus, SETTINGS_SERVICE, path, IFACE, "SetValue", "v", [wrap(value)])
        except DBusError as exc:
            raise SettingsError(f"localsettings refused SetValue on {path} ({exc.type})",
                                "check that the setting exists") from None
        return int(body[0]) if body else -1

    async def get_value(self, path: str) -> Any:
        try:
            body = await call(self.bus, SETTINGS_SERVICE, path, IFACE, "GetValue")
        except DBusError as exc:
            raise SettingsError(f"localsettings has no {path} ({exc.type})", "create it with AddSettings") from None
        return unwrap(body[0]) if body else None

    # ------------------------------------------------------------------ signals
    def _on_message(self, msg: Message) -> Any:
        if msg.message_type is not MessageType.SIGNAL:
            return None
        member = msg.member
        if member == "NameOwnerChanged" and msg.sender == _DBUS:
            name, _old, new = msg.body
            if name == SETTINGS_SERVICE:
                self.owner = new or None
                for cb in list(self._presence):
                    try:
                        cb(bool(new))
                    except Exception:  # a callback bug must not kill the connection
                        LOG.exception("settings presence callback failed")
            return None
        if self.owner is None or msg.sender != self.owner or msg.interface != IFACE:
            return None
        if member == "PropertiesChanged":
            changes = {msg.path or "": msg.body[0]}
        elif member == "ItemsChanged":
            changes = msg.body[0]
        else:
            return None
        for path, props in changes.items():
            watch = self._watches.get(path)
            if watch is not None and "Value" in props:
                try:
                    watch(path, unwrap(props["Value"]))
                except Exception:  # a callback bug must not kill the connection
                    LOG.exception("settings change callback for %s failed", path)
        return None


__all__ = ["SettingsClient", "SettingsError", "SETTINGS_SERVICE", "parse_class_instance", "call", "add_match"]
