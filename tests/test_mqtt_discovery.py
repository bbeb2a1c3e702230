"""MQTT message layout and options without a broker: topic safety, HA classes and units, option parsing."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Optional

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dlms_protocol.errors import ConfigurationError
from dlms_protocol.model import MeterData, Reading
from dlms_protocol.mqtt.discovery import (
    MAX_LEVEL,
    channel_types,
    device_block,
    discovery_config,
    ha_class,
    identity,
    keys_of,
    meter_name,
    state_payloads,
    topic_level,
    value_template,
)
from dlms_protocol.mqtt.output import MqttOutput, make_mqtt_output, parse_options
from dlms_protocol.obis import Obis
from dlms_protocol.pipeline import OUTPUTS, make_output


def reading(code: str, value: object, unit: Optional[str], derived: bool = False) -> Reading:
    return Reading(code=code, obis=Obis.try_parse(code), value=value, unit=unit, derived=derived)  # type: ignore[arg-type]


@given(st.text(max_size=300))
def test_topic_levels_are_always_safe_and_bounded(text: str) -> None:
    level = topic_level(text)
    assert level and len(level) <= MAX_LEVEL
    assert not any(c in level for c in "+#/\x00 \t\r\n")


@given(st.lists(st.sampled_from(["1-0:1.8.0", "1.8.0", "C.1.0", "x/y", "a+b", "#"]), max_size=8))
def test_every_reading_gets_its_own_topic(codes: list) -> None:
    data = MeterData(kind="readout", readings=tuple(reading(c, Decimal(1), None) for c in codes))
    keys = [k for k, _ in keys_of(data)]
    assert len(keys) == len(set(keys)) == len(codes)
    assert all(not any(c in k for c in "+#/") for k in keys)


@pytest.mark.parametrize(
    "code,unit,expected",
    [
        ("1-0:1.8.0", "kWh", ("energy", "total_increasing", "kWh", 0)),
        ("1-0:2.8.0", "Wh", ("energy", "total_increasing", "Wh", 0)),
        ("1-0:16.8.0", "kWh", ("energy", "total", "kWh", 0)),  # net counter may go down
        ("1-0:1.8.0*01", "kWh", ("energy", None, "kWh", 0)),  # billing period: a snapshot, no statistics
        ("1-0:1.7.0", "kW", ("power", "measurement", "kW", 0)),
        ("1-0:1.7.0", "MW", ("power", "measurement", "W", 6)),  # converted by prefix
        ("1-0:3.7.0", "kvar", ("reactive_power", "measurement", "kvar", 0)),
        ("1-0:3.8.0", "kvarh", ("reactive_energy", "total_increasing", "kvarh", 0)),
        ("1-0:9.7.0", "kVA", ("apparent_power", "measurement", "VA", 3)),
        ("1-0:9.8.0", "kVAh", (None, None, "kVAh", 0)),  # no HA class for apparent energy
        ("32.7", "V", ("voltage", "measurement", "V", 0)),
        ("1-0:31.7.0", "A", ("current", "measurement", "A", 0)),
        ("1-0:13.7.0", None, ("power_factor", "measurement", None, 0)),
        ("1-0:14.7.0", "Hz", ("frequency", "measurement", "Hz", 0)),
        ("1-0:1.8.0", None, (None, None, None, 0)),  # energy without unit: no class, never a guessed unit
        ("1-0:32.7.0", "kWh", (None, None, "kWh", 0)),  # nonsense unit for the class: no class
        ("C.7.0", None, (None, "total_increasing", None, 0)),  # power failures: no class, but they count up
    ],
)
def test_home_assistant_class_and_unit(code: str, unit: Optional[str], expected: tuple) -> None:
    cls = ha_class(reading(code, Decimal("1.5"), unit))
    assert cls is not None and (cls.device_class, cls.state_class, cls.unit, cls.factor) == expected


def test_text_values_get_a_state_topic_but_no_entity() -> None:
    r = reading("0.2.0", "M27", None)
    data = MeterData(kind="readout", readings=(r,))
    assert ha_class(r) is None
    assert discovery_config(r, "0.2.0", meter="m", state_topic="t", availability_topic="a", device={}) is None
    assert state_payloads(r, data)[1] == "M27"


def test_converted_unit_template_scales_the_meter_value() -> None:
    r = reading("1-0:9.7.0", Decimal("1.25"), "kVA")
    config = discovery_config(r, "1-0:9.7.0", meter="m", state_topic="t", availability_topic="a", device={})
    assert config is not None and config["unit_of_measurement"] == "VA"
    assert config["value_template"] == value_template(3)
    # rendered as Home Assistant does: its float filter raises on what is no number (no default)
    import jinja2

    def strict_float(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"float got invalid input {value!r}")
        return float(value)

    env = jinja2.Environment()
    env.filters["float"] = strict_float
    template = env.from_string(config["value_template"])
    assert template.render(value_json={"value": 1.25}) == "1250.0"
    assert template.render(value_json={"value": None}) == "None"  # (HA: unknown, not a template error)
    assert env.from_string(value_template(0)).render(value_json={"value": None}) == "None"


def test_state_payload_marks_derived_values_and_keeps_the_meter_unit() -> None:
    r = reading("1-0:16.7.0", Decimal("-0.25"), "kW", derived=True)
    data = MeterData(kind="push", readings=(r,), received=0.0)
    body, plain = state_payloads(r, data)
    assert json.loads(body) == {
        "value": -0.25,
        "unit": "kW",
        "timestamp": "1970-01-01T00:00:00Z",
        "derived": True,
    }
    assert plain == "-0.25"


def test_identity_from_a_system_title_and_from_a_d0_identification() -> None:
    push = MeterData(
        kind="push",
        readings=(reading("0-0:96.1.0", "ABC123", None),),
        meter_id="4B464D1010000023",
        profile="p",
    )
    ident = identity(push)
    assert (ident.manufacturer, ident.serial) == ("KFM", "ABC123") and meter_name(push) == "ABC123"
    d0 = MeterData(kind="readout", readings=(), meter_id="/ISk5\\2MT382-1000")
    ident = identity(d0)
    assert (ident.manufacturer, ident.model, ident.serial) == ("ISK", "MT382-1000", None)
    assert meter_name(d0) == "ISk5_2MT382-1000"
    assert meter_name(MeterData(kind="push", readings=())) == "meter"
    # a Kamstrup 382 writes its meter number under the short code 0.0 (0.0.0 with E left out)
    from dlms_protocol.iec62056_21.datablock import parse_readout

    kam = parse_readout(b"/KAM5685-382-QR-10\r\n\r\n0.0(12345678)\r\n1.20(0083038*kWh)\r\n!\r\n",
                        use_checksum=False).to_meter_data()
    assert identity(kam).serial == "12345678" and meter_name(kam) == "12345678"
    assert kam.get("0.0").name == "Meter address"


def test_registered_in_the_pipeline_and_options_from_ini_strings() -> None:
    assert OUTPUTS["mqtt"] == ".mqtt.output:make_mqtt_output"
    out = make_output(
        "mqtt",
        host="broker.lan",
        port="8883",
        tls="yes",
        qos="1",
        retain="no",
        discovery="off",
        min_interval="2.5",
        username="u",
        password="p",
        prefix="home/meter/",
    )
    assert isinstance(out, MqttOutput)
    cfg = out.cfg
    assert (cfg.port, cfg.tls, cfg.qos, cfg.retain, cfg.discovery, cfg.min_interval, cfg.prefix) == (
        8883,
        True,
        1,
        False,
        False,
        2.5,
        "home/meter",
    )
    assert cfg.tls_insecure is False  # certificate checks stay on unless asked


@pytest.mark.parametrize(
    "options,named",
    [
        ({"port": "0"}, "port"),
        ({"port": "http"}, "port"),
        ({"qos": "3"}, "qos"),
        ({"retain": "maybe"}, "retain"),
        ({"min_interval": "-1"}, "min_interval"),
        ({"prefix": "a/+/b"}, "prefix"),
        ({"discovery_prefix": "#"}, "discovery_prefix"),
        ({"hostname": "x"}, "hostname"),
        ({"ca_file": "/does/not/exist", "tls": "yes"}, "ca_file"),
        ({"node": "a/b"}, "node"),
        ({"meter": "x#y"}, "meter"),
        ({"language": "fr"}, "language"),
        ({"keepalive": "1.5"}, "keepalive"),
    ],
)
def test_bad_options_name_the_option(options: dict, named: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        make_mqtt_output(**options)
    assert named in str(err.value)


def test_the_password_never_appears_in_errors_or_settings() -> None:
    with pytest.raises(ConfigurationError) as err:
        parse_options(password="hunter2-secret")
    assert "hunter2" not in str(err.value)
    cfg = parse_options(username="u", password="hunter2-secret")
    assert "hunter2" not in repr(cfg) and "hunter2" not in json.dumps(cfg.effective())
    out = MqttOutput(cfg)
    assert "hunter2" not in json.dumps(out.status())


_CODES = st.sampled_from(
    [
        "1-0:1.8.0",
        "1-0:2.7.0",
        "1-0:3.8.0",
        "1-0:9.7.0",
        "1-0:32.7.0",
        "1-0:31.7.0",
        "1-0:13.7.0",
        "1-0:14.7.0",
        "1-0:16.8.0",
        "1.8.0*01",
        "C.7.0",
        "0.0.0",
    ]
)
_UNITS = st.sampled_from(
    [
        None,
        "W",
        "kW",
        "MW",
        "Wh",
        "kWh",
        "MWh",
        "var",
        "kvar",
        "varh",
        "kvarh",
        "VA",
        "kVA",
        "V",
        "kV",
        "A",
        "mA",
        "Hz",
        "%",
        "°",
        "m³",
    ]
)


@given(
    _CODES, _UNITS, st.decimals(allow_nan=False, allow_infinity=False, places=4, min_value=-(10**9), max_value=10**9)
)
def test_payloads_and_classes_for_any_reading(code: str, unit: Optional[str], value: Decimal) -> None:
    """The JSON carries the value exactly as a number; a device_class always comes with a unit HA accepts."""
    from dlms_protocol.mqtt.discovery import _table

    r = reading(code, value, unit)
    body, plain = state_payloads(r, MeterData(kind="push", readings=(r,), received=0.0))
    parsed = json.loads(body)
    assert Decimal(str(parsed["value"])) == value and parsed["unit"] == unit
    assert Decimal(plain) == value
    cls = ha_class(r)
    assert cls is not None
    if cls.device_class is not None:
        spec = _table()["device_classes"][cls.device_class]
        assert cls.unit in spec["units"] or (cls.unit is None and spec.get("unitless"))
        if cls.factor == 0:
            assert cls.unit == unit
    else:  # the meter's unit, and a state class only where the table's plain rule names this code
        assert cls.unit == unit and cls.factor == 0
        o, plain_rule = r.obis, _table()["plain_state_class"]
        named = o is not None and (f"{o.c}.{o.d}.{o.e}" in plain_rule["by_cde"]
                                   or f"{o.c}.{o.d}" in plain_rule["by_cd"])
        assert cls.state_class is None or named


def test_empty_values_mean_the_default_as_from_an_ini_file_or_plugin_parameters() -> None:
    cfg = parse_options(host="", port="", prefix=" ", discovery="", retain=None, password="")
    assert (cfg.host, cfg.port, cfg.prefix, cfg.discovery, cfg.retain, cfg.password) == (
        "localhost",
        1883,
        "dlms",
        True,
        True,
        None,
    )


def test_missing_paho_is_a_configuration_error_at_assembly(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "paho" else real(name, *a))
    with pytest.raises(ConfigurationError) as err:
        make_output("mqtt", host="broker")
    assert "paho-mqtt is not installed" in str(err.value)


def test_an_sml_meter_is_announced_with_its_maker() -> None:
    """SML meters name their maker in a reading (129-129:199.130.3, 1-0:96.50.1*1); Home Assistant
    showed no manufacturer for them. Checked against the FLAG id inside each capture's server ID."""
    import re as _re

    from helpers import corpus_files, load_json

    from dlms_protocol.sml.decoder import SmlDecoder

    named = 0
    for path in corpus_files("sml", ".bin"):
        data = SmlDecoder().feed(path.read_bytes())[0].to_meter_data()
        facts = load_json(path.with_suffix(".json"))
        flag = _re.search(rb"[A-Z]{3}", bytes.fromhex(facts["server_id"]))  # else the maker named by the source
        expected = flag.group().decode() if flag else facts["meter"].split()[0][:3].upper()
        made = identity(data).manufacturer
        if made is not None:
            named += 1
            assert made == expected, path.name
            assert device_block(meter_name(data), identity(data))["manufacturer"] == made
    assert named >= 14  # all but the captures without such a reading


def test_angles_and_event_counters_keep_statistics_without_a_device_class() -> None:
    """Home Assistant keeps long-term statistics only of a sensor with a state class: phase angles
    and the counts of power failures had none (the review against HA 2026.11). A billing-period
    value and another medium's code still get none."""
    from dlms_protocol.iec62056_21.datablock import parse_readout

    text = (b"/XMX5LGBBFG1012345678\r\n\r\n0-0:96.7.21(00004)\r\n0-0:96.7.9(00002)\r\nC.7.0(0003)\r\n"
            b"0.1.0(12)\r\n1-0:81.7.4(012*deg)\r\n1-0:81.7.4*01(011*deg)\r\n!\r\n")
    data = parse_readout(text, use_checksum=False).to_meter_data()
    got = {r.code: (ha_class(r).device_class, ha_class(r).state_class, ha_class(r).unit) for r in data.readings}
    assert got == {"0-0:96.7.21": (None, "total_increasing", None), "0-0:96.7.9": (None, "total_increasing", None),
                   "C.7.0": (None, "total_increasing", None), "0.1.0": (None, "total_increasing", None),
                   "1-0:81.7.4": (None, "measurement", "deg"), "1-0:81.7.4*01": (None, None, "deg")}
    angle = data.readings[4]
    config = discovery_config(angle, "1-0:81.7.4", meter="m", state_topic="t", availability_topic="a", device={})
    assert config is not None and config["state_class"] == "measurement" and "device_class" not in config


def test_m_bus_channels_get_the_class_of_their_device_type() -> None:
    """A DSMR meter's gas and water sub-meters (0-n:24.2.1 in m3) were published without class or
    state class (read as electricity's C 24, reactive power): Home Assistant's Energy dashboard
    offered neither. The channel's device type (0-n:24.1.0: 3 gas, 7 water) names the class."""
    from dlms_protocol.iec62056_21.datablock import parse_readout

    text = (b"/XMX5LGBBFG1012345678\r\n\r\n1-0:1.8.1(000123.456*kWh)\r\n"
            b"0-1:24.1.0(003)\r\n0-1:24.2.1(261207120000W)(01234.567*m3)\r\n"
            b"0-2:24.1.0(007)\r\n0-2:24.2.1(261207120000W)(00045.100*m3)\r\n"
            b"0-3:24.1.0(099)\r\n0-3:24.2.1(261207120000W)(00001.000*m3)\r\n0-3:24.4.0(1)\r\n!\r\n")
    data = parse_readout(text, use_checksum=False).to_meter_data()
    types = channel_types(data)
    assert types == {1: 3, 2: 7, 3: 99}
    got = {r.code: ha_class(r, types.get(r.obis.b)) for r in data.readings if r.obis.c == 24 and r.obis.d in (2, 4)}
    assert {code: (c.device_class, c.state_class, c.unit) for code, c in got.items()} == {
        "0-1:24.2.1": ("gas", "total_increasing", "m³"), "0-2:24.2.1": ("water", "total_increasing", "m³"),
        "0-3:24.2.1": ("volume", "total_increasing", "m³"), "0-3:24.4.0": (None, None, None)}
    gas = next(r for r in data.readings if r.code == "0-1:24.2.1")
    config = discovery_config(gas, "0-1:24.2.1", meter="m", state_topic="t", availability_topic="a", device={},
                              device_type=types[1])
    assert config is not None and (config["device_class"], config["unit_of_measurement"]) == ("gas", "m³")
    assert ha_class(gas).device_class == "volume"  # (no device type known: volume, never a guessed gas)


def test_a_heat_meter_on_the_optical_port_gets_heat_classes() -> None:
    """A UH50's 6.8 in MWh or GJ is heat energy (HA 'energy', total_increasing), 6.26 its volume;
    read as electricity 6.8 would be reactive energy, and no other class of that medium is guessed."""
    from dlms_protocol.iec62056_21.datablock import bcc, parse_readout

    text = (b"/LUGCUH50\r\n\x026.8(0002.039*MWh)6.26(00040.62*m3)6.6(0008.9*kW)6.8*01(0001.913*MWh)\r\n"
            b"6.31(0001067*h)9.24(1.5*m3ph)\r\n!\r\n\x03")
    data = parse_readout(text + bytes([bcc(text[text.index(b"\x02") + 1:])])).to_meter_data()
    classes = {r.code: ha_class(r) for r in data.readings}
    got = {code: (c.device_class, c.state_class, c.unit) for code, c in classes.items() if c is not None}
    assert got == {"6.8": ("energy", "total_increasing", "MWh"), "6.26": ("volume", "total_increasing", "m³"),
                   "6.6": ("power", "measurement", "kW"), "6.8*01": ("energy", None, "MWh"),
                   "6.31": (None, None, "h"), "9.24": (None, None, "m3ph")}
    gj = Reading(code="6.8", obis=Obis(6, None, 6, 8), value=Decimal("7.34"), unit="GJ")
    gj_class = ha_class(gj)
    assert gj_class is not None and (gj_class.device_class, gj_class.unit) == ("energy", "GJ")
    assert ha_class(reading("7-0:3.0.0", Decimal(1), "m3")).device_class is None  # (no gas entry: no class)
