"""Data-Notification APDUs and A-XDR data built by hand, decoded by dlms.apdu, checked against gurux-dlms."""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal

import pytest
from gurux_dlms import GXByteBuffer, GXDLMSSettings
from gurux_dlms.internal._GXCommon import _GXCommon
from gurux_dlms.internal._GXDataInfo import _GXDataInfo

from dlms_protocol.dlms.apdu import (Array, BitString, Structure, decode_apdu, decode_data, encode_data,
                                     encode_notification, parse_datetime)
from dlms_protocol.errors import DecodeError, DlmsError

H = bytes.fromhex


def gurux_decode(raw: bytes):
    """gurux-dlms' own A-XDR decoder, normalised to plain Python (the independent oracle)."""
    info = _GXDataInfo()
    value = _GXCommon.getData(GXDLMSSettings(True, None), GXByteBuffer(raw), info)

    def plain(v):
        if isinstance(v, list):
            return [plain(x) for x in v]
        if isinstance(v, (bytearray, bytes)):
            return bytes(v)
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return v
        if isinstance(v, float):
            return float(v)
        return int(v)
    return plain(value)


# ------------------------------------------------------------------ notification header
def test_notification_with_standard_datetime_header() -> None:
    # 0F | invoke 00000D7E | 0C + date-time 2023-07-24 (Mon) 19:40:25, deviation -120, status 0x80 | body
    apdu = H("0F00000D7E" "0C07E707180113281900FF8880" "0202" "0600000571" "120955")
    n = decode_apdu(apdu)
    assert n.invoke_id == 0x0D7E and not n.priority_high
    assert n.timestamp == datetime(2023, 7, 24, 19, 40, 25, tzinfo=timezone(timedelta(hours=2)))
    assert n.timestamp.utcoffset() == timedelta(hours=2)  # COSEM deviation -120 = UTC+02:00
    assert n.clock_status == 0x80
    assert n.body == [1393, 2389] and n.body.types == ("double-long-unsigned", "long-unsigned")
    assert isinstance(n.body, Structure)


def test_notification_deviation_not_specified_is_naive() -> None:
    n = decode_apdu(H("0F40000000" "0C07E7031603031C32FF800000" "0201" "0600000001"))
    assert n.timestamp == datetime(2023, 3, 22, 3, 28, 50) and n.timestamp.tzinfo is None
    assert n.invoke_id == 0 and not n.priority_high


def test_notification_kaifa_octet_string_datetime_form() -> None:
    """Kaifa MA304 writes the header date-time as 09 0C <12 bytes>; gurux fails on it."""
    n = decode_apdu(H("0F40000000" "090C07E7031603031C32FF800000" "0201" "06000008DD"))
    assert n.timestamp == datetime(2023, 3, 22, 3, 28, 50)
    assert n.body == [2269]


def test_notification_without_datetime_and_priority_bit() -> None:
    n = decode_apdu(H("0F80030CE6" "00" "0A03414243"))
    assert n.timestamp is None and n.datetime_raw is None
    assert n.invoke_id == 0x030CE6 and n.priority_high
    assert n.body == "ABC" and n.body_type == "visible-string"


def test_invalid_header_datetime_keeps_raw_bytes() -> None:
    raw = "FFFFFFFFFFFFFFFFFF800000"
    n = decode_apdu(H("0F00000001" "0C" + raw + "00"))
    assert n.timestamp is None and n.datetime_raw == H(raw) and n.body is None


def test_encode_notification_round_trip() -> None:
    ts = datetime(2024, 2, 29, 23, 59, 58, 990000, tzinfo=timezone(timedelta(minutes=-330)))
    body = Structure([b"\x01\x00\x01\x08\x00\xff", 123456789, Structure([-3, 30])])
    body.types = ("octet-string", "double-long-unsigned", "structure")
    body[2].types = ("integer", "enum")
    for kaifa in (False, True):
        n = decode_apdu(encode_notification(body, ts, invoke_id=77, kaifa_datetime=kaifa, clock_status=0x81))
        assert n.timestamp == ts and n.clock_status == 0x81 and n.invoke_id == 77
        assert n.body == body and n.body.types == body.types and n.body[2].types == ("integer", "enum")


# ------------------------------------------------------------------------ data types
@pytest.mark.parametrize("hexdata, value, type_name", [
    ("00", None, "null-data"),
    ("0300", False, "boolean"),
    ("0301", True, "boolean"),
    ("03FF", True, "boolean"),
    ("0580000000", -2**31, "double-long"),
    ("057FFFFFFF", 2**31 - 1, "double-long"),
    ("06FFFFFFFF", 2**32 - 1, "double-long-unsigned"),
    ("0F80", -128, "integer"),
    ("1080 00", -32768, "long"),
    ("11FF", 255, "unsigned"),
    ("12FFFF", 65535, "long-unsigned"),
    ("148000000000000000", -2**63, "long64"),
    ("15FFFFFFFFFFFFFFFF", 2**64 - 1, "long64-unsigned"),
    ("1605", 5, "enum"),
    ("0D12", 0x12, "bcd"),
    ("0900", b"", "octet-string"),
    ("0A03414243", "ABC", "visible-string"),
    ("0A02E4FF", "\u00e4\u00ff", "visible-string"),
    ("0C02C3A4", "\u00e4", "utf8-string"),
    ("173F800000", Decimal("1.0"), "float32"),
    ("18BFF8000000000000", Decimal("-1.5"), "float64"),
    ("040BA5E0", BitString("10100101111"), "bit-string"),
    ("1907E501020504050607FFC400", datetime(2021, 1, 2, 4, 5, 6, 70000, tzinfo=timezone(timedelta(hours=1))),
     "date-time"),
    ("1A07E50C0303", date(2021, 12, 3), "date"),
    ("1B0F351E00", time(15, 53, 30), "time"),
    ("1AFFFF0C03FF", H("FFFF0C03FF"), "date"),        # every year: no Python date, the bytes stay
    ("1BFF000000", H("FF000000"), "time"),
])
def test_scalar_types(hexdata: str, value: object, type_name: str) -> None:
    raw = H(hexdata.replace(" ", ""))
    got, name, end = decode_data(raw)
    assert (got, name, end) == (value, type_name, len(raw))
    assert type(got) is type(value)


@pytest.mark.parametrize("hexdata", ["0300", "0580000000", "06FFFFFFFF", "0F80", "1080 00", "11FF", "12FFFF",
                                     "148000000000000000", "15FFFFFFFFFFFFFFFF", "1605", "0900", "0A03414243",
                                     "173F800000", "18BFF8000000000000", "00"])
def test_scalar_types_agree_with_gurux(hexdata: str) -> None:
    raw = H(hexdata.replace(" ", ""))
    ours = decode_data(raw)[0]
    theirs = gurux_decode(raw)
    if isinstance(ours, Decimal):
        assert ours == Decimal(repr(float(theirs)))
    else:
        assert ours == theirs


def test_long_lengths_and_nesting() -> None:
    payload = bytes(range(256)) * 2  # 512 bytes: length 82 02 00
    raw = H("0202") + H("09820200") + payload + H("018180") + H("1101") * 128
    got, name, end = decode_data(raw)
    assert name == "structure" and end == len(raw)
    assert got[0] == payload and isinstance(got[1], Array) and got[1] == [1] * 128
    assert got[1].types == ("unsigned",) * 128
    assert gurux_decode(raw) == [payload, [1] * 128]


def test_encode_data_natural_types() -> None:
    tree = [1, -1, 2**31, 2**40, -2**40, 2**63, b"\x00", "x", True, None, Array([1, 2]),
            [datetime(2020, 1, 1)]]
    got, name, _ = decode_data(encode_data(tree))
    assert name == "structure"
    assert got[:10] == [1, -1, 2**31, 2**40, -2**40, 2**63, b"\x00", "x", True, None]
    assert isinstance(got[10], Array) and got[11] == [datetime(2020, 1, 1)]
    assert got.types[:6] == ("double-long", "double-long", "double-long-unsigned", "long64", "long64",
                             "long64-unsigned")


# -------------------------------------------------------------------------- date-time
@pytest.mark.parametrize("hexdata, valid", [
    ("07E707180113281900FF8880", True),
    ("07E707180113281900800000", True),     # deviation 0x8000: naive
    ("07E7071801132819FF800000", True),     # hundredths not specified
    ("07E7021E01132819008000FF", False),    # 30 February
    ("FFFF07180113281900800000", False),    # any year
    ("07E70D180113281900800000", False),    # month 13
    ("07E707180118281900800000", False),    # hour 24
    ("07E707180113281900030100", False),    # deviation +769 minutes
    ("313738323130313933303735", False),    # the ASCII meter number '178210193075' (EVN): not a date
    ("07E90C0E00100000FF000000", True),     # Aidon: Sunday 2025-12-14 as weekday 0 (COSEM says 7)
    ("07E90C0F00100000FF000000", False),    # weekday 0 on a Monday: no date-time
    ("07E90C0E08100000FF000000", False),    # weekday 8
])
def test_parse_datetime_is_strict(hexdata: str, valid: bool) -> None:
    assert (parse_datetime(H(hexdata)) is not None) is valid


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("hexdata, words", [
    ("", "empty"),
    ("DB084C475A6773781FD0820103300006903C", "still ciphered"),
    ("E040000100007700", "block"),
    ("2F455354355C32", "DSMR"),
    ("E6E7000F00000001", "LLC"),
    ("7EA0", "HDLC"),
    ("C4010100", "get-response"),
    ("99", "not a data-notification"),
    ("0F000000", "truncated"),
    ("0F0000000105", "12"),
    ("0F0000000100", "no body"),
    ("0F000000010006000000", "truncated"),
    ("0F00000001000600000001FF", "bytes left"),
    ("0F0000000100FE", "unknown A-XDR data type"),
    ("0F00000001001300", "not supported"),
    ("0F0000000100020A0600000001", "cannot fit"),
    ("0F000000010009850000000001", "length prefix"),
    ("0F0000000100090480", "truncated"),
    ("0F0000000100" + "0201" * 20 + "00", "nested"),
    ("0F0000000100" + "0C02C328", "UTF-8"),
])
def test_errors_are_decode_errors_with_cause_and_fix(hexdata: str, words: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_apdu(H(hexdata))
    assert words.lower() in str(info.value).lower()
    assert info.value.fix  # every message says what to do
    assert isinstance(info.value, DlmsError)
