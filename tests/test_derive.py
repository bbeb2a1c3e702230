"""Derived registers: net power only from parts the meter really sent, never an assumed 0."""
from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from dlms_protocol import derive as derive_mod
from dlms_protocol.derive import derive, derive_all, rules
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


# ------------------------------------------------------------------- derive_all
def _reference_derive_all(d: MeterData):
    """derive_all's contract spelled out through derive(): for every rule whose code the meter did
    not send, one result per A-B a current plus part was sent with."""
    out = []
    for code, plus_code, _minus in rules():
        if d.get(code) is not None:
            continue
        seen = set()
        for plus in d.find(plus_code):
            if (plus.obis.a, plus.obis.b) in seen:
                continue
            seen.add((plus.obis.a, plus.obis.b))
            got = derive(d, Obis(plus.obis.a, plus.obis.b, code.c, code.d, code.e, None))
            if got is not None:
                out.append(replace(got, derived=True))
    return out


_CODES = ["1.7.0", "2.7.0", "1.7.0", "2.7.0", "16.7.0", "21.7.0", "22.7.0", "36.7.0", "1.8.0"]
_readings = st.lists(st.tuples(
    st.sampled_from([None, (1, 0), (1, 1), (0, 0)]), st.sampled_from(_CODES), st.sampled_from([None, 255, 255, 1]),
    st.one_of(st.decimals(allow_nan=False, allow_infinity=False, places=3), st.integers(-10**6, 10**6),
              st.decimals(allow_nan=True, allow_infinity=True), st.just(""), st.none()),
    st.sampled_from(["W", "W", "kW", "kWh", "", None])), max_size=8)


_clean = st.lists(st.tuples(
    st.sampled_from([None, (1, 0), (1, 1)]), st.sampled_from(["1.7.0", "2.7.0", "21.7.0", "22.7.0"]),
    st.sampled_from([None, 255]), st.decimals(allow_nan=False, allow_infinity=False, places=3),
    st.sampled_from(["W", "kW"])), max_size=6)


@settings(max_examples=400, deadline=None)
@given(st.tuples(_clean, _readings).map(lambda t: t[0] + t[1]).flatmap(st.permutations))
def test_derive_all_gives_what_derive_gives_for_every_part_sent(items):
    made = []
    for ab, code, f, value, unit in items:
        text = (f"{ab[0]}-{ab[1]}:" if ab else "") + code + (f"*{f}" if f is not None else "")
        made.append(Reading(code=text, obis=Obis.parse(text), value=value, unit=unit, raw=value))
    d = data(*made)
    got = derive_all(d)
    assert got == _reference_derive_all(d)
    event(f"{len(got)} derived")
    # the next pushes of the same layout (the same code objects, other values): the second keeps
    # the pairs, the third is read through them; still exactly what derive gives
    for _ in range(2):
        made = [replace(r, value=_shifted(r.value)) for r in made]
        later = data(*made)
        assert derive_all(later) == _reference_derive_all(later)


def test_pairs_are_kept_for_a_repeating_layout_only():
    """A push layout (the same code objects every time) is kept; D0 readouts (new code objects
    every time) are not, so their codes are not held in memory."""
    derive_mod._PAIRS.entries.clear()
    alive = []  # (held, so that no readout's codes are freed and their addresses handed out again)
    for n in range(40):  # readouts: new objects each time
        alive.append(data(reading("1-0:1.7.0", str(n)), reading("1-0:2.7.0", "1")))
        derive_all(alive[-1])
    assert len(derive_mod._PAIRS.entries) == 0
    made = [reading("1-0:1.7.0", "5"), reading("1-0:2.7.0", "1")]
    for n in range(3):
        got = derive_all(data(*(replace(r, value=r.value + n) for r in made)))
        assert [(str(r.obis), r.value) for r in got] == [("1-0:16.7.0*255", Decimal(4))]
    codes = [r.obis for r in made]
    assert any(all(a is b for a, b in zip(hit[0], codes)) for hit in derive_mod._PAIRS.entries.values())


def _shifted(value):
    finite = isinstance(value, int) or (isinstance(value, Decimal) and value.is_finite())
    return value + 1 if finite and not isinstance(value, bool) else value


def test_derive_all_uses_the_parts_of_the_same_channel():
    d = data(reading("1-1:1.7.0", "2"), reading("1-0:1.7.0", "5"), reading("1-0:2.7.0", "1"),
             reading("1-1:2.7.0", "0.5"), reading("21.7.0", "1"), reading("1-0:22.7.0", "0.25"))
    got = {str(r.obis): r.value for r in derive_all(d)}
    assert got == {"1-1:16.7.0*255": Decimal("1.5"), "1-0:16.7.0*255": Decimal("4"), "36.7.0": Decimal("0.75")}
    assert all(r.derived for r in derive_all(d))


@pytest.mark.parametrize("form, net", [("1-0:{}.7.0.255", "1-0:16.7.0.255"), ("1-0:{}.7.0*255", "1-0:16.7.0*255"),
                                       ("{}.7.0", "16.7.0")])
def test_a_result_is_written_as_its_parts(form: str, net: str) -> None:
    """A DLMS push writes its codes A-B:C.D.E.F (as gurux does): its derived net power beside
    them is 1-0:16.7.0.255 too, not 1-0:16.7.0*255; a D0 readout's forms stay its own."""
    d = data(reading(form.format(1), "1.5"), reading(form.format(2), "0.5"))
    for got in (derive_all(d), derive_all(d), derive_all(d), [derive(d, Obis.parse("16.7.0"))]):  # (kept, then hit)
        assert [(r.code, r.value) for r in got] == [(net, Decimal("1.0"))]
