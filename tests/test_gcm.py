"""The AES-GCM engines deciphering uses: OpenSSL through ctypes and cryptography, each against NIST's
published vectors and against the other, from several threads at once; how one is chosen; and
that a missing or broken engine is a clear error, never a wrong plaintext."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, List

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlms_protocol.dlms import gcm
from dlms_protocol.dlms.security import decipher
from dlms_protocol.errors import SecurityError

ROOT = Path(__file__).resolve().parent.parent

#: NIST GCM (McGrew/Viega) AES-128 test cases 1-3 (case 4 is the engines' own load check):
#: key, IV, plaintext, AAD, ciphertext, tag
NIST = [
    ("00000000000000000000000000000000", "000000000000000000000000", "", "", "",
     "58e2fccefa7e3061367f1d57a4e7455a"),
    ("00000000000000000000000000000000", "000000000000000000000000", "00000000000000000000000000000000", "",
     "0388dace60b6a392f328c2b971b2fe78", "ab6e47d42cec13bdf53a67b21257bddf"),
    ("feffe9928665731c6d6a8f9467308308", "cafebabefacedbaddecaf888",
     "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de6"
     "57ba637b391aafd255", "",
     "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac"
     "973d58e091473f5985", "4d5c2af327cd64a62cf35abd2ba6fab4"),
]


def _engines() -> List[Any]:
    out = []
    for load in (gcm.load_openssl, gcm.load_cryptography):
        try:
            out.append(load())
        except (ImportError, OSError):
            pass
    return out


ENGINES = _engines()


@pytest.fixture(params=["openssl", "cryptography"])
def engine(request: pytest.FixtureRequest) -> Any:
    found = [e for e in ENGINES if isinstance(e, (gcm.OpenSSLGcm if request.param == "openssl"
                                                  else gcm.CryptographyGcm))]
    if not found:  # an expected absence (the matrix's py38-plain has no cryptography), not a missing part
        pytest.skip(f"the {request.param} engine is not usable here")
    return found[0]


def _wrong_in_threads(right: Callable[[int, int], bool], rounds: int) -> List[int]:
    """Four threads (four meters) at once, thread n checking ``right(n, i)`` for each round i: the
    threads whose results were ever wrong."""
    bad: List[int] = []

    def run(n: int) -> None:
        bad.extend(n for i in range(rounds) if not right(n, i))

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can: a race shows every run
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    return bad


@pytest.fixture
def chosen() -> Iterator[None]:
    """Whatever a test chooses is undone: the next test chooses from the environment again."""
    gcm.reset()
    yield
    gcm.reset()


def test_this_machine_has_the_openssl_engine() -> None:
    """Linux CPython links OpenSSL: where it did not, the engine would silently be missing everywhere."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the OpenSSL engine is Linux only")
    assert any(isinstance(e, gcm.OpenSSLGcm) for e in ENGINES)
    assert gcm.load_openssl().name.startswith("OpenSSL")


@pytest.mark.parametrize("case", NIST + [tuple(x.hex() for x in gcm.NIST_CASE_4[:4]) + (
    gcm.NIST_CASE_4[4][:-16].hex(), gcm.NIST_CASE_4[4][-16:].hex())], ids=["1", "2", "3", "4"])
def test_each_engine_gives_nists_ciphertext_and_tag(engine: Any, case: tuple) -> None:
    key, iv, plain, aad, cipher, tag = (bytes.fromhex(h) for h in case)
    assert engine.encrypt(key, iv, plain, aad or None) == cipher + tag
    assert engine.encrypt(key, iv, cipher, aad or None)[:-16] == plain  # the keystream both ways


@pytest.mark.parametrize("case", NIST[1:], ids=["2", "3"])
@pytest.mark.parametrize("tag_len", [16, 12, 4])
def test_each_engine_decrypts_and_checks_a_tag_in_one_call(engine: Any, case: tuple, tag_len: int) -> None:
    """``decrypt`` gives the plaintext and whether the tag (DLMS: its first 12 bytes) is right;
    any flipped bit of ciphertext, AAD or tag makes it False, with no tag it is None."""
    key, iv, plain, _aad, cipher, tag = (bytes.fromhex(h) for h in case)
    aad = b"\x30" + bytes(range(16))
    tag = engine.encrypt(key, iv, plain, aad)[-16:][:tag_len]
    assert engine.decrypt(key, iv, cipher, aad, tag) == (plain, True)
    assert engine.decrypt(key, iv, cipher, None, None) == (plain, None)
    flip = bytes([tag[0] ^ 1]) + tag[1:]
    assert engine.decrypt(key, iv, cipher, aad, flip) == (plain, False)
    assert engine.decrypt(key, iv, cipher, aad[:-1] + b"\x00", tag)[1] is False
    damaged = bytes([cipher[0] ^ 0x80]) + cipher[1:]
    out, ok = engine.decrypt(key, iv, damaged, aad, tag)
    assert ok is False and out[0] == plain[0] ^ 0x80 and out[1:] == plain[1:]


def test_an_empty_message_is_authenticated_over_its_aad_only(engine: Any) -> None:
    """DLMS authentication only (0x10): the tag covers SC || AK || plaintext as AAD, nothing ciphered."""
    key, iv, aad = bytes(range(16)), bytes(12), b"\x10" + bytes(16) + b"the plaintext"
    tag = engine.encrypt(key, iv, b"", aad)[-16:][:12]
    assert engine.decrypt(key, iv, b"", aad, tag) == (b"", True)
    assert engine.decrypt(key, iv, b"", aad + b"!", tag) == (b"", False)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.binary(max_size=300), st.binary(max_size=30),
                                st.sampled_from(["right", "wrong", None]), st.integers(0, 2)), min_size=1, max_size=12))
def test_a_reused_context_carries_nothing_from_one_frame_to_the_next(engine: Any, steps: list) -> None:
    """The OpenSSL engine keeps a keyed context per key between calls: after right, wrong and
    missing tags, on three keys in any order, every result equals a fresh computation's."""
    keys = [bytes([k]) * 16 for k in (1, 2, 3)]
    for n, (data, aad, kind, k) in enumerate(steps):
        key, iv = keys[k], n.to_bytes(12, "big")
        plain = engine.encrypt(key, iv, data, None)[:-16]  # what data deciphers to
        tag = engine.encrypt(key, iv, plain, aad)[-16:][:12]
        if kind == "wrong":
            tag = bytes([tag[0] ^ 0x40]) + tag[1:]
        got = engine.decrypt(key, iv, data, aad, None if kind is None else tag)
        assert got == (plain, None if kind is None else kind == "right")


def test_a_long_apdu_gets_a_buffer_of_its_own(engine: Any) -> None:
    """A GBT-assembled list can be longer than a pooled context's buffer (2 KB)."""
    key, iv, aad = bytes(range(16)), bytes(12), b"\x30" + bytes(16)
    for size in (2032, 2033, 5000):
        data = bytes(range(256)) * (size // 256) + bytes(size % 256)
        sealed = engine.encrypt(key, iv, data, aad)
        assert engine.decrypt(key, iv, sealed[:-16], aad, sealed[-16:][:12]) == (data, True)


def test_a_result_is_copied_before_its_context_serves_another_frame() -> None:
    """The OpenSSL engine pools a keyed context with its output buffer. It returned the slot to the
    pool and copied the plaintext out of the buffer afterwards: another thread (another meter with
    the same key) that took the slot in between wrote its plaintext there first, and the frame came
    back with that plaintext and its own verified tag (seen on Python 3.8, about once in 5000 calls
    with four threads). Here the other frame is deciphered right when the slot is pooled again."""
    found = [e for e in ENGINES if isinstance(e, gcm.OpenSSLGcm)]
    if not found:
        pytest.skip("the openssl engine is not usable here")
    engine = found[0]
    key, aad = bytes(range(16)), b"\x30" + bytes(16)
    mine, other = (bytes(12), b"\x01" * 100), (b"\x00" * 11 + b"\x01", b"\x02" * 100)
    sealed = {iv: engine.encrypt(key, iv, data, aad) for iv, data in (mine, other)}
    engine.decrypt(key, mine[0], sealed[mine[0]][:-16], aad, sealed[mine[0]][-16:][:12])  # a pooled slot
    give = engine._give

    def pooled_then_taken(k: bytes, slot: Any) -> None:
        give(k, slot)
        del engine._give  # (once: the method again)
        assert engine.decrypt(k, other[0], sealed[other[0]][:-16], aad, sealed[other[0]][-16:][:12]) == \
            (other[1], True)

    engine._give = pooled_then_taken  # type: ignore[method-assign]
    try:
        got = engine.decrypt(key, mine[0], sealed[mine[0]][:-16], aad, sealed[mine[0]][-16:][:12])
    finally:
        engine.__dict__.pop("_give", None)
    assert got == (mine[1], True)


def test_threads_deciphering_with_one_key_never_mix_their_results(engine: Any) -> None:
    key, aad = bytes(range(16)), b"\x30" + bytes(16)
    frames = {n: (n.to_bytes(12, "big"), bytes([n]) * (60 + 40 * n)) for n in range(4)}
    sealed = {n: engine.encrypt(key, iv, data, aad) for n, (iv, data) in frames.items()}

    def right(n: int, i: int) -> bool:
        tag = sealed[n][-16:][:12] if i % 3 else bytes(12)  # every third one wrong
        return engine.decrypt(key, frames[n][0], sealed[n][:-16], aad, tag) == (frames[n][1], bool(i % 3))

    assert _wrong_in_threads(right, 300) == []


def test_any_bytes_like_input_gives_the_same_result(engine: Any) -> None:
    """bytearray and memoryview arguments (the untyped OpenSSL calls take bytes) give what bytes give."""
    key, iv, aad, data = bytes(range(16)), bytes(range(12)), b"\x30" + bytes(16), bytes(range(100))
    tag = engine.encrypt(key, iv, engine.decrypt(key, iv, data, None, None)[0], aad)[-16:][:12]
    want = engine.decrypt(key, iv, data, aad, tag)
    assert want[1] is True
    for kind in (bytearray, memoryview):
        assert engine.decrypt(kind(key), kind(iv), kind(data), kind(aad), kind(tag)) == want
    with pytest.raises(TypeError):
        engine.decrypt(key, iv, "text", aad, tag)


@pytest.mark.parametrize("tag", [b"", b"abc", bytes(17)])
def test_a_tag_of_another_size_is_refused(engine: Any, tag: bytes) -> None:
    with pytest.raises(ValueError, match="4 to 16"):
        engine.decrypt(bytes(16), bytes(12), b"x", b"aad", tag)


@settings(max_examples=100, deadline=None)
@given(key=st.binary(min_size=16, max_size=16), iv=st.binary(min_size=12, max_size=12),
       data=st.binary(max_size=400), aad=st.binary(max_size=40), tag=st.binary(min_size=12, max_size=12),
       right=st.booleans())
def test_the_engines_agree_on_decrypting_anything(key: bytes, iv: bytes, data: bytes, aad: bytes, tag: bytes,
                                                  right: bool) -> None:
    if len(ENGINES) < 2:
        pytest.skip("needs both engines")
    a, b = ENGINES
    if right:
        tag = a.encrypt(key, iv, a.decrypt(key, iv, data, None, None)[0], aad)[-16:][:12]
    assert a.decrypt(key, iv, data, aad, tag) == b.decrypt(key, iv, data, aad, tag)
    assert a.decrypt(key, iv, data, aad, tag)[1] is (right or tag == a.encrypt(
        key, iv, a.decrypt(key, iv, data, None, None)[0], aad)[-16:][:12])


@settings(max_examples=150, deadline=None)
@given(key=st.binary(min_size=16, max_size=16), iv=st.binary(min_size=12, max_size=12),
       data=st.binary(max_size=600), aad=st.one_of(st.none(), st.binary(max_size=80)))
def test_the_engines_agree_on_any_input(key: bytes, iv: bytes, data: bytes, aad: Any) -> None:
    if len(ENGINES) < 2:
        pytest.skip("needs both engines")
    a, b = ENGINES
    assert a.encrypt(key, iv, data, aad) == b.encrypt(key, iv, data, aad)


def test_threads_never_mix_their_results(engine: Any) -> None:
    """One context per call: four threads (four meters) enciphering at once each get their own result."""
    want = {n: engine.encrypt(bytes([n]) * 16, bytes([n]) * 12, bytes([n]) * (100 + n), bytes([n]))
            for n in range(4)}

    def right(n: int, i: int) -> bool:
        return engine.encrypt(bytes([n]) * 16, bytes([n]) * 12, bytes([n]) * (100 + n), bytes([n])) == want[n]

    assert _wrong_in_threads(right, 400) == []


@pytest.mark.parametrize("key, iv", [(bytes(15), bytes(12)), (bytes(32), bytes(12)), (bytes(16), bytes(8)),
                                     (bytes(16), bytes(16))])
def test_the_openssl_engine_refuses_other_sizes_before_calling_openssl(key: bytes, iv: bytes) -> None:
    """OpenSSL reads 16 key and 12 IV bytes from wherever it is pointed: other sizes never reach it."""
    if not any(isinstance(e, gcm.OpenSSLGcm) for e in ENGINES):
        pytest.skip("no OpenSSL engine")
    with pytest.raises(ValueError, match="16-byte key"):
        gcm.load_openssl().encrypt(key, iv, b"data", None)
    with pytest.raises(ValueError, match="16-byte key"):
        gcm.load_openssl().decrypt(key, iv, b"data", b"aad", bytes(12))


def test_an_engine_that_fails_the_nist_vector_is_not_used(monkeypatch: pytest.MonkeyPatch, chosen: None) -> None:
    if not any(isinstance(e, gcm.OpenSSLGcm) for e in ENGINES):
        pytest.skip("no OpenSSL engine")
    if not any(isinstance(e, gcm.CryptographyGcm) for e in ENGINES):
        pytest.skip("no cryptography")
    real = gcm.OpenSSLGcm.encrypt
    monkeypatch.setattr(gcm.OpenSSLGcm, "encrypt", lambda self, *a: bytes(real(self, *a)[:-1]) + b"\0")
    with pytest.raises(OSError, match="NIST"):
        gcm.load_openssl()
    assert isinstance(gcm.reset(""), gcm.CryptographyGcm)  # auto falls back to cryptography


def test_the_environment_chooses_the_engine(monkeypatch: pytest.MonkeyPatch, chosen: None, engine: Any) -> None:
    name = "openssl" if isinstance(engine, gcm.OpenSSLGcm) else "cryptography"
    monkeypatch.setenv(gcm.ENV, f" {name.upper()} ")
    assert type(gcm.engine()) is type(engine)
    assert gcm.engine() is gcm.engine()  # chosen once


def test_auto_prefers_openssl(monkeypatch: pytest.MonkeyPatch, chosen: None) -> None:
    if not any(isinstance(e, gcm.OpenSSLGcm) for e in ENGINES):
        pytest.skip("no OpenSSL engine")
    monkeypatch.delenv(gcm.ENV, raising=False)
    assert isinstance(gcm.engine(), gcm.OpenSSLGcm)


def test_an_unknown_engine_name_says_what_to_write(monkeypatch: pytest.MonkeyPatch, chosen: None) -> None:
    monkeypatch.setenv(gcm.ENV, "pycryptodome")
    with pytest.raises(SecurityError, match="openssl or cryptography"):
        gcm.engine()


def test_no_engine_is_a_security_error_with_the_fix_and_is_not_searched_again(
        monkeypatch: pytest.MonkeyPatch, chosen: None) -> None:
    calls: List[str] = []

    def missing(name: str) -> Any:
        def load() -> Any:
            calls.append(name)
            raise ImportError(f"No module named {name}")
        return load

    monkeypatch.delenv(gcm.ENV, raising=False)
    monkeypatch.setattr(gcm, "_LOADERS", {"openssl": missing("ctypes"), "cryptography": missing("cryptography")})
    key = bytes(range(16))
    apdu = bytes.fromhex("db08") + b"TST\0\0\0\0\1" + bytes([0x21, 0x30, 0, 0, 0, 1]) + bytes(16) + bytes(12)
    for _ in range(3):
        with pytest.raises(SecurityError) as err:
            decipher(apdu, key, key)
        text = str(err.value)
        assert "opkg install python3-cryptography" in text and "cryptography is not installed" in text
        assert key.hex() not in text.lower()
    assert calls == ["ctypes", "cryptography"]  # searched once, on the first frame


@pytest.mark.parametrize("wanted, says, fix", [
    ("openssl", "Python's OpenSSL cannot be used through ctypes (openssl: no libcrypto)", "unset DLMS_AES_ENGINE"),
    ("cryptography", "the Python package cryptography is not installed (cryptography: No module",
     "opkg install python3-cryptography")])
def test_a_forced_engine_that_is_missing_names_itself(monkeypatch: pytest.MonkeyPatch, chosen: None, wanted: str,
                                                      says: str, fix: str) -> None:
    def openssl() -> Any:
        raise OSError("no libcrypto")

    def cryptography() -> Any:
        raise ImportError("No module named 'cryptography'")

    monkeypatch.setattr(gcm, "_LOADERS", {"openssl": openssl, "cryptography": cryptography})
    monkeypatch.setenv(gcm.ENV, wanted)
    with pytest.raises(SecurityError) as err:
        gcm.engine()
    assert says in err.value.cause and fix in (err.value.fix or "")
    assert ("cryptography is not installed" in err.value.cause) is (wanted == "cryptography")


def test_a_plain_process_loads_no_aes_engine() -> None:
    """Deciphering's engine is loaded on the first enciphered frame, not on import."""
    code = ("import sys; from dlms_protocol.dlms import decoder, security, gcm; "
            "print(sorted(m for m in ('ctypes', 'cryptography', '_hashlib', '_ssl') if m in sys.modules))")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
