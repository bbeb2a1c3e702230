"""The per-frame shortcuts give exactly what the plain code gives.

Decoding a push is done thousands of times with the same layout, so a few steps are worked
out once per layout and reused: ``model.new_reading`` (Reading without the frozen dataclass's
``__init__``), the positional plan of ``payload.interpret`` (what each position of a profile
means), the candidate set of ``profiles.choose`` and the fixed text of each line of
``PushMessage.render``. Each is checked here against the plain formula it replaces, on every
push frame of the corpus and on frames of every positional profile the simulator can build.
The deframer takes a frame with the last one's header in one step (``Deframer._known_frame``):
checked against its general scan on random streams of every kind of frame, damaged ones too.
"""
from __future__ import annotations

import json
import random
import subprocess
import sys
from dataclasses import replace
from decimal import Decimal
from typing import Any, List, Optional, Tuple

import pytest
from hypothesis import example, given, settings, strategies as st

from dlms_protocol.config import ListenerConfig
from dlms_protocol.dlms.apdu import decode_apdu
from dlms_protocol.dlms.decoder import PushDecoder, PushMessage, _display, decode_bytes
from dlms_protocol.dlms.deframer import Deframer, RawApdu
from dlms_protocol.dlms.payload import _Builder, interpret
from dlms_protocol.dlms.profiles import choose, load_profiles
from dlms_protocol.dlms.template import PositionalTemplate
from dlms_protocol.model import MeterData, Reading, decimal_text, json_value, new_reading
from dlms_protocol.obis import Obis
from dlms_protocol.simulator.push import PushSimulator
from helpers import ROOT, corpus_files, load_json
from test_push_stream import AK, EK, random_bytes

PROFILES = load_profiles()
#: positional profiles the simulator builds frames for (others need markers or a family first)
SIMULATED = ["at-burgenland-e450-11", "at-wienernetze-9", "at-wienernetze-im350-10", "si-sodo-elektromaribor-live18",
             "si-sodo-reduxi-live22", "si-sodo-reduxi-live23", "si-sodo-usage12-bool", "si-sodo-usage12",
             "kaifa-no-list2-3ph", "kaifa-no-list3-3ph"]


def _corpus_messages() -> List[PushMessage]:
    out: List[PushMessage] = []
    for path in corpus_files("push", ".json"):
        frame = load_json(path)
        keys = frame.get("keys") or {}
        cfg = ListenerConfig(port="corpus", key=keys.get("block_cipher_key"))  # the EK decodes; tags are not the point
        out += decode_bytes(bytes.fromhex(frame["hex"]), cfg, strict=False)
    return out


def _simulated_messages(seed: int) -> List[PushMessage]:
    out: List[PushMessage] = []
    for name in SIMULATED:
        sim = PushSimulator(wrapper="hdlc", layout="profile", profile=name, seed=seed)
        out += decode_bytes(b"".join(sim.emit() for _ in range(3)), ListenerConfig(port="sim"))
    return out


def _reference_render(msg: PushMessage) -> List[str]:
    """The reading lines as PushMessage.render wrote them before the line parts were cached."""
    lines = []
    for r in msg.readings:
        code = r.obis.dotted() if r.obis is not None else f"#{r.index}"
        unit = f" {r.unit}" if r.unit else ""
        name = r.name or ""
        if r.value is None and r.raw is not None:
            number = isinstance(r.raw, int) and not isinstance(r.raw, bool)
            note = "raw; scaler unknown" if r.obis is not None and number else "raw"
            shown = f"{_display(r.raw)} ({note})"
        else:
            shown = _display(r.value)
        lines.append(f"  {code:<20} {shown}{unit}" + (f"  ({name})" if name else ""))
    return lines


def _reference_positional(msg: PushMessage) -> Optional[List[Reading]]:
    """The readings of a positional frame built field by field through ``_Builder.from_field``."""
    if msg.apdu[:1] == b"/" or msg.profile is None:  # a DSMR text telegram
        return None
    note = decode_apdu(msg.apdu)
    if not isinstance(note.body, list):
        return None
    profile = PROFILES[msg.profile]
    if profile.shape != "positional":
        return None
    b = _Builder(note.timestamp, profile)
    for i, (elem, type_name) in enumerate(zip(note.body, note.body.types)):  # type: ignore[attr-defined]
        fld = profile.field_at(i)
        if fld is None:
            b.unmapped(i, elem, type_name)
        else:
            b.from_field(fld, i, elem, type_name)
    return b.readings


def test_the_corpus_and_the_simulator_give_frames_to_check() -> None:
    msgs = _corpus_messages() + _simulated_messages(1)
    assert len([m for m in msgs if _reference_positional(m) is not None]) >= 30
    assert len({m.profile for m in msgs}) >= 12


@pytest.mark.parametrize("source", ["corpus", "simulated"])
def test_positional_plan_gives_the_readings_of_the_field_by_field_path(source: str) -> None:
    msgs = _corpus_messages() if source == "corpus" else _simulated_messages(7)
    checked = 0
    for msg in msgs:
        want = _reference_positional(msg)
        if want is None:
            continue
        for _ in range(2):  # the second time from the cached plan
            got = interpret(decode_apdu(msg.apdu), msg.profile, profiles=PROFILES).readings
            assert list(got) == want
            assert [repr(r) for r in got] == [repr(r) for r in want]
        checked += 1
    assert checked >= 5


@pytest.mark.parametrize("source", ["corpus", "simulated"])
def test_render_lines_equal_the_plain_formula(source: str) -> None:
    msgs = _corpus_messages() if source == "corpus" else _simulated_messages(11)
    assert msgs
    for msg in msgs:
        for _ in range(2):
            assert msg.render().split("\n")[1:] == _reference_render(msg)


def test_render_tells_layouts_apart_that_differ_only_in_unit_or_position() -> None:
    """Two messages whose readings differ in unit only must not share cached line parts."""
    code = Obis.parse("1-0:1.7.0.255")
    base = dict(wrapper="apdu", ciphered=False, tag_verified=None, timestamp=None, profile=None, apdu=b"",
                raw=b"", system_title=None)
    a = PushMessage(readings=(Reading("1-0:1.7.0.255", code, Decimal(5), "W", 5, 0, 0),), **base)  # type: ignore[arg-type]
    b = PushMessage(readings=(Reading("1-0:1.7.0.255", code, Decimal(5), "kW", 5, 0, 0),), **base)  # type: ignore[arg-type]
    c = PushMessage(readings=(Reading("index 3", None, None, None, 7, None, 3),), **base)  # type: ignore[arg-type]
    d = PushMessage(readings=(Reading("index 4", None, None, None, 7, None, 4),), **base)  # type: ignore[arg-type]
    lines = [m.render().split("\n")[1] for m in (a, b, a, c, d)]
    assert lines[0].endswith("5 W  (Active import (+A), instantaneous)") and lines[0] == lines[2]
    assert lines[1].endswith("5 kW  (Active import (+A), instantaneous)")
    assert lines[3].strip() == "#3                   7 (raw)" and lines[4].startswith("  #4 ")


def test_choose_with_a_candidate_set_equals_choose_with_a_list() -> None:
    from dlms_protocol.dlms.profiles import BodyFacts, Candidates

    for msg in _corpus_messages():
        if msg.apdu[:1] == b"/":  # a DSMR text telegram
            continue
        note = decode_apdu(msg.apdu)
        fast = choose(note.body, Candidates.of(PROFILES), None, facts=BodyFacts(note.body, note.body_type))
        plain = choose(note.body, list(PROFILES.values()), None, facts=BodyFacts(note.body, note.body_type))
        assert (fast[0], fast[1]) == (plain[0], plain[1])
    assert Candidates.of(PROFILES) is Candidates.of(PROFILES)
    assert list(Candidates.of(PROFILES)) == list(PROFILES.values())


_values: Any = st.one_of(st.none(), st.integers(), st.decimals(allow_nan=False), st.text(max_size=8),
                         st.binary(max_size=8), st.booleans())


@settings(max_examples=300, deadline=None)
@given(code=st.text(max_size=20), value=_values, unit=st.one_of(st.none(), st.sampled_from(["W", "kWh", "V"])),
       raw=_values, scaler=st.one_of(st.none(), st.integers(-6, 6)), index=st.integers(0, 300),
       details=st.lists(st.tuples(st.text(max_size=5), st.one_of(st.none(), st.text(max_size=5))), max_size=3),
       extra=st.lists(st.tuples(st.text(max_size=5), st.one_of(st.none(), st.text(max_size=5))), max_size=2))
def test_new_reading_is_the_dataclass_reading(code: str, value: Any, unit: Optional[str], raw: Any,
                                              scaler: Optional[int], index: int, details: list, extra: list) -> None:
    obis = Obis.parse("1-0:2.8.0.255")
    fast = new_reading(code, obis, value, unit, raw, scaler, index, None, tuple(details))
    plain = Reading(code, obis, value, unit, raw, scaler, index, None, details=tuple(details))
    assert fast == plain and repr(fast) == repr(plain) and fast.derived is False and fast.extra == ()
    made = new_reading(code, obis, value, unit, raw, scaler, index, None, tuple(details), True, tuple(extra))
    assert made == replace(plain, derived=True, extra=tuple(extra)) and made.derived is True
    if _hashable(plain):
        assert hash(fast) == hash(plain)
    with pytest.raises(AttributeError):
        fast.value = 1  # type: ignore[misc]  # still frozen


@pytest.mark.parametrize("profile", [p for p in SIMULATED if not p.startswith("kaifa")])  # (Kaifa: list 1 first)
def test_a_learned_layouts_readings_are_dataclass_readings(profile: str) -> None:
    """A learned layout (``template.PositionalTemplate``) makes each number's Reading from a copy
    of prepared fields, without the dataclass's ``__init__``: equal to the dataclass-built one in
    eq, hash, repr and fields, and still frozen."""
    sim = PushSimulator(wrapper="hdlc", layout="profile", profile=profile, seed=3)
    decoder = PushDecoder(ListenerConfig(port="-"))
    msgs = [m for _ in range(3) for m in decoder.feed(sim.emit())]
    assert len(msgs) == 3 and decoder._templates and decoder._full_decodes == 0  # the last two: the layout
    assert any(isinstance(r.value, Decimal) for r in msgs[-1].readings)  # numbers made by the template
    for taken in msgs[-1].readings:
        plain = Reading(**vars(taken))
        assert taken == plain and repr(taken) == repr(plain) and vars(taken) == vars(plain)
        assert hash(taken) == hash(plain)
        with pytest.raises(AttributeError):
            taken.value = 1  # type: ignore[misc]


def _hashable(r: Reading) -> bool:
    try:
        hash(r)
    except TypeError:
        return False
    return True


@settings(max_examples=2000, deadline=None)
@example(Decimal("0.0001")).via("the smallest fraction shown as written")
@example(Decimal("0.00001")).via("the float's text has an exponent: 1e-05")
@example(Decimal("-0.52")).via("a negative fraction")
@example(Decimal("1234567890123.5")).via("14 digits")
@example(Decimal("12345678901234.5")).via("15 digits")
@example(Decimal("123456789012345.5")).via("16 digits: the float rounds")
@example(Decimal("10.00005")).via("zeros inside")
@example(Decimal("1.5E+3")).via("an exponent")
@example(Decimal("2.50")).via("a trailing zero")
@given(st.one_of(st.decimals(), st.builds(lambda i, s: Decimal(i).scaleb(s), st.integers(-10**20, 10**20),
                                          st.integers(-12, 6))))
def test_decimal_text_is_the_text_of_the_json_value(value: Decimal) -> None:
    """The rendering's fast text of a Decimal is exactly ``str(json_value(value))``."""
    assert decimal_text(value) == str(json_value(value))


def test_decode_of_a_capture_longer_than_a_slice_shows_every_push(tmp_path: Any) -> None:
    """``decode --file`` works through a capture slice by slice: pushes cut by a slice border
    are shown once, in order, like from one read."""
    ek = bytes(range(16))
    sim = PushSimulator(wrapper="hdlc", key=ek, security=0x20, layout="profile", profile="si-sodo-reduxi-live23",
                        seed=4, invocation_counter=10)
    frames = [sim.emit() for _ in range(250)]  # 46 kB: three slices, borders inside frames
    capture = tmp_path / "capture.bin"
    capture.write_bytes(b"".join(frames))
    res = subprocess.run([sys.executable, "-m", "dlms_protocol", "decode", "--file", str(capture), "--key", ek.hex(),
                          "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    lines = [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
    assert len(lines) == 250
    want = [m.to_json()["readings"] for f in frames
            for m in decode_bytes(f, ListenerConfig(port="x", key=ek), strict=True)]
    assert [line["readings"] for line in lines] == want


_codes = st.builds(lambda a, c, d, e: Obis(a, 0, c, d, e, 255), st.sampled_from([0, 1, 7]),
                   st.sampled_from([1, 2, 14, 21, 24, 31, 32, 42, 96]), st.sampled_from([0, 1, 7, 8]),
                   st.integers(0, 2))


@settings(max_examples=600, deadline=None)
@given(code=_codes, value=st.integers(-2**40, 2**40),
       type_name=st.sampled_from(["double-long-unsigned", "long", "long-unsigned", "integer", "enum", "long64"]),
       su=st.one_of(st.none(), st.tuples(st.integers(-5, 5), st.sampled_from([27, 30, 32, 33, 35, 44, 255]))),
       class_id=st.one_of(st.none(), st.sampled_from([1, 3, 4, 5, 8])), attribute=st.sampled_from([2, 3]),
       profile=st.sampled_from([None, "kamstrup-han", "kaifa-obis", "ch-lg-e450-pairs"]))
def test_number_rule_of_obis_values_is_the_general_rule(code: Obis, value: int, type_name: str, su: Any,
                                                         class_id: Any, attribute: int, profile: Any) -> None:
    """obis_value's once-per-code rule for integers gives the reading _obis_value gives, every time."""
    prof = PROFILES[profile] if profile else None
    fast, plain = _Builder(None, prof), _Builder(None, prof)
    for _ in range(2):  # the second call from the cached rule
        fast.obis_value(code, 4, value, type_name, su, class_id, attribute)
        plain._obis_value(code, 4, value, type_name, su, class_id, attribute)
    assert fast.readings == plain.readings and fast.unscaled == plain.unscaled
    assert [repr(r) for r in fast.readings] == [repr(r) for r in plain.readings]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["1-0:1.7.0.255", "1-0:2.7.0.255", "1-0:32.7.0.255", "0-0:96.1.0.255"]),
                max_size=5), st.integers(0, 3))
def test_with_readings_is_dataclasses_replace(codes: list, extra: int) -> None:
    """The enrichment's copy of a snapshot equals ``dataclasses.replace`` in every field, and does
    not carry the lookup cache of the readings it replaced."""
    readings = tuple(new_reading(c, Obis.parse(c), Decimal(i), "W", i, 0, i, None, ()) for i, c in enumerate(codes))
    data = MeterData(kind="push", readings=readings, received=1.5, meter_id="X", text="t", raw=b"r", profile="p",
                     checksum="HDLC FCS", message=object())
    data.find("1.7.0")  # fills the cache
    more = readings + tuple(new_reading("1-0:16.7.0", Obis.parse("1-0:16.7.0"), Decimal(1), "W", None, None, -1,
                                        None, (), True) for _ in range(extra))
    fast, plain = data.with_readings(more), replace(data, readings=more)
    assert fast == plain and repr(fast) == repr(plain) and fast.message is data.message
    assert [r.code for r in fast.find("16.7.0")] == ["1-0:16.7.0"] * extra  # not the old snapshot's index
    with pytest.raises(AttributeError):
        fast.kind = "readout"  # type: ignore[misc]  # still frozen



@settings(max_examples=2000, deadline=None)
@given(st.integers(-2 ** 64, 2 ** 64), st.integers(-12, 9))
def test_a_learned_layout_scales_digit_for_digit_like_scaleb(raw: int, scaler: int) -> None:
    """template.py multiplies by 10**scaler instead of calling scaleb: the same coefficient,
    exponent and sign (not only an equal number), so texts and JSON stay the same."""
    assert (Decimal(raw) * Decimal(1).scaleb(scaler)).as_tuple() == Decimal(raw).scaleb(scaler).as_tuple()


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["push", "readout", "poll"]), st.floats(0, 2e9), st.one_of(st.none(), st.text(max_size=8)),
       st.text(max_size=20), st.binary(max_size=8), st.one_of(st.none(), st.sampled_from(["HDLC FCS", "none"])))
def test_meter_data_of_is_the_dataclass_one(kind: str, received: float, meter_id: Optional[str], text: str,
                                            raw: bytes, checksum: Optional[str]) -> None:
    readings = (new_reading("1-0:1.8.0", Obis.parse("1-0:1.8.0"), Decimal("1.5"), "kWh", 15, -1, 0, None, ()),)
    fast = MeterData.of(kind, readings, received, None, meter_id, text, raw, "p", checksum, "msg")
    plain = MeterData(kind=kind, readings=readings, received=received, meter_id=meter_id, text=text, raw=raw,
                      profile="p", checksum=checksum, message="msg")
    assert fast == plain and repr(fast) == repr(plain) and vars(fast) == vars(plain)
    assert fast.find("1.8.0") == list(readings) and fast.with_readings(()) == replace(plain, readings=())
    with pytest.raises(AttributeError):
        fast.kind = "x"  # type: ignore[misc]  # still frozen


def _is_the_dataclass_instance(obj: Any) -> None:
    """``obj`` (made by ``model.frozen_of``) equals its class built the dataclass way from its
    fields: every field there (none missing, none extra), eq, repr, and still frozen."""
    cls = type(obj)
    plain = cls(**vars(obj))
    assert vars(obj) == vars(plain) and set(vars(obj)) == set(cls.__dataclass_fields__)
    assert obj == plain and repr(obj) == repr(plain)
    with pytest.raises(AttributeError):
        setattr(obj, next(iter(cls.__dataclass_fields__)), None)


@pytest.mark.parametrize("security", [0x30, 0x20, None])
def test_what_a_push_decoder_makes_per_frame_is_the_dataclass_instance(security: Optional[int],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """PushMessage, Deciphered, CipheredApdu and a learned layout's Interpretation are made per
    frame with ``frozen_of``: each is the dataclass-built instance, on the full path and the template's."""
    import dlms_protocol.dlms.decoder as dec_module
    from dlms_protocol.dlms import security as sec

    ek, ak = bytes(range(16)), bytes(range(16, 32))
    keys: Any = {"key": ek, "auth_key": ak, "security": security} if security is not None else {}
    sim = PushSimulator(wrapper="hdlc", layout="profile", profile="si-sodo-reduxi-live23", seed=4, **keys)
    decoder = PushDecoder(ListenerConfig(port="-", key=ek if security else None,
                                         auth_key=ak if security == 0x30 else None))
    made: List[Any] = []
    decipher, parse, result = sec.decipher, sec.parse_ciphered, PositionalTemplate._result

    def spy(func: Any, first: bool = False) -> Any:
        def call(*args: Any) -> Any:
            out = func(*args)
            made.append(out[0] if first else out)
            return out
        return call

    monkeypatch.setattr(dec_module, "decipher", spy(decipher))
    monkeypatch.setattr(sec, "parse_ciphered", spy(parse))
    monkeypatch.setattr(PositionalTemplate, "_result", spy(result, first=True))
    msgs = [m for _ in range(3) for m in decoder.feed(sim.emit())]
    assert len(msgs) == 3 and decoder._full_decodes == 0  # the last two by the learned layout
    kinds = {type(x).__name__ for x in made}
    assert kinds == ({"Deciphered", "CipheredApdu", "Interpretation"} if security else {"Deciphered", "Interpretation"})
    for obj in made + msgs:
        _is_the_dataclass_instance(obj)


# ------------------------------------------------------------- the deframer's known-frame shortcut
class _ScanOnly(Deframer):
    """The deframer without ``_known_frame``: the general scan decides every frame."""

    def _known_frame(self, q: int, out: List[Any]) -> int:
        return 0


class _CountingShortcut(Deframer):
    """The deframer as it is, counting the frames its shortcut took and the general scan's candidates."""

    taken = scanned = 0

    def _known_frame(self, q: int, out: List[Any]) -> int:
        end = super()._known_frame(q, out)
        self.taken += end > 0
        return end

    def _candidate(self, q: int, out: List[Any]) -> Tuple[int, int]:
        self.scanned += 1
        return super()._candidate(q, out)


def _link_frames(rng: random.Random) -> List[bytes]:
    """HDLC frames of many kinds (and M-Bus ones): repeated headers, segmented and I-frame
    messages, ciphered and plain, the corpus's real ones."""
    frames: List[bytes] = []
    kinds = [dict(), dict(key=EK, auth_key=AK, security=0x30), dict(segmented=True, max_info=60),
             dict(hdlc_kind="i", segmented=True, max_info=50), dict(hdlc_kind="i"), dict(gbt=True, block_size=40),
             dict(wrapper="mbus"), dict(wrapper="mbus", segmented=True, max_info=60)]
    for kind in kinds:
        sim = PushSimulator(seed=rng.randrange(1000), **kind)  # type: ignore[arg-type]
        for _ in range(3):
            push = sim.emit()
            frames.append(push)
            frames += _pieces(push)  # (so that segments go missing, come twice, come alone)
    for path in corpus_files("push", ".json"):
        case = load_json(path)
        if case["wrapper"] in ("HDLC", "M-Bus"):
            frames.append(bytes.fromhex(case["hex"]))
    return frames


def _pieces(push: bytes) -> List[bytes]:
    """The single HDLC frames or M-Bus telegrams of a segmented push (none for a single one)."""
    pieces, pos = [], 0
    while pos < len(push):
        if push[pos:pos + 2] in (b"\x7e\xa0", b"\x7e\xa8"):
            total = (((push[pos + 1] & 0x07) << 8) | push[pos + 2]) + 2
        elif push[pos] == 0x68:
            total = push[pos + 1] + 6
        else:
            return []
        pieces.append(push[pos:pos + total])
        pos += total
    return pieces if len(pieces) > 1 else []


def _stream(rng: random.Random, frames: List[bytes]) -> bytes:
    """Frames back to back, repeated, with noise, doubled and shared flags, bit flips, cut frames."""
    out = bytearray()
    for _ in range(rng.randint(4, 30)):
        frame = bytearray(rng.choice(frames))
        how = rng.random()
        if how < 0.1 and frame:
            frame[rng.randrange(len(frame))] ^= 1 << rng.randrange(8)  # a bit error anywhere
        elif how < 0.15:
            del frame[rng.randrange(len(frame)):]  # the line lost the rest
        elif how < 0.25:
            out += random_bytes(rng, rng.randint(1, 40))
        elif how < 0.35:
            out += b"\x7e" * rng.randint(1, 3)
        elif how < 0.45 and out.endswith(b"\x7e") and frame[:1] == b"\x7e":
            del frame[:1]  # one flag between two frames
        out += frame
    return bytes(out)


def _deframed(deframer: Deframer, chunks: List[bytes], settle: List[bool]) -> Tuple[list, tuple]:
    items: List[Any] = []
    for chunk, quiet in zip(chunks, settle):
        items += deframer.feed(chunk)
        if quiet:
            items += deframer.settle()
    items += deframer.finish()
    shown = [i if isinstance(i, RawApdu) else (type(i).__name__, str(i)) for i in items]
    return shown, (deframer.frames, deframer.skipped, deframer.checksummed, deframer.buffered, deframer.high_water)


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), wrapper=st.sampled_from(["auto", "hdlc"]),
       biggest=st.sampled_from([1, 7, 64, 4096]))
def test_known_frame_shortcut_takes_what_the_scan_takes(seed: int, wrapper: str, biggest: int) -> None:
    """Whatever the stream and its read boundaries: the same messages, errors and counters."""
    rng = random.Random(seed)
    data = _stream(rng, _link_frames(rng))
    chunks = []
    i = 0
    while i < len(data):
        n = rng.randint(1, biggest)
        chunks.append(data[i:i + n])
        i += n
    settle = [rng.random() < 0.2 for _ in chunks]
    assert _deframed(Deframer(wrapper), chunks, settle) == _deframed(_ScanOnly(wrapper), chunks, settle)


def test_known_frame_shortcut_takes_a_meters_repeated_pushes() -> None:
    """Not a shortcut nobody takes: every push after the first one of a meter, whole or byte by
    byte; whole ones without the general scan (nor for the flags between them: the last push's
    closing one and this one's opening one)."""
    sim = PushSimulator(key=EK, auth_key=AK, security=0x30, seed=3)
    pushes = [sim.emit() for _ in range(6)]
    d = _CountingShortcut("auto")
    got = d.feed(pushes[0])
    scanned = d.scanned
    got += [i for p in pushes[1:] for i in d.feed(p)]
    assert all(isinstance(i, RawApdu) for i in got) and len(got) == 6
    assert d.taken == 5 and d.scanned == scanned
    d = _CountingShortcut("auto")
    got = [i for p in pushes for b in p for i in d.feed(bytes([b]))]
    assert all(isinstance(i, RawApdu) for i in got) and len(got) == 6
    assert d.taken == 5
