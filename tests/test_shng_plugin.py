"""The SmartHomeNG plugin, driven through the SmartHomeNG test double (tests/shng_double).

Three layers:

1. the double itself behaves like SmartHomeNG 1.11 where the plugin depends on it (so a plugin
   bug cannot hide behind a lenient double);
2. plugin_support (attribute forms, 1.9.5 conversions, type fitting) with examples and
   property-based tests;
3. end to end: the plugin loaded from plugin.yaml, items from YAML, a simulated meter on a real
   pseudo-terminal (D0 readout and DLMS push), faults (bad BCC, wrong key, unplugged port),
   stop/restart, pause item, two instances, discovery.

Expected values come from the simulator's own record of what it sent (or from the sample
meter text), never from the plugin.
"""
from __future__ import annotations

import datetime
import logging
import os
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from shng_double import SmartHome
from shng_double.item import Item
from shng_double.metadata import AttributeRegistry, Metadata
from shng_double.testing import ROOT, plugin_package, plugins_dir, support, wait_for

from dlms_protocol.simulator import SimulatedMeter
from dlms_protocol.simulator.push import PushSimulator

KEY = bytes(range(16))
AUTH = bytes(range(16, 32))
OTHER_KEY = bytes(range(100, 116))
TIME_SCALE = 1.0  # speed of the simulated D0 meters (real time: about 2.5 s per E350 readout)


# =========================================================================== fixtures
@pytest.fixture
def shng() -> Iterator[SmartHome]:
    sh = SmartHome(plugins_dir())
    yield sh
    sh.stop()


def start(sh: SmartHome, sections: Dict[str, dict], items: Dict[str, Any], time_scale: float = TIME_SCALE) -> None:
    """Load sections and items, then start, as SmartHomeNG does (tests speed D0 meters up)."""
    loaded = sh.load_plugins({name: dict(section, plugin_name="dlms") for name, section in sections.items()})
    assert len(loaded) == len(sections)
    for plugin in loaded:
        plugin._reader_options = {"time_scale": time_scale}
    sh.load_item_tree(items)
    sh.start()


def value(sh: SmartHome, path: str) -> Any:
    item = sh.items.return_item(path)
    assert item is not None, f"item {path} was not created"
    return item()


@pytest.fixture
def d0_meter() -> Iterator[SimulatedMeter]:
    meter = SimulatedMeter("lgz_e350", time_scale=TIME_SCALE).start()
    yield meter
    meter.stop()


@pytest.fixture
def push_meter() -> Iterator[PushSimulator]:
    """A push meter on a P1/HAN-speed line; tests push with push_once() or start() it."""
    sim = PushSimulator(wrapper="hdlc", interval=0.25, seed=3)
    sim.open_pty(baudrate=115200, parity="N")
    yield sim
    sim.stop()


def sample_lines(name: str = "lgz_e350") -> Dict[str, str]:
    """code -> the text of its data set, from the sample meter file (the test's own expectation)."""
    text = (ROOT / "dlms_protocol" / "data" / "sample_meters" / f"{name}.txt").read_text(encoding="ascii")
    out = {}
    for line in text.splitlines()[1:]:
        if "(" in line:
            out.setdefault(line.split("(")[0], line)
    return out


def sent(sim: PushSimulator, dotted: str) -> Decimal:
    raw, scaler, _unit = sim.last_registers[dotted]
    return Decimal(raw).scaleb(scaler)


def push_once(sim: PushSimulator, sh: SmartHome, configname: str = "dlms") -> None:
    """Send one push and wait until the plugin has written it (so sim.last_registers is what items hold)."""
    plugin = sh.plugin(configname)
    wait_for(lambda: plugin._listener is not None and plugin._listener.connected)
    before = plugin.status()["successes"]
    assert sim.send_once()
    wait_for(lambda: plugin.status()["successes"] > before)


# =========================================================================== 1. the double
def test_double_parameter_rules(shng: SmartHome, caplog) -> None:
    """Clamping, valid_list, valid_list_ci, bool strings, wrong types: as SmartHomeNG 1.11 does it."""
    caplog.set_level(logging.INFO)
    plugin = shng.load_plugin("dlms", {
        "plugin_name": "dlms", "serialport": "/dev/null-not-opened", "update_cycle": -5, "timeout": 99,
        "listen_baudrate": 1234, "mode": "LISTEN", "use_checksum": "off", "no_waiting": "yes", "retries": "abc",
        "instance": "b",
    })
    assert plugin is not None
    assert plugin.get_parameter_value("update_cycle") == 0            # clamped to valid_min
    assert plugin.get_parameter_value("timeout") == 30                # clamped to valid_max
    assert plugin.get_parameter_value("listen_baudrate") == 0         # first of valid_list (the protocol's usual)
    assert plugin.get_parameter_value("mode") == "listen"             # valid_list_ci → lower case
    assert plugin.get_parameter_value("use_checksum") is False
    assert plugin.get_parameter_value("no_waiting") is True
    assert plugin.get_parameter_value("retries") == 1                 # invalid int → default
    assert plugin.get_parameter_value("instance") == ""               # the loader strips it
    assert plugin.get_instance_name() == "b" and plugin.get_fullname() == "dlms_b"
    assert plugin.get_parameter_value("undeclared") is None
    assert "Found invalid value 'abc'" in caplog.text


def test_double_mandatory_parameter(shng: SmartHome, caplog) -> None:
    assert shng.load_plugin("dlms", {"plugin_name": "dlms"}) is None
    assert "'serialport' is mandatory" in caplog.text


def test_double_item_casting() -> None:
    num = Item("n", {"type": "num"})
    num("001234.567")
    assert num() == 1234.567
    num("12,5")                       # rejected, keeps the value
    assert num() == 1234.567
    num(Decimal("99.75"))             # the real core casts with int() first: truncation
    assert num() == 99
    text = Item("s", {"type": "str"})
    text(b"raw")
    assert text() == ""
    text(datetime.date(2024, 1, 2))
    assert text() == ""
    flag = Item("b", {"type": "bool"})
    flag(2)
    assert flag() is False
    flag("on")
    assert flag() is True
    assert num(None) == 99                     # item(None) is a read, not a write


def test_double_instance_attributes() -> None:
    plugin_package()
    sp = __import__("lib.model.smartplugin", fromlist=["SmartPlugin"])

    class P(sp.SmartPlugin):
        PLUGIN_VERSION = "0"

    unnamed, named = P.__new__(P), P.__new__(P)
    named._set_instance_name("b")
    conf = {"a": 1, "c@b": 3, "d@*": 4}
    assert unnamed.has_iattr(conf, "a") and not named.has_iattr(conf, "a")
    assert named.has_iattr(conf, "c") and not unnamed.has_iattr(conf, "c")
    assert unnamed.get_iattr_value(conf, "d") == 4 and named.get_iattr_value(conf, "d") == 4


def test_double_list_length_bug_drops_item(tmp_path: Path) -> None:
    """What makes ``list(4, …)`` attribute types unusable in 1.11 (and why plugin.yaml avoids them)."""
    meta_file = tmp_path / "plugin.yaml"
    meta_file.write_text(yaml.safe_dump({"plugin": {"version": "1"}, "item_attributes": {
        "fixed": {"type": "list(4,str,int,str,str)"}, "free": {"type": "list"}}}))
    registry = AttributeRegistry()
    registry.add(Metadata(meta_file))
    assert registry.check("x", "free", "1.8.0") == ["1.8.0"]
    assert registry.check("x", "fixed", ["1.8.0", 0, "Value", "num"]) == ["1.8.0", 0, "Value", "num"]
    with pytest.raises(KeyError):
        registry.check("x", "fixed", "1.8.0")


def test_double_reads_yaml_like_smarthomeng(tmp_path: Path) -> None:
    """YAML 1.2 (ruamel): an unquoted 8E1 is 80.0, which crashes valid_list_ci in the 1.11 core."""
    meta_file = tmp_path / "plugin.yaml"
    meta_file.write_text("plugin:\n    version: 1\nparameters:\n    fmt:\n        type: str\n        default: 8E1\n"
                         "        valid_list_ci:\n            - 8e1\n            - 8n1\n    flag:\n        type: str\n"
                         "        default: yes\n")
    meta = Metadata(meta_file)
    assert meta.parameters["fmt"]["default"] == 80.0 and meta.parameters["flag"]["default"] == "yes"
    with pytest.raises(AttributeError):
        meta.check_parameters({})


def test_double_scheduler_first_run_needs_next(shng: SmartHome) -> None:
    calls: List[str] = []
    shng.scheduler.add("late", lambda: calls.append("late"), cycle=1)
    shng.scheduler.add("now", lambda: calls.append("now"), cycle=1, next=shng.shtime.now())
    assert shng.scheduler.return_next("late") > shng.shtime.now() + datetime.timedelta(seconds=9)
    wait_for(lambda: "now" in calls)
    assert "late" not in calls


# =========================================================================== 2. metadata
def _metadata() -> dict:
    """plugin.yaml as SmartHomeNG reads it (YAML 1.2: an unquoted 8E1 is the float 80.0)."""
    from shng_double import yaml12
    return yaml12.load((ROOT / "plugin.yaml").read_text(encoding="utf-8"))


def test_metadata_complete_and_safe() -> None:
    meta = _metadata()
    plugin = meta["plugin"]
    assert plugin["multi_instance"] is True and plugin["restartable"] is True
    assert str(plugin["version"]) == plugin_package().DLMS.PLUGIN_VERSION
    assert isinstance(plugin["sh_minversion"], str) and isinstance(plugin["py_minversion"], str)
    for section in ("parameters", "item_attributes", "plugin_functions"):
        for name, definition in meta[section].items():
            assert definition["description"]["de"] and definition["description"]["en"], (section, name)
            assert "list(" not in str(definition.get("type", "")), f"{name}: list(N,…) types break 1.11"
    params = meta["parameters"]
    assert params["key"]["hide"] is True and params["auth_key"]["hide"] is True
    assert "instance" not in params and "webif_pagelength" not in params
    for name, definition in params.items():
        assert not (definition.get("mandatory") and "default" in definition), name
        python_type = {"str": str, "int": int, "num": (int, float), "bool": bool}[definition["type"]]
        for entry in definition.get("valid_list", []) + definition.get("valid_list_ci", []):
            assert isinstance(entry, python_type), f"{name}: valid_list entry {entry!r} must be quoted"
        if "default" in definition:
            assert isinstance(definition["default"], python_type), f"{name}: default {definition['default']!r}"


def _leaves(tree: dict, path: str = "") -> Iterator[tuple]:
    for key, value in tree.items():
        if isinstance(value, dict):
            if "type" in value:
                yield f"{path}.{key}", value
            yield from _leaves(value, f"{path}.{key}")


def test_item_structs_carry_no_visu_acl() -> None:
    """visu_acl is the smartvisu plugin's attribute: without that plugin every use is a NOTICE, and
    SmartHomeNG's own struct generator adds it only on request (``-a``)."""
    structs = _metadata()["item_structs"]
    leaves = list(_leaves(structs))
    assert leaves
    for path, leaf in leaves:
        assert "visu_acl" not in leaf, path


# =========================================================================== 3. plugin_support
def test_attribute_forms() -> None:
    ps = support()
    plain = ps.parse_obis_attribute(["1-0:1.8.0*255"])
    assert not plain.legacy and plain.obis.c == 1 and plain.obis.d == 8
    for text in ("1.8.0", "1-0:1.8.0*255", "1-0:1.8.0.255", "1-0:1.8.0"):
        assert ps.parse_obis_attribute(text).obis.matches(support().Obis.parse("1-0:1.8.0*255"))
    legacy = ps.parse_obis_attribute(["1-1:1.6.1", "1", "value", "zst10"])
    assert (legacy.legacy, legacy.index, legacy.key, legacy.conversion) == (True, 1, "Value", "ZST10")
    from_conf = ps.parse_obis_attribute("1-1:1.8.1 | 0 | Unit | str")
    assert (from_conf.index, from_conf.key, from_conf.conversion) == (0, "Unit", "str")
    vendor = ps.parse_obis_attribute("VENDOR.X")
    assert vendor.obis is None


@pytest.mark.parametrize("bad, fix", [
    (1.8, "quotes"), ("", "empty"), (["1.8.0", "x"], "whole number"), (["1.8.0", -1], "negative"),
    (["1.8.0", 0, "Wert"], "neither Value nor Unit"), (["1.8.0", 0, "Value", "Z7"], "Z6"),
    (["a", 1, "Value", "num", 5], "list form"),
])
def test_attribute_errors_say_what_to_write(bad: Any, fix: str) -> None:
    ps = support()
    with pytest.raises(ps.BindingError, match=fix):
        ps.parse_obis_attribute(bad)


def test_unit_and_scale_need_plain_code() -> None:
    ps = support()
    with pytest.raises(ps.BindingError, match="plain code"):
        ps.parse_obis_attribute(["1.8.0", 0, "Value", "num"], unit="Wh")
    with pytest.raises(ps.BindingError, match="not a unit"):
        ps.parse_obis_attribute("1.8.0", unit="furlong")
    assert ps.parse_obis_attribute("1.8.0", scale=0.001).scale == Decimal("0.001")


@pytest.mark.parametrize("raw, conversion, expected", [
    ("142355", "Z6", datetime.time(14, 23, 55)),
    ("1423", "Z4", datetime.time(14, 23)),
    ("240318", "D6", datetime.date(2024, 3, 18)),
    ("2403121815", "ZST10", datetime.datetime(2024, 3, 12, 18, 15)),
    ("240312181559", "ZST12", datetime.datetime(2024, 3, 12, 18, 15, 59)),
    ("012345.678", "float", 12345.678),
    ("000007,4", "float", 7.4),
    ("00051206", "int", 51206),
    ("00051206", "num", 51206),
    ("0451.17", "num", 451.17),
    ("  PAF ", "str", "  PAF "),
    ("0451.17", "", "0451.17"),
])
def test_legacy_conversions(raw: str, conversion: str, expected: Any) -> None:
    assert support().convert_legacy(raw, conversion) == expected


def test_a_dsmr_log_gives_its_entry_count_and_its_entries_by_index() -> None:
    """What user_doc says of ``1-0:99.97.0``: the plain form is the number of entries (and is named
    so), the list form picks an entry's group, e.g. index 3 the first failure's duration in s."""
    from dlms_protocol.iec62056_21.datablock import _crc16_arc, parse_readout

    body = ("/ISK5\\2MT382-1000\r\n\r\n1-0:1.8.1(123456.789*kWh)\r\n"
            "1-0:99.97.0(2)(0-0:96.7.19)(101208152415W)(0000000240*s)(101208151004W)(0000000301*s)\r\n!")
    telegram = (body + f"{_crc16_arc(body.encode('ascii')):04X}\r\n").encode("ascii")
    data = parse_readout(telegram).to_meter_data()
    ps = support()
    plain = ps.parse_obis_attribute("1-0:99.97.0").select(data)
    assert plain is not None and plain.value == 2 and plain.name == "Power failure event log (number of entries)"
    listed = ps.parse_obis_attribute(["1-0:99.97.0", "3", "Value", "num"])
    assert ps.legacy_value(listed, listed.select(data)) == 240
    unit = ps.parse_obis_attribute(["1-0:99.97.0", "3", "Unit"])
    assert ps.legacy_value(unit, unit.select(data)) == "s"


@pytest.mark.parametrize("raw, conversion", [
    ("1423", "Z6"), ("246318", "D6"), ("abc", "num"), ("1.5", "int"), ("2413121815", "ZST10"), ("nan", "float"),
])
def test_legacy_conversion_errors(raw: str, conversion: str) -> None:
    ps = support()
    with pytest.raises(ps.ValueProblem):
        ps.convert_legacy(raw, conversion)


@pytest.mark.parametrize("raw", ["1E5", "0E00", "1e-3", "1_000", "0x1A", "inf", "١٢٣٤"])
def test_text_that_is_no_meter_number_never_becomes_one(raw: str) -> None:
    """Hex status words (96.5.5(1E5)), Python-only spellings and non-ASCII digits are no numbers:
    float('1E5') would write 100000, float('0E00') a fake 0."""
    ps = support()
    with pytest.raises(ps.ValueProblem):
        ps.fit_to_type(raw, "num", "96.5.5")
    for conversion in ("num", "float", "int"):
        with pytest.raises(ps.ValueProblem):
            ps.convert_legacy(raw, conversion, "96.5.5")


@pytest.mark.parametrize("raw, conversion", [("²²²²²²", "Z6"), ("١٢٣٤", "Z4"), ("²40318", "D6")])
def test_legacy_time_conversions_need_ascii_digits(raw: str, conversion: str) -> None:
    """str.isdigit() is also true for '²': int('²') then raised a bare ValueError out of _apply."""
    ps = support()
    with pytest.raises(ps.ValueProblem):
        ps.convert_legacy(raw, conversion)


def test_fit_to_type_never_truncates() -> None:
    ps = support()
    assert ps.fit_to_type(Decimal("1234.567"), "num") == 1234.567
    assert ps.fit_to_type(Decimal("1234"), "num") == 1234
    assert ps.fit_to_type(Decimal("1E+3"), "str") == "1000"
    assert ps.fit_to_type("000007,4", "num") == 7.4
    with pytest.raises(ps.ValueProblem):
        ps.fit_to_type("PAF", "num")
    with pytest.raises(ps.ValueProblem):
        ps.fit_to_type(datetime.date(2024, 1, 1), "num")
    assert ps.fit_to_type(datetime.date(2024, 1, 1), "str") == "2024-01-01"


def test_unit_conversion() -> None:
    ps = support()
    assert ps.convert_unit(Decimal("12345.678"), "kWh", "Wh") == Decimal("12345678")
    assert ps.convert_unit(Decimal("845"), "W", "kW") == Decimal("0.845")
    assert ps.convert_unit(Decimal("1"), "KWH", "Wh") == Decimal("1000")
    with pytest.raises(ps.ValueProblem):
        ps.convert_unit(Decimal("1"), "kW", "Wh")


def test_chart_summary_has_no_net_power_rule_of_its_own() -> None:
    """Net power for the web chart is 16.7.0 as the pipeline has it (sent, or derived once in the core
    when import and export are both known): an import-only meter has none, never import minus 0."""
    ps = support()
    from dlms_protocol.pipeline import enrich

    def data(*sets: tuple) -> Any:
        return enrich(ps.MeterData("readout", tuple(ps.Reading(code, ps.Obis.parse(code), Decimal(v), unit)
                                                    for code, v, unit in sets)))

    assert ps.grid_summary(data(("1.7.0", "1.000", "kW"))) == {}
    assert ps.grid_summary(data(("1.7.0", "1.000", "kW"), ("2.7.0", "0.250", "kW"))) == {"power": 750.0}
    assert "power" not in ps.grid_summary(data(("1.7.0", "1.000", "kW"), ("2.7.0", "0.250", None)))
    assert ps.grid_summary(data(("16.7.0", "-0.4", "kW"), ("1.7.0", "1", "kW"))) == {"power": -400.0}


_ANY = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
                    lambda inner: st.lists(inner, max_size=6), max_leaves=12)


def test_a_list_index_that_is_no_whole_number_is_a_binding_error() -> None:
    """YAML gives .inf, .nan and 1.5 as floats: int() raised OverflowError on inf (found by the
    fuzz below) and took 1.5 for 1; each is now the binding error that names the index."""
    ps = support()
    for index in (float("inf"), float("-inf"), float("nan"), 1.5, "x"):
        with pytest.raises(ps.BindingError, match="index .* is not a whole number"):
            ps.parse_obis_attribute(["1.8.0", index])
    assert ps.parse_obis_attribute(["1.8.0", 1.0]).index == ps.parse_obis_attribute(["1.8.0", "1"]).index == 1


@settings(max_examples=300, deadline=None)
@given(value=_ANY, unit=st.none() | st.text(max_size=6), scale=st.none() | st.text(max_size=6) | st.floats())
def test_attribute_parser_fuzz(value: Any, unit: Any, scale: Any) -> None:
    ps = support()
    try:
        binding = ps.parse_obis_attribute(value, unit, scale)
    except ps.BindingError as exc:
        assert ":" in str(exc)  # "<cause>: <fix>"
    else:
        assert binding.text and binding.index >= 0 and binding.key in ("Value", "Unit")


@settings(max_examples=300, deadline=None)
@given(raw=st.text(max_size=16), conversion=st.sampled_from(["", "str", "float", "int", "num", "Z6", "Z4", "D6",
                                                             "ZST10", "ZST12"]),
       item_type=st.sampled_from(["num", "str", "bool", "foo", "list", "dict", "scene"]))
def test_conversion_and_fit_fuzz(raw: str, conversion: str, item_type: str) -> None:
    """Whatever a meter sends, only ValueProblem comes out (the item then keeps its value)."""
    ps = support()
    try:
        converted = ps.convert_legacy(raw, conversion)
        ps.fit_to_type(converted, item_type, "x")
    except ps.ValueProblem:
        pass


# =========================================================================== 4. readout end to end
E350_ITEMS = {
    "meter": {
        "energy_wh": {"type": "num", "dlms_obis_code": "1.8.0", "dlms_unit": "Wh"},
        "energy_kwh": {"type": "num", "dlms_obis_code": "1-0:1.8.0*255"},
        "energy_dotted": {"type": "num", "dlms_obis_code": "1-0:1.8.0.255"},
        "energy_billing": {"type": "num", "dlms_obis_code": "1.8.0*27"},
        "voltage": {"type": "num", "dlms_obis_code": "32.7.0"},
        "power_w": {"type": "num", "dlms_obis_code": "1.7.0", "dlms_unit": "W"},
        "net_power_w": {"type": "num", "dlms_obis_code": "16.7.0", "dlms_unit": "W"},  # not sent: derived
        "ct_power": {"type": "num", "dlms_obis_code": "1.7.0", "dlms_scale": 40},
        "serial": {"type": "str", "dlms_obis_code": "0.0.0"},
        "legacy_num": {"type": "num", "dlms_obis_code": ["1.8.1", 0, "Value", "num"]},
        "legacy_raw": {"type": "str", "dlms_obis_code": ["1.8.1", 0, "Value", "str"]},
        "legacy_unit": {"type": "str", "dlms_obis_code": ["1.8.1", 0, "Unit", "str"]},
        "legacy_time": {"type": "foo", "dlms_obis_code": ["0.9.1", 0, "Value", "Z6"]},
        "legacy_date": {"type": "foo", "dlms_obis_code": ["0.9.2", 0, "Value", "D6"]},
        "max_demand_at": {"type": "foo", "dlms_obis_code": ["1.6.0", 1, "Value", "ZST10"]},
        "max_demand": {"type": "num", "dlms_obis_code": ["1.6.0", 0, "Value", "float"]},
        "status_text": {"type": "str", "dlms_obis_code": "C.3.1"},
        "missing_group": {"type": "num", "dlms_obis_code": ["1.8.1", 3, "Value", "num"]},
        "not_sent": {"type": "num", "dlms_obis_code": "99.99.99"},
        "readout": {"type": "str", "dlms_obis_readout": "yes"},
        "connected": {"type": "bool", "dlms_status": "connected"},
        "last_error": {"type": "str", "dlms_status": "last_error"},
        "checksum_errors": {"type": "num", "dlms_status": "checksum_errors"},
        "summary": {"type": "dict", "dlms_status": "summary"},
        "last_success": {"type": "num", "dlms_status": "last_success"},
    }
}


def test_readout_fills_every_form(shng: SmartHome, d0_meter: SimulatedMeter) -> None:
    start(shng, {"dlms": {"serialport": d0_meter.port, "update_cycle": 60}}, E350_ITEMS)
    wait_for(lambda: value(shng, "meter.connected"), timeout=30)
    lines = sample_lines()
    assert "(012345.678*kWh)" in lines["1.8.0"]
    assert value(shng, "meter.energy_wh") == 12345678
    assert value(shng, "meter.energy_kwh") == 12345.678
    assert value(shng, "meter.energy_dotted") == 12345.678
    assert value(shng, "meter.energy_billing") == 11981.204        # 1.8.0*27(011981.204*kWh)
    assert value(shng, "meter.voltage") == 231.4
    assert value(shng, "meter.power_w") == 845                      # 1.7.0(00.845*kW)
    assert value(shng, "meter.net_power_w") == 845                  # 1.7.0(00.845*kW) - 2.7.0(00.000*kW)
    assert value(shng, "meter.ct_power") == pytest.approx(0.845 * 40)
    assert value(shng, "meter.serial") == "41827635"
    assert value(shng, "meter.legacy_num") == 8123.456              # 1.8.1(008123.456*kWh)
    assert value(shng, "meter.legacy_raw") == "008123.456"
    assert value(shng, "meter.legacy_unit") == "kWh"
    assert value(shng, "meter.legacy_time") == datetime.time(14, 23, 55)
    assert value(shng, "meter.legacy_date") == datetime.date(2024, 3, 18)
    assert value(shng, "meter.max_demand_at") == datetime.datetime(2024, 3, 12, 18, 15)
    assert value(shng, "meter.max_demand") == 4.812
    assert value(shng, "meter.status_text") == "___-----"
    assert value(shng, "meter.missing_group") == 0                  # never written (no fake value)
    assert value(shng, "meter.not_sent") == 0
    readout = value(shng, "meter.readout")
    assert "1.8.0(012345.678*kWh)" in readout and "/LGZ5ZMF110CC.S27" in readout
    plugin = shng.plugin("dlms")
    assert "there is no index 3" in plugin._item_problems["meter.missing_group"]
    assert "99.99.99 is not in the data" in plugin._item_problems["meter.not_sent"]
    assert value(shng, "meter.last_error") == ""
    assert value(shng, "meter.summary")["successes"] >= 1
    assert value(shng, "meter.last_success") > time.time() - 120
    item = shng.items.return_item("meter.energy_wh")
    assert item.property.last_update_by == f"dlms:{d0_meter.port}"
    assert item.writes[0][3].startswith("plugins.dlms.readout")     # written in the scheduler's worker


def test_readout_bad_bcc_keeps_items_and_reports(shng: SmartHome, tmp_path: Path) -> None:
    link = tmp_path / "ttyIR"
    good = SimulatedMeter("lgz_e350", time_scale=TIME_SCALE).start()
    os.symlink(good.port, link)
    try:
        start(shng, {"dlms": {"serialport": str(link), "update_cycle": 1, "retries": 0}}, E350_ITEMS)
        wait_for(lambda: value(shng, "meter.connected"), timeout=30)
        assert value(shng, "meter.energy_kwh") == 12345.678
    finally:
        good.stop()
    bad = SimulatedMeter("lgz_e350", time_scale=TIME_SCALE, corrupt_at=200).start()
    try:
        os.unlink(link)
        os.symlink(bad.port, link)
        wait_for(lambda: value(shng, "meter.checksum_errors") >= 1, timeout=30)
        assert "BCC mismatch" in value(shng, "meter.last_error")
        wait_for(lambda: not value(shng, "meter.connected"))
        assert value(shng, "meter.energy_kwh") == 12345.678             # unchanged, not garbage
        assert value(shng, "meter.last_error")
        plugin = shng.plugin("dlms")
        assert plugin.status()["failures"] >= 1
    finally:
        bad.stop()


def test_every_failed_readout_counts_even_with_the_same_cause(shng: SmartHome, tmp_path: Path) -> None:
    """Seen in a real SmartHomeNG 1.11: an unplugged IR head failed four readouts with the same
    'not found' and 'failures' rose by one (the pipeline told its outputs only of changes of the
    health); last_error_time stayed at the first failure."""
    start(shng, {"dlms": {"serialport": str(tmp_path / "ttyGone"), "update_cycle": 1, "retries": 0}}, E350_ITEMS)
    plugin = shng.plugin("dlms")
    wait_for(lambda: plugin._stats.get("transport_errors") >= 1, timeout=30)
    first = plugin.status()["last_error_time"]
    wait_for(lambda: plugin._stats.get("transport_errors") >= 3, timeout=30)
    status = plugin.status()
    assert status["failures"] >= 3 and status["last_error_time"] > first
    assert "not found" in status["last_error"]


def test_status_items_get_no_fake_zero_before_the_first_read(shng: SmartHome, tmp_path: Path) -> None:
    """A meter that never answers: time and duration items keep their value instead of 0 (1970)."""
    silent = SimulatedMeter("lgz_e350", time_scale=TIME_SCALE, wakeup=True).start()  # ignores a plain sign-on
    items = {"meter": {
        "last_success": {"type": "num", "dlms_status": "last_success", "initial_value": -1},
        "duration": {"type": "num", "dlms_status": "duration", "initial_value": -1},
        "last_success_text": {"type": "str", "dlms_status": "last_success"},
        "timeouts": {"type": "num", "dlms_status": "timeouts"},
    }}
    try:
        start(shng, {"dlms": {"serialport": silent.port, "update_cycle": 1, "retries": 0, "timeout": 0.5}}, items)
        wait_for(lambda: value(shng, "meter.timeouts") >= 1, timeout=30)
        assert value(shng, "meter.last_success") == -1
        assert value(shng, "meter.last_success_text") == ""
        assert value(shng, "meter.duration") > 0        # the failed attempt's real duration, not a 0
    finally:
        silent.stop()


def test_a_value_without_known_scaler_never_reaches_an_item() -> None:
    """Push numbers whose scaler no profile knows have no physical value: no item gets one."""
    ps = support()
    reading = ps.Reading(code="1-0:1.8.0.255", obis=ps.Obis.parse("1-0:1.8.0.255"), value=None, raw=12345)
    for attribute, item_type in (("1.8.0", "num"), ("1.8.0", "str"), ("1.8.0", "foo")):
        binding = ps.parse_obis_attribute(attribute)
        with pytest.raises(ps.ValueProblem, match="no physical value"):
            ps.item_value(binding, reading, item_type)


def test_readout_unplug_and_replug(shng: SmartHome, tmp_path: Path) -> None:
    link = tmp_path / "ttyUSB-by-id"
    meter = SimulatedMeter("lgz_e350", time_scale=TIME_SCALE).start()
    os.symlink(meter.port, link)
    start(shng, {"dlms": {"serialport": str(link), "update_cycle": 1}}, E350_ITEMS)
    wait_for(lambda: value(shng, "meter.connected"), timeout=30)
    meter.stop()
    os.unlink(link)                                                     # USB adapter pulled
    wait_for(lambda: not value(shng, "meter.connected"), timeout=30)
    assert value(shng, "meter.energy_kwh") == 12345.678
    plugin = shng.plugin("dlms")
    assert plugin.alive
    meter2 = SimulatedMeter("lgz_e350", time_scale=TIME_SCALE).start()
    try:
        os.symlink(meter2.port, link)                                   # plugged in again
        before = plugin.status()["successes"]
        wait_for(lambda: plugin.status()["successes"] > before, timeout=30)
        # (the status items are written after the count: on a loaded machine a moment later)
        wait_for(lambda: value(shng, "meter.connected") is True, timeout=10)
    finally:
        meter2.stop()


def test_readout_never_overlaps(shng: SmartHome, caplog) -> None:
    """A cycle shorter than the readout: skipped runs are counted and explained, never run twice."""
    meter = SimulatedMeter("lgz_e350", time_scale=TIME_SCALE).start()
    caplog.set_level(logging.WARNING, logger="plugins.dlms")
    try:
        start(shng, {"dlms": {"serialport": meter.port, "update_cycle": 1}}, E350_ITEMS)
        plugin = shng.plugin("dlms")
        # overlaps during the first readout are only debug (it may include retries and the format check)
        wait_for(lambda: "readout skipped: the previous one is still running" in caplog.text, timeout=40)
        assert plugin.status()["overlaps"] >= 1 and plugin.status()["successes"] >= 1
        assert "set update_cycle to at least" in caplog.text
    finally:
        shng.stop()
        meter.stop()


def test_stop_during_readout_releases_port_and_restarts(shng: SmartHome, tmp_path: Path) -> None:
    link = tmp_path / "ttyIR"
    meter = SimulatedMeter("lgz_e350", time_scale=TIME_SCALE).start()
    os.symlink(meter.port, link)
    try:
        start(shng, {"dlms": {"serialport": str(link), "update_cycle": 60}}, E350_ITEMS)
        plugin = shng.plugin("dlms")
        assert meter.wait_for("sign-on", timeout=20)
        plugin.stop()                                                   # in the middle of the readout
        assert not plugin.alive
        assert not plugin._read_lock.locked()                           # the readout has ended
        assert meter.wait_for("disconnected", timeout=10)               # the port is free again
        assert shng.scheduler.names() == []
        assert value(shng, "meter.connected") is False
        assert value(shng, "meter.energy_kwh") == 0                     # nothing half-read was written
    finally:
        meter.stop()
    fresh = SimulatedMeter("lgz_e350", time_scale=TIME_SCALE).start()
    try:
        os.unlink(link)
        os.symlink(fresh.port, link)
        plugin.run()                                                    # restartable: scheduler and reader anew
        assert plugin.alive and shng.scheduler.names() == ["plugins.dlms.readout"]
        wait_for(lambda: value(shng, "meter.connected"), timeout=30)
        assert value(shng, "meter.energy_kwh") == 12345.678
    finally:
        fresh.stop()


def test_pause_item_stops_and_resumes(shng: SmartHome, d0_meter: SimulatedMeter) -> None:
    items = dict(E350_ITEMS)
    items["plugin_pause"] = {"type": "bool"}
    start(shng, {"dlms": {"serialport": d0_meter.port, "update_cycle": 60, "pause_item": "plugin_pause"}}, items)
    plugin = shng.plugin("dlms")
    wait_for(lambda: value(shng, "meter.connected"), timeout=30)
    pause = shng.items.return_item("plugin_pause")
    assert pause() is False                                              # run() wrote it
    pause(True, "Logic")
    assert not plugin.alive and value(shng, "meter.connected") is False
    pause(False, "Logic")
    assert plugin.alive
    before = plugin.status()["successes"]
    wait_for(lambda: plugin.status()["successes"] > before, timeout=30)  # immediate first readout again


def test_two_instances_two_ports(shng: SmartHome, d0_meter: SimulatedMeter, push_meter: PushSimulator) -> None:
    items = {
        "house": {
            "energy": {"type": "num", "dlms_obis_code": "1.8.0"},
            "connected": {"type": "bool", "dlms_status": "connected"},
        },
        "heatpump": {
            "energy": {"type": "num", "dlms_obis_code@meter2": "1-0:1.8.0.255"},
            "connected": {"type": "bool", "dlms_status@meter2": "connected"},
        },
        "both": {"type": "bool", "dlms_status@*": "connected"},
    }
    start(shng, {
        "dlms": {"serialport": d0_meter.port, "update_cycle": 60},
        "dlms_meter2": dict(listen_section(push_meter), instance="meter2"),
    }, items)
    push_once(push_meter, shng, "dlms_meter2")
    wait_for(lambda: value(shng, "house.connected") and value(shng, "heatpump.connected"), timeout=30)
    assert value(shng, "house.energy") == 12345.678
    assert value(shng, "heatpump.energy") == int(sent(push_meter, "1-0:1.8.0.255"))
    assert shng.items.return_item("heatpump.energy").property.last_update_by.startswith("dlms_meter2:")
    assert shng.items.return_item("house.energy").property.last_update_by.startswith("dlms:")
    assert set(shng.modules["http"].apps) == {"dlms", "dlms_meter2"}


def test_discovery_log_and_snippet(shng: SmartHome, d0_meter: SimulatedMeter, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="plugins.dlms")
    start(shng, {"dlms": {"serialport": d0_meter.port, "update_cycle": 60}},
          {"meter": {"energy": {"type": "num", "dlms_obis_code": "1.8.0"}}})
    plugin = shng.plugin("dlms")
    wait_for(lambda: "paste into items" in caplog.text, timeout=30)
    text = (ROOT / "dlms_protocol" / "data" / "sample_meters" / "lgz_e350.txt").read_text(encoding="ascii")
    data_sets = [line for line in text.splitlines()[1:] if "(" in line]
    log = caplog.text
    assert f"{len(data_sets)} codes" in log
    discovery = [r.getMessage() for r in caplog.records if r.getMessage().startswith("  ")]
    energy_line = next(m for m in discovery if m.split()[0] == "1.8.0")
    assert "012345.678" in energy_line and "kWh" in energy_line and "meter.energy" in energy_line
    snippet = plugin.webif_data()["snippet"]
    tree = yaml.safe_load(snippet)
    assert tree["meter"]["obis_1_8_0"]["dlms_obis_code"] == "1.8.0"
    # the snippet, pasted into a fresh SmartHomeNG, yields working items
    shng.stop()
    fresh = SmartHome(plugins_dir())
    try:
        start(fresh, {"dlms": {"serialport": d0_meter.port, "update_cycle": 60}}, tree)
        wait_for(lambda: value(fresh, "meter.connected"), timeout=30)
        assert value(fresh, "meter.obis_1_8_0") == 12345.678
        assert value(fresh, "meter.obis_0_0_0") == "41827635"
    finally:
        fresh.stop()


def test_read_now_and_last_data(shng: SmartHome, d0_meter: SimulatedMeter) -> None:
    start(shng, {"dlms": {"serialport": d0_meter.port, "update_cycle": 0}}, E350_ITEMS)
    plugin = shng.plugin("dlms")
    assert shng.scheduler.names() == []                                  # no cycle, no crontab
    assert plugin.read_now() is True
    wait_for(lambda: value(shng, "meter.connected"), timeout=30)
    data = plugin.last_data()
    assert data["1.8.0"]["value"] == 12345.678 and data["1.8.0"]["unit"] == "kWh"


def test_only_listen_writes_the_items_at_the_update_cycle(shng: SmartHome, caplog) -> None:
    """A push-only D0 meter (``only_listen``) is read at every telegram, and the items get the newest
    one at the update_cycle, as in dlms 1.9.5 and smarthome.py (the user guide's example sets
    update_cycle: 10). Seen in a real SmartHomeNG 1.11: every telegram was written whatever the
    cycle said, and the scheduler's read only found the reader busy. update_cycle 0: every telegram."""
    caplog.set_level(logging.INFO, logger="plugins.dlms")
    meter = SimulatedMeter("easymeter_push", push_interval=0.3).start()
    try:
        items = {"meter": {"energy": {"type": "num", "dlms_obis_code": "1-0:1.8.0"}}}
        section = {"serialport": meter.port, "only_listen": True, "baudrate": 9600, "use_checksum": False}
        start(shng, {"dlms": dict(section, update_cycle=3)}, items)
        plugin, energy = shng.plugin("dlms"), shng.items.return_item("meter.energy")
        wait_for(lambda: energy.property.update_count >= 1, timeout=20)   # the first telegram at once
        assert energy() == pytest.approx(12345.6789012)
        first = plugin.status()["successes"]
        time.sleep(7.5)
        read = plugin.status()["successes"] - first
        assert read >= 6, read                                             # every telegram is read
        assert 2 <= energy.property.update_count <= 4, (energy.property.update_count, read)
        assert "the newest at the update_cycle" in caplog.text
        assert plugin.read_now() in (True, False)                          # the newest now, if one came
        assert plugin.read_now() is False                                  # none came since
        shng.stop()

        every = SmartHome(plugins_dir())
        try:
            start(every, {"dlms": dict(section, update_cycle=0)}, items)
            plugin, energy = every.plugin("dlms"), every.items.return_item("meter.energy")
            wait_for(lambda: plugin.status()["successes"] >= 6, timeout=30)
            assert energy.property.update_count >= plugin.status()["successes"] - 1
        finally:
            every.stop()
    finally:
        meter.stop()


@pytest.mark.parametrize("cycle", [0, 60])
def test_only_listen_is_stale_after_listen_timeout_whatever_the_cycle(shng: SmartHome, cycle: int) -> None:
    """A meter that sends on its own and falls silent (the port stays open) leaves Victron's grid meter
    disconnected after listen_timeout, as a listen-mode meter does. Its time-out followed update_cycle
    before: 2.5 cycles (150 s at the default 60), and an hour with update_cycle 0 (every telegram to the
    items), so ESS would have regulated on frozen values for that long."""
    from dbus_fixtures import have_dbus, venus_bus
    from helpers import need
    need(have_dbus(), "dbus-daemon is not installed (apt-get install dbus-daemon)")
    with venus_bus() as (daemon, client):
        meter = SimulatedMeter("easymeter_push", push_interval=0.3).start()
        try:
            _silent_push_d0_meter_disconnects(shng, meter, daemon.address, client, cycle)
        finally:
            shng.stop()
            meter.stop()


def _silent_push_d0_meter_disconnects(shng: SmartHome, meter: SimulatedMeter, bus: str, client: Any,
                                      cycle: int) -> None:
    """The plugin on ``bus`` with the push-only meter; /Connected drops soon after the meter falls silent."""
    items = {"meter": {"energy": {"type": "num", "dlms_obis_code": "1-0:1.8.0"}}}
    start(shng, {"dlms": {"serialport": meter.port, "only_listen": True, "baudrate": 9600, "use_checksum": False,
                          "update_cycle": cycle, "listen_timeout": 5, "victron_publish": True,
                          "victron_bus": bus}}, items)
    assert float(dict(shng.plugin("dlms").config_rows())["listen_timeout"]) == 5  # (shown: it applies here)
    name = client.wait_for(lambda c: c.service("grid"), 30)
    client.wait_for(lambda c: c.value(name, "/Connected") == 1, 30)
    meter.push_interval = 3600  # silent after the telegram on the line; the port stays open
    started = time.monotonic()
    client.wait_for(lambda c: c.value(name, "/Connected") == 0, 30)
    assert time.monotonic() - started < 15
    assert value(shng, "meter.energy") == pytest.approx(12345.6789012)  # the items keep the last value


# =========================================================================== 5. push end to end
PUSH_ITEMS = {
    "grid": {
        "struct": "dlms.grid_meter",
        "legacy": {"type": "num", "dlms_obis_code": ["1-0:1.8.0*255", 0, "Value", "num"]},
        "energy_kwh": {"type": "num", "dlms_obis_code": "1.8.0", "dlms_unit": "kWh"},
        "serial": {"type": "str", "dlms_obis_code": "0-0:96.1.0.255"},
        "tag_failures": {"type": "num", "dlms_status": "tag_failures"},
        "decrypt_failures": {"type": "num", "dlms_status": "decrypt_failures"},
    }
}


def listen_section(sim: PushSimulator, **extra: Any) -> dict:
    return dict({"serialport": sim.path, "mode": "listen", "listen_baudrate": 115200, "listen_format": "8N1"}, **extra)


def test_a_start_inside_a_message_is_no_failure(shng: SmartHome, caplog) -> None:
    """The port opened while a push was on the line: its tail is counted as a framing error, but the
    meter did not fail: every other start counted a failure, set last_error and logged 'meter data
    valid again' at the first push.

    The meter's clock is pinned: with the wall clock's time in every frame, the tail now and then
    held a false HDLC frame start whose HCS fails (a CI run on Python 3.13), which the decoder
    rightly counts as a checksum error, not as part of the lead-in."""
    caplog.set_level(logging.INFO, logger="plugins.dlms")
    fixed = datetime.datetime(2026, 12, 7, 12, 0, 0, tzinfo=datetime.timezone.utc)
    sim = PushSimulator(wrapper="hdlc", seed=12, clock=lambda: fixed)
    sim.open_pty(baudrate=115200, parity="N")
    try:
        start(shng, {"dlms": listen_section(sim)}, PUSH_ITEMS)
        plugin = shng.plugin("dlms")
        wait_for(lambda: plugin._listener is not None and plugin._listener.connected)
        frame = sim.emit()
        assert sim._write(frame[len(frame) // 2:])  # the second half of a push the port was opened into
        push_once(sim, shng)
        assert plugin._stats.get("framing_errors") == 1
        status = plugin.status()
        assert status["failures"] == 0 and status["last_error"] == "" and status["successes"] == 1
        assert "meter data valid" not in caplog.text
        # damage after that is a failure as before
        bad = bytearray(sim.emit())
        bad[len(bad) // 2] ^= 0x10
        assert sim._write(bytes(bad))
        push_once(sim, shng)
        assert plugin.status()["failures"] == 1 and plugin._stats.get("checksum_errors") == 1
    finally:
        sim.stop()


def test_push_struct_items(shng: SmartHome, push_meter: PushSimulator) -> None:
    start(shng, {"dlms": listen_section(push_meter)}, PUSH_ITEMS)
    push_once(push_meter, shng)
    push_once(push_meter, shng)
    assert value(shng, "grid.health.connected") is True
    energy = sent(push_meter, "1-0:1.8.0.255")
    assert value(shng, "grid.energy_import") == int(energy)
    assert value(shng, "grid.legacy") == int(energy)
    assert value(shng, "grid.energy_kwh") == pytest.approx(float(energy / 1000))
    assert value(shng, "grid.voltage_l1") == pytest.approx(float(sent(push_meter, "1-0:32.7.0.255")))
    assert value(shng, "grid.current_l3") == pytest.approx(float(sent(push_meter, "1-0:71.7.0.255")))
    assert value(shng, "grid.power_import") == int(sent(push_meter, "1-0:1.7.0.255"))
    assert value(shng, "grid.serial") == push_meter.serial
    # 16.7.0 is not pushed: derived as import - export (both in W in the push)
    net = sent(push_meter, "1-0:1.7.0.255") - sent(push_meter, "1-0:2.7.0.255")
    assert value(shng, "grid.power") == int(net)
    assert "grid.power" not in shng.plugin("dlms")._item_problems
    assert push_meter.serial in value(shng, "grid.readout")
    assert value(shng, "grid.health.successes") >= 1
    assert value(shng, "grid.health.summary")["connected"] is True


def test_push_wrong_key_keeps_values_and_says_why(shng: SmartHome) -> None:
    sim = PushSimulator(wrapper="hdlc", interval=0.25, seed=5, key=KEY, auth_key=AUTH, security=0x30)
    sim.open_pty(baudrate=115200, parity="N")
    sim.start()
    try:
        start(shng, {"dlms": listen_section(sim, key=KEY.hex(), auth_key=AUTH.hex())}, PUSH_ITEMS)
        wait_for(lambda: value(shng, "grid.energy_import") > 0, timeout=30)
        good = value(shng, "grid.energy_import")
        sim.key = OTHER_KEY                                                 # the meter now uses another key
        wait_for(lambda: value(shng, "grid.health.last_error") != "", timeout=30)
        held = value(shng, "grid.energy_import")
        time.sleep(1.0)
        assert value(shng, "grid.energy_import") == held >= good           # no value from a bad frame
        failures = value(shng, "grid.tag_failures") + value(shng, "grid.decrypt_failures")
        assert failures >= 1
        text = value(shng, "grid.health.last_error").lower()
        assert "key" in text or "tag" in text
        # the keys never appear in anything the plugin shows
        shown = repr(shng.plugin("dlms").webif_data()) + repr(shng.plugin("dlms").config_rows())
        assert KEY.hex() not in shown and AUTH.hex() not in shown and OTHER_KEY.hex() not in shown
    finally:
        sim.stop()


def test_push_unplug_replug(shng: SmartHome, tmp_path: Path) -> None:
    sim = PushSimulator(wrapper="hdlc", interval=0.25, seed=9)
    link = sim.open_pty(str(tmp_path / "ttyUSB-push"), baudrate=115200, parity="N")
    sim.start()
    try:
        start(shng, {"dlms": dict(listen_section(sim), serialport=link)}, PUSH_ITEMS)
        wait_for(lambda: value(shng, "grid.health.connected"), timeout=30)
        sim.unplug()
        wait_for(lambda: not value(shng, "grid.health.connected"), timeout=30)
        held = value(shng, "grid.energy_import")
        assert held > 0
        assert value(shng, "grid.health.last_error")
        sim.replug()
        before = shng.plugin("dlms").status()["successes"]
        wait_for(lambda: shng.plugin("dlms").status()["successes"] > before, timeout=40)
        wait_for(lambda: value(shng, "grid.health.connected") is True, timeout=10)  # (written after the count)
    finally:
        sim.stop()


def test_push_stop_restart_and_rate_limit(shng: SmartHome, push_meter: PushSimulator) -> None:
    start(shng, {"dlms": listen_section(push_meter, min_update_interval=1.5)}, PUSH_ITEMS)
    push_meter.start()
    plugin = shng.plugin("dlms")
    wait_for(lambda: plugin._stats.get("messages") >= 12, timeout=30)
    writes = [w for w in shng.items.return_item("grid.readout").writes]
    assert len(writes) < plugin._stats.get("messages") / 2                 # throttled items
    plugin.stop()
    assert not plugin.alive
    assert plugin._listener is None
    plugin.run()
    before = plugin.status()["successes"]
    wait_for(lambda: plugin.status()["successes"] > before, timeout=30)


def test_a_rate_limit_keeps_what_only_another_list_sent(shng: SmartHome) -> None:
    """A Kaifa in Norway: the hour's list 3 (energy) and then power-only list 1 pushes within the
    items' interval. The items got only the last list 1, and the energy item never changed."""
    hourly = PushSimulator(wrapper="hdlc", layout="profile", profile="kaifa-no-list3-3ph", seed=21)
    every_2s = PushSimulator(wrapper="hdlc", layout="profile", profile="kaifa-no-list1", seed=22)
    hourly.open_pty(baudrate=115200, parity="N")
    items = {"m": {"energy": {"type": "num", "dlms_obis_code": "1-0:1.8.0"},
                   "power": {"type": "num", "dlms_obis_code": "1-0:1.7.0"}}}
    try:
        start(shng, {"dlms": listen_section(hourly, min_update_interval=2)}, items)
        plugin = shng.plugin("dlms")
        wait_for(lambda: plugin._listener is not None and plugin._listener.connected)
        first = hourly.emit()  # (the family of list 1 is known once a list of it came)
        assert hourly._write(first)
        wait_for(lambda: plugin.status()["successes"] == 1)
        wait_for(lambda: value(shng, "m.energy") == int(sent(hourly, "1-0:1.8.0.255")))
        time.sleep(0.3)
        assert hourly._write(hourly.emit())  # held: within the interval
        energy = int(sent(hourly, "1-0:1.8.0.255"))
        wait_for(lambda: plugin.status()["successes"] == 2)
        for _ in range(2):
            assert hourly._write(every_2s.emit())  # each replaces the held one
            wait_for(lambda: plugin.status()["successes"] >= 3)
        power = int(sent(every_2s, "1-0:1.7.0.255"))
        wait_for(lambda: value(shng, "m.power") == power, timeout=10)
        wait_for(lambda: value(shng, "m.energy") == energy, timeout=10)
    finally:
        hourly.stop()


def test_a_push_is_counted_once_its_values_are_in_the_items(shng: SmartHome, push_meter: PushSimulator) -> None:
    """Whoever sees ``successes`` or ``connected`` change (a logic, the web interface, a test's
    wait) finds that push's values in the items: the count rose before the items were written, so
    a reader could see the new count next to the last push's energy."""
    items = dict(PUSH_ITEMS, probe={"type": "num", "dlms_obis_code": "1-0:1.8.0.255", "enforce_updates": True})
    start(shng, {"dlms": listen_section(push_meter)}, items)
    plugin = shng.plugin("dlms")
    counted_at_write: List[int] = []
    probe = shng.items.return_item("probe")
    probe.add_method_trigger(lambda *_: counted_at_write.append(plugin.status()["successes"]))
    for _ in range(3):
        push_once(push_meter, shng)
        assert value(shng, "probe") == int(sent(push_meter, "1-0:1.8.0.255"))
    assert counted_at_write == [0, 1, 2]  # each push's write came before its count


def test_victron_unavailable_plugin_keeps_working(shng: SmartHome, push_meter: PushSimulator, caplog,
                                                 monkeypatch) -> None:
    import sys
    # the import fails, also where an earlier test of this process loaded the output (it holds the bridge)
    for module in ("plugins.dlms.dlms_protocol.victron.bridge", "plugins.dlms.dlms_protocol.victron.output"):
        monkeypatch.setitem(sys.modules, module, None)
    start(shng, {"dlms": listen_section(push_meter, victron_publish=True)}, PUSH_ITEMS)
    push_once(push_meter, shng)
    assert value(shng, "grid.health.connected") is True
    assert "Victron bridge cannot be loaded" in caplog.text
    assert shng.plugin("dlms")._bridge is None


def test_bad_configuration_is_not_loaded(shng: SmartHome, caplog) -> None:
    assert shng.load_plugin("dlms", {"plugin_name": "dlms", "serialport": "/dev/x", "mode": "listen",
                                     "key": "0x1234"}) is None
    assert "key has 2 bytes" in caplog.text
    assert "1234" not in caplog.text


@pytest.mark.parametrize("option, bad", [("querycode", "??"), ("device_address", "12!34")])
def test_bad_sign_on_options_stop_the_start(shng: SmartHome, caplog, option: str, bad: str) -> None:
    assert shng.load_plugin("dlms", {"plugin_name": "dlms", "serialport": "/dev/x", option: bad}) is None
    assert "cannot go into a sign-on" in caplog.text or "must be one character" in caplog.text


def test_bad_item_attribute_is_reported(shng: SmartHome, caplog) -> None:
    start(shng, {"dlms": {"serialport": "/dev/null", "update_cycle": 0}},
          {"a": {"type": "num", "dlms_obis_code": ["1.8.0", 0, "Wert", "num"]},
           "b": {"type": "num", "dlms_obis_code": 1.8}})
    assert "item a: dlms_obis_code third entry 'Wert' is neither Value nor Unit" in caplog.text
    assert "item b: dlms_obis_code is empty" in caplog.text or "read as a number" in caplog.text
    assert shng.plugin("dlms").get_item_path_list() == []


def test_victron_publish_on_a_real_bus(shng: SmartHome, push_meter: PushSimulator) -> None:
    """victron_publish: the meter appears as com.victronenergy.grid.* with the pushed values."""
    from dbus_fixtures import DbusDaemon, SettingsStandIn, VenusClient, have_dbus
    from helpers import need
    need(have_dbus(), "dbus-daemon is not installed (apt-get install dbus-daemon)")
    daemon = DbusDaemon()
    settings = SettingsStandIn(daemon.address)  # the service registers only after localsettings answered
    client = VenusClient(daemon.address)
    try:
        start(shng, {"dlms": listen_section(push_meter, victron_publish=True, victron_bus=daemon.address,
                                            victron_custom_name="Hausanschluss")}, PUSH_ITEMS)
        plugin = shng.plugin("dlms")
        assert plugin._bridge is not None
        push_once(push_meter, shng)
        name = client.wait_for(lambda c: c.service("grid"), 30)
        energy = sent(push_meter, "1-0:1.8.0.255")
        client.wait_for(lambda c: c.value(name, "/Ac/Energy/Forward") == pytest.approx(float(energy / 1000)), 30)
        assert client.get_value(name, "/CustomName") == "Hausanschluss"
        assert value(shng, "grid.energy_import") == int(energy)          # items and D-Bus from the same push
        plugin.stop()
        assert plugin._bridge is None
        client.wait_for(lambda c: c.service("grid") is None, 30)         # the service leaves the bus
    finally:
        shng.stop()
        client.stop()
        settings.stop()
        daemon.stop()


def test_readout_reaches_victron_on_a_real_bus(shng: SmartHome, d0_meter: SimulatedMeter) -> None:
    """mode readout + victron_publish: each scheduled readout reaches D-Bus (it used to stop at the items)."""
    from dbus_fixtures import DbusDaemon, SettingsStandIn, VenusClient, have_dbus
    from helpers import need
    need(have_dbus(), "dbus-daemon is not installed (apt-get install dbus-daemon)")
    daemon = DbusDaemon()
    settings = SettingsStandIn(daemon.address)  # the service registers only after localsettings answered
    client = VenusClient(daemon.address)
    try:
        start(shng, {"dlms": {"serialport": d0_meter.port, "update_cycle": 60, "victron_publish": True,
                              "victron_bus": daemon.address}}, E350_ITEMS)
        plugin = shng.plugin("dlms")
        assert plugin._bridge is not None
        name = client.wait_for(lambda c: c.service("grid"), 30)
        lines = sample_lines()
        assert "(012345.678*kWh)" in lines["1.8.0"] and "(00.845*kW)" in lines["1.7.0"]
        client.wait_for(lambda c: c.value(name, "/Ac/Energy/Forward") == pytest.approx(12345.678), 30)
        client.wait_for(lambda c: c.value(name, "/Ac/Power") == pytest.approx(845.0), 30)
        assert value(shng, "meter.energy_kwh") == 12345.678                # items and D-Bus from one readout
        before = plugin.status()["successes"]
        assert plugin.read_now() is True                                    # a second, triggered readout
        wait_for(lambda: plugin.status()["successes"] > before, timeout=30)
        # (the bridge takes the snapshot after the plugin's own count: on a loaded machine a moment later)
        wait_for(lambda: plugin._bridge.status()["frames"] >= 2, timeout=10)
        plugin.stop()
        client.wait_for(lambda c: c.service("grid") is None, 30)
    finally:
        shng.stop()
        client.stop()
        settings.stop()
        daemon.stop()


@pytest.mark.parametrize("security", ["auto", "any"])
def test_push_security_parameter_decides_whether_plaintext_gets_in(shng: SmartHome, security: str) -> None:
    """With keys set a plaintext push is refused (and counted) unless security: any says the meter
    really sends unencrypted; the plugin passes the parameter through to the decoder."""
    sim = PushSimulator(wrapper="hdlc", interval=0.25, seed=11)  # plaintext meter
    sim.open_pty(baudrate=115200, parity="N")
    sim.start()
    try:
        start(shng, {"dlms": listen_section(sim, key=KEY.hex(), auth_key=AUTH.hex(), security=security)},
              PUSH_ITEMS)
        plugin = shng.plugin("dlms")
        assert ("security", security) in plugin.config_rows()
        if security == "auto":
            wait_for(lambda: plugin._stats.get("plaintext_rejected") >= 2, timeout=30)
            assert plugin._stats.get("messages") == 0
            assert value(shng, "grid.health.successes") == 0
        else:
            wait_for(lambda: value(shng, "grid.energy_import") > 0, timeout=30)
            assert plugin._stats.get("plaintext_rejected") == 0
    finally:
        sim.stop()


def test_web_interface_says_how_readouts_are_checked(shng: SmartHome, d0_meter: SimulatedMeter) -> None:
    """A meter that has sent a BCC must send it every time; status and web page say so."""
    start(shng, {"dlms": {"serialport": d0_meter.port, "update_cycle": 60}},
          {"meter": {"energy": {"type": "num", "dlms_obis_code": "1.8.0"}}})
    plugin = shng.plugin("dlms")
    wait_for(lambda: value(shng, "meter.energy") > 0, timeout=30)
    assert plugin.status()["checksum"] == "BCC required (the meter sends one)"
    page = shng.webif("dlms").index()
    assert "Prüfsumme" in page and "BCC verlangt (der Zähler sendet sie)" in page  # (in the page's language)
