"""AES-128-GCM deciphering: every ciphered corpus frame, tag verification, wrong keys, key secrecy,
and our ciphering cross-checked with gurux-dlms (an independent implementation)."""
from __future__ import annotations

import contextlib
import io
import logging
import random
from typing import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlms_protocol.config import ListenerConfig
from dlms_protocol.dlms import encode, gcm
from dlms_protocol.dlms.apdu import Structure, decode_apdu, encode_notification
from dlms_protocol.dlms.decoder import PushDecoder, decode_bytes
from dlms_protocol.dlms.deframer import Deframer, RawApdu
from dlms_protocol.dlms.gbt import GbtAssembler
from dlms_protocol.dlms.security import decipher, parse_ciphered
from dlms_protocol.errors import (AuthenticationError, DecodeError, DecryptionError, DlmsError, MissingKeyError,
                                  SecurityError)
from helpers import corpus_files, load_json, need

PUSH = corpus_files("push", ".json")
CIPHERED = [p for p in PUSH if load_json(p).get("ciphered")]
EK = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
AK = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
TITLE = b"TST\x00\x00\xBC\x61\x4E"


def keys(case: dict):
    k = case["keys"]
    ek = bytes.fromhex(k["block_cipher_key"])
    ak = bytes.fromhex(k["authentication_key"]) if k.get("authentication_key") else None
    return ek, ak


def ciphered_apdu(case: dict) -> bytes:
    """The complete ciphered APDU of a corpus frame (after deframing and GBT)."""
    d, g = Deframer(), GbtAssembler()
    items = d.feed(bytes.fromhex(case["hex"])) + d.finish()  # (a bare APDU first on a line waits for its end)
    out = [x for item in items if isinstance(item, RawApdu) for x in g.feed(item.apdu)]
    whole = [x for x in out if isinstance(x, bytes)]
    assert len(whole) == 1
    return whole[0]


def sample(n: int = 6, seed: int = 1) -> bytes:
    rng = random.Random(seed)
    body = Structure([rng.randrange(2**32) for _ in range(n)])
    body.types = ("double-long-unsigned",) * n
    return encode_notification(body, None, invoke_id=seed)


# --------------------------------------------------------------------- corpus
@pytest.fixture(params=gcm.ENGINES)
def each_engine(request: pytest.FixtureRequest) -> Iterator[None]:
    """Deciphering through each AES-GCM engine this machine has (``gcm``), chosen afresh after."""
    try:
        gcm.reset(request.param)
    except SecurityError as exc:
        gcm.reset()
        pytest.skip(str(exc))
    yield
    gcm.reset()


@pytest.mark.parametrize("path", CIPHERED, ids=[p.stem for p in CIPHERED])
def test_corpus_frame_decrypts_to_its_plaintext(path, each_engine: None) -> None:
    case = load_json(path)
    ek, ak = keys(case)
    apdu = ciphered_apdu(case)
    plain = bytes.fromhex(case["plaintext_apdu_hex"])
    sec = case["security"]
    # with the encryption key only: always decrypted, never claimed verified
    d = decipher(apdu, ek, None)
    assert d.apdu == plain and d.ciphered and d.tag_verified is None
    assert d.security_control == int(sec["security_control"], 16)
    assert d.invocation_counter == sec["invocation_counter"]
    assert d.system_title == bytes.fromhex(case["system_title"])
    if ak is not None and sec["gcm_tag_verified"] is True:
        assert decipher(apdu, ek, ak).tag_verified is True
        assert decipher(apdu, ek, ak).apdu == plain
    elif ak is not None and sec["gcm_tag_verified"] is False:  # the published AK is not this frame's
        with pytest.raises(AuthenticationError):
            decipher(apdu, ek, ak)


@pytest.mark.parametrize("path", CIPHERED, ids=[p.stem for p in CIPHERED])
def test_corpus_wrong_keys_are_named(path) -> None:
    case = load_json(path)
    ek, ak = keys(case)
    apdu = ciphered_apdu(case)
    wrong = bytes(b ^ 0x5A for b in ek)
    with pytest.raises(DecryptionError) as exc:
        decipher(apdu, wrong, None)
    assert str(exc.value) == "decrypted data is not a valid APDU: check the encryption key"
    with pytest.raises(MissingKeyError) as exc:
        decipher(apdu, None, None)
    assert str(exc.value) == ("frame is encrypted but no key is configured: "
                              "set key (the GUEK from your grid operator; CLI: --key)")
    if parse_ciphered(apdu).security_control & 0x10:
        with pytest.raises(AuthenticationError) as exc:
            decipher(apdu, ek, bytes(16))
        assert str(exc.value) == "authentication tag mismatch (the encryption key fits): check the authentication key"
        if ak is not None:  # right authentication key, wrong encryption key: told apart (issue 13 #8)
            with pytest.raises(DecryptionError) as exc:
                decipher(apdu, wrong, ak)
            assert str(exc.value) == ("authentication tag mismatch and the decrypted data is not a valid APDU: "
                                      "check the encryption key")


@pytest.mark.parametrize("security", [0x20, 0x30])
def test_a_damaged_message_the_key_fits_is_not_blamed_on_the_key(security: int) -> None:
    """A push whose later segment is lost, foreign or damaged deciphers right up to there (GCM
    is a stream): the error says the key fits and the message is damaged, not 'check the key'
    (a published EWR Kaifa capture with a re-encrypted first segment only got that)."""
    from datetime import datetime

    body = Structure(list(range(1000, 1020)))
    body.types = ("double-long-unsigned",) * 20
    plain = encode_notification(body, datetime(2024, 5, 6, 7, 8, 9), invoke_id=7)
    ciphered = encode.encipher(plain, EK, TITLE, 42, security, AK if security & 0x10 else None)
    other = encode.encipher(sample(24, seed=3), EK, TITLE, 43, security, AK if security & 0x10 else None)
    cut = len(ciphered) - 40  # the tail of another push's ciphertext, as a mixed-up segment gives
    spliced = ciphered[:cut] + other[cut:cut + 40]
    for ak in ((None, AK) if security & 0x10 else (None,)):
        with pytest.raises(DecodeError) as exc:
            decipher(spliced, EK, ak)
        assert not isinstance(exc.value, DecryptionError)
        assert "the key fits" in str(exc.value) and "segment" in str(exc.value)
        assert ("tag does not verify" in str(exc.value)) == (ak is not None)
        with pytest.raises(DecryptionError, match="check the encryption key"):  # a wrong key stays named
            decipher(spliced, bytes(b ^ 0x5A for b in EK), ak)
    assert decipher(ciphered, EK, AK if security & 0x10 else None).apdu == plain


def test_corpus_steiermark_plaintext_is_dsmr_text() -> None:
    need(bool(CIPHERED), "push corpus")
    case = next(load_json(p) for p in CIPHERED if "steiermark" in p.stem)
    ek, _ = keys(case)
    messages = decode_bytes(bytes.fromhex(case["hex"]), ListenerConfig(port="-", key=ek))
    assert len(messages) == 1 and messages[0].apdu[:1] == b"/" and messages[0].tag_verified is None
    values = {r.obis.dotted(): (r.value, r.unit) for r in messages[0].readings if r.obis is not None}
    assert case["expected"]
    for e in case["expected"]:
        assert values[e["obis"] + ".255"] == (e["value"], e["unit"])


# ------------------------------------------------------------------ generated
@pytest.mark.parametrize("security", [0x10, 0x20, 0x30, 0x21, 0x31])
@pytest.mark.parametrize("tag", [0xDB, 0xDC, 0xDD])
def test_round_trip_every_security_control_and_ciphering_apdu(security: int, tag: int) -> None:
    plain = sample(seed=security + tag)
    apdu = encode.encipher(plain, EK, TITLE, 4711, security, AK, tag=tag, recipient_title=b"RCP\x00\x00\x00\x00\x01")
    d = decipher(apdu, EK, AK)
    assert d.apdu == plain and d.invocation_counter == 4711 and d.system_title == TITLE
    assert d.tag_verified is (True if security & 0x10 else None)
    if security & 0x10:
        assert decipher(apdu, EK, None).tag_verified is None
        with pytest.raises(AuthenticationError):
            decipher(apdu, EK, bytes(16))
        tampered = bytearray(apdu)
        tampered[-1] ^= 0x01
        with pytest.raises(AuthenticationError):
            decipher(bytes(tampered), EK, AK)
    if security & 0x20:
        with pytest.raises(DecryptionError):
            decipher(apdu, bytes(16), None)


def test_plain_apdu_passes_through() -> None:
    plain = sample()
    d = decipher(plain, EK, AK)
    assert (d.apdu, d.ciphered, d.tag_verified, d.system_title) == (plain, False, None, None)


def test_ciphered_apdu_with_bad_lengths_is_a_decode_error() -> None:
    apdu = bytearray(encode.encipher(sample(), EK, TITLE, 1, 0x20))
    apdu[10] += 1  # content length one too long
    with pytest.raises(DecodeError):
        decipher(bytes(apdu), EK, None)


@given(n=st.integers(min_value=0, max_value=80), ic=st.integers(min_value=0, max_value=2**32 - 1),
       sc=st.sampled_from([0x20, 0x30]))
@settings(max_examples=40, deadline=None)
def test_round_trip_property(n: int, ic: int, sc: int) -> None:
    plain = sample(n, seed=n)
    d = decipher(encode.encipher(plain, EK, TITLE, ic, sc, AK), EK, AK)
    assert d.apdu == plain and d.invocation_counter == ic


# ---------------------------------------------------------------- key secrecy
def test_keys_never_appear_in_messages_or_logs(caplog) -> None:
    """Run every error path at DEBUG and look for the key bytes in every form they could take."""
    caplog.set_level(logging.DEBUG)
    cases = [(load_json(p)) for p in CIPHERED]
    secrets = [EK, AK] + [k for c in cases for k in keys(c) if k]
    texts = []
    frames = [(encode.hdlc_frames(encode.encipher(sample(), EK, TITLE, 9, 0x30, AK))[0], EK, AK)]
    frames += [(bytes.fromhex(c["hex"]), *keys(c)) for c in cases]
    for raw, ek, ak in frames:
        wrong_ek, wrong_ak = bytes(b ^ 1 for b in ek), bytes(b ^ 1 for b in ak or EK)
        for k, a in ((ek, ak), (ek, None), (wrong_ek, ak), (wrong_ek, None), (ek, wrong_ak), (None, None)):
            config = ListenerConfig(port="-", key=k, auth_key=a)
            texts.append(repr(config))
            errors = []
            decoder = PushDecoder(config, on_error=errors.append)
            for msg in decoder.feed(raw) + decoder.finish():
                texts += [repr(msg), str(msg.to_json()), msg.to_meter_data().text]
            texts += [str(e) for e in errors] + [repr(e) for e in errors]
    texts.append(caplog.text)
    blob = "\n".join(texts)
    assert "tag mismatch" in blob and "check the encryption key" in blob  # the error paths did run
    for key in secrets:
        for form in (key.hex(), key.hex().upper(), repr(key), str(list(key)), key.hex(" ")):
            assert form not in blob


# ------------------------------------------------------- gurux cross-check
def gurux_decode(frame: bytes, ek: bytes, ak: bytes):
    from gurux_dlms import GXByteBuffer, GXReplyData
    from gurux_dlms.enums import InterfaceType
    from gurux_dlms.secure import GXDLMSSecureClient

    client = GXDLMSSecureClient(True, interfaceType=InterfaceType.HDLC)
    client.ciphering.blockCipherKey = ek
    client.ciphering.authenticationKey = ak
    data, notify = GXReplyData(), GXReplyData()
    with contextlib.redirect_stdout(io.StringIO()):
        client.getData(GXByteBuffer(frame), data, notify)
    assert notify.complete and notify.value is not None
    return notify


@pytest.mark.parametrize("security,segment", [(0x20, None), (0x30, None), (0x30, 40)])
def test_our_ciphered_frames_decode_in_gurux(security: int, segment) -> None:
    """gurux (its own pure-Python AES-GCM and HDLC code) reads what encode.py builds."""
    plain = sample(8, seed=security)
    frames = encode.hdlc_frames(encode.encipher(plain, EK, TITLE, 77, security, AK), max_info=segment)
    notify = gurux_decode(b"".join(frames), EK, AK)
    ours = decode_apdu(plain)
    assert [int(v) for v in notify.value] == list(ours.body)
    config = ListenerConfig(port="-", key=EK, auth_key=AK if security & 0x10 else None)
    assert decode_apdu(decode_bytes(b"".join(frames), config)[0].apdu) == ours


def test_gurux_accepts_a_wrong_authentication_key_we_do_not() -> None:
    """The reason for doing the crypto ourselves (docs: gurux never compares the tag)."""
    frame = encode.hdlc_frames(encode.encipher(sample(), EK, TITLE, 5, 0x30, AK))[0]
    gurux_decode(frame, EK, bytes(16))  # no complaint
    with pytest.raises(AuthenticationError):
        decode_bytes(frame, ListenerConfig(port="-", key=EK, auth_key=bytes(16)))


def test_strict_decode_raises_and_lenient_counts() -> None:
    frame = encode.hdlc_frames(encode.encipher(sample(), EK, TITLE, 5, 0x30, AK))[0]
    with pytest.raises(DlmsError):
        decode_bytes(frame, ListenerConfig(port="-", key=bytes(16)))
    decoder = PushDecoder(ListenerConfig(port="-", key=EK, auth_key=bytes(16)))
    assert decoder.feed(frame) == []
    assert decoder.stats.get("tag_failures") == 1 and isinstance(decoder.last_error, AuthenticationError)
    decoder = PushDecoder(ListenerConfig(port="-", key=bytes(16)))
    assert decoder.feed(frame) == []
    assert decoder.stats.get("decrypt_failures") == 1
    decoder = PushDecoder(ListenerConfig(port="-"))
    assert decoder.feed(frame) == []
    assert decoder.stats.get("decrypt_failures") == 1 and isinstance(decoder.last_error, MissingKeyError)


def test_the_decoder_notes_the_aes_engine_once(caplog: pytest.LogCaptureFixture) -> None:
    """Which library deciphers is noted once per meter, at info level, with the first ciphered
    push; the decoder logs nothing itself (sans-io: its driver logs the notes)."""
    frames = [encode.hdlc_frames(encode.encipher(sample(seed=n), EK, TITLE, 5 + n, 0x30, AK))[0] for n in range(3)]
    said = []
    with caplog.at_level(logging.DEBUG):
        plain = PushDecoder(ListenerConfig(port="-"))
        assert len(plain.feed(encode.hdlc_frames(sample())[0])) == 1  # a plain meter says nothing
        assert plain.take_notes() == []
        for _meter in range(2):
            decoder = PushDecoder(ListenerConfig(port="-", key=EK, auth_key=AK))
            for frame in frames:
                assert len(decoder.feed(frame)) == 1
            said += decoder.take_notes()
    assert said == [("info", f"deciphering AES-GCM with {gcm.engine().name}")] * 2
    assert caplog.records == []
    assert EK.hex() not in str(said).lower() and AK.hex() not in str(said).lower()


# ------------------------------------------------------- published authentication keys
SMARTY_AK = bytes.fromhex("00112233445566778899AABBCCDDEEFF")  # the Luxembourg companion standard's


def _smarty_frames(auth_key: bytes, n: int = 4, ic: int = 700, key: bytes = EK) -> list:
    """Luxembourg P1 ("Smarty"): a DSMR telegram as a bare general-glo-ciphering APDU, 0x30."""
    from test_push_profiles import _telegram
    frames = []
    for i in range(n):
        telegram = _telegram(["1-3:0.2.8(42)", f"0-0:1.0.0(2312051200{i:02d}W)", f"1-0:1.8.0({7112944 + i:09d}*Wh)",
                              f"1-0:1.7.0(01.{68 + i:03d}*kW)"])
        frames.append(encode.encipher(telegram, key, b"SAG\x10\x00\x00\x00\x07", ic + i, 0x30, auth_key))
    return frames


def test_a_published_authentication_key_verifies_the_tags_and_is_then_required(caplog) -> None:
    """A Luxembourg meter's key alone: its tags verify with the published authentication key, and
    once they did, a frame whose tag fails is refused as with a configured authentication key."""
    frames = _smarty_frames(SMARTY_AK)
    decoder = PushDecoder(ListenerConfig(port="-", key=EK))
    msgs = [m for f in frames[:3] for m in decoder.feed(f)]
    assert [m.tag_verified for m in msgs] == [True, True, True]
    assert [m.to_meter_data().get("1.8.0").value for m in msgs] == [7112944, 7112945, 7112946]
    notes = str(decoder.take_notes())
    assert "published Luxembourg (Smarty) authentication key" in notes
    assert SMARTY_AK.hex() not in notes.lower() and EK.hex() not in notes.lower()
    tampered = bytearray(frames[3])
    tampered[-1] ^= 0x01  # the tag's last byte: the plaintext is intact, only the tag fails
    assert decoder.feed(bytes(tampered)) == []
    assert isinstance(decoder.last_error, AuthenticationError) and decoder.stats.get("tag_failures") == 1


def test_a_meter_with_its_own_authentication_key_is_read_as_before() -> None:
    """Tags that the published key does not verify are no error without an auth_key: read as
    encrypted (tag not verified), and after three such messages the published key is not tried again."""
    frames = _smarty_frames(AK, n=5)
    decoder = PushDecoder(ListenerConfig(port="-", key=EK))
    msgs = [m for f in frames for m in decoder.feed(f)]
    assert [m.tag_verified for m in msgs] == [None] * 5 and decoder.stats.get("tag_failures") == 0
    assert decoder.auth_key is None and decoder._published is None
    # with the meter's own key configured, the published one plays no part
    own = PushDecoder(ListenerConfig(port="-", key=EK, auth_key=AK))
    assert [m.tag_verified for f in _smarty_frames(AK) for m in own.feed(f)] == [True] * 4
    with pytest.raises(AuthenticationError):
        decode_bytes(_smarty_frames(SMARTY_AK, n=1)[0], ListenerConfig(port="-", key=EK, auth_key=AK))
