"""The one JSON form of a reading and of a ``MeterData``, for every JSON output.

Why one: ``decode``, ``listen``, ``parse``/``read``, ``poll`` and ``detect`` used to build their own
dicts, so the same counter was a number in one and a string in another and bytes were upper- or
lower-case hex. Now every tool's readings come from ``reading_json`` and a snapshot from
``meter_data_json``; a decoder's own contract (``PushMessage.to_json``, ``Readout.to_json``,
``SmlTelegram.to_json``) only adds its protocol facts around them.

Values follow ``model.json_value``, which is exact: integers and Decimals whose float reads back
as the same number are JSON numbers, any other Decimal is its text, so ``json.loads`` never
returns a rounded value; bytes are upper-case hex, times ISO 8601.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Dict, Iterable, List

from .model import MeterData, Reading, json_value

#: the keys of one reading, in this order; the first six are ``decode --json``'s documented contract
READING_KEYS = ("obis", "index", "raw", "scaler", "unit", "value", "code", "name", "derived", "timestamp")
#: the keys ``meter_data_json`` adds to a message's own form (or gives alone), in this order
METER_DATA_KEYS = ("kind", "meter_id", "meter_time", "received", "checksum", "profile", "readings")


def reading_json(reading: Reading) -> Dict[str, Any]:
    """One reading: ``obis`` dotted (None for a short or no OBIS code), ``code`` as sent,
    ``raw`` and ``value`` by ``json_value``, ``name`` the meaning, ``derived`` for computed values."""
    obis = reading.obis
    stamp = reading.timestamp
    return {
        "obis": obis.dotted() if obis is not None else None,
        "index": reading.index,
        "raw": json_value(reading.raw),
        "scaler": reading.scaler,
        "unit": reading.unit,
        "value": json_value(reading.value),
        "code": reading.code,
        "name": reading.name,
        "derived": reading.derived,
        "timestamp": stamp.isoformat() if stamp is not None else None,
    }


def readings_json(readings: Iterable[Reading]) -> List[Dict[str, Any]]:
    return [reading_json(r) for r in readings]


def iso_utc(epoch: float) -> str:
    """Epoch seconds as ISO 8601 UTC with milliseconds, ``Z`` suffix."""
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def meter_data_json(data: MeterData, *, received: bool = True) -> Dict[str, Any]:
    """A snapshot as JSON: its message's own form (when it has one) plus ``METER_DATA_KEYS``.

    A message's values win where both have a key (a push's ``checksum`` names what was
    verified); its ``readings`` are kept as the message gives them (SML adds ``status``) and the
    derived readings the pipeline added follow, marked ``"derived": true``. ``received=False``
    leaves the receive time out (offline decoding: the output is then the same on every run).
    """
    message = data.message
    out: Dict[str, Any] = dict(message.to_json()) if message is not None and hasattr(message, "to_json") else {}
    sent = [r for r in data.readings if not r.derived]
    own = out.get("readings")
    if isinstance(own, list) and len(own) == len(sent):
        readings = own + readings_json(r for r in data.readings if r.derived)
    else:  # no message, or one whose readings are not these: the core form of every reading
        readings = readings_json(data.readings)
    core: Dict[str, Any] = {
        "kind": data.kind,
        "meter_id": data.meter_id,
        "meter_time": data.meter_time.isoformat() if data.meter_time is not None else None,
        "received": iso_utc(data.received),
        "checksum": data.checksum,
        "profile": data.profile,
    }
    if not received:
        del core["received"]
    for key, value in core.items():
        if out.get(key) is None:
            out[key] = value
    out["readings"] = readings
    return out


__all__ = ["READING_KEYS", "METER_DATA_KEYS", "reading_json", "readings_json", "meter_data_json", "iso_utc"]
