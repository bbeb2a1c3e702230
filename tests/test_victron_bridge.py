"""VictronBridge on a real private dbus-daemon, seen by a Venus-style client, with a
localsettings stand-in: discovery, values and signs, VRM instance, role switches, custom name,
staleness and recovery."""
from __future__ import annotations

import threading
import time
from decimal import Decimal
from typing import Any, Iterator, List, Optional

import pytest
from dbus_fast import Variant

from dbus_fixtures import DbusDaemon, SettingsStandIn, VenusClient
from dlms_protocol.errors import ConfigurationError
from dlms_protocol.model import MeterData, Reading, Statistics
from dlms_protocol.obis import Obis
from dlms_protocol.victron.bridge import BridgeSettings, VictronBridge

WAIT = 30.0


@pytest.fixture
def client(daemon: DbusDaemon) -> Iterator[VenusClient]:
    c = VenusClient(daemon.address)
    yield c
    c.stop()


class Rig:
    """Bridge + settings stand-in for one test; everything is stopped at the end."""

    def __init__(self, daemon: DbusDaemon) -> None:
        self.daemon = daemon
        self.bridges: List[VictronBridge] = []
        self.settings: Optional[SettingsStandIn] = None

    def start_settings(self, **preload: Any) -> SettingsStandIn:
        self.settings = SettingsStandIn(self.daemon.address, preload=preload.get("preload"))
        return self.settings

    def bridge(self, **kw: Any) -> VictronBridge:
        kw.setdefault("bus", self.daemon.address)
        b = VictronBridge(BridgeSettings(**kw), Statistics())
        b.start()
        self.bridges.append(b)
        return b

    def close(self) -> None:
        for b in self.bridges:
            b.stop(5.0)
        if self.settings is not None:
            self.settings.stop()


@pytest.fixture
def rig(daemon: DbusDaemon) -> Iterator[Rig]:
    r = Rig(daemon)
    yield r
    r.close()


def R(code: str, value: Any, unit: Optional[str] = None) -> Reading:
    v = Decimal(str(value)) if unit is not None else value
    return Reading(code, Obis.parse(code), v, unit)


def live(serial: str, imp: int, exp: int, per_phase: bool = True) -> MeterData:
    """A push frame shaped like an Iskraemeco AM550 'live' telegram (import/export registers)."""
    readings = [R("0-0:96.1.0.255", serial), R("1-0:1.7.0.255", imp, "W"), R("1-0:2.7.0.255", exp, "W"),
                R("1-0:32.7.0.255", "230.0", "V"), R("1-0:52.7.0.255", "231.0", "V"), R("1-0:72.7.0.255", "232.0", "V"),
                R("1-0:31.7.0.255", "3.00", "A"), R("1-0:51.7.0.255", "2.00", "A"), R("1-0:71.7.0.255", "1.00", "A"),
                R("1-0:1.8.0.255", 1234567, "Wh"), R("1-0:2.8.0.255", 89012, "Wh"), R("1-0:14.7.0.255", "50.01", "Hz")]
    if per_phase:
        # split the net power 3:2:1 over the phases, import on all when importing, export when exporting
        for (ci, ce), share in zip(((21, 22), (41, 42), (61, 62)), (3, 2, 1)):
            readings += [R(f"1-0:{ci}.7.0.255", imp * share // 6, "W"), R(f"1-0:{ce}.7.0.255", exp * share // 6, "W")]
    return MeterData("push", tuple(readings), meter_id=serial)


def usage(serial: str, fwd_wh: int) -> MeterData:
    return MeterData("push", (R("0-0:96.1.0.255", serial), R("1-0:1.8.0.255", fwd_wh, "Wh"),
                              R("1-0:2.8.0.255", 5000, "Wh")), meter_id=serial)


def grid(c: VenusClient, timeout: float = WAIT) -> str:
    return c.wait_for(lambda cl: cl.service("grid"), timeout)


# ------------------------------------------------------------------------ discovery
def test_discovered_only_after_first_reading_with_every_path(rig: Rig, client: VenusClient) -> None:
    rig.start_settings()
    b = rig.bridge(custom_name="Netzanschluss", connection="DLMS push /dev/ttyUSB0")
    client.wait_for(lambda c: b.status().get("bus_connected"), WAIT)
    assert client.service("grid") is None  # connected to the bus, but no reading yet: no name
    b.publish(live("ISK1030789375606", 1200, 0))
    name = grid(client)
    assert name == "com.victronenergy.grid.dlms_ISK1030789375606"
    first_scan = dict(client.cache[name])  # what GetItems returned when the name appeared
    assert first_scan["/Ac/Power"] == 1200.0 and first_scan["/Connected"] == 1
    items = client.get_items(name)
    expected_paths = {"/Mgmt/ProcessName", "/Mgmt/ProcessVersion", "/Mgmt/Connection", "/DeviceInstance",
                      "/ProductId", "/ProductName", "/FirmwareVersion", "/HardwareVersion", "/Connected",
                      "/CustomName", "/Serial", "/Role", "/AllowedRoles", "/NrOfPhases", "/RefreshTime",
                      "/ErrorCode", "/Ac/Power", "/Ac/Energy/Forward", "/Ac/Energy/Reverse", "/Ac/Frequency",
                      "/Ac/Current", "/Ac/Voltage", "/Ac/PowerFactor"}
    for ph in (1, 2, 3):
        expected_paths |= {f"/Ac/L{ph}/{q}" for q in ("Power", "Voltage", "Current", "PowerFactor",
                                                      "Energy/Forward", "Energy/Reverse")}
    assert expected_paths <= set(items)
    assert "/Position" not in items  # grid role has no position
    assert items["/ProductId"] == {"Value": 0xFFFF, "Text": "0xFFFF"}
    assert items["/Serial"]["Value"] == "ISK1030789375606"
    assert items["/CustomName"]["Value"] == "Netzanschluss"
    assert items["/Mgmt/Connection"]["Value"] == "DLMS push /dev/ttyUSB0"
    assert items["/NrOfPhases"]["Value"] == 3
    assert items["/Role"]["Value"] == "grid" and "pvinverter" in items["/AllowedRoles"]["Value"]
    assert items["/DeviceInstance"]["Value"] == 40
    assert items["/Ac/Energy/Forward"] == {"Value": 1234.567, "Text": "1234.57 kWh"}
    assert items["/Ac/L1/Power"]["Value"] == 600.0 and items["/Ac/L1/Current"]["Value"] == 3.0
    # per-path reads the way VeDbusItemImport does them (no interface name)
    assert client.get_value(name, "/Ac/L3/Voltage", iface=None) == 232.0
    assert client.get_text(name, "/Ac/Frequency") == "50.01 Hz"


def test_import_and_export_frames_values_and_signs(rig: Rig, client: VenusClient) -> None:
    rig.start_settings()
    b = rig.bridge()
    b.publish(live("SIGN1", 3000, 0))
    name = grid(client)
    client.clear_events()
    b.publish(live("SIGN1", 0, 1800))
    client.wait_for(lambda c: c.value(name, "/Ac/Power") == -1800.0)
    v = client.cache[name]
    assert (v["/Ac/L1/Power"], v["/Ac/L2/Power"], v["/Ac/L3/Power"]) == (-900.0, -600.0, -300.0)
    assert (v["/Ac/L1/Current"], v["/Ac/L2/Current"], v["/Ac/L3/Current"]) == (-3.0, -2.0, -1.0)
    assert v["/Ac/Current"] == -6.0
    items_changed = [e for e in client.events if e[2] == "ItemsChanged"]
    assert len(items_changed) == 1  # one publish -> one ItemsChanged
    assert "/Ac/L1/Voltage" not in items_changed[0][3]  # unchanged paths are not resent
    b.publish(live("SIGN1", 450, 0))
    client.wait_for(lambda c: c.value(name, "/Ac/Power") == 450.0)
    assert client.value(name, "/Ac/L2/Current") == 2.0


def test_reading_without_unit_never_reaches_the_bus(rig: Rig, client: VenusClient) -> None:
    rig.start_settings()
    b = rig.bridge()
    frame = MeterData("push", (R("0-0:96.1.0.255", "NOUNIT"), R("1-0:1.7.0.255", 10, "W"),
                               R("1-0:2.7.0.255", 0, "W"), R("1-0:1.8.0.255", 99999, None)), meter_id="NOUNIT")
    b.publish(frame)
    name = grid(client)
    assert client.get_items(name)["/Ac/Energy/Forward"] == {"Value": None, "Text": "---"}


# ---------------------------------------------------------------- VRM instance
def test_device_instance_next_free_and_existing_record_kept(rig: Rig, client: VenusClient) -> None:
    rig.start_settings(preload={"/Settings/Devices/other_meter/ClassAndVrmInstance": ("s", "grid:40"),
                                "/Settings/Devices/dlms_KEEP/ClassAndVrmInstance": ("s", "grid:45")})
    b1 = rig.bridge()
    b1.publish(live("NEWMETER", 100, 0))
    n1 = client.wait_for(lambda c: "com.victronenergy.grid.dlms_NEWMETER" in c.cache and "com.victronenergy.grid.dlms_NEWMETER")
    assert client.get_value(n1, "/DeviceInstance") == 41  # 40 is taken by another device
    assert rig.settings.values["/Settings/Devices/dlms_NEWMETER/ClassAndVrmInstance"] == "grid:41"
    b2 = rig.bridge()
    b2.publish(live("KEEP", 100, 0))
    n2 = client.wait_for(lambda c: "com.victronenergy.grid.dlms_KEEP" in c.cache and "com.victronenergy.grid.dlms_KEEP")
    assert client.get_value(n2, "/DeviceInstance") == 45  # an existing record is kept


def test_instance_change_in_gui_is_followed(rig: Rig, client: VenusClient) -> None:
    s = rig.start_settings()
    b = rig.bridge()
    b.publish(live("INST", 100, 0))
    name = grid(client)
    path = "/Settings/Devices/dlms_INST/ClassAndVrmInstance"
    assert client.set_value("com.victronenergy.settings", path, Variant("s", "grid:47")) == 0
    client.wait_for(lambda c: c.value(name, "/DeviceInstance") == 47)
    assert s.values[path] == "grid:47"
    assert client.service("grid") == name  # same service, no re-registration


# ------------------------------------------------------------------------ roles
def test_role_switch_to_pvinverter_and_back(rig: Rig, client: VenusClient) -> None:
    s = rig.start_settings()
    b = rig.bridge()
    b.publish(live("ROLE", 2000, 0))
    name = grid(client)
    assert client.set_value(name, "/Role", Variant("s", "pvinverter")) == 0
    pv = client.wait_for(lambda c: c.service("pvinverter") and c.service("grid") is None and c.service("pvinverter"))
    assert pv == "com.victronenergy.pvinverter.dlms_ROLE"  # same suffix, new role
    assert s.values["/Settings/Devices/dlms_ROLE/ClassAndVrmInstance"] == "pvinverter:40"
    items = client.get_items(pv)
    assert items["/Role"]["Value"] == "pvinverter" and items["/Position"]["Value"] == 0
    assert items["/IsGenericEnergyMeter"]["Value"] == 1
    assert items["/Ac/Power"]["Value"] == 2000.0 and items["/Connected"]["Value"] == 1  # values carried over
    assert client.set_value(pv, "/Position", Variant("i", 2)) == 0
    client.wait_for(lambda c: s.values.get("/Settings/Devices/dlms_ROLE/Position") == 2)
    assert client.set_value(pv, "/Role", Variant("s", "heatingrod")) == 2  # not an allowed role
    assert client.set_value(pv, "/Role", Variant("s", "grid")) == 0
    back = client.wait_for(lambda c: c.service("grid") and c.service("pvinverter") is None and c.service("grid"))
    assert back == name
    assert "/Position" not in client.get_items(back)
    b.publish(live("ROLE", 0, 700))
    client.wait_for(lambda c: c.value(back, "/Ac/Power") == -700.0)


def test_role_and_instance_survive_a_restart(rig: Rig, client: VenusClient) -> None:
    s = rig.start_settings()
    b = rig.bridge()
    b.publish(live("RESTART", 100, 0))
    name = grid(client)
    assert client.set_value(name, "/Role", Variant("s", "genset")) == 0
    gen = client.wait_for(lambda c: c.service("genset"))
    assert client.set_value("com.victronenergy.settings", "/Settings/Devices/dlms_RESTART/ClassAndVrmInstance",
                            Variant("s", "genset:44")) == 0
    client.wait_for(lambda c: c.value(gen, "/DeviceInstance") == 44)
    assert "/Position" not in client.get_items(gen)  # a genset has no AC position
    b.stop(5.0)
    client.wait_for(lambda c: c.service("genset") is None)
    b2 = rig.bridge(role="grid")  # the configured role is only the first-start default
    b2.publish(live("RESTART", 100, 0))
    again = client.wait_for(lambda c: c.service("genset"))
    assert again == gen and client.get_value(again, "/DeviceInstance") == 44
    assert s.values["/Settings/Devices/dlms_RESTART/ClassAndVrmInstance"] == "genset:44"


def test_role_switch_without_localsettings(rig: Rig, client: VenusClient) -> None:
    b = rig.bridge(device_suffix="lonely")
    b.publish(live("L", 100, 0))
    name = grid(client)
    assert client.set_value(name, "/Role", Variant("s", "acload")) == 0
    acl = client.wait_for(lambda c: c.service("acload"))
    assert acl == "com.victronenergy.acload.lonely" and client.service("grid") is None


def test_settings_standin_follows_localsettings_rules(rig: Rig, client: VenusClient) -> None:
    """The stand-in itself: AddSetting keeps existing records, ClassAndVrmInstance stays unique."""
    s = rig.start_settings()
    svc = "com.victronenergy.settings"
    assert client.call(svc, "/Settings", "AddSetting", "ssvsvv",
                       ["Test", "Speed", Variant("i", 5), "i", Variant("i", 0), Variant("i", 10)],
                       iface="com.victronenergy.Settings")[0] == 0
    assert s.values["/Settings/Test/Speed"] == 5
    assert client.set_value(svc, "/Settings/Test/Speed", Variant("i", 11)) == -1  # above max
    assert client.set_value(svc, "/Settings/Test/Speed", Variant("i", 7)) == 0
    assert client.call(svc, "/Settings", "AddSetting", "ssvsvv",
                       ["Test", "Speed", Variant("i", 5), "i", Variant("i", 0), Variant("i", 10)],
                       iface="com.victronenergy.Settings")[0] == 0
    assert client.get_value(svc, "/Settings/Test/Speed") == 7  # existing record kept
    for dev in ("a", "b"):
        client.call(svc, "/", "AddSettings", "aa{sv}",
                    [[{"path": Variant("s", f"/Settings/Devices/{dev}/ClassAndVrmInstance"),
                       "default": Variant("s", "grid:40")}]], iface="com.victronenergy.Settings")
    assert (s.values["/Settings/Devices/a/ClassAndVrmInstance"],
            s.values["/Settings/Devices/b/ClassAndVrmInstance"]) == ("grid:40", "grid:41")
    assert client.set_value(svc, "/Settings/Devices/b/ClassAndVrmInstance", Variant("s", "grid:40")) == 0
    assert s.values["/Settings/Devices/b/ClassAndVrmInstance"] == "grid:41"  # 40 is taken: next free


def test_role_change_written_in_settings_is_followed(rig: Rig, client: VenusClient) -> None:
    s = rig.start_settings()
    b = rig.bridge()
    b.publish(live("SROLE", 100, 0))
    grid(client)
    path = "/Settings/Devices/dlms_SROLE/ClassAndVrmInstance"
    assert client.set_value("com.victronenergy.settings", path, Variant("s", "acload:40")) == 0
    acl = client.wait_for(lambda c: c.service("acload"))
    assert client.get_value(acl, "/Role") == "acload" and client.get_value(acl, "/Position") == 0
    assert client.set_value("com.victronenergy.settings", path, Variant("s", "grid:40")) == 0
    client.wait_for(lambda c: c.service("grid") and c.service("acload") is None)
    assert s.values[path] == "grid:40"


def test_custom_name_written_on_the_bus_is_persisted(rig: Rig, client: VenusClient) -> None:
    s = rig.start_settings()
    b = rig.bridge(custom_name="from config")
    b.publish(live("NAME", 100, 0))
    name = grid(client)
    assert client.get_value(name, "/CustomName") == "from config"
    assert client.set_value(name, "/CustomName", Variant("s", "Zähler Keller")) == 0
    client.wait_for(lambda c: s.values.get("/Settings/Devices/dlms_NAME/CustomName") == "Zähler Keller")
    assert client.set_value("com.victronenergy.settings", "/Settings/Devices/dlms_NAME/CustomName",
                            Variant("s", "Hausanschluss")) == 0
    client.wait_for(lambda c: c.value(name, "/CustomName") == "Hausanschluss")


def test_without_localsettings_defaults_then_follows_when_it_appears(rig: Rig, client: VenusClient) -> None:
    b = rig.bridge(device_suffix="nosettings", role="grid")
    b.publish(live("X", 100, 0))
    name = grid(client)
    assert name == "com.victronenergy.grid.nosettings"
    assert client.get_value(name, "/DeviceInstance") == 40
    rig.start_settings(preload={"/Settings/Devices/nosettings/ClassAndVrmInstance": ("s", "grid:52")})
    client.wait_for(lambda c: c.value(name, "/DeviceInstance") == 52)


# -------------------------------------------------------------------- staleness
def test_staleness_invalidates_and_recovers(rig: Rig, client: VenusClient) -> None:
    rig.start_settings()
    b = rig.bridge(timeout=1.0)
    b.publish(live("STALE", 1500, 0))
    name = grid(client)
    client.wait_for(lambda c: c.value(name, "/Connected") == 0)
    items = client.get_items(name)
    for path in ("/Ac/Power", "/Ac/L1/Power", "/Ac/L2/Current", "/Ac/Energy/Forward", "/Ac/Frequency"):
        assert items[path] == {"Value": None, "Text": "---"}, path  # empty, never 0 W
    assert items["/Serial"]["Value"] == "STALE"
    assert b.stats.get("victron_disconnects") == 1
    b.publish(live("STALE", 0, 250))
    client.wait_for(lambda c: c.value(name, "/Connected") == 1 and c.value(name, "/Ac/Power") == -250.0)
    assert client.value(name, "/Ac/Energy/Forward") == 1234.567
    assert client.service("grid") == name  # the service stayed; only its values went invalid


def test_power_goes_stale_while_energy_frames_continue(rig: Rig, client: VenusClient) -> None:
    """A two-telegram meter whose live frames stop: power must not freeze at its last value."""
    rig.start_settings()
    b = rig.bridge(timeout=1.0)
    b.publish(usage("TWO", 1000))
    assert not b.wait_registered(0.5) or client.service("grid") is None
    b.publish(live("TWO", 800, 0, per_phase=False))
    name = grid(client)
    stop = threading.Event()

    def feed() -> None:
        wh = 1000
        while not stop.is_set():
            wh += 1
            b.publish(usage("TWO", wh))
            time.sleep(0.2)

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    try:
        client.wait_for(lambda c: c.value(name, "/Ac/Power") is None)
        assert client.value(name, "/Connected") == 1
        assert client.value(name, "/Ac/Energy/Forward") is not None
    finally:
        stop.set()
        t.join(5)


def test_publish_from_many_threads(rig: Rig, client: VenusClient) -> None:
    rig.start_settings()
    b = rig.bridge()
    b.publish(live("THREADS", 1, 0))
    name = grid(client)
    threads = [threading.Thread(target=lambda k=k: [b.publish(live("THREADS", k * 100 + i, 0)) for i in range(50)])
               for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    b.publish(live("THREADS", 0, 4242))
    client.wait_for(lambda c: c.value(name, "/Ac/Power") == -4242.0)


def test_bad_settings_are_rejected_before_start() -> None:
    with pytest.raises(ConfigurationError, match="role"):
        BridgeSettings(role="battery")
    with pytest.raises(ConfigurationError, match="timeout"):
        BridgeSettings(timeout=0)
    with pytest.raises(ConfigurationError, match="mapping file"):
        VictronBridge(BridgeSettings(mapping_file="/nonexistent.json"))


def test_unreachable_bus_does_not_block_and_stop_returns(daemon: DbusDaemon) -> None:
    b = VictronBridge(BridgeSettings(bus="unix:path=/nonexistent/dbus-socket"))
    b.start()
    b.publish(live("NOBUS", 1, 0))
    assert b.status()["running"] is True
    b.stop(3.0)
    assert b.stats.get("transport_errors") >= 1


def test_short_stop_timeout_still_leaves_the_bus(rig: Rig, client: VenusClient) -> None:
    """The SmartHomeNG plugin stops the bridge with a fraction of a second to spare."""
    rig.start_settings()
    b = VictronBridge(BridgeSettings(bus=rig.daemon.address))
    b.start()
    b.publish(live("QUICK", 100, 0))
    name = grid(client)
    b.stop(0.05)
    client.wait_for(lambda c: name not in c.cache)
