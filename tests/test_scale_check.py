"""Kamstrup's energy counters: Wh or 10 Wh is the grid operator's setting, which the list does not
carry (Swedish and Swiss owners report Wh, Norwegian lists count 10 Wh). The decoder holds the
counters back until their increase matches the meter's own measured power (dlms/scalecheck.py).

The meter here is generated: list 2 (powers) every 10 s, list 3 (powers and counters) on the
hour, as Kamstrup's HAN lists come; its counters count the energy of its power in the scale
under test, so a wrong decision would show as a value ten times off.
"""
from __future__ import annotations

import math
from dataclasses import replace
from fractions import Fraction
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pytest
from hypothesis import given, settings, strategies as st

from dlms_protocol.config import ListenerConfig
from dlms_protocol.dlms.apdu import Structure, encode_notification
from dlms_protocol.dlms.decoder import PushDecoder
from dlms_protocol.dlms.encode import hdlc_frames
from dlms_protocol.dlms.profiles import parse_profile
from dlms_protocol.dlms import scalecheck
from dlms_protocol.errors import ConfigurationError
from dlms_protocol.obis import Obis

START = datetime(2024, 3, 4, 10, 0, 0, tzinfo=timezone(timedelta(hours=1)))
U32, U16, OS, VS = "double-long-unsigned", "long-unsigned", "octet-string", "visible-string"
COUNTERS = ("1-1:1.8.0.255", "1-1:2.8.0.255", "1-1:3.8.0.255", "1-1:4.8.0.255")


def ob(text: str) -> bytes:
    o = Obis.parse(text)
    return bytes([o.a, o.b, o.c, o.d, o.e, 255 if o.f is None else o.f])


def kamstrup_list(imp: int, exp: int, counters: Optional[Tuple[int, int, int, int]] = None) -> Structure:
    """Kamstrup_V0001 list 2, or list 3 with ``counters`` (+A, -A, +R, -R as counted)."""
    items: List[Tuple[str, Any]] = [(VS, "Kamstrup_V0001")]
    pairs: List[Tuple[str, str, Any]] = [
        ("1-1:0.0.5.255", VS, "5706567326590407"), ("1-1:96.1.1.255", VS, "6841138BN245101090"),
        ("1-1:1.7.0.255", U32, imp), ("1-1:2.7.0.255", U32, exp), ("1-1:3.7.0.255", U32, 0),
        ("1-1:4.7.0.255", U32, 120), ("1-1:31.7.0.255", U32, 870), ("1-1:32.7.0.255", U16, 231)]
    if counters is not None:
        pairs += [(code, U32, v) for code, v in zip(COUNTERS, counters)]
    for code, t, v in pairs:
        items += [(OS, ob(code)), (t, v)]
    s = Structure(v for _, v in items)
    s.types = tuple(t for t, _ in items)
    return s


class Meter:
    """Powers held for 10 s each; counters count their energy in 10^scale Wh (truncated, as a
    register shows whole counts)."""

    def __init__(self, scale: int, start_wh: float = 123_456_780.0, factor: float = 1.0) -> None:
        self.scale, self.factor = scale, factor
        self.wh = [Fraction(start_wh), Fraction(0)]  # import, export (exact: the test's sums are)
        self.t = 0  # seconds since START

    def frames(self, seconds: int, imp: int, exp: int = 0, clock: bool = True,
               skip: Sequence[Tuple[int, int]] = ()) -> List[bytes]:
        """HDLC frames for ``seconds`` of the meter at these powers (``skip``: spans not received)."""
        out: List[bytes] = []
        for _ in range(seconds // 10):
            hourly = self.t % 3600 == 0
            counts = tuple(int(v * Fraction(self.factor) // 10 ** self.scale)
                           for v in (self.wh[0], self.wh[1], Fraction(5_000_000), Fraction(1_000_000)))
            body = kamstrup_list(imp, exp, counts if hourly else None)  # type: ignore[arg-type]
            stamp = START + timedelta(seconds=self.t) if clock else None
            if not any(a <= self.t < b for a, b in skip):
                out += hdlc_frames(encode_notification(body, stamp))
            self.wh[0] += Fraction(imp * 10, 3600)
            self.wh[1] += Fraction(exp * 10, 3600)
            self.t += 10
        return out


def decode(frames: Sequence[bytes]) -> Tuple[List[Dict[str, Any]], List[Tuple[str, str]]]:
    """The counters of every list 3 (value, scaler), and the decoder's notes."""
    dec = PushDecoder(ListenerConfig(port="x"))
    seen: List[Dict[str, Any]] = []
    notes: List[Tuple[str, str]] = []
    counters = {Obis.parse(c) for c in COUNTERS}
    for frame in frames:
        for msg in dec.feed(frame):
            assert msg.profile == "kamstrup-han"
            got = {str(r.obis): (r.value, r.scaler, r.raw) for r in msg.readings if r.obis in counters}
            if got:
                seen.append(got)
        notes += dec.take_notes()
    return seen, notes


IMPORT = str(Obis.parse(COUNTERS[0]))
EXPORT = str(Obis.parse(COUNTERS[1]))
R_IMPORT = str(Obis.parse(COUNTERS[2]))


@pytest.mark.parametrize("scale", [0, 1])
def test_counters_held_until_the_measured_power_says_their_unit(scale: int) -> None:
    meter = Meter(scale)
    lists, notes = decode(meter.frames(3 * 3600 + 10, imp=2000))
    assert len(lists) == 4
    first = lists[0][IMPORT]
    assert first[0] is None and first[1] is None and first[2] == int(123_456_780 // 10 ** scale)
    assert all(v[0] is None for v in lists[0].values())
    for later in lists[1:]:  # one hour of 2 kW settles it; every counter then has the same unit
        for value, scaler, raw in later.values():
            assert scaler == scale and value == Decimal(raw).scaleb(scale)
    assert lists[1][IMPORT][0] == Decimal(int((123_456_780 + 2000) // 10 ** scale)).scaleb(scale)
    assert lists[1][R_IMPORT][0] == Decimal(int(5e6 // 10 ** scale)).scaleb(scale)
    texts = [t for _, t in notes]
    assert any("held back" in t for t in texts)
    assert any(f"count 10^{scale} Wh" in t for t in texts)
    assert all(level == "info" for level, _ in notes)


def test_export_settles_it_when_nothing_is_imported() -> None:
    lists, _ = decode(Meter(1).frames(2 * 3600 + 10, imp=0, exp=3500))
    assert lists[0][EXPORT][0] is None
    assert lists[1][EXPORT] == (Decimal(350).scaleb(1), 1, 350)
    assert lists[1][IMPORT] == (Decimal(12_345_678).scaleb(1), 1, 12_345_678)


def test_little_energy_keeps_adding_up_from_the_same_list() -> None:
    """80 W: 80 Wh an hour is below MIN_WH; three hours from the first list 3 are enough."""
    lists, _ = decode(Meter(1).frames(4 * 3600 + 10, imp=80))
    assert [lst[IMPORT][1] for lst in lists] == [None, None, None, 1, 1]


def test_a_gap_in_the_powers_starts_the_comparison_again() -> None:
    """Ten minutes without lists in the first hour: that hour is not compared; the next one is."""
    meter = Meter(0)
    frames = meter.frames(3 * 3600 + 10, imp=3000, skip=[(1200, 1800)])
    lists, _ = decode(frames)
    assert [lst[IMPORT][1] for lst in lists] == [None, None, 0, 0]


def test_counters_that_fit_no_unit_stay_held_back() -> None:
    """A counter that rose three times what the power gives (another meter's, a bad list) matches
    neither 10 Wh nor Wh: the counters stay held back, and the log says why (loudly once, then
    at info for every further hour that fits no unit)."""
    meter = Meter(0)
    frames = meter.frames(10, imp=2000)
    for _hour in range(2):
        meter.wh[0] += 2000 * 2  # three times the energy the hour's power gives
        frames += meter.frames(3600, imp=2000)
    lists, notes = decode(frames)
    assert len(lists) == 3 and all(lst[IMPORT][0] is None for lst in lists)
    assert [level for level, text in notes if "fit none" in text] == ["warning", "info"]


def test_lists_without_a_clock_are_never_compared() -> None:
    lists, _ = decode(Meter(1).frames(3 * 3600 + 10, imp=2000, clock=False))
    assert len(lists) == 4 and all(v[0] is None for lst in lists for v in lst.values())


@settings(max_examples=60, deadline=None)
@given(scale=st.sampled_from([0, 1]),
       segments=st.lists(st.tuples(st.integers(0, 11000), st.integers(10, 900)), min_size=1, max_size=30),
       offset=st.integers(0, 9), hours=st.integers(2, 3))
def test_a_decision_is_always_the_meter_s_unit(scale: int, segments: List[Tuple[int, int]], offset: int,
                                                hours: int) -> None:
    """A load that changes between the lists (each level held for a list period or longer, at any
    phase): the lists show the power at their instant, the counter counts the real energy. The
    sampled energy then stays within a factor 2 of the real one, so whenever the check decides,
    it decides the unit the counters count (a load pulsing in step with the lists, faster than
    them, could fool it: scalecheck's docstring)."""
    edges: List[Tuple[int, int, int]] = []  # (start, end, W) of each level, cycled
    t = -offset
    while t < hours * 3600 + 20:
        for watts, length in segments:
            edges.append((t, t + length, watts))
            t += length

    frames: List[bytes] = []
    wh = Fraction(7_000_000)
    k = 0  # the level at t
    for t in range(0, hours * 3600 + 1, 10):
        while edges[k][1] <= t:
            k += 1
        counts = tuple(int(v // 10 ** scale) for v in (wh, Fraction(0), Fraction(5_000_000), Fraction(0)))
        body = kamstrup_list(edges[k][2], 0, counts if t % 3600 == 0 else None)  # type: ignore[arg-type]
        frames += hdlc_frames(encode_notification(body, START + timedelta(seconds=t)))
        j = k  # the real energy of the next 10 s, level by level
        while j < len(edges) and edges[j][0] < t + 10:
            a, b, w = edges[j]
            wh += Fraction((min(b, t + 10) - max(a, t)) * w, 3600)
            j += 1
    lists, _ = decode(frames)
    for lst in lists:
        value, scaler, raw = lst[IMPORT]
        assert scaler in (None, scale)
        if scaler is not None:
            assert value == Decimal(raw).scaleb(scale)


def _profile(scale_check: Dict[str, Any]) -> Dict[str, Any]:
    return {"name": "x", "match": {"shape": "obis", "markers": [{"index": 0, "equals": "X"}]},
            "fields": [{"obis": "1-1:1.7.0.255", "kind": "number", "scaler": 0, "unit": "W"},
                       {"obis": "1-1:3.7.0.255", "kind": "number", "scaler": 0, "unit": "var"},
                       {"obis": "1-1:1.8.0.255", "kind": "number", "scaler": 1, "unit": "Wh"}],
            "scale_check": scale_check}


IMP, P, Q = "1-1:1.8.0.255", "1-1:1.7.0.255", "1-1:3.7.0.255"


@pytest.mark.parametrize("spec, cause", [
    ({"choices": [1], "counters": [IMP], "pairs": [[IMP, P]]}, "two or more"),
    ({"choices": [400, 0], "counters": [IMP], "pairs": [[IMP, P]]}, "-128 to 127"),
    ({"choices": [1, 0], "counters": ["1-1:9.8.0.255"], "pairs": [[IMP, P]]}, "no number field"),
    ({"choices": [1, 0], "counters": [IMP], "pairs": [[IMP, Q]]}, "must be in W"),
    ({"choices": [1, 0], "counters": [IMP], "pairs": [[P, IMP]]}, "[counter, power]"),
    ({"choices": [1, 0], "counters": [IMP], "pairs": []}, "at least one"),
    ({"choices": [1, 0], "counters": [IMP]}, "pairs"),
])
def test_a_broken_scale_check_is_refused_at_loading(spec: Dict[str, Any], cause: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        parse_profile(_profile(spec))
    assert cause in str(err.value)


def test_the_tolerance_leaves_a_gap_between_the_choices() -> None:
    """The choices are ten apart: the ranges TOLERANCE accepts around each never touch."""
    assert scalecheck.TOLERANCE ** 2 < 10 and math.isfinite(scalecheck.MIN_WH)


def _held_data() -> List[Any]:
    from dlms_protocol.pipeline import enrich

    dec = PushDecoder(ListenerConfig(port="x"))
    data = [enrich(msg.to_meter_data()) for f in Meter(1).frames(10, imp=2000) for msg in dec.feed(f)]
    held = data[0].get("1-1:1.8.0")
    assert held is not None and held.value is None and held.raw == 12_345_678
    return data


def test_the_victron_mapping_leaves_a_held_counter_out_quietly(caplog: pytest.LogCaptureFixture) -> None:
    """A held-back counter is no fake 0 and no 'not a number' on the bus: its path stays empty,
    the decoder's note says why."""
    import logging
    from dlms_protocol.victron.mapping import Mapper

    data = _held_data()
    with caplog.at_level(logging.INFO, logger="dlms_protocol.victron.mapping"):
        mapped = Mapper().map(data[0])
    assert "/Ac/Energy/Forward" not in mapped.values and mapped.values["/Ac/Power"] == 2000.0
    assert not [r for r in caplog.records if "not a number" in r.getMessage() or "scaler" in r.getMessage()]
    unscaled = replace(data[0].get("1-1:1.8.0"), details=())  # a register without a known scaler: said once
    with caplog.at_level(logging.INFO, logger="dlms_protocol.victron.mapping"):
        Mapper().map(replace(data[0], readings=tuple(unscaled if r.code == unscaled.code else r
                                                     for r in data[0].readings)))
    assert [r.getMessage() for r in caplog.records if "without a known scaler" in r.getMessage()] == [
        "victron: 1-1:1.8.0.255 (Active import (+A), energy) arrives without a known scaler (raw 12345678); "
        "/Ac/Energy/Forward stays empty - a meter profile must give it (see the dump command)"]


def test_a_smarthomeng_item_says_the_counter_waits_for_the_check() -> None:
    pytest.importorskip("yaml")  # (the SmartHomeNG double; not in the Venus OS matrix)
    from shng_double.testing import support

    ps = support()  # the plugin's own module, as SmartHomeNG imports it
    with pytest.raises(ps.ValueProblem) as err:
        ps.item_value(ps.parse_obis_attribute("1-1:1.8.0"), _held_data()[0].get("1-1:1.8.0"), "num")
    assert "held back" in str(err.value) and "hour" in str(err.value)
