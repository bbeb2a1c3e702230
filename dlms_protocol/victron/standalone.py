"""The standalone Venus OS service (``victron --config``): ``serve`` with the D-Bus output always on.

Kept as a module so ``from dlms_protocol.victron.standalone import run`` goes on working; the
service itself (one source, its outputs, one pipeline) is ``dlms_protocol.serve``.
"""
from __future__ import annotations

from ..serve import describe_start, run

__all__ = ["run", "describe_start"]
