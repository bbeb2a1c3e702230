"""MeterData.find looks codes up through a per-snapshot index: it must select exactly what the
rule in Obis.matches selects, in meter order, for any codes (property test against the scan)."""
from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from dlms_protocol.model import MeterData, Reading
from dlms_protocol.obis import Obis

small = st.one_of(st.none(), st.integers(0, 3))
codes = st.builds(Obis, small, small, st.integers(1, 4), st.integers(7, 8), st.integers(0, 1),
                  st.one_of(st.none(), st.sampled_from([0, 1, 255])))


def scan(data: MeterData, pattern: Obis) -> list:
    return [r for r in data.readings if r.obis is not None and pattern.matches(r.obis)]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), codes), max_size=12), st.lists(codes, min_size=1, max_size=6))
def test_find_selects_what_the_matching_rule_selects(sent: list, patterns: list) -> None:
    data = MeterData("push", tuple(Reading(code=str(o) if o else f"index {i}", obis=o, value=Decimal(i), index=i)
                                   for i, o in enumerate(sent)))
    for pattern in patterns:
        assert data.find(pattern) == scan(data, pattern)
        assert data.get(pattern) == (scan(data, pattern) or [None])[0]


def test_the_index_is_no_field() -> None:
    """replace() builds a new snapshot with its own index; equality ignores the cache."""
    from dataclasses import replace

    one = MeterData("push", (Reading(code="1.8.0", obis=Obis.parse("1-0:1.8.0"), value=Decimal(1)),), received=1.0)
    assert one.find("1.8.0")
    two = replace(one, readings=(Reading(code="2.8.0", obis=Obis.parse("1-0:2.8.0"), value=Decimal(2)),))
    assert two.find("1.8.0") == [] and two.get("2.8.0") is not None
    assert one == MeterData("push", one.readings, received=1.0)


def _scan_select(code: Obis, data) -> object:
    """The plugin's rule as a plain scan: the first reading of the code; else, for a code written
    with A-B, the first one the meter sent without A and B (its short D0 form)."""
    for r in data.readings:
        if r.obis is not None and code.matches(r.obis):
            return r
    if code.a is None:
        return None
    short = Obis(None, None, code.c, code.d, code.e, code.f)
    return next((r for r in data.readings if r.obis is not None and r.obis.a is None and r.obis.b is None
                 and short.matches(r.obis)), None)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), codes), max_size=12), st.lists(codes, min_size=1, max_size=6))
def test_item_binding_selects_what_the_scan_selects(sent: list, patterns: list) -> None:
    """The SmartHomeNG item binding looks up through the index too; same reading as the scan."""
    from shng_double.testing import support

    binding_class = support().ObisBinding
    data = MeterData("push", tuple(Reading(code=str(o) if o else f"index {i}", obis=o, value=Decimal(i), index=i)
                                   for i, o in enumerate(sent)))
    for pattern in patterns:
        binding = binding_class(text=str(pattern), obis=pattern)
        assert binding.select(data) is _scan_select(pattern, data)
