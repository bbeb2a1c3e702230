"""The value helpers of SmartHomeNG 1.11 ``lib.utils.Utils`` that parameter and attribute checks use.

Re-implemented from the documented behaviour (smarthomeng-plugin-api.md §3, §5), not copied:
bool strings, quote stripping, and the "a plain string becomes a one-element list, only
``[a, b]`` is split" rule.
"""
from __future__ import annotations

from typing import Any

_TRUE = ("yes", "y", "true", "t", "1", "on")
_FALSE = ("no", "n", "false", "f", "0", "off", "")


class Utils:
    @staticmethod
    def to_bool(value: Any, default: Any = "exception") -> Any:
        if isinstance(value, str):
            low = value.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            if default == "exception":
                raise ValueError(f"Invalid value for boolean conversion: {value}")
            return default
        return bool(value)

    @staticmethod
    def strip_quotes(value: Any) -> Any:
        """Remove one pair of matching outer quotes when they are the only quotes of that kind."""
        if isinstance(value, str):
            value = value.strip()
            if len(value) >= 2 and value[0] in ("'", '"') and value[-1] == value[0] \
                    and value.count(value[0]) == 2:
                value = value[1:-1]
        return value

    @staticmethod
    def string_to_list(value: Any) -> Any:
        if not isinstance(value, str) or value == "":
            return value
        if value[0] != "[":
            return [value]
        inner = value.strip()
        if inner.startswith("["):
            inner = inner[1:]
        if inner.endswith("]"):
            inner = inner[:-1]
        return [Utils.strip_quotes(part.strip()) for part in inner.split(",")]

    @staticmethod
    def is_int(value: Any) -> bool:
        try:
            int(value)
            return True
        except (ValueError, TypeError):
            return False

    @staticmethod
    def is_float(value: Any) -> bool:
        try:
            float(value)
            return True
        except (ValueError, TypeError):
            return False
