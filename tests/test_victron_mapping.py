"""Readings -> Victron paths: units, signs, derivations, user overrides (no D-Bus needed)."""
from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from hypothesis import given, settings, strategies as st

from dlms_protocol.errors import ConfigurationError
from dlms_protocol.counterguard import HELD_TEXT
from dlms_protocol.model import HELD_DETAIL, MeterData, Reading
from dlms_protocol.obis import Obis
from dlms_protocol.victron.mapping import DERIVED, ESTIMATED, MEASURED, TOTAL, Mapper
from helpers import corpus_files, load_json

from dlms_protocol.pipeline import enrich  # noqa: E402 - beside its one user


def meter_data(*args: Any, **kwargs: Any) -> MeterData:
    """A snapshot as outputs get it from the pipeline: enriched once (net power derived)."""
    return enrich(MeterData(*args, **kwargs))


def R(code: str, value: Any, unit: Optional[str]) -> Reading:
    v = Decimal(str(value)) if isinstance(value, (int, float, str)) and unit is not None else value
    return Reading(code, Obis.try_parse(code), v, unit)


def frame(*readings: Reading) -> MeterData:
    return meter_data("push", tuple(readings), meter_id="TEST")


def approx(x: float) -> Any:
    return pytest.approx(x, rel=1e-9, abs=1e-9)


# ------------------------------------------------------------------- import / export
def test_import_frame_is_positive_three_phase() -> None:
    m = Mapper().map(frame(
        R("1-0:1.7.0.255", 1393, "W"), R("1-0:2.7.0.255", 0, "W"),
        R("1-0:21.7.0.255", 16, "W"), R("1-0:41.7.0.255", 51, "W"), R("1-0:61.7.0.255", 1325, "W"),
        R("1-0:22.7.0.255", 0, "W"), R("1-0:42.7.0.255", 0, "W"), R("1-0:62.7.0.255", 0, "W"),
        R("1-0:31.7.0.255", "1.03", "A"), R("1-0:51.7.0.255", "1.25", "A"), R("1-0:71.7.0.255", "5.97", "A"),
        R("1-0:32.7.0.255", "237.9", "V"), R("1-0:52.7.0.255", "237.9", "V"), R("1-0:72.7.0.255", "229.6", "V"),
    ))
    v = m.values
    assert v["/Ac/Power"] == 1393.0
    assert (v["/Ac/L1/Power"], v["/Ac/L2/Power"], v["/Ac/L3/Power"]) == (16.0, 51.0, 1325.0)
    assert (v["/Ac/L1/Current"], v["/Ac/L3/Current"]) == (1.03, 5.97)
    assert v["/Ac/Current"] == approx(1.03 + 1.25 + 5.97)
    assert v["/Ac/L3/PowerFactor"] == approx(1325 / (229.6 * 5.97))
    assert m.phases == {1, 2, 3}


def test_export_frame_is_negative_with_signed_currents() -> None:
    m = Mapper().map(frame(
        R("1-0:1.7.0.255", 0, "W"), R("1-0:2.7.0.255", 2500, "W"),
        R("1-0:21.7.0.255", 0, "W"), R("1-0:22.7.0.255", 1200, "W"),
        R("1-0:41.7.0.255", 300, "W"), R("1-0:42.7.0.255", 0, "W"),
        R("1-0:61.7.0.255", 0, "W"), R("1-0:62.7.0.255", 1600, "W"),
        R("1-0:31.7.0.255", "5.2", "A"), R("1-0:51.7.0.255", "1.4", "A"), R("1-0:71.7.0.255", "7.0", "A"),
    ))
    v = m.values
    assert v["/Ac/Power"] == -2500.0
    assert (v["/Ac/L1/Power"], v["/Ac/L2/Power"], v["/Ac/L3/Power"]) == (-1200.0, 300.0, -1600.0)
    # unsigned meter currents take the sign of their phase's net power
    assert (v["/Ac/L1/Current"], v["/Ac/L2/Current"], v["/Ac/L3/Current"]) == (-5.2, 1.4, -7.0)
    assert v["/Ac/Current"] == approx(-5.2 + 1.4 - 7.0)


def test_energy_in_kwh_from_any_unit() -> None:
    mapper = Mapper()
    for unit, raw, kwh in (("Wh", 1234567, 1234.567), ("kWh", "1234.567", 1234.567), ("MWh", "1.234567", 1234.567)):
        v = mapper.map(frame(R("1-0:1.8.0.255", raw, unit), R("1-0:2.8.0.255", 0, unit))).values
        assert v["/Ac/Energy/Forward"] == approx(kwh), unit
        assert v["/Ac/Energy/Reverse"] == 0.0


def test_power_in_kw_and_signed_net_from_d0_short_codes() -> None:
    # the shape of an eBZ/EasyMeter readout: 16.7.0 signed net, 36/56/76.7.0 per phase, short codes
    m = Mapper().map(meter_data("readout", (
        R("16.7.0", "-1.25", "kW"), R("36.7.0", "-0.5", "kW"), R("56.7.0", "-0.25", "kW"),
        R("76.7.0", "-0.5", "kW"), R("1.8.0", "125.25688570", "kWh"), R("C.1.0", "1EBZ0100507409", None),
    )))
    v = m.values
    assert v["/Ac/Power"] == -1250.0
    assert (v["/Ac/L1/Power"], v["/Ac/L2/Power"], v["/Ac/L3/Power"]) == (-500.0, -250.0, -500.0)
    assert v["/Ac/Energy/Forward"] == approx(125.2568857)
    assert v["/Serial"] == "1EBZ0100507409"
    assert "/Ac/Energy/Reverse" not in v


def test_signed_value_wins_over_import_export() -> None:
    v = Mapper().map(frame(R("1-0:16.7.0.255", -700, "W"), R("1-0:1.7.0.255", 0, "W"),
                           R("1-0:2.7.0.255", 700, "W"))).values
    assert v["/Ac/Power"] == -700.0


# ------------------------------------------------------------------ never a wrong value
def test_reading_without_unit_is_skipped_not_guessed(caplog: pytest.LogCaptureFixture) -> None:
    mapper = Mapper()
    for _ in range(3):
        v = mapper.map(frame(R("1-0:1.8.0.255", 1234567, None), R("1-0:1.7.0.255", 5, "W"),
                             R("1-0:2.7.0.255", 0, "W"))).values
        assert "/Ac/Energy/Forward" not in v
        assert v["/Ac/Power"] == 5.0
    warnings = [r for r in caplog.records if "without a unit" in r.getMessage()]
    assert len(warnings) == 1  # logged once


def test_unknown_unit_is_skipped() -> None:
    v = Mapper().map(frame(R("1-0:1.8.0.255", 5, "varh"), R("1-0:32.7.0.255", 230, "V"))).values
    assert "/Ac/Energy/Forward" not in v
    assert v["/Ac/L1/Voltage"] == 230.0


def test_all_caps_units_from_old_meters() -> None:
    v = Mapper().map(frame(R("1.8.0", "12.5", "KWH"), R("16.7.0", "0.5", "KW"))).values
    assert v["/Ac/Energy/Forward"] == 12.5
    assert v["/Ac/Power"] == 500.0


def test_import_without_export_leaves_power_empty() -> None:
    v = Mapper().map(frame(R("1-0:1.7.0.255", 800, "W"), R("1-0:32.7.0.255", 230, "V"))).values
    assert "/Ac/Power" not in v and "/Ac/L1/Power" not in v
    with pytest.raises(ConfigurationError, match="never taken as 0"):
        Mapper(options={"missing_part_is_zero": True})


def test_import_export_parts_are_no_mapping_rule_any_more(tmp_path: Path) -> None:
    """Net power has one rule, in the core: a user file that still says part import/export is told so."""
    user = tmp_path / "mapping.json"
    user.write_text(json.dumps({"sources": [{"path": "/Ac/Power", "obis": ["1.7.0"], "part": "import"}]}))
    with pytest.raises(ConfigurationError, match="16.7.0"):
        Mapper(str(user))


def test_current_without_phase_power_is_left_out() -> None:
    # 3-phase meter with total power only: the currents' signs are unknown
    v = Mapper().map(frame(R("1-0:1.7.0.255", 0, "W"), R("1-0:2.7.0.255", 900, "W"),
                           R("1-0:31.7.0.255", 2, "A"), R("1-0:51.7.0.255", 1, "A"),
                           R("1-0:32.7.0.255", 230, "V"), R("1-0:52.7.0.255", 231, "V"))).values
    assert v["/Ac/Power"] == -900.0
    assert "/Ac/L1/Current" not in v and "/Ac/L2/Current" not in v
    assert "/Ac/L1/Power" not in v or v["/Ac/L1/Power"] != -900.0  # 3 phases: never the total on L1 (auto)


def test_billing_period_and_other_media_do_not_feed_paths() -> None:
    v = Mapper().map(frame(R("1.8.0*01", "99", "kWh"), R("6-0:1.8.0", "7", "kWh"), R("1.8.0", "5", "kWh"))).values
    assert v["/Ac/Energy/Forward"] == 5.0


def test_non_numeric_value_is_skipped() -> None:
    v = Mapper().map(frame(Reading("1-0:1.8.0.255", Obis.parse("1-0:1.8.0.255"), "garbage", "kWh"))).values
    assert "/Ac/Energy/Forward" not in v


def test_inconsistent_power_factor_is_not_published() -> None:
    v = Mapper().map(frame(R("1-0:1.7.0.255", 2000, "W"), R("1-0:2.7.0.255", 0, "W"),
                           R("1-0:32.7.0.255", 230, "V"), R("1-0:31.7.0.255", 2, "A"))).values
    assert "/Ac/L1/PowerFactor" not in v  # 2000 W at 460 VA is impossible
    assert v["/Ac/L1/Current"] == 2.0


# ---------------------------------------------------------------- single phase / L1
def test_single_phase_meter_gets_total_on_l1() -> None:
    m = Mapper().map(frame(R("1-0:1.7.0.255", 0, "W"), R("1-0:2.7.0.255", 460, "W"),
                           R("1-0:32.7.0.255", 230, "V"), R("1-0:31.7.0.255", 2, "A"),
                           R("1-0:1.8.0.255", 1000, "Wh"), R("1-0:2.8.0.255", 3000, "Wh")))
    v = m.values
    assert v["/Ac/L1/Power"] == -460.0 and m.total_on_l1
    assert v["/Ac/L1/Current"] == -2.0
    assert v["/Ac/L1/PowerFactor"] == approx(1.0)
    assert v["/Ac/L1/Energy/Forward"] == 1.0 and v["/Ac/L1/Energy/Reverse"] == 3.0
    assert v["/Ac/Voltage"] == 230.0
    assert m.phases == {1}


def test_totals_only_meter_total_on_l1_modes() -> None:
    totals = frame(R("1-0:1.7.0.255", 100, "W"), R("1-0:2.7.0.255", 0, "W"), R("1-0:1.8.0.255", 1, "kWh"))
    assert Mapper().map(totals).values["/Ac/L1/Power"] == 100.0  # no phase data at all: auto -> L1
    assert "/Ac/L1/Power" not in Mapper(options={"total_power_on_l1": "no"}).map(totals).values
    three = frame(R("1-0:1.7.0.255", 100, "W"), R("1-0:2.7.0.255", 0, "W"), R("1-0:72.7.0.255", 230, "V"))
    assert "/Ac/L1/Power" not in Mapper().map(three).values
    assert Mapper(options={"total_power_on_l1": "yes"}).map(three).values["/Ac/L1/Power"] == 100.0
    with pytest.raises(ConfigurationError):
        Mapper(options={"total_power_on_l1": "maybe"})


def test_power_only_list_of_a_three_phase_meter_never_puts_the_total_on_l1() -> None:
    """Kaifa/Kamstrup NO/SE alternate a power-only list with a full one: L1 must not alternate."""
    m = Mapper()
    full = frame(R("1-0:1.7.0.255", 900, "W"), R("1-0:2.7.0.255", 0, "W"),
                 R("1-0:21.7.0.255", 100, "W"), R("1-0:41.7.0.255", 300, "W"), R("1-0:61.7.0.255", 500, "W"),
                 R("1-0:22.7.0.255", 0, "W"), R("1-0:42.7.0.255", 0, "W"), R("1-0:62.7.0.255", 0, "W"),
                 R("1-0:32.7.0.255", 230, "V"), R("1-0:52.7.0.255", 231, "V"), R("1-0:72.7.0.255", 229, "V"))
    power_only = frame(R("1-0:1.7.0.255", 950, "W"), R("1-0:2.7.0.255", 0, "W"))
    assert m.map(full).values["/Ac/L1/Power"] == 100.0
    after = m.map(power_only)
    assert "/Ac/L1/Power" not in after.values and not after.total_on_l1   # held/expired, never 950 on L1
    assert after.values["/Ac/Power"] == 950.0
    assert m.map(full).values["/Ac/L1/Power"] == 100.0


# ---------------------------------------------------------- per-phase power rules
def test_per_phase_import_only_meter_gets_exact_phase_power() -> None:
    """simulate-push's default list: totals plus per-phase import, no per-phase export."""
    m = Mapper().map(frame(R("1-0:1.7.0.255", 950, "W"), R("1-0:2.7.0.255", 0, "W"),
                           R("1-0:21.7.0.255", 400, "W"), R("1-0:41.7.0.255", 250, "W"), R("1-0:61.7.0.255", 301, "W"),
                           R("1-0:31.7.0.255", "1.8", "A"), R("1-0:51.7.0.255", "1.1", "A"),
                           R("1-0:71.7.0.255", "1.3", "A"), R("1-0:32.7.0.255", 230, "V"),
                           R("1-0:52.7.0.255", 230, "V"), R("1-0:72.7.0.255", 230, "V")))
    v = m.values
    assert (v["/Ac/L1/Power"], v["/Ac/L2/Power"], v["/Ac/L3/Power"]) == (400.0, 250.0, 301.0)  # sum 951: rounding
    assert (v["/Ac/L1/Current"], v["/Ac/L2/Current"], v["/Ac/L3/Current"]) == (1.8, 1.1, 1.3)  # signs known: +
    assert m.labels == {f"/Ac/L{ph}/Power": DERIVED for ph in (1, 2, 3)}


def _import_only(imp: int, exp: int, phases: Any, amps: Any = ("1.0", "1.0", "1.0")) -> MeterData:
    readings = [R("1-0:1.7.0.255", imp, "W"), R("1-0:2.7.0.255", exp, "W")]
    readings += [R(f"1-0:{c}.7.0.255", p, "W") for c, p in zip((21, 41, 61), phases)]
    readings += [R(f"1-0:{c}.7.0.255", 230, "V") for c in (32, 52, 72)]
    readings += [R(f"1-0:{c}.7.0.255", a, "A") for c, a in zip((31, 51, 71), amps)]
    return frame(*readings)


def test_per_phase_import_rule_follows_each_layout_a_meter_sends() -> None:
    """Where the rule's codes sit is worked out once per layout (the same code objects each push,
    as a push decoder hands them out): two layouts in turn, each with its own order, and a meter
    whose second list lacks the export total, all mapped by one Mapper."""
    codes = {c: Obis.try_parse(f"1-0:{c}.7.0.255") for c in (1, 2, 21, 41, 61)}
    first = (1, 2, 21, 41, 61)
    turned = (61, 2, 41, 1, 21)  # the same codes, in another order
    no_export = (21, 1, 41, 61)  # no total export: no exact split

    def push(order: Any, imports: Any) -> MeterData:
        values = {1: sum(imports), 2: 0, 21: imports[0], 41: imports[1], 61: imports[2]}
        return frame(*(Reading(codes[c].dotted() or "", codes[c], Decimal(values[c]), "W") for c in order))

    mapper = Mapper()
    for n in range(4):  # (a layout is kept from its second push on)
        for order in (first, turned):
            imports = (100 + n, 200 + 2 * n, 300 + 3 * n)
            v = mapper.map(push(order, imports)).values
            assert (v["/Ac/L1/Power"], v["/Ac/L2/Power"], v["/Ac/L3/Power"]) == imports
        v = mapper.map(push(no_export, (100, 200, 300))).values
        assert "/Ac/L2/Power" not in v and "/Ac/Power" not in v  # (no net power without the export total)


def test_per_phase_import_only_meter_with_one_exporting_phase_is_exact() -> None:
    """Found with the real dbus-systemcalc-py: simulate-push's default list (totals plus per-phase
    import) was split by U*|I| as soon as one phase exported, and L3 importing 270 W was published
    as exporting. A phase whose import is above 0 has that power; one phase at 0 has the rest."""
    m = Mapper().map(_import_only(347, 0, (0, 110, 320), ("0.9", "0.5", "1.4")))
    v = m.values
    assert (v["/Ac/L1/Power"], v["/Ac/L2/Power"], v["/Ac/L3/Power"]) == (-83.0, 110.0, 320.0)
    assert (v["/Ac/L1/Current"], v["/Ac/L2/Current"], v["/Ac/L3/Current"]) == (-0.9, 0.5, 1.4)  # signs known
    assert m.labels == {f"/Ac/L{ph}/Power": DERIVED for ph in (1, 2, 3)}
    # the house exports in total: still exact with one phase at 0
    m = Mapper().map(_import_only(0, 250, (600, 0, 600)))
    assert (m.values["/Ac/L1/Power"], m.values["/Ac/L2/Power"], m.values["/Ac/L3/Power"]) == (600.0, -1450.0, 600.0)


def test_per_phase_import_only_meter_with_two_exporting_phases_estimates_only_those() -> None:
    m = Mapper().map(_import_only(0, 113, (0, 0, 270), ("1.2", "0.8", "1.2")))
    v = m.values
    assert v["/Ac/L3/Power"] == 270.0 and v["/Ac/L3/Current"] == 1.2  # measured import: exact, signed +
    assert (v["/Ac/L1/Power"], v["/Ac/L2/Power"]) == (approx(-383 * 0.6), approx(-383 * 0.4))  # rest by U*|I|
    assert v["/Ac/L1/Power"] + v["/Ac/L2/Power"] + v["/Ac/L3/Power"] == approx(-113.0)  # the sum ESS uses
    assert m.labels == {"/Ac/L1/Power": ESTIMATED, "/Ac/L2/Power": ESTIMATED, "/Ac/L3/Power": DERIVED}
    for path in ("/Ac/L1/Current", "/Ac/L2/Current", "/Ac/L1/PowerFactor", "/Ac/Current", "/Ac/PowerFactor"):
        assert path not in v and path in m.withheld, path  # no sign, no power factor from a guess
    # only one of the two carries current: it has the whole rest
    one = Mapper().map(_import_only(0, 113, (0, 0, 270), ("1.2", "0", "1.2"))).values
    assert (one["/Ac/L1/Power"], one["/Ac/L2/Power"]) == (-383.0, 0.0) and one["/Ac/L1/Current"] == -1.2
    # nothing left (within the rounding): both 0, exact
    zero = Mapper().map(_import_only(271, 0, (0, 0, 270)))
    assert (zero.values["/Ac/L1/Power"], zero.values["/Ac/L2/Power"]) == (0.0, 0.0)
    assert set(zero.labels.values()) == {DERIVED}


def test_per_phase_import_only_estimate_follows_the_split_option(caplog: pytest.LogCaptureFixture) -> None:
    data = _import_only(0, 113, (0, 0, 270), ("1.2", "0.8", "1.2"))
    off = Mapper(options={"three_phase_total": "off"}).map(data)
    assert not off.labels and not any(f"/Ac/L{ph}/Power" in off.values for ph in (1, 2, 3))
    l1 = Mapper(options={"three_phase_total": "l1"}).map(data)
    assert l1.labels == {"/Ac/L1/Power": TOTAL} and l1.values["/Ac/L1/Power"] == -113.0
    individual = Mapper()
    individual.set_ess_mode(2)
    out = individual.map(data)
    assert not out.labels and "Individual phase" in caplog.text
    # exact frames stay exact under every option
    for options in ({"three_phase_total": "off"}, {"three_phase_total": "l1"}):
        assert set(Mapper(options=options).map(_import_only(347, 0, (0, 110, 320))).labels.values()) == {DERIVED}


@given(st.lists(st.integers(-4000, 4000), min_size=3, max_size=3), st.booleans())
@settings(max_examples=300, deadline=None)
def test_per_phase_import_only_property(true: List[int], balancing: bool) -> None:
    """Any three phase powers, sent as per-phase import (max(P, 0)) with totals of a balancing
    meter (import and export of the sum) or of one that adds each direction: every phase labelled
    derived has its true power, every estimated one has the sign of its true power or 0, and the
    phases add up to the net total within the meter's rounding (sum_tolerance_w)."""
    net = sum(true)
    if balancing:
        imp, exp = max(net, 0), max(-net, 0)
    else:
        imp, exp = sum(max(p, 0) for p in true), sum(max(-p, 0) for p in true)
    m = Mapper().map(_import_only(imp, exp, [max(p, 0) for p in true], [str(abs(p) / 230 + 0.1) for p in true]))
    got = [m.values.get(f"/Ac/L{ph}/Power") for ph in (1, 2, 3)]
    assert all(g is not None for g in got)
    # the net total, up to the meter's rounding: a rest within it counts as nothing left (all 0)
    assert abs(sum(got) - net) <= 1.5  # type: ignore[arg-type]
    for ph, (g, t) in enumerate(zip(got, true), start=1):
        label = m.labels[f"/Ac/L{ph}/Power"]
        assert label in (DERIVED, ESTIMATED)
        if label == DERIVED:
            assert g == t or (t <= 0 and abs(g - t) <= 1.5 * 3), (true, got)  # type: ignore[operator]
        else:
            assert g <= 0 and t <= 0, (true, got)  # type: ignore[operator]


@pytest.mark.parametrize("imp,exp,phases", [
    (950, 0, (600, 700, 600)),     # the imports add up to more than the net total: not one instant
    (0, 250, (0, 0, 0)),           # the house exports: some phase exports, which one is unknown
    (950, 0, (400, 250, None)),    # L3's import missing
])
def test_per_phase_import_rule_only_when_exact(imp: int, exp: int, phases: Any) -> None:
    readings = [R("1-0:1.7.0.255", imp, "W"), R("1-0:2.7.0.255", exp, "W")]
    readings += [R(f"1-0:{c}.7.0.255", p, "W") for c, p in zip((21, 41, 61), phases) if p is not None]
    m = Mapper().map(frame(*readings))
    assert not any(m.labels.get(f"/Ac/L{ph}/Power") == DERIVED for ph in (1, 2, 3))
    for ph in (1, 2, 3):
        if m.labels.get(f"/Ac/L{ph}/Power") is None:
            assert f"/Ac/L{ph}/Power" not in m.values


def _total_only(imp: int, exp: int, amps: Any) -> MeterData:
    readings = [R("1-0:1.7.0.255", imp, "W"), R("1-0:2.7.0.255", exp, "W")]
    for c_u, c_i, a in zip((32, 52, 72), (31, 51, 71), amps):
        readings += [R(f"1-0:{c_u}.7.0.255", 230, "V"), R(f"1-0:{c_i}.7.0.255", a, "A")]
    return frame(*readings)


def test_total_only_three_phase_meter_estimated_split_by_default() -> None:
    m = Mapper().map(_total_only(0, 1200, ("1", "2", "3")))
    v = m.values
    assert (v["/Ac/L1/Power"], v["/Ac/L2/Power"], v["/Ac/L3/Power"]) == (approx(-200), approx(-400), approx(-600))
    assert v["/Ac/L1/Power"] + v["/Ac/L2/Power"] + v["/Ac/L3/Power"] == approx(v["/Ac/Power"])  # the sum ESS uses
    assert m.labels == {f"/Ac/L{ph}/Power": ESTIMATED for ph in (1, 2, 3)}
    for path in ("/Ac/L1/Current", "/Ac/L1/PowerFactor", "/Ac/Current"):
        assert path not in v, path  # estimated signs sign no current, and no power factor from a guess


def test_total_only_three_phase_meter_choices() -> None:
    data = _total_only(900, 0, ("1", "2", "3"))
    l1 = Mapper(options={"three_phase_total": "l1"}).map(data)
    assert l1.values["/Ac/L1/Power"] == 900.0 and "/Ac/L2/Power" not in l1.values
    assert l1.labels == {"/Ac/L1/Power": TOTAL}
    off = Mapper(options={"three_phase_total": "off"}).map(data)
    assert not any(p in off.values for p in ("/Ac/L1/Power", "/Ac/L2/Power", "/Ac/L3/Power")) and not off.labels
    with pytest.raises(ConfigurationError):
        Mapper(options={"three_phase_total": "guess"})


def test_total_only_three_phase_meter_with_individual_phase_ess_publishes_no_phase_power(
        caplog: pytest.LogCaptureFixture) -> None:
    m = Mapper()
    m.set_ess_mode(2)
    out = m.map(_total_only(900, 0, ("1", "2", "3")))
    assert not out.labels and "/Ac/L1/Power" not in out.values
    assert "Individual phase" in caplog.text and "Total of all phases" in caplog.text
    m.set_ess_mode(1)
    assert m.map(_total_only(900, 0, ("1", "2", "3"))).labels["/Ac/L1/Power"] == ESTIMATED


def test_total_only_three_phase_meter_with_one_live_phase_is_exact() -> None:
    m = Mapper().map(_total_only(0, 460, ("2", "0", "0")))
    v = m.values
    assert (v["/Ac/L1/Power"], v["/Ac/L2/Power"], v["/Ac/L3/Power"]) == (-460.0, 0.0, 0.0)
    assert v["/Ac/L1/Current"] == -2.0
    assert m.labels == {f"/Ac/L{ph}/Power": DERIVED for ph in (1, 2, 3)}


def test_labels_reach_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="dlms_protocol.victron.mapping")
    m = Mapper()
    m.map(_total_only(0, 1200, ("1", "2", "3")))
    assert "phase power L1 estimated, L2 estimated, L3 estimated" in caplog.text
    caplog.clear()
    m.map(_total_only(0, 1100, ("1", "2", "3")))
    assert "phase power" not in caplog.text  # logged on change only
    m.map(frame(R("36.7.0", 100, "W"), R("56.7.0", 5, "W"), R("76.7.0", 7, "W")))
    assert "L1 measured, L2 measured, L3 measured" in caplog.text


def test_a_meter_switching_between_label_sets_logs_each_once_at_info(caplog: pytest.LogCaptureFixture) -> None:
    """Per-phase import only: derived while no phase exports, estimated while one does (PV on one
    phase crossing zero, possibly every few seconds). Each combination is said once at INFO, the
    switches after that at DEBUG."""
    caplog.set_level("DEBUG", logger="dlms_protocol.victron.mapping")
    m = Mapper()
    derived = frame(R("1.7.0", 900, "W"), R("2.7.0", 0, "W"), R("21.7.0", 500, "W"), R("41.7.0", 300, "W"),
                    R("61.7.0", 100, "W"), *(R(f"{c}.7.0", 230, "V") for c in (32, 52, 72)),
                    *(R(f"{c}.7.0", "1.0", "A") for c in (31, 51, 71)))
    estimated = frame(R("1.7.0", 300, "W"), R("2.7.0", 0, "W"), R("21.7.0", 500, "W"), R("41.7.0", 0, "W"),
                      R("61.7.0", 0, "W"), *(R(f"{c}.7.0", 230, "V") for c in (32, 52, 72)),
                      *(R(f"{c}.7.0", "1.0", "A") for c in (31, 51, 71)))  # L2 and L3 export 200 W: split unknown
    for _ in range(10):
        assert set(m.map(derived).labels.values()) == {DERIVED}
        assert set(m.map(estimated).labels.values()) == {DERIVED, ESTIMATED}
    infos = [r for r in caplog.records if "phase power" in r.getMessage() and r.levelname == "INFO"]
    debugs = [r for r in caplog.records if "phase power" in r.getMessage() and r.levelname == "DEBUG"]
    assert [r.getMessage().split(" (")[0] for r in infos] == [
        "victron: phase power L1 derived, L2 derived, L3 derived",
        "victron: phase power L1 derived, L2 estimated, L3 estimated"]
    # (a real systemcalc run: the note said the whole total was split, with estimated signs)
    assert "what the exact phases leave of it" in infos[1].getMessage()
    assert len(debugs) == 18  # every later switch, for whoever debugs
    assert Mapper().map(frame(R("36.7.0", 100, "W"))).labels == {"/Ac/L1/Power": MEASURED}


def test_total_on_l1_of_a_three_phase_meter_signs_no_current() -> None:
    # L1 may import while the house exports in total: the total's sign is not L1's, and
    # total / (U1 * I1) is no power factor of L1
    m = Mapper(options={"total_power_on_l1": "yes"}).map(frame(
        R("1-0:1.7.0.255", 0, "W"), R("1-0:2.7.0.255", 900, "W"),
        R("1-0:31.7.0.255", "4.0", "A"), R("1-0:51.7.0.255", "1.0", "A"), R("1-0:71.7.0.255", "0.5", "A"),
        R("1-0:32.7.0.255", 230, "V"), R("1-0:52.7.0.255", 230, "V"), R("1-0:72.7.0.255", 230, "V")))
    v = m.values
    assert v["/Ac/L1/Power"] == -900.0 and m.total_on_l1  # what the option asks for
    for path in ("/Ac/L1/Current", "/Ac/L2/Current", "/Ac/L3/Current", "/Ac/L1/PowerFactor", "/Ac/Current"):
        assert path not in v, path


def test_totals_derived_from_complete_phase_sets() -> None:
    v = Mapper().map(frame(R("36.7.0", 100, "W"), R("56.7.0", -50, "W"), R("76.7.0", 25, "W"),
                           R("21.8.0", 1, "kWh"), R("41.8.0", 2, "kWh"), R("61.8.0", 3, "kWh"),
                           R("32.7.0", 230, "V"), R("52.7.0", 232, "V"), R("72.7.0", 234, "V"))).values
    assert v["/Ac/Power"] == 75.0
    assert v["/Ac/Energy/Forward"] == 6.0
    assert v["/Ac/Voltage"] == approx(232.0)
    partial = Mapper().map(frame(R("36.7.0", 100, "W"), R("76.7.0", 25, "W"))).values
    assert "/Ac/Power" not in partial  # L2 missing: no total


def test_a_held_back_total_counter_is_not_replaced_by_the_phases_sum() -> None:
    """The meter's balanced import total (1.8.0) is below the sum of its phases' imports while one
    phase exports: with 1.8.0 held back (counterguard), the phases' sum on /Ac/Energy/Forward was
    another quantity, a jump up and a fall the push after. The path keeps its last value."""
    phases = (R("1-0:21.8.0.255", 400, "kWh"), R("1-0:41.8.0.255", 300, "kWh"), R("1-0:61.8.0.255", 200, "kWh"))
    sent = Mapper().map(frame(R("1-0:1.8.0.255", 850, "kWh"), R("1-0:2.8.0.255", 90, "kWh"), *phases)).values
    assert sent["/Ac/Energy/Forward"] == 850.0 and sent["/Ac/L1/Energy/Forward"] == 400.0
    held = Reading("1-0:1.8.0.255", Obis.parse("1-0:1.8.0.255"), None, "kWh", details=((HELD_DETAIL, HELD_TEXT),))
    mapped = Mapper().map(frame(held, R("1-0:2.8.0.255", 90, "kWh"), *phases))
    assert "/Ac/Energy/Forward" not in mapped.values and "/Ac/Energy/Forward" not in mapped.withheld
    assert mapped.values["/Ac/L1/Energy/Forward"] == 400.0 and mapped.values["/Ac/Energy/Reverse"] == 90.0
    # a meter that sends no total still gets the phases' sum
    assert Mapper().map(frame(*phases)).values["/Ac/Energy/Forward"] == 900.0


# --------------------------------------------------------------------- overrides
def test_user_override_file(tmp_path: Path) -> None:
    f = tmp_path / "map.json"
    f.write_text(json.dumps({
        "sources": [
            {"path": "/Ac/Power", "obis": ["16.7.0"], "sign": -1},  # a meter mounted the other way round
            {"path": "/Ac/Frequency", "obis": []},  # drop it
        ],
        "units": {"W": {"W": 1, "kW": 1000, "daW": 10}},
    }))
    mapper = Mapper(str(f))
    v = mapper.map(frame(R("16.7.0", 300, "W"), R("1.7.0", 1, "W"), R("2.7.0", 0, "W"),
                         R("14.7.0", 50, "Hz"), R("36.7.0", 5, "daW"))).values
    assert v["/Ac/Power"] == -300.0  # import/export sources of /Ac/Power were replaced
    assert "/Ac/Frequency" not in v
    assert v["/Ac/L1/Power"] == 50.0


@pytest.mark.parametrize("content, fragment", [
    ("{not json", "not valid JSON"),
    ('{"sources": [{"path": "/Ac/Nope", "obis": ["1.8.0"]}]}', "unknown path"),
    ('{"sources": [{"path": "/Ac/Power", "obis": ["1.7.0"], "part": "half"}]}', "part"),
    ('{"sources": [{"path": "/Ac/Power", "obis": ["x.y"]}]}', "OBIS"),
    ('{"sources": [{"path": "/Ac/Power", "obis": ["1.7.0"], "sign": 2}]}', "sign"),
    ('[1, 2]', "JSON object"),
])
def test_bad_override_file_names_the_cause(tmp_path: Path, content: str, fragment: str) -> None:
    f = tmp_path / "bad.json"
    f.write_text(content)
    with pytest.raises(ConfigurationError, match=fragment):
        Mapper(str(f))


def test_missing_override_file() -> None:
    with pytest.raises(ConfigurationError, match="cannot be read"):
        Mapper("/nonexistent/victron.json")


# ----------------------------------------------------------------------- property
@settings(max_examples=200, deadline=None)
@given(imp=st.integers(0, 10 ** 7), exp=st.integers(0, 10 ** 7), cur=st.decimals(0, 100, places=2),
       energy=st.integers(0, 10 ** 12), unit=st.sampled_from(["W", "kW"]))
def test_sign_and_unit_properties(imp: int, exp: int, cur: Decimal, energy: int, unit: str) -> None:
    f = Decimal(1000) if unit == "kW" else Decimal(1)
    m = Mapper().map(frame(
        R("1-0:21.7.0.255", imp, unit), R("1-0:22.7.0.255", exp, unit), R("1-0:31.7.0.255", cur, "A"),
        R("1-0:21.8.0.255", energy, "Wh"),
    ))
    v = m.values
    net = (imp - exp) * f
    assert v["/Ac/L1/Power"] == float(net)
    assert v["/Ac/Power"] == float(net)  # single phase: total from L1 (complete set of 1)
    assert abs(v["/Ac/L1/Current"]) == float(cur)
    if cur:
        assert (v["/Ac/L1/Current"] < 0) == (net < 0)
    assert v["/Ac/L1/Energy/Forward"] == float(Decimal(energy) / 1000)
    assert "/Ac/L1/PowerFactor" not in v or 0 <= v["/Ac/L1/PowerFactor"] <= 1


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["1.7.0", "2.7.0", "16.7.0", "31.7.0", "32.7.0", "1.8.0", "21.7.0",
                                           "36.7.0", "13.7.0", "14.7.0", "96.1.0", "0.2.0", "99.99.99"]),
                          st.one_of(st.integers(-10 ** 9, 10 ** 9), st.text(max_size=8), st.binary(max_size=8),
                                    st.none(), st.decimals(allow_nan=True, allow_infinity=True)),
                          st.sampled_from(["W", "kW", "Wh", "V", "A", "Hz", "", None, "bogus"])), max_size=20))
def test_mapping_never_crashes_or_emits_nonfinite(items: List[Any]) -> None:
    readings = tuple(Reading(c, Obis.parse(c), v, u) for c, v, u in items)
    out = Mapper().map(meter_data("push", readings)).values
    for path, value in out.items():
        if isinstance(value, float):
            assert value == value and value not in (float("inf"), float("-inf")), path
        else:
            assert isinstance(value, str) and path in ("/Serial", "/FirmwareVersion")


# ------------------------------------------------------------------------ corpus
def _corpus_readings(doc: Dict[str, Any]) -> List[Reading]:
    out = []
    for e in doc.get("expected") or []:
        code = e.get("obis")
        if not code or code.endswith("?"):
            continue
        # README: physical = value * 10^scaler; computed here because a few entries state
        # "physical" in kWh next to unit Wh (at-sagemcom-t210d-pdu-plain-obis-scaler, ...)
        value = e["value"]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and e.get("scaler") is not None:
            value = Decimal(str(value)).scaleb(e["scaler"])
        elif e.get("physical") is not None:
            value = e["physical"]
        if isinstance(value, (int, float)):
            value = Decimal(str(value))
        out.append(Reading(code, Obis.parse(code), value, e.get("unit")))
    return out


@pytest.mark.parametrize("path", corpus_files("push", ".json"), ids=lambda p: p.stem)
def test_corpus_push_values_map_with_victron_units_and_signs(path: Path) -> None:
    doc = load_json(path)
    readings = _corpus_readings(doc)
    if not readings:
        pytest.skip("no OBIS-addressed values in this frame")
    v = Mapper().map(meter_data("push", tuple(readings))).values

    def phys(c: int, d: int) -> Optional[Decimal]:
        for r in readings:
            if r.obis is not None and (r.obis.c, r.obis.d, r.obis.e) == (c, d, 0) and (r.obis.f in (None, 255)):
                return r.value if isinstance(r.value, Decimal) else None
        return None

    factors = {"W": 1, "kW": 1000, "Wh": Decimal("0.001"), "kWh": 1}

    def unit_of(c: int, d: int) -> Optional[str]:
        for r in readings:
            if r.obis is not None and (r.obis.c, r.obis.d, r.obis.e) == (c, d, 0) and r.obis.f in (None, 255):
                return r.unit
        return None

    imp, exp = phys(1, 7), phys(2, 7)
    if imp is not None and exp is not None and unit_of(1, 7) in factors and unit_of(2, 7) in factors:
        expect = imp * factors[unit_of(1, 7)] - exp * factors[unit_of(2, 7)]  # type: ignore[index]
        assert v["/Ac/Power"] == float(expect)
    fwd = phys(1, 8)
    if fwd is not None and unit_of(1, 8) in factors:
        assert v["/Ac/Energy/Forward"] == approx(float(fwd * factors[unit_of(1, 8)]))  # type: ignore[index]
    for ph, c in ((1, 32), (2, 52), (3, 72)):
        u = phys(c, 7)
        if u is not None and unit_of(c, 7) == "V":
            assert v[f"/Ac/L{ph}/Voltage"] == float(u)
    for ph, (ci, _cp) in enumerate(((31, 21), (51, 41), (71, 61)), start=1):
        i = phys(ci, 7)
        if i is not None and f"/Ac/L{ph}/Current" in v:
            assert abs(v[f"/Ac/L{ph}/Current"]) == float(abs(i))
            assert (v[f"/Ac/L{ph}/Current"] < 0) == (v[f"/Ac/L{ph}/Power"] < 0)


@pytest.mark.parametrize("path", corpus_files("push", ".json"), ids=lambda p: p.stem)
def test_corpus_frames_through_the_real_decoder_to_victron_paths(path: Path) -> None:
    """Real frame bytes -> our push decoder -> MeterData -> mapping, against the corpus' stated values."""
    from dlms_protocol.config import ListenerConfig
    from dlms_protocol.dlms.decoder import decode_bytes

    doc = load_json(path)
    keys = doc.get("keys") or {}
    sec = doc.get("security") if isinstance(doc.get("security"), dict) else {}
    ak = keys.get("authentication_key") if sec.get("gcm_tag_verified") is True else None
    msgs = decode_bytes(bytes.fromhex(doc["hex"]), ListenerConfig(port="corpus", key=keys.get("block_cipher_key"),
                                                                   auth_key=ak), strict=False)
    if not msgs:
        pytest.skip("the decoder delivers no verified message for this frame")
    readings = _corpus_readings(doc)
    if not readings:
        pytest.skip("no OBIS-addressed values stated for this frame")
    got = Mapper().map(enrich(msgs[0].to_meter_data())).values
    want = Mapper().map(meter_data("push", tuple(readings))).values
    common = [p for p in want if p in got and isinstance(want[p], float)]
    assert common, f"no Victron path from {path.stem}: got {sorted(got)}"
    for p in common:
        assert got[p] == approx(want[p]), p
    for p in ("/Ac/Power", "/Ac/Energy/Forward"):
        if p in want:
            assert p in got, p  # what the stated values give, the decoded frame gives too


_FACTORS = {"Wh": Decimal("0.001"), "kWh": Decimal(1), "MWh": Decimal(1000), "W": Decimal(1), "kW": Decimal(1000)}


@pytest.mark.parametrize("path", corpus_files("d0", ".txt"), ids=lambda p: p.stem)
def test_corpus_d0_readouts_to_victron_paths(path: Path) -> None:
    """Real D0 readouts (parsed by our IEC 62056-21 parser): energy in kWh by the stated unit,
    signed net power from 16.7.0, and nothing for a register that came without a unit."""
    from dlms_protocol.errors import DlmsError
    from dlms_protocol.iec62056_21.datablock import parse_readout

    try:
        data = enrich(parse_readout(path.read_bytes(), use_checksum=False).to_meter_data())
    except DlmsError as exc:
        pytest.skip(f"the parser rejects this capture: {exc}")
    v = Mapper().map(data).values
    checked = 0
    for code, target in (("1.8.0", "/Ac/Energy/Forward"), ("2.8.0", "/Ac/Energy/Reverse"), ("16.7.0", "/Ac/Power")):
        r = data.get(code)
        if r is None or r.numeric() is None:
            continue
        unit = (r.unit or "").strip()
        if unit in _FACTORS:
            assert v[target] == approx(float(r.numeric() * _FACTORS[unit])), target  # type: ignore[operator]
            checked += 1
        elif target == "/Ac/Power":
            continue  # 1.7.0/2.7.0 may still feed the total
        else:
            assert target not in v, f"{target} published from {code} without a usable unit ({r.unit!r})"
            checked += 1
    if not checked:
        pytest.skip("no 1.8.0/2.8.0/16.7.0 register in this readout")


# ----------------------------------------------------- per-layout plan (Mapper._picks)
_POOL = [Obis.parse(c) for c in ("1-0:1.7.0", "1-0:2.7.0", "1-0:16.7.0", "1-0:21.7.0", "1-0:22.7.0", "1-0:31.7.0",
                                 "1-0:32.7.0", "1-0:51.7.0", "1-0:1.8.0", "1-0:2.8.0", "1-1:1.7.0", "1.7.0",
                                 "1-0:1.7.0*01", "0-0:96.1.0", "1-0:14.7.0", "1-0:36.7.0")]
_UNITS = {1: "W", 2: "W", 16: "W", 21: "W", 22: "W", 36: "W", 31: "A", 32: "V", 51: "A", 14: "Hz", 96: None}
_SHARED = Mapper()  # keeps its plans across examples: a stale plan would show as a difference


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(range(len(_POOL))), st.integers(-5000, 5000), st.booleans()),
                max_size=12))
def test_a_layout_seen_before_maps_like_a_new_one(items: List[Any]) -> None:
    """The same codes (the same objects, as a push decoder hands them out) map through the kept
    plan exactly as a fresh mapper maps them, whatever the values, order and repeats."""
    readings = []
    for idx, value, copy in items:
        code = _POOL[idx] if not copy else Obis(*_POOL[idx].groups)  # equal, but another object
        unit = "kWh" if code.d == 8 else _UNITS.get(code.c)
        v: Any = "SER%d" % value if unit is None else Decimal(value)
        readings.append(Reading(str(code), code, v, unit))
    data = meter_data("push", tuple(readings))
    fresh = Mapper().map(data)
    for _ in range(3):  # the second time keeps the plan, the third maps through it
        _SHARED._three_phase = False  # the phase memory is per meter, not part of the plan
        shared = _SHARED.map(data)
        assert (shared.values, shared.labels, shared.phases) == (fresh.values, fresh.labels, fresh.phases)


def test_plans_are_kept_for_a_repeating_layout_only() -> None:
    """D0 readouts (new code objects every time) leave no plan holding their codes; a push layout
    (the same objects every time) is kept from its second snapshot on."""
    mapper = Mapper()
    alive = []  # (held, so that no readout's codes are freed and their addresses handed out again)
    for n in range(40):
        alive.append(frame(R("1-0:1.7.0", n, "W"), R("1-0:2.7.0", 0, "W"), R("1-0:32.7.0", 230, "V")))
        mapper.map(alive[-1])
    assert len(mapper._plans.entries) == 0
    push = frame(R("1-0:1.7.0", 5, "W"), R("1-0:2.7.0", 0, "W"), R("1-0:32.7.0", 230, "V"))
    for _ in range(3):
        assert mapper.map(push).values["/Ac/Power"] == 5.0
    codes = [r.obis for r in push.readings]
    assert any(all(a is b for a, b in zip(plan[0], codes)) for plan in mapper._plans.entries.values())
