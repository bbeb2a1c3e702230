"""Just enough of CherryPy for importing a plugin's web interface where CherryPy is not installed."""
from __future__ import annotations

from typing import Any, Callable, Dict


def expose(func: Callable) -> Callable:
    func.exposed = True  # type: ignore[attr-defined]
    return func


class _Response:
    def __init__(self) -> None:
        self.headers: Dict[str, Any] = {}


response = _Response()
