"""Typed results shared by the D0 readout side, the DLMS push side and every sink.

A sink (SmartHomeNG items, Victron D-Bus, the CLI) only ever sees a ``MeterData``: one
*verified* snapshot of a meter (checksum, tag and decode all good). Anything half-parsed
raises instead of producing a MeterData, so a sink cannot write an unverified value.
"""
from __future__ import annotations

import operator
import threading
import time
from dataclasses import dataclass, field
from datetime import date, datetime
from datetime import time as dtime
from decimal import Decimal
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Type, TypeVar, Union

from .obis import Obis, maker_name, signed_net

#: A physical value: Decimal for numbers (no float drift in counters), str for text,
#: datetime for COSEM date-times, bytes for octet strings that are not text.
Value = Union[Decimal, int, str, datetime, bytes, bool, None]


#: an integral Decimal up to this many digits becomes a JSON integer (beyond: see json_value)
_INT_DIGITS = 60


def json_value(value: Any) -> Any:
    """A reading value as JSON, exactly: the one rule of every JSON output (see ``jsonform``).

    Integral numbers become JSON integers; other Decimals a JSON number only when that float
    reads back as the same Decimal (``0.1``, ``230.4``), else their text (``"0.12345678901234567890"``),
    so no digit is ever lost silently; not finite: ``"NaN"``, ``"Infinity"``. Bytes as hex
    (upper case), times ISO 8601, lists element by element.
    """
    if value is None or isinstance(value, (bool, str, int, float)):
        return value
    if isinstance(value, Decimal):
        return _json_decimal(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex().upper()
    if isinstance(value, (datetime, date, dtime)):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    return str(value)


def _json_decimal(value: Decimal) -> Any:
    if not value.is_finite():
        return str(value)
    if value == value.to_integral_value() and value.adjusted() < _INT_DIGITS:
        return int(value)
    as_float = float(value)
    if Decimal(repr(as_float)) == value:  # the float's shortest text is this very number
        return as_float
    return str(value)


def value_text(value: Any) -> Optional[str]:
    """A value as text where an identification is shown (Victron /Serial, MQTT's device serial):
    text stripped (NUL padding too), numbers as written, octets as ASCII when all printable, else
    upper-case hex (SML server IDs); None for nothing, a boolean or empty text. One rule, so both
    show the same."""
    if isinstance(value, (bytes, bytearray)):
        if value and all(32 <= b < 127 for b in value):
            return bytes(value).decode("ascii").strip() or None
        return bytes(value).hex().upper() if value else None
    if value is None or isinstance(value, bool):
        return None
    return str(value).replace("\0", "").strip() or None


_NONZERO_DIGITS = "123456789"


def decimal_text(value: Decimal) -> str:
    """``str(json_value(value))`` for a Decimal, without the float round trip in the common case
    (every value of every rendered push goes through here).

    Plain decimal text with at most 15 significant digits is what the float's shortest repr
    would give, once trailing fraction zeros are gone (15 digits always survive a double);
    anything else (exponents, tiny or long numbers, NaN) takes the general rule.
    """
    text = str(value)
    if text.isdigit():  # a non-negative whole number in plain digits: most values of a push
        return text if len(text) < _INT_DIGITS else str(_json_decimal(value))
    # a scaled value (230.4, -0.52): plain, at most 14 digits, no trailing zero, not tiny
    if text[-1] in _NONZERO_DIGITS and len(text) < 16 and "." in text and "E" not in text and "0.0000" not in text:
        return text
    if "E" in text or "N" in text or "n" in text:  # exponent, NaN, Infinity: the general rule
        return str(_json_decimal(value))
    whole, dot, frac = text.partition(".")
    digits = whole.lstrip("-")
    if not dot:
        return text if text != "-0" and len(digits) < _INT_DIGITS else str(_json_decimal(value))
    frac = frac.rstrip("0")
    if len(digits) + len(frac) > 15 or (digits == "0" and frac.startswith("0000")):
        return str(_json_decimal(value))
    if not frac:
        return str(int(whole))  # "5.00" -> "5", "-0.0" -> "0"
    return whole + "." + frac


@dataclass(frozen=True)
class Reading:
    """One register value from a meter.

    ``code`` is the address exactly as transmitted (D0) or the dotted OBIS (push); ``obis``
    the parsed code, None when the address is no OBIS code. ``raw`` is the value as it came
    (string for D0, integer/bytes for push), ``value`` the physical value (``raw·10^scaler``
    for push, the parsed number for D0), ``unit`` as the meter said (``kWh``, ``W``) or from the
    profile. ``extra`` holds the further value groups of the data set, each ``(value, unit)``: the
    meter's own data (a max-demand time in D0, a DSMR line's earlier groups), which an item can
    bind by index. ``details`` holds what the decoder noted about the value, each ``(label, text)``:
    the type it came in (``dlms_type``, ``sml_type``), the profile field's ``name``, a push list's
    ``class_id``/``attribute``, a clock's ``clock_status``, SML's ``status`` word and ``val_time``,
    a corrected ``quirk``. Never a value group: an item bound to one would get a label.
    """

    code: str
    obis: Optional[Obis]
    value: Value
    unit: Optional[str] = None
    raw: Value = None
    scaler: Optional[int] = None
    index: int = 0
    timestamp: Optional[datetime] = None
    extra: Tuple[Tuple[str, Optional[str]], ...] = ()
    #: computed from other readings of the same snapshot (e.g. net power), not sent by the meter
    derived: bool = False
    #: what the decoder noted about the value, (label, text) each: no value group (class docstring)
    details: Tuple[Tuple[str, Optional[str]], ...] = ()

    @property
    def name(self) -> Optional[str]:
        return self.meaning()

    @property
    def held(self) -> bool:
        """No value now, held back by a rule that says why (``HELD_DETAIL``): a number whenever it
        comes, and not to be replaced by one made from other readings."""
        return self.value is None and any(label == HELD_DETAIL for label, _ in self.details)

    def meaning(self, language: str = "en") -> Optional[str]:
        """The name of what the value is: the code's (``Obis.name``), except where the meter's maker
        documents the code as signed net power (``SIGNED_NET_DETAIL``: EasyMeter's 1.7.255 is no
        import) or as another quantity (``MAKER_NAME_DETAIL``: Fluvius' 31.4.0 is a fuse threshold).
        A value without a code has the name its meter profile gives the position (the Austrian
        lists' meter number, time and date), in the profile's words, else None."""
        if self.obis is None:
            for label, text in self.details:
                if label == "name":
                    return text
            return None
        return self.maker_meaning(language) or self.obis.name(language, self.unit)

    def label(self, language: str = "en") -> Optional[str]:
        """``meaning`` with a computed value marked "(derived)" / "(berechnet)": what every list a
        user reads shows (the web interface, the items snippet, Home Assistant), so that a value
        the plugin computed (net power) is told from the ones the meter sent."""
        name = self.meaning(language)
        if name is None or not self.derived:
            return name
        return name + (" (berechnet)" if language == "de" else " (derived)")

    def maker_meaning(self, language: str = "en") -> Optional[str]:
        """The name the meter's maker gives this code where the standard's is another quantity
        (``SIGNED_NET_DETAIL``, ``MAKER_NAME_DETAIL``), else None: every list of names (the web
        interface, discovery, the D0 table) asks this before the code's own name."""
        for label, maker in self.details:
            if label == SIGNED_NET_DETAIL:
                signed = signed_net(maker, self.obis)
                if signed is not None:
                    return signed[1]["de" if language == "de" else "en"]
            elif label == MAKER_NAME_DETAIL:
                names = maker_name(maker, self.obis)
                if names is not None:
                    return names["de" if language == "de" else "en"]
        return None

    def signed_by(self) -> Optional[str]:
        """The manufacturer (FLAG id) that documents this value as signed net power, else None."""
        for label, text in self.details:
            if label == SIGNED_NET_DETAIL:
                return text
        return None

    def numeric(self) -> Optional[Decimal]:
        """The value as Decimal when it is a number, else None (never a fake 0)."""
        v = self.value
        if isinstance(v, bool):
            return None
        if isinstance(v, Decimal):
            return v
        if isinstance(v, int):
            return Decimal(v)
        return None


_new_object = object.__new__
#: a reading's code, for ``map`` (a push's layout key, without a Python frame per reading)
_OBIS_OF = operator.attrgetter("obis")
#: the ``Reading.details`` label of a value a decoder holds back until its unit is known
#: (``dlms.scalecheck``); its text says why, for the item or sink that would have shown it
HELD_DETAIL = "held"
#: the ``Reading.details`` label of a value its maker documents as signed net power (+ import,
#: - export) under a code the standard names otherwise (obis.signed_net); its text is the FLAG id.
#: Set by the D0 parser; ``derive`` gives the net power code from it
SIGNED_NET_DETAIL = "signed_net"
#: the ``Reading.details`` label of a value its maker sends under a code the standard names
#: otherwise (obis.maker_name: Fluvius' 31.4.0 is a fuse threshold); its text is the FLAG id
MAKER_NAME_DETAIL = "maker_name"
_set_field = object.__setattr__
_Frozen = TypeVar("_Frozen")


def frozen_of(cls: Type[_Frozen], fields: Dict[str, Any]) -> _Frozen:
    """``cls(**fields)`` for a frozen dataclass without ``__post_init__``, with every field given
    (a fresh dict the caller gives up): the instance takes ``fields`` as its ``__dict__`` instead
    of the frozen ``__init__`` setting each field through ``object.__setattr__``, a third of the
    cost. For what a push decoder makes per frame (``PushMessage``, ``Deciphered``, ...); equal
    to the dataclass-built one (tests/test_fast_paths.py)."""
    obj = _new_object(cls)
    _set_field(obj, "__dict__", fields)
    return obj


def new_reading(code: str, obis: Optional[Obis], value: Value, unit: Optional[str], raw: Value,
                scaler: Optional[int], index: int, timestamp: Optional[datetime],
                details: Tuple[Tuple[str, Optional[str]], ...], derived: bool = False,
                extra: Tuple[Tuple[str, Optional[str]], ...] = ()) -> Reading:
    """``Reading(...)`` with every field given, at half the cost: a push builds dozens per frame,
    and the frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``.
    Equal to the dataclass-built one in every way (eq, hash, repr)."""
    r = _new_object(Reading)
    r.__dict__.update(code=code, obis=obis, value=value, unit=unit, raw=raw, scaler=scaler, index=index,
                      timestamp=timestamp, extra=extra, derived=derived, details=details)
    return r


class LayoutMemo:
    """What follows from a snapshot's codes alone, worked out once per layout.

    A push meter sends the same layout every time and its decoder hands out the same code
    objects, so the key is the identities of the readings' codes. An entry holds its codes, so no
    other code can take one of their identities while it exists. A layout is kept once the same
    code objects came twice in a row: a D0 readout makes new codes every time, and keeping those
    would only hold their memory (they miss, and are worked out each time). ``limit`` bounds
    the entries (all are dropped when it is reached).
    """

    def __init__(self, limit: int = 32) -> None:
        self.limit = limit
        self.entries: Dict[Tuple[Tuple[int, ...], Tuple[Any, ...]], Tuple[Tuple[Optional[Obis], ...], Any]] = {}
        self._last_miss: Tuple[Tuple[int, ...], Tuple[Any, ...]] = ((), ())

    def get(self, readings: Tuple["Reading", ...], work_out: Callable[[Tuple[Optional[Obis], ...]], Any],
            detail: Tuple[Any, ...] = ()) -> Any:
        """The result for this layout: stored, else ``work_out(codes)``. ``detail``: what else of
        the readings the result depends on (hashable values, not objects), part of the key."""
        codes = tuple(map(_OBIS_OF, readings))
        key = (tuple(map(id, codes)), detail)
        hit = self.entries.get(key)
        if hit is not None:
            return hit[1]
        result = work_out(codes)
        if key != self._last_miss:
            self._last_miss = key  # (only the ids: a repeat is a reason to keep, never a result)
            return result
        if len(self.entries) >= self.limit:
            self.entries.clear()
        self.entries[key] = (codes, result)
        return result


@dataclass(frozen=True)
class MeterData:
    """One verified snapshot of a meter: a readout or a decoded push message."""

    kind: str  # "readout" or "push"
    readings: Tuple[Reading, ...]
    received: float = field(default_factory=time.time)  # epoch seconds when it was complete
    meter_time: Optional[datetime] = None
    meter_id: Optional[str] = None  # identification, serial number or system title
    text: str = ""  # human-readable form: the raw readout text, or the decoded push
    raw: bytes = b""
    profile: Optional[str] = None
    #: the checksum that vouched for the values (D0: ``BCC``, ``CRC16``; ``none`` = read unchecked,
    #: only for a meter that never sent one or with use_checksum off); None when not told
    checksum: Optional[str] = None
    #: the decoded message this snapshot came from (``PushMessage``, ``SmlTelegram``, D0 ``Readout``)
    #: when a tool shows its protocol details (``jsonform.meter_data_json``); not compared
    message: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, kind: str, readings: Tuple[Reading, ...], received: Optional[float], meter_time: Optional[datetime],
           meter_id: Optional[str], text: str, raw: bytes, profile: Optional[str], checksum: Optional[str],
           message: Any) -> "MeterData":
        """``MeterData(...)`` with every field given, without the frozen ``__init__`` (which sets
        each field through ``object.__setattr__``): a push decoder makes one per frame. Equal
        to the dataclass-built one (eq, repr). ``received`` None: now, as the field's default."""
        if received is None:
            received = time.time()
        new = _new_object(cls)
        new.__dict__.update(kind=kind, readings=readings, received=received, meter_time=meter_time,
                            meter_id=meter_id, text=text, raw=raw, profile=profile, checksum=checksum,
                            message=message)
        return new

    def with_readings(self, readings: Tuple[Reading, ...]) -> "MeterData":
        """``dataclasses.replace(self, readings=readings)`` without the frozen ``__init__`` (every
        push is enriched once); the lookup cache of ``find`` is not carried over."""
        new = _new_object(MeterData)
        fields = dict(self.__dict__)
        fields.pop("_by_cde", None)
        fields["readings"] = readings
        new.__dict__.update(fields)
        return new

    def find(self, pattern: Union[str, Obis]) -> List[Reading]:
        """All readings whose code a user pattern selects (see Obis.matches), in meter order."""
        pat = Obis.parse(pattern) if isinstance(pattern, str) else pattern
        index = self.__dict__.get("_by_cde")
        if index is None:  # built once per snapshot: derive, the Victron mapping and items look up dozens
            index = {}
            for r in self.readings:
                if r.obis is not None:
                    index.setdefault((r.obis.c, r.obis.d, r.obis.e), []).append(r)
            object.__setattr__(self, "_by_cde", index)  # a cache, not a field: eq, replace, asdict ignore it
        return [r for r in index.get((pat.c, pat.d, pat.e), ()) if pat.matches(r.obis)]

    def get(self, pattern: Union[str, Obis]) -> Optional[Reading]:
        found = self.find(pattern)
        return found[0] if found else None

    def __iter__(self) -> Iterator[Reading]:
        return iter(self.readings)


#: Every statistics counter the core keeps, with its meaning: one declared set, so a status item
#: naming a real counter (``parity_errors``, ``connects``, ``decrypted``, ``victron_*`` ...) is
#: known, and a test checks that no code counts under a name missing here.
COUNTERS: Dict[str, str] = {
    # data that arrived
    "reads": "complete D0 readouts", "messages": "verified push messages", "frames": "link frames",
    "apdus": "DLMS APDUs decoded", "bytes": "bytes received", "decrypted": "messages decrypted",
    "connects": "port (re)connections", "discoveries": "DLMS object-list discoveries (polling)",
    "profile_rows": "load-profile rows read (polling)", "rate_limited": "messages held back by a rate limit",
    # errors (the ``stat`` names of the error classes in errors.py)
    "errors": "other errors", "config_errors": "configuration errors", "transport_errors": "port errors",
    "protocol_errors": "protocol errors", "timeouts": "no answer in time", "framing_errors": "broken frames",
    "checksum_errors": "BCC/CRC mismatches", "parity_errors": "characters with a parity error",
    "message_crc_errors": "SML message CRC mismatches", "security_errors": "security errors",
    "decrypt_failures": "messages that could not be decrypted", "tag_failures": "authentication tag mismatches",
    "decode_errors": "undecodable messages", "unknown_layouts": "messages of an unknown layout",
    "access_errors": "DLMS access refused", "association_errors": "DLMS association refused",
    "mode_e_refused": "meters that refused mode E", "internal_errors": "bugs caught (see the log)",
    "downgrades": "messages below the configured security level", "replays": "replayed messages (old counter)",
    "plaintext_rejected": "plain messages where encryption is required",
    "incomplete_messages": "messages cut short",
    "callback_errors": "errors in a caller's callback", "output_errors": "failed output calls",
    "counter_holds": "energy readings held back: below the counter's last one (counterguard)",
    "counter_rises": "energy readings held back: further above the counter's last one than any supply draws "
                     "(counterguard)",
    # Victron D-Bus output
    "victron_updates": "D-Bus updates sent", "victron_disconnects": "meter shown as disconnected on D-Bus",
    "victron_map_errors": "snapshots the Victron mapping failed on", "victron_internal_errors": "D-Bus bugs caught",
    "victron_counter_holds": "energy counters held back (never backwards)",
    "victron_settings_errors": "localsettings errors",
}


class Statistics:
    """Thread-safe counters per meter, so a wrong key never looks like 'no data'.

    Counter names are declared in ``COUNTERS`` (the ``stat`` names of the error classes plus
    the success counters). ``last_error`` is the text of the last
    error (never containing a key), ``last_success`` the epoch time of the last good data.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters: Dict[str, int] = {}
        self.last_error: Optional[str] = None
        self.last_error_time: Optional[float] = None
        self.last_success: Optional[float] = None
        self.durations: Dict[str, float] = {}

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + n

    def error(self, exc: BaseException) -> None:
        """Count an error under its class's ``stat`` name and remember its text."""
        with self._lock:
            name = getattr(exc, "stat", "errors")
            self.counters[name] = self.counters.get(name, 0) + 1
            self.last_error = str(exc) or type(exc).__name__
            self.last_error_time = time.time()

    def success(self, name: str = "messages") -> None:
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + 1
            self.last_success = time.time()

    def timing(self, phase: str, seconds: float) -> None:
        with self._lock:
            self.durations[phase] = seconds

    def get(self, name: str) -> int:
        with self._lock:
            return self.counters.get(name, 0)

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "counters": dict(self.counters),
                "last_error": self.last_error,
                "last_error_time": self.last_error_time,
                "last_success": self.last_success,
                "durations": dict(self.durations),
            }


__all__ = ["Reading", "MeterData", "Statistics", "Value", "COUNTERS", "json_value"]
