"""Issue 13, push half: with keys set no downgrade, plaintext or replay gets in; no splice; the read
boundaries never change a result; a wrong key is named; a bad profile is a clear error; the JSON
says which checksum was verified.

Each numbered section holds the minimal input that reproduced the item before the change. The
hypothesis properties at the end state the invariants for any input.
"""
from __future__ import annotations

import json
import random
from datetime import datetime, timedelta
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlms_protocol import errors
from dlms_protocol.cli import main as cli_main
from dlms_protocol.config import ListenerConfig
from dlms_protocol.dlms import encode, wrapper
from dlms_protocol.dlms.apdu import Structure, encode_notification
from dlms_protocol.dlms.decoder import PART_PAUSE_MAX, PushDecoder, PushMessage, UnexplainedLayout, decode_bytes
from dlms_protocol.dlms.deframer import Deframer, RawApdu
from dlms_protocol.dlms.profiles import BUILTIN_DIR, load_profile
from dlms_protocol.dlms.security import RESET_AFTER, decipher
from dlms_protocol.errors import (AuthenticationError, ConfigurationError, DecryptionError, DlmsError,
                                  DowngradeError, IncompleteMessageError, PlaintextRejectedError, ReplayError)

EK = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
AK = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
TITLE = b"TST\x00\x00\xBC\x61\x4E"
T0 = datetime(2026, 12, 2, 12, 0, 0)


def notification(value: int, n: int = 10, stamp: Optional[datetime] = None) -> bytes:
    """A positional push of ``n`` double-long-unsigned values (the 1.8.0 of the issue: 131071/131072)."""
    body = Structure([value] * n)
    body.types = ("double-long-unsigned",) * n
    return encode_notification(body, stamp or T0, invoke_id=1)


def ciphered(value: int, ic: int, security: int = 0x30, stamp: Optional[datetime] = None) -> bytes:
    return encode.encipher(notification(value, stamp=stamp), EK, TITLE, ic, security, AK)


def hdlc(apdu: bytes, **kw: object) -> bytes:
    return b"".join(encode.hdlc_frames(apdu, **kw))  # type: ignore[arg-type]


def run(data: bytes, config: ListenerConfig, reads: Optional[Sequence[bytes]] = None):
    errs: List[DlmsError] = []
    dec = PushDecoder(config, on_error=errs.append)
    msgs: List[PushMessage] = []
    for r in (reads if reads is not None else [data]):
        msgs += dec.feed(r)
    msgs += dec.finish()
    # positional test pushes without a profile are delivered and counted as unknown layouts: not a loss
    return msgs, [e for e in errs if not isinstance(e, UnexplainedLayout)], dec


def values(msgs: List[PushMessage]) -> List[object]:
    return [r.raw for m in msgs for r in m.readings[:1]]


def both_keys(**kw: object) -> ListenerConfig:
    return ListenerConfig(port="-", key=EK, auth_key=AK, **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------ 1. downgrade to 0x20
def strip_tag_to_0x20(apdu: bytes) -> bytes:
    """What the attacker of item 1 sends: security byte 0x30 → 0x20 and the 12-byte tag removed."""
    content = bytearray(apdu[11:-12])
    content[0] = 0x20
    return apdu[:1] + bytes([8]) + TITLE + encode.ber_length(len(content)) + bytes(content)


def test_downgrade_to_encryption_only_is_rejected_with_both_keys() -> None:
    good = ciphered(236, 10)
    forged = bytearray(strip_tag_to_0x20(ciphered(236, 11)))
    forged[-1] ^= 0x01  # AES-CTR is malleable: this flips the last plaintext bit unnoticed
    msgs, errs, dec = run(hdlc(good) + hdlc(bytes(forged)), both_keys())
    assert values(msgs) == [236] and [m.tag_verified for m in msgs] == [True]
    assert [type(e) for e in errs] == [DowngradeError] and dec.stats.get("downgrades") == 1
    assert "sent an authentication tag before" in str(errs[0]) and "may be forged" in str(errs[0])


def test_meter_seen_sending_tags_may_not_drop_them_even_with_only_the_encryption_key() -> None:
    msgs, errs, _ = run(hdlc(ciphered(1, 10)) + hdlc(strip_tag_to_0x20(ciphered(2, 11))),
                        ListenerConfig(port="-", key=EK))
    assert values(msgs) == [1] and [type(e) for e in errs] == [DowngradeError]


def test_encryption_only_meter_works_with_its_key_and_with_the_explicit_option() -> None:
    frames = hdlc(ciphered(1, 10, 0x20)) + hdlc(ciphered(2, 11, 0x20))
    assert values(run(frames, ListenerConfig(port="-", key=EK))[0]) == [1, 2]
    # an operator that hands out both keys for a 0x20 meter: refused by default, allowed explicitly
    msgs, errs, _ = run(frames, both_keys())
    assert values(msgs) == [] and errs and all("meter sends no tag" in str(e) and "remove auth_key" in str(e)
                                               for e in errs)
    assert values(run(frames, both_keys(security="encrypted"))[0]) == [1, 2]


def test_authenticated_policy_without_authentication_key_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="needs the authentication key"):
        PushDecoder(ListenerConfig(port="-", key=EK, security="authenticated"))
    with pytest.raises(ConfigurationError, match="security 'paranoid' unknown"):
        ListenerConfig(port="-", security="paranoid")


# ------------------------------------------------------------ 2. plaintext with keys
def test_plaintext_is_rejected_when_keys_are_configured() -> None:
    plain = hdlc(notification(236))
    msgs, errs, dec = run(plain, both_keys())
    assert msgs == [] and [type(e) for e in errs] == [PlaintextRejectedError]
    assert dec.stats.get("plaintext_rejected") == 1
    assert values(run(plain, both_keys(security="any"))[0]) == [236]
    assert values(run(plain, ListenerConfig(port="-"))[0]) == [236]  # no keys: a plain meter


# ------------------------------------------------------------------ 3. replay
def test_replayed_frame_is_accepted_once() -> None:
    frame = hdlc(ciphered(5, 42))
    msgs, errs, dec = run(frame * 3, both_keys())
    assert values(msgs) == [5] and [type(e) for e in errs] == [ReplayError, ReplayError]
    assert dec.stats.get("replays") == 2 and dec.stats.get("messages") == 1


def test_reordered_frames_are_rejected() -> None:
    msgs, errs, _ = run(hdlc(ciphered(2, 11)) + hdlc(ciphered(1, 10)) + hdlc(ciphered(3, 12)), both_keys())
    assert values(msgs) == [2, 3] and [type(e) for e in errs] == [ReplayError]


def test_counter_restart_is_accepted_after_consecutive_increasing_frames() -> None:
    """A replaced or reset meter starts again low: accepted from the RESET_AFTER-th increasing frame,
    and the decoder notes it for its driver's log."""
    later = [T0 + timedelta(minutes=i) for i in range(10)]
    frames = hdlc(ciphered(100, 5000, stamp=later[0]))
    frames += b"".join(hdlc(ciphered(i, i, stamp=later[i])) for i in range(1, RESET_AFTER + 2))
    msgs, errs, dec = run(frames, both_keys())
    assert values(msgs) == [100] + list(range(RESET_AFTER, RESET_AFTER + 2))
    assert [type(e) for e in errs] == [ReplayError] * (RESET_AFTER - 1)
    assert [level for level, text in dec.notes if "restarted at 3 (was 5000)" in text] == ["warning"]


def test_replayed_old_sequence_does_not_pass_as_a_counter_restart() -> None:
    """Recorded frames replayed in order are older than the last accepted message: never a restart."""
    old = b"".join(hdlc(ciphered(i, i, stamp=T0 + timedelta(minutes=i))) for i in range(1, 6))
    new = hdlc(ciphered(99, 99, stamp=T0 + timedelta(hours=1)))
    msgs, errs, _ = run(old + new + old, both_keys())
    assert values(msgs) == [1, 2, 3, 4, 5, 99]
    assert [type(e) for e in errs] == [ReplayError] * 5


# ------------------------------------------------------------------ 4. splices
A, B = notification(131071), notification(131072)


def assert_no_splice(frames_a: List[bytes], frames_b: List[bytes], lost: Sequence[int]) -> List[DlmsError]:
    stream = [f for i, f in enumerate(frames_a + frames_b) if i not in lost]
    msgs, errs, _ = run(b"".join(stream), ListenerConfig(port="-"))
    assert all(m.apdu in (A, B) for m in msgs), values(msgs)
    return errs


def test_iframe_nsequence_gap_drops_the_partial_message() -> None:
    fa = encode.hdlc_frames(A, max_info=40, kind="i", first_ns=0)
    fb = encode.hdlc_frames(B, max_info=40, kind="i", first_ns=len(fa))
    errs = assert_no_splice(fa, fb, lost=[len(fa) - 1, len(fa)])  # last of A and first of B
    assert any(isinstance(e, IncompleteMessageError) and "N(S)" in str(e) for e in errs)


def test_gbt_blocks_from_two_hdlc_addresses_never_join() -> None:
    blocks_a, blocks_b = encode.gbt_blocks(A, 30), encode.gbt_blocks(B, 30)
    fa = [encode.hdlc_frame(encode.LLC + b, src=b"\x02\x23") for b in blocks_a]
    fb = [encode.hdlc_frame(encode.LLC + b, src=b"\x02\x25") for b in blocks_b]
    stream = fa[:1] + fb[1:]  # block 1 of meter A, blocks 2.. of meter B
    msgs, errs, _ = run(b"".join(stream), ListenerConfig(port="-"))
    assert msgs == [] and any(isinstance(e, IncompleteMessageError) for e in errs)


@pytest.mark.parametrize("kind", ["ui", "i", "mbus", "gbt"])
def test_one_lost_frame_never_splices(kind: str) -> None:
    def frames(apdu: bytes) -> List[bytes]:
        if kind == "mbus":
            return encode.mbus_telegrams(apdu, max_data=20)
        if kind == "gbt":
            return [encode.hdlc_frame(encode.LLC + b) for b in encode.gbt_blocks(apdu, 20)]
        return encode.hdlc_frames(apdu, max_info=20, kind=kind)
    fa, fb = frames(A), frames(B)
    for lost in range(len(fa) + len(fb)):
        errs = assert_no_splice(fa, fb, [lost])
        assert any(isinstance(e, (IncompleteMessageError, errors.DecodeError)) for e in errs), lost



def _segments(kind: str, apdu: bytes) -> List[bytes]:
    if kind == "mbus":
        return encode.mbus_telegrams(apdu, max_data=20)
    if kind == "gbt":
        return [encode.hdlc_frame(encode.LLC + b) for b in encode.gbt_blocks(apdu, 20)]
    return encode.hdlc_frames(apdu, max_info=20, kind=kind)


@pytest.mark.parametrize("kind", ["ui", "mbus", "gbt"])
def test_a_quiet_line_between_two_pushes_parts_never_splices_them(kind: str) -> None:
    """Push A loses its last segments and push B its first ones (a loose head from the middle of A
    to the middle of B): UI segments, M-Bus telegrams and GBT blocks carry nothing that tells A
    from B, and A's head joined to B's tail passed every checksum (a helper's fuzzing). Between
    the two the line was quiet (the listener's settle): the partial message is dropped there."""
    fa, fb = _segments(kind, A), _segments(kind, B)
    for cut in range(1, len(fa)):
        errs: List[DlmsError] = []
        dec = PushDecoder(ListenerConfig(port="-"), on_error=errs.append)
        msgs = dec.feed(b"".join(fa[:cut])) + dec.settle() + dec.feed(b"".join(fb[cut:])) + dec.finish()
        assert msgs == [], (cut, values(msgs))
        assert any(isinstance(e, IncompleteMessageError) and "went quiet" in e.fix for e in errs), cut
        assert dec.stats.get("incomplete_messages") >= 1
        assert dec.feed(b"".join(fb)) and dec.feed(b"".join(fa))  # (whole pushes still decode)


@contextmanager
def _listening() -> Iterator[Tuple[Any, List[PushMessage], List[DlmsError], Any]]:
    """A push listener on a real pty at 9600 8N1: (the meter's end of the link, the messages, the
    errors, a semaphore released per message)."""
    import threading
    import time

    from dlms_protocol.dlms.listener import PushListener
    from dlms_protocol.simulator.pty import PtyLink

    link = PtyLink(baudrate=9600, bytesize=8, parity="N")
    got: List[PushMessage] = []
    errs: List[DlmsError] = []
    arrived = threading.Semaphore(0)

    def message(msg: PushMessage) -> None:
        got.append(msg)
        arrived.release()

    lst = PushListener(ListenerConfig(port=link.port, baudrate=9600, parity="N"), lambda data: None,
                       on_message=message, on_error=errs.append)
    lst.start()
    try:
        # the listener's open has ended (pyserial empties the input buffer as it opens: bytes sent
        # while the pty is open but the open not done would be lost, a race on a loaded machine)
        deadline = time.monotonic() + 20
        while not (link.poll_connection() and lst.connected) and time.monotonic() < deadline:
            time.sleep(0.05)
        yield link, got, errs, arrived
    finally:
        lst.stop()
        link.close()


def test_the_listener_drops_a_push_whose_segments_stopped_before_a_pause() -> None:
    """Over a real pty: a whole push (this meter's messages come without pauses), then A's first
    two segments, two seconds of quiet, then B's other segments: no message (the listener
    settles the decoder on a quiet line); the next whole push is read."""
    import time

    fa, fb = _segments("ui", A), _segments("ui", B)
    with _listening() as (link, got, errs, arrived):
        link.send(b"".join(fa))
        assert arrived.acquire(timeout=20)
        link.send(b"".join(fa[:2]))
        time.sleep(2.0)  # (quiet: longer than the listener's idle read)
        link.send(b"".join(fb[2:]))
        time.sleep(0.5)
        assert len(got) == 1
        link.send(b"".join(fb))
        assert arrived.acquire(timeout=20)
    assert [m.apdu for m in got] == [A, B]
    assert any(isinstance(e, IncompleteMessageError) and "come without pauses" in e.fix for e in errs)


@pytest.mark.parametrize("kind", ["ui", "mbus", "gbt"])
def test_a_meter_that_pauses_inside_its_messages_is_read(kind: str) -> None:
    """An L+G E450 pauses 3 s before its last frame (esphome #16942): until a message of several
    parts has shown how the meter sends them, a pause of up to 5 s is waited out; a message read
    across one teaches twice its length; a meter that sent one without pauses has its messages'
    parts dropped at the first quiet read (the splice guard above)."""
    fa, fb = _segments(kind, A), _segments(kind, B)
    dec = PushDecoder(ListenerConfig(port="-"))
    assert dec.feed(b"".join(fa[:-1])) + dec.settle(1.0) + dec.settle(3.1) == []
    assert [m.apdu for m in dec.feed(fa[-1])] == [A]  # the first message, across a 3 s pause
    # noted 3.1 s, settled once a second: the pause was at most 4.1 s, doubled
    assert dec.allowed_pause() == pytest.approx(8.2)
    assert dec.feed(b"".join(fb[:-1])) + dec.settle(2.0) == []
    assert [m.apdu for m in dec.feed(fb[-1])] == [B]
    assert dec.allowed_pause() == pytest.approx(8.2)  # (the longest pause so far counts)
    assert dec.feed(b"".join(fa[:-1])) + dec.settle(8.3) + dec.feed(fb[-1]) == []  # longer: dropped
    assert dec.stats.get("incomplete_messages") >= 1

    quick = PushDecoder(ListenerConfig(port="-"))
    assert quick.feed(b"".join(fa[:-1])) + quick.settle(4.9) == []  # (nothing learned yet: waited out)
    assert [m.apdu for m in quick.feed(fa[-1])] == [A]
    assert quick.allowed_pause() == PART_PAUSE_MAX  # (at most 5.9 s, doubled: over the bound)
    fresh = PushDecoder(ListenerConfig(port="-"))
    assert [m.apdu for m in fresh.feed(b"".join(fb))] == [B]
    assert fresh.allowed_pause() == 0.0  # (a message of several parts without a pause)
    assert fresh.feed(b"".join(fa[:-1])) + fresh.settle(1.0) + fresh.feed(fb[-1]) == []
    errs: List[DlmsError] = []
    unlearned = PushDecoder(ListenerConfig(port="-"), on_error=errs.append)
    assert unlearned.feed(b"".join(fa[:-1])) + unlearned.settle(5.5) + unlearned.feed(fb[-1]) == []
    assert "no message of several parts decoded yet: 5 s are waited out" in errs[0].fix
    assert [m.apdu for m in unlearned.feed(b"".join(fb))] == [B]  # (a pause that long: dropped, not learned)
    assert unlearned.allowed_pause() == 0.0


def test_the_listener_reads_a_meter_that_pauses_three_seconds_before_its_last_segment() -> None:
    """Over a real pty: every push of the meter pauses 3 s before its last HDLC segment (an L+G
    E450, esphome #16942); each is read, the first one too, and nothing is counted as lost."""
    import time

    with _listening() as (link, got, errs, arrived):
        for apdu in (A, B):
            parts = _segments("ui", apdu)
            link.send(b"".join(parts[:-1]))
            time.sleep(3.0)
            link.send(parts[-1])
            assert arrived.acquire(timeout=20)
    assert [m.apdu for m in got] == [A, B]
    assert not [e for e in errs if isinstance(e, IncompleteMessageError)]


# --------------------------------------------------------- 5. chunk independence
def test_damaged_hcs_frame_cut_after_the_llc_is_not_taken_as_a_raw_apdu() -> None:
    """Item 5: the rest of a frame whose HCS was hit is no bare APDU, whatever the read boundary."""
    frame = bytearray(encode.hdlc_frame(encode.LLC + notification(1393)))
    frame[6] ^= 0x01  # HCS
    frame[-8] ^= 0x40  # and a value byte
    cut = frame.index(encode.LLC) + 3
    for reads in ([bytes(frame)], [bytes(frame[:cut]), bytes(frame[cut:])]):
        msgs, errs, _ = run(bytes(frame), ListenerConfig(port="-"), reads)
        assert msgs == [] and any(isinstance(e, errors.ChecksumError) for e in errs)


@pytest.mark.parametrize("link", ["hdlc", "mbus"])
def test_a_capture_begun_inside_a_frame_whose_next_one_is_damaged_hands_out_nothing_unverified(link: str) -> None:
    """Listening began inside a frame (right at its APDU), and the next frame's first bytes were hit:
    the APDU, followed by its frame's FCS and flag (M-Bus: checksum and stop byte), is that frame's
    payload, which nothing verified. It was taken as a bare APDU when the byte after the flag was
    no frame start (the fuzzer: 3 of 40 000 cases); in whole or in single bytes, nothing is taken."""
    apdu = notification(2718)
    if link == "hdlc":
        frame = encode.hdlc_frame(encode.LLC + apdu)
        next_frame = bytearray(encode.hdlc_frame(encode.LLC + notification(2719)))
        next_frame[0] = 0x00  # its opening flag (the closing flag before it stays)
    else:
        frame = encode.mbus_telegrams(apdu)[0]
        next_frame = bytearray(encode.mbus_telegrams(notification(2719))[0])
        next_frame[0] = 0x00  # its start byte
    capture = frame[frame.index(apdu):] + bytes(next_frame)
    for reads in ([capture], [capture[i:i + 1] for i in range(len(capture))]):
        msgs, _errs, _ = run(capture, ListenerConfig(port="-"), reads)
        assert msgs == [], link


def test_raw_notification_one_byte_per_read_is_walked_once(monkeypatch) -> None:
    """Item 7 (push): the structure walk resumes where it stopped; it does not start over per byte."""
    calls = [0]
    original = wrapper._Walker.data

    def counting(self, i, depth=0):  # noqa: ANN001
        calls[0] += 1
        return original(self, i, depth)

    monkeypatch.setattr(wrapper._Walker, "data", counting)
    apdu = notification(7, n=400)
    d = Deframer("auto")
    out = [x for i in range(len(apdu)) for x in d.feed(apdu[i:i + 1])]
    # the first frame of a line, when bare, waits for the bytes after it or for the line to go
    # quiet (a link frame's payload is followed by its check bytes and end: Deframer._link_tail)
    assert out == []
    out = d.settle()
    assert [type(x) for x in out] == [RawApdu] and out[0].apdu == apdu
    # a resumed walk costs a few steps per new byte (the whole walk from the start cost ~n/5 steps
    # per byte: 400 000 steps here, quadratic in the length)
    assert calls[0] <= 3 * len(apdu)


# ---------------------------------------------------------------- 6. wrong key
def test_wrong_encryption_key_with_right_authentication_key_is_named() -> None:
    apdu = ciphered(1, 1)
    with pytest.raises(DecryptionError, match="check the encryption key"):
        decipher(apdu, bytes(16), AK)
    with pytest.raises(AuthenticationError, match=r"\(the encryption key fits\): check the authentication key"):
        decipher(apdu, EK, bytes(16))


# ----------------------------------------------------------------- 7. profiles
@pytest.mark.parametrize("change,field", [
    (lambda d: d["match"]["types"].__setitem__(0, {"a": 1}), "match.types[0]"),
    (lambda d: d["match"].__setitem__("markers", 5), "match.markers"),
    (lambda d: d["fields"][0].__setitem__("unit", ["W"]), "fields[0].unit"),
    (lambda d: d["match"].__setitem__("markers", [{"index": 0, "prefix": 5}]), "match.markers[0].prefix"),
    (lambda d: d["fields"].__setitem__(0, [[[[{"deep": 1}]]]]), "fields[0]"),
])
def test_malformed_profile_is_a_configuration_error_naming_file_and_field(tmp_path: Path, change, field) -> None:
    doc = json.loads((BUILTIN_DIR / "at-wienernetze-9.json").read_text(encoding="utf-8"))
    change(doc)
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(ConfigurationError) as exc:
        load_profile(str(path))
    assert str(path) in str(exc.value) and field in str(exc.value)


def test_deeply_nested_profile_file_is_a_configuration_error(tmp_path: Path, capsys) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 200_000 + "]" * 200_000, encoding="utf-8")
    with pytest.raises(ConfigurationError, match="nests too deeply"):
        load_profile(str(path))
    code = cli_main(["decode", "--hex", hdlc(notification(1)).hex(), "--profile", str(path)])
    err = capsys.readouterr().err
    assert code != 0 and "nests too deeply" in err and "Traceback" not in err


# ------------------------------------------------------- 8. checksum in the JSON
@pytest.mark.parametrize("frame,config,want", [
    (lambda: hdlc(notification(1)), {}, "HDLC FCS"),
    (lambda: b"".join(encode.mbus_telegrams(notification(1))), {}, "M-Bus checksum"),
    (lambda: hdlc(ciphered(1, 1)), {"key": EK, "auth_key": AK}, "HDLC FCS + GCM tag"),
    (lambda: hdlc(ciphered(1, 1)), {"key": EK}, "HDLC FCS"),
    (lambda: encode.wrap(ciphered(1, 1)), {"key": EK, "auth_key": AK}, "GCM tag"),
    (lambda: encode.wrap(notification(1)), {}, "none"),
])
def test_json_says_which_checksum_was_verified(frame, config, want: str) -> None:
    msgs = decode_bytes(frame(), ListenerConfig(port="-", **config))
    assert [m.to_json()["checksum"] for m in msgs] == [want]


# ---------------------------------------------------------------- properties
def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randrange(0, 4)):
        op = rng.randrange(5)
        if not b:
            break
        i = rng.randrange(len(b))
        if op == 0:
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            del b[i:i + rng.randrange(1, 60)]
        elif op == 2:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
        elif op == 3:
            b[i:i] = b[rng.randrange(len(b)):][:rng.randrange(1, 80)]  # a replayed stretch
        else:
            b[i] = rng.choice((0x7E, 0x68, 0x0F, 0xDB, 0xE0, 0x00))
    return bytes(b)


def stream(seed: int) -> bytes:
    """Ciphered pushes of one meter in several framings, with a plaintext and a 0x20 frame among them."""
    rng = random.Random(seed)
    parts = []
    for ic in range(1, 5):
        apdu = ciphered(rng.randrange(2**32), ic * 10)
        framing = rng.choice(("hdlc", "hdlc-seg", "mbus", "wrapper", "apdu", "gbt"))
        if framing == "hdlc":
            parts.append(hdlc(apdu))
        elif framing == "hdlc-seg":
            parts.append(hdlc(apdu, max_info=30, kind=rng.choice(("ui", "i"))))
        elif framing == "mbus":
            parts.append(b"".join(encode.mbus_telegrams(apdu, max_data=40)))
        elif framing == "wrapper":
            parts.append(encode.wrap(apdu))
        elif framing == "gbt":
            parts.append(b"".join(encode.hdlc_frame(encode.LLC + blk) for blk in encode.gbt_blocks(apdu, 40)))
        else:
            parts.append(apdu)
    parts.insert(rng.randrange(len(parts)), hdlc(notification(rng.randrange(2**32))))
    parts.insert(rng.randrange(len(parts)), hdlc(strip_tag_to_0x20(ciphered(7, 25))))
    return b"".join(parts)


def reads_of(rng: random.Random, data: bytes) -> List[bytes]:
    out, i = [], 0
    while i < len(data):
        n = rng.choice((1, 1, 2, 3, 5, 17, 64, 300))
        out.append(data[i:i + n])
        i += n
    return out


PROPERTY = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@given(seed=st.integers(0, 10**6), mseed=st.integers(0, 10**6))
@PROPERTY
def test_with_keys_every_accepted_message_carries_a_verified_tag(seed: int, mseed: int) -> None:
    data = mutate(random.Random(mseed), stream(seed))
    for wrapper_name in ("auto", "hdlc", "mbus", "wrapper", "apdu"):
        msgs, _, _ = run(data, both_keys(wrapper=wrapper_name))
        assert all(m.ciphered and m.tag_verified is True for m in msgs)
        ics = [decipher_ic(m) for m in msgs]
        assert ics == sorted(set(ics))  # every counter once, increasing: no replay got in


def decipher_ic(m: PushMessage) -> int:
    return decipher_counter_of_raw(m.raw)


def decipher_counter_of_raw(raw: bytes) -> int:
    """The invocation counter of the (single) ciphered APDU inside a message's frames."""
    i = raw.find(b"\xdb\x08" + TITLE)
    assert i >= 0
    j = i + 2 + 8
    j += 2 if raw[j] == 0x81 else 3 if raw[j] == 0x82 else 1
    return int.from_bytes(raw[j + 1:j + 5], "big")


@given(seed=st.integers(0, 10**6), mseed=st.integers(0, 10**6), cut=st.integers(0, 10**6),
       keys=st.booleans())
@PROPERTY
def test_read_boundaries_never_change_the_result(seed: int, mseed: int, cut: int, keys: bool) -> None:
    data = mutate(random.Random(mseed), stream(seed))
    for wrapper_name in ("auto", "hdlc", "apdu"):
        config = both_keys(wrapper=wrapper_name) if keys else ListenerConfig(port="-", key=EK, security="any",
                                                                             wrapper=wrapper_name)
        whole = [m.to_json() for m in run(data, config)[0]]
        pieces = [m.to_json() for m in run(data, config, reads_of(random.Random(cut), data))[0]]
        assert pieces == whole


DOCUMENTED = tuple(getattr(errors, name) for name in errors.__all__)


@given(data=st.binary(max_size=600), seed=st.integers(0, 10**6), mseed=st.integers(0, 10**6))
@PROPERTY
def test_every_error_is_from_the_documented_hierarchy(data: bytes, seed: int, mseed: int) -> None:
    for raw in (data, mutate(random.Random(mseed), stream(seed))):
        for config in (both_keys(), ListenerConfig(port="-"), ListenerConfig(port="-", key=EK, wrapper="apdu")):
            _, errs, _ = run(raw, config)  # feed/finish never raise
            assert all(type(e) in DOCUMENTED or isinstance(e, DOCUMENTED) for e in errs)
            assert all(isinstance(e, DlmsError) and e.cause for e in errs)


# ------------------------------------------------------- fuzz findings, pinned
def test_false_mbus_start_spanning_a_real_telegram_is_judged_the_same_in_any_reads() -> None:
    """A 68 L L 68 in noise whose claimed span holds the start of a real telegram (bench/fuzz,
    mbus case 5126): in one read the real telegram is seen complete inside it and the false start
    is dropped; byte by byte the real one was not complete yet, the false start was judged a
    damaged telegram (its stop byte hit a 0x16 of the real one) and the real one skipped with it."""
    real = b"".join(encode.mbus_telegrams(notification(0x16161616, n=40)))
    filler = 5
    k = next(k for k in range(40, len(real) - 1) if real[k] == 0x16)  # a 0x16 inside the real telegram
    length = filler + k - 1  # puts the false start's stop byte on it
    assert 3 <= length <= 255
    stream = bytes([0x68, length, length, 0x68]) + bytes(filler) + real
    for reads in ([stream], [stream[i:i + 1] for i in range(len(stream))]):
        msgs, _, _ = run(stream, ListenerConfig(port="-"), reads)
        assert values(msgs) == [0x16161616]


@pytest.mark.parametrize("damage", ["LLC lost", "bytes gained"])
def test_payload_of_a_first_frame_that_lost_or_gained_bytes_is_no_bare_apdu(damage: str) -> None:
    """bench/fuzz hdlc case 863: a good header, bytes lost or added behind it: the frame is not
    closed where its header says, and the ciphered APDU in it must not come out as a bare APDU."""
    frame = bytearray(encode.hdlc_frame(encode.LLC + encipher_plain(9)))
    llc = frame.index(encode.LLC)
    if damage == "LLC lost":
        del frame[llc:llc + 3]
    else:
        frame[llc + 3:llc + 3] = b"\x52\x83\x9d\x21\x3a"
    msgs, errs, _ = run(bytes(frame), ListenerConfig(port="-", key=EK, security="encrypted"))
    assert msgs == [] and errs


def encipher_plain(value: int) -> bytes:
    """A 0x20 (no tag) APDU: nothing but the frame's FCS protects it."""
    return encode.encipher(notification(value), EK, TITLE, 1, 0x20)


def test_cli_security_option(capsys) -> None:
    plain = hdlc(notification(236)).hex()
    assert cli_main(["decode", "--hex", plain, "--key", EK.hex(), "--json"]) == 1
    assert "unencrypted push rejected" in capsys.readouterr().err
    assert cli_main(["decode", "--hex", plain, "--key", EK.hex(), "--security", "any", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["checksum"] == "HDLC FCS" and out["readings"][0]["raw"] == 236


def test_block_transfer_blocks_before_the_first_block_1_are_the_lead_in() -> None:
    """Listening that begins inside a GBT push sees its last blocks out of sequence: that is the
    lead-in (logged at INFO, as HDLC's is), up to the first block 1; a block out of sequence after
    that is a lost block (WARNING)."""
    fa, fb = _segments("gbt", A), _segments("gbt", B)
    errs: List[DlmsError] = []
    dec = PushDecoder(ListenerConfig(port="-"), on_error=errs.append)
    assert dec.feed(b"".join(fa[2:])) == []
    assert errs and all(e.lead_in for e in errs)
    assert [m.apdu for m in dec.feed(b"".join(fb))] == [B]
    errs.clear()
    assert dec.feed(b"".join(fa[:1] + fa[2:])) == []
    assert errs and not any(e.lead_in for e in errs)
    dec.reset()  # (the port was opened again)
    errs.clear()
    assert dec.feed(b"".join(fa[3:])) == [] and errs and all(e.lead_in for e in errs)


@pytest.mark.parametrize("kind", ["ui", "mbus", "gbt"])
def test_a_pause_counts_only_for_the_message_it_was_inside(kind: str) -> None:
    """A review found the pause of a message given up (on a quiet line, by the next message's first
    part, by a reopened port) taught to the next whole message, so that the allowance grew round by
    round until two pushes could be spliced. Now a pause teaches only when the message it was
    inside decodes, and the allowance never exceeds PART_PAUSE_MAX."""

    fa, fb = _segments(kind, A), _segments(kind, B)
    dec = PushDecoder(ListenerConfig(port="-"))
    assert dec.feed(b"".join(fa[:-1])) + dec.settle(1.0) + dec.settle(4.0) + dec.settle(5.5) == []  # given up
    assert [m.apdu for m in dec.feed(b"".join(fb))] == [B]
    assert dec.allowed_pause() == 0.0
    learned = PushDecoder(ListenerConfig(port="-"))
    assert learned.feed(b"".join(fa[:-1])) + learned.settle(3.0) + learned.feed(fa[-1])  # (a real 3 s pause)
    for _ in range(4):  # A loses its last part and B comes whole: B's first part drops A
        assert learned.feed(b"".join(fa[:-1])) + learned.settle(1.0) + learned.settle(5.9) == []
        assert [m.apdu for m in learned.feed(b"".join(fb))] == [B]
        assert learned.allowed_pause() == pytest.approx(8.0)
    reopened = PushDecoder(ListenerConfig(port="-"))
    assert reopened.feed(b"".join(fa[:-1])) + reopened.settle(1.0) + reopened.settle(4.5) == []
    reopened.reset()
    assert [m.apdu for m in reopened.feed(b"".join(fb))] == [B] and reopened.allowed_pause() == 0.0
    slow = PushDecoder(ListenerConfig(port="-"))
    for pause in (4.9, 9.0, 9.9):  # (each pause within the allowance so far: it grows, up to the bound)
        assert slow.feed(b"".join(fa[:-1])) + slow.settle(pause) + slow.feed(fa[-1])
    assert slow.allowed_pause() == PART_PAUSE_MAX


def test_a_block_transfer_message_of_one_block_teaches_no_pause() -> None:
    """A GBT message of one block is no message of several parts: it leaves the allowance unlearned,
    so the meter's later message with a 3 s pause is still read."""
    (one,) = [encode.hdlc_frame(encode.LLC + b) for b in encode.gbt_blocks(B, 10_000)]
    fa = _segments("gbt", A)
    dec = PushDecoder(ListenerConfig(port="-"))
    assert [m.apdu for m in dec.feed(one)] == [B] and dec.part_pause is None
    assert [m.apdu for m in dec.feed(b"".join(fa[:-1])) + dec.settle(3.0) + dec.feed(fa[-1])] == [A]
