"""A SmartHomeNG 1.11 stand-in that loads a plugin the way the real core does.

* ``install()`` puts the double's ``lib.*`` modules (and a CherryPy stub when CherryPy is missing)
  into ``sys.modules`` and loads a plugin directory as package ``plugins.<name>``.
* ``SmartHome.load_plugins(config)`` does what ``lib/plugin.py`` does per section: metadata
  parameter check, ``cls.__new__``, loader attributes, ``__init__(sh, **kwargs)`` with only the
  explicitly named (raw, quoted) kwargs, ``_init_complete`` handling, instance names.
* ``SmartHome.load_items(...)`` reads YAML or ``.conf`` item files, expands ``struct:`` templates
  with ``@instance``, validates attributes, creates items and calls ``parse_item`` on every
  plugin (children before parents), registering returned update methods as triggers.
* ``start()``/``stop()`` call ``run()`` in a thread named after the config section and ``stop()``
  in reverse order, logging exceptions instead of raising, as the core does.
"""
from __future__ import annotations

import copy
import datetime
import importlib
import importlib.util
import inspect
import logging
import sys
import threading
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Optional

from . import conf as conf_mod
from . import item as item_mod
from . import metadata as meta_mod
from . import scheduler as sched_mod
from . import smartplugin as sp_mod
from . import utils as utils_mod
from . import yaml12

logger = logging.getLogger("lib.plugin")
HERE = Path(__file__).resolve().parent


def install() -> None:
    """Make ``import lib.model.smartplugin`` & co. resolve to the double (idempotent)."""
    if "lib.model.smartplugin" in sys.modules and getattr(sys.modules["lib.model.smartplugin"], "_is_double", False):
        return
    lib = types.ModuleType("lib")
    lib.__path__ = []  # type: ignore[attr-defined]
    model = types.ModuleType("lib.model")
    model.__path__ = []  # type: ignore[attr-defined]
    sp_mod._is_double = True  # type: ignore[attr-defined]
    lib_item = types.ModuleType("lib.item")
    lib_item.Items = item_mod.Items  # type: ignore[attr-defined]
    lib_item.Item = item_mod.Item  # type: ignore[attr-defined]
    lib_utils = types.ModuleType("lib.utils")
    lib_utils.Utils = utils_mod.Utils  # type: ignore[attr-defined]
    lib.model = model  # type: ignore[attr-defined]
    lib.item = lib_item  # type: ignore[attr-defined]
    lib.utils = lib_utils  # type: ignore[attr-defined]
    model.smartplugin = sp_mod  # type: ignore[attr-defined]
    sys.modules.update({"lib": lib, "lib.model": model, "lib.model.smartplugin": sp_mod,
                        "lib.item": lib_item, "lib.utils": lib_utils})
    try:
        import cherrypy  # noqa: F401
    except ImportError:
        from . import cherrypy_stub
        sys.modules["cherrypy"] = cherrypy_stub
    if "plugins" not in sys.modules:
        plugins = types.ModuleType("plugins")
        plugins.__path__ = []  # type: ignore[attr-defined]
        sys.modules["plugins"] = plugins


def load_plugin_package(name: str, directory: Path) -> types.ModuleType:
    """Import ``directory`` as ``plugins.<name>`` (what SmartHomeNG's import of plugins/<name> does)."""
    install()
    full = f"plugins.{name}"
    if full in sys.modules:
        return sys.modules[full]
    spec = importlib.util.spec_from_file_location(full, str(directory / "__init__.py"),
                                                  submodule_search_locations=[str(directory)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[full] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[full]
        raise
    setattr(sys.modules["plugins"], name, module)
    return module


class Shtime:
    def now(self) -> datetime.datetime:
        return datetime.datetime.now().astimezone()


class HttpModule:
    """The http module as plugins see it: a registry of web interfaces plus template/static dirs."""

    def __init__(self, gtemplates_dir: Path, gstatic_dir: Path) -> None:
        self.gtemplates_dir = str(gtemplates_dir)
        self.gstatic_dir = str(gstatic_dir)
        self.apps: Dict[str, Any] = {}
        self.configs: Dict[str, dict] = {}

    def register_webif(self, app: Any, pluginname: str, conf: dict, classname: str = "", instance: str = "",
                       description: str = "") -> None:
        mount = pluginname + (f"_{instance}" if instance else "")
        self.apps[mount] = app
        self.configs[mount] = conf


class PluginEntry:
    def __init__(self, configname: str, plugin: Any, meta: meta_mod.Metadata) -> None:
        self.configname = configname
        self.plugin = plugin
        self.meta = meta
        self.thread: Optional[threading.Thread] = None


class SmartHome:
    """The parts of ``bin/smarthome.py``/``lib.plugin``/``lib.item`` a plugin touches."""

    def __init__(self, plugins_dir: Path, with_http: bool = True, language: str = "de",
                 gstatic_dir: Optional[Path] = None) -> None:
        install()
        self.plugins_dir = Path(plugins_dir)
        self.language = language
        self.shtime = Shtime()
        self.scheduler = sched_mod.Scheduler()
        self.items = item_mod.Items()
        self.attributes = meta_mod.AttributeRegistry()
        self.structs: Dict[str, dict] = {}
        self.modules: Dict[str, Any] = {}
        if with_http:
            self.modules["http"] = HttpModule(HERE / "templates", gstatic_dir or (HERE / "gstatic"))
        self.plugins: List[PluginEntry] = []

    # ------------------------------------------------------------------ plugins
    def load_plugins(self, config: Dict[str, dict]) -> List[Any]:
        loaded = []
        for configname, section in config.items():
            plugin = self.load_plugin(configname, dict(section))
            if plugin is not None:
                loaded.append(plugin)
        return loaded

    def load_plugins_from(self, path: Path) -> List[Any]:
        """``etc/plugin.yaml``, or ``etc/plugin.conf`` when no (non-empty) YAML exists."""
        path = Path(path)
        if path.suffix == ".conf":
            return self.load_plugins(conf_mod.parse_conf(str(path)))
        return self.load_plugins(yaml12.load(path.read_text(encoding="utf-8")) or {})

    def load_plugin(self, configname: str, section: dict) -> Optional[Any]:
        if not utils_mod.Utils.to_bool(section.get("plugin_enabled", True), default=True):
            return None
        name = str(section.get("plugin_name", "")).lower()
        classpath = section.get("class_path", "")
        if not name and classpath:
            name = classpath.split(".")[-1].lower()
        directory = self.plugins_dir / name
        meta = meta_mod.Metadata(directory / "plugin.yaml")
        self.attributes.add(meta)
        for struct_name, struct in meta.item_structs.items():
            self.structs[f"{name}.{struct_name}"] = struct
        try:
            module = load_plugin_package(name, directory)
        except ImportError as exc:
            logger.error("Plugin '%s' error importing Python package: %s", configname, exc)
            logger.error("Plugin '%s' initialization failed, plugin not loaded", configname)
            return None
        classname = section.get("class_name") or meta.plugin.get("classname")
        cls = getattr(module, classname)
        plugin = cls.__new__(cls)
        instance = str(section.get("instance", "") or "")
        if instance == "default":
            instance = ""
        args = {}
        for key, value in section.items():
            if key in ("class_name", "class_path", "instance"):
                continue
            args[key] = f"'{value}'" if isinstance(value, str) else value
        plugin._configfilename = "etc/plugin.yaml"
        plugin._set_configname(configname)
        plugin._set_shortname(name)
        plugin._classpath = f"plugins.{name}"
        plugin._set_classname(classname)
        if plugin.ALLOW_MULTIINSTANCE is None:
            plugin.ALLOW_MULTIINSTANCE = meta.get_bool("multi_instance")
        if instance:
            plugin._set_instance_name(instance)
        plugin.logger = sp_mod.PluginLoggingAdapter(logging.getLogger(f"plugins.{name}"),
                                                    {"plugininstance": plugin.get_loginstance()})
        plugin._set_sh(self)
        plugin._set_plugin_dir(str(directory))
        plugin._plgtype = meta.plugin.get("type", "")
        plugin.metadata = meta
        if str(getattr(cls, "PLUGIN_VERSION", "")) != str(meta.plugin.get("version", "")):
            logger.error("Plugin '%s': version differs between Python code and metadata", configname)
        init_args = inspect.getfullargspec(cls.__init__)[0][1:]
        kwargs = {k: args[k] for k in init_args if k in args}
        try:
            params, ok, hide = meta.check_parameters(args)
        except Exception:  # the core logs the exception and does not load this section
            logger.exception("Plugin '%s' v%s from section '%s'", name, meta.plugin.get("version"), configname)
            return None
        if not ok:
            logger.error("Plugin '%s' initialization failed, plugin not loaded", configname)
            return None
        plugin._parameters = params
        plugin._hide_parameters = hide
        plugin._init_complete = True
        try:
            plugin.__init__(self, **kwargs)
        except Exception:
            logger.exception("Plugin '%s' exception in __init__, plugin not loaded", configname)
            return None
        if not plugin._init_complete:
            logger.error("Plugin '%s' initialization failed, plugin not loaded", configname)
            return None
        self.plugins.append(PluginEntry(configname, plugin, meta))
        return plugin

    def plugin(self, configname: str) -> Any:
        for entry in self.plugins:
            if entry.configname == configname:
                return entry.plugin
        raise KeyError(configname)

    # ------------------------------------------------------------------ items
    def load_items(self, *paths: Path) -> List[item_mod.Item]:
        tree: Dict[str, Any] = OrderedDict()
        for path in paths:
            path = Path(path)
            if path.suffix == ".conf":
                part = conf_mod.parse_conf(str(path))
            else:
                part = yaml12.load(path.read_text(encoding="utf-8")) or {}
            _merge(tree, part)
        return self.load_item_tree(tree)

    def load_item_tree(self, tree: Dict[str, Any]) -> List[item_mod.Item]:
        created: List[item_mod.Item] = []
        for name, node in tree.items():
            if isinstance(node, dict):
                self._create(name, node, None, created)
        return created

    def _expand_structs(self, node: Dict[str, Any]) -> Dict[str, Any]:
        if "struct" not in node:
            return node
        names = node["struct"]
        names = [names] if isinstance(names, str) else list(names)
        template: Dict[str, Any] = OrderedDict()
        for struct_name in names:
            instance = str(node.get("instance", ""))
            if "@" in struct_name:
                struct_name, instance = struct_name.split("@", 1)
            struct = self.structs.get(struct_name)
            if struct is None:
                logging.getLogger("lib.item").error("struct %s not found", struct_name)
                continue
            part = self._resolve_struct(copy.deepcopy(struct))
            _replace_instance(part, instance)
            _merge(template, part)
        merged: Dict[str, Any] = OrderedDict(template)
        _merge(merged, {k: v for k, v in node.items() if k != "struct"})
        return merged

    def _resolve_struct(self, struct: Dict[str, Any]) -> Dict[str, Any]:
        out: Dict[str, Any] = OrderedDict()
        for key, value in struct.items():
            if key == "struct":
                sub = self.structs.get(value if isinstance(value, str) else value[0])
                if sub is not None:
                    _merge(out, self._resolve_struct(copy.deepcopy(sub)))
                continue
            out[key] = self._resolve_struct(value) if isinstance(value, dict) else value
        return out

    def _create(self, path: str, node: Dict[str, Any], parent: Optional[item_mod.Item],
                created: List[item_mod.Item]) -> Optional[item_mod.Item]:
        node = self._expand_structs(node)
        attrs = {k: v for k, v in node.items() if not isinstance(v, dict)}
        try:
            for key in list(attrs):
                if key in ("type", "name", "initial_value", "enforce_updates", "struct", "instance"):
                    continue
                attrs[key] = self.attributes.check(path, key, attrs[key])
            item = item_mod.Item(path, attrs, parent)
        except Exception as exc:  # the real core logs "problem creating" and the item is missing
            logging.getLogger("lib.item").error("Item %s: problem creating: %r", path, exc)
            return None
        self.items.add(item)
        for key, child in node.items():
            if isinstance(child, dict):
                created_child = self._create(f"{path}.{key}", child, item, created)
                if created_child is not None:
                    item._children.append(created_child)
        self._parse(item)
        created.append(item)
        return item

    def _parse(self, item: item_mod.Item) -> None:
        for entry in self.plugins:
            method = entry.plugin.parse_item(item)
            if method is not None:
                entry.plugin.add_item(item, updating=True)
                item.add_method_trigger(method)

    # ------------------------------------------------------------------ life cycle
    def start(self) -> None:
        for entry in self.plugins:
            entry.thread = threading.Thread(target=self._run_plugin, args=(entry,), name=entry.configname)
            entry.thread.start()
        for entry in self.plugins:
            if entry.thread is not None:
                entry.thread.join(10)

    @staticmethod
    def _run_plugin(entry: PluginEntry) -> None:
        try:
            entry.plugin.run()
        except Exception:
            logger.exception("Plugin '%s' exception in run() method", entry.configname)

    def stop(self) -> None:
        self.scheduler.stop()
        for entry in reversed(self.plugins):
            try:
                entry.plugin.stop()
            except Exception:
                logger.exception("Plugin '%s' exception in stop() method", entry.configname)

    def webif(self, mount: str) -> Any:
        return self.modules["http"].apps[mount]


def _merge(dst: Dict[str, Any], src: Dict[str, Any]) -> None:
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _merge(dst[key], value)
        else:
            dst[key] = copy.deepcopy(value)


def _replace_instance(tree: Dict[str, Any], instance: str) -> None:
    for key in list(tree):
        value = tree[key]
        if isinstance(value, dict):
            _replace_instance(value, instance)
        if key.endswith("@instance"):
            tree[key[:-9] + (f"@{instance}" if instance else "")] = tree.pop(key)


__all__ = ["install", "load_plugin_package", "SmartHome", "HttpModule", "Shtime"]
