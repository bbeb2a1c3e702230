"""SML transmissions that pass every CRC but carry what no meter should (a helper's fuzzing of the
decoder found each): they give a held-back value, a counted decode error or their JSON, never an
exception out of the decoder (which the listener took for a broken port and reopened it), and a
long transmission fed in small pieces is scanned once."""
from __future__ import annotations

import json
import sys
from typing import Any, List

import pytest
from hypothesis import given, settings, strategies as st

from dlms_protocol.model import HELD_DETAIL
from dlms_protocol.simulator.sml import NONE, encode_sml, lst, octets, signed, unsigned
from dlms_protocol.sml.decoder import SmlDecoder
from dlms_protocol.sml.framing import ESCAPE, START, SmlFramer

SID = bytes.fromhex("0a01454d480000000001")
ENERGY = octets(bytes.fromhex("0100010800ff"))
POWER = lst(octets(bytes.fromhex("0100100700ff")), NONE, NONE, unsigned(27, 1), signed(-1, 1), signed(4321, 4), NONE)


TENTH, COUNT = signed(-1, 1), unsigned(12345, 4)


def entry(status: Any = NONE, scaler: Any = TENTH, value: Any = COUNT) -> Any:
    return lst(ENERGY, status, NONE, unsigned(30, 1), scaler, value, NONE)


@pytest.mark.parametrize("scaler", [signed(2**31 - 1, 4), signed(10**6, 4), signed(30000, 2), signed(-129, 2)],
                         ids=["int32-max", "1e6", "30000", "-129"])
def test_a_scaler_sml_cannot_carry_holds_its_value_back(scaler: Any) -> None:
    """SML's scaler is an Integer8; smllib reads any width. 10**(2**31-1) raised out of the decoder
    (decimal.InvalidOperation), 10**30000 made 1.2345E+30004 Wh. Now: no value, the raw kept, the
    reason said; the telegram's other values stay."""
    dec = SmlDecoder()
    (tel,) = dec.feed(encode_sml(SID, [entry(scaler=scaler), POWER]))
    energy, power = tel.readings
    assert energy.value is None and energy.raw == 12345
    assert "outside SML's Integer8" in dict(energy.details)[HELD_DETAIL]
    assert str(power.value) == "432.1" and power.unit == "W"
    json.dumps(tel.to_json())


def test_a_transmission_read_with_7_data_bits_says_so() -> None:
    """A port set to 7E1 (the D0 format) hands over every byte without its top bit: the CRC fails
    as for line noise, but the cause is the setting (smartmeter-obis issue 196, an ITRON frame
    in sml2emeter's test data). The error names it; a damaged 8-bit transmission does not."""
    good = encode_sml(SID, [entry(), POWER])
    assert b"\xff" in good
    dec = SmlDecoder(on_error=(errors := []).append)
    assert dec.feed(bytes(b & 0x7F for b in good)) == []
    assert len(errors) == 1 and "7 data bits" in str(errors[0]) and "8N1" in str(errors[0])
    assert "expected 0x" in str(errors[0]) and len(str(errors[0]).split("got 0x")[1].split(":")[0]) == 4
    damaged = bytearray(good)
    damaged[len(good) // 2] ^= 0x04
    dec = SmlDecoder(on_error=(errors := []).append)
    assert dec.feed(bytes(damaged)) == [] and len(errors) == 1
    assert "damaged on the line" in str(errors[0]) and "7 data bits" not in str(errors[0])


def test_smllib_failing_to_name_its_own_error_is_a_decode_error() -> None:
    """A choice tag smllib cannot parse made its error's text raise TypeError while the decoder
    built its message: now a counted decode error."""
    dec = SmlDecoder()
    assert dec.feed(encode_sml(SID, [entry(value=lst(lst(), NONE))])) == []
    assert dec.stats.get("decode_errors") == 1
    assert dec.stats.get("internal_errors") == 0
    (tel,) = dec.feed(encode_sml(SID, [entry()]))  # (and the next one is read)
    assert str(tel.readings[0].value) == "1234.5"


@pytest.mark.parametrize("status, shown, read_back",
                         [(signed(-1, 1), "-0x1", -1), (unsigned(0x1A2, 2), "0x1A2", 0x1A2)],
                         ids=["signed", "unsigned"])
def test_a_signed_status_word_reaches_json(status: Any, shown: str, read_back: int) -> None:
    """``0x-1`` made ``decode --json`` fail (int("0x-1", 16))."""
    (tel,) = SmlDecoder().feed(encode_sml(SID, [entry(status=status)]))
    assert dict(tel.readings[0].details)["status"] == shown
    assert tel.to_json()["readings"][0]["status"] == read_back


def test_a_long_transmission_in_single_bytes_is_scanned_once() -> None:
    """Each piece rescanned the whole unfinished transmission (a Python step per doubled escape):
    16 kB of them in single bytes took 11 s. Counted here in scans of the buffer, not in time."""
    data = START + ESCAPE * 2 * 1000  # 1000 doubled escapes, 8 kB, no end yet
    finds: List[int] = []

    def count(frame: Any, event: str, arg: Any) -> None:
        if event == "c_call" and getattr(arg, "__name__", "") == "find":
            finds.append(1)

    framer = SmlFramer()
    sys.setprofile(count)
    try:
        for i in range(len(data)):
            assert framer.feed(data[i:i + 1]) == []
    finally:
        sys.setprofile(None)
    assert framer.buffered == len(data)
    assert len(finds) < 8 * len(data)  # (the rescans made about 500 per byte here)


#: what a transmission is made of on SML's 4-byte grid (and a byte off it): starts, escapes, a
#: doubled escape whose data looks like a start, ends, whole transmissions
_PIECES = [START, ESCAPE, ESCAPE * 2 + b"\x01" * 4, b"\x01" * 4, bytes(4), ESCAPE + b"\x1a\x00\x00\x00", b"\x1b",
           encode_sml(SID, [entry(value=unsigned(0x1B1B1B1B, 4))]), encode_sml(SID, [entry()])]


def _framed(data: bytes, chunks: List[int]) -> Any:
    framer = SmlFramer(max_size=512)
    out: List[bytes] = []
    at = 0
    for size in chunks:
        out += [t.raw for t in framer.feed(data[at:at + size])]
        at += size
    out += [t.raw for t in framer.feed(data[at:])]
    return out, (framer.crc_errors, framer.cut, framer.oversized, framer.bad_escapes)


@settings(max_examples=1000, deadline=None)
@given(parts=st.lists(st.sampled_from(_PIECES), min_size=1, max_size=60),
       cut=st.integers(0, 400), chunks=st.lists(st.sampled_from([1, 2, 3, 5, 8, 64]), max_size=400))
def test_a_resumed_scan_frames_as_one_scan_of_the_whole(parts: List[bytes], cut: int, chunks: List[int]) -> None:
    """Escapes, doubled escapes, start sequences completed by the next piece (a doubled escape's
    data, or a new transmission), ends and cut transmissions: fed in pieces, the framer gives
    what it gives for the whole (the resumed scan once took a doubled escape's data for a start)."""
    data = b"".join(parts)
    data = data[:len(data) - cut % max(1, len(data))]
    assert _framed(data, chunks) == _framed(data, [len(data)])
