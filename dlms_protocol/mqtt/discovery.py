"""What the MQTT output sends, as plain data: topics, state payloads, Home Assistant discovery.

Kept apart from the client (``output.py``) so the message layout is testable without a broker
and the bench can time it alone. Nothing here imports paho or opens a socket.

Topics (``prefix`` and ``node`` are options, ``meter`` the meter's topic-safe name)::

    <prefix>/<node>/status           online | offline (retained; Last Will = offline)
    <prefix>/<meter>/<key>           {"value": 219.252, "unit": "kWh", "timestamp": "...Z"}
    <prefix>/<meter>/<key>/value     219.252
    <discovery>/sensor/<node>/<object>/config   Home Assistant sensor config (retained)

``key`` is the OBIS code as users write it (``1-0:1.8.0``, a D0 short code ``1.8.0``,
``*NN`` for billing periods), made topic-safe. Which device_class/state_class/unit a reading
gets is data (``data/ha_discovery.json``); a reading whose unit Home Assistant would reject is
converted by its SI prefix or published without device_class, never with a wrong unit.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .. import units as _units
from ..errors import DlmsError
from ..iec62056_21.identification import parse_identification
from ..model import MeterData, Reading, json_value, value_text
from ..obis import Obis, _tables, best_identity, is_manufacturer

#: longest topic level we build from meter data (MQTT allows 65535 bytes per topic; brokers and
#: Home Assistant entity ids want far less)
MAX_LEVEL = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:*-]")
_SLUG = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class HaClass:
    """Home Assistant's view of one reading: class, state class, unit and the factor to it."""

    device_class: Optional[str]
    state_class: Optional[str]
    unit: Optional[str]
    factor: int = 0  # power of ten from the meter's unit to ``unit`` (kvar -> var: 3)


@dataclass(frozen=True)
class Identity:
    """The device block's facts, as far as the meter told them (None when it did not)."""

    manufacturer: Optional[str]
    model: Optional[str]
    serial: Optional[str]


@lru_cache(maxsize=1)
def _table() -> Dict[str, Any]:
    raw = json.loads(
        (Path(__file__).resolve().parent.parent / "data" / "ha_discovery.json").read_text(encoding="utf-8")
    )
    by_c: Dict[int, Dict[str, str]] = {}
    for entry in raw["quantities"]:
        for c in entry["c"]:
            by_c[int(c)] = {k: v for k, v in entry.items() if k != "c"}
    raw["by_c"] = by_c
    return raw


# ---------------------------------------------------------------------------- names
def topic_level(text: str, limit: int = MAX_LEVEL) -> str:
    """One safe topic level: no ``+ # /``, NUL, spaces or control characters; bounded length."""
    out = _UNSAFE.sub("_", text.strip()).strip("_") or "_"
    return out[:limit]


def slug(text: str) -> str:
    """Lower-case ``[a-z0-9_]`` for Home Assistant object ids and unique ids."""
    return _SLUG.sub("_", text.lower()).strip("_")[:MAX_LEVEL] or "x"


def reading_key(reading: Reading) -> str:
    """The reading's topic level: its OBIS code without the default ``*255``, else its code."""
    return _key(reading.code, reading.obis)


@lru_cache(maxsize=4096)
def _key(code: str, obis: Optional[Obis]) -> str:
    if obis is None:
        return topic_level(code)
    text = str(obis)
    if text.endswith("*255"):
        text = text[:-4]
    return topic_level(text)


def keys_of(data: MeterData) -> List[Tuple[str, Reading]]:
    """(key, reading) in meter order for every reading with a physical value.

    A code sent twice gets ``_2``, ``_3`` (never overwritten). A reading without value (a
    positional raw number whose scaler no profile explains) is no value to publish.
    """
    seen: Dict[str, int] = {}
    out: List[Tuple[str, Reading]] = []
    for r in data.readings:
        if r.value is None:
            continue
        key = reading_key(r)
        n = seen.get(key, 0) + 1
        seen[key] = n
        out.append((key if n == 1 else f"{key}_{n}", r))
    return out


# ---------------------------------------------------------------------------- identity
def identity(data: MeterData) -> Identity:
    """Manufacturer (the 3-letter FLAG id), model and serial from what the meter sent."""
    serial = best_identity((r.obis, _serial_text(r)) for r in data.readings if is_serial(r))  # one table, best first
    manufacturer = model = None
    mid = (data.meter_id or "").strip()
    if data.kind == "readout" and mid:
        try:
            ident = parse_identification(mid if mid.startswith("/") else "/" + mid)
        except DlmsError:
            ident = None
        if ident is not None:
            manufacturer, model = ident.manufacturer.upper(), (ident.ident.strip() or None)
    elif re.fullmatch(r"[0-9A-Fa-f]{16}", mid):  # a DLMS system title: FLAG id in its first 3 bytes
        flag = bytes.fromhex(mid[:6]).decode("latin-1")
        manufacturer = flag if flag.isalpha() and flag.isupper() else None
        model = f"DLMS push, profile {data.profile}" if data.profile else None
    if manufacturer is None:  # an SML meter names its maker in a reading of its own
        manufacturer = next((r.value for r in data.readings if is_manufacturer(r.obis) and isinstance(r.value, str)
                             and re.fullmatch(r"[A-Z]{3}", r.value)), None)
    return Identity(manufacturer, model, serial)


def _serial_text(reading: Reading) -> Optional[str]:
    """A serial as sent (leading zeros kept; octets such as an SML server ID as the core's
    ``value_text`` shows them, like Victron's /Serial), or None for a value that is no id."""
    text = reading.raw if isinstance(reading.raw, str) else reading.value
    if isinstance(text, (str, int, Decimal, bytes)) and not isinstance(text, bool):
        return value_text(text)
    return None


def is_serial(reading: Reading) -> bool:
    code = reading.obis
    return code is not None and code.is_serial()


def meter_name(data: MeterData) -> str:
    """A stable topic-safe meter name: serial number, else meter id, else ``meter``."""
    ident = identity(data)
    for candidate in (ident.serial, data.meter_id):
        if candidate:
            name = topic_level(str(candidate).lstrip("/"), 48)
            if name != "_":
                return name
    return "meter"


# ---------------------------------------------------------------------------- values
def json_number(value: Any) -> Any:
    """``json_value``, but a number that is not finite is no value at all (never the text 'NaN')."""
    if isinstance(value, Decimal) and not value.is_finite():
        return None
    return json_value(value)


_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


@lru_cache(maxsize=64)
def _unit_json(unit: Optional[str]) -> str:
    return _ENCODE(unit)


@lru_cache(maxsize=8)
def _iso(epoch: float) -> str:
    """Epoch seconds as ISO 8601 UTC (cached: every reading of a snapshot has the same)."""
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def state_payloads(reading: Reading, data: MeterData) -> Tuple[str, str]:
    """(JSON payload, plain payload) for one reading; the plain one is the bare value.

    JSON: ``{"value", "unit", "timestamp"}`` (receive time, UTC), plus ``meter_time`` when the
    meter stamped it and ``"derived": true`` for values computed from others (net power).
    """
    value = json_number(reading.value)
    if isinstance(value, int) and not isinstance(value, bool):
        encoded = str(value)
    elif isinstance(value, float):
        encoded = repr(value)  # what json.dumps writes for a finite float
    else:
        encoded = _ENCODE(value)
    parts = [f'{{"value":{encoded},"unit":{_unit_json(reading.unit)},"timestamp":"{_iso(data.received)}"']
    stamp = reading.timestamp or data.meter_time
    if stamp is not None:
        parts.append(f',"meter_time":"{stamp.isoformat()}"')
    if reading.derived:
        parts.append(',"derived":true')
    parts.append("}")
    plain = "" if value is None else (value if isinstance(value, str) else encoded)
    return "".join(parts), plain


# ---------------------------------------------------------------------------- Home Assistant
def _prefix_factor(unit: str, target: str) -> Optional[int]:
    """Powers of ten from ``unit`` to ``target`` by the core's one conversion (units.factor), or
    None when they are not the same quantity (no second prefix table here)."""
    if unit == target:
        return 0
    try:
        factor = _units.factor(unit, target)
    except _units.UnitMismatch:
        return None
    exponent = factor.adjusted()
    return exponent if factor == Decimal(10) ** exponent else None


def _ha_unit(device_class: str, unit: Optional[str]) -> Optional[Tuple[Optional[str], int]]:
    """The unit Home Assistant accepts for the class and the factor to it, or None if none fits."""
    spec = _table()["device_classes"].get(device_class)
    if spec is None:
        return None
    if unit is None:
        return (None, 0) if spec.get("unitless") else None
    if unit in spec["units"]:
        return unit, 0
    for target in spec["units"]:
        factor = _prefix_factor(unit, target)
        if factor is not None:
            return target, factor
    return None


def channel_types(data: MeterData) -> Dict[int, int]:
    """M-Bus channel (B) -> device type, from the snapshot's 0-B:24.1.0 (DSMR sends ``003`` for gas)."""
    out: Dict[int, int] = {}
    for r in data.readings:
        o = r.obis
        if o is not None and o.a == 0 and o.b and (o.c, o.d, o.e) == (24, 1, 0):
            text = str(r.value).strip()
            if text.isdigit():
                out[o.b] = int(text)
    return out


def _channel_class(code: Obis, unit: Optional[str], device_type: Optional[int]) -> Optional[str]:
    """The class of an M-Bus channel's counter (ha_discovery ``channels``), else None."""
    rule = _table()["channels"]
    if f"{code.c}.{code.d}.{code.e}" not in rule["counters"] or unit is None:
        return None
    if _ha_unit("energy", unit) is not None:
        return "energy"
    if _ha_unit("volume", unit) is None:
        return None
    return rule["volume_classes"].get(str(device_type), "volume")


def _plain(code: Optional[Obis], unit: Optional[str]) -> HaClass:
    """A reading no device class fits, with the meter's unit: a state class where ha_discovery's
    ``plain_state_class`` gives one (a phase angle is a measurement, a count of power failures
    counts up), so Home Assistant keeps long-term statistics of it; none for another medium's
    codes or a billing-period value."""
    if code is None or code.other_medium() or code.f not in (None, 255):
        return HaClass(None, None, unit)
    rule = _table()["plain_state_class"]
    state = rule["by_cde"].get(f"{code.c}.{code.d}.{code.e}") or rule["by_cd"].get(f"{code.c}.{code.d}")
    return HaClass(None, state, unit)


def ha_class(reading: Reading, device_type: Optional[int] = None) -> Optional[HaClass]:
    """Home Assistant classes for a numeric reading (None for text, dates and raw bytes).
    ``device_type``: for an M-Bus channel's value (A 0, C 24), its device type (``channel_types``)."""
    if reading.numeric() is None:
        return None
    code = reading.obis
    table = _table()
    if code is not None and code.a == 0 and code.b and code.c == 24:  # an M-Bus sub-meter's value
        device_class = _channel_class(code, reading.unit, device_type)
        converted = _ha_unit(device_class, reading.unit) if device_class else None
        if device_class is None or converted is None:
            return HaClass(None, None, reading.unit)
        state = table["state_class"]["energy"] if code.f in (None, 255) else None
        return HaClass(device_class, state, converted[0], converted[1])
    if code is not None and code.other_medium():  # heat, gas, water: only their own entries (ha_discovery media)
        own = table["media"].get(str(code.a), {}).get(f"{code.c}.{code.d}") if code.e is None else None
        device_class, kind = (own["device_class"], own["kind"]) if own else (None, None)
    else:
        entry = table["by_c"].get(code.c) if code is not None else None
        if code is None or entry is None:
            return _plain(code, reading.unit)
        kind = _tables()["d"].get(str(code.d), {}).get("kind") if code.d is not None else None
        device_class = entry.get(kind) if kind else None
        if device_class is None:
            device_class, kind = entry.get("any"), "any"
    converted = _ha_unit(device_class, reading.unit) if device_class else None
    if device_class is None or converted is None:
        return _plain(code, reading.unit)
    state_class = table["state_class"].get(kind or "")
    if kind == "energy" and code.c in table["signed_energy_c"]:
        state_class = "total"
    if code.f is not None and code.f != 255:
        state_class = None
    return HaClass(device_class, state_class, converted[0], converted[1])


def value_template(factor: int) -> str:
    """The template that reads the JSON state topic (scaled when the unit was converted). A value
    that is null (no number: a NaN the meter sent, a garbled value) renders as None, which Home
    Assistant shows as unknown: its ``float`` filter raises on it, a warning with every message."""
    if factor == 0:
        return "{{ value_json.value }}"
    return "{{ (value_json.value | float * %s) | round(6) if value_json.value is number else None }}" % repr(
        10.0**factor)


def device_block(meter: str, ident: Identity) -> Dict[str, Any]:
    name = " ".join(p for p in (ident.manufacturer, ident.model) if p) or f"Meter {meter}"
    block: Dict[str, Any] = {"identifiers": [f"dlms_{slug(meter)}"], "name": name}
    for key, value in (
        ("manufacturer", ident.manufacturer),
        ("model", ident.model),
        ("serial_number", ident.serial),
    ):
        if value:
            block[key] = value
    return block


def discovery_config(
    reading: Reading,
    key: str,
    *,
    meter: str,
    state_topic: str,
    availability_topic: str,
    device: Dict[str, Any],
    language: str = "en",
    device_type: Optional[int] = None,
) -> Optional[Dict[str, Any]]:
    """One sensor entity's config, or None for a reading Home Assistant cannot graph (text).
    ``device_type``: an M-Bus channel's (``channel_types``), for its counter's class."""
    cls = ha_class(reading, device_type)
    if cls is None or is_serial(reading):  # the serial number is the device's, not a sensor
        return None
    name = reading.label(language) or key
    config: Dict[str, Any] = {
        "name": name,
        "unique_id": f"dlms_{slug(meter)}_{slug(key)}",
        # the entity id HA should use (``object_id`` is deprecated since HA 2025.10)
        "default_entity_id": f"sensor.{slug(meter)}_{slug(key)}",
        "state_topic": state_topic,
        "value_template": value_template(cls.factor),
        "availability_topic": availability_topic,
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": device,
    }
    if cls.unit is not None:
        config["unit_of_measurement"] = cls.unit
    if cls.device_class is not None:
        config["device_class"] = cls.device_class
    if cls.state_class is not None:
        config["state_class"] = cls.state_class
    return config


__all__ = [
    "topic_level",
    "slug",
    "reading_key",
    "keys_of",
    "identity",
    "is_serial",
    "meter_name",
    "json_number",
    "state_payloads",
    "ha_class",
    "channel_types",
    "value_template",
    "device_block",
    "discovery_config",
    "HaClass",
    "Identity",
    "MAX_LEVEL",
]
