"""How the meter appears on Venus OS (``BridgeSettings``), apart from the bridge and the service.

Why its own module: the D-Bus service needs these settings and the bridge starts the service;
with the settings in the bridge module the two imported each other.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from ..errors import ConfigurationError

ROLES = ("grid", "pvinverter", "genset", "acload", "evcharger", "heatpump")


@dataclass
class BridgeSettings:
    """How the meter appears on Venus OS.

    ``bus``: ``auto`` (session bus when DBUS_SESSION_BUS_ADDRESS is set, else system bus, as
    Victron's drivers choose), ``system``, ``session`` or an address such as
    ``unix:path=/run/dbus/system_bus_socket`` or ``tcp:host=venus.local,port=78``.
    ``role``/``custom_name``/``device_instance`` are first-start defaults: once localsettings
    holds a record, the GUI's choice wins. ``device_suffix``: the stable last element of the
    service name (default ``dlms_<meter serial>``, else ``dlms_<meter id>``, else
    ``dlms_<port>``). ``identity_wait``: seconds after the first frame to wait for one with
    the meter serial before falling back (meters that send it only in a 10 s list).
    ``timeout``: seconds without a verified frame before the meter counts as disconnected. ``refresh_time_ms``: the
    meter's update period for ``/RefreshTime`` (default: measured). ``mapping_file``: JSON that
    overrides the built-in mapping; ``mapping_options`` overrides its options (e.g.
    ``{"total_power_on_l1": "yes"}``). ``port``/``connection``: the meter port (suffix fallback)
    and the ``/Mgmt/Connection`` text.
    """

    bus: str = "auto"
    role: str = "grid"
    custom_name: str = ""
    device_suffix: Optional[str] = None
    product_name: str = "DLMS smart meter"
    timeout: float = 10.0
    refresh_time_ms: Optional[int] = None
    mapping_file: Optional[str] = None
    port: str = ""
    connection: str = ""
    device_instance: int = 40
    mapping_options: Dict[str, Any] = field(default_factory=dict)
    identity_wait: float = 30.0
    settings_wait: float = 60.0  # s to wait for localsettings before registering (service.py)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ConfigurationError(f"role {self.role!r} is unknown", "use one of " + ", ".join(ROLES))
        try:
            self.timeout = float(self.timeout)
        except (TypeError, ValueError):
            raise ConfigurationError(f"timeout {self.timeout!r} is no number", "write seconds, e.g. 10") from None
        if not self.timeout > 0:
            raise ConfigurationError(f"timeout {self.timeout} must be positive", "write seconds, e.g. 10")
        try:
            self.identity_wait = float(self.identity_wait)
        except (TypeError, ValueError):
            raise ConfigurationError(f"identity_wait {self.identity_wait!r} is no number",
                                     "write seconds, e.g. 30") from None
        if not 0 <= self.identity_wait <= 3600:
            raise ConfigurationError(f"identity_wait {self.identity_wait} out of range", "use 0..3600 s (30 is usual)")
        if self.refresh_time_ms is not None:
            self.refresh_time_ms = int(self.refresh_time_ms)
        if not 0 <= int(self.device_instance) <= 999:
            raise ConfigurationError(f"device_instance {self.device_instance} out of range", "use 0..999 (40 is usual)")
        if not str(self.bus or "").strip():
            raise ConfigurationError("bus is empty", "use auto, system, session or a D-Bus address")


__all__ = ["BridgeSettings", "ROLES"]
