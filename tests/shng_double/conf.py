"""The old smarthome.py ``.conf`` format as SmartHomeNG 1.11 reads it (``lib/config.py parse_conf``).

Semantics per smarthomeng-plugin-api.md §14: ``[a]``, ``[[b]]``, ``[[[c]]]`` nest by bracket count;
``key = value`` lines; every value is a string; ``a | b | c`` becomes a list; ``#`` starts a
comment anywhere in the line; a line with an empty value (``key =``) is dropped; one pair of
outer quotes is removed; a trailing backslash continues the line.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Dict

from .utils import Utils


def parse_conf_text(text: str) -> Dict[str, Any]:
    config: Dict[str, Any] = OrderedDict()
    parents: Dict[int, Dict[str, Any]] = {0: config}
    current: Dict[str, Any] = config
    lines = iter(text.lstrip("\ufeff").splitlines())
    lineno = 0
    for raw in lines:
        lineno += 1
        line = raw
        while line.rstrip().endswith("\\"):
            line = line.rstrip()[:-1] + next(lines, "").lstrip()
        line = line.partition("#")[0].strip()
        if not line:
            continue
        if line.startswith("["):
            level = len(line) - len(line.lstrip("["))
            closing = len(line) - len(line.rstrip("]"))
            if level != closing:
                raise ValueError(f"line {lineno}: unbalanced brackets: {line}")
            name = Utils.strip_quotes(line.strip("[]"))
            if level - 1 not in parents:
                raise ValueError(f"line {lineno}: no parent item for {line}")
            parent = parents[level - 1]
            current = parent.setdefault(name, OrderedDict())
            parents[level] = current
            for deeper in [k for k in parents if k > level]:
                del parents[deeper]
            continue
        attr, _sep, value = line.partition("=")
        if not value:
            continue
        attr = attr.strip()
        if "|" in value:
            current[attr] = [Utils.strip_quotes(x) for x in value.split("|")]
        else:
            current[attr] = Utils.strip_quotes(value)
    return config


def parse_conf(path: str) -> Dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        return parse_conf_text(fh.read())
