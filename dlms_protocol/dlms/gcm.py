"""AES-128-GCM for deciphering pushes: through the OpenSSL that Python itself links, or cryptography.

Why two engines: stock Venus OS ships Python with OpenSSL's libcrypto but not cryptography
(opkg feed only), and loading cryptography costs an encrypted service about 8 MB (its binding
with its own OpenSSL), where libcrypto through ``ctypes`` costs about 4 MB of a GX driver's
30 MB. Both give what deciphering needs, ``decrypt``: GCM's plaintext of a ciphertext and
whether a (DLMS: 12-byte) tag matches it under the AAD, in one pass through OpenSSL; and
``encrypt``, GCM's ``ciphertext || 16-byte tag``.

The engine is chosen on the first enciphered frame: ``DLMS_AES_ENGINE=openssl`` or
``=cryptography`` forces one (the version matrix runs cryptography 2.8 and 42 with it);
otherwise OpenSSL is tried first (Linux only: elsewhere loading the system's libcrypto is not
safe), then cryptography. The OpenSSL engine must reproduce a NIST test vector when it is
loaded, or it is not used. Deciphering takes a context keyed for its key from a small pool,
one call at a time (``list.pop``), so threads (one per meter) never share one; a context never
sees anything but 16-byte keys and 12-byte IVs, checked before each call.
"""
from __future__ import annotations

import os
import sys
from _operator import _compare_digest  # what hmac.compare_digest is, without hmac's hashlib
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from ..errors import SecurityError

ENV = "DLMS_AES_ENGINE"
ENGINES = ("openssl", "cryptography")
#: how to get cryptography, for every message that misses it (encoding in security.py too)
CRYPTO_FIX = ("install python3-cryptography: opkg install python3-cryptography (Venus OS), pip install "
              "cryptography elsewhere; plain (unencrypted) meters do not need it")

#: NIST GCM test case 4 (AES-128, 60-byte plaintext, 20-byte AAD): key, IV, plaintext, AAD, ciphertext || tag
NIST_CASE_4 = tuple(bytes.fromhex(h) for h in (
    "feffe9928665731c6d6a8f9467308308", "cafebabefacedbaddecaf888",
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b1"
    "6aedf5aa0de657ba637b39",
    "feedfacedeadbeeffeedfacedeadbeefabaddad2",
    "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b"
    "396a0aac973d58e0915bc94fbc3221a5db94fae95ae7121a47"))

#: EVP_CIPHER_CTX_ctrl's "get tag" and "set tag" (EVP_CTRL_GCM_GET_TAG/_SET_TAG, EVP_CTRL_AEAD_*)
_GET_TAG, _SET_TAG = 0x10, 0x11
#: sonames tried when no Python module has loaded libcrypto (OpenSSL 3, 1.1, 1.0 on Red Hat, 1.0)
_SONAMES = ("libcrypto.so.3", "libcrypto.so.1.1", "libcrypto.so.10", "libcrypto.so.1.0.0")


#: contexts kept per key, and keys kept: a meter has one key and one thread; the bounds hold
#: only where many keys are used (tests)
_MAX_SLOTS, _MAX_KEYS = 4, 8
#: the most bytes one call takes (far above any APDU; c_int lengths)
_MOST = 1 << 24


class _Slot:
    """An OpenSSL context set up with one key, and its output buffer: in one call at a time.

    Why: on a push every 250 ms each ctypes call and object runs with cold caches; a pooled
    context skips allocating, keying and freeing one (4 of 9 foreign calls), and the
    preallocated buffer the ctypes types made per call, which halves deciphering's cost.
    Everything the untyped hot calls get is made here, as the ctypes object its C type needs."""

    __slots__ = ("ctx", "buf", "view", "count", "n")

    def __init__(self, ctx: Optional[int], ctypes: Any, size: int = 2048) -> None:
        self.ctx = ctypes.c_void_p(ctx)  # EVP_CIPHER_CTX *
        self.buf = bytearray(size)
        self.view = (ctypes.c_char * size).from_buffer(self.buf)  # unsigned char *out; holds the bytearray in place
        self.count = ctypes.c_int()  # OpenSSL's output length
        self.n = ctypes.pointer(self.count)  # int *outl


class OpenSSLGcm:
    """AES-128-GCM through libcrypto's EVP interface, called with ``ctypes``."""

    def __init__(self, lib: Any) -> None:
        import ctypes

        self._ctypes = ctypes
        vp, i = ctypes.c_void_p, ctypes.c_int

        def fn(name: str, res: Any, *args: Any) -> Any:
            f = getattr(lib, name)  # AttributeError: not a usable libcrypto
            f.restype, f.argtypes = res, list(args)
            return f

        self._new = fn("EVP_CIPHER_CTX_new", vp)
        self._free = fn("EVP_CIPHER_CTX_free", None, vp)
        self._init = fn("EVP_EncryptInit_ex", i, vp, vp, vp, ctypes.c_char_p, ctypes.c_char_p)
        self._update = fn("EVP_EncryptUpdate", i, vp, vp, ctypes.POINTER(i), ctypes.c_char_p, i)
        self._final = fn("EVP_EncryptFinal_ex", i, vp, vp, ctypes.POINTER(i))
        self._ctrl = fn("EVP_CIPHER_CTX_ctrl", i, vp, i, i, vp)
        self._dinit = fn("EVP_DecryptInit_ex", i, vp, vp, vp, ctypes.c_char_p, ctypes.c_char_p)
        # Deciphering's four calls per frame go without argtypes (a second function object each):
        # argtypes' conversion is half of a call's cost. Their arguments are only what ctypes passes
        # exactly as the C types: the slot's c_void_p, c_char array and int pointer, bytes (a
        # pointer to their bytes), None (NULL) and lengths (int); the default result is int.
        self._hot = tuple(lib[name] for name in (
            "EVP_DecryptInit_ex", "EVP_DecryptUpdate", "EVP_CIPHER_CTX_ctrl", "EVP_DecryptFinal_ex"))
        self._cipher = fn("EVP_aes_128_gcm", vp)()
        self._idle: Dict[bytes, List[_Slot]] = {}
        if not self._cipher:
            raise OSError("libcrypto has no AES-128-GCM")
        self.name = "OpenSSL"
        version = getattr(lib, "OpenSSL_version", None)
        if version is not None:
            version.restype, version.argtypes = ctypes.c_char_p, [i]
            self.name = (version(0) or b"OpenSSL").decode("ascii", "replace")

    def decrypt(self, key: bytes, iv: bytes, data: bytes, aad: Optional[bytes],
                tag: Optional[bytes]) -> Tuple[bytes, Optional[bool]]:
        """GCM's plaintext of ``data`` and whether ``tag`` (4-16 bytes) is its tag under ``aad``
        (None: no tag given, ``aad`` unused). OpenSSL compares the tag in constant time."""
        if type(data) is not bytes or type(iv) is not bytes or type(key) is not bytes:  # untyped calls: char *
            key, iv, data = bytes(key), bytes(iv), bytes(data)
        if aad is not None and type(aad) is not bytes or tag is not None and type(tag) is not bytes:
            aad, tag = aad if aad is None else bytes(aad), tag if tag is None else bytes(tag)
        _check(key, iv, data, tag)
        size = len(data)
        try:
            slot = self._idle[key].pop()  # atomic: two threads never get one context
        except (KeyError, IndexError):
            slot = self._slot(key)
        init, update, ctrl, final = self._hot
        ctx, n = slot.ctx, slot.n
        out = slot if size + 16 <= len(slot.buf) else _Slot(None, self._ctypes, size + 16)  # a long APDU: its own
        verified: Optional[bool] = None
        try:
            ok = init(ctx, None, None, None, iv) == 1  # the context has its key: only the IV is new
            if ok and tag is not None and aad:
                ok = update(ctx, None, n, aad, len(aad)) == 1
            if ok and size:
                ok = update(ctx, out.view, n, data, size) == 1 and slot.count.value == size
            if ok and tag is not None:
                ok = ctrl(ctx, _SET_TAG, len(tag), tag) == 1
                verified = ok and final(ctx, self._ctypes.byref(out.view, size), n) == 1  # 0: a wrong tag
        except BaseException:
            self._free(ctx)
            raise
        # the plaintext is copied out before the slot is pooled again: from then on another thread
        # may take it and write its own plaintext into the same buffer (seen on Python 3.8: a frame
        # came back with another thread's plaintext and its own verified tag)
        plain = bytes(out.buf[:size])
        if not ok or verified is False:  # a context is pooled again only after it worked
            self._free(ctx)
            if not ok:
                raise _failed()
        else:
            self._give(key, slot)
        return plain, verified

    def _slot(self, key: bytes) -> _Slot:
        ctx = self._new()
        if not ctx:
            raise MemoryError("libcrypto could not allocate a cipher context")
        if self._dinit(ctx, self._cipher, None, bytes(key), None) != 1:
            self._free(ctx)
            raise _failed()
        return _Slot(ctx, self._ctypes)

    def _give(self, key: bytes, slot: _Slot) -> None:
        idle = self._idle.get(key)
        if idle is None and len(self._idle) < _MAX_KEYS:
            idle = self._idle.setdefault(key, [])
        if idle is None or len(idle) >= _MAX_SLOTS:
            self._free(slot.ctx)
        else:
            idle.append(slot)

    def encrypt(self, key: bytes, iv: bytes, data: bytes, aad: Optional[bytes]) -> bytes:
        """GCM's ``ciphertext || 16-byte tag``, as ``AESGCM(key).encrypt(iv, data, aad)``."""
        _check(key, iv, data)
        c = self._ctypes
        out = c.create_string_buffer(len(data) + 16)
        at_tag = c.addressof(out) + len(data)
        n = c.c_int()
        ctx = self._new()
        if not ctx:
            raise MemoryError("libcrypto could not allocate a cipher context")
        try:
            ok = self._init(ctx, self._cipher, None, bytes(key), bytes(iv)) == 1  # GCM's default IV: 12 bytes
            if ok and aad:
                ok = self._update(ctx, None, c.byref(n), bytes(aad), len(aad)) == 1
            if ok and data:
                ok = self._update(ctx, out, c.byref(n), bytes(data), len(data)) == 1 and n.value == len(data)
            ok = ok and self._final(ctx, at_tag, c.byref(n)) == 1 and n.value == 0
            ok = ok and self._ctrl(ctx, _GET_TAG, 16, at_tag) == 1
        finally:
            self._free(ctx)
        if not ok:
            raise _failed()
        return out.raw


class CryptographyGcm:
    """AES-128-GCM through cryptography's ``AESGCM`` (no backend argument in any version)."""

    def __init__(self) -> None:
        import cryptography
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._make: Callable[[bytes], Any] = AESGCM
        #: AESGCM objects by key: a meter's frames all use one key. Bounded; holds configured keys only.
        self._aead: Dict[bytes, Any] = {}
        self.name = f"cryptography {getattr(cryptography, '__version__', '?')}"

    def encrypt(self, key: bytes, iv: bytes, data: bytes, aad: Optional[bytes]) -> bytes:
        if type(data) is not bytes or type(iv) is not bytes or type(key) is not bytes:  # 2.8 takes bytes only
            key, iv, data = bytes(key), bytes(iv), bytes(data)
        if aad is not None and type(aad) is not bytes:
            aad = bytes(aad)
        aead = self._aead.get(key)
        if aead is None:
            if len(self._aead) >= 8:
                self._aead.clear()
            aead = self._aead[key] = self._make(key)
        return bytes(aead.encrypt(iv, data, aad))

    def decrypt(self, key: bytes, iv: bytes, data: bytes, aad: Optional[bytes],
                tag: Optional[bytes]) -> Tuple[bytes, Optional[bool]]:
        """As ``OpenSSLGcm.decrypt``: GCM's keystream gives the plaintext (the same both ways), and
        the tag is recomputed over it and compared in constant time (``AESGCM.decrypt`` would
        want GCM's full 16-byte tag)."""
        _check(key, iv, data, tag)
        plain = self.encrypt(key, iv, data, None)[:-16]
        if tag is None:
            return plain, None
        full = self.encrypt(key, iv, plain, aad)[-16:]
        return plain, _compare_digest(full[:len(tag)], tag)


def _failed() -> SecurityError:
    return SecurityError("OpenSSL's AES-GCM failed", f"set {ENV}=cryptography to use cryptography instead")


def _check(key: bytes, iv: bytes, data: bytes, tag: Optional[bytes] = None) -> None:
    """OpenSSL reads 16 key and 12 IV bytes from wherever it is pointed: other sizes never reach it."""
    if len(key) != 16 or len(iv) != 12 or len(data) > _MOST:
        raise ValueError("AES-128-GCM takes a 16-byte key, a 12-byte IV and at most 16 MB")
    if tag is not None and not 4 <= len(tag) <= 16:
        raise ValueError("a GCM tag has 4 to 16 bytes")


def _libcrypto_paths() -> Iterator[str]:
    """The libcrypto Python itself uses first: through its OpenSSL modules (loaded ones cost
    nothing more; a module's file brings its libcrypto without running the module's set-up),
    then by soname."""
    from importlib.machinery import PathFinder

    for name in ("_hashlib", "_ssl"):
        path = getattr(sys.modules.get(name), "__file__", None)
        if path:
            yield path
    for name in ("_hashlib", "_ssl"):
        spec = PathFinder.find_spec(name)
        if spec is not None and spec.origin and spec.origin.endswith(".so"):
            yield spec.origin
    yield from _SONAMES


def _proven(engine: Any) -> Any:
    key, iv, plain, aad, sealed = NIST_CASE_4
    if engine.encrypt(key, iv, plain, aad) != sealed:
        raise OSError(f"{engine.name} fails the NIST AES-GCM test vector")
    return engine


def load_openssl() -> OpenSSLGcm:
    """The OpenSSL engine, proven on the NIST vector; OSError/ImportError when there is none."""
    if not sys.platform.startswith("linux"):
        raise OSError("the OpenSSL engine is used on Linux only")
    import ctypes

    unfit: Optional[Exception] = None  # a libcrypto that loaded but failed: what the message names
    for path in _libcrypto_paths():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        try:
            return _proven(OpenSSLGcm(lib))
        except (OSError, AttributeError) as exc:
            unfit = unfit or exc
    raise OSError(str(unfit) if unfit else f"no libcrypto found ({', '.join(_SONAMES)})")


def load_cryptography() -> CryptographyGcm:
    return _proven(CryptographyGcm())


_LOADERS: Dict[str, Callable[[], Any]] = {"openssl": load_openssl, "cryptography": load_cryptography}
_ENGINE: Optional[Any] = None
#: why no engine could be loaded: kept, so a meter's every frame does not search again
_FAILED: Optional[SecurityError] = None


def engine() -> Any:
    """The engine deciphering uses, chosen on first use (see the module's text)."""
    global _ENGINE, _FAILED
    if _ENGINE is None:
        if _FAILED is not None:
            raise _FAILED
        try:
            _ENGINE = _choose(os.environ.get(ENV, "").strip().lower())
        except SecurityError as exc:
            _FAILED = exc
            raise
    return _ENGINE


def _choose(wanted: str) -> Any:
    if wanted and wanted not in _LOADERS:
        raise SecurityError(f"{ENV}={wanted!r} is not an AES engine", f"write {' or '.join(ENGINES)}, or unset it")
    reasons = []
    for name in (wanted,) if wanted else ENGINES:
        try:
            return _LOADERS[name]()
        except (ImportError, OSError) as exc:
            reasons.append(f"{name}: {exc}")
    missing = {"openssl": "Python's OpenSSL cannot be used through ctypes",
               "cryptography": "the Python package cryptography is not installed"}
    cause = " and ".join(missing[name] for name in ((wanted,) if wanted else ENGINES))
    fix = f"unset {ENV} (the other engine is tried then)" if wanted == "openssl" else CRYPTO_FIX
    raise SecurityError(f"this frame is encrypted but {cause} ({'; '.join(reasons)})", fix)


def reset(wanted: Optional[str] = None) -> Any:
    """Choose again (tests; ``wanted`` as the environment variable); returns the new engine."""
    global _ENGINE, _FAILED
    _ENGINE, _FAILED = None, None
    if wanted is not None:
        _ENGINE = _choose(wanted)
    return _ENGINE
