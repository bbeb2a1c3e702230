"""Property tests and fuzzing for the APDU decoder, the walker and profile selection (hypothesis)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Tuple

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dlms_protocol.dlms.apdu import (Array, Structure, decode_apdu, decode_data, encode_data,
                                     encode_notification)
from dlms_protocol.dlms.payload import interpret, interpret_text
from dlms_protocol.dlms.profiles import load_profiles, mismatch, select_profile, signature
from dlms_protocol.errors import DlmsError

from test_push_apdu import gurux_decode

PROFILES = load_profiles()
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_INT_RANGES = {
    "integer": (-2**7, 2**7 - 1), "long": (-2**15, 2**15 - 1), "double-long": (-2**31, 2**31 - 1),
    "long64": (-2**63, 2**63 - 1), "unsigned": (0, 2**8 - 1), "long-unsigned": (0, 2**16 - 1),
    "double-long-unsigned": (0, 2**32 - 1), "long64-unsigned": (0, 2**64 - 1), "enum": (0, 255),
}


def _scalar() -> st.SearchStrategy[Tuple[str, Any]]:
    ints = [st.tuples(st.just(name), st.integers(lo, hi)) for name, (lo, hi) in _INT_RANGES.items()]
    return st.one_of(
        *ints,
        st.tuples(st.just("null-data"), st.none()),
        st.tuples(st.just("boolean"), st.booleans()),
        st.tuples(st.just("octet-string"), st.binary(max_size=300)),
        st.tuples(st.just("visible-string"),
                  st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)),
    )


def _node(children: st.SearchStrategy) -> st.SearchStrategy[Tuple[str, Any]]:
    def build(kind_items: Tuple[str, list]) -> Tuple[str, Any]:
        kind, items = kind_items
        container = Structure() if kind == "structure" else Array()
        container.extend(v for _, v in items)
        container.types = tuple(t for t, _ in items)
        return kind, container
    return st.tuples(st.sampled_from(["structure", "array"]), st.lists(children, max_size=6)).map(build)


TREES = st.recursive(_scalar(), _node, max_leaves=40)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list):
        return isinstance(b, list) and type(a) is type(b) and tuple(a.types) == tuple(b.types) and \
            len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b and type(a) is type(b)


@SETTINGS
@given(TREES)
def test_axdr_round_trip(tree: Tuple[str, Any]) -> None:
    type_name, value = tree
    raw = encode_data(value, type_name)
    got, got_type, end = decode_data(raw)
    assert end == len(raw) and got_type == type_name and _same(got, value)


@SETTINGS
@given(TREES)
def test_decoder_agrees_with_gurux(tree: Tuple[str, Any]) -> None:
    type_name, value = tree
    raw = encode_data(value, type_name)

    def plain(v: Any) -> Any:
        return [plain(x) for x in v] if isinstance(v, list) else v
    assert gurux_decode(raw) == plain(decode_data(raw)[0])


TIMESTAMPS = st.one_of(
    st.none(),
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 12, 30)).map(
        lambda d: d.replace(microsecond=d.microsecond // 10000 * 10000)),
    st.tuples(st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 12, 30)),
              st.integers(-720, 720)).map(
        lambda t: t[0].replace(microsecond=0, tzinfo=timezone(timedelta(minutes=t[1])))),
)


@SETTINGS
@given(TREES, TIMESTAMPS, st.integers(0, 2**32 - 1), st.booleans())
def test_notification_round_trip(tree: Tuple[str, Any], ts: Any, invoke: int, kaifa: bool) -> None:
    type_name, value = tree
    n = decode_apdu(encode_notification(value, ts, invoke_id=invoke, body_type=type_name,
                                        kaifa_datetime=kaifa and ts is not None))
    assert n.timestamp == ts and (ts is None or (n.timestamp.tzinfo is None) == (ts.tzinfo is None))
    assert n.invoke_id == invoke & 0xFFFFFF and n.priority_high == bool(invoke & 0x80000000)
    assert n.body_type == type_name and _same(n.body, value)
    try:  # any tree: readings or a DlmsError, nothing else
        result = interpret(n)
    except DlmsError:
        return
    assert all(r.timestamp == ts for r in result.readings)


def _valid_apdus() -> st.SearchStrategy[bytes]:
    return st.tuples(TREES, TIMESTAMPS).map(lambda t: encode_notification(t[0][1], t[1], body_type=t[0][0]))


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    raw = bytearray(draw(_valid_apdus()))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        pos = draw(st.integers(0, max(len(raw) - 1, 0)))
        if op == "flip" and raw:
            raw[pos] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del raw[pos:]
        elif op == "insert":
            raw[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif raw:
            del raw[pos]
    return bytes(raw)


@SETTINGS
@given(st.one_of(st.binary(max_size=200), mutated(), st.binary(max_size=40).map(lambda b: b"\x0f" + b)))
@example(b"\x0f\x00\x00\x00\x01\x00" + b"\x01\x84\xff\xff\xff\xff")
@example(b"\x0f\x00\x00\x00\x01\x00" + b"\x02\x01" * 500 + b"\x00")
def test_garbage_raises_only_dlms_errors(raw: bytes) -> None:
    try:
        n = decode_apdu(raw)
    except DlmsError:
        return
    try:
        interpret(n)
    except DlmsError:
        pass


@SETTINGS
@given(st.binary(max_size=300), st.booleans())
@example(b"/X\r\n1-0:1.8.0(1*Wh)\r\n!ZZZZ", True)
@example(b"/X\r\n1-0:1.8.0(99999999999999999999999999.9*Wh)\r\n!", False)
def test_text_garbage_raises_only_dlms_errors(raw: bytes, require_crc: bool) -> None:
    try:
        interpret_text(raw, require_crc)
    except DlmsError:
        pass


# ------------------------------------------------------------------ profile selection
_POSITIONAL = sorted(n for n, p in PROFILES.items() if p.shape in ("positional", "single"))


def _fits(type_name: str, wanted: str) -> bool:
    from dlms_protocol.dlms.profiles import TYPE_GROUPS
    return wanted == "*" or type_name == wanted or type_name in TYPE_GROUPS.get(wanted, ())


@SETTINGS
@given(st.lists(_scalar(), max_size=40), st.sampled_from([None, "kaifa"]))
def test_selection_only_for_matching_signature(items: list, family: Any) -> None:
    body = Structure(v for _, v in items)
    body.types = tuple(t for t, _ in items)
    chosen = select_profile(body, PROFILES, family)
    if chosen is None:
        return
    length, types = signature(body)
    assert length == chosen.match["elements"]
    assert all(_fits(t, w) for t, w in zip(types, chosen.match.get("types") or ()))


@SETTINGS
@given(st.sampled_from(_POSITIONAL), st.data())
def test_mutated_signature_never_selects_the_profile(name: str, data: st.DataObject) -> None:
    profile = PROFILES[name]
    wanted = profile.match["types"]
    types = [data.draw(st.sampled_from(sorted({"double-long-unsigned", "long-unsigned", "octet-string",
                                                  "boolean", "enum", "structure"}))) for _ in wanted]
    extra = data.draw(st.integers(-1, 2))
    if extra < 0:
        types = types[:-1]
    else:
        types += ["long-unsigned"] * extra
    sample = {"octet-string": b"KFM_001", "boolean": True}
    values = [Structure() if t == "structure" else sample.get(t, 1) for t in types]
    body = Structure(values)
    body.types = tuple(types)
    if len(types) == len(wanted) and all(_fits(t, w) for t, w in zip(types, wanted)):
        return  # drew the profile's own signature
    assert mismatch(profile, body, family=profile.match.get("requires_family"), forced=True) is not None
    assert select_profile(body, {name: profile}, family=profile.match.get("requires_family")) is None


@SETTINGS
@given(st.lists(_scalar(), min_size=1, max_size=30))
def test_positions_never_get_an_obis_code_without_a_profile(items: list) -> None:
    body = Structure(v for _, v in items)
    body.types = tuple(t for t, _ in items)
    result = interpret(decode_apdu(encode_notification(body, None)), profiles={})
    for r in result.readings:
        if result.shape == "positional":
            assert r.obis is None and r.code.startswith("index ")
        number = isinstance(r.raw, int) and not isinstance(r.raw, bool)
        if number and r.scaler is None and r.value is not None:
            # a number without a scaler is only an enum or an exact count of an abstract object
            assert r.value == Decimal(r.raw) or r.value == r.raw
