"""Meter simulator: a meter on a pseudo-terminal that behaves like a real one (D0 and push).

``SimulatedMeter`` (d0.py) is an IEC 62056-21 meter; ``PtyLink`` (pty.py) is the emulated serial
line (character timing, baud rates of both ends) that the push simulator uses too. Names are
loaded lazily, so importing the package costs nothing where no simulator runs (and the POSIX-only
pty module is not touched on other systems).
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SimulatedMeter": ".d0",
    "PtyLink": ".pty",
    "uart_resample": ".pty",
    "MeterImage": ".meters",
    "load_meter": ".meters",
    "sample_meters": ".meters",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)


__all__ = list(_EXPORTS)
