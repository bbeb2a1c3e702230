"""Property tests for the SML stream (hypothesis): chunking never changes the readings, mutated
bytes never raise anything but documented errors and never yield a value from a transmission
whose CRC failed; CRC-valid garbage inside a transmission is a DecodeError, not a crash."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlms_protocol.errors import DecodeError, DlmsError
from dlms_protocol.simulator.sml import SmlSimulator, encode_sml, entry, octets, signed, transport, unsigned
from dlms_protocol.sml.decoder import SmlDecoder
from dlms_protocol.sml.framing import check_crc
from helpers import corpus_files, load_json

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CAPTURES = [p.read_bytes() for p in corpus_files("sml", ".bin")]
GENERATED = [SmlSimulator(seed=n, reduced=n == 2).build() for n in range(4)]
# an octet string that holds an escape sequence on a 4-byte boundary: sent doubled
ESCAPED = encode_sml(b"\x0a\x01SIM\x00\x00\x00\x00\x01",
                     [entry("8181c78203ff", octets(b"\x1b" * 12)), entry("0100010800ff", unsigned(5, 4), 30, 0)])
STREAM = b"".join(CAPTURES) + b"".join(GENERATED) + ESCAPED


def readings_of(telegrams) -> list:
    return [(t.raw, t.readings) for t in telegrams]


def decode_chunks(chunks) -> tuple:
    errors = []
    decoder = SmlDecoder(on_error=errors.append)
    telegrams = []
    for chunk in chunks:
        telegrams += decoder.feed(chunk)
    return telegrams, errors


WHOLE, WHOLE_ERRORS = decode_chunks([STREAM])


def test_reference_stream_is_what_the_corpus_says() -> None:
    good = sum(1 for p in corpus_files("sml", ".json") for f in load_json(p)["frames"]
               if f["status"] in ("ok", "ok_with_kermit_crc"))
    assert len(WHOLE) == good + len(GENERATED) + 1
    assert WHOLE[-1].readings[0].raw == b"\x1b" * 12  # the doubled escape was undone


@SETTINGS
@given(st.lists(st.integers(1, len(STREAM) - 1), max_size=60, unique=True))
def test_random_chunking_gives_the_same_readings(cuts) -> None:
    bounds = [0] + sorted(cuts) + [len(STREAM)]
    telegrams, errors = decode_chunks([STREAM[a:b] for a, b in zip(bounds, bounds[1:])])
    assert readings_of(telegrams) == readings_of(WHOLE)
    assert [type(e) for e in errors] == [type(e) for e in WHOLE_ERRORS]


@SETTINGS
@given(st.sampled_from(GENERATED + CAPTURES[:6]),
       st.lists(st.tuples(st.sampled_from(["flip", "drop", "insert", "set"]), st.integers(0, 10**6),
                          st.integers(0, 255)), min_size=1, max_size=6),
       st.integers(1, 64))
def test_mutated_bytes_never_crash_and_never_yield_unverified_values(data, mutations, chunk) -> None:
    buf = bytearray(data)
    for op, pos, byte in mutations:
        pos %= len(buf) + 1
        if op == "insert":
            buf[pos:pos] = bytes([byte])
        elif pos < len(buf):
            if op == "flip":
                buf[pos] ^= 1 << (byte % 8)
            elif op == "drop":
                del buf[pos]
            else:
                buf[pos] = byte
    mutated = bytes(buf)
    telegrams, errors = decode_chunks([mutated[i:i + chunk] for i in range(0, len(mutated), chunk)])
    assert all(isinstance(e, DlmsError) for e in errors)
    assert readings_of(telegrams) == readings_of(decode_chunks([mutated])[0])  # however it was cut
    for tel in telegrams:
        assert tel.raw in mutated and check_crc(tel.raw) is not None
        # a transmission returned is byte for byte one whose CRC holds: an unchanged original,
        # or (p ~ 2^-16) a mutation the CRC cannot see
        assert tel.raw in data or check_crc(tel.raw) == "x25"


@SETTINGS
@given(st.binary(min_size=0, max_size=400))
def test_crc_valid_garbage_is_a_decode_error(payload) -> None:
    errors = []
    telegrams = SmlDecoder(on_error=errors.append).feed(transport(payload))
    assert all(isinstance(e, DlmsError) for e in errors)
    assert len(telegrams) + len(errors) <= 1
    assert all(isinstance(e, DecodeError) for e in errors if "CRC" not in str(e))


@SETTINGS
@given(st.integers(-2**63, 2**63 - 1), st.integers(1, 8), st.integers(-9, 9), st.booleans())
def test_integers_keep_their_sign_and_width(value, width, scaler, is_signed) -> None:
    if is_signed:
        value = max(-(1 << (8 * width - 1)), min((1 << (8 * width - 1)) - 1, value))
        encoded = signed(value, width)
    else:
        value = abs(value) % (1 << (8 * width))
        encoded = unsigned(value, width)
    data = encode_sml(b"\x0a\x01SIM\x00\x00\x00\x00\x02", [entry("0100100700ff", encoded, 27, scaler)])
    (tel,) = SmlDecoder().feed(data)
    (reading,) = tel.readings
    assert reading.raw == value and reading.scaler == scaler
    assert reading.value == reading.numeric() and reading.value.scaleb(-scaler) == value
    assert dict(reading.details)["sml_type"] == f"{'int' if is_signed else 'uint'}{8 * width}"


def test_an_end_off_the_grid_is_named_as_bytes_lost_not_as_a_cut_capture() -> None:
    """A Sagemcom capture (UteHaus simpl-meter-reader-sml) lost bytes in its last message: its end
    sequence is there, 3 bytes off SML's 4-byte grid. That was reported as a capture that ended
    mid-transmission; it is bytes lost on the line. A capture really cut short still says so."""
    good = GENERATED[0]
    end = good.rindex(b"\x1b\x1b\x1b\x1b\x1a")
    for lost in (1, 2, 3):
        decoder = SmlDecoder(on_error=(errors := []).append)
        assert decoder.feed(good[:end - lost] + good[end:]) == [] and decoder.finish() == []
        assert len(errors) == 1 and f"sits {4 - lost} byte(s) off the 4-byte grid" in str(errors[0])
        assert "bytes were lost on the line" in str(errors[0])
    decoder = SmlDecoder(on_error=(errors := []).append)
    assert decoder.feed(good[:end - 4]) == [] and decoder.finish() == []
    assert len(errors) == 1 and "ended mid-transmission" in str(errors[0])


def test_an_end_off_the_grid_with_a_matching_crc_is_named_as_unpadded() -> None:
    """An edited capture (olliiiver/sml_parser's test frames): values changed, the CRC computed
    again, the padding not. Nothing was lost (the CRC over the bytes as sent matches), so the
    error says the sender broke the framing, not the line; nothing of it is used all the same."""
    from dlms_protocol.sml.framing import crc16_x25

    good = GENERATED[0]
    end = good.rindex(b"\x1b\x1b\x1b\x1b\x1a")
    for lost in (1, 2, 3):
        body = good[:end - lost] + good[end:end + 6]  # (padding count kept: only the grid is off)
        edited = body + crc16_x25(body).to_bytes(2, "little")
        decoder = SmlDecoder(on_error=(errors := []).append)
        assert decoder.feed(edited) == [] and decoder.finish() == []
        assert len(errors) == 1 and f"not padded: its end sequence sits {4 - lost} byte(s) off" in str(errors[0])
        assert "although its CRC matches" in str(errors[0]) and "lost on the line" not in str(errors[0])
