"""Czech HAN pushes (Sagemcom XT211 on the ČEZ/EG.D RS485 interface): every object a structure
{untagged attribute descriptor, value}, the whole a bare APDU without date-time.

The frames here are built by the simulator's ``han_notification`` in the layout of a real XT211 push
(esphome-libs/dlms_parser tests/dumps/raw_sagecom_xt211.log), with values of our own; the
capture itself is not copied. What must hold: the values come out with their class and
attribute, the built-in profile scales exactly that list, any other list keeps its registers
unscaled, auto framing finds the frames in a stream, and nothing else decodes differently.
"""
from __future__ import annotations

import random
from decimal import Decimal
from typing import Any, List, Optional, Sequence, Tuple

from hypothesis import given, settings, strategies as st

from dlms_protocol.config import ListenerConfig
from dlms_protocol.dlms.apdu import Structure, decode_apdu, encode_notification
from dlms_protocol.dlms.decoder import PushDecoder
from dlms_protocol.dlms.wrapper import apdu_extent, is_complete_apdu
from dlms_protocol.errors import DecodeError
from dlms_protocol.pipeline import enrich
from dlms_protocol.simulator.push import han_notification, logical_name
from dlms_protocol.victron.mapping import Mapper

#: (class-id, logical name, attribute, DLMS type) of each object of the XT211's list, in its order
XT211: List[Tuple[int, str, int, str]] = [
    (1, "0-0:96.1.1.255", 2, "octet-string"),
    (70, "0-0:96.3.10.255", 3, "enum"),
    (71, "0-0:17.0.0.255", 3, "double-long-unsigned"),
    (70, "0-1:96.3.10.255", 3, "enum"),
    (70, "0-2:96.3.10.255", 3, "enum"),
    (70, "0-3:96.3.10.255", 3, "enum"),
    (70, "0-4:96.3.10.255", 3, "enum"),
    (1, "0-0:96.14.0.255", 2, "octet-string"),
] + [(3, code, 2, "double-long-unsigned") for code in (
    "1-0:1.7.0.255", "1-0:21.7.0.255", "1-0:41.7.0.255", "1-0:61.7.0.255",
    "1-0:2.7.0.255", "1-0:22.7.0.255", "1-0:42.7.0.255", "1-0:62.7.0.255",
    "1-0:1.8.0.255", "1-0:1.8.1.255", "1-0:1.8.2.255", "1-0:1.8.3.255", "1-0:1.8.4.255", "1-0:2.8.0.255")]


def han_push(values: Sequence[Any], objects: Sequence[Tuple[int, str, int, str]] = XT211,
             invoke_id: int = 0x8000F1D5) -> bytes:
    """A bare data-notification as the XT211 sends it: {enum 1, array of entries}, no date-time."""
    return han_notification(objects, values, invoke_id)


def xt211_values(power: Tuple[int, int, int], export: Tuple[int, int, int], t1: int, t2: int) -> List[Any]:
    return ([b"5100000042", 1, 0, 1, 0, 0, 0, b"T1", sum(power)] + list(power) + [sum(export)] + list(export)
            + [t1 + t2, t1, t2, 0, 0, 7])


def decoded(data: bytes, chunk: Optional[int] = None) -> List[Any]:
    dec = PushDecoder(ListenerConfig(port="-"))
    out = []
    step = chunk or len(data)
    for i in range(0, len(data), step):
        out += dec.feed(data[i:i + step])
    return out + dec.finish()


def values_of(msg: Any) -> dict:
    return {r.code: (r.value, r.unit) for r in msg.readings}


def test_layout_is_that_of_the_real_capture() -> None:
    """The first 32 bytes of our frame are the real XT211 push's but for the meter number."""
    frame = han_push(xt211_values((198, 1703, 54), (0, 0, 0), 948933, 3964860))
    real_start = bytes.fromhex("0F8000F1D500020216010116020200010000600101FF02090A")
    assert frame.startswith(real_start)
    assert frame[25:35] == b"5100000042"


def test_xt211_list_decodes_scaled_with_class_and_attribute() -> None:
    frame = han_push(xt211_values((198, 1703, 54), (0, 12, 0), 948933, 3964860))
    (msg,) = decoded(frame)
    assert msg.profile == "cz-xt211" and msg.wrapper == "apdu" and not msg.unknown_layout
    got = values_of(msg)
    assert got["1-0:1.7.0.255"] == (Decimal(1955), "W")
    assert got["1-0:41.7.0.255"] == (Decimal(1703), "W")
    assert got["1-0:42.7.0.255"] == (Decimal(12), "W")
    assert got["1-0:1.8.0.255"] == (Decimal(4913793), "Wh")
    assert got["1-0:1.8.2.255"] == (Decimal(3964860), "Wh")
    assert got["0-0:96.14.0.255"] == ("T1", None)
    assert got["0-1:96.3.10.255"] == (1, None)
    assert msg.meter_id == "5100000042"
    by_code = {r.code: dict(r.details) for r in msg.readings}
    assert by_code["0-0:96.3.10.255"]["class_id"] == "70" and by_code["0-0:96.3.10.255"]["attribute"] == "3"
    assert by_code["1-0:1.7.0.255"]["class_id"] == "3" and "attribute" not in by_code["1-0:1.7.0.255"]
    assert [r.code for r in msg.readings][0] == "index 0"  # the leading enum: shown, never mapped


def test_consecutive_pushes_each_have_their_own_values() -> None:
    """A decoder learns templates from the frames it decoded; this layout must never be read
    through one (its descriptors are no A-XDR), so every push gives its own numbers."""
    rng = random.Random(7)
    pushes = [xt211_values((rng.randrange(5000), rng.randrange(5000), rng.randrange(5000)), (0, 0, 0),
                           1000 + i, 2000 + 2 * i) for i in range(12)]
    msgs = decoded(b"".join(han_push(v, invoke_id=0x80000000 + i) for i, v in enumerate(pushes)))
    assert len(msgs) == len(pushes)
    for msg, v in zip(msgs, pushes):
        got = values_of(msg)
        assert got["1-0:21.7.0.255"][0] == v[9] and got["1-0:61.7.0.255"][0] == v[11]
        assert got["1-0:1.8.1.255"][0] == v[17]


def test_other_czech_list_keeps_registers_unscaled() -> None:
    """A list the profile does not name: its registers carry no scaler, so no value is guessed."""
    objects = [(1, "0-0:96.1.1.255", 2, "octet-string"), (3, "1-0:1.8.0.255", 2, "double-long-unsigned"),
               (3, "1-0:1.7.0.255", 2, "double-long-unsigned")]
    (msg,) = decoded(han_push([b"ZPA0001", 4913794, 1956], objects))
    assert msg.profile is None
    got = {r.code: r for r in msg.readings}
    assert got["1-0:1.8.0.255"].value is None and got["1-0:1.8.0.255"].raw == 4913794
    assert got["0-0:96.1.1.255"].value == "ZPA0001"


def test_register_scaler_from_its_attribute_3() -> None:
    """As in a push object list: {3, ln, 3} = {scaler, unit} beside {3, ln, 2} scales that value
    (the XT211's list with the energy's attribute 3 added: no longer the profile's list)."""
    su = Structure([-2, 30])  # 10^-2, Wh
    su.types = ("integer", "enum")
    at = [code for _, code, _, _ in XT211].index("1-0:1.8.0.255")
    objects = XT211[:at] + [(3, "1-0:1.8.0.255", 3, "structure")] + XT211[at:]
    values = xt211_values((1, 2, 3), (0, 0, 0), 100000, 23456)
    (msg,) = decoded(han_push(values[:at] + [su] + values[at:], objects))
    assert msg.profile is None
    got = {r.code: r for r in msg.readings}
    assert got["1-0:1.8.0.255"].value == Decimal("1234.56") and got["1-0:1.8.0.255"].unit == "Wh"
    assert got["1-0:1.7.0.255"].value is None and got["1-0:1.7.0.255"].raw == 6  # no scaler: none guessed
    assert len(msg.readings) == len(XT211) + 1  # the enum and the values: the scaler is no reading


def test_a_short_list_decodes_as_a_whole_apdu() -> None:
    """Two entries whose start also reads as complete A-XDR: given as one APDU (decode_apdu), the
    bytes left over decide for the descriptors. (In a stream, where an APDU's end is not known,
    such a short list is taken as the shorter A-XDR frame and counted as an unknown layout: no
    value of it is mapped. The Czech HAN lists are 22 and more entries, which never read so.)"""
    su = Structure([-2, 30])
    su.types = ("integer", "enum")
    objects = [(3, "1-0:1.8.0.255", 3, "structure"), (3, "1-0:1.8.0.255", 2, "double-long-unsigned")]
    note = decode_apdu(han_push([su, 123456], objects))
    assert note.described
    assert [list(e[0]) for e in note.body[1]] == [[3, logical_name("1-0:1.8.0.255"), 3],
                                                  [3, logical_name("1-0:1.8.0.255"), 2]]
    assert note.body[1][1][1] == 123456


def test_found_in_a_stream_in_any_chunking() -> None:
    frames = [han_push(xt211_values((100 + i, 200, 300), (0, 0, 0), 10 + i, 20), invoke_id=0x80000100 + i)
              for i in range(4)]
    data = b"".join(frames)
    for chunk in (1, 7, 64, None):
        msgs = decoded(data, chunk)
        assert [values_of(m)["1-0:21.7.0.255"][0] for m in msgs] == [100, 101, 102, 103], chunk


def test_extent_and_completeness() -> None:
    frame = han_push(xt211_values((1, 2, 3), (0, 0, 0), 4, 5))
    assert is_complete_apdu(frame)
    assert apdu_extent(frame + b"\x0f\x00", 0) == len(frame)
    for cut in (20, 100, len(frame) - 1):
        assert apdu_extent(frame[:cut], 0) is None  # wait for the rest
    assert not is_complete_apdu(frame + b"\x00")


def test_victron_gets_phase_power_from_import_and_export() -> None:
    (msg,) = decoded(han_push(xt211_values((198, 1703, 0), (0, 0, 54), 948933, 3964860)))
    mapped = Mapper().map(enrich(msg.to_meter_data()))
    assert mapped.values["/Ac/L1/Power"] == 198.0
    assert mapped.values["/Ac/L3/Power"] == -54.0
    assert mapped.values["/Ac/Power"] == 1847.0  # 1901 W import - 54 W export
    assert mapped.values["/Ac/Energy/Forward"] == 4913.793


def test_a_descriptor_needs_a_class_and_an_attribute() -> None:
    """Class 0 or attribute 0 is no descriptor: the frame stays an error, with A-XDR's message."""
    good = han_push(xt211_values((1, 2, 3), (0, 0, 0), 4, 5))
    at = good.index(bytes.fromhex("02020003"))
    for offset, bad in ((3, 0x00), (10, 0x00), (10, 0x80)):
        broken = bytearray(good)
        broken[at + offset] = bad
        try:
            decode_apdu(bytes(broken))
        except DecodeError:
            continue
        raise AssertionError(f"byte {offset} = {bad:#x} was accepted")


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_damaged_frames_give_an_error_or_the_same_kind_of_frame(data: st.DataObject) -> None:
    """Any byte changed, cut or added: a DecodeError, or a notification; never anything else."""
    frame = bytearray(han_push(xt211_values((198, 1703, 54), (0, 0, 0), 948933, 3964860)))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(frame) - 1))
        kind = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if kind == "flip":
            frame[at] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "cut":
            del frame[at]
        else:
            frame.insert(at, data.draw(st.integers(0, 255)))
    try:
        decode_apdu(bytes(frame))
    except DecodeError:
        pass
    msgs = decoded(bytes(frame))  # the stream decoder reports, never raises
    assert len(msgs) <= 1


def test_dump_shows_the_entries_and_a_template_scales_another_list(tmp_path: Any, capsys: Any) -> None:
    """The way to another Czech list: ``dump`` shows each entry as an element of an obis frame
    and writes a template; filled in, it scales that list's registers."""
    import json

    from dlms_protocol.cli import main

    objects = [(1, "0-0:96.1.1.255", 2, "octet-string"), (3, "1-0:1.8.0.255", 2, "double-long-unsigned")] + \
        [(3, f"1-0:{c}.7.0.255", 2, "double-long-unsigned") for c in (1, 21, 41, 61, 2, 22, 42, 62)]
    frame = han_push([b"ZPA0001", 4913794, 1956, 198, 1703, 54, 0, 0, 0, 0], objects)
    out_file = tmp_path / "template.json"
    assert main(["dump", "--hex", frame.hex(), "--template", str(out_file)]) == 0
    out = capsys.readouterr().out
    assert "11 element(s), shape obis, profile none" in out
    assert "[  2] structure" in out and "-> 1-0:1.8.0.255 = ?" in out
    template = json.loads(out_file.read_text(encoding="utf-8"))
    assert template["match"]["shape"] == "obis"
    fields = {f["obis"]: f for f in template["fields"]}
    assert fields["1-0:1.8.0.255"]["scaler"] is None and fields["1-0:1.8.0.255"]["example"] == 4913794
    for f in template["fields"]:
        f["scaler"], f["unit"] = 0, "Wh" if ".8." in f["obis"] else "W"
    template["name"], template["description"], template["source"] = "my-han", "test", "test"
    (tmp_path / "filled.json").write_text(json.dumps(template), encoding="utf-8")
    assert main(["dump", "--hex", frame.hex(), "--profile", str(tmp_path / "filled.json")]) == 0
    out = capsys.readouterr().out
    assert "-> 1-0:1.8.0.255 = 4913794 Wh" in out and "-> 1-0:41.7.0.255 = 1703 W" in out


# ------------------------------------------------------------------ ZPA AM375 (PRE Distribuce)
def zpa_push(serial: bytes, clock: bytes, powers: Sequence[int], energies: Sequence[int], datasheet: bool = False
             ) -> bytes:
    """The ZPA AM375's Czech HAN list: the same objects as the XT211's, as bare values (no OBIS
    codes), no date-time header. The real meter sends energies as long64-unsigned; PRE's datasheet
    pads the texts with NULs to 17 bytes, sends the limiter as long64-unsigned and the energies as
    double-long-unsigned (jktjkt/esphome-libs-dlms_parser tests/expected/raw_zpa_am375_flat_*)."""
    pad = (lambda t: t + bytes(17 - len(t))) if datasheet else (lambda t: t)
    energy = "double-long-unsigned" if datasheet else "long64-unsigned"
    values: List[Any] = [pad(b"ZPA3HAN00200"), clock, pad(serial), 1, 10000, 0, 0, 0, 1, b"T1"]
    values += list(powers) + list(energies)
    types = (["octet-string"] * 3 + ["enum", "long64-unsigned" if datasheet else "double-long-unsigned"]
             + ["enum"] * 4 + ["octet-string"] + ["double-long-unsigned"] * 8 + [energy] * 4)
    body = Structure(values)
    body.types = tuple(types)
    return encode_notification(body, None, invoke_id=3)


#: 2026-09-24 17:46:01, deviation +120 (the UTC offset, not COSEM's -120), summer time (0x80)
ZPA_CLOCK = bytes.fromhex("07EA0918041 12E0100007880".replace(" ", ""))


def test_zpa_lists_decode_with_the_clock_in_local_time() -> None:
    from datetime import datetime, timedelta, timezone

    powers = [613, 82, 50, 481, 0, 0, 0, 9]
    for datasheet in (False, True):
        (msg,) = decoded(zpa_push(b"G035499", ZPA_CLOCK, powers, [4810227, 4802251, 7976, 66806], datasheet))
        assert msg.profile == "cz-zpa-am375", datasheet
        got = values_of(msg)
        assert got["0-0:1.0.0.255"][0] == datetime(2026, 9, 24, 17, 46, 1, tzinfo=timezone(timedelta(hours=2)))
        assert got["0-0:96.1.1.255"] == ("G035499", None) and msg.meter_id == "G035499"  # no NUL padding
        assert got["0-0:96.1.4.255"][0] == "ZPA3HAN00200"
        assert got["1-0:61.7.0.255"] == (Decimal(481), "W") and got["1-0:62.7.0.255"] == (Decimal(9), "W")
        assert got["1-0:1.8.0.255"] == (Decimal(4810227), "Wh") and got["1-0:2.8.0.255"] == (Decimal(66806), "Wh")
        assert got["0-0:17.0.0.255"] == (Decimal(10000), None) and got["0-4:96.3.10.255"] == (1, None)


def test_zpa_pushes_found_in_a_stream() -> None:
    frames = [zpa_push(b"G035499", ZPA_CLOCK, [100 + i, 50, 50, i, 0, 0, 0, 0], [5000 + i, 5000, 0, 7])
              for i in range(4)]
    for chunk in (1, 13, None):
        msgs = decoded(b"".join(frames), chunk)
        assert [values_of(m)["1-0:1.7.0.255"][0] for m in msgs] == [100, 101, 102, 103], chunk


def test_deviation_option_is_only_for_date_times() -> None:
    import pytest

    from dlms_protocol.dlms.profiles import parse_profile
    from dlms_protocol.errors import ConfigurationError

    doc = {"name": "x", "match": {"shape": "positional", "elements": 1},
           "fields": [{"index": 0, "obis": "0-0:1.0.0.255", "name": "clock", "kind": "datetime",
                       "deviation": "utc_offset"}]}
    assert parse_profile(doc).fields[0].deviation == "utc_offset"
    for bad in ({"kind": "number", "scaler": 0, "deviation": "utc_offset"}, {"kind": "datetime", "deviation": "east"}):
        doc["fields"] = [dict({"index": 0, "obis": "0-0:1.0.0.255", "name": "clock"}, **bad)]
        with pytest.raises(ConfigurationError, match="deviation"):
            parse_profile(doc)


def test_utc_offset_clock_in_a_frame_that_names_its_values(tmp_path: Any) -> None:
    """``"deviation": "utc_offset"`` holds for a clock found by its code too (obis frames)."""
    import json
    from datetime import datetime, timedelta, timezone

    objects = [(8, "0-0:1.0.0.255", 2, "octet-string")] + XT211[:3]
    frame = han_push([ZPA_CLOCK, b"5100000042", 1, 0], objects)
    profile = {"name": "my-han", "match": {"shape": "obis"},
               "fields": [{"obis": "0-0:1.0.0.255", "name": "clock", "kind": "datetime", "deviation": "utc_offset"}]}
    path = tmp_path / "my-han.json"
    path.write_text(json.dumps(profile), encoding="utf-8")
    local = datetime(2026, 9, 24, 17, 46, 1)
    (standard,) = decoded(frame)  # the COSEM reading: +120 is UTC minus local time
    assert values_of(standard)["0-0:1.0.0.255"][0] == local.replace(tzinfo=timezone(timedelta(hours=-2)))
    dec = PushDecoder(ListenerConfig(port="-", profile=str(path)))
    (msg,) = dec.feed(frame) + dec.finish()
    assert msg.profile == "my-han"
    assert values_of(msg)["0-0:1.0.0.255"][0] == local.replace(tzinfo=timezone(timedelta(hours=2)))
