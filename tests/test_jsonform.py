"""The one JSON form (``jsonform``, ``model.json_value``): exact values, the same form in every tool.

The rule: integers and integral Decimals are JSON integers; another Decimal is a JSON number
when that float reads back as the same number, else its text; bytes are upper-case hex;
``json.loads`` of the dumped form gives back the value exactly (by its type).
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from dlms_protocol.jsonform import METER_DATA_KEYS, READING_KEYS, meter_data_json, reading_json
from dlms_protocol.model import MeterData, Reading, json_value
from dlms_protocol.obis import Obis
from dlms_protocol.pipeline import enrich


def dumped(value: Any) -> Any:
    return json.loads(json.dumps(json_value(value)))


def decimal_back(shown: Any) -> Decimal:
    """What a JSON consumer that knows the value is a Decimal reads back (the documented rule)."""
    assert not isinstance(shown, bool)
    if isinstance(shown, float):
        return Decimal(repr(shown))
    return Decimal(shown)  # int or text


@settings(max_examples=600, deadline=None)
@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_every_decimal_round_trips_exactly(value: Decimal) -> None:
    shown = dumped(value)
    assert decimal_back(shown) == value
    if value == value.to_integral_value() and value.adjusted() < 60:
        assert type(shown) is int  # a counter stays an integer
    elif isinstance(shown, str):  # text only when no float says exactly this number
        assert Decimal(repr(float(value))) != value


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=-10 ** 40, max_value=10 ** 40), st.integers(min_value=-12, max_value=6))
def test_scaled_register_values_round_trip(raw: int, scaler: int) -> None:
    value = Decimal(raw).scaleb(scaler)  # what a push or poll reading holds: raw * 10^scaler
    assert decimal_back(dumped(value)) == value


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.integers(), st.text(), st.binary(), st.booleans(), st.none()))
def test_ints_text_bytes_round_trip(value: Any) -> None:
    shown = dumped(value)
    if isinstance(value, bytes):
        assert shown == value.hex().upper() and bytes.fromhex(shown) == value
    else:
        assert shown == value and type(shown) is type(value)


def test_digits_a_float_would_lose_stay_text() -> None:
    assert dumped(Decimal("12345678901234567.891")) == "12345678901234567.891"
    assert dumped(Decimal("0.1")) == 0.1 and dumped(Decimal("230.4")) == 230.4
    assert dumped(Decimal("6334.294")) == 6334.294 and dumped(Decimal("1E+3")) == 1000
    assert dumped(Decimal("NaN")) == "NaN" and dumped(Decimal("-Infinity")) == "-Infinity"
    assert dumped(Decimal("1E-400")) == "1E-400"  # would be 0.0 as a float: never a fake 0


readings = st.builds(
    Reading,
    code=st.sampled_from(["1-0:1.8.0.255", "1.8.0", "C.1.0", "#3"]),
    obis=st.sampled_from([Obis.parse("1-0:1.8.0.255"), Obis.parse("1.8.0"), None]),
    value=st.one_of(st.decimals(allow_nan=False, allow_infinity=False), st.integers(), st.text(), st.binary(),
                    st.none()),
    unit=st.sampled_from([None, "kWh", "W", "V"]),
    raw=st.one_of(st.integers(), st.text(max_size=20), st.none()),
    scaler=st.one_of(st.none(), st.integers(-5, 5)),
    index=st.integers(0, 100),
    derived=st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(readings)
def test_reading_form_round_trips(reading: Reading) -> None:
    form = json.loads(json.dumps(reading_json(reading)))
    assert tuple(form) == READING_KEYS
    assert form["code"] == reading.code and form["unit"] == reading.unit and form["derived"] is reading.derived
    value = reading.value
    if isinstance(value, Decimal):
        assert decimal_back(form["value"]) == value
    elif isinstance(value, bytes):
        assert bytes.fromhex(form["value"]) == value
    else:
        assert form["value"] == value


def test_meter_data_form_without_a_message() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=1)))
    data = MeterData(kind="readout", readings=(
        Reading("1.8.0", Obis.parse("1.8.0"), Decimal("6334.294"), "kWh", raw="0006334.294"),
        Reading("1-0:16.7.0.255", Obis.parse("1-0:16.7.0.255"), Decimal("-73.69"), "kW", derived=True),
    ), received=1767319445.25, meter_time=when, meter_id="/ESY5Q3DA1004", checksum="BCC")
    form = json.loads(json.dumps(meter_data_json(data)))
    assert tuple(form) == METER_DATA_KEYS
    assert form["received"] == "2026-01-02T02:04:05.250Z" and form["meter_time"] == when.isoformat()
    assert [(r["code"], r["value"], r["derived"]) for r in form["readings"]] == [
        ("1.8.0", 6334.294, False), ("1-0:16.7.0.255", -73.69, True)]
    assert "received" not in meter_data_json(data, received=False)


def test_a_message_keeps_its_contract_and_gets_the_derived_readings() -> None:
    from dlms_protocol.config import ListenerConfig
    from dlms_protocol.dlms.decoder import decode_bytes
    from dlms_protocol.simulator.push import PushSimulator

    frame = PushSimulator(wrapper="hdlc", seed=3).emit()
    (msg,) = decode_bytes(frame, ListenerConfig(port="-"))
    data = enrich(msg.to_meter_data())
    form = meter_data_json(data, received=False)
    own = msg.to_json()
    assert list(form)[:len(own)] == list(own)  # the message's keys first, in its order
    assert form["readings"][:len(own["readings"])] == own["readings"]
    derived = form["readings"][len(own["readings"]):]
    assert derived and all(r["derived"] for r in derived)
    assert {r["obis"] for r in derived} <= {"1-0:16.7.0.255", "1-0:36.7.0.255", "1-0:56.7.0.255", "1-0:76.7.0.255"}


def test_sml_and_push_messages_share_the_documented_keys(capsys) -> None:
    """``decode --json`` of an SML transmission has the push message's keys in the same order."""
    from dlms_protocol.cli import main
    from dlms_protocol.simulator.sml import SmlSimulator

    push_keys = ["wrapper", "ciphered", "tag_verified", "checksum", "timestamp", "profile", "readings"]
    data = SmlSimulator(seed=2).build()
    assert main(["decode", "--hex", data.hex(), "--json"]) == 0
    (doc,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [k for k in doc if k in push_keys] == push_keys
    assert doc["checksum"] == "SML CRC16" and doc["protocol"] == "sml" and doc["kind"] == "push"
    assert all(tuple(r)[:len(READING_KEYS)] == READING_KEYS for r in doc["readings"])


def test_every_snapshot_names_what_vouched_for_its_values() -> None:
    """MeterData.checksum is set for DLMS push and SML as for D0 (the plugin's status shows it)."""
    from dlms_protocol.config import ListenerConfig
    from dlms_protocol.dlms.decoder import decode_bytes
    from dlms_protocol.simulator.push import PushSimulator
    from dlms_protocol.simulator.sml import SmlSimulator
    from dlms_protocol.sml.decoder import SmlDecoder

    key = bytes(range(16))
    auth = bytes(range(16, 32))
    sim = PushSimulator(wrapper="hdlc", key=key, auth_key=auth, security=0x30, seed=3)
    (msg,) = decode_bytes(sim.emit(), ListenerConfig(port="-", key=key, auth_key=auth))
    assert msg.to_meter_data().checksum == "HDLC FCS + GCM tag" == msg.to_json()["checksum"]
    (plain,) = decode_bytes(PushSimulator(wrapper="mbus", seed=3).emit(), ListenerConfig(port="-"))
    assert plain.to_meter_data(text=False).checksum == "M-Bus checksum"
    (tel,) = SmlDecoder().feed(SmlSimulator(seed=2).build())
    assert tel.to_meter_data().checksum == "SML CRC16" == tel.to_json()["checksum"]
