"""Every real SML capture through ``decode --file --json``: every expected value (raw, physical,
scaler, unit, status, type), damaged transmissions dropped and counted, the Holley KERMIT quirk,
the DZG power-sign quirk and the reduced data set recognised."""
from __future__ import annotations

import json
from decimal import Decimal

import pytest

from dlms_protocol.cli import main
from dlms_protocol.obis import Obis
from dlms_protocol.simulator.sml import encode_sml, entry, signed, unsigned
from dlms_protocol.sml.decoder import SmlDecoder, decode_all, parse_quirks
from helpers import corpus_files, load_json

SML = corpus_files("sml", ".json")


def run_decode(capsys, path) -> tuple:
    # (the sidecars hold smllib's decode, the standard's values: the DZG sign correction, on by
    # default for the serial numbers DZG named, is switched off here and tested on its own)
    code = main(["decode", "--file", str(path), "--json", "--sml-quirks", "dzg_power_sign=off"])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines() if line.strip()], err


def good_frames(case: dict) -> list:
    return [f["index"] for f in case["frames"] if f["status"] in ("ok", "ok_with_kermit_crc")]


def check_entry(expected: dict, got: dict) -> None:
    assert Obis.parse(got["obis"]) == Obis.parse(expected["obis"])
    assert got["sml_type"] == expected["type"]
    if isinstance(expected["value"], int):
        assert got["raw"] == expected["value"]
        assert Decimal(str(got["value"])) == Decimal(str(expected["physical"]))
    else:  # octet string: hex as sent, text when printable
        assert got["raw"].lower() == expected["value"]
        if expected.get("text"):
            assert got["value"] == expected["text"]
    assert got["scaler"] == expected["scaler"]
    assert got["unit"] == expected["unit"]
    assert got.get("status") == expected["status"]
    assert ("val_time" in got) == ("val_time" in expected)


@pytest.mark.parametrize("sidecar", SML, ids=[p.stem for p in SML])
def test_decode_file_gives_every_expected_value(capsys, sidecar) -> None:
    case = load_json(sidecar)
    code, lines, err = run_decode(capsys, sidecar.with_suffix(".bin"))
    good = good_frames(case)
    assert len(lines) == len(good)
    damaged = [f for f in case["frames"] if f["status"] in ("crc_error", "incomplete")]
    cut = bool(good) and case["frames"][-1]["status"] == "incomplete"  # a dump that ends mid-transmission
    if cut:  # after verified transmissions that is a note, as the push decode says it
        damaged.remove(case["frames"][-1])
        assert "note: the capture ended inside a transmission" in err
    assert code == (1 if damaged else 0)
    if damaged:
        assert f"error: {len(damaged)} SML transmission(s) lost" in err
    for frame_index, msg in zip(good, lines):
        expected = [e for e in case["expected"] if e["frame"] == frame_index]
        assert len(msg["readings"]) == len(expected)
        for e, got in zip(expected, msg["readings"]):
            check_entry(e, got)
        assert msg["wrapper"] == "sml" and msg["protocol"] == "sml"
        ids = {f.get("server_id") for f in case["frames"] if f["index"] == frame_index}
        if case["server_id"].strip("0"):
            assert msg["meter_id"] in (bytes.fromhex(case["server_id"]).hex().upper(),
                                       bytes.fromhex(case["server_id"]).decode("latin-1")), ids


def test_corpus_totals() -> None:
    """The README's figures: 18 captures, 299 expected values, every one reached by a test."""
    if not SML:
        pytest.skip("corpus absent")
    total = sum(len(load_json(p)["expected"]) for p in SML)
    assert (len(SML), total) == (18, 299)


def test_damaged_transmissions_give_nothing_and_are_counted() -> None:
    path = next(p for p in SML if p.stem == "easymeter_q3a_a1064_dump")
    case = load_json(path)
    decoder = SmlDecoder()
    telegrams = decoder.feed(path.with_suffix(".bin").read_bytes())
    decoder.finish()
    counters = decoder.stats.snapshot()["counters"]
    assert len(telegrams) == 4
    assert counters["checksum_errors"] + decoder.framer.cut == 3  # the three crc_error frames
    assert counters["framing_errors"] + counters["checksum_errors"] == 4  # ... plus the incomplete one
    good_raw = [path.with_suffix(".bin").read_bytes()[f["offset"]:f["offset"] + f["length"]]
                for f in case["frames"] if f["status"] == "ok"]
    assert [t.raw for t in telegrams] == good_raw


def test_kermit_capture_decodes_with_its_quirk_detected() -> None:
    path = next(p for p in SML if p.stem == "holley_dtz541_kermit_crc")
    data = path.with_suffix(".bin").read_bytes()
    telegrams, errors = decode_all(data)
    assert not errors and len(telegrams) == 1
    tel = telegrams[0]
    assert tel.crc == "kermit" and tel.quirks == ("kermit_crc",) and tel.manufacturer == "HLY"
    assert any("KERMIT" in n for n in tel.notes)
    # off: the same bytes are a CRC error, counted, with the option named in the fix
    telegrams, errors = decode_all(data, quirks=parse_quirks("kermit_crc=off"))
    assert telegrams == [] and len(errors) == 1 and "kermit_crc=on" in str(errors[0])


def test_dzg_power_sign_corrected_by_default_and_kept_on_request() -> None:
    """The serial numbers DZG named are corrected without a setting (libsml's and vzlogger's
    default): a wrong sign by default is a wrong value; ``off`` keeps the standard's value."""
    path = next(p for p in SML if p.stem == "dzg_dvs74122_power_sign_bug")
    data = path.with_suffix(".bin").read_bytes()
    (tel,), _ = decode_all(data, quirks=parse_quirks("dzg_power_sign=off"))
    power = tel.readings[[r.obis.short() for r in tel.readings].index("16.7.0")]
    assert power.raw == -29912 and power.value == Decimal("-299.12")  # the spec value, as sent
    assert tel.quirks == ("dzg_power_sign (detected, not applied)",)
    for quirks in (parse_quirks(""), parse_quirks("dzg_power_sign=auto"), None):
        (tel,), _ = decode_all(data, **({} if quirks is None else {"quirks": quirks}))
        power = tel.readings[[r.obis.short() for r in tel.readings].index("16.7.0")]
        assert power.raw == 35624 and power.value == Decimal("356.24")  # the value the submitter states
        assert tel.quirks == ("dzg_power_sign (applied)",)
    # a later DZG firmware (serial >= 60000000) sends a genuine negative power: never touched
    path = next(p for p in SML if p.stem == "dzg_dvs74202_negative_power")
    telegrams, _ = decode_all(path.with_suffix(".bin").read_bytes())
    powers = [r.value for t in telegrams for r in t.readings if r.obis.short() == "16.7.0"]
    assert Decimal("-105.50") in powers and all(t.quirks == () for t in telegrams)


def _dzg(serial: int, power: int, width: int = 2) -> bytes:
    """A DZG transmission whose L1 power (36.7.0, W, scaler -2) is sent as a signed integer."""
    server = b"\x0a\x01DZG" + serial.to_bytes(4, "big")
    return encode_sml(server, [entry("0100010800ff", unsigned(123456789, 4), 30, -1),
                               entry("0100240700ff", signed(power, width), 27, -2)])


def _l1(data: bytes, quirks: str = "") -> tuple:
    (tel,), errors = decode_all(data, quirks=parse_quirks(quirks))
    assert not errors
    power = next(r for r in tel.readings if r.obis.short() == "36.7.0")
    return power.value, tel.quirks, tel.notes


def test_dzg_power_sign_covers_the_phase_powers_and_says_when_a_meter_may_have_it() -> None:
    """vzlogger issue 544: a DZG with serial 50071463 sends 507 W on L1 as int16 0xC60C (-148.36 W).
    The firmware bug hits the phases' 36/56/76.7.0 as 16.7.0; the serial lies outside the ranges DZG
    named and below the fixed firmware (60000000), so the value stays as sent and the log says how to decide."""
    bug = _dzg(50071463, 0xC60C - 0x10000)
    value, quirks, notes = _l1(bug)
    assert value == Decimal("-148.36") and quirks == ("dzg_power_sign (suspected)",)
    assert "dzg_power_sign=on" in notes[0] and "display" in notes[0]
    assert _l1(bug, "dzg_power_sign=on")[0] == Decimal("507.00")
    assert "dzg_power_sign=on (serial 50071463, outside the ranges)" in _l1(bug, "dzg_power_sign=on")[2][0]
    assert _l1(bug, "dzg_power_sign=auto")[0] == Decimal("-148.36")  # (not a range DZG named)
    in_range = _dzg(42082910, 0xC60C - 0x10000)
    assert _l1(in_range, "dzg_power_sign=auto")[:2] == (Decimal("507.00"), ("dzg_power_sign (applied)",))
    assert _l1(_dzg(50071463, -14836, width=4))[1:] == ((), ())  # a real negative comes as 4 bytes: no note
    assert _l1(_dzg(60694611, -10550))[1:] == ((), ())  # the fixed firmware's real negative: no note
    assert _l1(_dzg(50071463, 14836))[1:] == ((), ())


@pytest.mark.parametrize("stem,reduced", [("iskra_mt631_d1a52_without_pin", True),
                                          ("iskra_mt631_d2a51_with_pin", False),
                                          ("ebz_dd3_dd32r06dta", True),
                                          ("holley_dtz541_bdba_with_pin", False)])
def test_reduced_data_set_recognised(stem, reduced) -> None:
    path = next(p for p in SML if p.stem == stem)
    telegrams, _ = decode_all(path.with_suffix(".bin").read_bytes())
    assert telegrams and all(t.reduced is reduced for t in telegrams)
    if reduced:
        assert any("PIN" in n and "InF" in n for n in telegrams[0].notes)


def test_every_expected_value_is_compared() -> None:
    """The parametrised test above compares every expected value of each verified frame with what
    decode gives; here, without depending on test order or on which worker ran those cases: that
    is all of the corpus's 299 values (none sits in a frame that test would not reach)."""
    if not SML:
        pytest.skip("corpus absent")
    compared = 0
    for sidecar in SML:
        case = load_json(sidecar)
        good = set(good_frames(case))
        compared += sum(1 for e in case["expected"] if e["frame"] in good)
    assert compared == 299


def test_message_crc_is_checked_besides_the_transport_crc() -> None:
    """A damaged message whose transport CRC was made to match (a collision) is still refused."""
    from dlms_protocol.simulator.sml import SmlSimulator
    from dlms_protocol.sml.framing import crc16_x25

    good = SmlSimulator(seed=8).build()
    bad = bytearray(good)
    pos = good.index(bytes.fromhex("0100010800ff")) + 20  # inside the 1.8.0 entry's value
    bad[pos] ^= 0x10
    bad[-2:] = crc16_x25(bytes(bad[:-2])).to_bytes(2, "little")  # transport CRC fits again
    telegrams, errors = decode_all(bytes(bad))
    assert telegrams == [] and len(errors) == 1 and "SML message CRC (message 2 of 3)" in str(errors[0])
    telegrams, errors = decode_all(bytes(bad), quirks=parse_quirks("no_message_crc=on"))
    assert len(telegrams) == 1 and not errors  # the quirk switch really switches it off
    # and the telegram says that a message went unchecked (its JSON, the plugin's notes)
    assert telegrams[0].quirks == ("no_message_crc (applied)",)
    assert "message(s) 2 of 3 does not match and was not checked" in telegrams[0].notes[0]
    (clean,), _ = decode_all(good, quirks=parse_quirks("no_message_crc=on"))
    assert clean.quirks == () and clean.notes == ()  # all CRCs matched: nothing to say


def test_decode_of_a_capture_cut_mid_transmission(tmp_path, capsys) -> None:
    """A dump cut out of a running line: what is cut at its end is a note after verified
    transmissions (exit 0, as the push decode does), an error when nothing verified came before it,
    and damage in between stays an error."""
    from dlms_protocol.cli import main
    from dlms_protocol.simulator.sml import SmlSimulator

    sim = SmlSimulator(seed=3)
    one, two = sim.build(), sim.build()
    path = tmp_path / "cut.bin"
    path.write_bytes(one[7:] + two + one[:len(one) // 2])  # begins and ends inside a transmission
    assert main(["decode", "--file", str(path)]) == 0
    out = capsys.readouterr()
    assert out.out.count("1-0:1.8.0") == 1 and "note: the capture ended inside a transmission" in out.err
    path.write_bytes(one[:len(one) // 2])
    assert main(["decode", "--file", str(path)]) == 1
    assert "error: 1 SML transmission(s) lost" in capsys.readouterr().err
    damaged = bytearray(two)
    damaged[len(two) // 2] ^= 0x01
    path.write_bytes(one + bytes(damaged) + two)
    assert main(["decode", "--file", str(path)]) == 1
    assert "CRC" in capsys.readouterr().err


def test_decode_cli_takes_sml_quirks(tmp_path, capsys) -> None:
    """The CLI can follow the error's advice: --sml-quirks no_message_crc=on (an eBZ meter whose
    message CRCs never verify, SmlLib issue 8); an unknown quirk is a usage error."""
    from dlms_protocol.cli import main
    from dlms_protocol.simulator.sml import SmlSimulator
    from dlms_protocol.sml.framing import crc16_x25

    good = SmlSimulator(seed=8).build()
    bad = bytearray(good)
    bad[good.index(bytes.fromhex("0100010800ff")) + 20] ^= 0x10
    bad[-2:] = crc16_x25(bytes(bad[:-2])).to_bytes(2, "little")
    path = tmp_path / "bad.bin"
    path.write_bytes(bytes(bad))
    assert main(["decode", "--file", str(path)]) == 1
    assert "--sml-quirks no_message_crc=on" in capsys.readouterr().err
    assert main(["decode", "--file", str(path), "--sml-quirks", "no_message_crc=on"]) == 0
    assert "1-0:1.8.0" in capsys.readouterr().out
    assert main(["decode", "--file", str(path), "--sml-quirks", "bogus"]) == 1
    assert "unknown SML quirk 'bogus'" in capsys.readouterr().err
