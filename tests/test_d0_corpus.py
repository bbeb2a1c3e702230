"""Every real readout in the D0 corpus, parsed in place (shared/corpus/d0, never copied).

Two sources of truth per file: the sidecar's ``expected`` (what the file's source asserts) and
the table below, written by reading each file by hand (counts, first/last set, values as sent).
Nothing here is computed by the parser under test.
"""
from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

import pytest

from dlms_protocol.errors import ChecksumError
from dlms_protocol.iec62056_21.datablock import Readout, parse_readout, to_number
from helpers import corpus_files, load_json

FILES = corpus_files("d0", ".txt")

# file stem -> what a reader sees in the file.
#   ident: identification line as sent (None: the sample has none); bcc: ok/absent, or
#   (expected, got) for a frame whose BCC does not match; count: data sets;
#   sets: (code, value as transmitted, unit) for the FIRST set with that code;
#   index: code -> position of its first set.
HAND = {
    "easymeter_q3d_1": dict(
        ident="/ESY5Q3DA1024 V3.03", bcc="absent", count=9,
        first="1-0:0.0.0*255", last="0-0:96.1.255*255",
        sets=[("1-0:0.0.0*255", "111940207", None), ("1-0:1.8.0*255", "00000000.7801269", "kWh"),
              ("1-0:2.8.0*255", "00007041.2292533", "kWh"), ("1-0:21.7.255*255", "-000073.69", "W"),
              ("1-0:1.7.255*255", "-000142.30", "W"), ("1-0:96.5.5*255", "A2", None),
              ("0-0:96.1.255*255", "1ESY1127000167", None)]),
    "easymeter_q3d_2": dict(
        ident="/ESY5Q3DA3024 V3.04", bcc="absent", count=5,
        first="1-0:0.0.0*255", last="0-0:96.1.255*255",
        sets=[("1-0:21.7.0*255", "-000115.94", "W")]),
    "ebz_dd3_1": dict(
        ident="/EBZ5DD3BZ06ETA_107", bcc="absent", count=12,
        first="1-0:0.0.0*255", last="0-0:96.8.0*255",
        sets=[("1-0:0.0.0*255", "1EBZ0100507409", None), ("1-0:1.8.0*255", "000125.25688570", "kWh"),
              ("1-0:16.7.0*255", "000259.20", "W"), ("1-0:32.7.0*255", "232.4", "V"),
              ("1-0:96.5.0*255", "001C0104", None), ("0-0:96.8.0*255", "00104443", None)]),
    "emh_ehz_1": dict(
        ident="/EMH5----eHZ-E0018E", bcc="absent", count=4,
        first="1-0:0.0.0*255", last="0-0:96.1.255*255",
        sets=[("1-0:0.0.0*255", "331200-5009810", None), ("1-0:1.8.1*255", "032942.0231", None),
              ("1-0:96.5.5*255", "80", None), ("0-0:96.1.255*255", "0000680476", None)]),
    "iskra_mt174_1": dict(
        ident="/ISk5MT174-0001", bcc="ok", count=343,
        first="1-0:0.9.1*255", last="1-0:2.8.4*15",
        sets=[("1-0:0.9.1*255", "201455", None), ("0-0:C.1.6*255", "FDF5", None),
              ("1-0:1.8.1*255", "0008048.375", "kWh"), ("1-0:1.6.2*01", "", None),
              ("1-0:1.8.0*15", "0004224.392", "kWh"), ("1-0:2.8.4*15", "0000000.000", "kWh")],
        index={"1-0:1.6.0*255": 13, "1-0:1.8.1*07": 139},
        empty_sets=90),  # lines holding '()' (grep -c), one set each
    "iskra_mt382_dsmr3_1": dict(
        ident="/ISk5\x02MT382-1000", bcc="absent", count=16,
        first="0-0:96.1.1", last="0-1:24.4.0",
        sets=[("0-0:96.1.1", "4B384547303034303436333935353037", None), ("1-0:1.8.1", "12345.678", "kWh"),
              ("1-0:1.7.0", "001.19", "kW"), ("0-0:17.0.0", "016", "A"), ("0-0:96.14.0", "0002", None),
              ("0-1:24.3.0", "090212160000", None), ("0-1:24.4.0", "1", None)],
        groups={"0-1:24.3.0": ["090212160000", "00", "60", "1", "0-1:24.2.1", "m3", "00001.001"]}),
    "itron_ace3000_1": dict(
        ident="/ACE0\\3k260V01.19", bcc=(0x4D, 0x46), count=4,
        first="F.F", last="1.8.0",
        sets=[("F.F", "00", None), ("C.1", "1126120053322353", None), ("C.5.0", "00", None),
              ("1.8.0", "013925.5", None)]),
    "itron_em214_1": dict(
        ident="/ITR5EM214", bcc="absent", count=21,
        first="F.F", last="C.90",
        sets=[("0.0.0", "1240007670003202", None), ("1.7.0", "00.49", "kW"), ("1.8.1", "022108.7", "kWh"),
              ("31.7.0", "+000.8", "A"), ("C.5.0", "L1-L2-L3", None), ("C.6.3", "03.78", "V"),
              ("C.13.21", "00000001", "secs"), ("C.90", "00000100", None)]),
    "kamstrup_382_1": dict(
        ident="/KAM 685-382-QR-10", bcc="absent", count=8,
        first="0.0", last="1.6*1",
        sets=[("0.0", "XXXXXXXX", None), ("1.20", "0083038", "kWh"), ("1.31", "0160249", "h"),
              ("1.26", "0000000", None), ("1.6", "000007,4", "kW"), ("1.6*1", "000013,0", None)],
        numbers={"1.6": Decimal("7.4"), "1.6*1": Decimal("13.0")}),
    "landisgyr_e350_1": dict(
        ident="/LGZ4ZMF100AC.M27", bcc="absent", count=23,
        first="F.F", last="C.5.0",
        sets=[("0.0", "        18438636", None), ("C.1.1", "        ", None), ("1.8.2", "000219.251", "kWh"),
              ("32.7", "233", "V"), ("16.7", "001.66", "kW"), ("0.2.0", "M27", None), ("C.5.0", "1420", None)]),
    "landisgyr_e350_2": dict(
        ident="/LGZ4ZMF100AC.M26", bcc="ok", count=22,
        first="F.F", last="C.5.0",
        sets=[("0.0", "          120858", None), ("C.1.0", "13647123", None), ("C.1.1", "        ", None),
              ("1.8.1", "042951.721", "kWh"), ("71.7", "000.47", "A"), ("C.5.0", "0401", None)]),
    "landisgyr_zmd120_1": dict(
        ident="/LGZ52ZMD120APt.G03", bcc="absent", count=8,
        first="F.F", last="2.8.0",
        sets=[("F.F", "00000000", None), ("0.0.0", " 20000", None), ("1.8.1", "001846.0", "kWh"),
              ("2.8.1", "004329.6", "kWh"), ("2.8.0", "004329.6", "kWh")]),
    "landisgyr_zmd310_1": dict(
        ident=None, bcc="absent", count=277,
        first="1-1:F.F", last="1-1:0.2.1",
        sets=[("1-1:F.F", "00000000", None), ("1-1:1.6.1", "07.98", "kW"), ("1-1:1.6.1*30", "07.60", None),
              ("1-1:1.8.0", "00043802", "kWh"), ("1-1:1.8.0*30", "00042781", None),
              ("1-1:C.3.1", "___-----", None), ("1-1:C.4.0", "60C00183", None), ("1-1:0.2.1", "005", None)],
        index={"1-1:1.6.1": 12, "1-1:1.8.0": 76, "1-1:C.3.1": 268},
        groups={"1-1:1.6.1": ["07.98", "2411061415"]}),
    "metcom_mcs_1": dict(
        ident=None, bcc="absent", count=47,
        first="F.F", last="0.2.0",
        sets=[("0.0.0", "10067967", None), ("1.6.1", "0.50262", "kW"), ("5.8.0", "00049.1785", "kvarh"),
              ("0.3.3", "3000", None)],
        duplicates={"0.2.0": ["01.01.28", "02.02.13", "2.2.8"]},
        groups={"1.6.1": ["0.50262", "2211120730"]}),
    "metcom_mcs_ff_parity_1": dict(
        ident=None, bcc="absent", count=1, first="F.F", last="F.F", sets=[("F.F", "00000000", None)]),
    "metcom_mcs_p01_1": dict(
        ident=None, bcc="absent", count=1, first="P.01", last="P.01",
        sets=[("P.01", "1220401010000", None)], group_count={"P.01": 40}),
    "siemens_2wr5_1": dict(
        ident="/SIEC2WR5", bcc=(0x6F, 0x58), count=50,
        first="6.8", last="0.0",
        sets=[("6.8", "0029.055", "MWh"), ("F", "0", None), ("6.35", "60", "m"), ("6.33", "001.476", "m3ph"),
              ("9.4", "088*C&082*C", None), ("9.22", "R", None), ("6.8.1", "", None),
              ("9.36", "2017-01-18&01:36:47", None), ("9.1", "0&1&0&-&CV&3&2.14", None), ("9.2", "&&", None),
              ("0.0", "00010213", None)]),
}

# The sidecar of landisgyr_zmd120_1 copies vzlogger's readings, which carry no unit at all;
# the file itself says '*kWh' for these registers, so only their values are taken from it.
SIDECAR_UNIT_FROM_LIBRARY = {"landisgyr_zmd120_1"}


def _id(path: Path) -> str:
    return path.stem


def _parse_ok(path: Path) -> Readout:
    """Parse as a careful reader would: with the BCC check unless the file's BCC is known bad."""
    hand = HAND[path.stem]
    return parse_readout(path.read_bytes(), use_checksum=not isinstance(hand["bcc"], tuple))


def _first(readout: Readout, code: str):
    for ds in readout.datasets:
        if ds.code == code:
            return ds
    raise AssertionError(f"no data set {code!r}")


def test_every_corpus_file_has_a_hand_table_entry(corpus_dir):
    stems = {p.stem for p in FILES}
    assert stems == set(HAND), "add the new corpus file to HAND (read it by hand first)"


@pytest.mark.parametrize("path", FILES, ids=_id)
def test_hand_derived_facts(path: Path):
    hand = HAND[path.stem]
    r = _parse_ok(path)
    assert len(r.datasets) == hand["count"]
    assert r.datasets[0].code == hand["first"]
    assert r.datasets[-1].code == hand["last"]
    ident = r.identification.raw if r.identification is not None else None
    assert ident == hand["ident"]
    if not isinstance(hand["bcc"], tuple):
        assert r.bcc == hand["bcc"]
    for code, value, unit in hand["sets"]:
        ds = _first(r, code)
        assert (ds.values[0].value, ds.values[0].unit) == (value, unit), code
    for code, index in hand.get("index", {}).items():
        assert r.datasets[index].code == code
    for code, groups in hand.get("groups", {}).items():
        assert [v.value for v in _first(r, code).values] == groups
    for code, n in hand.get("group_count", {}).items():
        assert len(_first(r, code).values) == n
    for code, values in hand.get("duplicates", {}).items():
        assert [ds.values[0].value for ds in r.datasets if ds.code == code] == values
    if "empty_sets" in hand:
        assert sum(1 for ds in r.datasets if ds.values[0].value == "") == hand["empty_sets"]
    for code, number in hand.get("numbers", {}).items():
        assert to_number(_first(r, code).values[0].value) == number


@pytest.mark.parametrize("path", FILES, ids=_id)
def test_sidecar_expected(path: Path):
    sidecar = load_json(path.with_suffix(".json"))
    expected = sidecar.get("expected")
    if not expected:
        # the source asserts nothing: the hand table must then say enough about the file
        hand = HAND[path.stem]
        assert len(hand["sets"]) >= 3 or hand["count"] <= 2
        return
    r = _parse_ok(path)
    for entry in expected:
        says = entry.get("source_says", "")
        if entry["obis"] == "*":
            count = int(re.findall(r"\d+", says)[-1])
            assert len(r.datasets) == count, says
            continue
        ds = _first(r, entry["obis"])
        assert len(ds.values) == len(entry["values"])
        for got, want in zip(ds.values, entry["values"]):
            if isinstance(want["value"], (int, float)):
                assert to_number(got.value) == Decimal(repr(want["value"])), (entry["obis"], got)
            else:
                assert got.value == want["value"]
            if path.stem not in SIDECAR_UNIT_FROM_LIBRARY:
                assert (got.unit or None) == (want["unit"] or None), (entry["obis"], got)
        position = re.search(r"rds\[(\d+)\]", says)
        if position:  # vzlogger's reading index = position in the readout
            assert r.datasets[int(position.group(1))].code == entry["obis"]


@pytest.mark.parametrize("path", FILES, ids=_id)
def test_checksum_policy(path: Path):
    """Bad BCC: rejected with the check on (message names both values), parsed with it off."""
    hand = HAND[path.stem]
    sidecar = load_json(path.with_suffix(".json"))
    raw = path.read_bytes()
    if isinstance(hand["bcc"], tuple):
        assert sidecar["framing"]["bcc_ok"] is False
        expected, got = hand["bcc"]
        with pytest.raises(ChecksumError) as info:
            parse_readout(raw, use_checksum=True)
        assert (info.value.expected, info.value.got) == (expected, got)
        assert f"expected 0x{expected:02x}, got 0x{got:02x}" in str(info.value)
        assert "noisy line or wrong character format" in str(info.value)
        off = parse_readout(raw, use_checksum=False)
        assert off.bcc == "bad"
    else:
        assert sidecar["framing"]["bcc_ok"] in (True, None)
        assert parse_readout(raw, use_checksum=True).bcc == hand["bcc"]
        if sidecar["framing"]["bcc_ok"]:
            assert hand["bcc"] == "ok"


@pytest.mark.parametrize("path", FILES, ids=_id)
def test_json_and_meter_data(path: Path):
    r = _parse_ok(path)
    doc = r.to_json()
    # the documented keys plus the one reading form (jsonform)
    assert set(doc) == {"identification", "manufacturer", "bcc", "crc", "checksum", "datasets",
                        "meter_id", "readings", "skipped"}
    assert doc["skipped"] == list(r.skipped)
    assert [d["code"] for d in doc["datasets"]] == [ds.code for ds in r.datasets]
    data = r.to_meter_data(received=1.0)
    # every real value through JSON and back: exactly the reading's value (numbers stay numbers)
    shown = json.loads(json.dumps(doc["readings"]))
    assert [s["code"] for s in shown] == [x.code for x in data.readings]
    for s, reading in zip(shown, data.readings):
        if isinstance(reading.value, Decimal):
            assert not isinstance(s["value"], str) or len(reading.value.as_tuple().digits) > 15
            assert Decimal(repr(s["value"]) if isinstance(s["value"], float) else s["value"]) == reading.value
        else:
            assert s["value"] == reading.value
    assert data.kind == "readout" and data.received == 1.0 and len(data.readings) == len(r.datasets)
    for reading, ds in zip(data.readings, r.datasets):
        assert reading.raw == ds.values[0].value
        if ds.values[0].value.strip() == "":
            assert reading.value == "" and reading.numeric() is None  # never a fake 0
