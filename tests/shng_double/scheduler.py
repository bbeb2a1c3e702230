"""The SmartHomeNG 1.11 scheduler as plugins see it (smarthomeng-plugin-api.md §6, §7).

* An entry with ``cycle`` but no ``next``/``offset`` starts 10–15 s (random) after adding, so a
  plugin that forgets ``next=`` gets no immediate first run here either.
* ``cron='init'``/``'init+N'`` fire 5 s (+N) after adding; simple crontabs (``'s m h dom mon dow'``,
  ``'m h dom mon dow'``, ``'m h dom dow'`` with ``*``, ``*/n``, lists and numbers) are supported.
* The next due time is computed when a job is *dispatched*, and every run gets its own worker
  thread named like the entry: a slow job overlaps with its next run, as in the real core.
* ``value`` must be a dict and is passed as ``obj(**value)``; ``caller='Scheduler'`` is injected.
"""
from __future__ import annotations

import datetime
import inspect
import logging
import random
import threading
import time
from typing import Any, Callable, Dict, List, Optional

logger = logging.getLogger("lib.scheduler")


def _field_matches(spec: str, value: int) -> bool:
    for part in spec.split(","):
        part = part.strip()
        if part == "*":
            return True
        if part.startswith("*/"):
            if value % int(part[2:]) == 0:
                return True
        elif "-" in part:
            lo, hi = part.split("-")
            if int(lo) <= value <= int(hi):
                return True
        elif part.isdigit() and int(part) == value:
            return True
    return False


def _cron_matches(cron: str, moment: datetime.datetime) -> bool:
    fields = cron.split()
    if len(fields) == 4:
        sec, (minute, hour, dom, dow), mon = "0", fields, "*"
    elif len(fields) == 5:
        sec, (minute, hour, dom, mon, dow) = "0", fields
    elif len(fields) == 6:
        sec, minute, hour, dom, mon, dow = fields
    else:
        raise ValueError(f"crontab {cron!r} not understood")
    return (_field_matches(sec, moment.second) and _field_matches(minute, moment.minute)
            and _field_matches(hour, moment.hour) and _field_matches(dom, moment.day)
            and _field_matches(mon, moment.month) and _field_matches(dow, moment.weekday()))


def _next_cron(crons: List[str], after: float) -> Optional[float]:
    t = int(after) + 1
    for _ in range(3 * 24 * 3600):
        moment = datetime.datetime.fromtimestamp(t)
        if any(_cron_matches(c, moment) for c in crons):
            return float(t)
        t += 1
    return None


class Entry:
    def __init__(self, name: str, obj: Callable, prio: int, cron: Any, cycle: Any, value: Any,
                 offset: Any, next_: Any) -> None:
        self.name = name
        self.obj = obj
        self.prio = prio
        self.value = value
        self.active = True
        self.cycle: Optional[float] = None
        if isinstance(cycle, dict):
            cycle = next(iter(cycle))
        if isinstance(cycle, str):
            cycle = cycle.split("=")[0].strip()
        if cycle not in (None, "", 0, "0"):
            self.cycle = float(cycle)
        crons = [cron] if isinstance(cron, str) else list(cron or [])
        self.init_delay: Optional[float] = None
        self.crons: List[str] = []
        for c in crons:
            c = c.split("=")[0].strip()
            if c.startswith("init"):
                extra = c[4:].strip()
                self.init_delay = 5.0 + (float(extra.lstrip("+")) if extra else 0.0)
            elif c:
                _cron_matches(c, datetime.datetime.now())  # validates
                self.crons.append(c)
        now = time.time()
        if next_ is not None:
            self.due: Optional[float] = next_.timestamp()
        elif offset is not None:
            self.due = now + float(offset)
        elif self.init_delay is not None:
            self.due = now + self.init_delay
        elif self.cycle is not None:
            self.due = now + random.uniform(10, 15)
        elif self.crons:
            self.due = _next_cron(self.crons, now)
        else:
            self.due = None
        self.runs = 0

    def reschedule(self, now: float) -> None:
        candidates = []
        if self.cycle is not None:
            candidates.append(now + self.cycle)
        if self.crons:
            c = _next_cron(self.crons, now)
            if c is not None:
                candidates.append(c)
        self.due = min(candidates) if candidates else None


class Scheduler:
    def __init__(self, tick: float = 0.05) -> None:
        self._entries: Dict[str, Entry] = {}
        self._lock = threading.Lock()
        self._tick = tick
        self._stop = threading.Event()
        self._workers: List[threading.Thread] = []
        self._thread = threading.Thread(target=self._loop, name="Scheduler", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ API used by SmartPlugin
    def add(self, name: str, obj: Callable, prio: int = 3, cron: Any = None, cycle: Any = None, value: Any = None,
            offset: Any = None, next: Any = None, from_smartplugin: bool = False) -> None:
        if value is not None and not isinstance(value, dict):
            raise TypeError("scheduler value must be a dict")
        if next is not None and (not isinstance(next, datetime.datetime) or next.tzinfo is None):
            raise ValueError("next must be a timezone-aware datetime")
        with self._lock:
            self._entries[name] = Entry(name, obj, prio, cron, cycle, value, offset, next)
        logger.debug("scheduler add %s", name)

    def remove(self, name: str, from_smartplugin: bool = False) -> None:
        with self._lock:
            self._entries.pop(name, None)

    def change(self, name: str, **kwargs: Any) -> None:
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                return
            if "active" in kwargs:
                entry.active = bool(kwargs["active"])
            if "cycle" in kwargs:
                entry.cycle = float(kwargs["cycle"]) if kwargs["cycle"] else None
                entry.reschedule(time.time())

    def get(self, name: str, from_smartplugin: bool = False) -> Optional[dict]:
        with self._lock:
            e = self._entries.get(name)
            if e is None:
                return None
            return {"name": e.name, "obj": e.obj, "cycle": e.cycle, "cron": e.crons, "next": e.due, "active": e.active}

    def return_next(self, name: str, from_smartplugin: bool = False) -> Optional[datetime.datetime]:
        with self._lock:
            e = self._entries.get(name)
        return datetime.datetime.fromtimestamp(e.due).astimezone() if e is not None and e.due else None

    def trigger(self, name: str, obj: Optional[Callable] = None, by: Any = None, source: Any = None,
                value: Any = None, dest: Any = None, prio: int = 3, dt: Any = None,
                from_smartplugin: bool = False) -> None:
        with self._lock:
            entry = self._entries.get(name)
        target = obj or (entry.obj if entry is not None else None)
        if target is None:
            raise KeyError(name)
        delay = (dt.timestamp() - time.time()) if dt is not None else 0.0
        threading.Timer(max(0.0, delay), self._run, args=(name, target, value)).start()

    def names(self) -> List[str]:
        with self._lock:
            return list(self._entries)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)

    # ------------------------------------------------------------------ dispatch
    def _loop(self) -> None:
        while not self._stop.wait(self._tick):
            now = time.time()
            due: List[Entry] = []
            with self._lock:
                for entry in self._entries.values():
                    if entry.active and entry.due is not None and entry.due <= now:
                        due.append(entry)
                        entry.runs += 1
                        entry.reschedule(now)
            for entry in due:
                worker = threading.Thread(target=self._run, args=(entry.name, entry.obj, entry.value),
                                          name=entry.name, daemon=True)
                self._workers = [w for w in self._workers if w.is_alive()] + [worker]
                worker.start()

    @staticmethod
    def _run(name: str, obj: Callable, value: Any) -> None:
        kwargs = dict(value or {})
        try:
            if "caller" in inspect.signature(obj).parameters:
                kwargs.setdefault("caller", "Scheduler")
        except (TypeError, ValueError):
            pass
        try:
            obj(**kwargs)
        except Exception:
            logger.exception("Method %s exception", name)

    def running_workers(self) -> List[threading.Thread]:
        return [w for w in self._workers if w.is_alive()]
