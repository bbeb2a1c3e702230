"""AES-128-GCM deciphering of pushed APDUs (DLMS security suite 0/1).

Handles general-glo-ciphering (``DB``), general-ded-ciphering (``DC``, same layout) and
general-ciphering (``DD``, key-info absent or identified key). The security control byte
decides what is done:

* ``0x20``/``0x21`` encryption only: GCM without a tag is AES-CTR starting at the counter
  block ``IV || 00000002`` (IV = system title || invocation counter).
* ``0x30``/``0x31`` authenticated encryption: with the authentication key configured the
  12-byte tag is verified (AAD = SC || AK) and a mismatch raises ``AuthenticationError``.
  Many operators hand out only the encryption key (the GUEK); then the frame is decrypted and
  the result says ``tag_verified=None`` (not verified), as amsreader does (user pain #2).
  gurux accepts any authentication key silently, which is why this module exists.
* ``0x10`` authentication only: plaintext with a GMAC tag, verified when both keys are set.

Deciphering is one call to the AES-GCM engine of ``gcm`` (Python's own OpenSSL, or
cryptography): it gives the plaintext and whether the frame's 12-byte tag is right, compared in
constant time (OpenSSL in one pass; cryptography's ``AESGCM.decrypt`` would want GCM's full
16-byte tag, so that engine recomputes the tag over the plaintext).

A wrong encryption key gives random bytes, so the plaintext must be exactly one well-formed
push APDU (or a DSMR text telegram: ``/``, printable lines, ``!``); otherwise
``DecryptionError`` says the key is probably wrong (user pain #3: a wrong key must not look
like "no data"). Key bytes never appear in messages or logs.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any, Dict, Optional, Tuple

from ..errors import (AuthenticationError, ConfigurationError, DecodeError, DecryptionError, DowngradeError,
                      DlmsError, MissingKeyError, PlaintextRejectedError, ReplayError, SecurityError)
from ..model import frozen_of
from . import gcm
from .apdu import notification_header, parse_datetime
from .wrapper import (CIPHERED_TAGS, DED_CIPHERING, GENERAL_CIPHERING, GLO_CIPHERING, is_complete_apdu,
                      valid_security_control)

# ``cryptography`` serves encoding (simulator, tests) here and is imported on first use: stock
# Venus OS does not ship it (opkg feed only), and a plain meter or --check-config must not need
# it. ``Cipher`` below passes the backend 2.8 (Venus 3.0x-3.5x) still wants. Deciphering uses
# ``gcm.engine()``, which needs no cryptography where Python's OpenSSL is usable.


def _load(name: str) -> ModuleType:
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise SecurityError("encrypting (simulator, tests) needs the Python package cryptography, which is not "
                            "installed", gcm.CRYPTO_FIX) from None


class _Lazy:
    """A cryptography module, imported when an attribute is first used."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: Optional[ModuleType] = None

    def __getattr__(self, attr: str) -> Any:
        if self._module is None:
            self._module = _load(self._name)
        value = getattr(self._module, attr)
        setattr(self, attr, value)  # later lookups find it directly (this is called only on a miss)
        return value


algorithms: Any = _Lazy("cryptography.hazmat.primitives.ciphers.algorithms")
modes: Any = _Lazy("cryptography.hazmat.primitives.ciphers.modes")
_ciphers: Any = _Lazy("cryptography.hazmat.primitives.ciphers")
_backends: Any = _Lazy("cryptography.hazmat.backends")
_package: Any = _Lazy("cryptography")
#: whether this cryptography wants the backend argument (before 3.1); None: not asked yet
_NEEDS_BACKEND: Optional[bool] = None


def _needs_backend() -> bool:
    global _NEEDS_BACKEND
    if _NEEDS_BACKEND is None:
        try:
            major, minor = (int(part) for part in str(_package.__version__).split(".")[:2])
            _NEEDS_BACKEND = (major, minor) < (3, 1)
        except ValueError:  # an unusual version string: the backend argument works everywhere
            _NEEDS_BACKEND = True
    return _NEEDS_BACKEND


def Cipher(algorithm: Any, mode: Any) -> Any:  # noqa: N802 - drop-in for cryptography's Cipher
    """cryptography's Cipher, with a backend only where it is required (2.x, Venus OS 3.0x-3.5x):
    loading the backend costs cryptography 42 about 9 MB and 37 modules it never uses here."""
    if _needs_backend():
        return _ciphers.Cipher(algorithm, mode, backend=_backends.default_backend())
    return _ciphers.Cipher(algorithm, mode)

TAG_LEN = 12


@dataclass(frozen=True)
class Deciphered:
    """The plaintext APDU and what was proven about it. Holds no key material."""

    apdu: bytes
    ciphered: bool
    tag_verified: Optional[bool]  # True verified, None not verified (no tag or no AK); a failure raises
    security_control: Optional[int]
    system_title: Optional[bytes]
    invocation_counter: Optional[int]


@dataclass(frozen=True)
class CipheredApdu:
    """The parts of a ciphered APDU (no decryption done)."""

    tag: int
    system_title: bytes
    security_control: int
    invocation_counter: int
    body: bytes  # ciphertext, or plaintext for authentication-only; tag removed
    auth_tag: bytes
    extra_aad: bytes  # general-ciphering fields covered by the tag (suite 1/2), else b""


def _length(data: bytes, i: int) -> Tuple[int, int]:
    if i >= len(data):
        raise DecodeError("ciphered APDU truncated", "damaged frame")
    first = data[i]
    if first < 0x80:
        return first, i + 1
    n = first & 0x7F
    if n == 0 or n > 4 or i + 1 + n > len(data):
        raise DecodeError("ciphered APDU has a malformed length", "damaged frame")
    return int.from_bytes(data[i + 1:i + 1 + n], "big"), i + 1 + n


def _octets(data: bytes, i: int) -> Tuple[bytes, int]:
    n, i = _length(data, i)
    if i + n > len(data):
        raise DecodeError("ciphered APDU truncated", "damaged frame")
    return data[i:i + n], i + n


def parse_ciphered(apdu: bytes) -> CipheredApdu:
    """Split a DB/DC/DD APDU; DecodeError when its lengths do not add up."""
    tag = apdu[0]
    extra = b""
    if tag in (GLO_CIPHERING, DED_CIPHERING):
        if len(apdu) > 10 and apdu[1] == 8:  # (the system title, as every meter sends it)
            title, i = apdu[2:10], 10
        else:
            title, i = _octets(apdu, 1)
    elif tag == GENERAL_CIPHERING:
        start = 1
        _, i = _octets(apdu, start)  # transaction-id
        title, i = _octets(apdu, i)  # originator-system-title
        _, i = _octets(apdu, i)  # recipient-system-title
        _, i = _octets(apdu, i)  # date-time
        _, i = _octets(apdu, i)  # other-information
        fields_end = i
        if i >= len(apdu):
            raise DecodeError("general-ciphering APDU truncated", "damaged frame")
        if apdu[i] == 0x01:
            if i + 2 < len(apdu) and apdu[i + 1] == 0x00:
                i += 3  # identified-key, key-id (global unicast or broadcast key: the configured one)
            else:
                raise SecurityError("general-ciphering with a wrapped or agreed key is not supported",
                                    "configure the meter to use the global unicast key")
        elif apdu[i] == 0x00:
            i += 1
        else:
            raise DecodeError("general-ciphering key-info malformed", "damaged frame")
        extra = apdu[start:fields_end]
    else:
        raise DecodeError(f"APDU 0x{tag:02x} is not ciphered", "internal error: report it")
    if len(title) != 8:
        raise DecodeError(f"system title has {len(title)} bytes, not 8", "damaged frame")
    content, end = _octets(apdu, i)
    if end != len(apdu):
        raise DecodeError("ciphered APDU length does not match the frame", "damaged frame")
    if len(content) < 5:
        raise DecodeError("ciphered APDU too short", "damaged frame")
    sc = content[0]
    if not valid_security_control(sc):
        raise SecurityError(f"security control byte 0x{sc:02x} is not supported",
                            "only suites 0/1 with authentication and/or encryption, no compression, are")
    ic = int.from_bytes(content[1:5], "big")
    body = content[5:]
    auth_tag = b""
    if sc & 0x10:
        if len(body) < TAG_LEN:
            raise DecodeError("ciphered APDU shorter than its authentication tag", "damaged frame")
        body, auth_tag = body[:-TAG_LEN], body[-TAG_LEN:]
    if not (sc & 0x0F) or tag != GENERAL_CIPHERING:
        extra = b""
    return frozen_of(CipheredApdu, {"tag": tag, "system_title": title, "security_control": sc, "invocation_counter": ic,
                                    "body": body, "auth_tag": auth_tag, "extra_aad": extra})


def _dsmr_plausible(text: bytes) -> bool:
    """A DSMR/P1 text telegram: ``/`` first, printable ASCII lines, a ``!`` end mark.

    Its CRC is checked by ``payload.interpret_text``; this only tells text from random bytes.
    """
    if not text.startswith(b"/") or b"!" not in text:
        return False
    return not any((b < 0x20 or b > 0x7E) and b not in (0x0D, 0x0A) for b in text)


def _begins_as_push(plain: bytes) -> bool:
    """The plaintext starts as a data-notification with a valid COSEM date-time (the header
    every such push has; random bytes pass about once in 10^9): the encryption key fits, so a
    plaintext that is no complete APDU was damaged or cut (a lost or foreign segment), not
    deciphered with a wrong key."""
    try:
        at, _body = notification_header(plain)  # (the header as the APDU decoder reads it)
    except DecodeError:
        return False
    return at is not None and parse_datetime(plain[at:at + 12]) is not None


def _not_an_apdu(plain: bytes, tag_failed: bool) -> DlmsError:
    """The error for a plaintext that is no APDU: a wrong key, or a damaged message the key fits."""
    if _begins_as_push(plain):
        return DecodeError(f"the deciphered push begins right (the key fits) but is no complete APDU"
                           f"{' and its tag does not verify' if tag_failed else ''}: the message was damaged "
                           "or a segment is missing or belongs to another push",
                           "check the wiring; a capture must hold all segments of one push, in order")
    if tag_failed:
        return DecryptionError("authentication tag mismatch and the decrypted data is not a valid APDU",
                               "check the encryption key")
    return DecryptionError("decrypted data is not a valid APDU", "check the encryption key")


def _tag_failure(plain: bytes) -> DlmsError:
    """Tell a wrong authentication key from a wrong encryption key after a tag mismatch (0x30).

    The tag covers both keys, so it alone cannot say which one is wrong; the plaintext (deciphered
    without it) can: a plaintext that is a well-formed APDU proves the encryption key (random
    bytes pass that test about once in 10^6), so the authentication key is wrong, or a byte was
    damaged.
    """
    if is_complete_apdu(plain) or _dsmr_plausible(plain):
        return AuthenticationError("authentication tag mismatch (the encryption key fits)",
                                   "check the authentication key")
    return _not_an_apdu(plain, tag_failed=True)


#: authentication keys that grid operators publish instead of handing one out with the key: the
#: Luxembourg P1 port ("Smarty", DSMR text under security 0x30) authenticates with this one (the
#: AAD 0x30 || 00112233...EEFF of the Luxembourg companion standard)
PUBLISHED_AUTH_KEYS: Tuple[Tuple[str, bytes], ...] = (
    ("Luxembourg (Smarty)", bytes.fromhex("00112233445566778899AABBCCDDEEFF")),)


def decipher(apdu: bytes, key: Optional[bytes], auth_key: Optional[bytes],
             published: Optional[bytes] = None) -> Deciphered:
    """Decrypt (and verify, when possible) a ciphered APDU; pass a plain one through unchanged.

    ``published``: with no ``auth_key``, a published authentication key (``PUBLISHED_AUTH_KEYS``)
    to try the tag with; a tag it does not verify is not an error (the meter may use its own
    key): the message is then as without an authentication key, ``tag_verified`` None.
    Raises MissingKeyError, AuthenticationError, DecryptionError, DecodeError, SecurityError.
    """
    if not apdu or apdu[0] not in CIPHERED_TAGS:
        return frozen_of(Deciphered, {"apdu": bytes(apdu), "ciphered": False, "tag_verified": None,
                                      "security_control": None, "system_title": None, "invocation_counter": None})
    p = parse_ciphered(bytes(apdu))
    sc = p.security_control
    iv = p.system_title + p.invocation_counter.to_bytes(4, "big")
    verified: Optional[bool] = None
    tag_key = auth_key or published  # (a mismatch is an error only with the configured one)
    if sc & 0x20:
        if not key:
            raise MissingKeyError("frame is encrypted but no key is configured",
                                  "set key (the GUEK from your grid operator; CLI: --key)")
        if sc & 0x10 and tag_key:  # one pass: the plaintext, and whether the tag is right
            plain, verified = gcm.engine().decrypt(key, iv, p.body, bytes([sc]) + tag_key + p.extra_aad, p.auth_tag)
            if not verified:
                if auth_key:
                    raise _tag_failure(plain)
                verified = None  # (the GCM plaintext does not depend on the authentication key)
        else:
            plain = gcm.engine().decrypt(key, iv, p.body, None, None)[0]
    else:  # authentication only: the body is the plaintext
        plain = p.body
        if key and tag_key:
            if gcm.engine().decrypt(key, iv, b"", bytes([sc]) + tag_key + p.extra_aad + plain, p.auth_tag)[1]:
                verified = True
            elif auth_key:
                raise AuthenticationError("authentication tag mismatch", "check the authentication key")
    # A verified tag proves the keys; otherwise the plaintext must look like an APDU, because
    # a wrong encryption key yields random bytes (the APDU decoder then judges the content).
    if not verified and not (is_complete_apdu(plain) or _dsmr_plausible(plain)):
        raise _not_an_apdu(plain, tag_failed=False)
    return frozen_of(Deciphered, {"apdu": plain, "ciphered": True, "tag_verified": verified, "security_control": sc,
                                  "system_title": p.system_title, "invocation_counter": p.invocation_counter})


#: policy levels (ListenerConfig.security) as ranks: what a message must at least carry
RANKS = {"any": 0, "encrypted": 1, "authenticated": 2}
_NAMES = {0: "plaintext", 1: "encryption without a verified tag", 2: "an authentication tag"}
#: consecutive increasing frames below the last invocation counter that prove a meter reset
RESET_AFTER = 3
#: system titles remembered per meter (a bound, not a limit a real line reaches)
MAX_TITLES = 16


def protection(d: Deciphered) -> int:
    """What a message proved: 0 nothing (plain, or 0x10 without keys), 1 encrypted, 2 tag verified."""
    if d.tag_verified:
        return 2
    return 1 if d.ciphered and (d.security_control or 0) & 0x20 else 0


def claimed(d: Deciphered) -> int:
    """What the security control byte announces: 0 plain, 1 encryption only, 2 with a tag."""
    sc = d.security_control or 0
    return 2 if sc & 0x10 else 1 if sc & 0x20 else 0


@dataclass
class _Counter:
    last: int  # the last accepted invocation counter
    timestamp: object = None  # meter time of that message (a reset must not go back in time)
    pending: Optional[Tuple[int, int]] = None  # (last counter, count) of a run below ``last``


class SecurityPolicy:
    """Per-meter security policy: minimum protection and an increasing invocation counter.

    ``level`` is ``ListenerConfig.security``. With ``"auto"``, a meter with an authentication key
    must send verified tags, one with only an encryption key must encrypt, and a meter never
    gets below the strongest security control it has sent (a 0x30 meter that suddenly sends 0x20
    is a downgrade). ``admit`` is called for a message that decoded completely, so a damaged
    frame never moves the state; it raises PlaintextRejectedError, DowngradeError or
    ReplayError, and returns a line to log when a counter reset was accepted.
    """

    def __init__(self, level: str = "auto", key: Optional[bytes] = None, auth_key: Optional[bytes] = None,
                 reset_after: int = RESET_AFTER) -> None:
        if level != "auto" and level not in RANKS:
            raise SecurityError(f"security level {level!r} unknown", "use auto, any, encrypted or authenticated")
        if level == "authenticated" and not auth_key:
            raise ConfigurationError("security 'authenticated' needs the authentication key",
                                     "set auth_key, or security: encrypted (CLI: --auth-key, --security encrypted)")
        self.level = level
        self.reset_after = max(1, reset_after)
        if level == "auto":
            self.minimum = 2 if auth_key else 1 if key else 0
        else:
            self.minimum = RANKS[level]
        self.seen = 0  #: the strongest security control accepted so far (auto only)
        self._counters: Dict[bytes, _Counter] = {}

    @property
    def required(self) -> int:
        return max(self.minimum, self.seen) if self.level == "auto" else self.minimum

    def admit(self, d: Deciphered, timestamp: object = None) -> Optional[str]:
        """Accept a decoded message or raise why not (see the class docstring)."""
        have, announced = protection(d), claimed(d)
        if not d.ciphered and (self.minimum or self.seen):
            raise PlaintextRejectedError(
                "unencrypted push rejected: this meter is configured with keys",
                "if it really sends plaintext, set security: any (CLI: --security any), or remove the keys")
        if have < self.minimum or (self.level == "auto" and announced < self.seen):
            raise self._downgrade(d, have, announced)
        note = self._counter(d, timestamp)
        if self.level == "auto":
            self.seen = max(self.seen, announced)
        return note

    def _downgrade(self, d: Deciphered, have: int, announced: int) -> DowngradeError:
        """Why a push with less protection than required is refused, and what to do: a meter that
        sent tags before and now does not may be an attacker's frame; one that never sent a tag
        while auth_key is set is the usual case of a key pasted into both fields."""
        sc = d.security_control or 0
        cause = (f"push with security 0x{sc:02x} ({_NAMES[min(have, announced)]}) rejected: "
                 f"this meter must send {_NAMES[self.required]}")
        if self.level == "auto" and announced < self.seen:
            return DowngradeError(cause + f" (it sent {_NAMES[self.seen]} before)",
                                  "a frame without the protection the meter used may be forged; if the meter was "
                                  "reconfigured, restart the reader (and for security 0x20 set security: encrypted, "
                                  "CLI: --security encrypted)")
        if self.level == "auto" and self.minimum == 2 and announced == 1:
            return DowngradeError(cause + " (auth_key is set, but the meter sends no tag)",
                                  "remove auth_key (operators often hand out one key, which belongs in key only), "
                                  "or set security: encrypted (CLI: leave out --auth-key, or --security encrypted)")
        return DowngradeError(cause, "if the meter only sends security 0x20, set security: encrypted "
                                     "(CLI: --security encrypted)")

    def _counter(self, d: Deciphered, timestamp: object) -> Optional[str]:
        title, ic = d.system_title, d.invocation_counter
        if not d.ciphered or title is None or ic is None:
            return None
        state = self._counters.get(title)
        if state is None:
            if len(self._counters) >= MAX_TITLES:
                del self._counters[next(iter(self._counters))]
            self._counters[title] = _Counter(ic, timestamp)
            return None
        if ic > state.last:
            state.last, state.timestamp, state.pending = ic, timestamp, None
            return None
        older = timestamp is not None and state.timestamp is not None and _before(timestamp, state.timestamp)
        run = state.pending
        if older or ic == state.last:
            state.pending = None  # an old or repeated frame: a replay, no evidence of a reset
        elif run is not None and ic > run[0]:
            state.pending = (ic, run[1] + 1)
        else:
            state.pending = (ic, 1)
        if state.pending is not None and state.pending[1] >= self.reset_after:
            was = state.last
            self._counters[title] = _Counter(ic, timestamp)
            return (f"invocation counter of system title {title.hex().upper()} restarted at {ic} (was {was}): "
                    "the meter was replaced or reset; accepted after "
                    f"{self.reset_after} increasing frames")
        left = self.reset_after - (state.pending[1] if state.pending else 0)
        raise ReplayError(
            f"invocation counter {ic} is not above {state.last}, the last accepted from this meter",
            f"a replayed or reordered frame; after a meter reset {left} more increasing frame(s) are needed")


def _before(a: object, b: object) -> bool:
    try:
        return bool(a < b)  # type: ignore[operator]
    except TypeError:  # naive and aware date-times: cannot tell
        return False


__all__ = ["Deciphered", "CipheredApdu", "parse_ciphered", "decipher", "PUBLISHED_AUTH_KEYS", "TAG_LEN", "Cipher",
           "algorithms", "modes", "SecurityPolicy", "RANKS", "protection", "claimed", "RESET_AFTER"]
