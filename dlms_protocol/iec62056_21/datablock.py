"""IEC 62056-21 data messages: framing, BCC and the data-block parser (sans-io, pure functions).

A readout as it arrives at the port::

    [noise] [echo of '/?!' CR LF] /XXXZ[\\W]ident CR LF [echo of ACK 0 Z 0 CR LF]
    [STX] address(value*unit)(value)... CR LF ... ! CR LF [ETX BCC]

Push meters (EasyMeter, eBZ, EMH, DSMR P1) send the same without STX/ETX/BCC; programming-mode
answers are ``STX data ETX BCC`` without ``/`` and ``!``. ``parse_readout`` takes all of these.

How the data block is read (every rule comes from a corpus readout, see tests/test_d0_corpus.py):

* A data set is ``address(group)`` followed by any number of further ``(group)``; a group with
  no address, on the same or a following line, belongs to the set before it (max-demand
  timestamps, load-profile lines, DSMR ``(m3)`` CR LF ``(00001.001)``). Several sets may share a
  line; ``!`` may follow the last ``)`` directly; duplicate addresses are kept in order.
* A group is split at its first ``*`` into value and unit (a number, blanks and a unit with no
  ``*``, Iskra MT171 ``024562 kWh``, is split there). The value keeps its blanks as sent
  (``"        18438636"``); an empty unit (``013925.5*``) and a missing one are both ``None``.
  A group holding ``&`` (Siemens 2WR5 ``088*C&082*C``) is a list of sub-values with units of
  their own: it is kept whole as the value, with unit ``None``, because any split into one
  value and one unit would invent a unit (``C&082*C``).
* What is not part of a data set is skipped and listed in ``Readout.skipped``: noise, an echo,
  ``Y\\x02\\x02\\x01\\x00`` before ``!``. A set whose address is glued to such junk on the same
  line, and groups after a damaged spot up to the next clean address, are dropped rather than
  guessed: ``1-0:\\ufffd1.7.0(5)`` must not become a reading of ``1.7.0``. A wrong value is
  worse than a missing one.

Bytes with bit 7 set: a 7E1 line read as 8N1 puts the parity bit there. When (nearly) every
byte has even parity the capture is read that way: bit 7 is masked, and bytes with a parity
error become U+FFFD (which no value or address may contain) unless the BCC vouches for them.
Otherwise they are 8-bit characters (a DSMR P1 port is 8N1): each is read as its Latin-1
character, which only a unit may hold (``m\xb3``, UTF-8 ``m\xc2\xb3``: both ``m³``; ``\xb0C``:
``°C``); anywhere else, and when not printable, it is junk like U+FFFD. A reader's
transport checks parity itself (7E1 opened as 8N1) and hands over 7-bit characters with each
damaged one replaced by ``transport.PARITY_ERROR`` (0x80): bit 7 set and odd parity, so it is
U+FFFD under either reading, and masked (for the BCC) it is NUL, no address or value character.
"""
from __future__ import annotations

import functools
import operator
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import List, Optional, Tuple, Union

from ..errors import ChecksumError, ChecksumMissingError, ConfigurationError, DlmsError, FramingError
from ..model import HELD_DETAIL, MAKER_NAME_DETAIL, SIGNED_NET_DETAIL, MeterData, Reading, Value
from ..obis import Obis, d0_medium, maker_name, signed_net, with_medium
from ..units import parse_unit, same_quantity, unit_from_bytes
from .identification import Identification, parse_identification


SOH, STX, ETX, EOT = 0x01, 0x02, 0x03, 0x04

# Addresses and values are 7-bit characters; nothing above 0x7E (U+FFFD: a damaged character).
_ADDR_CH = r"[^\x00-\x20()!/\x7f-\U0010ffff]"
_VAL_CH = r"[^()!\x00-\x1f\x7f-\U0010ffff]"
# Only a unit may hold 8-bit characters (a DSMR P1 port is 8N1: ``m\xb3``, UTF-8 ``m\xc2\xb3``, ``\xb0C``),
# each one byte as Latin-1 (_decode): a printable one; not in an '&' list, not in the value before '*'.
_PLAIN_CH = r"[^()!*&\x00-\x1f\x7f-\U0010ffff]"
_UNIT_CH = r"[^()!*&\x00-\x1f\x7f-\xa0\xad\u0100-\U0010ffff]"
# A group's value: one group inside it filling it whole (Iskra AM550's Swedish firmware sends
# ``1-0:0.2.0((ER11))``: the value is ``(ER11)``, as sent), value*unit, or its 7-bit characters
_VAL = rf"\({_VAL_CH}*\)|{_PLAIN_CH}*\*{_UNIT_CH}*(?=\))|{_VAL_CH}*"
# One data set or value group, or an end mark. The look-ahead + back-reference pairs make the
# runs atomic and the look-behind lets an address start only where a run of address characters
# starts, so scanning stays linear even over long junk.
_TOKEN = re.compile(
    rf"(?<!{_ADDR_CH})(?=(?P<addr>{_ADDR_CH}*))(?P=addr)\((?=(?P<val>{_VAL}))(?P=val)\)"
    r"|(?P<end>[!\x03\x04])"
)
# First data set that starts a line (or follows STX): the identification must come before it.
_FIRST_SET = re.compile(rf"(?:(?<=[\r\n\x02])|^)(?=(?P<a>{_ADDR_CH}+))(?P=a)\((?=(?P<v>{_VAL}))(?P=v)\)")
_IDENT_START = re.compile(r"/[A-Za-z]{3}")
_IDENT_LINE = re.compile(r"/[A-Za-z]{3}[^\r\n/!()]+(?=\r|\n)")
# What may precede an unframed data block: blanks, control characters, echoes of the request
# (/?!, /?addr!, /2!, /#!) and of the acknowledgement (ACK V Z Y).
_PREAMBLE = re.compile(
    r"(?:\x06[0-9A-Za-z]{0,3}(?:\r\n|\n|\r)?|/[^\r\n()/]*!(?:\r\n|\n|\r)?|[\s\x00-\x1f\x7f\ufffd]+)*"
)
_TO_ETX = re.compile(r"[^(/\x03\x04]*([\x03\x04])")
_ANY_ETX = re.compile(r"([\x03\x04])")
# (three digits: some meters, e.g. a Warmtelink, do not pad a CRC below 0x1000; dsmr_parser takes it too)
_DSMR_CRC = re.compile(r"([0-9A-Fa-f]{3,4})(?=\r|\n|$)")
_COMMAND = re.compile(r"[A-Z][0-9]")
_CONTROL = re.compile(r"[\x00-\x09\x0b\x0c\x0e-\x1f\x7f]")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:[.,]\d*)?|[.,]\d+)")
_SPACED_UNIT = re.compile(r"(\s*[+-]?\d+(?:[.,]\d*)?) +([A-Za-z][A-Za-z0-9/]{0,7})\s*")  # '024562 kWh'
_STAMPED = re.compile(r"\d{10}(?:\d\d)?[SW]")  # YYMMDDhhmm[ss] + summer/winter: no number with a unit
_GLUED_UNIT = re.compile(r"(\s*[+-]?\d+(?:[.,]\d*)?)([A-Za-z][A-Za-z0-9]{0,5})\s*")  # '010192.57kWh' (_glued_units)
_DSMR_TIME = re.compile(r"(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)([SW])")  # YYMMDDhhmmss + summer/winter
_DSMR_ZONES = {"S": timezone(timedelta(hours=2)), "W": timezone(timedelta(hours=1))}
_DSMR_LOCAL_TIME = re.compile(r"(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)")  # DSMR 2/3: no summer/winter letter
_HOUR = timedelta(hours=1)
#: history buffers whose value is their number of entries (Fluvius ``0-0:98.1.0(3)(1-0:1.6.0)…``, the
#: power failure log ``1-0:99.97.0(2)(0-0:96.7.19)…``); E.ON Hungary's 98.1.0 begins with an entry's time
_COUNTED = {(98, 1, 0), (99, 97, 0)}

_MASK = bytes(b & 0x7F for b in range(256))
_ODD = bytes(bin(b).count("1") & 1 for b in range(256))
_HIGH = bytes(b >> 7 for b in range(256))
# 8-bit bytes that are no printable Latin-1 character (C1 controls, NBSP, soft hyphen) and the
# transport's PARITY_ERROR (0x80) all become 0x80, i.e. U+FFFD: a damaged character, never a unit's
_EIGHT_BIT = bytes(0x80 if 0x80 <= b <= 0xA0 or b == 0xAD else b for b in range(256))
_MAX_SKIPPED = 64

# Bounds: a readout bigger than these is not one (the largest corpus readout has 9.5 kB, 405
# groups, lines of 363 characters; a DSMR text message is up to 2048 hex digits).
MAX_READOUT = 1 << 20       # bytes of one readout or telegram
MAX_DATASETS = 20000
MAX_VALUE = 2048            # characters of one value group
MAX_LINE = 8192             # characters of one line
_LONG_LINE = re.compile(rf"[^\r\n]{{{MAX_LINE + 1}}}")
# What may stand between '!' and the line end: a DSMR CRC16 (4 hex digits), or nothing.
_CRC_FIELD = re.compile(r"[^\r\n\x03\x04]*")
_LINE_END = re.compile(r"\r\n|\n|\r")
_ACK_ECHO = re.compile(r"\x06[0-9][0-9A-Z][0-9](?:\r\n|\n|\r)")
#: checksums a readout can carry, for ``parse_readout(expect=...)``
CHECKSUMS = ("BCC", "CRC16")
# DSMR 4/5 (and ESMR 5 in Belgium) telegrams always end with a CRC16: their version data sets
_DSMR_VERSION = ("1-3:0.2.8", "0-0:96.1.4")


# ---------------------------------------------------------------------------- results
@dataclass(frozen=True)
class DataValue:
    """One ``(group)``: value exactly as sent (blanks kept), unit after ``*`` or None."""

    value: str
    unit: Optional[str]


@dataclass(frozen=True)
class DataSet:
    """``address(group)(group)...``; ``code`` as transmitted, ``obis`` None if it is no OBIS code."""

    code: str
    obis: Optional[Obis]
    values: Tuple[DataValue, ...]


@dataclass(frozen=True)
class Readout:
    """A parsed readout (or push telegram, or programming-mode answer).

    ``bcc`` is ``ok``/``bad``/``absent``; ``bad`` only survives ``use_checksum=False``.
    ``crc`` is the same for the CRC16 a DSMR 4/5 telegram carries after ``!``.
    ``checksum`` names the checksum that vouched for the values (``BCC``, ``CRC16``) or is
    None when the readout carried none (read unchecked).
    ``skipped`` lists what the parser left out (noise, damaged sets), for diagnostics.
    """

    identification: Optional[Identification]
    datasets: Tuple[DataSet, ...]
    bcc: str
    text: str
    raw: bytes
    crc: str = "absent"
    skipped: Tuple[str, ...] = ()

    @property
    def checksum(self) -> Optional[str]:
        """``BCC`` or ``CRC16`` when one was verified, None when the readout had none."""
        if self.bcc == "ok":
            return "BCC"
        if self.crc == "ok":
            return "CRC16"
        return None

    def to_json(self) -> dict:
        """The documented JSON form (CLI ``--json``, web UI, tests of other tools rely on it): the
        data sets as sent, the readings in the one form of ``jsonform.reading_json``, and what was
        not read (``skipped``: a consumer of the JSON must see a dropped register as the table's
        reader does)."""
        from ..jsonform import readings_json

        ident = self.identification
        return {
            "identification": ident.raw if ident is not None else None,
            "manufacturer": ident.manufacturer if ident is not None else None,
            "bcc": self.bcc,
            "crc": self.crc,
            "checksum": self.checksum or "none",
            "datasets": [
                {
                    "code": ds.code,
                    "obis": ds.obis.normalized() if ds.obis is not None else None,
                    "values": [{"value": v.value, "unit": v.unit} for v in ds.values],
                }
                for ds in self.datasets
            ],
            "meter_id": ident.raw if ident is not None else None,
            "readings": readings_json(self._readings()),
            "skipped": list(self.skipped),
        }

    def to_meter_data(self, received: Optional[float] = None) -> MeterData:
        """One Reading per data set (value = Decimal if numeric, else the stripped text).
        ``received``: when the readout's bytes came (the reader knows); MeterData's default is now."""
        readings = self._readings()
        data = MeterData(
            kind="readout",
            readings=tuple(readings),
            meter_id=self.identification.raw if self.identification is not None else None,
            text=self.text,
            raw=self.raw,
            checksum=self.checksum or "none",
            message=self,
        )
        return data if received is None else replace(data, received=received)

    def _readings(self) -> Tuple[Reading, ...]:
        readings = []
        maker = self.identification.manufacturer.upper() if self.identification is not None else None
        for index, ds in enumerate(self.datasets):
            first = ds.values[0] if ds.values else DataValue("", None)
            _, value, unit, stamp = reading_value(ds)
            details = _maker_note(maker, ds.obis)
            if (isinstance(value, str) and value and unit and parse_unit(unit) is not None
                    and not (ds.obis is not None and ds.obis.is_text())):
                value = None  # (the reason in the details: every output says why there is no value)
                details += ((HELD_DETAIL, f"no number under its unit {unit} (garbled on the line or by the meter): "
                                          "no value"),)
            readings.append(Reading(
                code=ds.code,
                obis=ds.obis,
                value=value,
                unit=unit,
                raw=first.value,
                index=index,
                timestamp=stamp,
                extra=tuple((v.value, v.unit) for v in ds.values[1:]),
                details=details,
            ))
        return tuple(readings)


def _maker_note(maker: Optional[str], code: Optional[Obis]) -> Tuple[Tuple[str, Optional[str]], ...]:
    """The note that the identification's maker documents this code as signed net power (EasyMeter's
    1.7.255, obis.signed_net), so names and the derived net power follow it, or as another quantity
    (Fluvius' 31.4.0, obis.maker_name), so its name does; () for every other."""
    if signed_net(maker, code) is not None:
        return ((SIGNED_NET_DETAIL, maker),)
    return ((MAKER_NAME_DETAIL, maker),) if maker_name(maker, code) is not None else ()


def reading_value(ds: DataSet) -> Tuple[int, Value, Optional[str], Optional[datetime]]:
    """(index of the group read, value, unit, capture time) of a data set: its first group, except
    where a format puts the value later (the groups stay as sent in ``Reading.raw`` and ``extra``).

    * DSMR sets that start with their capture time, ``0-1:24.2.1(161116200000W)(00066.405*m3)``
      and Fluvius' ``1-0:1.6.0(200509134558S)(02.589*kW)``: the value is the first number after
      it, the time (S summer, W winter: Dutch/Belgian time) is the reading's time, when it is a
      real moment; a time that is none (``632525252525S``, ``700101010000W``) with 0 marks an
      M-Bus channel without a device: no value;
    * DSMR 2/3 gas ``0-1:24.3.0(121106150000)(00)(60)(1)(0-1:24.2.1)(m3)`` + ``(00054.386)`` on
      the next line: the value is the last group, its unit the sixth;
    * identifiers, times and dates (``Obis.is_text``) stay text: ``0-0:96.1.0(09610)`` is
      ``"09610"``, not 9610; so does an object's attribute other than its value (``1.6.0,5``: a
      time stamp, not a number).
    """
    groups = ds.values
    if not groups:
        return 0, "", None, None
    first = groups[0]
    obis = ds.obis
    if obis is not None and obis.c == 24 and obis.d == 3 and len(groups) >= 7 and first.unit is None:
        last = groups[-1]
        number = to_number(last.value)
        if number is not None:
            return len(groups) - 1, number, last.unit or groups[5].value.strip() or None, _dsmr23_time(first.value)
    written = _DSMR_TIME.fullmatch(first.value) if len(groups) > 1 and first.unit is None else None
    if written is not None and obis is not None and (obis.c, obis.d, obis.e) in _COUNTED:
        return 0, None, None, None  # an entry of the history, not its count: no value (the groups stay)
    if written is not None:
        stamp = _dsmr_time(written)  # None for Sagemcom's '632525252525S' of an absent M-Bus device
        for i in range(1, len(groups)):
            number = to_number(groups[i].value)
            if number is not None:
                if stamp is None and number == 0:  # (no moment and 0: a channel without a device, no fake 0)
                    return i, None, groups[i].unit, None
                return i, number, groups[i].unit, stamp
    if (obis is not None and obis.is_text()) or (obis is None and _other_attribute(ds.code)):
        return 0, first.value.strip(), first.unit, None
    return 0, convert_value(first.value), first.unit, None


def _other_attribute(code: str) -> bool:
    """``<OBIS>,<attribute>`` with an attribute other than the value (2): ZPA's ``1.6.0,5(202601130730)``
    is the time of the 1.6.0 maximum (attribute 5 of an extended register is its capture time)."""
    base, comma, attribute = code.rpartition(",")
    if not (comma and attribute.isascii() and attribute.isdigit() and len(attribute) <= 2):
        return False
    return int(attribute) != 2 and _obis(base) is not None


def _dsmr_time(m: "re.Match[str]") -> Optional[datetime]:
    """The moment of a DSMR time stamp ``YYMMDDhhmmssS``/``...W`` (summer/winter time), else None.

    Years before 2008 (00-07, 70-99) are no moment: DSMR began in 2008. ``700101010000W`` (the
    Unix epoch in Dutch winter time) is what an Iskra AM550 sends for an M-Bus channel without a
    reading, ``000101010000W`` (2000-01-01 00:00 UTC) what an L+G E350 sends, and
    ``000101000001W`` the "no time" of a power failure log entry."""
    y, mo, d, h, mi, sec = (int(g) for g in m.groups()[:6])
    if not 8 <= y < 70:
        return None
    try:
        return datetime(2000 + y, mo, d, h, mi, sec, tzinfo=_DSMR_ZONES[m.group(7)])
    except ValueError:  # not a real moment: no time, and the set is read as sent
        return None


def dsmr_clock(text: str) -> Optional[datetime]:
    """A DSMR clock value ``YYMMDDhhmmssS``/``W`` (``0-0:1.0.0``) as a moment, else None."""
    m = _DSMR_TIME.fullmatch(text.strip())
    return _dsmr_time(m) if m is not None else None


def _dsmr23_time(text: str) -> Optional[datetime]:
    """The moment of a DSMR 2/3 gas reading's ``YYMMDDhhmmss``, which has no summer/winter letter:
    Dutch local time, under the EU's rule (summer time from the last Sunday of March, 01:00 UTC,
    to the last Sunday of October, 01:00 UTC). The hour that the change skips or repeats, a year
    before 2008 and anything that is no date are no moment (None): a guessed hour is a wrong time."""
    m = _DSMR_LOCAL_TIME.fullmatch(text.strip())
    if m is None:
        return None
    y, mo, d, h, mi, sec = (int(g) for g in m.groups())
    if not 8 <= y < 70:
        return None
    try:
        wall = datetime(2000 + y, mo, d, h, mi, sec)
    except ValueError:
        return None
    spring, autumn = (datetime(wall.year, month, _last_sunday(wall.year, month), 2) for month in (3, 10))
    if spring <= wall < spring + _HOUR or autumn <= wall < autumn + _HOUR:
        return None  # skipped (March) or twice (October): which one is not said
    summer = spring + _HOUR <= wall < autumn
    return wall.replace(tzinfo=_DSMR_ZONES["S" if summer else "W"])


def _last_sunday(year: int, month: int) -> int:
    """The day of the last Sunday of a 31-day month."""
    return 31 - (datetime(year, month, 31).weekday() + 1) % 7


# ---------------------------------------------------------------------------- helpers
def to_number(value: str) -> Optional[Decimal]:
    """Decimal for ``0006334.294``, ``000007,4``, ``+000.8``, ``-000073.69``, blank padding; else None.

    Hex (``A2``), dates, ``&`` lists and empty values are not numbers: None, never 0.
    """
    text = value.strip()
    if not _NUMBER.fullmatch(text):
        return None
    try:
        return Decimal(text.replace(",", "."))
    except InvalidOperation:  # pragma: no cover - the pattern only lets valid numbers through
        return None


def convert_value(value: str) -> Value:
    """The physical value of a group for a Reading: Decimal when numeric, else the stripped text."""
    number = to_number(value)
    return number if number is not None else value.strip()


def bcc(data: bytes) -> int:
    """Block check character: XOR of the 7-bit characters after the first SOH or STX up to and
    including the first ETX or EOT (to the end when there is none; from the start when there is
    no SOH/STX). ``bcc(b'\\x01B0\\x03') == ord('q')``.
    """
    masked = bytes(data).translate(_MASK)
    starts = [i for i in (masked.find(b"\x01"), masked.find(b"\x02")) if i >= 0]
    start = min(starts) + 1 if starts else 0
    ends = [i for i in (masked.find(b"\x03", start), masked.find(b"\x04", start)) if i >= 0]
    end = min(ends) + 1 if ends else len(masked)
    return _xor(masked, start, end)


def _xor(data: bytes, start: int, end: int) -> int:
    return functools.reduce(operator.xor, data[start:end], 0)


def _crc16_arc(data: bytes) -> int:
    """CRC-16/ARC (poly 0x8005 reflected, init 0), the DSMR 4/5 telegram CRC."""
    crc = 0
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc


def _crc_table() -> Tuple[int, ...]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


@functools.lru_cache(maxsize=4096)
def _obis(code: str) -> Optional[Obis]:
    return Obis.try_parse(code) if code else None


#: the unit of a group whose 8-bit characters make no known unit (``_value``): its set is dropped
_DAMAGED = "\ufffd"


def _dataset(code: str, values: List[DataValue], skipped: List[str]) -> Optional[DataSet]:
    if any(v.unit == _DAMAGED for v in values):
        _note(skipped, code)
        return None
    obis = _obis(code)
    return DataSet(code, obis, _glued_units(obis, tuple(values)))


def _add(datasets: List[DataSet], dataset: Optional[DataSet]) -> None:
    if dataset is not None:
        datasets.append(dataset)


def _glued_units(obis: Optional[Obis], values: Tuple[DataValue, ...]) -> Tuple[DataValue, ...]:
    """An Iskra MT382 on its optical port (dsmr_parser issue 81) and an L&T meter write the unit
    right after the number, ``1-0:1.8.0(010192.57kWh)``: that is 10192.57 kWh when the unit is one
    of the code's own quantity (units.py; ``Obis.glued_units``), else the group stays as sent (a hex word such as ``0A``
    is no 0 A; identifiers and times are text codes and stay so too)."""
    if obis is None or obis.is_text():
        return values
    units = obis.glued_units()
    out: Optional[List[DataValue]] = None
    for i, v in enumerate(values):
        if v.unit is not None or _STAMPED.fullmatch(v.value.strip()):
            continue  # (a time ends in S or W: DSMR's 241115084500W is winter time, not 241 GW)
        m = _GLUED_UNIT.fullmatch(v.value)
        if m is not None and any(same_quantity(m.group(2), unit) for unit in units):
            out = list(values) if out is None else out
            out[i] = DataValue(m.group(1), m.group(2))
    return values if out is None else tuple(out)


def _value(group: str) -> DataValue:
    if "&" in group:
        return DataValue(group, None)
    value, star, unit = group.partition("*")
    if not star:
        spaced = _SPACED_UNIT.fullmatch(group)
        if spaced is not None:  # Iskra MT171: '024562 kWh', the unit after a blank instead of '*'
            return DataValue(spaced.group(1), spaced.group(2))
    if not unit.isascii():  # (the grammar lets 8-bit bytes, one character each, only into a unit)
        unit = unit_from_bytes(unit.encode("latin-1"))
        from ..dlms.units import code_of  # (rare: a D0 read loads no DLMS module otherwise)

        if parse_unit(unit) is None and code_of(unit.strip()) is None:
            unit = _DAMAGED  # (8-bit bytes that make no unit are damage: no value under an unknown unit)
    return DataValue(value, unit.strip() or None)


def _note(skipped: List[str], fragment: str) -> None:
    if len(skipped) < _MAX_SKIPPED:
        text = fragment.strip()
        skipped.append(text if len(text) <= 60 else text[:57] + "...")


# ---------------------------------------------------------------------------- data block
@dataclass
class _Block:
    datasets: Tuple[DataSet, ...]
    end: Optional[int]          # index of '!', ETX or EOT; None when the text ran out first
    end_char: Optional[str]
    skipped: List[str] = field(default_factory=list)


def _parse_block(text: str, start: int = 0) -> _Block:
    """Scan data sets from ``start`` to the first ``!``/ETX/EOT outside a group (linear)."""
    datasets: List[DataSet] = []
    skipped: List[str] = []
    code: Optional[str] = None
    values: List[DataValue] = []
    broken = False  # after junk: groups without address no longer belong to the set before
    pos, stop = start, len(text)
    search = _TOKEN.search
    while True:
        m = search(text, pos)
        gap_end = m.start() if m is not None else stop
        glued = False
        if gap_end > pos and not text[pos:gap_end].isspace():
            gap = text[pos:gap_end]
            if code is not None and not broken and gap.lstrip().startswith("("):
                # a damaged group of the open set: the set goes whole, its other groups may not
                # say what it holds without it (DSMR's time stamp alone is no gas reading)
                _note(skipped, code)
                code, values = None, []
            _note(skipped, gap)
            broken = True
            tail = gap[max(gap.rfind("\r"), gap.rfind("\n")) + 1:]
            glued = bool(tail) and not tail.isspace()
        if m is None:
            end, end_char = None, None
            break
        if m.group("end") is not None:
            end, end_char = m.start(), m.group("end")
            break
        pos = m.end()
        addr = m.group("addr")
        if addr:
            if code is not None:
                _add(datasets, _dataset(code, values, skipped))
            if glued:
                _note(skipped, m.group(0))
                code, values, broken = None, [], True
            else:
                code, values, broken = addr, [_value(m.group("val"))], False
        elif broken or glued:
            _note(skipped, m.group(0))
        elif code is None and not datasets:
            # groups before any address: an answer to R1/R5 may carry no address
            code, values = "", [_value(m.group("val"))]
        elif code is not None:
            values.append(_value(m.group("val")))
        else:  # pragma: no cover - code is None only with broken set or at the very start
            _note(skipped, m.group(0))
    if code is not None:
        _add(datasets, _dataset(code, values, skipped))
    return _Block(tuple(datasets), end, end_char, skipped)


def parse_data_block(text: Union[str, bytes]) -> Tuple[DataSet, ...]:
    """The data sets of a bare data block (no framing needed; stops at ``!``, ETX or EOT).

    Lenient: junk is skipped, never raises for any str. Bytes are read as 7-bit characters.
    """
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).translate(_MASK).decode("ascii")
    return _parse_block(text, 0).datasets


# ---------------------------------------------------------------------------- framing
def _decode(raw: bytes) -> Tuple[bytes, str, Optional[str]]:
    """(masked bytes, trusted text, text with doubtful bytes as U+FFFD or None if there are none)."""
    masked = raw.translate(_MASK)
    text = masked.decode("ascii")
    if raw.isascii():
        return masked, text, None
    high = raw.translate(_HIGH).count(1)
    odd = raw.translate(_ODD).count(1)
    parity_mode = odd * 10 <= high  # 7E1 read as 8N1: (nearly) every byte has even parity
    if not parity_mode:  # 8-bit bytes: each its Latin-1 character, which only a unit takes (_UNIT_CH)
        return masked, text, raw.translate(_EIGHT_BIT).decode("latin-1").replace("\x80", "\ufffd")
    # Either way a transport's PARITY_ERROR (0x80: bit 7 set, odd parity) is marked.
    marks = raw.translate(_ODD)
    if not marks.count(1):
        return masked, text, None
    doubtful = bytes(0xFF if mark else b for b, mark in zip(masked, marks))
    return masked, text, doubtful.decode("ascii", errors="replace")


def _locate(text: str) -> Tuple[Optional[Identification], int, int, int, bool]:
    """(identification, its start, data start, start of the BCC region, framed with STX)."""
    first = _FIRST_SET.search(text)
    limit = first.start() if first is not None else len(text)
    ident: Optional[Identification] = None
    ident_start = -1
    pos = 0
    for cand in _IDENT_START.finditer(text, 0, limit + 4):
        if cand.start() >= limit:
            break
        line = _IDENT_LINE.match(text, cand.start())
        if line is not None:
            ident = parse_identification(line.group(0))
            ident_start, pos = cand.start(), line.end()
            break
    paren = text.find("(", pos)
    if paren < 0:
        paren = len(text)
    stx = text.find("\x02", pos, paren)
    if stx >= 0:
        soh = text.find("\x01", pos, stx)
        if soh >= 0 and soh + 3 == stx and _COMMAND.fullmatch(text, soh + 1, stx):
            return ident, ident_start, stx + 1, soh + 1, True
        return ident, ident_start, stx + 1, stx + 1, True
    preamble = _PREAMBLE.match(text, pos)  # the pattern also matches the empty string
    start = preamble.end() if preamble else pos
    # A damaged character (U+FFFD) on the line of the first data set may have been part of its
    # address: leave it in front of the set, so that the set is dropped as glued to junk
    # ('\ufffd1.7.0(5)' must not become a reading of 1.7.0).
    line_start = max(text.rfind("\r", pos, start), text.rfind("\n", pos, start)) + 1
    if "\ufffd" in text[max(pos, line_start):start]:
        start = max(pos, line_start)
    return ident, ident_start, start, start, False


@dataclass
class _End:
    """How a data block ended: the positions and checks ``_check_end`` judges."""

    bang: Optional[int]      # index of '!' (None: the block ended at ETX/EOT)
    etx: Optional[int]       # the ETX/EOT whose next byte is the BCC
    bcc: str
    crc: str
    framed: bool
    following: Optional[str] = None  # the next telegram's identification after the '!' line (unframed)


def _damaged(what: str, detail: str) -> ChecksumMissingError:
    return ChecksumMissingError(what, f"the end of the readout was damaged on the line ({detail}), "
                                      "so its values cannot be checked")


def _dsmr_needs_crc(datasets: Tuple[DataSet, ...]) -> bool:
    """DSMR 4/5 (P1 version data set 1-3:0.2.8 >= 40, or the Belgian 0-0:96.1.4) always send a CRC16."""
    for ds in datasets:
        if ds.code in _DSMR_VERSION and ds.values:
            version = to_number(ds.values[0].value)
            if ds.code != "1-3:0.2.8" or (version is not None and version >= 40):
                return True
    return False


def _check_end(text: str, end: _End, acked: bool, datasets: Tuple[DataSet, ...], expect: Optional[str]) -> None:
    """Raise ChecksumMissingError when the readout should carry a checksum it lacks.

    A readout without BCC or CRC is only read when its end is intact: ``!`` [CR LF], then
    nothing, or an ETX whose BCC was cut off. Anything else after the end means the framing
    bytes (STX, ETX, the CRC field) were hit by noise, and the values are not trusted.
    """
    crc_text = ""
    if end.bang is not None:
        field_ = _CRC_FIELD.match(text, end.bang + 1)
        crc_text = field_.group(0) if field_ is not None else ""
        if crc_text and not _DSMR_CRC.fullmatch(crc_text):
            raise _damaged("CRC16", f"{len(crc_text)} character(s) after '!' that are no CRC16")
        if crc_text and end.crc == "absent":
            raise _damaged("CRC16", "a CRC16 follows '!' but the identification it covers is damaged")
    if end.bcc == "ok" or end.crc == "ok":
        if expect == "CRC16" and end.crc != "ok":
            raise _damaged("CRC16", "this meter sends a CRC16 after '!', this readout has none")
        return
    if expect is not None:
        raise _damaged(expect, f"this meter sent a {expect} before, this readout has none")
    if _dsmr_needs_crc(datasets):
        raise _damaged("CRC16", "a DSMR 4/5 telegram without its CRC16")
    if acked:  # an echoed ACK V Z Y: a mode C/E data readout, which always ends with ETX + BCC
        raise _damaged("BCC", "a mode C readout without ETX and BCC")
    if end.bang is None:
        return  # a programming-mode answer that ends at ETX/EOT (its BCC was cut off)
    rest = _after_end(text, end.bang)
    if (rest and not (len(rest) == 1 and rest in "\x03\x04") and not _trailer_lines(rest, end)
            and end.following is None):
        raise _damaged("BCC", f"{len(rest)} unexpected byte(s) after '!' where ETX and BCC belong")


def _after_end(text: str, bang: int) -> str:
    """What follows the '!' line (after its CRC field and line end)."""
    field_ = _CRC_FIELD.match(text, bang + 1)
    pos = bang + 1 + (len(field_.group(0)) if field_ is not None else 0)
    line_end = _LINE_END.match(text, pos)
    return text[line_end.end() if line_end is not None else pos:]


def _next_telegram(rest: str) -> Optional[str]:
    """The identification line of the next telegram when ``rest`` begins with one (a capture of a
    push-only meter holds one telegram after another), else None."""
    if _IDENT_START.match(rest) is None:
        return None
    return rest.split("\n", 1)[0].rstrip("\r")[:40]


def _trailer_lines(rest: str, end: _End) -> bool:
    """Whole lines after the '!' line of a readout without STX, none of them a readout's framing
    (ETX, STX, '!', '(' or '/'): what a gateway adds after a push-only meter's telegram (an EasyMeter
    behind a COM-1 adds its own number and a line of 0xFF). A damaged ETX and BCC are no whole line."""
    if end.framed or end.bang is None or len(rest) < 3 or rest[-1] != "\n":
        return False
    return not any(ch in rest for ch in "\x02\x03\x04!(/")


def _check_size(text: str, datasets: Tuple[DataSet, ...]) -> None:
    """Bounds: too many data sets, an overlong value or line means this is no readout."""
    fix = "this is not a meter readout (or the line is flooded with noise): check the port and the meter"
    if len(datasets) > MAX_DATASETS:
        raise FramingError(f"{len(datasets)} data sets in one readout (at most {MAX_DATASETS})", fix)
    for ds in datasets:
        for v in ds.values:
            if len(v.value) > MAX_VALUE:
                raise FramingError(f"a value of {len(v.value)} characters in {ds.code[:20]!r} "
                                   f"(at most {MAX_VALUE})", fix)
    if _LONG_LINE.search(text) is not None:
        raise FramingError(f"a line of more than {MAX_LINE} characters", fix)


def _parse_text(text: str, masked: bytes, raw: bytes, use_checksum: bool,
                expect: Optional[str] = None) -> Readout:
    ident, ident_start, data_start, bcc_from, framed = _locate(text)
    block = _parse_block(text, data_start)
    if block.end is None:
        raise FramingError(
            "the data block has no end ('!' or ETX): the readout is truncated",
            "the reader stopped too early or characters were lost: raise the read time-out, check the IR head",
        )
    etx: Optional[int] = None
    crc = "absent"
    bang: Optional[int] = None
    if block.end_char == "!":
        bang = block.end
        block_end = bang + 1
        # Framed (STX): the ETX that ends the frame, wherever it is, so that the BCC always
        # covers the whole block. Unframed: only an ETX right after the '!' line counts.
        m = (_ANY_ETX.search if framed else _TO_ETX.match)(text, bang + 1)
        if m is not None:
            etx = m.start(1)
        c = _DSMR_CRC.match(text, bang + 1)
        if c is not None and ident is not None:
            expected = _crc16_arc(masked[ident_start:bang + 1])
            got = int(c.group(1), 16)
            if expected != got and _crc16_arc(raw[ident_start:bang + 1]) == got:
                expected = got  # (an 8N1 telegram with bytes above 0x7F: its CRC is over them as sent)
            crc = "ok" if expected == got else "bad"
            if crc == "bad" and use_checksum:
                raise ChecksumError("CRC16", expected, got, digits=4)
    else:
        etx = block_end = block.end
        if ident is not None:
            raise FramingError(
                "the data message ends at ETX/EOT without '!'",
                "characters were lost or damaged on the line: check the IR head and the character format (7E1)",
            )
        trailing = text[etx + 2:]
        if any(ch in trailing for ch in "()!\x03\x04"):
            raise FramingError(
                "data follows the end of the message (ETX came too early)",
                "the line damaged a character: check the IR head and the character format (7E1)",
            )
    status = "absent"
    if etx is not None and etx + 1 < len(masked):
        expected = _xor(masked, bcc_from, etx + 1)
        got = masked[etx + 1]
        status = "ok" if expected == got else "bad"
        if status == "bad" and use_checksum:
            raise ChecksumError("BCC", expected, got)
    if not block.datasets:
        raise FramingError(
            "no data sets in the answer: this is not a readout",
            "check the port, the baud rate and that the meter answers with a data readout",
        )
    _check_size(text, block.datasets)
    following = _next_telegram(_after_end(text, bang)) if bang is not None and not framed else None
    if use_checksum:
        acked = ident is not None and _ACK_ECHO.search(text, 0, max(data_start, text.find("("))) is not None
        _check_end(text, _End(bang, etx, status, crc, framed, following), acked, block.datasets, expect)
    if following is not None:  # (read is this one telegram: the capture's later ones are not)
        block.skipped.append(f"the next telegram from {following}")
    body = text[data_start:block_end]
    shown = f"{ident.raw}\r\n{body}" if ident is not None else body
    return Readout(
        identification=ident,
        datasets=_in_medium(block.datasets, ident),
        bcc=status,
        text=_CONTROL.sub("", shown),
        raw=raw,
        crc=crc,
        skipped=tuple(block.skipped),
    )


def _in_medium(datasets: Tuple[DataSet, ...], ident: Optional[Identification]) -> Tuple[DataSet, ...]:
    """The data sets with the medium the identification names (obis.d0_medium: a heat meter's
    ``6.8``) as group A of their short codes; unchanged for every other meter."""
    medium = d0_medium(ident.manufacturer, ident.ident) if ident is not None else None
    if medium is None:
        return datasets
    return tuple(replace(ds, obis=with_medium(ds.obis, medium)) for ds in datasets)


def parse_readout(raw: bytes, *, use_checksum: bool = True, expect: Optional[str] = None) -> Readout:
    """Parse a whole capture: noise, echoes, identification, [STX] block ``!`` CR LF [ETX BCC].

    With ``use_checksum`` a BCC (or DSMR CRC) that does not match raises ChecksumError. An
    absent one is allowed (push meters have none, captures are cut) only when the end of the
    readout is intact; a damaged end (junk where ETX + BCC or the CRC belong), a DSMR 4/5
    telegram without CRC, or no ``expect``-ed checksum (``BCC``/``CRC16``: what this meter sent
    before) raises ChecksumMissingError. Raises FramingError when the bytes hold no complete
    readout or exceed the bounds (MAX_READOUT bytes, MAX_DATASETS, MAX_VALUE, MAX_LINE), never
    anything outside the DlmsError hierarchy.
    """
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise FramingError(f"a readout must be bytes, not {type(raw).__name__}", "pass the bytes read from the port")
    if expect is not None and expect not in CHECKSUMS:
        raise ConfigurationError(f"checksum {expect!r} unknown", "expect BCC, CRC16 or None")
    raw = bytes(raw)
    if not raw:
        raise FramingError("nothing arrived", "check the port, the IR head and that the meter is awake")
    if len(raw) > MAX_READOUT:
        raise FramingError(f"{len(raw)} bytes are no readout (at most {MAX_READOUT})",
                           "pass one readout or telegram; a meter readout has a few kilobytes")
    masked, text, doubtful = _decode(raw)
    if doubtful is None:
        return _parse_text(text, masked, raw, use_checksum, expect)
    try:
        first = _parse_text(text, masked, raw, use_checksum=False)
    except DlmsError:
        first = None
    if first is not None and first.bcc == "ok":
        if use_checksum:  # the BCC vouches for the 7-bit characters; the rest of the rules still apply
            _check_end(text, _End(None, None, "ok", first.crc, True), False, first.datasets, expect)
        return first
    return _parse_text(doubtful, masked, raw, use_checksum, expect)


__all__ = [
    "DataValue", "DataSet", "Readout", "bcc", "dsmr_clock", "parse_data_block", "parse_readout", "to_number",
    "convert_value", "CHECKSUMS", "MAX_READOUT", "MAX_DATASETS", "MAX_VALUE", "MAX_LINE",
]
