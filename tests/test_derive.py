"""Derived registers: net power only from parts the meter really sent, never an assumed 0."""
from __future__ import annotations

from decimal import Decimal

import pytest

from dlms_protocol.derive import derive
from dlms_protocol.model import MeterData, Reading
from dlms_protocol.obis import Obis


def reading(code: str, value: str, unit: str = "kW") -> Reading:
    return Reading(code=code, obis=Obis.parse(code), value=Decimal(value) if value else value, unit=unit, raw=value)


def data(*readings: Reading) -> MeterData:
    return MeterData(kind="readout", readings=readings)


def test_net_power_from_import_and_export():
    got = derive(data(reading("1.7.0", "00.845"), reading("2.7.0", "00.100")), Obis.parse("16.7.0"))
    assert got is not None and got.value == Decimal("0.745") and got.unit == "kW"


def test_mixed_units_and_full_codes():
    d = data(reading("1-0:1.7.0*255", "0", "W"), reading("1-0:2.7.0*255", "1.5", "kW"))
    got = derive(d, Obis.parse("1-0:16.7.0"))
    assert got.unit == "W"
    assert got.value == Decimal("-1500") and str(got.obis) == "1-0:16.7.0*255"


def test_per_phase():
    d = data(reading("21.7.0", "0.312"), reading("22.7.0", "0.400"))
    assert derive(d, Obis.parse("36.7.0")).value == Decimal("-0.088")
    assert derive(d, Obis.parse("56.7.0")) is None


@pytest.mark.parametrize("readings", [
    (reading("1.7.0", "0.845"),),                                 # export missing: no assumed 0
    (reading("1.7.0", "0.845"), reading("2.7.0", "")),            # empty value
    (reading("1.7.0", "0.845"), reading("2.7.0", "0.1", "kWh")),  # not a power unit
    (reading("1.7.0", "0.845", ""), reading("2.7.0", "0.1")),     # no unit
])
def test_nothing_derived_from_incomplete_parts(readings):
    assert derive(data(*readings), Obis.parse("16.7.0")) is None


def test_billing_periods_and_other_codes_are_not_derived():
    d = data(reading("1.7.0", "0.845"), reading("2.7.0", "0.1"))
    assert derive(d, Obis.parse("16.7.0*01")) is None
    assert derive(d, Obis.parse("1.8.0")) is None
