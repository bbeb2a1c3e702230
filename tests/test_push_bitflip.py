"""Single-bit flips in every corpus frame: what is detected, and what cannot be.

What holds (exhaustively, every bit of every frame):

* frames with a link checksum (HDLC HCS/FCS, M-Bus CS; 17 corpus frames, plain and ciphered):
  every flip is an error; no message, no reading. Except in an HDLC frame's closing flag: a frame
  whose HCS and FCS verify is taken without its flag (``hdlc.parse_frame``), so such a flip
  passes that frame unchanged, or loses the next one whose opening flag it was; never a different
  payload;
* ciphered frames without a link checksum, authenticated (DLMS/IP wrapper 0x30 with its AK):
  every flip is an error, or the message is exactly the original one: the flips that pass hit
  the wrapper's port numbers, which nothing protects and nothing uses;
* the Steiermark bare ``DB`` frame, decrypted with the EK only (its published AK is wrong):
  every flip is an error (the DSMR CRC inside catches the ciphertext) or exactly the original
  message (flips in the suite bits of the security control byte, in the unverified tag, or in
  the CRC digits' letter case and the line end after them);
* bare plaintext APDUs (no checksum, no cipher: IE.5, Sagemcom T210-D PDU): nothing can detect
  a flip in a value byte. What holds is that a flip is an error, or changes at most ONE
  OBIS-mapped reading; the rest stay identical or are withheld (layout no longer recognised).
"""
from __future__ import annotations

import logging
import random
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from dlms_protocol.config import ListenerConfig
from dlms_protocol.dlms.decoder import decode_bytes
from dlms_protocol.dlms import hdlc
from dlms_protocol.dlms.deframer import Deframer, RawApdu
from dlms_protocol.dlms.gbt import GbtAssembler
from dlms_protocol.errors import DlmsError
from dlms_protocol.simulator.push import PushSimulator
from helpers import corpus_files, load_json, need

PUSH = corpus_files("push", ".json")
CASES = {p.stem: load_json(p) for p in PUSH}
CHECKSUMMED = sorted(k for k, c in CASES.items() if c["wrapper"] in ("HDLC", "M-Bus"))
UNPROTECTED = sorted(k for k, c in CASES.items() if c["wrapper"] == "raw APDU" and not c.get("ciphered"))
CIPHERED_BARE = sorted(k for k, c in CASES.items() if c["wrapper"] not in ("HDLC", "M-Bus") and c.get("ciphered"))


def config_for(case: dict) -> ListenerConfig:
    keys = case.get("keys") or {}
    verified = (case.get("security") or {}).get("gcm_tag_verified") is True
    return ListenerConfig(port="-", key=keys.get("block_cipher_key"),
                          auth_key=keys.get("authentication_key") if verified else None)


def flips(raw: bytes):
    for i in range(len(raw)):
        for bit in range(8):
            damaged = bytearray(raw)
            damaged[i] ^= 1 << bit
            yield i, bit, bytes(damaged)


def complete_apdus(data: bytes) -> list:
    d, g, out = Deframer(), GbtAssembler(), []
    for item in d.feed(data) + d.finish():
        if isinstance(item, RawApdu):
            out += [x for x in g.feed(item.apdu) if isinstance(x, bytes)]
        else:
            g.reset()
    return out


def closing_flags(raw: bytes) -> set:
    """Offsets of the closing flags of the HDLC frames with information in an intact capture."""
    out, p = set(), 0
    while p + 1 < len(raw):
        if raw[p] == hdlc.FLAG and raw[p + 1] >> 4 == 0xA:
            header = hdlc.parse_header(raw, p)
            assert header is not None
            if header.has_info:
                out.add(p + header.total - 1)
            p += header.total - 1
        else:
            p += 1
    return out


def readings(messages) -> list:
    return [m.to_json() for m in messages]


@pytest.fixture(autouse=True)
def _quiet_logs():
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


def test_corpus_groups_are_what_the_docstring_says() -> None:
    need(bool(CASES), "push corpus")
    assert len(CHECKSUMMED) == 17 and len(UNPROTECTED) == 2 and len(CIPHERED_BARE) == 2


@pytest.mark.parametrize("name", CHECKSUMMED)
def test_checksummed_frames_every_flip_is_caught(name: str) -> None:
    raw = bytes.fromhex(CASES[name]["hex"])
    intact = complete_apdus(raw)
    assert intact  # the intact frame passes
    flags = closing_flags(raw)
    for i, bit, damaged in flips(raw):
        got = complete_apdus(damaged)
        if i in flags:  # the frame passes unchanged, or the next one (this was its opening flag) is lost
            assert all(apdu in intact for apdu in got), f"byte {i} bit {bit} changed a payload"
        else:
            assert got == [], f"byte {i} bit {bit} passed the link layer"


@pytest.mark.parametrize("name", CHECKSUMMED)
def test_checksummed_frames_sampled_flips_through_the_whole_decoder(name: str) -> None:
    case = CASES[name]
    raw = bytes.fromhex(case["hex"])
    config = config_for(case)
    assert decode_bytes(raw, config)
    original = readings(decode_bytes(raw, config, strict=False))
    flags = closing_flags(raw)
    rng = random.Random(name)
    hits = [rng.randrange(len(raw)) for _ in range(40)] + sorted(flags)
    for at in hits:
        damaged = bytearray(raw)
        damaged[at] ^= 1 << rng.randrange(8)
        if at in flags:  # (the frame is intact: its message unchanged, or none)
            assert all(m in original for m in readings(decode_bytes(bytes(damaged), config, strict=False)))
            continue
        with pytest.raises(DlmsError):
            decode_bytes(bytes(damaged), config)
        assert decode_bytes(bytes(damaged), config, strict=False) == []


@pytest.mark.parametrize("name", CIPHERED_BARE)
def test_ciphered_frames_without_checksum_flip_gives_error_or_the_same_message(name: str) -> None:
    case = CASES[name]
    raw = bytes.fromhex(case["hex"])
    config = config_for(case)
    original = readings(decode_bytes(raw, config))
    passed = set()
    for i, bit, damaged in flips(raw):
        try:
            got = readings(decode_bytes(damaged, config))
        except DlmsError:
            continue
        assert got == original, f"byte {i} bit {bit} changed the message"
        passed.add(i)
    if case["wrapper"].startswith("DLMS/IP"):
        assert passed == {2, 3, 4, 5}  # source and destination wPort: unprotected, unused
    else:
        length_at = 2 + raw[1]  # DB, title length, title, then the BER length of the content
        sc_at = length_at + 1 + (raw[length_at] & 0x7F if raw[length_at] & 0x80 else 0)
        assert raw[sc_at] == 0x30
        # suite bits of the security control byte, the unverified tag, and the DSMR trailer
        # after "!" (hex case of the CRC digits, the line end), which the text parser ignores
        assert passed <= {sc_at} | set(range(len(raw) - 12 - 6, len(raw)))


@pytest.mark.parametrize("name", UNPROTECTED)
def test_plain_bare_apdus_at_most_one_reading_changes(name: str) -> None:
    raw = bytes.fromhex(CASES[name]["hex"])
    config = ListenerConfig(port="-")

    def mapped(messages) -> set:
        return {(r["obis"], str(r["value"]), r["unit"], r["index"])
                for r in readings(messages)[0]["readings"] if r["obis"] and r["value"] is not None}

    original = mapped(decode_bytes(raw, config))
    detected = 0
    for i, bit, damaged in flips(raw):
        try:
            got = mapped(decode_bytes(damaged, config))
        except DlmsError:
            detected += 1
            continue
        assert len(got - original) <= 1, f"byte {i} bit {bit} changed {sorted(got - original)}"
    assert detected > len(raw)  # the structure bytes (tags, lengths, counts) are caught


@given(seed=st.integers(min_value=0, max_value=10**6), wrapper=st.sampled_from(["hdlc", "mbus"]),
       security=st.sampled_from([None, 0x20, 0x30]), second=st.integers(min_value=0, max_value=86399),
       data=st.data())
@settings(max_examples=60, deadline=None)
@example(seed=122713, wrapper="mbus", security=0x30, second=2786, data=None)  # an HDLC start in the last telegram
def test_generated_frames_any_flip_is_an_error(seed: int, wrapper: str, security, second: int, data) -> None:
    """The same property on simulator frames (runs without the corpus)."""
    key, ak = bytes(range(16)), bytes(range(16, 32))
    stamp = datetime(2026, 12, 3, tzinfo=timezone.utc) + timedelta(seconds=second)  # part of the example
    sim = PushSimulator(wrapper=wrapper, key=key, auth_key=ak, security=security, seed=seed,
                        segmented=bool(seed % 2), max_info=70, clock=lambda: stamp)
    raw = sim.emit()
    # keys set for every kind: plaintext and 0x20 need the explicit policy that allows them
    config = ListenerConfig(port="-", key=key, auth_key=ak, security="authenticated" if security == 0x30 else "any")
    assert len(decode_bytes(raw, config)) == 1
    if data is None:
        return
    i = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    bit = data.draw(st.integers(min_value=0, max_value=7))
    damaged = bytearray(raw)
    damaged[i] ^= 1 << bit
    with pytest.raises(DlmsError):
        decode_bytes(bytes(damaged), config)
