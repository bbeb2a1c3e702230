"""Identification message ``/XXXZ[\\W]ident``: every shape seen in the corpus and in peer bugs."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlms_protocol.errors import DlmsError, IdentificationError
from dlms_protocol.iec62056_21.identification import (
    BAUD_CHAR_TO_RATE, RATE_TO_BAUD_CHAR_C, Identification, parse_identification,
)


def _parity(data: bytes) -> bytes:
    """7E1 bytes as an 8N1 port shows them (bit 7 = even parity)."""
    return bytes(b | 0x80 if bin(b).count("1") % 2 else b for b in data)


# line -> manufacturer, baud char, mode, baudrate, enhanced, ident, short reaction, raw
CASES = [
    (b"/ISk5MT174-0001\r\n", "ISk", "5", "C", 9600, None, "MT174-0001", True, "/ISk5MT174-0001"),
    ("/ISk5MT174-0001", "ISk", "5", "C", 9600, None, "MT174-0001", True, "/ISk5MT174-0001"),
    # LF-only line end: the last character stays (pwitab drops it)
    (b"/LGZ4ZMF100AC.M27\n", "LGZ", "4", "C", 4800, None, "ZMF100AC.M27", False, "/LGZ4ZMF100AC.M27"),
    (b"/LGZ4ZMF100AC.M26\r\n", "LGZ", "4", "C", 4800, None, "ZMF100AC.M26", False, "/LGZ4ZMF100AC.M26"),
    # \W present: not part of the ident
    (b"/ACE0\\3k260V01.19\r\n", "ACE", "0", "C", 300, "3", "k260V01.19", False, "/ACE0\\3k260V01.19"),
    (b"/MCS5\\@0050010067967\r\n", "MCS", "5", "C", 9600, "@", "0050010067967", False,
     "/MCS5\\@0050010067967"),
    (b"/ISk5\\2MT382-1000\r\n", "ISk", "5", "E", 9600, "2", "MT382-1000", True, "/ISk5\\2MT382-1000"),
    # '\2' turned into byte 0x02 by a string literal: read as the meter meant it, raw kept
    (b"/ISk5\x02MT382-1000\r\n", "ISk", "5", "E", 9600, "2", "MT382-1000", True, "/ISk5\x02MT382-1000"),
    # dropped backslash: indistinguishable from an ident starting with '2', left as sent
    (b"/LGZ52ZMD120APt.G03\r\n", "LGZ", "5", "C", 9600, None, "2ZMD120APt.G03", False, "/LGZ52ZMD120APt.G03"),
    # mode A: blank or any other character
    (b"/KAM MC\r\n", "KAM", " ", "A", 300, None, "MC", False, "/KAM MC"),
    (b"/KAM 685-382-QR-10\r\n", "KAM", " ", "A", 300, None, "685-382-QR-10", False, "/KAM 685-382-QR-10"),
    (b"/ABCxyz\r\n", "ABC", "x", "A", 300, None, "yz", False, "/ABCxyz"),
    # mode B: A = 600 ... F = 19200 (lvzon's table is off by one)
    (b"/SIEC2WR5\r\n", "SIE", "C", "B", 2400, None, "2WR5", False, "/SIEC2WR5"),
    (b"/XYZA1\r\n", "XYZ", "A", "B", 600, None, "1", False, "/XYZA1"),
    (b"/XYZF1\r\n", "XYZ", "F", "B", 19200, None, "1", False, "/XYZF1"),
    (b"/XYZG1\r\n", "XYZ", "G", "B", 300, None, "1", False, "/XYZG1"),  # reserved: no switch
    (b"/SIE32WR5\r\n", "SIE", "3", "C", 2400, None, "2WR5", False, "/SIE32WR5"),
    (b"/XYZ6x\r\n", "XYZ", "6", "C", 19200, None, "x", False, "/XYZ6x"),
    (b"/XYZ7x\r\n", "XYZ", "7", "C", 300, None, "x", False, "/XYZ7x"),  # reserved: no switch
    (b"/XYZ0\\2x\r\n", "XYZ", "0", "E", 300, "2", "x", False, "/XYZ0\\2x"),
    # blanks in the ident are kept
    (b"/ESY5Q3DA1024 V3.03\r\n", "ESY", "5", "C", 9600, None, "Q3DA1024 V3.03", False, "/ESY5Q3DA1024 V3.03"),
    (b"/EMH5----eHZ-E0018E\r\n", "EMH", "5", "C", 9600, None, "----eHZ-E0018E", False, "/EMH5----eHZ-E0018E"),
    (b"/HAg5eHZ010C3A0\r\n", "HAg", "5", "C", 9600, None, "eHZ010C3A0", True, "/HAg5eHZ010C3A0"),
    # echo of the request and noise in front: skipped, never taken as the identification
    (b"/?!\r\n/ITR5EM214\r\n", "ITR", "5", "C", 9600, None, "EM214", False, "/ITR5EM214"),
    (b"\x7f\x7f\x7f\x7f\x7f/?!\r\n/ACE0\\3k260V01.19\r\n", "ACE", "0", "C", 300, "3", "k260V01.19", False,
     "/ACE0\\3k260V01.19"),
    (b"/?Bla0!\r\n/ISk5MT174-0001\r\n", "ISk", "5", "C", 9600, None, "MT174-0001", True, "/ISk5MT174-0001"),
    # 7E1 read as 8N1
    (_parity(b"/ISk5MT174-0001\r\n"), "ISk", "5", "C", 9600, None, "MT174-0001", True, "/ISk5MT174-0001"),
]


@pytest.mark.parametrize("line, man, z, mode, baud, enhanced, ident, short, raw", CASES)
def test_identification_shapes(line, man, z, mode, baud, enhanced, ident, short, raw):
    got = parse_identification(line)
    assert got == Identification(man, z, mode, baud, enhanced, ident, short, raw)
    assert got.reaction_time == (0.02 if short else 0.2)


@pytest.mark.parametrize("line", [
    b"/?!\r\n", "/?!", b"", "", b"\x06050\r\n", "/AB", "/ABC", "/ABC\r\n", "garbage", b"\x00" * 40,
    "/ABC!x", "/ABC/x", "/12345", "F.F(00)\r\n",
])
def test_not_an_identification(line):
    with pytest.raises(IdentificationError) as info:
        parse_identification(line)
    assert ": " in str(info.value)  # "<cause>: <fix>"
    assert info.value.fix


def test_wrong_type_is_an_identification_error():
    with pytest.raises(IdentificationError):
        parse_identification(12345)  # type: ignore[arg-type]


def test_baud_tables_match_the_standard():
    assert [BAUD_CHAR_TO_RATE[c] for c in "0123456"] == [300, 600, 1200, 2400, 4800, 9600, 19200]
    assert [BAUD_CHAR_TO_RATE[c] for c in "ABCDEF"] == [600, 1200, 2400, 4800, 9600, 19200]
    assert RATE_TO_BAUD_CHAR_C == {300: "0", 600: "1", 1200: "2", 2400: "3", 4800: "4", 9600: "5", 19200: "6"}
    for z, rate in BAUD_CHAR_TO_RATE.items():
        if z.isdigit():
            assert RATE_TO_BAUD_CHAR_C[rate] == z


_PRINTABLE = [chr(c) for c in range(0x20, 0x7F)]
_LETTERS = st.sampled_from([c for c in _PRINTABLE if c.isalpha()])
_IDENT_CHARS = st.sampled_from([c for c in _PRINTABLE if c not in "/!\\"])


@settings(max_examples=300, deadline=None)
@given(man=st.text(_LETTERS, min_size=3, max_size=3),
       z=_IDENT_CHARS,
       enhanced=st.one_of(st.none(), st.sampled_from(_PRINTABLE[1:])),
       ident=st.text(_IDENT_CHARS, max_size=16),
       eol=st.sampled_from(["\r\n", "\n", ""]))
def test_formatted_identification_round_trips(man, z, enhanced, ident, eol):
    line = f"/{man}{z}" + (f"\\{enhanced}" if enhanced else "") + ident
    got = parse_identification((line + eol).encode("ascii"))
    assert (got.manufacturer, got.baud_char, got.enhanced, got.ident, got.raw) == (man, z, enhanced, ident, line)
    if z in "0123456":
        assert got.baudrate == [300, 600, 1200, 2400, 4800, 9600, 19200][int(z)]
        assert got.mode == ("E" if enhanced == "2" else "C")
    elif z in "ABCDEF":
        assert (got.mode, got.baudrate) == ("B", [600, 1200, 2400, 4800, 9600, 19200]["ABCDEF".index(z)])
    elif z not in "0123456789ABCDEFGHI":
        assert (got.mode, got.baudrate) == ("A", 300)
    assert got.short_reaction == man[2].islower()


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=80), st.text(max_size=80)))
def test_any_input_gives_identification_or_identification_error(data):
    try:
        got = parse_identification(data)
    except IdentificationError:
        return
    except DlmsError as exc:  # pragma: no cover - would be a wrong error class
        pytest.fail(f"wrong error class {type(exc).__name__}")
    assert got.raw.startswith("/") and len(got.manufacturer) == 3
