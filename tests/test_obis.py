"""OBIS model: every code form seen in the corpus, normalisation, matching, names."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dlms_protocol.errors import ConfigurationError
from dlms_protocol.obis import Obis


@pytest.mark.parametrize("text, groups, normalized", [
    ("1-0:1.8.0*255", (1, 0, 1, 8, 0, 255), "1-0:1.8.0*255"),
    ("1-0:1.8.0.255", (1, 0, 1, 8, 0, 255), "1-0:1.8.0*255"),
    ("1-0:1.8.0", (1, 0, 1, 8, 0, None), "1-0:1.8.0*255"),
    ("1.8.0", (None, None, 1, 8, 0, None), None),
    ("1.8", (None, None, 1, 8, None, None), None),
    ("1.8.0*01", (None, None, 1, 8, 0, 1), None),
    ("1-0:1.8.1*07", (1, 0, 1, 8, 1, 7), "1-0:1.8.1*07".replace("*07", "*7")),
    ("C.1.0", (None, None, 96, 1, 0, None), None),
    ("F.F", (None, None, 97, 97, None, None), None),
    ("0-0:F.F.0*255", (0, 0, 97, 97, 0, 255), "0-0:97.97.0*255"),
    ("0-0:C.1.0", (0, 0, 96, 1, 0, None), "0-0:96.1.0*255"),
    ("0.9.1", (None, None, 0, 9, 1, None), None),
    ("C", (None, None, 96, None, None, None), None),
    ("F", (None, None, 97, None, None, None), None),
    ("L", (None, None, 98, None, None, None), None),
    ("P", (None, None, 99, None, None, None), None),
    ("P.01", (None, None, 99, 1, None, None), None),
    ("6.26*01", (None, None, 6, 26, None, 1), None),
    ("96.5.5*255", (None, None, 96, 5, 5, 255), None),
    ("1-0:21.7.255*255", (1, 0, 21, 7, 255, 255), "1-0:21.7.255*255"),
    ("1-1:1.8.0.255", (1, 1, 1, 8, 0, 255), "1-1:1.8.0*255"),
])
def test_parse_every_corpus_form(text, groups, normalized):
    code = Obis.parse(text)
    assert code.groups == groups
    assert code.normalized() == normalized


@pytest.mark.parametrize("bad", ["", "kWh", "1-0:", "1.8.0*", "300.1.0", "1-0:1.8.0*256", "X.1", "1..8", None, 5])
def test_not_obis(bad):
    assert Obis.try_parse(bad) is None
    if isinstance(bad, str):
        with pytest.raises(ConfigurationError, match="not an OBIS code"):
            Obis.parse(bad)


@pytest.mark.parametrize("user, sent, expected", [
    ("1.8.1", "1-0:1.8.1*255", True),
    ("1.8.1", "1-1:1.8.1", True),
    ("1.8.1", "1.8.1", True),
    ("1.8.1", "1-0:1.8.1*01", False),      # billing period only when asked for
    ("1.8.1*01", "1-0:1.8.1*01", True),
    ("1.8.1*1", "1.8.1*01", True),
    ("1.8.0", "1.8.1", False),
    ("1.8", "1.8.0", False),              # E left out matches only E left out
    ("1-0:1.8.0", "1-1:1.8.0*255", False),
    ("1-0:1.8.0*255", "1-0:1.8.0.255", True),
    ("C.1.0", "0-0:96.1.0*255", True),
    ("F.F", "97.97", True),
])
def test_matching(user, sent, expected):
    assert Obis.parse(user).matches(Obis.parse(sent)) is expected


def test_from_bytes_and_dotted():
    code = Obis.from_bytes(bytes([1, 0, 32, 7, 0, 255]))
    assert code.dotted() == "1-0:32.7.0.255"
    assert str(code) == "1-0:32.7.0*255"
    with pytest.raises(ValueError):
        Obis.from_bytes(b"\x01\x00")


@pytest.mark.parametrize("text, en, de, unit", [
    ("1.8.0", "Active import (+A), energy", "Wirk Bezug (+A), Zählerstand", "Wh"),
    ("1-0:2.8.1", "Active export (-A), energy, tariff 1", "Wirk Lieferung (-A), Zählerstand, Tarif 1", "Wh"),
    ("32.7.0", "Voltage L1, instantaneous", "Spannung L1, Momentanwert", "V"),
    ("1-0:1.8.0*03", "Active import (+A), energy (billing period 3)", None, "Wh"),
    ("C.1.0", "Meter serial number", "Seriennummer", None),
    ("F.F", "Error register", "Fehlerregister", None),
    ("0-0:1.0.0.255", "Clock", "Uhrzeit", None),
])
def test_names_and_units_come_from_data(text, en, de, unit):
    code = Obis.parse(text)
    assert code.name() == en
    if de:
        assert code.name("de") == de
    assert code.unit() == unit


@pytest.mark.parametrize("text, en, de", [
    ("1-0:99.97.0", "Power failure event log (number of entries)", "Netzausfall-Protokoll (Anzahl Einträge)"),
    ("0-0:98.1.0", "Billing period history (number of entries)", "Abrechnungsperioden-Historie (Anzahl Einträge)"),
    ("1-0:52.32.0", "Voltage L2, number of sags", "Spannung L2, Anzahl Spannungseinbrüche"),
    ("1-0:72.36.0", "Voltage L3, number of swells", "Spannung L3, Anzahl Spannungsspitzen"),
])
def test_dsmr_logs_and_counters_say_what_their_value_counts(text, en, de):
    """A DSMR buffer line (``1-0:99.97.0(2)(0-0:96.7.19)(...)``) gives its entry count as the value:
    the name says so, and the sag/swell counters are named too (they had no name at all)."""
    code = Obis.parse(text)
    assert (code.name(), code.name("de"), code.unit()) == (en, de, None)
    assert Obis.parse("7-0:99.97.0").name() is None  # (only the electricity log: a gas meter's 99.97 is another)


def test_unknown_code_has_no_name():
    assert Obis.parse("1-0:200.200.0").name() is None


groups = st.integers(0, 255)


@given(groups, groups, groups, groups, groups, groups)
def test_full_codes_round_trip_in_every_form(a, b, c, d, e, f):
    code = Obis(a, b, c, d, e, f)
    for text in (code.normalized(), code.dotted(), str(code)):
        assert Obis.parse(text) == code


@given(groups, st.one_of(st.none(), groups), st.one_of(st.none(), groups))
def test_short_codes_round_trip(c, d, e):
    if d is None:
        e = None
    code = Obis(None, None, c, d, e, None)
    assert Obis.parse(code.short()) == code
    assert Obis.parse(code.short(letters=True)) == code


@given(st.text(max_size=30))
def test_random_text_never_raises_anything_else(text):
    try:
        Obis.parse(text)
    except ConfigurationError:
        pass


@pytest.mark.parametrize("code, de, en", [
    ("1-0:0.0.9*255", "Geräte-Identifikation (Server-ID)", "Device identification (SML server ID)"),
    ("129-129:199.130.3*255", "Herstellerkennung", "Manufacturer identification"),
    ("129-129:199.130.5*255", "Öffentlicher Schlüssel", "Public key"),
])
def test_sml_identification_codes_are_named(code: str, de: str, en: str) -> None:
    """Every SML meter sends these first: without a name, the items snippet and the web interface
    showed two bare codes at the top of the list."""
    from dlms_protocol.obis import describe

    assert describe(Obis.parse(code), "de")[0] == de and describe(Obis.parse(code), "en")[0] == en
    assert describe(Obis.parse("0.0.9"), "en") == (None, None)  # (a D0 C.0.0.9 is not the SML server ID)


@pytest.mark.parametrize("code, en", [
    ("0-0:96.1.255*255", "Device identification"),  # (EMH/EasyMeter send their serial number there)
    ("1-0:96.1.255", "Device identification"),
    ("129-0:96.8.0*1", None),  # a maker's own A: the standard's 'time of operation' would be a guess
    ("200-0:1.8.0", None),
    ("1-0:1.8.0", "Active import (+A), energy"),
    ("0-0:1.8.0", "Active import (+A), energy"),
    ("1.8.0", "Active import (+A), energy"),
    # another medium (2-15: heat 6, gas 7, water 8/9): the C and D tables are electricity's
    ("15-0:1.8.0", None),
    ("6-0:6.8.0", None),
    ("7-0:3.0.0", None),
    ("6-0:96.1.0", "Meter serial number"),  # (abstract codes are the same for every medium)
    ("6-0:0.9.1", "Local time"),
    ("0-0:17.0.0*255", "Limiter threshold"),  # (DSMR, e-MUCS: kW, A or kVA by country)
    ("1-3:0.2.8", "Version information (P1 port)"),
])
def test_names_stay_with_what_the_code_says(code: str, en) -> None:
    """0-0:96.1.255 carries a device's id, not its maker; a value group A above 15 (SML's 129) is
    the manufacturer's own code: only an entry for that A names it (129-129:199.130.3 above); a
    quantity of another medium than electricity gets no electricity name (a heat meter's 6.8 is
    heat energy, not reactive energy QII)."""
    assert Obis.parse(code).name() == en


@pytest.mark.parametrize("code, en, de", [
    ("1-0:81.7.1", "Phase angle U(L2) to U(L1)", "Phasenwinkel U(L2) zu U(L1)"),
    ("1-0:81.7.4", "Phase angle I(L1) to U(L1)", "Phasenwinkel I(L1) zu U(L1)"),
    ("81.7.6", "Phase angle I(L3) to U(L1)", "Phasenwinkel I(L3) zu U(L1)"),  # (L+G ZMD's D0 short code)
    ("1-0:81.7.26", "Phase angle I(L3) to U(L3)", "Phasenwinkel I(L3) zu U(L3)"),
    ("1-0:81.7.40", "Phase angle U(L1) to I(L1)", "Phasenwinkel U(L1) zu I(L1)"),
    ("1-0:81.7.74", "Phase angle I(L1) to I(N)", "Phasenwinkel I(L1) zu I(N)"),
    ("1-0:81.7.0", "Phase angle, instantaneous", "Phasenwinkel, Momentanwert"),
])
def test_a_phase_angles_e_names_its_two_quantities_not_a_tariff(code: str, en: str, de: str) -> None:
    """C = 81: E = 10 a + b is the angle of quantity b to quantity a (IEC 62056-61); 81.7.6 was
    named 'Phase angle, instantaneous, tariff 6'."""
    o = Obis.parse(code)
    assert (o.name(), o.name("de"), o.unit()) == (en, de, "°")


@pytest.mark.parametrize("code, text", [("1-1:0.1.2*01", True), ("1-1:0.1.5", True), ("1-1:0.1.0*01", False),
                                        ("1-1:0.1.1", False), ("0-0:96.1.0", True), ("1-0:1.8.0", False),
                                        ("C.2.1", True), ("C.2.5", True), ("C.2.9", True), ("C.2.0", False),
                                        ("0.2.0", True), ("1-3:0.2.8", True), ("P.01", True), ("P.98", True),
                                        ("1-0:99.97.0", False)])
def test_billing_time_stamps_are_text_and_the_counts_beside_them_numbers(code: str, text: bool) -> None:
    """Also the dates of program changes (96.2.1-9: a Pafal's C.2.1(090513082409) lost its leading
    zero as a number) and versions (0.2: firmware '1.10' would be 1.1)."""
    assert Obis.parse(code).is_text() is text


@pytest.mark.parametrize("code, unit, named", [
    ("6.8", "GJ", False), ("6.8", "MWh", False), ("6.6", "kW", False),  # heat meters' short codes
    ("6.8", "kvarh", True), ("6.8", None, True), ("6.8", "", True),
    ("1.8.0", "kWh", True), ("1.8.0", "KWH", True), ("1-0:1.7.0", "kW", True), ("32.7.0", "V", True),
    ("9.4", "C", True),  # a unit the table does not know says nothing: the name stays
])
def test_a_name_that_the_unit_contradicts_is_left_out(code: str, unit, named: bool) -> None:
    """A Kamstrup MC66 or L+G Ultraheat heat meter sends ``6.8(00433.65*GJ)``: without a medium
    the code reads as reactive energy QII, which the unit contradicts (Obis.name with the unit,
    as readings, the D0 table, the items snippet and MQTT discovery call it)."""
    from dlms_protocol.model import Reading

    obis = Obis.parse(code)
    assert (obis.name(unit=unit) is not None) is named
    assert obis.name() is not None
    reading = Reading(code=code, obis=obis, value=None, unit=unit)
    assert (reading.name is not None) is named
