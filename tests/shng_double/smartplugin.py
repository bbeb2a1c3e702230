"""``lib.model.smartplugin`` of SmartHomeNG 1.11 as a plugin sees it (SmartPlugin, SmartPluginWebIf).

Behaviour per smarthomeng-plugin-api.md: the loader sets names, logger, parameters and ``_sh``
*before* ``__init__``; ``SmartPlugin.__init__`` only resets the instance containers; ``has_iattr``
/ ``get_iattr_value`` see ``attr`` (unnamed instance), ``attr@<instance>`` and ``attr@*``;
scheduler names get the ``plugins.<fullname>.`` prefix; ``init_webinterface`` registers with the
http module when it is loaded and otherwise logs a WARNING and returns False.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional

import yaml

NOTICE, DBGHIGH, DBGMED, DBGLOW, DEVELOP = 29, 13, 12, 11, 9
for _lvl, _name in ((NOTICE, "NOTICE"), (DBGHIGH, "DBGHIGH"), (DBGMED, "DBGMED"), (DBGLOW, "DBGLOW"),
                    (DEVELOP, "DEVELOP")):
    logging.addLevelName(_lvl, _name)


class PluginLoggingAdapter(logging.LoggerAdapter):
    """One logger ``plugins.<dir>`` for all instances; named instances get the prefix ``<instance>@: ``."""

    def process(self, msg: Any, kwargs: Any) -> Any:
        prefix = self.extra.get("plugininstance", "") if self.extra else ""
        return f"{prefix}{msg}", kwargs

    def notice(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.log(NOTICE, msg, *args, **kwargs)

    def dbghigh(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.log(DBGHIGH, msg, *args, **kwargs)

    def dbgmed(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.log(DBGMED, msg, *args, **kwargs)

    def dbglow(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.log(DBGLOW, msg, *args, **kwargs)

    def develop(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.log(DEVELOP, msg, *args, **kwargs)


class SmartPlugin:
    PLUGIN_VERSION: str
    ALLOW_MULTIINSTANCE = None
    logger = logging.getLogger(__name__)
    shtime: Any = None
    alive = False
    _parameters: Dict[str, Any] = {}
    _hide_parameters: Dict[str, bool] = {}
    _pause_item = None
    _pause_item_path = ""
    _instance = ""
    _add_translation = None

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if not hasattr(cls, "PLUGIN_VERSION"):
            raise NotImplementedError("'Plugin' subclasses should have a 'PLUGIN_VERSION' attribute")
        return object.__new__(cls)

    def __init__(self, **kwargs: Any) -> None:
        self._plg_item_dict: Dict[str, dict] = {}
        self._item_lookup_dict: Dict[str, list] = {}
        self._schedulers: List[str] = []
        self.alive = False
        self._add_translation = None
        self._pause_item = None
        self._pause_item_path = ""

    def run(self) -> None:
        raise NotImplementedError("'Plugin' subclasses should have a 'run()' method")

    def stop(self) -> None:
        raise NotImplementedError("'Plugin' subclasses should have a 'stop()' method")

    def parse_item(self, item: Any) -> Any:
        if item.property.path == self._pause_item_path:
            self._pause_item = item
            self.add_item(item, updating=True)
            return self.update_item
        return None

    def update_item(self, item: Any, caller: Any = None, source: Any = None, dest: Any = None) -> None:
        if item is self._pause_item:
            if caller != self.get_shortname():
                if item() and self.alive:
                    self.stop()
                elif not item() and not self.alive:
                    self.run()

    def parse_logic(self, logic: Any) -> None:
        pass

    def deinit(self, items: Any = None) -> None:
        if self.alive:
            self.stop()
        for item in list(items or self.get_item_list()):
            self.remove_item(item)

    # ------------------------------------------------------------------ loader-set attributes
    def _set_configname(self, name: str) -> None:
        self._configname = name

    def _set_shortname(self, name: str) -> None:
        self._shortname = name

    def _set_classname(self, name: str) -> None:
        self._classname = name

    def _set_instance_name(self, instance: str) -> None:
        self._instance = instance

    def _set_sh(self, sh: Any) -> None:
        self._sh = sh
        self.shtime = sh.shtime

    def _set_plugin_dir(self, path: str) -> None:
        self._plugin_dir = path

    def get_configname(self) -> str:
        return self._configname

    def get_shortname(self) -> str:
        return self._shortname

    def get_instance_name(self) -> str:
        return self._instance

    def get_fullname(self) -> str:
        return f"{self._shortname}_{self._instance}" if self._instance else self._shortname

    def get_classname(self) -> str:
        return self._classname

    def get_version(self, extended: bool = False) -> str:
        return self.PLUGIN_VERSION

    def get_plugin_dir(self) -> str:
        return self._plugin_dir

    def get_loginstance(self) -> str:
        return f"{self._instance}@: " if self._instance else ""

    def is_multi_instance_capable(self) -> bool:
        return bool(self.ALLOW_MULTIINSTANCE)

    def get_sh(self) -> Any:
        return self._sh

    def get_parameter_value(self, name: str) -> Any:
        return self._parameters.get(name, None)

    def get_parameter_value_for_display(self, name: str) -> Any:
        value = self._parameters.get(name, None)
        if value == "" or value is None:
            return ""
        return "******" if self._hide_parameters.get(name, False) else value

    def path_join(self, path: str, name: str) -> str:
        return os.path.join(path, name)

    def now(self) -> Any:
        return self.shtime.now()

    # ------------------------------------------------------------------ item attributes
    def _iattr_name(self, conf: dict, attr: str) -> Optional[str]:
        own = f"{attr}@{self._instance}" if self._instance else attr
        if own in conf:
            return own
        if f"{attr}@*" in conf:
            return f"{attr}@*"
        return None

    def has_iattr(self, conf: dict, attr: str) -> bool:
        return self._iattr_name(conf, attr) is not None

    def get_iattr_value(self, conf: dict, attr: str, default: Any = None) -> Any:
        name = self._iattr_name(conf, attr)
        return default if name is None else conf[name]

    def set_attr_value(self, conf: dict, attr: str, value: Any) -> None:
        if self._iattr_name(conf, attr) is not None:
            conf[f"{attr}@{self._instance}" if self._instance else attr] = value

    # ------------------------------------------------------------------ item registry
    def add_item(self, item: Any, config_data_dict: Optional[dict] = None, mapping: Any = None,
                 updating: bool = False) -> bool:
        path = item.property.path
        if path in self._plg_item_dict:
            if updating:
                self._plg_item_dict[path]["is_updating"] = True
                return True
            self.logger.warning("Trying to add an existing item: %s", path)
            return False
        self._plg_item_dict[path] = {"item": item, "is_updating": updating, "mapping": mapping,
                                     "config_data": dict(config_data_dict or {})}
        if mapping:
            self._item_lookup_dict.setdefault(mapping, []).append(item)
        return True

    def remove_item(self, item: Any) -> bool:
        data = self._plg_item_dict.pop(item.property.path, None)
        if data is None:
            return False
        if data["mapping"] and item in self._item_lookup_dict.get(data["mapping"], []):
            self._item_lookup_dict[data["mapping"]].remove(item)
        return True

    def get_item_config(self, item: Any) -> dict:
        path = item if isinstance(item, str) else item.property.path
        return self._plg_item_dict.get(path, {}).get("config_data", {})

    def get_item_mapping(self, item: Any) -> Any:
        path = item if isinstance(item, str) else item.property.path
        return self._plg_item_dict.get(path, {}).get("mapping")

    def get_items_for_mapping(self, mapping: str) -> list:
        return list(self._item_lookup_dict.get(mapping, []))

    def get_item_list(self, filter_key: str = "", filter_value: str = "", mode: str = "") -> list:
        return [d["item"] for d in self._plg_item_dict.values()]

    def get_item_path_list(self, filter_key: str = "", filter_value: str = "", mode: str = "") -> list:
        return list(self._plg_item_dict)

    def get_trigger_items(self) -> list:
        return [d["item"] for d in self._plg_item_dict.values() if d["is_updating"]]

    def callerinfo(self, caller: str, source: str) -> str:
        return caller if source is None else f"{caller}:{source}"

    # ------------------------------------------------------------------ scheduler
    def _sched_name(self, name: str) -> str:
        return f"plugins.{self.get_fullname()}" + (f".{name}" if name else "")

    def scheduler_add(self, name: str, obj: Any, prio: int = 3, cron: Any = None, cycle: Any = None,
                      value: Any = None, offset: Any = None, next: Any = None) -> None:
        self._schedulers.append(name)
        self._sh.scheduler.add(self._sched_name(name), obj, prio, cron, cycle, value, offset, next,
                               from_smartplugin=True)

    def scheduler_change(self, name: str, **kwargs: Any) -> None:
        self._sh.scheduler.change(self._sched_name(name), **kwargs)

    def scheduler_remove(self, name: str) -> None:
        if name in self._schedulers:
            self._schedulers.remove(name)
        self._sh.scheduler.remove(self._sched_name(name), from_smartplugin=True)

    def scheduler_get(self, name: str) -> Any:
        return self._sh.scheduler.get(self._sched_name(name), from_smartplugin=True)

    def scheduler_get_all(self) -> list:
        return self._schedulers

    def scheduler_remove_all(self) -> None:
        for name in list(self._schedulers):
            try:
                self.scheduler_remove(name)
            except Exception:
                pass

    def scheduler_trigger(self, name: str, obj: Any = None, by: Any = None, source: Any = None, value: Any = None,
                          dest: Any = None, prio: int = 3, dt: Any = None) -> None:
        self._sh.scheduler.trigger(self._sched_name(name), obj, by, source, value, dest, prio, dt,
                                   from_smartplugin=True)

    def scheduler_return_next(self, name: str) -> Any:
        return self._sh.scheduler.return_next(self._sched_name(name), from_smartplugin=True)

    # ------------------------------------------------------------------ translation, web interface
    def translate(self, txt: Any, vars: Optional[dict] = None, block: Any = None) -> str:
        return _translate(self, str(txt), vars)

    def init_webinterface(self, WebInterface: Any = None) -> bool:
        if WebInterface is None:
            return False
        http = self._sh.modules.get("http")
        if http is None:
            self.logger.warning("Module 'http' not loaded. Not initializing the web interface for the plugin")
            return False
        self.mod_http = http
        webif_dir = self.path_join(self.get_plugin_dir(), "webif")
        config = {"/": {"tools.staticdir.root": webif_dir},
                  "/static": {"tools.staticdir.on": True, "tools.staticdir.dir": "static"}}
        http.register_webif(WebInterface(webif_dir, self), self.get_shortname(), config, self.get_classname(),
                            self.get_instance_name(), description="")
        return True


_TRANSLATIONS: Dict[str, dict] = {}


def _translate(plugin: Any, txt: str, vars: Optional[dict]) -> str:
    path = os.path.join(plugin._plugin_dir, "locale.yaml")
    table = _TRANSLATIONS.get(path)
    if table is None:
        table = {}
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as fh:
                table = (yaml.safe_load(fh) or {}).get("plugin_translations") or {}
        _TRANSLATIONS[path] = table
    lang = getattr(plugin._sh, "language", "de")
    entry = table.get(txt) or {}
    out = entry.get(lang) or entry.get("en") or txt
    if out == "=":
        out = txt
    if vars:
        try:
            out = out.format(**vars)
        except (KeyError, IndexError):
            pass
    return out


class SmartPluginWebIf:
    def __init__(self, **kwargs: Any) -> None:
        pass

    def init_template_environment(self) -> Any:
        from jinja2 import Environment, FileSystemLoader

        mytemplates = self.plugin.path_join(self.webif_dir, "templates")
        env = Environment(loader=FileSystemLoader([mytemplates, self.plugin.mod_http.gtemplates_dir]))
        env.globals["isfile"] = self.is_staticfile
        env.globals["_"] = self.translate
        env.globals["len"] = len
        return env

    def is_staticfile(self, path: str) -> bool:
        if path.startswith("/gstatic/"):
            full = os.path.join(self.plugin.mod_http.gstatic_dir, path[len("/gstatic/"):])
        else:
            full = os.path.join(self.webif_dir, path)
        return os.path.isfile(full)

    def translate(self, txt: Any, vars: Optional[dict] = None) -> str:
        return _translate(self.plugin, str(txt), vars)
