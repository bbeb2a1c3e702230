"""One Victron energy-meter service on D-Bus: identity, settings record, role changes.

Identity follows Victron's own drivers (dbus-modbus-client, dbus-shelly):

* the service is ``com.victronenergy.<role>.<suffix>``; the suffix never depends on the role,
  because gui-v2 switches roles by waiting for the same suffix under the new role;
* VRM instance, role, custom name and position live in localsettings under
  ``/Settings/Devices/<suffix>/`` (``ClassAndVrmInstance`` default ``grid:40``); the GUI edits
  them there and we follow;
* a role change (GUI writes ``/Role``) is written to ``ClassAndVrmInstance``; when localsettings
  confirms it, the old service is dropped (its connection closed, so consumers see the name go)
  and the new one is registered on a fresh connection;
* one connection per registered name, because velib's dbusmonitor maps signals to services by
  the sender's unique connection name;
* the name is requested only after every path holds its value (velib 494f9aef).
"""
from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Set

from .. import __version__
from ..counterguard import BACK, CONFIRM, CONFIRMED, HOLD, CounterRule
from ..errors import TransportError
from ..model import Statistics
from ..ratelimit import Backoff
from .busitem import BusItemService
from .mapping import ESTIMATED, HUB4_INDIVIDUAL_PHASE, Mapper
from .naming import RANK_FALLBACK, pick_suffix
from .settings import SettingsClient, SettingsError, parse_class_instance

if TYPE_CHECKING:  # pragma: no cover
    from .bridge_settings import BridgeSettings

LOG = logging.getLogger(__name__)

ALLOWED_ROLES = ["grid", "pvinverter", "genset", "acload", "evcharger", "heatpump"]
POSITION_ROLES = frozenset(("pvinverter", "acload", "evcharger", "heatpump"))
PRODUCT_ID = 0xFFFF  # "generic"; never a Victron product's ID (victron-dbus.md §7)
DEFAULT_INSTANCE = 40
PROCESS_NAME = "dlms_protocol"
SETTINGS_WAIT = 60.0  # s to wait for localsettings before registering with the configured defaults
HUB4_MODE = "/Settings/CGwacs/Hub4Mode"  # ESS: 1 total of all phases, 2 individual phase, 3 external


def resolve_bus(spec: str) -> str:
    """'auto' -> 'session' when DBUS_SESSION_BUS_ADDRESS is set, else 'system' (as velib decides)."""
    spec = (spec or "auto").strip()
    if spec.lower() == "auto":
        return "session" if os.environ.get("DBUS_SESSION_BUS_ADDRESS") else "system"
    return spec


async def open_bus(spec: str) -> Any:
    """Connect to the bus named by a BridgeSettings.bus value."""
    from dbus_fast import BusType
    from dbus_fast.aio import MessageBus

    which = resolve_bus(spec)
    try:
        # older dbus-fast versions (Venus OS 3.5x) open the socket in the constructor already
        if which.lower() == "session":
            bus = MessageBus(bus_type=BusType.SESSION)
        elif which.lower() == "system":
            bus = MessageBus(bus_type=BusType.SYSTEM)
        else:
            bus = MessageBus(bus_address=which)
        bus = await bus.connect()
    except Exception as exc:  # dbus-fast raises plain Exceptions for auth/connect failures
        raise TransportError(f"cannot connect to the {which} D-Bus ({type(exc).__name__}: {exc})",
                             "on Venus OS use bus = system; elsewhere check DBUS_SESSION_BUS_ADDRESS "
                             "or set bus to the daemon's address") from None
    writer = getattr(bus, "_writer", None)
    if writer is not None and getattr(writer, "sock", None) is not None:
        writer.sock = _WaitingSocket(writer.sock)
    return bus


class _WaitingSocket:
    """The bus socket as dbus-fast's writer sees it: a send into a full socket buffer writes nothing.

    Why: when dbus-daemon is too busy to read (a loaded GX) the connection's socket buffer fills,
    and dbus-fast's writer (2.22 to 5.2; python-dbus-next issue 153) takes the EAGAIN of its first
    write for a lost connection and closes the socket: the meter's service vanished from the bus.
    With nothing written the writer waits for the socket to turn writable, as after a partial write.
    """

    __slots__ = ("_sock",)

    def __init__(self, sock: Any) -> None:
        self._sock = sock

    def send(self, data: Any) -> int:
        try:
            return int(self._sock.send(data))
        except BlockingIOError:
            return 0

    def __getattr__(self, name: str) -> Any:  # sendmsg (descriptors: never negotiated here), fileno, ...
        return getattr(self._sock, name)


class MeterService:
    """The service and its settings; every method runs on the bridge's event loop."""

    def __init__(self, cfg: "BridgeSettings", mapper: Mapper, stats: Statistics) -> None:
        self.cfg = cfg
        self.mapper = mapper
        self.stats = stats
        self.values: Dict[str, Any] = {}  # every published value; re-applied on re-registration
        self.phases: Set[int] = set()
        self.control: Any = None
        self.settings: Optional[SettingsClient] = None
        self.svc: Optional[BusItemService] = None
        self.suffix = ""
        self.role = cfg.role if cfg.role in ALLOWED_ROLES else "grid"
        self.instance = int(getattr(cfg, "device_instance", DEFAULT_INSTANCE) or DEFAULT_INSTANCE)
        self.custom_name = cfg.custom_name or ""
        self.position = 0
        self.serial: Optional[str] = None
        self.rank = RANK_FALLBACK  # how sure the suffix is (pick_suffix)
        self.opened = False
        self.registrations = 0
        self._lock = asyncio.Lock()
        self._tasks: Set["asyncio.Task[Any]"] = set()
        self._closing = False
        self._counters = CounterRule()  # counter path -> highest published value, lower ones held back

    # ------------------------------------------------------------- properties
    @property
    def name(self) -> Optional[str]:
        return self.svc.name if self.svc is not None else None

    def _spath(self, leaf: str) -> str:
        return f"/Settings/Devices/{self.suffix}/{leaf}"

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: "asyncio.Task[Any]") -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self.stats.error(exc)  # type: ignore[arg-type]
            LOG.error("victron: %s", exc)

    # --------------------------------------------------------------- control
    async def connect_control(self) -> None:
        """The long-lived connection used for localsettings (survives role changes)."""
        self.control = await open_bus(self.cfg.bus)
        self.settings = SettingsClient(self.control)
        try:
            present = await self.settings.start()
        except BaseException:
            self.control.disconnect()
            raise
        self.settings.on_presence(self._settings_presence)
        if not present:
            present = await self._wait_for_settings()
        if present:
            await self._read_ess_mode()  # known before the first frame is mapped, where possible

    async def _wait_for_settings(self) -> bool:
        """Victron's drivers register only after localsettings answered: a consumer that scans in
        between would see the configured grid:40 instead of the stored role and instance. Bounded
        (``settings_wait``), so a system without localsettings still gets its meter."""
        assert self.settings is not None
        wait = float(getattr(self.cfg, "settings_wait", SETTINGS_WAIT))
        appeared = asyncio.Event()
        self.settings.on_presence(lambda present: appeared.set() if present else None)
        if self.settings.available:
            return True
        LOG.info("victron: waiting up to %.0f s for com.victronenergy.settings before registering", wait)
        try:
            await asyncio.wait_for(appeared.wait(), wait)
        except asyncio.TimeoutError:
            LOG.warning("victron: com.victronenergy.settings did not appear within %.0f s; registering with "
                        "role %s and VRM instance %d (the stored ones are read when it appears; check "
                        "svstat /service/localsettings)", wait, self.role, self.instance)
            return False
        LOG.info("victron: com.victronenergy.settings is there; registering")
        return True

    async def open(self, serial: Optional[str], meter_id: Optional[str]) -> None:
        """First registration: pick the suffix, read the settings, claim the name."""
        self.serial = serial or meter_id
        self.suffix, self.rank = pick_suffix(self.cfg.device_suffix, serial, meter_id, self.cfg.port)
        await self._load_settings()
        await self.register()
        self.opened = True

    async def rename(self, serial: Optional[str], meter_id: Optional[str]) -> bool:
        """Move to a better-ranked suffix (the meter sent its serial only after the identity
        wait): its own settings record, then the new name; the old name leaves the bus. Only
        upwards, so two meters on one line cannot make the name flap. True when it moved."""
        suffix, rank = pick_suffix(self.cfg.device_suffix, serial, meter_id, self.cfg.port)
        if rank <= self.rank or suffix == self.suffix:
            return False
        LOG.warning("victron: the meter identified itself late; moving %s -> %s (VRM instance and custom "
                    "name now live under %s; set device_suffix to pin the name)", self.suffix, suffix, suffix)
        if self.settings is not None:
            for leaf in ("ClassAndVrmInstance", "CustomName", "Position"):
                self.settings.unwatch(self._spath(leaf))
        self.serial = serial or meter_id
        self.suffix, self.rank = suffix, rank
        await self._load_settings()
        await self.register()
        return True

    async def reopen(self) -> None:
        """After the bus came back (dbus-daemon restart): a new control connection has no
        watches and localsettings may have been back before us (no NameOwnerChanged then), so
        read and watch our records again before registering."""
        await self._load_settings()
        await self.register()

    async def _load_settings(self) -> bool:
        """Create/read our records in localsettings; False when it is not there."""
        if self.settings is None or not self.settings.available:
            return False
        lo_inst = f"{self.role}:{self.instance}"
        try:
            got = await self.settings.add_settings([
                (self._spath("ClassAndVrmInstance"), lo_inst, None, None),
                (self._spath("CustomName"), self.custom_name or "", None, None),
                (self._spath("Position"), 0, 0, 2),
            ])
        except SettingsError as exc:
            self.stats.error(exc)
            LOG.error("victron: %s", exc)
            return False
        for path, cb in ((self._spath("ClassAndVrmInstance"), self._class_changed),
                         (self._spath("CustomName"), self._customname_changed),
                         (self._spath("Position"), self._position_changed)):
            self.settings.watch(path, cb)
        ci = parse_class_instance(got.get(self._spath("ClassAndVrmInstance")))
        if ci is not None:
            role, inst = ci
            if role in ALLOWED_ROLES:
                if role != self.role:
                    LOG.info("victron: role %s from the GUI (settings) replaces the configured %s", role, self.role)
                self.role = role
            else:
                LOG.warning("victron: settings hold unknown role %r; keeping %s", role, self.role)
            self.instance = inst
        name = got.get(self._spath("CustomName"))
        if isinstance(name, str):
            self.custom_name = name
        pos = got.get(self._spath("Position"))
        if isinstance(pos, int) and 0 <= pos <= 2:
            self.position = pos
        await self._read_ess_mode()
        return True

    async def _read_ess_mode(self) -> None:
        """ESS multiphase regulation decides whether a total-only 3-phase meter's split is safe
        (mapping.py, rule 4); read it and follow GUI changes. Absent (no ESS): None."""
        assert self.settings is not None
        try:
            mode = await self.settings.get_value(HUB4_MODE)
        except SettingsError:
            mode = None
        self._ess_mode_changed(HUB4_MODE, mode)
        self.settings.watch(HUB4_MODE, self._ess_mode_changed)

    def _ess_mode_changed(self, _path: str, value: Any) -> None:
        mode = value if isinstance(value, int) and not isinstance(value, bool) else None
        self.mapper.set_ess_mode(mode)
        if mode == HUB4_INDIVIDUAL_PHASE:
            # estimated phase powers must not stay on the bus for individual-phase regulation
            stale = {p: None for p, lab in self.mapper.labels_now().items()
                     if lab == ESTIMATED and self.values.get(p) is not None}
            if stale:
                self.update(stale)

    # ---------------------------------------------------------- registration
    async def register(self) -> None:
        """(Re-)register: close the old connection, build every path, then claim the name."""
        async with self._lock:
            if self._closing:
                return
            await self._drop()
            bus = await open_bus(self.cfg.bus)
            svc = BusItemService(f"com.victronenergy.{self.role}.{self.suffix}")
            self._build(svc)
            svc.attach(bus)
            try:
                await svc.register()
            except RuntimeError as exc:
                bus.disconnect()
                raise TransportError(str(exc), "another instance of this driver (or another driver with the "
                                     "same device_suffix) is running; stop it or set device_suffix") from None
            self.svc = svc
            self.registrations += 1
            LOG.info("victron: registered %s (VRM instance %d)", svc.name, self.instance)
            self._spawn(self._watch(svc, bus, self.control))

    async def _watch(self, svc: BusItemService, bus: Any, control: Any) -> None:
        """Register again when the service's own connection ends while the control connection
        lives on (dbus-daemon dropped it, a write failed): nothing else would notice, and the
        meter would stay gone from the bus. A deliberate drop (``_drop``: a new registration,
        a role change, the stop) detaches ``svc`` first; a lost bus is the control connection's
        business (``bridge._Core.run`` reads the settings and registers again on its new control
        connection, so only the control connection of this registration still up counts)."""
        try:
            await bus.wait_for_disconnect()
        except Exception as exc:  # noqa: BLE001 - the end of the connection, whatever its reason
            LOG.debug("victron: service connection ended: %r", exc)
        backoff = Backoff(1.0, 30.0)
        await asyncio.sleep(backoff.next())  # (a lost bus ends the control connection too, within this)
        if svc.bus is None or self._closing or self.control is not control or not control.connected:
            return
        LOG.warning("victron: the D-Bus connection of %s ended; registering again", svc.name)
        while not self._closing and self.control is control and control.connected:
            if self.svc is not None and self.svc is not svc:
                return  # registered meanwhile (a rename, the control connection's reopen)
            try:
                await self.register()
                return
            except TransportError as exc:
                self.stats.error(exc)
                LOG.warning("victron: %s (retry in %.0f s)", exc, backoff.delay)
            await asyncio.sleep(backoff.next())

    async def _drop(self) -> None:
        svc, self.svc = self.svc, None
        if svc is None:
            return
        bus = svc.bus
        svc.detach()
        if bus is not None and bus.connected:
            bus.disconnect()
            try:
                await asyncio.wait_for(bus.wait_for_disconnect(), 2.0)
            except (asyncio.TimeoutError, Exception):  # noqa: B014 - any end of the connection is fine here
                pass
        LOG.info("victron: unregistered %s", svc.name)

    def _build(self, svc: BusItemService) -> None:
        cfg = self.cfg
        v = self.values
        svc.add_path("/Mgmt/ProcessName", PROCESS_NAME)
        svc.add_path("/Mgmt/ProcessVersion", __version__)
        svc.add_path("/Mgmt/Connection", self.values.get("/Mgmt/Connection") or self.connection_text(None))
        svc.add_path("/DeviceInstance", self.instance)
        svc.add_path("/ProductId", PRODUCT_ID)
        svc.add_path("/ProductName", cfg.product_name)
        svc.add_path("/FirmwareVersion", v.get("/FirmwareVersion"))
        svc.add_path("/HardwareVersion", None)
        svc.add_path("/Connected", v.get("/Connected", 0))
        svc.add_path("/CustomName", self.custom_name, writeable=True, on_set=self._set_customname, valuetype=str)
        svc.add_path("/Serial", v.get("/Serial") or self.serial)
        svc.add_path("/Role", self.role, writeable=True, on_set=self._set_role, valuetype=str)
        svc.add_path("/AllowedRoles", list(ALLOWED_ROLES))
        if self.role in POSITION_ROLES:
            svc.add_path("/Position", self.position, writeable=True, on_set=self._set_position, valuetype=int)
        if self.role != "grid":
            svc.add_path("/IsGenericEnergyMeter", 1)
        svc.add_path("/NrOfPhases", v.get("/NrOfPhases"))
        svc.add_path("/RefreshTime", v.get("/RefreshTime"),
                     text=lambda x: f"{x} ms")
        svc.add_path("/ErrorCode", v.get("/ErrorCode", 0))
        for path in self.mapper.measurement_paths(self.phases):
            spec = self.mapper.spec(path)
            svc.add_path(path, v.get(path), text=spec.text if spec is not None else None,
                         fmt=spec.format or None if spec is not None else None)

    def add_phases(self, phases: Set[int]) -> None:
        """A later frame revealed more phases: add their paths to the running service."""
        new = phases - self.phases
        if not new:
            return
        self.phases |= new
        svc = self.svc
        if svc is None:
            return
        for path in self.mapper.measurement_paths(self.phases):
            if path not in svc:
                spec = self.mapper.spec(path)
                svc.add_path(path, self.values.get(path), text=spec.text if spec is not None else None,
                             fmt=spec.format or None if spec is not None else None)

    def connection_text(self, note: Optional[str]) -> str:
        """``/Mgmt/Connection``: the port, and a note when phase powers are estimated (Mapped.phase_note)."""
        base = self.cfg.connection or "DLMS/IEC 62056 meter"
        return f"{base} ({note})" if note else base

    def update(self, changes: Dict[str, Any]) -> int:
        """Record values and put them on the bus in one ItemsChanged; returns the changed count."""
        changes = self._counters_forward(changes)
        self.values.update(changes)
        svc = self.svc
        if svc is None or not svc.registered:
            return 0
        return svc.update(changes)

    def _counters_forward(self, changes: Dict[str, Any]) -> Dict[str, Any]:
        """Energy counters never go backwards on D-Bus (VRM and the GUI sum their increments).

        A reading below the last published one (a bit error that passed every check, a swapped
        or reset meter) is held back and logged; it is published once ``counterguard.CONFIRM``
        following readings stay below the old level and do not go backwards among themselves
        (a new meter). A reading back at or above the old level drops the held ones. The pipeline
        does this for the meter's registers before any output (``counterguard``); here it holds
        for the paths as published, a counter the mapping summed from the phases included."""
        out = changes
        rule = self._counters
        for path in self.mapper.counter_paths.intersection(changes):  # (a few of a push's paths)
            value = changes[path]
            if not isinstance(value, float):
                continue
            last = rule.last.get(path)
            verdict, held = rule.offer(path, value)
            if verdict == BACK:
                LOG.warning("victron: %s is back at %.3f; the lower reading(s) %s were discarded",
                            path, value, ", ".join(f"{v:.3f}" for v in held))
            elif verdict == CONFIRMED:
                LOG.warning("victron: %s went down from %.3f to %.3f and %d readings confirmed it (meter "
                            "swapped or reset?); publishing the new level", path, last, held[0], CONFIRM)
            if verdict != HOLD:
                continue
            if len(held) == 1:
                LOG.warning("victron: %s reads %.3f, below the published %.3f: held back until the next "
                            "readings confirm it", path, value, last)
            self.stats.count("victron_counter_holds")
            if out is changes:
                out = dict(changes)
            del out[path]
        return out

    # ------------------------------------------------- writes from the GUI
    def _set_role(self, _path: str, value: Any) -> bool:
        role = str(value)
        if role not in ALLOWED_ROLES:
            return False
        if role == self.role:
            return True
        LOG.info("victron: role change %s -> %s requested on D-Bus", self.role, role)
        if self.settings is not None and self.settings.available and self.opened:
            self._spawn(self._write_setting("ClassAndVrmInstance", f"{role}:{self.instance}"))
        else:
            self.role = role
            self._spawn(self.register())
        return True

    def _set_customname(self, _path: str, value: Any) -> bool:
        self.custom_name = str(value)
        if self.settings is not None and self.settings.available and self.opened:
            self._spawn(self._write_setting("CustomName", self.custom_name))
        return True

    def _set_position(self, _path: str, value: Any) -> bool:
        if not isinstance(value, int) or not 0 <= value <= 2:
            return False
        self.position = value
        if self.settings is not None and self.settings.available and self.opened:
            self._spawn(self._write_setting("Position", value))
        return True

    async def _write_setting(self, leaf: str, value: Any) -> None:
        assert self.settings is not None
        rc = await self.settings.set_value(self._spath(leaf), value)
        if rc != 0:
            LOG.warning("victron: localsettings refused %s = %r (code %d)", self._spath(leaf), value, rc)

    # ------------------------------------------- changes made in localsettings
    def _class_changed(self, _path: str, value: Any) -> None:
        ci = parse_class_instance(value)
        if ci is None:
            return
        role, inst = ci
        if role not in ALLOWED_ROLES:
            LOG.warning("victron: ignoring unknown role %r from settings", role)
            return
        if role != self.role:
            LOG.info("victron: role changed in settings: %s -> %s", self.role, role)
            self.role, self.instance = role, inst
            self._spawn(self.register())
        elif inst != self.instance:
            LOG.info("victron: VRM instance changed in settings: %d -> %d", self.instance, inst)
            self.instance = inst
            if self.svc is not None:
                self.svc.set_one("/DeviceInstance", inst)

    def _customname_changed(self, _path: str, value: Any) -> None:
        if isinstance(value, str):
            self.custom_name = value
            if self.svc is not None:
                self.svc.set_one("/CustomName", value)

    def _position_changed(self, _path: str, value: Any) -> None:
        if isinstance(value, int) and 0 <= value <= 2:
            self.position = value
            if self.svc is not None and "/Position" in self.svc:
                self.svc.set_one("/Position", value)

    def _settings_presence(self, present: bool) -> None:
        if present and self.opened:
            LOG.info("victron: com.victronenergy.settings appeared; reading our records")
            self._spawn(self._resync())
        elif not present:
            LOG.warning("victron: com.victronenergy.settings left the bus; keeping role %s, instance %d",
                        self.role, self.instance)

    async def _resync(self) -> None:
        role, inst, name, pos = self.role, self.instance, self.custom_name, self.position
        if not await self._load_settings():
            return
        if self.role != role:
            await self.register()
            return
        if self.svc is None:
            return
        if self.instance != inst:
            self.svc.set_one("/DeviceInstance", self.instance)
        if self.custom_name != name:
            self.svc.set_one("/CustomName", self.custom_name)
        if self.position != pos and "/Position" in self.svc:
            self.svc.set_one("/Position", self.position)

    # ------------------------------------------------------------------ end
    async def close(self) -> None:
        """Leave the bus. The disconnects come first and are synchronous, so the name is gone
        even when the caller's stop() time-out cancels the rest of this coroutine."""
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        svc = self.svc
        if svc is not None and svc.bus is not None and svc.bus.connected:
            svc.bus.disconnect()
        if self.control is not None and self.control.connected:
            self.control.disconnect()
        async with self._lock:
            await self._drop()
        self.control = None

    def status(self) -> Dict[str, Any]:
        return {
            "service": self.name,
            "registered": bool(self.svc is not None and self.svc.registered),
            "role": self.role,
            "device_instance": self.instance,
            "custom_name": self.custom_name,
            "settings": bool(self.settings is not None and self.settings.available),
            "registrations": self.registrations,
            "phases": sorted(self.phases),
        }


def allowed_roles() -> List[str]:
    return list(ALLOWED_ROLES)


__all__ = ["MeterService", "ALLOWED_ROLES", "PRODUCT_ID", "resolve_bus", "open_bus", "allowed_roles"]
