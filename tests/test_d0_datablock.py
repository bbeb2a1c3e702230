"""Data-block parser, framing and BCC on synthetic readouts (tests/fixtures/d0, made by make_fixtures.py).

These run without the shared corpus. Expected values are written by hand from the fixture text.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlms_protocol.errors import ChecksumError, FramingError
from dlms_protocol.iec62056_21.datablock import (
    DataSet, DataValue, bcc, parse_data_block, parse_readout, to_number,
)
from dlms_protocol.items import items_snippet
from dlms_protocol.model import HELD_DETAIL
from dlms_protocol.obis import Obis

FIX = Path(__file__).resolve().parent / "fixtures" / "d0"


def fixture(name: str) -> bytes:
    return (FIX / name).read_bytes()


def sets(readout_or_sets) -> list:
    items = getattr(readout_or_sets, "datasets", readout_or_sets)
    return [(ds.code, [(v.value, v.unit) for v in ds.values]) for ds in items]


MODE_C_SETS = [
    ("0.0.0", [("12345678", None)]),
    ("1.8.0", [("001234.567", "kWh")]),
    ("1.8.1", [("000234.567", "kWh")]),
    ("1.8.2", [("001000.000", "kWh")]),
    ("1.6.0", [("01.234", "kW"), ("2401011230", None)]),
    ("C.1.1", [("        ", None)]),
    ("0.0", [("     4711", None)]),
    ("32.7", [("231", "V")]),
    ("21.7.0", [("-000123.40", "W")]),
    ("31.7", [("+002.5", "A")]),
    ("1.8.0*01", [("001200,5", "kWh")]),
    ("9.4", [("070*C&050*C", None)]),
    ("96.5.5", [("A2", None)]),
    ("1.8.0*02", [("", None)]),
    ("1.8.0", [("001234.567", "kWh")]),
    ("0.9.1", [("123456", None)]),
]


# ------------------------------------------------------------------------ BCC
@pytest.mark.parametrize("frame, expected", [
    (b"\x01B0\x03", ord("q")),                       # break command, pwitab BREAK constant
    (b"\x01R1\x021.8.0(1)\x03", ord("k")),           # read command (doc §5)
    (b"\x01P0\x02(1234567)\x03", ord("P")),          # password command (doc §5)
    (b"\x01B0\x03q-trailing", ord("q")),             # stops at ETX
])
def test_bcc_known_vectors(frame, expected):
    assert bcc(frame) == expected
    parity = bytes(b | 0x80 if bin(b).count("1") % 2 else b for b in frame)
    assert bcc(parity) == expected  # 7-bit characters


# ------------------------------------------------------------------------ fixtures
def test_mode_c_readout_with_echoes_and_every_value_shape():
    r = parse_readout(fixture("mode_c_readout.bin"))
    assert r.bcc == "ok"
    assert sets(r) == MODE_C_SETS
    ident = r.identification
    assert (ident.raw, ident.manufacturer, ident.mode, ident.enhanced, ident.short_reaction) == (
        "/XYz5\\2TEST-METER 01", "XYz", "E", "2", True)
    assert r.skipped == ()
    assert r.text.startswith("/XYz5\\2TEST-METER 01\r\n0.0.0(12345678)\r\n")
    assert r.text.endswith("0.9.1(123456*)\r\n!")
    assert "\x02" not in r.text and "\x06" not in r.text


def test_bad_bcc_rejected_then_accepted_without_check():
    raw = fixture("mode_c_bad_bcc.bin")
    with pytest.raises(ChecksumError) as info:
        parse_readout(raw)
    err = info.value
    assert err.expected ^ err.got == 0x21  # make_fixtures.py flips bits 0 and 5 of the BCC
    assert str(err) == f"BCC mismatch: expected 0x{err.expected:02x}, got 0x{err.got:02x}: " \
                       "noisy line or wrong character format"
    r = parse_readout(raw, use_checksum=False)
    assert r.bcc == "bad" and sets(r) == MODE_C_SETS


def test_push_telegram_with_lf_only_and_continuation_line():
    r = parse_readout(fixture("push_lf.txt"))
    assert r.bcc == "absent"
    assert r.identification.raw == "/ABC5PUSH 1.0"
    assert sets(r) == [
        ("1-0:1.8.0*255", [("000123.4567", "kWh")]),
        ("1-0:16.7.0*255", [("-000042.10", "W")]),
        ("1-0:96.1.0*255", [("0A1B2C", None)]),
        ("0-1:24.3.0", [("240102030405", None), ("m3", None), ("00012.345", None)]),
    ]


def test_7e1_read_as_8n1_is_unmasked():
    raw = fixture("parity_8n1.bin")
    assert any(b & 0x80 for b in raw)
    r = parse_readout(raw)
    assert r.bcc == "ok"
    assert r.identification.raw == "/PAR4PARITY"
    assert sets(r) == [("F.F", [("00", None)]), ("1.8.0", [("000042.5", "kWh")])]


def test_parity_error_without_bcc_drops_only_the_damaged_set():
    good = b"/PAR5X\r\n1.8.0(000042.5*kWh)\r\n2.8.0(000001.0*kWh)\r\n!\r\n"
    parity = bytearray(b | 0x80 if bin(b).count("1") % 2 else b for b in good)
    at = good.index(b"42.5")
    parity[at] ^= 0x80  # a parity error on the '4': the character is unknown
    r = parse_readout(bytes(parity))
    assert sets(r) == [("2.8.0", [("000001.0", "kWh")])]
    assert r.skipped  # reported, not guessed
    assert r.to_json()["skipped"] == list(r.skipped)  # and so in the JSON (parse --json), not only the table


def test_a_value_under_a_measured_unit_that_is_no_number_has_no_value():
    """A garbled power (two numbers run together, an EasyMeter T3D in buzzn-reader's test data)
    under W was kept as text: an item snippet made it a str item, which got the garbage. Now the
    set stays as sent, its reading has no value and says why; a hex status word, a text without
    a unit and the other values stay."""
    raw = (b"/ESY5T3DC1004 V1.01\r\n\r\n1-0:0.0.0*255(60009999)\r\n1-0:1.8.0*255(00000001.100000000*kWh)\r\n"
           b"1-0:1.7.0*255(00000000.010000000000.00*W)\r\n1-0:96.5.5*255(00)\r\n!\r\n")
    r = parse_readout(raw)
    assert [d.code for d in r.datasets] == ["1-0:0.0.0*255", "1-0:1.8.0*255", "1-0:1.7.0*255", "1-0:96.5.5*255"]
    data = r.to_meter_data()
    power = data.get("1.7.0")
    assert power.value is None and power.raw == "00000000.010000000000.00" and power.unit == "W"
    assert "no number under its unit W" in dict(power.details)[HELD_DETAIL]
    assert data.get("1.8.0").value == Decimal("1.100000000") and data.get("96.5.5").value == "00"
    assert data.get("0.0.0").value == "60009999"
    assert [x["value"] for x in r.to_json()["readings"] if x["code"] == "1-0:1.7.0*255"] == [None]
    snippet = items_snippet(data)  # (a num item: the next telegram's value is a number again)
    assert "type: num\n        dlms_obis_code: '1-0:1.7.0*255'" in snippet


@pytest.mark.parametrize("capture", ["7-bit from a software-parity transport", "7E1 read as 8N1"])
def test_a_damaged_first_character_of_the_first_address_drops_the_set(capture):
    """'21.7.0' (power of L1) whose '2' was damaged must not be read as '1.7.0' (total power):
    the unknown character right before the first data set is no noise to skip."""
    good = b"/PAR5X\r\n21.7.0(00123.4*W)\r\n1.8.0(000042.5*kWh)\r\n!\r\n"
    at = good.index(b"21.7.0")
    if capture.startswith("7-bit"):
        raw = good[:at] + b"\x80" + good[at + 1:]  # transport.PARITY_ERROR
    else:
        wire = bytearray(b | 0x80 if bin(b).count("1") % 2 else b for b in good)
        wire[at] ^= 0x80  # parity error on the '2'
        raw = bytes(wire)
    r = parse_readout(raw)
    assert sets(r) == [("1.8.0", [("000042.5", "kWh")])]
    assert r.skipped


def test_parity_error_with_good_bcc_is_trusted():
    raw = bytearray(fixture("parity_8n1.bin"))
    at = raw.index(b"\xc6")  # the first 'F' of F.F (0x46 + parity bit); flip only the parity bit
    raw[at] ^= 0x80
    r = parse_readout(bytes(raw))
    assert r.bcc == "ok"
    assert sets(r) == [("F.F", [("00", None)]), ("1.8.0", [("000042.5", "kWh")])]


def test_dsmr5_crc_checked():
    r = parse_readout(fixture("dsmr5_crc.txt"))
    assert (r.crc, r.bcc) == ("ok", "absent")
    assert sets(r)[-1] == ("0-1:24.2.1", [("240101120000W", None), ("00012.345", "m3")])
    assert ("0-0:96.13.0", [("", None)]) in sets(r)
    with pytest.raises(ChecksumError) as info:
        parse_readout(fixture("dsmr5_bad_crc.txt"))
    assert info.value.expected ^ info.value.got == 0x0100
    assert parse_readout(fixture("dsmr5_bad_crc.txt"), use_checksum=False).crc == "bad"


def test_crc16_arc_check_value():
    from dlms_protocol.iec62056_21.datablock import _crc16_arc
    assert _crc16_arc(b"123456789") == 0xBB3D  # CRC catalogue check value of CRC-16/ARC


def test_programming_mode_answer():
    r = parse_readout(fixture("programming_answer.bin"))
    assert r.identification is None and r.bcc == "ok"
    assert sets(r) == [("1.8.0", [("012345.678", "kWh")])]


def test_to_json_contract():
    doc = parse_readout(fixture("mode_c_readout.bin")).to_json()
    # the documented keys in their order, then the one reading form of every tool (jsonform)
    assert list(doc) == ["identification", "manufacturer", "bcc", "crc", "checksum", "datasets", "meter_id", "readings",
                         "skipped"]
    assert doc["skipped"] == []
    assert doc["readings"][4]["code"] == "1.6.0" and doc["readings"][4]["value"] == 1.234  # the first group
    assert doc["readings"][5]["value"] == "" and doc["readings"][5]["raw"] == "        "  # blank: text, never 0
    assert doc["checksum"] == "BCC" and doc["crc"] == "absent"
    assert doc["identification"] == "/XYz5\\2TEST-METER 01"
    assert doc["manufacturer"] == "XYz"
    assert doc["bcc"] == "ok"
    assert doc["datasets"][4] == {"code": "1.6.0", "obis": None, "values": [
        {"value": "01.234", "unit": "kW"}, {"value": "2401011230", "unit": None}]}
    assert doc["datasets"][5] == {"code": "C.1.1", "obis": None, "values": [{"value": "        ", "unit": None}]}
    full = parse_readout(fixture("push_lf.txt")).to_json()
    assert full["datasets"][0]["obis"] == "1-0:1.8.0*255"
    assert full["datasets"][3]["obis"] == "0-1:24.3.0*255"


def test_to_meter_data():
    data = parse_readout(fixture("mode_c_readout.bin")).to_meter_data(received=123.0)
    assert data.kind == "readout" and data.received == 123.0
    assert data.meter_id == "/XYz5\\2TEST-METER 01"
    by_index = {r.index: r for r in data.readings}
    assert [r.index for r in data.readings] == list(range(16))
    assert by_index[1].value == Decimal("1234.567") and by_index[1].unit == "kWh"
    assert by_index[1].raw == "001234.567"
    assert by_index[4].value == Decimal("1.234") and by_index[4].extra == (("2401011230", None),)
    assert by_index[5].value == ""          # all blanks: no value, never 0
    assert by_index[6].value == "4711"  # 0.0 is the meter address: text (leading zeros would matter)
    assert by_index[8].value == Decimal("-123.40")
    assert by_index[9].value == Decimal("2.5")
    assert by_index[10].value == Decimal("1200.5")  # decimal comma
    assert by_index[11].value == "070*C&050*C" and by_index[11].unit is None
    assert by_index[12].value == "A2"
    assert by_index[13].value == "" and by_index[13].numeric() is None
    assert by_index[15].unit is None        # '123456*': empty unit is None
    assert [r.index for r in data.find("1.8.0")] == [1, 14]  # duplicates kept, in order


# ------------------------------------------------------------------------ data block rules
@pytest.mark.parametrize("text, expected", [
    # several sets per line, glued
    ("6.8(0029.055*MWh)6.26(01589.28*m3)F(0)\r\n!",
     [("6.8", [("0029.055", "MWh")]), ("6.26", [("01589.28", "m3")]), ("F", [("0", None)])]),
    # continuation on the next line and on the same line
    ("1.6.1(0.5*kW)(2211120730)\r\nP.01(1)(kW)\r\n(0.3)(0.4)\r\n!",
     [("1.6.1", [("0.5", "kW"), ("2211120730", None)]),
      ("P.01", [("1", None), ("kW", None), ("0.3", None), ("0.4", None)])]),
    # '!' glued to the last set; empty unit; all blanks; empty group
    ("1.6*1(000013,0)!", [("1.6*1", [("000013,0", None)])]),
    ("1.8.0(013925.5*)\r\n!", [("1.8.0", [("013925.5", None)])]),
    ("C.1.1(        )\r\n9.18()\r\n!", [("C.1.1", [("        ", None)]), ("9.18", [("", None)])]),
    # trailing junk between the last ')' and '!' is skipped
    ("1.8.0(1*kWh)Y\x02\x02\x01\x00!\r\n", [("1.8.0", [("1", "kWh")])]),
    # '&' sub-values kept whole
    ("9.1(0&1&0&-&CV&3&2.14)9.2(&&)!", [("9.1", [("0&1&0&-&CV&3&2.14", None)]), ("9.2", [("&&", None)])]),
    # units after '*', two '*' without '&': split at the first
    ("1.8.0(12*kW*h)!", [("1.8.0", [("12", "kW*h")])]),
    # group before any address (answer to R1 without address)
    ("(012345.678*kWh)", [("", [("012345.678", "kWh")])]),
    # stops at ETX / EOT too
    ("1.8.0(1)\x032.8.0(2)", [("1.8.0", [("1", None)])]),
    ("1.8.0(1)\x042.8.0(2)", [("1.8.0", [("1", None)])]),
    # CR only and LF LF line ends
    ("1.8.0(1)\r2.8.0(2)\n\n3.8.0(3)!", [("1.8.0", [("1", None)]), ("2.8.0", [("2", None)]),
                                        ("3.8.0", [("3", None)])]),
])
def test_parse_data_block(text, expected):
    assert sets(parse_data_block(text)) == expected


@pytest.mark.parametrize("text, expected", [
    # an address glued to junk is not guessed: '\ufffd1.7.0' must not become 1.7.0
    ("1-0:\ufffd1.7.0(5*kW)\r\n2.8.0(2)!", [("2.8.0", [("2", None)])]),
    ("\x001.8.0(5)\r\n2.8.0(2)!", [("2.8.0", [("2", None)])]),
    # unclosed group: the damaged set goes, the next line is fine
    ("1.8.0(12\r\n2.8.0(2)!", [("2.8.0", [("2", None)])]),
    # a stray '(' inside a value: neither '1.8.0' nor a made-up set '12' survive
    ("1.8.0(12(3*kWh)\r\n2.8.0(2)!", [("2.8.0", [("2", None)])]),
    # after damage, address-less groups do not join the set before the damage
    ("1.6.0(1*kW)x)(170310)\r\n(9)\r\n2.8.0(2)!", [("1.6.0", [("1", "kW")]), ("2.8.0", [("2", None)])]),
    # control characters inside a value: dropped, not turned into a number
    ("1.8.0(12\x0034)\r\n2.8.0(2)!", [("2.8.0", [("2", None)])]),
])
def test_damaged_sets_are_dropped_not_guessed(text, expected):
    assert sets(parse_data_block(text)) == expected


def test_data_block_bytes_are_masked():
    assert sets(parse_data_block(b"\xc6.\xc6(00)!")) == [("F.F", [("00", None)])]


def test_obis_attached():
    (ds,) = parse_data_block("1-0:1.8.1*07(0006334.294*kWh)!")
    assert ds == DataSet("1-0:1.8.1*07", Obis(1, 0, 1, 8, 1, 7), (DataValue("0006334.294", "kWh"),))
    (odd,) = parse_data_block("XYZ(1)!")
    assert odd.obis is None


@pytest.mark.parametrize("text, number", [
    ("0006334.294", Decimal("6334.294")), ("000007,4", Decimal("7.4")), ("+000.8", Decimal("0.8")),
    ("-000073.69", Decimal("-73.69")), ("        18438636", Decimal("18438636")), (" 20000", Decimal("20000")),
    ("00", Decimal("0")), ("1126120053322353", Decimal("1126120053322353")), (".5", Decimal("0.5")),
    ("", None), ("        ", None), ("A2", None), ("1E3", None), ("2017-01-18", None), ("088*C&082*C", None),
    ("-", None), ("1.2.3", None), ("12 34", None), ("NaN", None), ("Infinity", None), ("1,2,3", None),
])
def test_to_number(text, number):
    assert to_number(text) == number


# ------------------------------------------------------------------------ framing errors
@pytest.mark.parametrize("raw, what", [
    (b"", "nothing arrived"),
    (b"\x00\x00\x00", "no end"),
    (b"/ABC5X\r\n!\r\n", "no data sets"),
    (b"/ABC5X\r\n\x021.8.0(1)\r\n2.8.0(", "no end"),            # truncated
    (b"/ABC5X\r\n\x021.8.0(1)\x03\x21", "without '!'"),          # readout must end with '!'
    (b"\x021.8.0(1)\x03X2.8.0(2)\x03Y", "follows the end"),      # ETX came too early
    (b"/?!\r\n", "no end"),                                     # only the echo of the request
])
def test_framing_errors(raw, what):
    with pytest.raises(FramingError) as info:
        parse_readout(raw, use_checksum=False)
    assert what in str(info.value)


def test_non_bytes_is_a_framing_error():
    with pytest.raises(FramingError):
        parse_readout("F.F(00)!")  # type: ignore[arg-type]


def test_echo_without_identification_is_skipped():
    r = parse_readout(b"\x7f/?!\r\n\x06050\r\nF.F(00)\r\n1.8.0(1*kWh)\r\n!\r\n")
    assert r.identification is None
    assert sets(r) == [("F.F", [("00", None)]), ("1.8.0", [("1", "kWh")])]


def test_bcc_may_be_a_control_character():
    block = b"F.F(00)\r\n!\r\n\x03"
    x = 0
    for b in block:
        x ^= b
    pad = bytes([ord("0") ^ x ^ 0x02])  # choose a value digit so that the BCC becomes STX (0x02)
    frame_block = b"F.F(0" + pad + b")\r\n!\r\n\x03"
    y = 0
    for b in frame_block:
        y ^= b
    assert y == 0x02
    r = parse_readout(b"/ABC0X\r\n\x02" + frame_block + bytes([y]))
    assert r.bcc == "ok" and r.datasets[0].values[0].value == "0" + pad.decode()


def test_non_ascii_byte_in_a_7bit_capture_never_becomes_a_digit():
    raw = b"/ABC5X\r\n1.8.0(12\xb34*kWh)\r\n2.8.0(1)\r\n!\r\n"  # 0xB3 masked would be '3'
    r = parse_readout(raw)
    assert sets(r) == [("2.8.0", [("1", None)])]


def test_large_readout_is_linear_enough():
    """A readout at the data-set bound (20 000 sets, 640 kB) parses; it must not take quadratic time."""
    line = b"1-0:1.8.0*255(0008048.375*kWh)\r\n"
    raw = b"/ABC5X\r\n\x02" + line * 20000 + b"!\r\n\x03"
    r = parse_readout(raw + bytes([bcc(raw[raw.index(b"\x02"):])]))
    assert len(r.datasets) == 20000 and r.bcc == "ok"


# ------------------------------------------------------------ where the value sits
def _dsmr(lines: str, pad: bool = True) -> bytes:
    """A DSMR telegram with its CRC16 (over '/' to '!'); ``pad=False`` writes it without leading zeros."""
    from dlms_protocol.iec62056_21.datablock import _crc16_arc

    body = ("/XMX5LGBBFG1012530239\r\n\r\n1-3:0.2.8(50)\r\n" + lines + "!").encode("ascii")
    crc = _crc16_arc(body)
    return body + (f"{crc:04X}" if pad else f"{crc:X}").encode("ascii") + b"\r\n"


def _reading(raw: bytes, code: str):
    return next(r for r in parse_readout(raw).to_meter_data().readings if r.code == code)


def test_dsmr_sets_that_start_with_their_time_read_the_value_after_it():
    """DSMR puts the capture time first (gas, water, heat, Fluvius' maximum demand): the reading is
    the number after it, at that time; the groups stay as sent (index 0 is still the time)."""
    from shng_double.testing import support

    value_group = support().value_group

    raw = _dsmr("0-1:24.2.1(161116200000W)(00066.405*m3)\r\n1-0:1.6.0(200509134558S)(02.589*kW)\r\n"
                "0-2:24.2.1(200512134558S)(00872.234*m3)\r\n")
    gas = _reading(raw, "0-1:24.2.1")
    assert (gas.value, gas.unit) == (Decimal("66.405"), "m3")
    assert gas.timestamp == datetime(2016, 11, 16, 20, 0, tzinfo=timezone(timedelta(hours=1)))
    peak = _reading(raw, "1-0:1.6.0")
    assert (peak.value, peak.unit) == (Decimal("2.589"), "kW")
    assert peak.timestamp == datetime(2020, 5, 9, 13, 45, 58, tzinfo=timezone(timedelta(hours=2)))
    assert value_group(gas, 0) == ("161116200000W", None) and value_group(gas, 1) == ("00066.405", "m3")
    assert _reading(raw, "0-2:24.2.1").value == Decimal("872.234")


def test_dsmr_2_3_gas_value_on_the_next_line():
    """The value is the last group, at the time of the first: Dutch local time without a summer
    or winter letter (dsmr-tools reads a real DSMR 2.2 Iskra's 211122210000 as 21:00+01:00)."""
    raw = _dsmr("0-1:24.3.0(121106150000)(00)(60)(1)(0-1:24.2.1)(m3)\r\n(00054.386)\r\n0-1:24.4.0(1)\r\n")
    gas = _reading(raw, "0-1:24.3.0")
    assert (gas.value, gas.unit) == (Decimal("54.386"), "m3")
    assert gas.timestamp == datetime(2012, 11, 6, 15, 0, tzinfo=timezone(timedelta(hours=1)))
    assert gas.name is not None and "M-Bus" in gas.name
    summer = _reading(_dsmr("0-1:24.3.0(210615120000)(00)(60)(1)(0-1:24.2.1)(m3)\r\n(00054.386)\r\n"),
                      "0-1:24.3.0")
    assert summer.timestamp == datetime(2021, 6, 15, 12, 0, tzinfo=timezone(timedelta(hours=2)))


@pytest.mark.parametrize("stamp", [
    "210328023000",  # 28 March 2021, 02:30: the hour the clocks skip
    "211031020000", "211031025959",  # 31 October 2021, 02:00-02:59: the hour that comes twice
    "071231230000", "700101010000",  # before DSMR: no moment
    "211322210000", "21112221000",  # month 13; 11 digits
])
def test_a_dsmr_2_3_gas_time_that_is_not_one_moment_gives_the_value_without_a_time(stamp: str):
    raw = _dsmr(f"0-1:24.3.0({stamp})(00)(60)(1)(0-1:24.2.1)(m3)\r\n(00054.386)\r\n")
    gas = _reading(raw, "0-1:24.3.0")
    assert (gas.value, gas.unit, gas.timestamp) == (Decimal("54.386"), "m3", None)


def _night_of_a_change(year: int, month: int, days_before: int, hour: int, minute: int, second: int) -> datetime:
    """A local time in the small hours of the last Sunday of March or October, or of a day before it."""
    last = datetime(year, month, 31)
    sunday = last - timedelta(days=(last.weekday() + 1) % 7 + days_before)
    return sunday.replace(hour=hour, minute=minute, second=second)


#: local times anywhere, and around the changes (the night of the last Sunday of March and October)
_WALL = st.one_of(
    st.datetimes(min_value=datetime(2008, 1, 1), max_value=datetime(2069, 12, 31, 23, 59, 59)),
    st.builds(_night_of_a_change, st.integers(2008, 2069), st.sampled_from([3, 10]), st.sampled_from([0, 0, 0, 1, 7]),
              st.integers(0, 4), st.integers(0, 59), st.integers(0, 59)))


@settings(max_examples=400, deadline=None)
@given(_WALL)
def test_the_dsmr_2_3_time_rule_is_amsterdam_time_except_for_the_hour_around_a_change(wall):
    """Against the time zone database: the same moment wherever Europe/Amsterdam gives one local
    time exactly one moment, and no moment where it skips or repeats the hour."""
    from dlms_protocol.iec62056_21.datablock import _dsmr23_time

    zoneinfo = pytest.importorskip("zoneinfo")
    try:
        zone = zoneinfo.ZoneInfo("Europe/Amsterdam")
    except zoneinfo.ZoneInfoNotFoundError:
        pytest.skip("no time zone database here")
    wall = wall.replace(microsecond=0)
    got = _dsmr23_time(wall.strftime("%y%m%d%H%M%S"))
    first, second = wall.replace(tzinfo=zone, fold=0), wall.replace(tzinfo=zone, fold=1)
    one = first.utcoffset() == second.utcoffset()
    exists = first.astimezone(timezone.utc).astimezone(zone).replace(tzinfo=None) == wall
    if one and exists:
        assert got == first and got.utcoffset() == first.utcoffset()
    else:
        assert got is None


def test_a_value_that_is_one_group_in_brackets_is_read_as_sent():
    """Iskra AM550's Swedish firmware sends its firmware versions as ``((ER11))`` (esphome-p1reader
    issue 36): the value is ``(ER11)``; they were left out without a word. A value with anything
    beside the inner group is still no data set."""
    raw = _dsmr("1-0:0.2.0((ER11))\r\n1-0:0.2.8((ER11))\r\n1-0:1.8.0(00001.234*kWh)\r\n")
    readout = parse_readout(raw)
    assert readout.crc == "ok" and readout.skipped == ()
    assert _reading(raw, "1-0:0.2.0").value == "(ER11)" and _reading(raw, "1-0:0.2.8").value == "(ER11)"
    assert _reading(raw, "1-0:1.8.0").value == Decimal("1.234")
    for bad in ("1-0:0.2.0((ER11)x)", "1-0:0.2.0((1)(2))", "1-0:0.2.0(((ER11)))"):
        readout = parse_readout(_dsmr(bad + "\r\n1-0:1.8.0(00001.234*kWh)\r\n"))
        assert [d.code for d in readout.datasets] == ["1-3:0.2.8", "1-0:1.8.0"] and readout.skipped, bad


@pytest.mark.parametrize("line", ["1-0:1.6.0(02.589*kW)(2005091345)",  # IEC order: value, then time
                                  "0-1:24.2.1(161116200000W)(abc)"])  # nothing numeric after it
def test_sets_that_do_not_fit_a_dsmr_time_are_read_as_sent(line: str):
    reading = _reading(_dsmr(line + "\r\n"), line.split("(")[0])
    first = line.split("(")[1].split("*")[0].rstrip(")")
    assert reading.raw == first and reading.timestamp is None
    assert str(reading.value) == first.lstrip("0") or reading.value == Decimal(first)


def test_a_dsmr_time_that_is_no_moment_still_places_the_value():
    """Sagemcom T210-D without a gas meter sends '632525252525S' (month 25) and 0: no time and no
    value (a channel without a device; a 0 m3 gas meter in Home Assistant would be a fake 0). A
    number other than 0 is still the group after the time, without a time."""
    reading = _reading(_dsmr("0-1:24.2.1(632525252525S)(00000.000)\r\n"), "0-1:24.2.1")
    assert reading.value is None and reading.timestamp is None and reading.raw == "632525252525S"
    assert reading.extra[0] == ("00000.000", None)
    reading = _reading(_dsmr("0-1:24.2.1(632525252525S)(01234.567*m3)\r\n"), "0-1:24.2.1")
    assert (reading.value, reading.unit, reading.timestamp) == (Decimal("1234.567"), "m3", None)


def test_an_epoch_placeholder_is_no_time_and_a_history_entry_is_no_count():
    """An Iskra AM550 sends '700101010000W' (1970, before DSMR existed) for an M-Bus channel
    without a reading: no time (it came out as 2070). E.ON Hungary's 0-0:98.1.0 starts with an
    entry's time and its registers: that is no number of entries (Fluvius' form is)."""
    reading = _reading(_dsmr("0-1:24.2.1(700101010000W)(00000000)\r\n"), "0-1:24.2.1")
    assert reading.timestamp is None and reading.raw == "700101010000W" and reading.value is None
    # an L+G E350 (DSMR 4.2, dsmr-tools' real telegram) sends 2000-01-01 00:00 UTC instead: no
    # gas reading of 0 m3 in 2000; a time before 2008 carries a number other than 0 without a time
    reading = _reading(_dsmr("0-1:24.2.1(000101010000W)(0000000000)\r\n"), "0-1:24.2.1")
    assert reading.timestamp is None and reading.value is None and reading.raw == "000101010000W"
    reading = _reading(_dsmr("0-1:24.2.1(071231230000W)(00012.345*m3)\r\n"), "0-1:24.2.1")
    assert (reading.value, reading.timestamp) == (Decimal("12.345"), None)
    eon = _reading(_dsmr("0-0:98.1.0(230701000000S)(000040.777*kWh)(000000.000*kWh)(04.104*kW)\r\n"),
                   "0-0:98.1.0")
    assert eon.value is None and eon.raw == "230701000000S" and eon.extra[0] == ("000040.777", "kWh")
    fluvius = _reading(_dsmr("0-0:98.1.0(1)(1-0:1.6.0)(1-0:1.6.0)(230201000000W)(230117224500W)(04.329*kW)\r\n"),
                       "0-0:98.1.0")
    assert fluvius.value == 1
    failures = _reading(_dsmr("1-0:99.97.0(1)(0-0:96.7.19)(000101000001W)(2147483647*s)\r\n"), "1-0:99.97.0")
    assert failures.value == 1


def test_identifiers_times_and_dates_stay_text():
    raw = _dsmr("0-0:96.1.0(09610)\r\n1-0:0.0.0(0273033000044)\r\n1-0:0.9.2(0220127)\r\n"
                "0-0:96.14.0(0002)\r\n1-0:1.8.0(000123.400*kWh)\r\n")
    assert _reading(raw, "0-0:96.1.0").value == "09610"
    assert _reading(raw, "1-0:0.0.0").value == "0273033000044"
    assert _reading(raw, "1-0:0.9.2").value == "0220127"
    assert _reading(raw, "0-0:96.14.0").value == Decimal(2)  # a tariff number is a number
    assert _reading(raw, "1-0:1.8.0").value == Decimal("123.400")
    # manufacturer-specific (C 96, D 50-99): a Hager eHZ's hex bytes stay as sent, '16' is not sixteen
    hager = _dsmr("1-0:96.50.0*1(07D0)\r\n1-0:96.50.0*2(16)\r\n1-0:96.99.0(0042)\r\n0-0:96.7.21(00004)\r\n")
    codes = ("1-0:96.50.0*1", "1-0:96.50.0*2", "1-0:96.99.0")
    assert [_reading(hager, c).value for c in codes] == ["07D0", "16", "0042"]
    assert _reading(hager, "0-0:96.7.21").value == Decimal(4)  # (D below 50: a count)
    # status words and the error register are hex as EasyMeter and Hager send them: '82' is 0x82
    status = _dsmr("1-0:96.5.5*255(82)\r\n1-0:96.5.5*1(D2)\r\nF.F(00000000)\r\n")
    assert [_reading(status, c).value for c in ("1-0:96.5.5*255", "1-0:96.5.5*1", "F.F")] == ["82", "D2", "00000000"]


def test_every_meter_id_code_is_a_text_code():
    import json

    from dlms_protocol.obis import _tables

    for entry in _tables()["meter_id_codes"]["codes"]:
        c, d, e = (int(g) for g in entry["code"].split("."))
        assert Obis(0, 0, c, d, e, 255).is_text(), entry["code"]
    assert json.dumps(_tables()["text_codes"]["codes"])


def test_dsmr_crc_without_leading_zero_is_checked():
    """Some meters write a CRC below 0x1000 with three digits; it is checked like four."""
    for n in range(2000):
        raw = _dsmr(f"0-0:96.13.0({n * 2654435761 % 2**32:08X}{n:04X})\r\n", pad=False)
        if raw[-5:-2].isalnum() and raw[-6:-5] == b"!":
            break
    else:  # pragma: no cover - one in 16 CRCs is below 0x1000
        raise AssertionError("no telegram with a three-digit CRC found")
    readout = parse_readout(raw)
    assert readout.crc == "ok" and readout.checksum == "CRC16"
    damaged = raw[:-3] + (b"0" if raw[-3:-2] != b"0" else b"1") + raw[-2:]
    with pytest.raises(ChecksumError):
        parse_readout(damaged)
    # a push stream splits such a telegram after its CRC, not at '!' (the CRC was lost before,
    # so a DSMR 5 telegram of this meter was rejected as one without its CRC16)
    from dlms_protocol.iec62056_21.stream import D0StreamSplitter

    for piece in (1, 7, len(raw) * 2):
        splitter = D0StreamSplitter()
        stream = raw + raw
        got = [t for i in range(0, len(stream), piece) for t in splitter.feed(stream[i:i + piece])]
        assert got == [raw, raw] and splitter.dropped == 0, piece
        assert all(parse_readout(t).checksum == "CRC16" for t in got)


@pytest.mark.parametrize("group, value, unit", [("024562 kWh", "024562", "kWh"), ("-5.5 W", "-5.5", "W"),
                                                ("  18438636", "  18438636", None), ("12 34", "12 34", None),
                                                ("ABC DEF", "ABC DEF", None), ("000123.4*kWh", "000123.4", "kWh")])
def test_unit_after_a_blank(group: str, value: str, unit) -> None:
    """Iskra MT171 writes '024562 kWh' (a blank, no '*'): the number and the unit are split there;
    blank padding, two numbers and text stay whole."""
    (ds,) = parse_data_block(f"1.8.0({group})\r\n!")
    assert (ds.values[0].value, ds.values[0].unit) == (value, unit)


def test_a_billing_time_stamp_stays_as_sent():
    """An L+G ZMD sends when the last billing period closed, ``1-1:0.1.2*01(2104010000)``: that is
    no number (2,104,010,000), it stays text; the billing period counter beside it is a number."""
    raw = (b"/LGZ5ZMD4104407.B40\r\n\x021-1:0.1.0(01)\r\n1-1:0.1.2*01(2104010000)\r\n"
           b"1-1:1.8.0(001234.5*kWh)\r\n!\r\n\x03")
    raw += bytes([bcc(raw[raw.index(b"\x02"):])])
    readings = {r.code: r.value for r in parse_readout(raw).to_meter_data().readings}
    assert readings["1-1:0.1.2*01"] == "2104010000" and readings["1-1:0.1.0"] == 1
    assert readings["1-1:1.8.0"] == Decimal("1234.5")


def test_a_unit_right_after_the_number_is_split_off_when_it_is_the_codes_own():
    """An Iskra MT382 on its optical port (dsmr_parser issue 81) sends ``1-0:1.8.0(010192.57kWh)``
    without '*': 10192.57 kWh (it was the text '010192.57kWh', every energy and power of the
    readout). Only a unit of the code's own quantity is split off: a reactive register 'in kWh',
    a hex word '0A' of a code without a unit, and text codes stay as sent."""
    raw = (b"/ISK5\\2MT382-1008\r\n\r\n1-0:1.8.0(010192.57kWh)\r\n1-0:1.7.0(001.322kW)\r\n12.7(231.15V)\r\n"
           b"1-0:3.8.3(00000.0kWh)\r\n1-0:99.1.0(0A)\r\n0-0:96.1.0(0123A)\r\n!\r\n")
    got = {r.code: (r.value, r.unit) for r in parse_readout(raw).to_meter_data().readings}
    assert got["1-0:1.8.0"] == (Decimal("10192.57"), "kWh") and got["1-0:1.7.0"] == (Decimal("1.322"), "kW")
    assert got["12.7"] == (Decimal("231.15"), "V")
    assert got["1-0:3.8.3"] == ("00000.0kWh", None) and got["1-0:99.1.0"][1] is None
    assert got["0-0:96.1.0"] == ("0123A", None)
    # a DSMR time ends in S or W: a Fluvius' winter maximum is 25.891 kW at that time, not 241 GW
    peak = _reading(_dsmr("1-0:1.6.0(241115084500W)(25.891*kW)\r\n"), "1-0:1.6.0")
    assert (peak.value, peak.unit) == (Decimal("25.891"), "kW")
    assert _reading(_dsmr("1-0:1.6.0(2411150845W)\r\n"), "1-0:1.6.0").unit is None  # (10 digits: a time too)
    assert peak.timestamp == datetime(2024, 11, 15, 8, 45, tzinfo=timezone(timedelta(hours=1)))


def test_a_glued_unit_of_a_code_without_one_usual_unit_is_split_off_when_its_quantity_fits():
    """The limiter threshold 0-0:17.0.0 has no one unit (kW in NL/BE, kVA in LU, A on an ACE4000):
    a Fluvius telegram's ``(999.9kW)`` stayed the text '999.9kW' while every other glued unit of it
    was split. Any of those quantities splits now; another quantity, or the code under A 1, stays."""
    got = {r.code: (r.value, r.unit) for r in parse_readout(_dsmr(
        "0-0:17.0.0(999.9kW)\r\n1-0:17.0.0(5.0kW)\r\n")).to_meter_data().readings}
    assert got["0-0:17.0.0"] == (Decimal("999.9"), "kW")
    assert got["1-0:17.0.0"] == ("5.0kW", None)
    for text, unit in (("016A", "A"), ("10.5kVA", "kVA"), ("9000W", "W")):
        reading = _reading(_dsmr(f"0-0:17.0.0({text})\r\n"), "0-0:17.0.0")
        assert reading.unit == unit and reading.value == Decimal(text[:-len(unit)])
    assert _reading(_dsmr("0-0:17.0.0(12.0kWh)\r\n"), "0-0:17.0.0").unit is None  # (an energy is no threshold)
    assert _reading(_dsmr("0-0:96.1.4(50215)\r\n"), "0-0:96.1.4").name == "Version information (e-MUCS P1 port)"


def test_a_dsmr_crc_over_bytes_above_0x7f_as_sent_holds():
    """A Hungarian Sanxing (P1Monitor's test telegram) sends its text message as 0xFF bytes on an
    8N1 line and its CRC over them as sent; the CRC was only taken over the 7-bit bytes (a 7E1 line
    read as 8N1) and the telegram refused. Either now holds; a wrong CRC still fails."""
    from dlms_protocol.iec62056_21.datablock import _crc16_arc

    body = (b"/AUX59903218166\r\n\r\n1-3:0.2.8(50)\r\n1-0:1.8.0(000123.456*kWh)\r\n0-0:96.13.0("
            + b"\xff" * 16 + b")\r\n!")
    good = body + f"{_crc16_arc(body):04X}".encode() + b"\r\n"
    readout = parse_readout(good)
    assert readout.crc == "ok" and [d.code for d in readout.datasets] == ["1-3:0.2.8", "1-0:1.8.0"]
    assert _reading(good, "1-0:1.8.0").value == Decimal("123.456")
    masked = body.translate(bytes(b & 0x7F for b in range(256)))
    assert parse_readout(body + f"{_crc16_arc(masked):04X}".encode() + b"\r\n").crc == "ok"
    with pytest.raises(ChecksumError):
        parse_readout(body + f"{_crc16_arc(body) ^ 1:04X}".encode() + b"\r\n")


# ------------------------------------------------------------ medium of short codes
HEAT = (b"/LUGCUH50\r\n\x026.8(0002.039*MWh)6.26(00040.62*m3)9.21(71422831)\r\n"
        b"6.8*01(0000.000*MWh)F(0)0.0(71422831)C.1.0(4711)9.4(084.2*C&040.4*C)\r\n!\r\n\x03")


def _framed(text: bytes) -> bytes:
    return text + bytes([bcc(text[text.index(b"\x02") + 1:])])


@pytest.mark.parametrize("ident, medium", [(b"/LUGCUH50", 6), (b"/SIEC2WR6", 6), (b"/SIE32WR5", 6),
                                           (b"/SIE5ZMD", None), (b"/EMH5EHZ2WR", None), (b"/LGZ5ZMD", None)])
def test_the_identification_names_the_medium_of_short_codes(ident, medium):
    """A heat meter writes its registers without A (6.8 heat energy, 6.26 volume): read as
    electricity, 6.8 would be reactive energy QII and 9.4 apparent power. The identification
    says the medium (obis_names.json d0_media); abstract codes (0.0, F, C.1.0) stay without A."""
    readout = parse_readout(_framed(HEAT.replace(b"/LUGCUH50", ident)))
    by_code = {ds.code: ds.obis for ds in readout.datasets}
    assert [by_code[c].a for c in ("6.8", "6.26", "9.21", "6.8*01", "9.4")] == [medium] * 5
    assert [by_code[c].a for c in ("F", "0.0", "C.1.0")] == [None] * 3
    names = {r.code: r.name for r in readout.to_meter_data().readings}
    if medium == 6:
        assert (names["6.8"], names["6.26"], names["6.8*01"], names["9.4"]) == (
            "Heat energy", "Volume", "Heat energy (billing period 1)", "Maximum flow and return temperature")
        assert Obis.parse("6.8").matches(by_code["6.8"])  # (an item's '6.8' still reads it)
    else:
        assert names["6.8"] is None  # (MWh is no reactive energy: the unit says so)
        assert names["9.4"] == "Apparent import (+VA), current average"
    assert names["F"] == "Error register" and names["C.1.0"] == "Meter serial number"
    energy = next(r for r in readout.to_meter_data().readings if r.code == "6.8")
    assert energy.value == Decimal("2.039") and energy.unit == "MWh"  # (values never change with it)


def test_heat_meter_items_snippet_and_table_say_heat():
    from dlms_protocol.items import items_snippet

    data = parse_readout(_framed(HEAT)).to_meter_data()
    snippet = items_snippet(data, language="de")
    assert "Wärmemenge" in snippet and "Blindenergie" not in snippet and "Scheinleistung" not in snippet


@pytest.mark.parametrize("code, value", [("1.6.0,5", "202601130730"), ("1-0:32.6.0,5", "202601251510"),
                                         ("1.6.0*01,5", "202512010715"), ("1.6.0,2", Decimal("2.002")),
                                         ("1.6.0", Decimal("2.002"))])
def test_an_attribute_other_than_the_value_stays_as_sent(code, value):
    """ZPA sends the time of each maximum as its own set, ``1.6.0,5(202601130730)`` (attribute 5,
    the capture time): it was the number 202 601 130 730. Attribute 2 is the value itself."""
    group = "02.002*kW" if isinstance(value, Decimal) else value
    readout = parse_readout(_framed(b"/ZPA5\\2AM363\r\n\x02" + f"{code}({group})\r\n!\r\n\x03".encode()))
    (reading,) = readout.to_meter_data().readings
    assert reading.value == value and type(reading.value) is type(value)


# ------------------------------------------------------------ 8-bit characters in a unit
def _dsmr8(lines: bytes) -> bytes:
    """The DSMR 5 fixture telegram with ``lines`` in place of its gas line, and its CRC16 over the
    bytes as sent (an 8N1 P1 port carries 8-bit bytes; the meter's CRC is over them)."""
    from dlms_protocol.iec62056_21.datablock import _crc16_arc

    text = fixture("dsmr5_crc.txt")
    gas = b"0-1:24.2.1(240101120000W)(00012.345*m3)\r\n"
    assert gas in text
    body = text[:text.index(b"!") + 1].replace(gas, lines)
    return body + f"{_crc16_arc(body):04X}".encode() + b"\r\n"


@pytest.mark.parametrize("encode", ["utf-8", "latin-1"])
def test_a_unit_with_8bit_characters_keeps_its_value_and_its_neighbours(encode):
    """'m³' and '°C' as a DSMR meter sends them, UTF-8 (m\\xc2\\xb3) or Latin-1 (m\\xb3): the value was
    dropped as junk, and with Latin-1 the next set with '°C' too."""
    raw = _dsmr8(("0-1:24.2.1(101209110000W)(12785.123*m³)\r\n6.26(00123*°C)\r\n"
                  "1-0:2.7.0(00.000*kW)\r\n").encode(encode))
    r = parse_readout(raw)
    assert r.crc == "ok" and r.skipped == ()
    got = dict(sets(r))
    assert got["0-1:24.2.1"] == [("101209110000W", None), ("12785.123", "m³")]
    assert got["6.26"] == [("00123", "°C")]
    assert got["1-0:2.7.0"] == [("00.000", "kW")]
    gas = _reading(raw, "0-1:24.2.1")
    assert (gas.value, gas.unit) == (Decimal("12785.123"), "m³")


def test_units_read_from_8bit_bytes_are_the_units_the_tables_know():
    from dlms_protocol.dlms.units import symbol
    from dlms_protocol.units import parse_unit, unit_from_bytes

    assert unit_from_bytes(b"m\xc2\xb3") == unit_from_bytes(b"m\xb3") == symbol(13) == "m³"
    assert parse_unit(unit_from_bytes(b"m\xb3")) == parse_unit("m3") == ("m3", Decimal(1))
    assert unit_from_bytes(b"\xb0C") == unit_from_bytes(b"\xc2\xb0C") == symbol(9) == "°C"


@pytest.mark.parametrize("bad", [
    b"0-1:24.2.1(101209110000W)(12785\xb3123*m3)\r\n",    # in the value: no digit, no wrong number
    b"0-1:24.2\xb3.1(101209110000W)(12785.123*m3)\r\n",   # in the address
    b"0-1:24.2.1(101209110000W)(12785.123*m\x80)\r\n",    # the transport's PARITY_ERROR: damage, no unit
    b"0-1:24.2.1(101209110000W)(12785.123*m\x85)\r\n",    # a C1 control is no character of a unit
    b"0-1:24.2.1(101209110000W)(070*C&050*\xb0C)\r\n",    # an '&' list is kept whole: no 8-bit there
    b"0-1:24.2.1(101209110000W)(12785.123*m\xe8)\r\n",    # 8-bit characters that make no known unit
    b"0-1:24.2.1(101209110000W)(12785.123*\xebWh)\r\n",   # (a bit error in 'kWh' on a line without a CRC)
])
def test_an_8bit_character_outside_a_unit_drops_its_set_and_no_other(bad):
    """The whole set goes (its time stamp alone was read as the gas reading), its neighbours stay."""
    r = parse_readout(_dsmr8(bad + b"6.26(00123*\xb0C)\r\n"))
    codes = [ds.code for ds in r.datasets]
    assert not any(code.startswith("0-1:24") for code in codes) and r.skipped
    assert codes == ["1-3:0.2.8", "0-0:1.0.0", "1-0:1.8.1", "1-0:1.7.0", "0-0:96.13.0", "6.26"]
