"""A field whose scaler differs between meter types of one list: the possible range decides
(profiles ``range_check``, ``dlms.scalecheck.RangeCheck``).

A Kamstrup Omnipower of type 684143 (Denmark, N1) sends Kamstrup_V0001 with its voltages in
0.01 V (amsreader-firmware issue 814: 23593 for 235.93 V), every other type in V. The frames here
are this project's own, built with the encoder.
"""
from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any, Dict, List, Tuple

import pytest
from hypothesis import given, settings, strategies as st

from dlms_protocol.config import ListenerConfig
from dlms_protocol.dlms.apdu import Structure, encode_notification
from dlms_protocol.dlms.decoder import PushDecoder, PushMessage
from dlms_protocol.dlms.encode import hdlc_frames
from dlms_protocol.dlms.profiles import parse_profile
from dlms_protocol.errors import ConfigurationError
from dlms_protocol.obis import Obis

U32, U16, OS, VS = "double-long-unsigned", "long-unsigned", "octet-string", "visible-string"
VOLTS = ("1-1:32.7.0.255", "1-1:52.7.0.255", "1-1:72.7.0.255")


def ob(text: str) -> bytes:
    o = Obis.parse(text)
    return bytes([o.a, o.b, o.c, o.d, o.e, 255 if o.f is None else o.f])


def kamstrup_list2(volts: Tuple[int, int, int], meter_type: str = "6841439BN244101011") -> Structure:
    """Kamstrup_V0001 list 2 of a 3-phase meter: 551 W, 462 var, 1.39/0.36/1.87 A, the raw voltages."""
    items: List[Tuple[str, Any]] = [(VS, "Kamstrup_V0001")]
    pairs = [("1-1:0.0.5.255", VS, "5706567302818730"), ("1-1:96.1.1.255", VS, meter_type),
             ("1-1:1.7.0.255", U32, 551), ("1-1:2.7.0.255", U32, 0), ("1-1:3.7.0.255", U32, 0),
             ("1-1:4.7.0.255", U32, 462), ("1-1:31.7.0.255", U32, 139), ("1-1:51.7.0.255", U32, 36),
             ("1-1:71.7.0.255", U32, 187)] + [(code, U16, v) for code, v in zip(VOLTS, volts)]
    for code, t, v in pairs:
        items += [(OS, ob(code)), (t, v)]
    s = Structure(v for _, v in items)
    s.types = tuple(t for t, _ in items)
    return s


def decode(volts: Tuple[int, int, int]) -> Tuple[PushMessage, List[Tuple[str, str]]]:
    dec = PushDecoder(ListenerConfig(port="x"))
    msgs = [m for f in hdlc_frames(encode_notification(kamstrup_list2(volts), None)) for m in dec.feed(f)]
    assert len(msgs) == 1 and msgs[0].profile == "kamstrup-han"
    return msgs[0], dec.take_notes()


def voltages(msg: PushMessage) -> List[Tuple[Any, Any]]:
    by_code = {str(r.obis): r for r in msg.readings}
    return [(by_code[str(Obis.parse(c))].value, by_code[str(Obis.parse(c))].scaler) for c in VOLTS]


def test_a_meter_type_in_hundredths_of_a_volt_is_read_in_volts() -> None:
    msg, notes = decode((23593, 23343, 23507))
    assert voltages(msg) == [(Decimal("235.93"), -2), (Decimal("233.43"), -2), (Decimal("235.07"), -2)]
    assert len(notes) == 3 and all(level == "info" and "at 10^-2" in text for level, text in notes)


def test_whole_volts_stay_whole_volts_and_0_stays_0() -> None:
    msg, notes = decode((231, 0, 229))
    assert voltages(msg) == [(Decimal(231), 0), (Decimal(0), 0), (Decimal(229), 0)] and notes == []


def test_a_voltage_that_fits_no_unit_is_held_back(caplog: pytest.LogCaptureFixture) -> None:
    """30 V or 0.3 V, 9000 V or 90 V? 3000 fits neither 10^0 nor 10^-2 within 50-500 V: no value,
    never a guess; the Victron path stays empty without a warning of its own."""
    from dlms_protocol.pipeline import enrich
    from dlms_protocol.victron.mapping import Mapper

    msg, notes = decode((3000, 231, 229))
    assert voltages(msg)[0][0] is None and voltages(msg)[1] == (Decimal(231), 0)
    assert [level for level, _ in notes] == ["warning"] and "held back" in notes[0][1]
    with caplog.at_level(logging.INFO, logger="dlms_protocol.victron.mapping"):
        mapped = Mapper().map(enrich(msg.to_meter_data()))
    assert "/Ac/L1/Voltage" not in mapped.values and mapped.values["/Ac/L2/Voltage"] == 231.0
    assert not [r for r in caplog.records if "1-1:32.7.0" in r.getMessage()]


def test_victron_gets_mains_voltage() -> None:
    """Read as 23 593 V the voltage went to /Ac/L1/Voltage and into the average /Ac/Voltage."""
    from dlms_protocol.pipeline import enrich
    from dlms_protocol.victron.mapping import Mapper

    mapped = Mapper().map(enrich(decode((23593, 23343, 23507))[0].to_meter_data()))
    assert (mapped.values["/Ac/L1/Voltage"], mapped.values["/Ac/Voltage"]) == (235.93, 234.81)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=50, max_value=500), st.integers(min_value=0, max_value=99), st.booleans())
def test_the_range_picks_the_meter_s_unit(whole: int, hundredths: int, in_hundredths: bool) -> None:
    """Any mains voltage in either unit comes out as sent: the choices are further apart than the
    range is wide, so at most one fits."""
    volts = Decimal(whole) + (Decimal(hundredths) / 100 if in_hundredths and whole < 500 else 0)
    raw = int(volts * 100) if in_hundredths else int(volts)
    msg, _ = decode((raw, 231, 231))
    assert voltages(msg)[0][0] == volts


def _profile(range_check: Dict[str, Any]) -> Dict[str, Any]:
    return {"name": "x", "match": {"shape": "obis", "markers": [{"index": 0, "equals": "X"}]},
            "fields": [{"obis": "1-1:32.7.0.255", "kind": "number", "scaler": 0, "unit": "V"},
                       {"obis": "1-1:96.1.1.255", "kind": "text"}],
            "range_check": range_check}


U1 = "1-1:32.7.0.255"


@pytest.mark.parametrize("spec, cause", [
    ({"fields": [U1], "choices": [0, -1], "range": [50, 500]}, "further apart"),
    ({"fields": [U1], "choices": [0], "range": [50, 500]}, "two or more"),
    ({"fields": [U1], "choices": [0, 0], "range": [50, 500]}, "further apart"),
    ({"fields": [U1], "choices": [0, -2], "range": [0, 500]}, "above 0"),
    ({"fields": [U1], "choices": [0, -2], "range": [500, 50]}, "above 0"),
    ({"fields": [U1], "choices": [0, -2], "range": [50]}, "above 0"),
    ({"fields": ["1-1:96.1.1.255"], "choices": [0, -2], "range": [50, 500]}, "no number field"),
    ({"fields": [], "choices": [0, -2], "range": [50, 500]}, "at least one"),
    ({"fields": [U1], "choices": [0, -2]}, "range"),
])
def test_a_broken_range_check_is_refused_at_loading(spec: Dict[str, Any], cause: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        parse_profile(_profile(spec))
    assert cause in str(err.value)


def test_a_smarthomeng_item_says_why_the_voltage_is_missing() -> None:
    pytest.importorskip("yaml")  # (the SmartHomeNG double; not in the Venus OS matrix)
    from shng_double.testing import support

    ps = support()  # the plugin's own module, as SmartHomeNG imports it
    reading = next(r for r in decode((3000, 231, 229))[0].readings if r.code == "1-1:32.7.0.255")
    with pytest.raises(ps.ValueProblem) as err:
        ps.item_value(ps.parse_obis_attribute("1-1:32.7.0"), reading, "num")
    assert "outside the possible range" in str(err.value) and "hour" not in str(err.value)
