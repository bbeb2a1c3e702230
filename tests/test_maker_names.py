"""A code a maker's P1 companion standard uses for another quantity gets that quantity's name:
Fluvius (Belgium, FLAG id FLU) and E.ON Hungary's Sagemcom meters (SAG) send the threshold of
their fuse supervision as 1-0:31.4.0 (51.4.0, 71.4.0), which IEC 62056-61 names "current
average". Shown under that name, a user took a setting of 999 A for a measured current. Only
for those makers (obis_names.json ``maker_names``): the same code from any other meter keeps the
standard's name, and nothing is derived from it. The telegrams are built here in the layout of
the makers' published examples (the lines dsmr_parser's tests carry), with their CRC16.
"""
from __future__ import annotations

from typing import Dict, Optional

import pytest

from dlms_protocol.iec62056_21.datablock import _crc16_arc, parse_readout
from dlms_protocol.model import MeterData
from dlms_protocol.mqtt.discovery import discovery_config, reading_key
from dlms_protocol.pipeline import enrich
from dlms_protocol.victron.mapping import Mapper

FLUVIUS = (b"/FLU5\\253769484_A\r\n\r\n0-0:96.1.4(50217)\r\n0-0:1.0.0(200512135409S)\r\n"
           b"1-0:1.8.1(000000.034*kWh)\r\n1-0:1.7.0(00.000*kW)\r\n1-0:2.7.0(00.000*kW)\r\n"
           b"1-0:31.7.0(000.00*A)\r\n1-0:32.7.0(229.1*V)\r\n0-0:96.3.10(1)\r\n0-0:17.0.0(999.9*kW)\r\n"
           b"1-0:31.4.0(999*A)\r\n!")
EON_HU = (b"/SAG5SAG-METER\r\n\r\n0-0:1.0.0(210423114722S)\r\n0-0:96.1.0(3153414733313031303231363035)\r\n"
          b"0-0:17.0.0(90.000*kW)\r\n1-0:1.7.0(00.318*kW)\r\n1-0:2.7.0(00.000*kW)\r\n"
          b"1-0:31.7.0(003*A)\r\n1-0:51.7.0(000*A)\r\n1-0:71.7.0(001*A)\r\n"
          b"1-0:31.4.0(200.00*A)\r\n1-0:51.4.0(200.00*A)\r\n1-0:71.4.0(200.00*A)\r\n!")


def telegram(body: bytes, maker: Optional[bytes] = None) -> bytes:
    """``body`` with another maker's FLAG id when given, and its CRC16 (over '/' to '!')."""
    if maker is not None:
        body = b"/" + maker + body[4:]
    return body + b"%04X\r\n" % _crc16_arc(body)


def snapshot(raw: bytes) -> MeterData:
    return enrich(parse_readout(raw).to_meter_data())


def names(data: MeterData, language: str = "en") -> Dict[str, Optional[str]]:
    return {r.code: r.meaning(language) for r in data.readings}


@pytest.mark.parametrize("body,limits", [(FLUVIUS, ("1-0:31.4.0",)),
                                         (EON_HU, ("1-0:31.4.0", "1-0:51.4.0", "1-0:71.4.0"))])
def test_the_fuse_threshold_is_named_as_the_maker_documents_it(body: bytes, limits: tuple) -> None:
    data = snapshot(telegram(body))
    en, de = names(data), names(data, "de")
    for code in limits:
        assert "limit" in (en[code] or "") and "average" not in (en[code] or ""), en[code]
        assert "Stromgrenze" in (de[code] or ""), de[code]
    # the measured currents keep their names, and the threshold's value stays as sent
    assert en["1-0:31.7.0"] == "Current L1, instantaneous"
    assert data.get("31.4.0") is not None and data.get("31.4.0").value in (999, 200)  # type: ignore[union-attr]


@pytest.mark.parametrize("body", [FLUVIUS, EON_HU])
def test_another_maker_s_31_4_0_keeps_the_standard_name(body: bytes) -> None:
    data = snapshot(telegram(body, maker=b"XYZ"))
    assert names(data)["1-0:31.4.0"] == "Current L1, current average"


def test_the_threshold_is_no_phase_current_for_victron_and_named_for_home_assistant() -> None:
    """No Victron path takes the threshold (200 A), and Home Assistant's entity carries its name."""
    data = snapshot(telegram(EON_HU))
    mapped = Mapper().map(data)
    assert mapped.values and 200.0 not in mapped.values.values(), mapped.values
    limit = next(r for r in data.readings if r.code == "1-0:31.4.0")
    config = discovery_config(limit, reading_key(limit), meter="m", state_topic="t", availability_topic="a",
                              device={})
    assert config is not None and "limit" in config["name"], config


def test_every_list_of_names_gives_the_maker_s_meaning(tmp_path) -> None:
    """The D0 table of ``read``/``parse`` and the plugin's discovery give the maker's name as
    ``Reading.meaning`` does (they named the code by the standard alone before)."""
    import io

    from dlms_protocol.iec62056_21.cli import print_table
    from shng_double.testing import support

    raw = telegram(FLUVIUS)
    out = io.StringIO()
    print_table(parse_readout(raw), out)
    line = next(x for x in out.getvalue().splitlines() if x.startswith("1-0:31.4.0"))
    assert "Current limit L1" in line and "average" not in line, line
    ps = support()
    rows = {row.code: row.name for row in ps.discover(snapshot(raw), {}, "de")}
    assert rows["1-0:31.4.0"].startswith("Stromgrenze L1"), rows["1-0:31.4.0"]
    assert rows["1-0:31.7.0"] == "Strom L1, Momentanwert"
    net = [name for code, name in rows.items() if "16.7.0" in code]  # computed from 1.7.0 - 2.7.0
    assert len(net) == 1 and net[0].endswith(" (berechnet)"), rows
    assert not rows["1-0:1.7.0"].endswith(" (berechnet)"), rows


def test_the_web_interface_names_a_push_d0_meter_s_codes_by_the_maker() -> None:
    """The plugin listening to a push-only EasyMeter (the project's sample, /ESY, signed 1.7.255):
    the web interface's list of codes, in both languages, says net power where the maker does."""
    import json

    from dlms_protocol.simulator.d0 import SimulatedMeter
    from shng_double import SmartHome
    from shng_double.testing import plugins_dir, wait_for

    for language, word, mark in (("de", "Saldo", " (berechnet)"), ("en", "net", " (derived)")):
        meter = SimulatedMeter("easymeter_push", time_scale=1.0, push_interval=0.5).start()
        sh = SmartHome(plugins_dir(), language=language)
        try:
            sh.load_plugins({"dlms": {"plugin_name": "dlms", "serialport": meter.port, "mode": "listen",
                                      "listen_protocol": "d0", "listen_baudrate": 9600, "listen_format": "7E1"}})
            sh.load_item_tree({"grid": {"power": {"type": "num", "dlms_obis_code": "16.7.0"}}})
            sh.start()
            plugin = sh.plugin("dlms")
            wait_for(lambda plugin=plugin: plugin.status()["successes"] >= 1)
            data = json.loads(sh.webif("dlms").get_data_html("overview"))
            names = {row["code"]: row["name"] for row in data["discovered"]}
            assert word in names["1-0:1.7.255*255"], names
            assert word not in names["1-0:1.8.0*255"], names
            # the net power computed from the maker's code is marked as computed, the sent codes are not
            # (the user guide says so; the table showed them alike)
            assert names["1-0:16.7.0*255"].endswith(mark) and word in names["1-0:16.7.0*255"], names
            assert not names["1-0:1.7.255*255"].endswith(mark), names
        finally:
            sh.stop()
            meter.stop()


def test_discovery_names_a_code_only_where_its_unit_is_that_quantity_s() -> None:
    """The plugin's list of codes (web interface, discovery) said "Blind QII, Zählerstand" (reactive
    energy) for a heat meter's 6.8 in GJ, and import energy for 1.8.0 in m3, where ``Reading.meaning``
    (the unit checked against the quantity) says nothing: a wrong name is worse than none."""
    from shng_double.testing import support

    raw = (b"/XYZ5METER\r\n\x026.8(0031.412*GJ)\r\n1.8.0(001234.5*m3)\r\n1.8.0(001234.5*kWh)\r\n"
           b"6.8(0012.5*kvarh)\r\n!\r\n\x03")
    data = parse_readout(raw, use_checksum=False).to_meter_data()
    rows = [(row.code, row.unit, row.name) for row in support().discover(data, {}, "de")]
    assert rows == [("6.8", "GJ", ""), ("1.8.0", "m3", ""), ("1.8.0", "kWh", "Wirk Bezug (+A), Zählerstand"),
                    ("6.8", "kvarh", "Blind QII, Zählerstand")], rows
    assert [r.meaning("de") or "" for r in data.readings] == [row[2] for row in rows]
