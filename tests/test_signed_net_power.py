"""A maker's documented signed power becomes net power: EasyMeter (FLAG id ESY) sends its
instantaneous power signed under E = 255 (1-0:1.7.255*255, 21/41/61.7.255; negative = export),
from firmware V3.04 on under E = 0 (1.7.0, 21/41/61.7.0), and no 2.7.0, so without this items,
MQTT and Victron got no power at all (or an import that was negative). Only where the maker
documents it (obis_names.json ``signed_net_power``): the same codes from another meter keep their
standard meaning (import) and give no net power. Real captures read in place (helpers.CORPUS).
"""
from __future__ import annotations

import importlib
from decimal import Decimal
from pathlib import Path
from typing import Dict, Tuple

import pytest
import yaml

from dlms_protocol import DATA_DIR
from dlms_protocol.derive import derive
from dlms_protocol.iec62056_21.datablock import parse_readout
from dlms_protocol.model import MeterData
from dlms_protocol.mqtt.discovery import discovery_config, reading_key
from dlms_protocol.obis import Obis
from dlms_protocol.pipeline import enrich
from dlms_protocol.victron.mapping import Mapper
from helpers import CORPUS, need
from shng_double.testing import ROOT, support

SAMPLE = Path(DATA_DIR) / "sample_meters" / "easymeter_push.txt"
#: a Q3D with firmware V3.04 exporting on L1, written for this test in the layout such meters send
#: (the power under E = 0, the total the sum of the phases, no 2.7.0)
V304 = (b"/ESY5Q3DA1024 V3.04\r\n\r\n1-0:0.0.0*255(60411230)\r\n1-0:1.8.0*255(00000412.5500000*kWh)\r\n"
        b"1-0:2.8.0*255(00000097.2100000*kWh)\r\n1-0:21.7.0*255(-000812.40*W)\r\n1-0:41.7.0*255(000003.10*W)\r\n"
        b"1-0:61.7.0*255(000000.20*W)\r\n1-0:1.7.0*255(-000809.10*W)\r\n1-0:96.5.5*255(00)\r\n"
        b"0-0:96.1.255*255(1ESY1160411230)\r\n!\r\n")
E255 = ("1.7.255", "21.7.255", "41.7.255", "61.7.255")
E0 = ("1.7.0", "21.7.0", "41.7.0", "61.7.0")
#: (capture, the codes it sends the power under: total, L1, L2, L3, and their values as sent)
CASES = [
    ("d0/easymeter_q3d_1.txt", E255, ("-142.30", "-73.69", "0.00", "-68.61")),
    (None, E255, ("102.14", "125.31", "-42.07", "18.90")),  # the project's own sample (SAMPLE)
    ("v3.04", E0, ("-809.10", "-812.40", "3.10", "0.20")),  # V304
    # a Q3DA3024 V3.04 whose telegram its source trimmed to L1
    ("d0/easymeter_q3d_2.txt", E0[1:2], ("-115.94",)),
]
NETS = ("16.7.0", "36.7.0", "56.7.0", "76.7.0")


def capture(name: "str | None") -> bytes:
    if name is None:
        return SAMPLE.read_bytes()
    if name == "v3.04":
        return V304
    path = CORPUS / name
    need(path.is_file(), f"corpus capture {path} not found (set DLMS_CORPUS)")
    return path.read_bytes()


def enriched(raw: bytes) -> MeterData:
    """A snapshot as every output gets it from the pipeline: parsed, then enriched once."""
    return enrich(parse_readout(raw).to_meter_data())


def other_maker(raw: bytes) -> bytes:
    """The same telegram from a meter of another make (Voltcraft's VSM-102 sends these codes as import)."""
    assert raw.startswith(b"/ESY")
    return b"/XYZ" + raw[4:]


def nets(sent: Tuple[str, ...]) -> Tuple[str, ...]:
    """The net codes of the codes a case sends (its L1 alone: 36.7.0)."""
    return tuple(NETS[(E255 if sent[0] in E255 else E0).index(code)] for code in sent)


@pytest.mark.parametrize("name,sent,values", CASES)
def test_net_power_is_derived_from_the_signed_values_with_their_sign(name: "str | None", sent: Tuple[str, ...],
                                                                     values: Tuple[str, ...]) -> None:
    data = enriched(capture(name))
    for net, code, value in zip(nets(sent), sent, values):
        got = data.get(net)
        assert got is not None, net
        assert got.derived and got.value == Decimal(value) and got.unit == "W", net
        assert str(got.obis) == f"1-0:{net}*255"
        own = data.get(code)  # the meter's own code stays as sent, value unchanged, not derived
        assert own is not None and own.code == f"1-0:{code}*255" and own.value == Decimal(value)
        assert not own.derived
        # asking for the one code gives the same value as the whole enrichment
        alone = derive(parse_readout(capture(name)).to_meter_data(), Obis.parse(net))
        assert alone is not None and alone.value == got.value and alone.obis == got.obis


@pytest.mark.parametrize("name,sent,values", CASES)
def test_the_signed_codes_are_named_net_in_both_languages(name: "str | None", sent: Tuple[str, ...],
                                                          values: Tuple[str, ...]) -> None:
    data = enriched(capture(name))
    if len(sent) == 1:  # (L1 alone)
        l1 = data.get(sent[0])
        assert l1 is not None and l1.signed_by() == "ESY" and "net L1" in (l1.name or "")
        assert "Saldo L1" in (l1.meaning("de") or "")
        return
    total = data.get(sent[0])
    assert total is not None and total.signed_by() == "ESY"
    assert total.name is not None and "net" in total.name and "signed" in total.name
    assert "import (+A), instantaneous" not in total.name
    de = total.meaning("de")
    assert de is not None and "Saldo" in de and "vorzeichenbehaftet" in de
    l2 = data.get(sent[2])
    assert l2 is not None and "net L2" in (l2.name or "")
    # Home Assistant's entity name follows the same meaning
    config = discovery_config(total, reading_key(total), meter="m", state_topic="t", availability_topic="a",
                           device={}, language="de")
    assert config is not None and "Saldo" in config["name"]


@pytest.mark.parametrize("name,sent,values", CASES)
def test_victron_gets_total_and_phase_power_with_their_signs(name: "str | None", sent: Tuple[str, ...],
                                                             values: Tuple[str, ...]) -> None:
    v = Mapper().map(enriched(capture(name))).values
    if len(sent) == 1:  # L1 alone: a single-phase meter to Victron, its total is L1's
        assert v["/Ac/L1/Power"] == v["/Ac/Power"] == pytest.approx(float(values[0]))
        assert "/Ac/L2/Power" not in v
        return
    total, l1, l2, l3 = (float(x) for x in values)
    assert v["/Ac/Power"] == pytest.approx(total)
    assert (v["/Ac/L1/Power"], v["/Ac/L2/Power"], v["/Ac/L3/Power"]) == pytest.approx((l1, l2, l3))


@pytest.mark.parametrize("name,sent,values", CASES)
def test_another_makers_codes_give_no_net_power(name: "str | None", sent: Tuple[str, ...],
                                                values: Tuple[str, ...]) -> None:
    data = enriched(other_maker(capture(name)))
    assert all(data.get(net) is None for net in NETS)
    assert not any(r.derived for r in data.readings)
    first = data.get(sent[0])
    assert first is not None and first.signed_by() is None
    # the standard's meaning, as the maker may mean it
    assert first.name == ("Active import (+A), instantaneous" if len(sent) > 1 else
                          "Active import L1 (+A), instantaneous")
    v = Mapper().map(data).values
    assert not any(path.endswith("/Power") for path in v)  # (a negative import is no grid power)


def test_the_grid_meter_struct_gets_the_power() -> None:
    """The plugin's own struct (plugin.yaml ``dlms.grid_meter``) binds 16.7.0, which the Q3D now has."""
    ps = support()
    package = "plugins.dlms.dlms_protocol"
    datablock = importlib.import_module(package + ".iec62056_21.datablock")
    pipeline = importlib.import_module(package + ".pipeline")
    data = pipeline.enrich(datablock.parse_readout(capture("d0/easymeter_q3d_1.txt")).to_meter_data())
    struct: Dict[str, dict] = yaml.safe_load((ROOT / "plugin.yaml").read_text(encoding="utf-8"))["item_structs"]
    item = struct["grid_meter"]["power"]
    binding = ps.parse_obis_attribute(item["dlms_obis_code@instance"], item.get("dlms_unit@instance"))
    reading = binding.select(data)
    assert reading is not None and reading.derived
    assert ps.item_value(binding, reading, item["type"]) == pytest.approx(-142.3)
    # the web interface's list of codes names the meter's own code by its meaning
    rows = {row.code: row.name for row in ps.discover(data, {}, "en")}
    assert "net" in rows["1-0:1.7.255*255"]
