"""Streams: corpus frames among noise in random chunks (each message exactly once), bounded
memory on endless noise, and reassembly that never spans a gap."""
from __future__ import annotations

import random
from typing import List, Tuple

import pytest

from dlms_protocol.config import ListenerConfig
from dlms_protocol.dlms import encode
from dlms_protocol.dlms.apdu import Structure, encode_notification
from dlms_protocol.dlms.decoder import PushDecoder, decode_bytes
from dlms_protocol.dlms.deframer import Deframer, RawApdu
from dlms_protocol.dlms.gbt import GbtAssembler
from dlms_protocol.errors import DlmsError, FramingError
from helpers import corpus_files, load_json, need

PUSH = corpus_files("push", ".json")
EK = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
AK = bytes.fromhex("FFEEDDCCBBAA99887766554433221100")


def random_bytes(rng: random.Random, n: int) -> bytes:
    """Like Random.randbytes (Python 3.9+), for Python 3.8."""
    return rng.getrandbits(8 * n).to_bytes(n, "little") if n else b""


def noise(rng: random.Random, n: int) -> bytes:
    """Line noise, salted with the bytes frame detection looks at (flags, 68, wrapper, APDU tags).

    Not salted with whole bare-APDU headers (``0F`` + invoke-id + date-time, ``E0 40 00 01 00 00``):
    bare APDUs have no delimiter, so noise that carries a complete, plausible APDU header right
    before a bare APDU can hide that APDU (it is then counted, never decoded into readings).
    Random noise does that about once in 2^40 bytes; planting it would test nothing else.
    """
    out = bytearray(random_bytes(rng, n))
    tricky = [b"\x7e", b"\x7e\xa0", b"\x7e\xa8\x20", b"\x68", b"\x68\x10\x10\x68", b"\x00\x01",
              b"\x00\x01\x00\x01\x00\x01\x00\x20", b"\x0f", b"\xdb\x08", b"\xe0"]
    for _ in range(n // 8):
        piece = rng.choice(tricky)
        at = rng.randrange(max(1, n))
        out[at:at + len(piece)] = piece
    return bytes(out[:n])


def noise_before_bare(rng: random.Random, n: int) -> bytes:
    """Noise in front of a bare APDU or wrapper frame: no HDLC flag in its last 21 bytes.

    Auto mode takes an APDU behind a flag/frame start that close for the payload of a damaged
    HDLC frame and drops it (issue 13: a wrong value is worse than a missed one); random noise
    puts a flag there once in ~200 bytes, the salted noise above almost always.
    """
    out = bytearray(noise(rng, n))
    for i in range(max(0, len(out) - 21), len(out)):
        if out[i] == 0x7E:
            out[i] = 0x7D
    return bytes(out)


def chunked(rng: random.Random, data: bytes, biggest: int) -> List[bytes]:
    out, i = [], 0
    while i < len(data):
        n = rng.randint(1, biggest)
        out.append(data[i:i + n])
        i += n
    return out


def link_messages(raw: bytes) -> List[Tuple[str, bytes]]:
    """What one corpus entry alone deframes and reassembles to (the reference)."""
    d, g, out = Deframer(), GbtAssembler(), []
    for item in d.feed(raw) + d.finish():
        assert isinstance(item, RawApdu), item
        out += [(item.wrapper, x) for x in g.feed(item.apdu) if isinstance(x, bytes)]
    return out


def stream_messages(chunks: List[bytes]) -> Tuple[List[Tuple[str, bytes]], List[DlmsError]]:
    d, g, out, errs = Deframer(), GbtAssembler(), [], []
    for chunk in chunks:
        for item in d.feed(chunk):
            if isinstance(item, DlmsError):
                errs.append(item)
                g.reset()
                continue
            for x in g.feed(item.apdu):
                if isinstance(x, bytes):
                    out.append((item.wrapper, x))
    return out, errs


def corpus_groups():
    """Checksummed framings share a line; bare APDUs and wrapper frames are a line of their own
    (after a verified HDLC/M-Bus frame, auto mode no longer takes bare APDUs; see deframer)."""
    cases = [load_json(p) for p in PUSH]
    strong = [c for c in cases if c["wrapper"] in ("HDLC", "M-Bus")]
    weak = [c for c in cases if c["wrapper"] not in ("HDLC", "M-Bus")]
    return strong, weak


@pytest.mark.parametrize("seed", range(4))
def test_corpus_among_noise_each_message_exactly_once(seed: int) -> None:
    need(bool(PUSH), "push corpus")
    rng = random.Random(seed)
    for group in corpus_groups():
        order = group * 2
        rng.shuffle(order)
        stream, want = bytearray(), []
        for case in order:
            bare = case["wrapper"] not in ("HDLC", "M-Bus")
            stream += (noise_before_bare if bare else noise)(rng, rng.randint(0, 300))
            if bare and stream[-21:].count(0x7E):  # the end of the frame before it
                stream += bytes(rng.randrange(0x7F) for _ in range(21))
            raw = bytes.fromhex(case["hex"])
            stream += raw
            want += link_messages(raw)
        stream += noise(rng, 200)
        got, errs = stream_messages(chunked(rng, bytes(stream), 97))
        assert [g for g in got if g in want] == want  # every message once, in order
        lookalikes = [g for g in got if g not in want]
        # noise salted with "DB 08" can pass as a bare ciphered APDU before the first checksummed
        # frame; it never decrypts into anything (tested below), so it costs a counted error only
        assert all(w == "apdu" and a[:2] == b"\xdb\x08" for w, a in lookalikes)
        for _, a in lookalikes:
            with pytest.raises(DlmsError):
                decode_bytes(a, ListenerConfig(port="-", key=EK))
        assert errs  # the noise was noticed and counted


@pytest.mark.parametrize("path", PUSH, ids=[p.stem for p in PUSH])
def test_corpus_decoder_stream_equals_single_decode(path) -> None:
    """Full pipeline with the frame's keys: noise, frame, noise, frame … gives the same messages."""
    case = load_json(path)
    keys = case.get("keys") or {}
    verified = (case.get("security") or {}).get("gcm_tag_verified") is True
    config = ListenerConfig(port="-", key=keys.get("block_cipher_key"),
                            auth_key=keys.get("authentication_key") if verified else None)
    raw = bytes.fromhex(case["hex"])
    single = [m.to_json() for m in decode_bytes(raw, config)]
    assert len(single) == 1
    rng = random.Random(len(raw))
    decoder = PushDecoder(config)
    before = noise_before_bare if case["wrapper"] not in ("HDLC", "M-Bus") else noise
    stream = b"".join(before(rng, 150) + raw for _ in range(3)) + noise(rng, 150)
    got = [m.to_json() for chunk in chunked(rng, stream, 64) for m in decoder.feed(chunk)]
    if case["ciphered"]:  # the same invocation counter again is a replay: counted, not published
        assert got == single and decoder.stats.get("replays") == 2
    else:
        assert got == single * 3 and decoder.stats.get("messages") == 3
    assert decoder.stats.get("framing_errors") >= 1


def test_ten_megabytes_of_noise_stay_within_the_buffer_bound() -> None:
    rng = random.Random(10)
    max_buffer = 16 * 1024
    deframer = Deframer(max_buffer=max_buffer)
    decoder = PushDecoder(ListenerConfig(port="-"), max_buffer=max_buffer)
    data = random_bytes(rng, 10 * 1024 * 1024)
    messages = []
    for i in range(0, len(data), 65536):
        chunk = data[i:i + 65536]
        deframer.feed(chunk)
        assert deframer.buffered <= max_buffer
        messages += decoder.feed(chunk)
    assert deframer.high_water <= max_buffer and decoder.deframer.high_water <= max_buffer
    assert messages == []  # noise never becomes a reading
    assert decoder.stats.get("framing_errors") > 0 and decoder.stats.get("bytes") == len(data)


def test_endless_segmented_message_is_dropped_at_the_bound() -> None:
    segment = encode.hdlc_frame(b"\x00" * 100, segmented=True, control=0x03)
    d = Deframer(max_buffer=8192)
    items = d.feed(encode.hdlc_frame(encode.LLC + b"\x0f" * 100, segmented=True, control=0x03))
    for _ in range(200):
        items += d.feed(segment)
        assert d.buffered <= 8192
    assert not [i for i in items if isinstance(i, RawApdu)]
    assert any(isinstance(i, FramingError) and "grew beyond" in str(i) for i in items)


def apdu(n: int, seed: int) -> bytes:
    rng = random.Random(seed)
    body = Structure([rng.randrange(2**16) for _ in range(n)])
    body.types = ("long-unsigned",) * n
    return encode_notification(body, None, invoke_id=seed)


def test_incomplete_block_transfer_then_a_complete_one() -> None:
    """scs E450 capture shape: blocks 1-2 of one push, then a whole push: one message, one error."""
    first, second = apdu(60, 1), apdu(60, 2)
    ciphered = [encode.encipher(x, EK, b"LGZ\x00\x00\x00\x00\x01", n, 0x30, AK) for n, x in enumerate((first, second))]
    frames = [encode.hdlc_frames(b, b"\xCE\xFF", b"\x03")[0] for c in ciphered for b in encode.gbt_blocks(c, 60)]
    per = len(frames) // 2
    stream = b"".join(frames[:2] + frames[per:])
    errors: List[DlmsError] = []
    decoder = PushDecoder(ListenerConfig(port="-", key=EK, auth_key=AK), on_error=errors.append)
    messages = decoder.feed(stream) + decoder.finish()
    assert [m.apdu for m in messages] == [second] and messages[0].tag_verified is True
    lost = [e for e in errors if isinstance(e, FramingError)]
    assert len(lost) == 1 and "incomplete block-transfer" in str(lost[0])
    assert messages[0].raw == b"".join(frames[per:])


def test_corpus_scs_e450_shape_with_real_frames() -> None:
    """The real E450 glo30 GBT frames: blocks 1-2, then 1-3: exactly one push."""
    need(bool(PUSH), "push corpus")
    case = next(load_json(p) for p in PUSH if p.stem == "ch-lg-e450-hdlc-gbt-glo30-nopushlist")
    raw = bytes.fromhex(case["hex"])
    frames = [i.raw for i in Deframer().feed(raw) if isinstance(i, RawApdu)]
    assert len(frames) == 3
    config = ListenerConfig(port="-", key=case["keys"]["block_cipher_key"])
    messages = decode_bytes(b"".join(frames[:2]) + raw, config, strict=False)
    assert len(messages) == 1 and messages[0].timestamp.isoformat().startswith("2022-02-23T21:36:00")
    with pytest.raises(FramingError):
        decode_bytes(b"".join(frames[:2]) + raw, config)


def test_noise_between_block_transfer_frames_drops_the_message() -> None:
    msg = apdu(60, 3)
    frames = [encode.hdlc_frames(b)[0] for b in encode.gbt_blocks(msg, 50)]
    stream = frames[0] + b"\x55\xAA\x55" + b"".join(frames[1:])
    messages = decode_bytes(stream, ListenerConfig(port="-"), strict=False)
    assert messages == []
    assert decode_bytes(b"".join(frames), ListenerConfig(port="-"))[0].apdu == msg


def test_reassembly_ignores_timing() -> None:
    """Segments fed one by one with anything in between except bytes still join (no gap timer)."""
    msg = apdu(80, 4)
    frames = encode.hdlc_frames(msg, max_info=40)
    decoder = PushDecoder(ListenerConfig(port="-"))
    got = []
    for f in frames:
        got += decoder.feed(f)
        got += decoder.feed(b"")
    assert [m.apdu for m in got] == [msg]
