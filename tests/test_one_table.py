"""One table of meter-identity codes and one unit conversion, read by every part.

The identity table is obis_names.json ``meter_id_codes`` (obis.identity_rank/best_identity): the
push decoder's meter id, SML's fallback id, the DLMS poll's, Victron's /Serial and MQTT's device
serial all pick from it in the same order. The Victron mapping converts units through units.py
(its JSON keeps only Victron facts). The tests run the real corpus through the real parts, and
fail when a second table creeps back into the code.
"""
from __future__ import annotations

import json
import logging
import re
from decimal import Decimal
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlms_protocol import units
from dlms_protocol.config import ListenerConfig
from dlms_protocol.dlms.decoder import decode_bytes
from dlms_protocol.iec62056_21.datablock import parse_readout
from dlms_protocol.model import MeterData, Reading
from dlms_protocol.mqtt.discovery import identity
from dlms_protocol.obis import Obis, best_identity, identity_rank
from dlms_protocol.pipeline import enrich
from dlms_protocol.sml.decoder import decode_all
from dlms_protocol.victron.mapping import DEFAULT_FILE, Mapper
from helpers import CORPUS, ROOT, corpus_files, load_json, need

TABLE = json.loads((ROOT / "dlms_protocol" / "data" / "obis_names.json").read_text(encoding="utf-8"))


def _push(name: str) -> MeterData:
    need((CORPUS / "push" / name).is_file(), f"corpus file push/{name}")
    frame = load_json(CORPUS / "push" / name)
    keys = frame.get("keys") or {}
    msgs = decode_bytes(bytes.fromhex(frame["hex"]), ListenerConfig(port="corpus", key=keys.get("block_cipher_key")))
    return enrich(msgs[0].to_meter_data())


def _d0(name: str) -> MeterData:
    need((CORPUS / "d0" / name).is_file(), f"corpus file d0/{name}")
    return enrich(parse_readout((CORPUS / "d0" / name).read_bytes(), use_checksum=False).to_meter_data())


def _serial_of(data: MeterData) -> Optional[Any]:
    return Mapper().map(data).values.get("/Serial")


# ------------------------------------------------------------------- the identity table
def test_every_code_of_the_table_names_the_meter_under_its_media_only() -> None:
    codes = TABLE["meter_id_codes"]["codes"]
    assert [identity_rank(Obis.parse("0-0:" + c["code"])) for c in codes if 0 in c["a"]] == \
        [i for i, c in enumerate(codes) if 0 in c["a"]]
    assert identity_rank(Obis.parse("C.1.0")) == 0  # D0's letter form of 96.1.0
    assert identity_rank(Obis.parse("1-1:96.1.1.255")) is None  # Kamstrup's meter TYPE
    assert identity_rank(Obis.parse("0-1:96.1.0")) is None  # DSMR: the gas meter on M-Bus channel 1
    assert identity_rank(Obis.parse("1-0:1.8.0")) is None
    assert Obis.parse("1-1:0.0.5.255").is_serial() and not Obis.parse("0-1:96.1.0").is_serial()


def test_best_identity_takes_the_best_rank_not_the_first_sent() -> None:
    pairs = [(Obis.parse("0-0:42.0.0.255"), "ISK1030775213859"), (Obis.parse("0-0:96.1.1.255"), "1876350"),
             (Obis.parse("0-0:96.1.0.255"), ""), (None, "x")]
    assert best_identity(pairs) == "1876350"  # an empty 96.1.0 is no id; 96.1.1 beats 42.0.0
    assert best_identity([]) is None


def test_swiss_push_gives_one_serial_to_meter_id_victron_and_mqtt() -> None:
    """The frame carries 42.0.0 (logical device name) and 96.1.1: every part picks 96.1.1."""
    data = _push("ch-iskra-am550-hdlc-seg-pushlist-2020.json")
    assert data.meter_id == "1876350"
    assert _serial_of(data) == "1876350"
    assert identity(data).serial == "1876350"


def test_kamstrup_serial_is_its_meter_id_not_its_meter_type() -> None:
    data = _push("se-kamstrup-omnipower-hdlc-obisvalue-2022.json")
    kinds = {r.code: r.value for r in data.readings if r.obis is not None and r.obis.c in (0, 96)}
    assert kinds["1-1:96.1.1.255"] == "6841138BN245101090"  # the type number is in the frame ...
    assert data.meter_id == _serial_of(data) == identity(data).serial == "5706567326590407"  # ... the id wins


def test_dsmr_readout_serial_is_the_electricity_meters_not_the_gas_meters() -> None:
    data = _d0("iskra_mt382_dsmr3_1.txt")
    gas = [r for r in data.readings if r.code.startswith("0-1:96.1.0")]
    assert gas  # the gas meter's equipment id is in the readout, on M-Bus channel 1
    assert _serial_of(data) == identity(data).serial == "4B384547303034303436333935353037"


@pytest.mark.parametrize("path", corpus_files("d0", ".txt") + corpus_files("sml", ".bin"),
                         ids=lambda p: p.name)
def test_victron_and_mqtt_pick_the_same_identity_reading(path) -> None:
    """For every D0 readout and SML telegram of the corpus: /Serial and the MQTT device serial come
    from the same reading (the best-ranked one), or are both absent."""
    if path.suffix == ".bin":
        telegrams, _errors = decode_all(path.read_bytes())
        snapshots = [enrich(t.to_meter_data()) for t in telegrams[:2]]
    else:
        try:
            snapshots = [enrich(parse_readout(path.read_bytes(), use_checksum=False).to_meter_data())]
        except Exception:  # noqa: BLE001 - damaged captures are test_d0_corpus' business
            pytest.skip("capture does not parse as a whole")
    for data in snapshots:
        ranked = sorted((identity_rank(r.obis), i) for i, r in enumerate(data.readings)
                        if identity_rank(r.obis) is not None)
        serial = _serial_of(data)
        if not ranked:
            assert serial is None and identity(data).serial is None
            continue
        best = data.readings[ranked[0][1]]
        assert best.obis is not None and best.obis.is_serial()
        assert serial is not None and serial == identity(data).serial  # one text rule (model.value_text)
        if isinstance(best.value, bytes):  # SML server IDs: printable ASCII as text, else hex
            assert serial in (best.value.decode("latin-1").strip(), best.value.hex().upper())


@pytest.mark.parametrize("value, text", [("ABC123\0\0\0", "ABC123"), ("\0 12 \0", "12"), ("\0\0", None),
                                         (b"ABC", "ABC"), (b"AB\0", "414200"), (1234, "1234"), (True, None)])
def test_the_identification_text_rule(value: Any, text: Any) -> None:
    """model.value_text: what Victron /Serial and the MQTT device serial show. NUL padding (meters
    pad visible-strings with it) is dropped: D-Bus cannot carry it, and it is no part of a serial."""
    from dlms_protocol.model import value_text

    assert value_text(value) == text


def _python_sources() -> Iterator[Any]:
    for path in sorted((ROOT / "dlms_protocol").rglob("*.py")):
        if "simulator" not in path.parts and path.name != "obis.py":
            yield path
    yield ROOT / "plugin_support.py"
    yield ROOT / "__init__.py"


def test_no_second_table_of_identity_codes_in_the_code() -> None:
    """Fails when a module lists identity codes of its own again (a tuple such as (96, 1, 0) or a
    string list such as "96.1.0", "96.1.1") instead of asking obis.identity_rank."""
    tuple_code = re.compile(r"\(\s*(96,\s*1,\s*([012]|255)|42,\s*0,\s*0|0,\s*0,\s*[0-9])\s*\)")
    string_code = re.compile(r"[\"'](?:[01]-[01]:)?(96\.1\.([012]|255)|C\.1\.[012]|42\.0\.0|0\.0\.[059])[\"']")
    offenders: List[str] = []
    for path in _python_sources():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            code = line.split("#", 1)[0]
            if tuple_code.search(code) or string_code.search(code):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []


def test_the_victron_serial_comes_from_the_identity_table() -> None:
    table = json.loads(Path(DEFAULT_FILE).read_text(encoding="utf-8"))
    serial = [s for s in table["sources"] if s["path"] == "/Serial"]
    assert serial == [{"path": "/Serial", "identity": True}]
    codes = {tuple(s.get("obis", ())) for s in table["sources"]}
    assert not any(Obis.parse(c).is_serial() for group in codes for c in group)


def test_every_profile_meter_id_field_carries_a_code_of_the_table() -> None:
    def fields(node: Any) -> Iterator[Dict[str, Any]]:
        if isinstance(node, dict):
            if node.get("meter_id") and node.get("obis"):
                yield node
            for value in node.values():
                yield from fields(value)
        elif isinstance(node, list):
            for value in node:
                yield from fields(value)

    found = [f["obis"] for p in sorted((ROOT / "dlms_protocol" / "data" / "profiles").glob("*.json"))
             for f in fields(json.loads(p.read_text(encoding="utf-8")))]
    assert found and all(Obis.parse(code).is_serial() for code in found), found


# ------------------------------------------------------------------- one unit conversion
def test_the_victron_table_keeps_no_unit_conversions() -> None:
    table = json.loads(Path(DEFAULT_FILE).read_text(encoding="utf-8"))
    assert "units" not in table
    assert {spec["unit"] for spec in table["paths"].values()} == {"W", "V", "A", "", "kWh", "Hz", None}


_PATHS = {"16.7.0": ("/Ac/Power", "W", ["W", "kW", "MW"]),
          "1.8.0": ("/Ac/Energy/Forward", "kWh", ["Wh", "kWh", "MWh"]),
          "14.7.0": ("/Ac/Frequency", "Hz", ["Hz"])}


@given(st.sampled_from(sorted(_PATHS)), st.data(),
       st.decimals(min_value=-10 ** 9, max_value=10 ** 9, places=3, allow_nan=False, allow_infinity=False))
@settings(max_examples=300)
def test_victron_values_are_the_core_conversion(code: str, data: Any, value: Decimal) -> None:
    path, target, sources = _PATHS[code]
    unit = data.draw(st.sampled_from(sources))
    got = Mapper().map(MeterData("push", (Reading("1-0:" + code, Obis.parse("1-0:" + code), value, unit),))).values
    assert got[path] == float(units.convert(value, unit, target))


def test_corpus_energy_reaches_victron_in_kwh_through_units_py() -> None:
    data = _d0("iskra_mt174_1.txt")
    reading = next(r for r in data.readings if r.code == "1-0:1.8.0*255")
    assert reading.unit == "kWh"
    got = Mapper().map(data).values["/Ac/Energy/Forward"]
    assert got == float(units.convert(reading.numeric(), "kWh", "kWh")) == 8048.375
    push = _push("ch-lg-e450-hdlc-gbt-pushlist-vse2026.json")
    wh = next(r for r in push.readings if r.obis is not None and r.obis.short() == "1.8.0")
    assert wh.unit == "Wh" and Mapper().map(push).values["/Ac/Energy/Forward"] == float(wh.numeric() / 1000)


def test_an_unconvertible_unit_is_skipped_and_logged_once(caplog) -> None:
    mapper = Mapper()
    data = MeterData("push", (Reading("1-0:1.8.0", Obis.parse("1-0:1.8.0"), Decimal(5), "varh"),
                              Reading("1-0:16.7.0", Obis.parse("1-0:16.7.0"), Decimal(7), "kW")))
    with caplog.at_level(logging.WARNING, logger="dlms_protocol.victron.mapping"):
        for _ in range(3):
            values = mapper.map(data).values
    assert "/Ac/Energy/Forward" not in values and values["/Ac/Power"] == 7000.0
    assert len([r for r in caplog.records if "'varh'" in r.getMessage()]) == 1
    assert mapper._factors == {("kWh", "varh"): None, ("W", "kW"): Decimal(1000)}  # one lookup per pair


def test_a_user_units_section_adds_factors_before_the_core_and_is_checked(tmp_path) -> None:
    f = tmp_path / "map.json"
    f.write_text(json.dumps({"units": {"W": {"daW": 10}}}))
    mapper = Mapper(str(f))
    got = mapper.map(MeterData("push", (Reading("1-0:16.7.0", Obis.parse("1-0:16.7.0"), Decimal(5), "daW"),
                                        Reading("1-0:1.8.0", Obis.parse("1-0:1.8.0"), Decimal(3), "MWh")))).values
    assert got["/Ac/Power"] == 50.0 and got["/Ac/Energy/Forward"] == 3000.0  # core units still convert
    f.write_text(json.dumps({"units": {"W": {"daW": "ten"}}}))
    with pytest.raises(Exception, match="not a number"):
        Mapper(str(f))
    f.write_text(json.dumps({"paths": {"/Ac/Power": {"unit": "PS"}}}))
    with pytest.raises(Exception, match="'PS'.*units.py.*\"units\": {\"PS\""):
        Mapper(str(f))


@pytest.mark.parametrize("code, unit, expected", [
    ("1-0:1.8.0", "KWH", ("kWh", 0)),  # old meters' spelling: the core's one table knows it
    ("1-0:1.8.0", "GWh", ("kWh", 6)),
    ("1-0:1.7.0", "MW", ("W", 6)),
    ("1-0:32.7.0", "kV", ("V", 3)),
    ("1-0:31.7.0", "mA", ("mA", 0)),
    ("1-0:1.7.0", "Wh", None),  # energy in a power register: no device class, never a wrong unit
])
def test_home_assistant_units_come_from_the_core_conversion(code: str, unit: str, expected: Any) -> None:
    from dlms_protocol.mqtt.discovery import ha_class

    cls = ha_class(Reading(code, Obis.parse(code), Decimal(1), unit))
    assert cls is not None
    if expected is None:
        assert cls.device_class is None and cls.unit == unit
    else:
        assert (cls.unit, cls.factor) == expected
        assert units.factor(unit, cls.unit) == Decimal(10) ** cls.factor


def test_no_second_unit_prefix_table() -> None:
    """Fails when a module or data file grows its own SI-prefix table again (units.py is the one)."""
    discovery = json.loads((ROOT / "dlms_protocol" / "data" / "ha_discovery.json").read_text(encoding="utf-8"))
    assert "prefixes" not in discovery
    prefix = re.compile(r"[\"']k[\"']\s*:\s*(3|1000|Decimal)")
    offenders = [str(p.relative_to(ROOT)) for p in _python_sources()
                 if p.name != "units.py" and prefix.search(p.read_text(encoding="utf-8"))]
    assert offenders == []
