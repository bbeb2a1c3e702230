"""Parameter and item-attribute validation as SmartHomeNG 1.11 ``lib/metadata.py`` does it.

Behaviour per smarthomeng-plugin-api.md §3 and §5 (verified there against a running 1.11):
defaults, type defaults, mandatory, wrong type → default with ERROR, clamping to valid_min/max,
valid_list → first entry, valid_list_ci → lower case, bool strings, a plain string for a list
becomes a one-element list, and the ``list(N, …)`` length bug (KeyError → item missing).
"""
from __future__ import annotations

import ast
import logging
import re
from pathlib import Path
from typing import Any, Dict, List, Tuple

from . import yaml12
from .utils import Utils

logger = logging.getLogger("lib.metadata")

TYPE_DEFAULTS: Dict[str, Any] = {
    "bool": False, "int": 0, "float": 0.0, "num": 0, "scene": 0, "str": "", "password": "",
    "list": [], "dict": {}, "ip": "0.0.0.0", "ipv4": "0.0.0.0", "ipv6": "::", "mac": "00:00:00:00:00:00",
    "knx_ga": "", "foo": None,
}
KNOWN_TYPES = set(TYPE_DEFAULTS)


def parse_type(text: str) -> Tuple[str, int, List[str]]:
    """``'list(4,str,int,str,str)'`` → ('list', 4, ['str', 'int', 'str', 'str'])."""
    text = str(text or "foo").strip()
    m = re.fullmatch(r"list\((.*)\)", text)
    if not m:
        return text, 0, []
    parts = [p.strip() for p in m.group(1).split(",") if p.strip()]
    listlen = 0
    if parts and parts[0].isdigit():
        listlen = int(parts.pop(0))
    return "list", listlen, parts


class Metadata:
    """The parts of a plugin.yaml the core acts on."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.meta = yaml12.load(self.path.read_text(encoding="utf-8")) or {}
        self.plugin: dict = self.meta.get("plugin") or {}
        self.parameters: Dict[str, dict] = self._section("parameters")
        self.item_attributes: Dict[str, dict] = self._section("item_attributes")
        if Utils.to_bool(self.plugin.get("multi_instance", False), default=False):
            # added by the core for multi-instance plugins; the loader strips 'instance' from the
            # section first, so get_parameter_value('instance') is always ''
            self.parameters.setdefault("instance", {"type": "str", "default": "", "_type": "str", "_listlen": 0,
                                                    "_listtype": [], "_name": "instance"})
        structs = self.meta.get("item_structs")
        self.item_structs: Dict[str, dict] = structs if isinstance(structs, dict) else {}

    def _section(self, name: str) -> Dict[str, dict]:
        raw = self.meta.get(name)
        if not isinstance(raw, dict):
            return {}
        out = {}
        for key, definition in raw.items():
            d = dict(definition or {})
            typ, listlen, listtype = parse_type(d.get("type", "foo"))
            d["_type"], d["_listlen"], d["_listtype"], d["_name"] = typ, listlen, listtype, key
            out[key] = d
        return out

    def get_bool(self, key: str) -> bool:
        return Utils.to_bool(self.plugin.get(key, False), default=False)

    # ------------------------------------------------------------------ checks
    def _type_ok(self, typ: str, subtypes: List[str], value: Any) -> bool:
        if typ == "bool":
            return Utils.to_bool(value, default="?") != "?"
        if typ == "int":
            return Utils.is_int(value)
        if typ in ("float", "num"):
            return Utils.is_float(value)
        if typ == "scene":
            return Utils.is_int(value) and 0 <= int(value) < 256
        if typ in ("str", "password", "ip", "ipv4", "ipv6", "mac", "knx_ga", "foo"):
            return True
        if typ == "list":
            if not isinstance(value, list):
                return False
            for i, element in enumerate(value):
                if subtypes:
                    sub = subtypes[i] if i < len(subtypes) else subtypes[-1]
                    if not self._type_ok(sub, [], element):
                        return False
            return True
        if typ == "dict":
            if isinstance(value, dict):
                return True
            try:
                return isinstance(ast.literal_eval(value), dict)
            except (ValueError, SyntaxError, TypeError):
                return False
        return False

    @staticmethod
    def _to_type(typ: str, value: Any) -> Any:
        if typ == "bool":
            return Utils.to_bool(value)
        if typ in ("int", "scene"):
            return int(value)
        if typ in ("float", "num"):
            return float(value)
        if typ in ("str", "password", "ip", "ipv4", "ipv6", "mac", "knx_ga"):
            return str(value)
        if typ == "list":
            return value if isinstance(value, list) else [value]
        if typ == "dict":
            return value if isinstance(value, dict) else ast.literal_eval(value)
        return value

    def _validity(self, d: dict, value: Any) -> Any:
        typ = d["_type"]
        result = value
        if typ in ("int", "float", "num", "scene"):
            lo, hi = d.get("valid_min"), d.get("valid_max")
            if lo is not None and self._type_ok(typ, [], lo) and result < self._to_type(typ, lo):
                result = lo
            if hi is not None and self._type_ok(typ, [], hi) and result > self._to_type(typ, hi):
                result = hi
        elif typ == "list" and d["_listlen"] > 0 and d["_listlen"] != len(value):
            # SmartHomeNG 1.11 formats its warning with self.parameters[''] → KeyError: ''
            raise KeyError("")
        ci = d.get("valid_list_ci")
        if ci:
            if isinstance(result, str):
                # like the core: entries are .lower()ed as they are, so a non-string entry (YAML 1.2
                # reads an unquoted 8e1 as 80.0) raises AttributeError and the plugin is not loaded
                result = result.lower() if result.lower() in [e.lower() for e in ci] else str(ci[0]).lower()
        else:
            vl = d.get("valid_list")
            if vl and result not in vl:
                result = vl[0]
        return result

    def _convert(self, d: dict, value: Any, what: str, is_default: bool = False) -> Any:
        result = self._to_type(d["_type"], value)
        orig = str(result).lower() if d.get("valid_list_ci") else result
        result = self._validity(d, result)
        if result != orig:
            if is_default:
                logger.error("Invalid default '%s' for %s '%s' -> using '%s' instead", orig, what, d["_name"], result)
            else:
                logger.warning("Invalid value '%s' for %s '%s' -> using '%s' instead", orig, what, d["_name"], result)
        return result

    def default_of(self, d: dict) -> Any:
        if "default" in d and d["default"] is not None:
            default = Utils.strip_quotes(d["default"])
            if d["_type"] == "list":
                default = Utils.string_to_list(default)
            return self._convert(d, default, "parameter", is_default=True)
        value = TYPE_DEFAULTS.get(d["_type"])
        return list(value) if isinstance(value, list) else dict(value) if isinstance(value, dict) else value

    def check_parameters(self, args: Dict[str, Any]) -> Tuple[Dict[str, Any], bool, Dict[str, bool]]:
        params: Dict[str, Any] = {}
        hide: Dict[str, bool] = {}
        ok = True
        for name, d in self.parameters.items():
            hide[name] = Utils.to_bool(d.get("hide", False), default=False)
            value = Utils.strip_quotes(args.get(name))
            if value is None:
                if d.get("mandatory"):
                    logger.error("'%s' is mandatory, but was not found in /etc/plugin.yaml", name)
                    ok = False
                else:
                    params[name] = self.default_of(d)
                    logger.info("value not found in plugin configuration file for parameter '%s' -> using default "
                                "value '%s' instead", name, "******" if hide[name] else params[name])
                continue
            if d["_type"] == "list":
                value = Utils.string_to_list(value)
            if self._type_ok(d["_type"], d["_listtype"], value):
                params[name] = self._convert(d, value, "parameter")
            elif d.get("mandatory"):
                logger.error("'%s' is mandatory, but no valid value was found in /etc/plugin.yaml", name)
                ok = False
            else:
                params[name] = self.default_of(d)
                logger.error("Found invalid value '%s' for parameter '%s' (type %s) in /etc/plugin.yaml, using "
                             "default value '%s' instead", value, name, d["_type"], params[name])
        return params, ok, hide


class AttributeRegistry:
    """item_attributes of all loaded plugins (the core validates every item attribute against them)."""

    def __init__(self) -> None:
        self.definitions: Dict[str, Tuple[Metadata, dict]] = {}

    def add(self, meta: Metadata) -> None:
        for name, d in meta.item_attributes.items():
            self.definitions[name] = (meta, d)

    def check(self, item_path: str, attribute: str, value: Any) -> Any:
        base = attribute.split("@")[0]
        entry = self.definitions.get(base)
        if entry is None:
            if not base.startswith(("my_", "_")) and base not in CORE_ATTRIBUTES:
                logger.log(29, "Item '%s', attribute '%s': Attribute is undefined and has value '%s'",
                           item_path, attribute, value)
            return value
        meta, d = entry
        if d["_type"] == "list":
            value = Utils.string_to_list(value)
        if meta._type_ok(d["_type"], d["_listtype"], value):
            return meta._convert(d, value, "item attribute")
        default = d.get("default")
        logger.warning("Item '%s', attribute '%s': value '%s' can not be converted to type '%s'%s", item_path,
                       attribute, value, d["_type"], f", using default value '{default}' instead" if default is not None
                       else "")
        return "" if default is None else default


#: attributes the core itself declares (SmartHomeNG 1.11 ``modules/core/items.yaml``); everything
#: else needs a loaded plugin that declares it. ``visu_acl`` belongs to the smartvisu plugin, so
#: without that plugin an item with ``visu_acl`` gets the "Attribute is undefined" NOTICE.
CORE_ATTRIBUTES = {
    "autotimer", "cache", "crontab", "cycle", "enforce_updates", "enforce_changes", "eval", "eval_trigger",
    "initial_value", "log_change", "name", "on_update", "on_change", "remark", "struct", "threshold", "type",
}
