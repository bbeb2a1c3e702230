"""The one error hierarchy of dlms_protocol.

Every error says what went wrong *and* what the user can do about it, because the people
reading these messages stand in front of a meter with an IR head or an RS485 adapter, not
in front of a debugger. Each class has a ``stat`` name: the counter that adapters increment
when they catch it, so that statistics tell a wrong key from a noisy line from a silent meter.

Key material never appears in any message: errors about keys name the key *field*
(``key``, ``auth_key``) and its length, never its bytes.

Hierarchy::

    DlmsError
    ├── ConfigurationError          bad option, bad key format, unknown profile name
    ├── TransportError              port cannot be opened, vanished, write failed
    ├── ProtocolError               the bytes broke a rule of the protocol
    │   ├── NoResponseError         nothing (or not enough) arrived in time
    │   ├── IdentificationError     sign-on answer is not an identification message
    │   ├── FramingError            frame structure wrong (lengths, flags, missing parts)
    │   │   └── IncompleteMessageError  a multi-frame message lost a part: dropped, never spliced
    │   ├── ChecksumError           BCC / HCS / FCS / M-Bus checksum mismatch
    │   │   └── ChecksumMissingError    (also a FramingError) a checksum is missing, its framing damaged
    │   ├── AssociationError        the meter refused the association (AARE): client address, password
    │   └── AccessError             the meter refused to hand out an object's attribute
    ├── SecurityError
    │   ├── MissingKeyError         ciphered frame, no key configured
    │   ├── AuthenticationError     GCM tag mismatch: wrong authentication key
    │   ├── DecryptionError         plaintext is not an APDU: wrong encryption key
    │   ├── PlaintextRejectedError  unencrypted push although keys are configured
    │   ├── DowngradeError          weaker security than the meter's policy (0x20 where a tag is due)
    │   └── ReplayError             invocation counter not increasing: replayed or reordered frame
    └── DecodeError                 APDU / COSEM data cannot be decoded
        └── UnknownLayoutError      no profile fits a positional frame
"""
from __future__ import annotations

from typing import Optional


class DlmsError(Exception):
    """Base of every error raised by dlms_protocol.

    ``cause`` is the sentence a user reads first, ``fix`` what to try. ``str(err)`` joins them
    as ``"<cause>: <fix>"``, which is the form the issue tracker and the log lines use.
    """

    stat = "errors"
    #: True for the bytes before the first frame after a port was opened (listening began inside a
    #: message; ``dlms.decoder.PushDecoder`` sets it): counted and said, but no failure of the
    #: meter for a status page, because every start into a running line brings one
    lead_in = False
    #: the link-layer check (``"HDLC FCS"``, ...) the frame passed whose content failed: a security
    #: error behind one is this line's meter, only without the right key (``AutoDecoder``)
    link_check: Optional[str] = None

    def __init__(self, cause: str, fix: Optional[str] = None) -> None:
        self.cause = cause
        self.fix = fix
        super().__init__(f"{cause}: {fix}" if fix else cause)


class ConfigurationError(DlmsError, ValueError):
    """A setting is wrong; raised before any I/O so the user sees it at start-up."""

    stat = "config_errors"


class TransportError(DlmsError, OSError):
    """The serial port or socket failed (cannot open, unplugged, connection reset)."""

    stat = "transport_errors"


class ProtocolError(DlmsError):
    """Bytes arrived but broke the protocol."""

    stat = "protocol_errors"


class NoResponseError(ProtocolError):
    """Nothing, or too little, arrived within the time the standard allows."""

    stat = "timeouts"


class IdentificationError(ProtocolError):
    """The meter's answer to the sign-on is not a valid identification message."""

    stat = "protocol_errors"


class FramingError(ProtocolError):
    """A frame's structure is wrong: bad length, missing end, truncated, oversized."""

    stat = "framing_errors"


class IncompleteMessageError(FramingError):
    """A part of a segmented message (HDLC segment, I-frame, GBT block, M-Bus telegram) was lost:
    the rest is dropped, because joining what is left to another message gives wrong values."""

    stat = "incomplete_messages"


class ChecksumError(ProtocolError):
    """A checksum (BCC, HCS, FCS, M-Bus CS) does not match: the bytes were damaged."""

    stat = "checksum_errors"

    def __init__(self, what: str, expected: int, got: int, fix: Optional[str] = None, digits: int = 2) -> None:
        """``digits``: hex digits of the checksum (4 for a CRC-16), so both values read as the field's width."""
        self.what = what
        self.expected = expected
        self.got = got
        super().__init__(
            f"{what} mismatch: expected 0x{expected:0{digits}x}, got 0x{got:0{digits}x}",
            fix or "noisy line or wrong character format",
        )


class ChecksumMissingError(ChecksumError, FramingError):
    """A checksum that must be there is not (or the framing bytes that carry it were damaged).

    A meter that sent a BCC (or a DSMR CRC16) once sends it every time, so a readout without
    one lost its end on the line: its values cannot be checked and are not used.
    """

    stat = "checksum_errors"

    def __init__(self, what: str, cause: str, fix: Optional[str] = None) -> None:  # noqa: D107
        self.what = what
        self.expected = None  # type: ignore[assignment]
        self.got = None  # type: ignore[assignment]
        DlmsError.__init__(self, cause, fix or "check the IR head's position and the cable; the next readout "
                                               "is usually whole again")


class AssociationError(ProtocolError):
    """The meter refused the application association (AARQ answered with a rejecting AARE).

    ``diagnostic`` is the ACSE diagnostic the meter gave (13 = authentication failure, ...).
    """

    stat = "association_errors"

    def __init__(self, cause: str, fix: Optional[str] = None, diagnostic: Optional[int] = None) -> None:
        self.diagnostic = diagnostic
        super().__init__(cause, fix)


class AccessError(ProtocolError):
    """A GET was answered with a data-access-result error (object undefined, read denied ...)."""

    stat = "access_errors"

    def __init__(self, cause: str, fix: Optional[str] = None, result: Optional[int] = None) -> None:
        self.result = result
        super().__init__(cause, fix)


class SecurityError(DlmsError):
    """Anything about ciphering."""

    stat = "security_errors"


class MissingKeyError(SecurityError):
    """The frame is ciphered but no encryption key is configured."""

    stat = "decrypt_failures"


class AuthenticationError(SecurityError):
    """The AES-GCM authentication tag does not match (wrong authentication key or damaged frame)."""

    stat = "tag_failures"


class DecryptionError(SecurityError):
    """Decryption produced bytes that are no valid APDU (wrong encryption key)."""

    stat = "decrypt_failures"


class PlaintextRejectedError(SecurityError):
    """An unencrypted push arrived for a meter configured with keys (``security: any`` allows it)."""

    stat = "plaintext_rejected"


class DowngradeError(SecurityError):
    """A push carried less protection than the meter's security policy requires (e.g. security
    0x20 without a tag where an authentication key is set, or after the meter sent 0x30)."""

    stat = "downgrades"


class ReplayError(SecurityError):
    """The invocation counter did not increase for this system title: a replayed or reordered
    frame (a meter reset is accepted after a few increasing frames)."""

    stat = "replays"


class DecodeError(DlmsError):
    """An APDU or COSEM data structure could not be decoded."""

    stat = "decode_errors"


class UnknownLayoutError(DecodeError):
    """A positional push (values without OBIS codes) matches no known meter profile."""

    stat = "unknown_layouts"


__all__ = [
    "DlmsError", "ConfigurationError", "TransportError", "ProtocolError", "NoResponseError",
    "IdentificationError", "FramingError", "IncompleteMessageError", "ChecksumError", "ChecksumMissingError",
    "AssociationError", "AccessError", "SecurityError", "MissingKeyError", "AuthenticationError",
    "DecryptionError", "PlaintextRejectedError", "DowngradeError", "ReplayError", "DecodeError",
    "UnknownLayoutError",
]
