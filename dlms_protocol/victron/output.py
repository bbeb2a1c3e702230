"""The Victron D-Bus grid meter as a pipeline ``Output`` (registered as ``"victron"``).

Why an adapter: the bridge already owns its loop thread, its bus connection and its per-path
staleness (victron-dbus.md §10.4); what the pipeline needs is the common ``Output`` face, so
that a readout source reaches D-Bus exactly like a push source does, in the plugin and in the
standalone service. Every verified snapshot goes to the bus (no rate limit: Venus OS wants each
push); the bridge's own time-out decides when ``/Connected`` drops.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from ..model import MeterData, Statistics
from ..pipeline import Health, LoopGuest, Output
from .bridge import BridgeSettings, VictronBridge


class VictronOutput(Output):
    """Publishes each snapshot on D-Bus through a ``VictronBridge``."""

    name = "victron"

    def __init__(self, settings: Optional[BridgeSettings] = None, stats: Optional[Statistics] = None,
                 **options: Any) -> None:
        self.settings = settings if settings is not None else BridgeSettings(**options)
        self.bridge = VictronBridge(self.settings, stats=stats)  # a bad mapping file fails here, at set-up

    def start(self) -> None:
        self.bridge.start()

    def publish(self, data: MeterData) -> None:
        self.bridge.publish(data)

    def publish_health(self, health: Health) -> None:
        """Nothing to do: the bridge invalidates its values by its own time-out (never a 0)."""

    def stop(self, timeout: float = 2.0) -> None:
        self.bridge.stop(timeout=timeout)

    def status(self) -> Dict[str, Any]:
        return self.bridge.status()

    def loop_guest(self) -> Optional[LoopGuest]:
        """The bridge's D-Bus loop, for a push listener's thread to run (one thread less per push)."""
        return self.bridge.loop_guest()


def make_victron_output(settings: Optional[BridgeSettings] = None, stats: Optional[Statistics] = None,
                        **options: Any) -> VictronOutput:
    return VictronOutput(settings, stats, **options)


__all__ = ["VictronOutput", "make_victron_output"]
