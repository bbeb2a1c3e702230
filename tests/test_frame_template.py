"""A learned frame layout (dlms/template.py) gives exactly what the full decode gives, or nothing.

The template reads a frame's values at learned offsets when every structural byte equals the
learned frame's. These tests hold it to the full path (``apdu.decode_apdu`` + ``interpret``):
on every positional frame of the corpus and of the simulator, with every value changed, and
on frames mutated at random bytes (Hypothesis): either the template declines (None) or its
readings, profile, meter id, family and time equal the full path's, field for field. A
decoder that learns gives the same messages as one that never does.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import random
from typing import Any, Dict, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from dlms_protocol.config import ListenerConfig
from dlms_protocol.dlms import decoder as decoder_module
from dlms_protocol.dlms.apdu import decode_apdu
from dlms_protocol.dlms.decoder import PushDecoder, decode_bytes
from dlms_protocol.dlms.payload import Interpretation, interpret
from dlms_protocol.dlms.profiles import load_profiles
from dlms_protocol.dlms.template import Template, learn
from dlms_protocol.errors import DlmsError
from dlms_protocol.simulator.push import PushSimulator
from helpers import corpus_files, load_json

PROFILES = load_profiles()
SIMULATED = ["at-burgenland-e450-11", "at-wienernetze-9", "at-wienernetze-im350-10", "si-sodo-elektromaribor-live18",
             "si-sodo-reduxi-live22", "si-sodo-reduxi-live23", "si-sodo-usage12-bool", "si-sodo-usage12"]


#: the simulated meters' clock: Hypothesis examples must not depend on when the suite runs
CLOCK = datetime(2026, 12, 3, 7, 8, 9, tzinfo=timezone(timedelta(hours=1)))


def _plain_apdus() -> List[Tuple[str, bytes]]:
    """(name, plaintext APDU) of every binary push of the corpus and of the simulator's profiles."""
    out: List[Tuple[str, bytes]] = []
    for path in corpus_files("push", ".json"):
        frame = load_json(path)
        keys = frame.get("keys") or {}
        for msg in decode_bytes(bytes.fromhex(frame["hex"]), ListenerConfig(port="c", key=keys.get("block_cipher_key")),
                                strict=False):
            if msg.apdu[:1] == b"\x0f":
                out.append((path.stem, msg.apdu))
    for name in SIMULATED:
        sim = PushSimulator(wrapper="hdlc", layout="profile", profile=name, seed=5, clock=lambda: CLOCK)
        out += [(name, m.apdu) for m in decode_bytes(sim.emit(), ListenerConfig(port="s"))]
    return out


ALL = _plain_apdus()


def _full(plain: bytes, family: Optional[str] = None) -> Optional[Interpretation]:
    try:
        return interpret(decode_apdu(plain), None, profiles=PROFILES, family=family)
    except DlmsError:
        return None


def _same(fast: Interpretation, full: Interpretation) -> None:
    assert fast.readings == full.readings
    assert [repr(r) for r in fast.readings] == [repr(r) for r in full.readings]
    for name in ("profile", "shape", "unknown_layout", "unscaled", "meter_id", "family", "timestamp",
                 "capture_objects", "notes"):
        assert getattr(fast, name) == getattr(full, name), name


def _learn(plain: bytes) -> Optional[Template]:
    full = _full(plain)
    assert full is not None
    return learn(plain, decode_apdu(plain), full, PROFILES)


def _template(plain: bytes) -> Template:
    template = _learn(plain)
    assert template is not None
    return template


APDUS = [(name, plain) for name, plain in ALL if _learn(plain) is not None]
SHAPES = {name: _full(plain).shape for name, plain in ALL}  # type: ignore[union-attr]


def test_what_is_learned_and_what_is_not() -> None:
    """Every positional, OBIS-keyed and push-list frame of corpus and simulator is learned except
    the nested positional IE.5 list and frames a template cannot read (floats, unnamed layouts)."""
    learned = {name for name, _ in APDUS}
    assert {"se-aidon-hdlc-obis-scaler-unit-docexample", "se-kamstrup-omnipower-hdlc-obisvalue-2022",
            "ch-iskra-am550-hdlc-seg-pushlist-2020", "si-iskra-am550-hdlc-positional-live18"} <= learned
    assert {SHAPES[name] for name in learned} == {"positional", "obis", "push-list"}
    assert "hr-iskra-ie5-pdu-positional-33" not in learned
    assert len(learned) >= 25
    for name, plain in ALL:
        if name not in learned:
            full = _full(plain)
            assert full is not None and (full.unknown_layout or full.shape == "single" or full.notes
                                         or name == "hr-iskra-ie5-pdu-positional-33"
                                         or any(dict(r.details).get("dlms_type") in ("float32", "float64")
                                                for r in full.readings)), name


def test_every_learned_frame_is_read_back() -> None:
    for name, plain in APDUS:
        template = _template(plain)
        got = template.interpret(plain)
        assert got is not None, name
        full = _full(plain)
        assert full is not None
        _same(got[0], full)
        assert got[1] == decode_apdu(plain).timestamp


def _variable_offsets(template: Template) -> List[int]:
    layout = template.layout
    return [i for i in range(layout.length) if not (layout.mask >> (8 * (layout.length - 1 - i))) & 0xFF]


@pytest.mark.parametrize("index", range(len(APDUS)), ids=[name for name, _ in APDUS])
def test_every_value_byte_changed_is_read_as_the_full_path_reads_it(index: int) -> None:
    """Each variable byte set to 0x00, 0x7F, 0x80 and 0xFF in turn (signs, clocks that stop being valid)."""
    name, plain = APDUS[index]
    template = _template(plain)
    offsets = _variable_offsets(template)
    assert len(offsets) >= 4 + 1  # the invoke id and at least one value
    hits = 0
    for at in offsets:
        for byte in (0x00, 0x7F, 0x80, 0xFF):
            mutated = bytearray(plain)
            mutated[at] = byte
            got = template.interpret(bytes(mutated))
            assert got is not None, (name, at)  # only free bytes were changed
            full = _full(bytes(mutated))
            assert full is not None, (name, at)
            _same(got[0], full)
            hits += 1
    assert hits == 4 * len(offsets)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(index=st.integers(0, len(APDUS) - 1),
       changes=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=4),
       cut=st.integers(-2, 2))
def test_any_mutation_gives_the_full_path_result_or_none(index: int, changes: List[Tuple[float, int]],
                                                          cut: int) -> None:
    name, plain = APDUS[index]
    template = _template(plain)
    mutated = bytearray(plain)
    for where, byte in changes:
        mutated[int(where * len(mutated))] = byte
    if cut < 0:
        del mutated[cut:]
    elif cut > 0:
        mutated += bytes(cut)
    got = template.interpret(bytes(mutated))
    if got is None:
        return
    full = _full(bytes(mutated))
    assert full is not None, name  # the full path decodes whatever the template reads
    _same(got[0], full)


def _messages(frames: List[bytes], learning: bool, cfg: ListenerConfig) -> List[Dict[str, Any]]:
    decoder = PushDecoder(cfg)
    if not learning:
        decoder._learn_pause = 10 ** 9
    out = []
    for frame in frames:
        out += [dict(m.to_json(), render=m.render()) for m in decoder.feed(frame)]
    assert bool(decoder._templates) == learning
    return out


@pytest.mark.parametrize("name", SIMULATED)
def test_a_learning_decoder_gives_the_messages_of_one_that_never_learns(name: str) -> None:
    key = bytes(range(16))
    sim = PushSimulator(wrapper="hdlc", key=key, security=0x20, layout="profile", profile=name, seed=8,
                        invocation_counter=100)
    frames = [sim.emit() for _ in range(25)]
    cfg = ListenerConfig(port="s", key=key)
    learned = _messages(frames, True, cfg)
    assert len(learned) == 25
    assert learned == _messages(frames, False, cfg)


def test_layouts_that_alternate_are_all_learned() -> None:
    """A meter pushing two lists in turn keeps both layouts (by length and family)."""
    sims = [PushSimulator(wrapper="hdlc", layout="profile", profile=p, seed=2)
            for p in ("si-sodo-reduxi-live23", "si-sodo-usage12")]
    decoder = PushDecoder(ListenerConfig(port="s"))
    for _ in range(6):
        for sim in sims:
            assert len(decoder.feed(sim.emit())) == 1
    # the first frame is learned before its family was known, the others with it
    assert {length for length, _ in decoder._templates} == {141, 107} and decoder._full_decodes == 0
    assert {family for _, family in decoder._templates} == {None, "si-sodo"}


def test_a_meter_whose_layout_never_repeats_stops_being_learned() -> None:
    """Learning costs a walk over the frame: after LEARN_TRIES misses in a row it pauses."""
    profiles = ["si-sodo-reduxi-live23", "si-sodo-usage12", "at-wienernetze-9", "at-burgenland-e450-11",
                "si-sodo-elektromaribor-live18", "si-sodo-reduxi-live22", "at-wienernetze-im350-10",
                "si-sodo-usage12-bool", "si-sodo-reduxi-live23", "si-sodo-usage12"]
    decoder = PushDecoder(ListenerConfig(port="s"))
    for i, p in enumerate(profiles):
        sim = PushSimulator(wrapper="hdlc", layout="profile", profile=p, seed=i)
        decoder._templates.clear()  # as if every frame had a new layout
        assert len(decoder.feed(sim.emit())) == 1
    assert decoder._learn_pause == decoder_module.LEARN_PAUSE - 1


@pytest.mark.parametrize("index", range(len(APDUS)), ids=[name for name, _ in APDUS])
def test_decoders_with_and_without_templates_agree_on_changed_values(index: int) -> None:
    """Twenty variants of each learned frame, every changing byte random (clocks too, so some are
    invalid dates): the learning decoder's messages equal those of a decoder that never learns."""
    name, plain = APDUS[index]
    offsets = _variable_offsets(_template(plain))
    rng = random.Random(index)
    variants = [plain]
    for _ in range(20):
        frame = bytearray(plain)
        for at in offsets:
            frame[at] = rng.randrange(256)
        variants.append(bytes(frame))
    results = []
    for learning in (True, False):
        decoder = PushDecoder(ListenerConfig(port="v"))
        if not learning:
            decoder._learn_pause = 10 ** 9
        out = []
        for frame in variants:
            try:
                msg = decoder.decode_apdu(frame, "apdu", frame)
                out.append(dict(msg.to_json(), render=msg.render(), reading_objects=msg.readings))
            except DlmsError as exc:
                out.append({"error": str(exc)})
        results.append(out)
        assert bool(decoder._templates) == learning, name
    assert results[0] == results[1]
