"""Settings of a DLMS/COSEM polling client (optical mode E, RS485 HDLC, TCP wrapper).

Secrets (password, keys) are kept out of ``repr()`` and named only by field in errors.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional, Tuple, Union

from ..config import parse_key
from ..errors import ConfigurationError
from ..obis import Obis

AUTHENTICATIONS = ("none", "low", "high_gmac")
INTERFACES = ("auto", "hdlc", "wrapper")
_AUTH_ALIASES = {"": "none", "no": "none", "lls": "low", "password": "low", "high": "high_gmac", "hls": "high_gmac",
                 "gmac": "high_gmac", "hls-gmac": "high_gmac", "high-gmac": "high_gmac"}


_LN = re.compile(r"(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})")


def parse_code(text: str) -> Obis:
    """An OBIS code as users write it, or gurux's six dotted groups (``1.0.99.1.0.255``)."""
    m = _LN.fullmatch(str(text).strip())
    if m is not None and all(int(g) <= 255 for g in m.groups()):
        return Obis(*(int(g) for g in m.groups()))
    return Obis.parse(text)


def parse_system_title(value: Union[str, bytes, None]) -> bytes:
    """8 bytes: 16 hex digits, or 8 characters (``SHNGDLMS``)."""
    if value is None or value == "":
        return b"SHNGDLMS"
    if isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
    elif re.fullmatch(r"[0-9a-fA-F]{16}", value.strip()):
        raw = bytes.fromhex(value.strip())
    else:
        raw = value.encode("ascii", "replace")
    if len(raw) != 8:
        raise ConfigurationError(f"system title has {len(raw)} bytes, it needs 8",
                                 "write it as 16 hex digits or 8 characters, e.g. SHNGDLMS")
    return raw


@dataclass
class PollConfig:
    """One polled meter.

    ``port``: a serial device (optical head, RS485 adapter), ``socket://host:port`` (a serial
    server carrying HDLC) or ``tcp://host:port`` (a meter with the DLMS/IP wrapper, usually port
    4059). ``interface`` ``auto`` means wrapper for ``tcp://`` and HDLC otherwise. ``mode_e``:
    optical port, sign on at 300 Bd and switch to HDLC (IEC 62056-21 Annex E); ``baudrate`` is
    the HDLC rate on RS485, and the ceiling for the rate a mode-E meter offers;
    ``identification_timeout`` bounds its sign-on, which is repeated after each 1.5 s of silence
    (the longest reaction time), so the default gives a meter three requests to hear.
    Addresses: ``client_address`` (16 public, 1 management, 32 reading client are common),
    server ``logical_address``/``physical_address`` in ``address_size`` bytes (1, 2 or 4).
    ``authentication``: ``none``, ``low`` (``password``) or ``high_gmac`` (``key``, ``auth_key``,
    ``system_title``; the ``invocation_counter`` is kept in ``state_file`` when set, and read
    from the meter through the public client at ``invocation_counter_ln`` when it is not known:
    at the first association without a state file, and after a refused one; empty: never).
    ``obis``: the objects to poll each cycle (empty: every register found); ``profiles``: load
    profiles (class 7) read incrementally.
    """

    port: str
    interface: str = "auto"
    mode_e: bool = False
    baudrate: int = 9600
    client_address: int = 16
    logical_address: int = 1
    physical_address: int = 17
    address_size: int = 2
    authentication: str = "none"
    password: Optional[str] = field(default=None, repr=False)
    key: Optional[bytes] = field(default=None, repr=False)
    auth_key: Optional[bytes] = field(default=None, repr=False)
    system_title: bytes = b"SHNGDLMS"
    invocation_counter: int = 0
    state_file: Optional[str] = None
    invocation_counter_ln: str = "0.0.43.1.0.255"
    obis: Tuple[str, ...] = ()
    profiles: Tuple[str, ...] = ()
    timeout: float = 3.0
    identification_timeout: float = 4.5
    baud_switch_delay: float = 0.3
    max_info: int = 128
    fallback_readout: bool = True
    device_address: str = ""

    def __post_init__(self) -> None:
        if not self.port:
            raise ConfigurationError("no port configured for polling",
                                     "set a serial port, socket://host:port or tcp://host:4059")
        auth = str(self.authentication or "none").strip().lower()
        self.authentication = _AUTH_ALIASES.get(auth, auth)
        if self.authentication not in AUTHENTICATIONS:
            raise ConfigurationError(f"authentication {auth!r} unknown", "use none, low (password) or high_gmac")
        if self.interface not in INTERFACES:
            raise ConfigurationError(f"interface {self.interface!r} unknown", "use auto, hdlc or wrapper")
        if self.address_size not in (1, 2, 4):
            raise ConfigurationError(f"server address size {self.address_size} invalid", "use 1, 2 or 4 bytes")
        if not 0 <= int(self.client_address) <= 0x7F:
            raise ConfigurationError(f"client address {self.client_address} out of range",
                                     "use 16 (public client), 1 (management) or what the meter's manual names")
        self._check_security()
        self.system_title = parse_system_title(self.system_title)
        self.obis = tuple(self.obis or ())
        for code in self.obis + tuple(self.profiles or ()):
            parse_code(code)  # a typo stops the start with a clear error
        self.profiles = tuple(self.profiles or ())
        if self.mode_e and self.wrapper:
            raise ConfigurationError("mode E is a sign-on on an optical port, not on TCP",
                                     "use mode_e with a serial port, or leave it off for tcp://")

    def _check_security(self) -> None:
        if self.authentication == "low" and not self.password:
            raise ConfigurationError("authentication low needs a password",
                                     "set the meter's LLS password (often 8 digits, from the grid operator)")
        if self.authentication == "high_gmac":
            self.key = parse_key(self.key, "key")
            self.auth_key = parse_key(self.auth_key, "auth_key")
            if self.key is None or self.auth_key is None:
                raise ConfigurationError("authentication high_gmac needs key and auth_key",
                                         "set the encryption key (key) and the authentication key (auth_key), "
                                         "32 hex digits each")

    @property
    def wrapper(self) -> bool:
        if self.interface == "auto":
            return self.port.startswith("tcp://")
        return self.interface == "wrapper"

    @property
    def url(self) -> str:
        """What the transport opens (``tcp://`` becomes pyserial's ``socket://``)."""
        return "socket://" + self.port[6:] if self.port.startswith("tcp://") else self.port

    def describe(self) -> str:
        how = "DLMS/IP wrapper" if self.wrapper else ("optical mode E + HDLC" if self.mode_e else "HDLC")
        return (f"{self.port} ({how}), client {self.client_address}, server {self.logical_address}/"
                f"{self.physical_address}, security {self.authentication}")


__all__ = ["PollConfig", "parse_system_title", "parse_code", "AUTHENTICATIONS"]
