"""The SmartHomeNG plugin in ``mode: poll``, through the SmartHomeNG test double, against the simulated
DLMS meter (TCP wrapper and optical mode E on a pty); Victron on a real private dbus-daemon."""
from __future__ import annotations

import sys
from decimal import Decimal

import pytest

from dlms_protocol.simulator.cosem_model import demo_model
from dlms_protocol.simulator.dlms_meter import DlmsPtyMeter, DlmsTcpMeter
from shng_double.testing import wait_for
from test_shng_plugin import shng, start, value  # noqa: F401 - shng is a fixture

ITEMS = {
    "meter": {
        "energy_import": {"type": "num", "dlms_obis_code": "1-0:1.8.0"},
        "voltage_l1": {"type": "num", "dlms_obis_code": "1-0:32.7.0"},
        "power": {"type": "num", "dlms_obis_code": "1.7.0"},
        "net_power": {"type": "num", "dlms_obis_code": "16.7.0"},
        "serial": {"type": "str", "dlms_obis_code": "0-0:96.1.0"},
    },
}


def test_poll_mode_reads_what_the_items_want(shng):  # noqa: F811
    with DlmsTcpMeter(demo_model()) as meter:
        start(shng, {"dlms": {"serialport": meter.url, "mode": "poll", "update_cycle": 60}}, ITEMS)
        wait_for(lambda: value(shng, "meter.energy_import") == 12345678, timeout=30)
        assert value(shng, "meter.voltage_l1") == 230.1
        assert value(shng, "meter.power") == 1234
        assert value(shng, "meter.net_power") == 1234       # derived by the pipeline: 1.7.0 - 2.7.0 (both polled)
        assert value(shng, "meter.serial") == "12345678"
        plugin = shng.plugin("dlms")
        # the cycle reads the items' objects (and 2.7.0, which the net power needs), nothing else
        gets = [d for n, d in meter.events if n == "get" and d.endswith("attribute 2")]
        assert "1.0.2.8.0.255 attribute 2" not in gets and "1.0.1.8.0.255 attribute 2" in gets
        assert "1.0.2.7.0.255 attribute 2" in gets
        meter.model.set_value("1.0.1.8.0.255", 12346000)
        before = plugin.status()["successes"]
        assert plugin.read_now() is True
        wait_for(lambda: plugin.status()["successes"] > before, timeout=30)
        wait_for(lambda: value(shng, "meter.energy_import") == 12346000, timeout=30)
        plugin.stop()


def test_poll_mode_wrong_password_keeps_items_and_says_why(shng, caplog):  # noqa: F811
    with DlmsTcpMeter(demo_model()) as meter:
        start(shng, {"dlms": {"serialport": meter.url, "mode": "poll", "update_cycle": 60, "client_address": 32,
                              "authentication": "low", "password": "not-the-one"}}, ITEMS)
        plugin = shng.plugin("dlms")
        wait_for(lambda: plugin.status()["failures"] >= 1, timeout=30)
        assert "refused the password" in plugin.status()["last_error"]
        assert value(shng, "meter.energy_import") == 0                  # never written: no fake value
        assert "not-the-one" not in caplog.text and "not-the-one" not in plugin.status()["last_error"]
        # the web interface lists the poll parameters (not the D0 readout's), the password only as set
        rows = dict(plugin.config_rows())
        assert rows["client_address"] == "32" and rows["authentication"] == "low" and rows["password"] == "gesetzt"
        assert "querycode" not in rows and "use_checksum" not in rows and "not-the-one" not in repr(rows)
        plugin.stop()


def test_poll_statistics_have_their_own_labels(shng):  # noqa: F811
    """A poll's phases were shown as their keys (sign-on, association), and its reading phase under
    the label of the 'reads' counter (Auslesungen 0.301)."""
    with DlmsTcpMeter(demo_model()) as meter:
        start(shng, {"dlms": {"serialport": meter.url, "mode": "poll", "update_cycle": 60}}, ITEMS)
        plugin = shng.plugin("dlms")
        wait_for(lambda: plugin.status()["successes"] >= 1, timeout=30)
        durations = plugin.status()["durations"]
        assert {"sign-on", "association", "reading", "total"} <= set(durations) and "reads" not in durations
        data = shng.webif("dlms")._data()
        labels = [data["labels"].get(k, k) for k in list(durations) + list(plugin.status()["counters"])]
        assert all(label.startswith(("Dauer", "Objektliste")) for label in labels[:len(durations)]), labels
        assert "Dauer Abfrage der Werte (s)" in labels and "Objektliste gelesen" in labels
        assert not {"sign-on", "association", "reading", "discoveries"} & set(labels)
        plugin.stop()


def test_poll_mode_e_reaches_victron_on_a_real_bus(shng):  # noqa: F811
    from dbus_fixtures import DbusDaemon, SettingsStandIn, VenusClient, have_dbus
    from helpers import need
    need(have_dbus(), "dbus-daemon is not installed (apt-get install dbus-daemon)")
    daemon = DbusDaemon()
    settings = SettingsStandIn(daemon.address)
    client = VenusClient(daemon.address)
    meter = DlmsPtyMeter(demo_model(), mode_e=True, time_scale=10.0).start()
    try:
        start(shng, {"dlms": {"serialport": meter.port, "mode": "poll", "poll_mode_e": True, "update_cycle": 60,
                              "victron_publish": True, "victron_bus": daemon.address}}, ITEMS, time_scale=10.0)
        name = client.wait_for(lambda c: c.service("grid"), 30)
        client.wait_for(lambda c: c.value(name, "/Ac/Energy/Forward") == pytest.approx(12345.678), 30)
        client.wait_for(lambda c: c.value(name, "/Ac/Power") == pytest.approx(1234.0), 30)
        assert value(shng, "meter.energy_import") == 12345678            # items and D-Bus from one poll
        assert meter.event_names()[:4] == ["sign-on", "identification", "ack", "mode-e"]
        assert Decimal(str(value(shng, "meter.voltage_l1"))) == Decimal("230.1")
        shng.plugin("dlms").stop()
        client.wait_for(lambda c: c.service("grid") is None, 30)
    finally:
        shng.stop()
        meter.stop()
        client.stop()
        settings.stop()
        daemon.stop()
        # forget the plugin's Victron modules: test_shng_plugin checks what happens when they cannot be imported
        for module in [m for m in sys.modules if m.startswith("plugins.dlms.dlms_protocol.victron.")]:
            del sys.modules[module]


def test_load_profile_rows_reach_list_and_dict_items(shng):  # noqa: F811
    """``dlms_profile``: the load profile is read (without poll_profiles), only its new rows each cycle:
    a list item gets them all, a dict item the newest, each {time, values, units}."""
    items = {"meter": {"energy_import": {"type": "num", "dlms_obis_code": "1-0:1.8.0"},
                       "profile": {"type": "list", "dlms_profile": "1-0:99.1.0"},
                       "newest": {"type": "dict", "dlms_profile": "1-0:99.1.0.255"}}}
    with DlmsTcpMeter(demo_model()) as meter:
        rows = meter.model.profile_rows
        assert len(rows) >= 2
        start(shng, {"dlms": {"serialport": meter.url, "mode": "poll", "update_cycle": 60}}, items)
        wait_for(lambda: len(value(shng, "meter.profile")) == len(rows), timeout=30)
        got = value(shng, "meter.profile")
        assert [r["time"] for r in got] == [r.when.isoformat() for r in rows]
        assert got[0]["values"] == {"1-0:1.8.0.255": rows[0].values[0], "1-0:2.8.0.255": rows[0].values[1]}
        assert got[0]["units"] == {"1-0:1.8.0.255": "Wh", "1-0:2.8.0.255": "Wh"}
        assert value(shng, "meter.newest") == got[-1]
        new = meter.model.add_profile_row((12350000, 2350000))
        plugin = shng.plugin("dlms")
        assert plugin.read_now() is True
        wait_for(lambda: [r["time"] for r in value(shng, "meter.profile")] == [new.when.isoformat()], timeout=30)
        assert value(shng, "meter.newest")["values"]["1-0:1.8.0.255"] == 12350000
        plugin.stop()


def test_load_profile_item_of_a_wrong_type_is_named(shng, caplog):  # noqa: F811
    import logging

    caplog.set_level(logging.WARNING)
    logger = logging.getLogger("plugins.dlms")  # directly: an earlier test may have changed propagation
    logger.addHandler(caplog.handler)
    items = {"meter": {"profile": {"type": "num", "dlms_profile": "1-0:99.1.0"},
                       "typo": {"type": "list", "dlms_profile": "99.1.x"}}}
    with DlmsTcpMeter(demo_model()) as meter:
        start(shng, {"dlms": {"serialport": meter.url, "mode": "poll", "update_cycle": 60}}, items)
        assert "item meter.profile: dlms_profile needs type list" in caplog.text
        assert "item meter.typo: dlms_profile '99.1.x' is no OBIS code" in caplog.text
        logger.removeHandler(caplog.handler)
        assert shng.plugin("dlms")._profile_items == {}
        shng.plugin("dlms").stop()


def test_the_meter_id_is_read_when_no_item_names_it(shng):  # noqa: F811
    """Items that ask for energy and power only: the poll reads the meter's serial number with them
    (one more attribute of the same request), so the web interface, MQTT's device and Victron's
    /Serial know the meter; before, the page said 'Zähler -'."""
    items = {"meter": {"energy_import": {"type": "num", "dlms_obis_code": "1-0:1.8.0"}}}
    with DlmsTcpMeter(demo_model()) as meter:
        start(shng, {"dlms": {"serialport": meter.url, "mode": "poll", "update_cycle": 60}}, items)
        plugin = shng.plugin("dlms")
        wait_for(lambda: value(shng, "meter.energy_import") == 12345678, timeout=30)
        assert plugin._last_data.meter_id == "12345678"
        gets = [d for n, d in meter.events if n == "get" and d.endswith("attribute 2")]
        assert "0.0.96.1.0.255 attribute 2" in gets and "0.0.96.1.1.255 attribute 2" not in gets
        plugin.stop()


def test_the_identity_object_is_the_best_readable_one() -> None:
    from dlms_protocol.obis import Obis
    from dlms_protocol.poll.poller import CLASS_DATA, CLASS_REGISTER, PolledObject, _identity_of

    def obj(code: str, class_id: int = CLASS_DATA) -> PolledObject:
        return PolledObject(class_id, code, Obis.parse(code), gx=None)

    ldn, serial, energy = obj("0-0:42.0.0.255"), obj("0-0:96.1.0.255"), obj("1-0:1.8.0.255", CLASS_REGISTER)
    catalog = [energy, ldn, serial, obj("0-1:96.1.0.255")]  # (0-1: an M-Bus sub-meter's number, never this meter's)
    assert _identity_of(catalog, [energy], set()) == [serial]              # 96.1.0 ranks before 42.0.0
    assert _identity_of(catalog, [energy], {serial.code}) == [ldn]         # this client may not read it
    assert _identity_of(catalog, [energy, ldn], set()) == []               # asked for already
    assert _identity_of([energy, obj("0-1:96.1.0.255")], [energy], set()) == []
    assert _identity_of([energy, obj("0-0:96.1.0.255", CLASS_REGISTER)], [energy], set()) == []  # (data objects only)
