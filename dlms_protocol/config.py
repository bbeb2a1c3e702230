"""Settings of a readout or a push listener, shared by the CLI, the plugin and the Victron service.

Keys are kept out of ``repr()`` (``field(repr=False)``) so that logging a config object can
never leak them, and ``parse_key`` names only the field and the length in its errors.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple, Union

from .errors import ConfigurationError

_KEY_SEPARATORS = re.compile(r"[\s:\-_]")

#: D0 character formats: (bytesize, parity, stopbits)
FORMATS = {"7E1": (7, "E", 1), "8N1": (8, "N", 1), "8E1": (8, "E", 1), "7N1": (7, "N", 1)}
#: a serial character format: data bits (7, 8), parity (N, E, O), stop bits (1, 2)
_FORMAT = re.compile(r"([78])([NEO])([12])")
#: unquoted in a YAML file, 8E1 and 7E1 are numbers (8 * 10**1 = 80.0), and SmartHomeNG hands
#: over '80.0'; these are the formats such a number can only have meant
_FORMAT_NUMBERS = {"80.0": "8E1", "70.0": "7E1", "80": "8E1", "70": "7E1"}
#: push security policy (ListenerConfig.security), weakest accepted protection; "auto" learns it
SECURITY_LEVELS = ("auto", "any", "encrypted", "authenticated")


#: serial line speeds a port may be opened with (D0: 300-19200 Bd; DSMR P1: 115200 Bd; M-Bus/HAN up to 921600)
MIN_BAUDRATE, MAX_BAUDRATE = 300, 921600


def parse_format(value: Any, what: str = "serial format") -> Tuple[int, str, int]:
    """A serial character format as written (``'8E1'``, ``' 8e1 '``, YAML's ``80.0``) →
    ``(8, 'E', 1)``; ConfigurationError naming ``what`` for anything else.

    The one parser of a format string for every caller (D0 readout, push listener, detect,
    the plugin), so "8e1" is the same setting everywhere.
    """
    text = str(value).strip()
    text = _FORMAT_NUMBERS.get(text, text.upper())
    m = _FORMAT.fullmatch(text)
    if m is None:
        raise ConfigurationError(f"{what} {value!r} unknown",
                                 "write data bits, parity, stop bits such as 8E1 or 8N1 (7E1 for IEC 62056-21)")
    return int(m.group(1)), m.group(2), int(m.group(3))


def format_name(value: Any, what: str = "serial format") -> str:
    """The canonical spelling (``'8E1'``) of a format ``parse_format`` accepts."""
    return "%d%s%d" % parse_format(value, what)


#: the line each listened-to protocol usually runs at, for a configuration that names no speed or
#: format: DLMS push 2400 8E1 (M-Bus customer interfaces; ``auto`` too), SML 9600 8N1 (the German
#: INFO interface), push-only D0 9600 7E1 (IEC 62056-21). An SML meter listened to at 2400 8E1
#: only ever gives garbage.
LISTEN_LINES: Dict[str, Tuple[int, str]] = {"dlms": (2400, "8E1"), "auto": (2400, "8E1"), "sml": (9600, "8N1"),
                                            "d0": (9600, "7E1")}


def listen_line(protocol: str) -> Tuple[int, str]:
    """(baud rate, format) a meter of ``protocol`` is listened to at unless configured."""
    return LISTEN_LINES.get(protocol.lower(), LISTEN_LINES["dlms"])


def check_number(name: str, value: Any, low: float, high: float, *, whole: bool = False,
                 low_open: bool = False) -> Any:
    """``value`` as a finite number within [low, high] (``low_open``: > low), else ConfigurationError.

    A NaN, an infinity, 0 or a negative time-out is never a setting: it hangs a read, divides
    by zero or drops a real line (baud 0 is "hang up" to a serial driver).
    """
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and whole and not float(value).is_integer():
        ok = False
    if ok and not math.isfinite(value):
        ok = False
    if ok and (value < low or value > high or (low_open and value == low)):
        ok = False
    if not ok:
        kind = "a whole number" if whole else "a number"
        lowest = f"more than {low:g}" if low_open else f"at least {low:g}"
        raise ConfigurationError(f"{name} = {value!r} is out of range",
                                 f"write {kind} {lowest} and at most {high:g}")
    return int(value) if whole else value


_QUOTES = "put the {name} in quotes ({name}: '<32 hex digits>'): unquoted, YAML reads 0x… or digits as a number"


def parse_key(text: Union[str, bytes, int, None], name: str = "key") -> Optional[bytes]:
    """Accept a 16-byte AES key as hex with or without ``0x``, spaces, colons or dashes.

    Empty or None means "no key". The error says which field is wrong and how many digits it
    had, never the key itself. Why the numbers: YAML reads an unquoted ``0xA89A…`` as an int,
    and SmartHomeNG hands a ``type: str`` parameter over as its decimal text. That is taken back
    only when certain (``_from_number``); otherwise the error asks for quotes.
    """
    if text is None:
        return None
    if isinstance(text, int) and not isinstance(text, bool):
        return _from_number(text, name)
    if isinstance(text, (bytes, bytearray)):
        raw = bytes(text)
    else:
        cleaned = _KEY_SEPARATORS.sub("", str(text).strip().strip("'\""))
        if cleaned[:2].lower() == "0x":
            cleaned = cleaned[2:]
        if not cleaned:
            return None
        if not re.fullmatch(r"[0-9a-fA-F]*", cleaned):
            numeric = re.fullmatch(r"[0-9.eE+-]+", cleaned) is not None  # (YAML's float of an unquoted key)
            raise ConfigurationError(
                f"{name} is not a hex string",
                f"write the {name} as 32 hex digits (0-9, a-f), e.g. from the letter of your grid operator"
                + ("; " + _QUOTES.format(name=name) if numeric else ""),
            )
        if len(cleaned) != 32 and cleaned.isdigit() and len(cleaned) in (38, 39):
            return _from_number(int(cleaned), name)  # (YAML's number as SmartHomeNG's text)
        if len(cleaned) != 32 and cleaned.isdigit() and len(cleaned) >= 24:
            # (a key of digits YAML read as a decimal number: a leading 0 is lost)
            raise ConfigurationError(f"{name} has {len(cleaned)} hex digits; a key has 32", _QUOTES.format(name=name))
        if len(cleaned) % 2:
            raise ConfigurationError(f"{name} has {len(cleaned)} hex digits; a key has 32",
                                     f"write the {name} as 32 hex digits; check that it was copied completely")
        raw = bytes.fromhex(cleaned)
    if len(raw) != 16:
        raise ConfigurationError(
            f"{name} has {len(raw)} bytes, an AES-128 key has 16",
            f"write the {name} as 32 hex digits; check that it was copied completely",
        )
    return raw


def _from_number(value: int, name: str) -> bytes:
    """The key an unquoted ``0x`` + 32 hex digits became in YAML, when that is certain: the number
    has exactly 32 hex digits, the first not 0. A leading 0 (its width is lost: 31 digits written
    would pass as a key) and a YAML number of decimal digits (``1234…`` is no hex) are refused."""
    if 16 ** 31 <= value < 16 ** 32:
        return value.to_bytes(16, "big")
    raise ConfigurationError(f"{name} was read as a number, not as hex digits", _QUOTES.format(name=name))


@dataclass
class ReadoutConfig:
    """IEC 62056-21 readout through an optical head (the classic smarthome.py options).

    ``baudrate``: ``"auto"`` follows the meter's baud character; a number is a fixed maximum
    (the meter's offer is lowered to it; 300 stays at 300 Bd all the time).
    ``reset_baudrate``: reopen the port at ``initial_baudrate`` before each read (True), or keep
    the port open between reads. ``no_waiting``: skip the optional waits (wake-up pause, the
    reaction-time rest before the ACK) for meters that allow it. ``mode``: ``"request"`` (sign-on,
    modes A/B/C/E) or ``"push"`` (push-only D0 meters such as EasyMeter/eBZ: listen and resync on
    ``/``).
    """

    port: str
    baudrate: Union[str, int] = "auto"
    use_checksum: bool = True
    reset_baudrate: bool = True
    no_waiting: bool = False
    device_address: str = ""
    query_code: str = "?"
    initial_baudrate: int = 300
    char_format: str = "7E1"
    timeout: float = 1.5  # per-character time-out (ta) and answer time-out (tr max)
    identification_timeout: float = 1.5
    # from handing over the ACK to re-programming the UART (never before it left the wire)
    baud_switch_delay: float = 0.3
    wakeup: bool = False  # NUL wake-up for battery meters
    retries: int = 1  # further attempts, each at the next lower baud rate
    push_baudrate: int = 9600
    mode: str = "request"
    max_read_time: float = 900.0  # a data message without an end after this long is no readout

    def __post_init__(self) -> None:
        if isinstance(self.baudrate, str) and self.baudrate.strip().lower() != "auto":
            try:
                self.baudrate = int(self.baudrate)
            except ValueError:
                raise ConfigurationError(f"baudrate {self.baudrate!r} is neither 'auto' nor a number",
                                         "use auto, 300, 600, 1200, 2400, 4800, 9600 or 19200") from None
        elif isinstance(self.baudrate, str):
            self.baudrate = "auto"
        self.char_format = format_name(self.char_format, "character format")
        if self.char_format not in FORMATS:
            raise ConfigurationError(f"character format {self.char_format!r} is not one a D0 meter uses",
                                     "use one of " + ", ".join(FORMATS))
        if self.mode not in ("request", "push"):
            raise ConfigurationError(f"mode {self.mode!r} unknown", "use request or push")
        self._check_numbers()

    def _check_numbers(self) -> None:
        """Every number within what IEC 62056-21 and a serial port allow."""
        if self.baudrate != "auto":  # a ceiling: the meter's offer (at most 19200 Bd) is lowered to it
            self.baudrate = check_number("baudrate", self.baudrate, 300, MAX_BAUDRATE, whole=True)
        self.initial_baudrate = check_number("initial_baudrate", self.initial_baudrate, 300, 19200, whole=True)
        self.push_baudrate = check_number("push_baudrate", self.push_baudrate, MIN_BAUDRATE, MAX_BAUDRATE,
                                          whole=True)
        self.timeout = check_number("timeout", self.timeout, 0, 600, low_open=True)
        self.identification_timeout = check_number("identification_timeout", self.identification_timeout,
                                                   0, 600, low_open=True)
        self.baud_switch_delay = check_number("baud_switch_delay", self.baud_switch_delay, 0, 10)
        self.retries = check_number("retries", self.retries, 0, 10, whole=True)
        self.max_read_time = check_number("max_read_time", self.max_read_time, 0, 86400, low_open=True)


@dataclass
class ListenerConfig:
    """DLMS/COSEM push listener on a serial port (RS485, M-Bus, HAN) or ``socket://host:port``.

    ``key``/``auth_key`` are 16 raw bytes (use ``parse_key`` for user input). With only ``key``,
    frames with an authentication tag are decrypted but reported as tag *not verified*.
    ``profile``: ``None``/``"auto"`` selects a positional layout by structure; a name or a JSON
    file path forces one. ``wrapper``: ``"auto"``, ``"hdlc"``, ``"mbus"``, ``"wrapper"``, ``"apdu"``.
    ``security``: the least protection a push must carry once keys are set (``SECURITY_LEVELS``):
    ``"auto"`` means ``authenticated`` with an auth_key, else the strongest the meter was seen to send.
    """

    port: str
    baudrate: int = 2400
    bytesize: int = 8
    parity: str = "E"
    stopbits: int = 1
    key: Optional[bytes] = field(default=None, repr=False)
    auth_key: Optional[bytes] = field(default=None, repr=False)
    profile: Optional[str] = None
    wrapper: str = "auto"
    min_interval: float = 0.0  # rate limit for sinks: at most one MeterData per interval (0 = all)
    security: str = "auto"

    def __post_init__(self) -> None:
        self.key = parse_key(self.key, "key")
        self.auth_key = parse_key(self.auth_key, "auth_key")
        if self.parity not in ("N", "E", "O"):
            raise ConfigurationError(f"parity {self.parity!r} unknown", "use N (none), E (even) or O (odd)")
        if self.wrapper not in ("auto", "hdlc", "mbus", "wrapper", "apdu"):
            raise ConfigurationError(f"wrapper {self.wrapper!r} unknown", "use auto, hdlc, mbus, wrapper or apdu")
        if self.security not in SECURITY_LEVELS:
            raise ConfigurationError(f"security {self.security!r} unknown", "use " + ", ".join(SECURITY_LEVELS))
        self.baudrate = check_number("baudrate", self.baudrate, MIN_BAUDRATE, MAX_BAUDRATE, whole=True)
        if self.bytesize not in (7, 8) or isinstance(self.bytesize, bool):
            raise ConfigurationError(f"bytesize {self.bytesize!r} unknown", "use 8 (or 7)")
        if self.stopbits not in (1, 2) or isinstance(self.stopbits, bool):
            raise ConfigurationError(f"stopbits {self.stopbits!r} unknown", "use 1 or 2")
        self.min_interval = check_number("min_interval", self.min_interval, 0, 86400)


#: the byte a character with a parity error becomes (software parity); no 7-bit character has it
PARITY_ERROR = 0x80


def bits_per_char(bytesize: int = 7, parity: str = "E", stopbits: float = 1) -> float:
    """Bits one character occupies on the wire: start + data + parity + stop (7E1 = 10)."""
    return 1 + bytesize + (0 if parity == "N" else 1) + stopbits


__all__ = ["parse_key", "parse_format", "format_name", "listen_line", "LISTEN_LINES", "check_number", "ReadoutConfig",
           "ListenerConfig", "FORMATS", "SECURITY_LEVELS", "MIN_BAUDRATE", "MAX_BAUDRATE", "PARITY_ERROR",
           "bits_per_char"]
