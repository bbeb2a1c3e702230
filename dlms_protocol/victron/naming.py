"""The service-name suffix: which meter identity names the service, and how sure it is.

Kept apart from ``service`` (which needs dbus-fast) so the bridge can decide when the name is
settled without importing the D-Bus layer before ``start()``.
"""
from __future__ import annotations

import re
from typing import Optional, Tuple

_NAME_BAD = re.compile(r"[^A-Za-z0-9_]")
#: longest suffix: ``com.victronenergy.grid.`` + ``dlms_`` + this stays far below D-Bus's 255
#: characters, and a settings path element stays readable
MAX_SUFFIX = 64


def clean_suffix(text: str) -> str:
    """Make text usable both as a bus-name element and as a settings path element.

    Only ``[A-Za-z0-9_]``, not starting with a digit, at most MAX_SUFFIX characters: a longer
    one keeps its start and ends with 8 hex digits of a hash of the whole, so two long serials
    that differ only at the end still get different, stable names.
    """
    out = _NAME_BAD.sub("_", str(text).strip()).strip("_")
    if not out:
        return ""
    out = out if not out[0].isdigit() else "_" + out
    if len(out) > MAX_SUFFIX:
        import hashlib  # only for such long names: the service never loads it otherwise

        digest = hashlib.sha1(out.encode("utf-8")).hexdigest()[:8]
        out = out[:MAX_SUFFIX - 9].rstrip("_") + "_" + digest
    return out


#: How sure a suffix is about the meter, best last (see pick_suffix).
RANK_FALLBACK, RANK_METER_ID, RANK_SERIAL, RANK_EXPLICIT = 0, 1, 2, 3


def pick_suffix(explicit: Optional[str], serial: Optional[str], meter_id: Optional[str],
                port: str) -> Tuple[str, int]:
    """The stable part of the service name and its rank: explicit > meter serial > meter id
    (system title) > port > fixed. The rank lets the bridge wait for, or move to, a better one."""
    if explicit:
        cleaned = clean_suffix(explicit)
        if cleaned:
            return cleaned, RANK_EXPLICIT
    for candidate, rank in ((serial, RANK_SERIAL), (meter_id, RANK_METER_ID)):
        if candidate:
            cleaned = clean_suffix(str(candidate))
            if cleaned:
                return "dlms_" + clean_suffix(cleaned.lstrip("_")).lstrip("_"), rank
    if port:
        base = port.rstrip("/").rsplit("/", 1)[-1]
        cleaned = clean_suffix(base)
        if cleaned:
            return "dlms_" + cleaned.lstrip("_"), RANK_FALLBACK
    return "dlms_meter", RANK_FALLBACK


def derive_suffix(explicit: Optional[str], serial: Optional[str], meter_id: Optional[str], port: str) -> str:
    """The stable part of the service name: explicit > meter serial > meter id > port > fixed."""
    return pick_suffix(explicit, serial, meter_id, port)[0]


__all__ = ["clean_suffix", "MAX_SUFFIX", "pick_suffix", "derive_suffix", "RANK_FALLBACK", "RANK_METER_ID",
           "RANK_SERIAL", "RANK_EXPLICIT"]
