"""Items as SmartHomeNG 1.11 ``lib.item`` treats them, for the plugin under test.

The casting rules of typed items are the documented ones (smarthomeng-plugin-api.md §5): a num
item turns ``'001234.567'`` into 1234.567 but rejects ``'12,5'``, casts a Decimal with ``int()``
first (so a plugin passing Decimal gets it truncated, as in the real core), a str item rejects
bytes and datetimes, ``item(None)`` is a read. Rejected writes log a WARNING and keep the value.
Triggers run synchronously in the writer's thread, only on change (or ``enforce_updates``).
"""
from __future__ import annotations

import ast
import copy
import datetime
import logging
import threading
from typing import Any, Callable, Dict, Iterator, List, Optional

logger = logging.getLogger("lib.item")


def cast_str(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        return value
    raise ValueError(f"not castable to str: {type(value).__name__}")


def cast_num(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip()
    if value == "":
        return 0
    if isinstance(value, float):
        return value
    try:
        return int(value)  # a Decimal('1234.567') becomes 1234 here, exactly like the real core
    except (ValueError, TypeError, OverflowError):
        pass
    try:
        return float(value)
    except (ValueError, TypeError):
        pass
    raise ValueError(f"not castable to num: {value!r}")


def cast_bool(value: Any) -> bool:
    if type(value) in (bool, int, float):
        if value in (False, 0):
            return False
        if value in (True, 1):
            return True
        raise ValueError(f"not castable to bool: {value!r}")
    if isinstance(value, str):
        if value.lower() in ("0", "false", "no", "off", ""):
            return False
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        raise ValueError(f"not castable to bool: {value!r}")
    raise TypeError(f"not castable to bool: {type(value).__name__}")


def cast_list(value: Any) -> list:
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass
    if isinstance(value, list):
        return value
    raise ValueError("not a list")


def cast_dict(value: Any) -> dict:
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass
    if isinstance(value, dict):
        return value
    raise ValueError("not a dict")


CASTS: Dict[str, Callable[[Any], Any]] = {
    "str": cast_str, "num": cast_num, "bool": cast_bool, "list": cast_list, "dict": cast_dict,
    "foo": lambda v: v, "scene": lambda v: int(v),
}
DEFAULTS: Dict[str, Any] = {"str": "", "num": 0, "bool": False, "list": [], "dict": {}, "foo": None, "scene": 0}


class ItemProperty:
    def __init__(self, item: "Item") -> None:
        self._item = item

    path = property(lambda self: self._item._path)
    type = property(lambda self: self._item._type)
    name = property(lambda self: self._item._name)
    value = property(lambda self: self._item())
    last_update = property(lambda self: self._item._last_update)
    last_change = property(lambda self: self._item._last_change)
    last_update_by = property(lambda self: self._item._last_update_by)
    last_change_by = property(lambda self: self._item._last_change_by)
    update_count = property(lambda self: self._item._update_count)
    change_count = property(lambda self: self._item._change_count)


class Item:
    def __init__(self, path: str, conf: Dict[str, Any], parent: Optional["Item"] = None) -> None:
        self._path = path
        self._name = conf.get("name", path.split(".")[-1])
        typ = conf.get("type", "foo")
        if typ not in CASTS:
            logger.error("Item %s: type '%s' unknown, using foo", path, typ)
            typ = "foo"
        self._type = typ
        self.conf: Dict[str, Any] = {k: v for k, v in conf.items() if not isinstance(v, dict)
                                     and k not in ("type", "name", "initial_value", "enforce_updates")}
        self._enforce_updates = str(conf.get("enforce_updates", "")).lower() in ("true", "yes", "1", "on")
        self._lock = threading.Condition()
        self._value = copy.deepcopy(DEFAULTS[typ])
        if "initial_value" in conf:
            self._value = CASTS[typ](conf["initial_value"])  # raises → "problem creating" (item missing)
        self._last_update = self._last_change = datetime.datetime.now().astimezone()
        self._last_update_by = self._last_change_by = "Init:None"
        self._update_count = self._change_count = 0
        self._methods: List[Callable] = []
        self._parent = parent
        self._children: List["Item"] = []
        self.property = ItemProperty(self)
        self.writes: List[tuple] = []  # (value, caller, source, thread name) of accepted writes, for tests

    def add_method_trigger(self, method: Callable) -> None:
        self._methods.append(method)

    def cast(self, value: Any) -> Any:
        return CASTS[self._type](value)

    def __call__(self, value: Any = None, caller: str = "Logic", source: Any = None, dest: Any = None,
                 key: Any = None, index: Any = None, default: Any = None) -> Any:
        if value is None:
            return copy.deepcopy(self._value)
        try:
            value = self.cast(value)
        except Exception:
            logger.warning('Item %s: value "%s" does not match type %s. Via caller %s, source %s',
                           self._path, value, self._type, caller, source)
            return None
        with self._lock:
            changed = value != self._value
            now = datetime.datetime.now().astimezone()
            self._last_update = now
            self._last_update_by = f"{caller}:{source}"
            self._update_count += 1
            if changed:
                self._value = value
                self._last_change = now
                self._last_change_by = f"{caller}:{source}"
                self._change_count += 1
            self.writes.append((copy.deepcopy(value), caller, source, threading.current_thread().name))
        if changed or self._enforce_updates:
            for method in list(self._methods):
                try:
                    method(self, caller, source, dest)
                except Exception:
                    logger.exception("Item %s: problem running %s", self._path, method)
        return None

    def __iter__(self) -> Iterator["Item"]:
        return iter(self._children)

    def __str__(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"Item: {self._path}"

    def return_children(self) -> Iterator["Item"]:
        return iter(self._children)

    def return_parent(self) -> Optional["Item"]:
        return self._parent


class Items:
    """Registry of all items (``Items.get_instance()`` as plugins and web interfaces use it)."""

    _instance: Optional["Items"] = None

    def __init__(self) -> None:
        self._items: Dict[str, Item] = {}
        Items._instance = self

    @classmethod
    def get_instance(cls) -> "Items":
        if cls._instance is None:
            cls._instance = Items()
        return cls._instance

    def add(self, item: Item) -> None:
        self._items[item._path] = item

    def return_item(self, path: str) -> Optional[Item]:
        return self._items.get(path)

    def return_items(self, ordered: bool = False) -> List[Item]:
        items = list(self._items.values())
        return sorted(items, key=lambda i: i._path) if ordered else items

    def find_items(self, conf: str) -> List[Item]:
        return [i for i in self._items.values() if conf in i.conf]

    def __len__(self) -> int:
        return len(self._items)
