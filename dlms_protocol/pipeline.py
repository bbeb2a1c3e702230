"""The one seam between sources and outputs: ``Source → Pipeline → Output``.

Why one seam: every way of reading a meter (D0 request mode, push-only D0, DLMS push, SML,
DLMS polling) and every place a value goes (SmartHomeNG items, Victron D-Bus, MQTT, the CLI,
the web interface's history) used to be wired to each other by hand, per mode and per output,
so whole paths silently did nothing (a scheduled readout never reached D-Bus) and the same
fact was computed three ways. Here:

* a **Source** owns its port (through an injected opener), reconnect/back-off and health; it
  hands every *verified* ``MeterData`` to ``emit`` and every change of health to ``report``;
* the **Pipeline** enriches each ``MeterData`` exactly once (``enrich``: derived registers such
  as net power, marked ``derived``), decides staleness for every source the same way
  (``Source.stale_after`` seconds without data → ``Health.STALE``) and fans data and health
  out to every output; a failing output is logged and counted, never stops the others;
* an **Output** implements ``publish`` (and usually ``publish_health``) and keeps its own rate
  limit (``KeepLatest``), because Victron wants every push while items may want one a minute.

An output with an event loop of its own (the Victron D-Bus service) may offer it as a
``LoopGuest``; a source whose reading thread can run it while it waits for its port
(``Source.host_loop``: a push meter on a local serial port) takes it, and the output then needs
no thread of its own (``host_loops``, used by the standalone service).

Sources and outputs are found by name through ``SOURCES``/``OUTPUTS`` (``"module:factory"``
strings, imported on first use), so a D0 ``read`` never loads the push, SML or D-Bus stacks.
Adding a source or an output is one class and one line in these tables.
"""
from __future__ import annotations

import importlib
import logging
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Optional, Sequence

from .counterguard import CounterGuard
from .derive import derive_all
from .model import MeterData, Statistics
from .ratelimit import Backoff

log = logging.getLogger(__name__)

Emit = Callable[[MeterData], None]


@dataclass(frozen=True)
class Health:
    """What a source says about itself: one of the states below, with the cause when not ``ok``.

    ``cause`` is a user-facing sentence (cause and fix, never a key). Outputs map it to their
    own notion: items' status, MQTT availability (``offline`` unless ``ok``), D-Bus
    ``/Connected``. Stale and error never mean 0: outputs invalidate, they don't zero.
    """

    state: str
    cause: str = ""
    since: float = field(default_factory=time.time)
    source: str = ""
    #: the error behind an ``error`` state, for outputs that classify it (log level, counters)
    error: Optional[BaseException] = field(default=None, compare=False, repr=False)

    STARTING = "starting"
    OK = "ok"
    STALE = "stale"
    ERROR = "error"
    STOPPED = "stopped"

    @property
    def ok(self) -> bool:
        return self.state == Health.OK


class LoopGuest(ABC):
    """An output's event loop, run by a source's reading thread while that thread waits.

    Why: handing each snapshot from the reading thread to an output's own loop thread wakes a
    second thread per push, about 0.1 ms of CPU on the development VM, a tenth of the Venus OS
    service's whole push (``victron/bridge.py``). ``hosted`` is set by the source that accepted the guest
    (``Source.host_loop``), before the pipeline starts; an output whose guest nobody took runs
    its loop itself as before.
    """

    hosted = False

    @abstractmethod
    def wait(self, fds: Sequence[int], timeout: float) -> List[int]:
        """Run the loop until one of ``fds`` is readable (returned) or ``timeout`` s have passed
        (``transport.Waiter``); may return early with none (``wake``)."""

    @abstractmethod
    def wake(self) -> None:
        """Any thread: end the running wait, or the next one, early (a source that stops)."""

    @abstractmethod
    def release(self) -> None:
        """The host thread waits no more (it ends, or its port cannot run the loop): the output
        runs its loop itself from now on."""


class Output(ABC):
    """Where verified data goes. Called from the source's thread: return quickly.

    ``publish`` gets every enriched ``MeterData``; an output that wants fewer applies its own
    rate limit (see ``KeepLatest``) and may deliver a held snapshot from ``tick``, which the
    pipeline calls about every ``Pipeline.TICK`` seconds.
    """

    name = "output"
    #: True: ``publish_health`` also gets each repeat of the same error (every failed readout, for
    #: an output that counts failures); otherwise only changes of the health
    every_error = False

    def start(self) -> None:
        """Open connections (D-Bus, MQTT); called once before the source starts."""

    @abstractmethod
    def publish(self, data: MeterData) -> None:
        """One verified, enriched snapshot."""

    def publish_health(self, health: Health) -> None:
        """The source's health changed (``ok`` again, ``stale``, ``error`` with cause)."""

    def tick(self, now: float) -> None:
        """Periodic call for held (rate-limited) data and the output's own timers."""

    def stop(self, timeout: float = 2.0) -> None:
        """Release connections within ``timeout`` seconds."""

    def status(self) -> Dict[str, Any]:
        """Plain values for status displays (web interface, ``--check-config``)."""
        return {}

    def loop_guest(self) -> Optional[LoopGuest]:
        """The output's event loop for a source's thread to run (``LoopGuest``); None: none."""
        return None


class Source(ABC):
    """A meter on a port. ``start`` runs it (own thread, or triggered by ``read_now``).

    ``stale_after``: seconds without verified data after which the pipeline calls the source
    stale (push: a few missed periods; readout: a few missed cycles).
    """

    name = "source"
    kind = "source"
    stale_after: float = 60.0
    #: True when the source logs its own errors (rate-limited), so outputs need not log them again
    logs_errors = False

    def __init__(self, stats: Optional[Statistics] = None) -> None:
        self.stats = stats if stats is not None else Statistics()

    @abstractmethod
    def start(self, emit: Emit, report: Callable[[Health], None]) -> None:
        """Begin delivering data to ``emit`` and health changes to ``report``."""

    @abstractmethod
    def stop(self, timeout: float = 2.0) -> None:
        """Stop and release the port within ``timeout`` seconds (a running read is ended)."""

    def read_now(self) -> bool:
        """Trigger one read in the background (scheduled sources); False when not possible now."""
        return False

    def host_loop(self, guest: LoopGuest) -> bool:
        """Run ``guest`` in the reading thread's waits (``LoopGuest``); called before ``start``.
        True when taken (and ``guest.hosted`` set); most sources cannot."""
        return False

    def read_once(self) -> bool:
        """One read in the caller's thread (an external scheduler's); False when none was possible."""
        return False

    @property
    def running(self) -> bool:
        """False once the source has given up for good (the service should exit and be restarted)."""
        return True

    def status(self) -> Dict[str, Any]:
        return {}

    def stale_hint(self) -> Optional[str]:
        """Why no verified data came, when the source saw more than silence (frames that fail);
        said instead of the cable advice. None: nothing known."""
        return None


class ScheduledSource(Source):
    """A source that reads when asked: every ``cycle`` seconds in its own thread, or from an
    external scheduler (``read_once``), or in the background (``read_now``).

    One place for what every asked-for source needs: never two reads at once, health after
    each attempt, a bug in one read never ends the schedule, and after a port error the loop
    backs off (``BACKOFF_INITIAL`` doubling to ``MAX_BACKOFF``) so a missing adapter is not hammered, until the
    port's device is there again (``transport.DeviceWatch``: ``name`` is the port).
    ``continuous`` sources (push-only D0) read again at once. Subclasses implement ``_read``
    and ``_close``; ``_after_emit`` is for extras (load-profile rows).
    """

    BACKOFF_INITIAL = 1.0
    MAX_BACKOFF = 30.0
    continuous = False

    def __init__(self, name: str, cycle: float = 0.0, *, stats: Optional[Statistics] = None,
                 stale_after: Optional[float] = None) -> None:
        super().__init__(stats)
        self.name = name
        self.cycle = float(cycle)
        if stale_after is not None:  # an external scheduler's cycle
            self.stale_after = float(stale_after)
        else:  # an asked-for meter is silent between reads: allow a few missed cycles
            self.stale_after = max(10.0, 2.5 * self.cycle) if self.cycle else 0.0
        self._emit: Optional[Emit] = None
        self._report: Optional[Callable[[Health], None]] = None
        self._stop = threading.Event()
        self._busy = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._port_failed = False
        self.last_duration: Optional[float] = None

    @abstractmethod
    def _read(self) -> MeterData:
        """One complete, verified read; raises a DlmsError."""

    @abstractmethod
    def _close(self) -> None:
        """Release the port; a read running in another thread ends soon."""

    def _after_emit(self) -> None:
        """Called after each delivered snapshot."""

    def start(self, emit: Emit, report: Callable[[Health], None]) -> None:
        self._emit, self._report = emit, report
        self._stop.clear()
        if self.cycle > 0 or self.continuous:
            self._thread = threading.Thread(target=self._loop, name=f"dlms-{self.kind} {self.name}", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._close()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def read_now(self) -> bool:
        """Start one read in the background; False while one is running."""
        if self._busy.locked() or self._stop.is_set():
            return False
        threading.Thread(target=self.read_once, name=f"dlms-{self.kind}-now {self.name}", daemon=True).start()
        return True

    def read_once(self) -> bool:
        """One read in the caller's thread (a scheduler's); True when data went out."""
        from .errors import DlmsError, TransportError

        if not self._busy.acquire(blocking=False):
            return False
        start = time.monotonic()
        try:
            data = self._read()
        except DlmsError as exc:
            self.last_duration = time.monotonic() - start  # before the health report: it is shown with it
            self._busy.release()
            self._port_failed = isinstance(exc, TransportError)
            if not self._stop.is_set():
                self._tell(Health(Health.ERROR, str(exc), source=self.name, error=exc))
            return False
        except Exception as exc:  # a bug in one read must not end the schedule
            self.last_duration = time.monotonic() - start
            self._busy.release()
            log.exception("unexpected error while reading %s", self.name)
            self.stats.error(exc)
            self._tell(Health(Health.ERROR, f"internal error: {exc!r}", source=self.name, error=exc))
            return False
        except BaseException:
            self._busy.release()
            raise
        self.last_duration = time.monotonic() - start
        self._busy.release()
        self._port_failed = False
        if self._stop.is_set() or self._emit is None:
            return False
        self._emit(data)
        self._after_emit()
        return True

    @property
    def busy(self) -> bool:
        return self._busy.locked()

    def _tell(self, health: Health) -> None:
        if self._report is not None:
            self._report(health)

    def _loop(self) -> None:
        backoff = Backoff(self.BACKOFF_INITIAL, self.MAX_BACKOFF)
        while not self._stop.is_set():
            started = time.monotonic()
            self.read_once()
            if self._port_failed:
                from .transport import DeviceWatch  # (a lost port only)

                if DeviceWatch(self.name).pause(backoff, self._stop.wait):  # (back: read it now)
                    log.info("%s is there again: reading it now", self.name)
                continue
            backoff.reset()
            if not self.continuous:
                self._stop.wait(max(0.0, self.cycle - (time.monotonic() - started)))


def carried_over(newer: MeterData, older: MeterData) -> MeterData:
    """``newer`` with the readings of ``older`` whose codes it lacks (OBIS codes only, same meter).

    Why: a meter that pushes several lists (Kaifa and Aidon in Norway: power every 2 s, voltages
    and currents every 10 s, energies once an hour) sends each code in one list only. Behind a
    rate limit the list of the hour was replaced by the next 2-second list within the interval,
    and the energy counters never reached the output. Each carried reading is one the meter
    sent, verified, with its own time, and at most one interval old, as the held snapshot was."""
    if newer.meter_id != older.meter_id and None not in (newer.meter_id, older.meter_id):
        return newer  # (another meter on the line: nothing of the first one's)
    codes = {r.obis for r in newer.readings}
    extra = tuple(r for r in older.readings if r.obis is not None and r.obis not in codes)
    return newer.with_readings(newer.readings + extra) if extra else newer


class KeepLatest:
    """Rate limit that keeps the latest: at most one delivery per ``interval`` seconds.

    Within the interval a newer snapshot replaces the held one, which ``due`` returns once the
    interval has passed; so an output never gets a stale value and the last one before a
    pause is not lost (dropping would hold back the freshest value until the next message).
    What the newer one lacks of the held one (another list of the same meter) is carried over
    (``carried_over``).
    """

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = max(0.0, float(interval))
        self._clock = clock
        self._last = float("-inf")
        self._held: Optional[MeterData] = None
        self.dropped = 0
        self._lock = threading.Lock()

    def offer(self, data: MeterData) -> Optional[MeterData]:
        """The snapshot to deliver now, or None when it is held back."""
        with self._lock:
            now = self._clock()
            if now - self._last >= self.interval:
                self._last = now
                self._held = None
                return data
            held = self._held
            if held is not None:
                self.dropped += 1
                data = carried_over(data, held)
            self._held = data
            return None

    def due(self) -> Optional[MeterData]:
        """The held snapshot once its interval has passed, else None."""
        with self._lock:
            if self._held is None or self._clock() - self._last < self.interval:
                return None
            data, self._held = self._held, None
            self._last = self._clock()
            return data

    def take(self) -> Optional[MeterData]:
        """The held snapshot now, whatever the interval (a scheduler says when), else None."""
        with self._lock:
            data, self._held = self._held, None
            if data is not None:
                self._last = self._clock()
            return data

    def clear(self) -> None:
        with self._lock:
            self._held = None


class Throttled(Output):
    """Any output behind a ``KeepLatest`` rate limit (a service's ``min_interval`` for every output)."""

    def __init__(self, inner: Output, interval: float) -> None:
        self.inner = inner
        self.name = inner.name
        self.every_error = inner.every_error
        self.limit = KeepLatest(interval)

    def start(self) -> None:
        self.inner.start()

    def publish(self, data: MeterData) -> None:
        due = self.limit.offer(data)
        if due is not None:
            self.inner.publish(due)

    def publish_health(self, health: Health) -> None:
        self.inner.publish_health(health)

    def tick(self, now: float) -> None:
        due = self.limit.due()
        if due is not None:
            self.inner.publish(due)
        self.inner.tick(now)

    def stop(self, timeout: float = 2.0) -> None:
        self.inner.stop(timeout)

    def status(self) -> Dict[str, Any]:
        return self.inner.status()


def enrich(data: MeterData) -> MeterData:
    """Add every register that follows exactly from the ones sent (see ``derive``), once."""
    extra = derive_all(data)
    if not extra:
        return data
    return data.with_readings(tuple(data.readings) + tuple(extra))


class Pipeline:
    """One source, any number of outputs; enrich once, fan out, one staleness rule."""

    TICK = 0.25
    #: the shortest step when no output has timers of its own (``tick`` not overridden): staleness
    #: alone needs no finer one, and the ticker then sleeps until it could be due (``_tick_wait``);
    #: an idle wake-up costs as much CPU as a small push on a GX
    IDLE_TICK = 1.0

    def __init__(self, source: Source, outputs: Sequence[Output] = (), *,
                 enricher: Callable[[MeterData], MeterData] = enrich,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.source = source
        self.outputs: List[Output] = list(outputs)
        self.stats = source.stats
        self._enrich = enricher
        self._counters = CounterGuard(self.stats)  # (energy counters never go backwards: counterguard)
        self._clock = clock
        self.health = Health(Health.STARTING, source=source.name)
        self.last_data: Optional[MeterData] = None
        self._last_time: Optional[float] = None
        self._started_at = clock()
        self._stop = threading.Event()
        self._ticker: Optional[threading.Thread] = None
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ control
    def add_output(self, output: Output) -> None:
        self.outputs.append(output)

    def start(self, ticker: bool = True) -> None:
        """Start outputs, then the source, then (optionally) the ticker thread."""
        self._stop.clear()
        self._started_at = self._clock()
        for out in list(self.outputs):
            self._call(out, "start")
        self.source.start(self._emit, self.report)
        if ticker:
            self._ticker = threading.Thread(target=self._tick_loop, name=f"dlms-pipeline {self.source.name}",
                                            daemon=True)
            self._ticker.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the source first (no more data), then the outputs; within about ``timeout``."""
        deadline = time.monotonic() + timeout
        self._stop.set()
        try:
            self.source.stop(timeout=max(0.1, timeout / 2))
        except Exception:  # stopping must go on whatever the source does
            log.exception("stopping source %s", self.source.name)
        self._set_health(Health(Health.STOPPED, source=self.source.name))
        for out in list(self.outputs):
            self._call(out, "stop", max(0.1, (deadline - time.monotonic()) / max(1, len(self.outputs))))
        if self._ticker is not None and self._ticker is not threading.current_thread():
            self._ticker.join(max(0.0, deadline - time.monotonic()))

    # ------------------------------------------------------------------ data path
    def feed(self, data: MeterData) -> MeterData:
        """A verified snapshot from the source: enrich once, mark healthy, publish everywhere."""
        try:
            data = self._enrich(self._counters.apply(data))
        except Exception:  # enrichment is optional; the verified values still go out
            self.stats.count("internal_errors")
            log.exception("enriching data from %s failed; publishing it without derived values", self.source.name)
        with self._lock:
            self.last_data = data
            self._last_time = self._clock()
        if not self.health.ok:
            self._set_health(Health(Health.OK, source=self.source.name))
        for out in list(self.outputs):
            self._call(out, "publish", data)
        return data

    def _emit(self, data: MeterData) -> None:
        self.feed(data)

    def report(self, health: Health) -> None:
        """A source's own health (error with cause, or stale/ok decided by itself)."""
        if not health.source:
            health = replace(health, source=self.source.name)
        self._set_health(health)

    def tick(self) -> None:
        """Staleness for every source the same way, then the outputs' timers."""
        now = self._clock()
        with self._lock:
            last = self._last_time if self._last_time is not None else self._started_at
        stale_after = self.source.stale_after
        if stale_after and now - last > stale_after and self.health.state in (Health.OK, Health.STARTING):
            what = "no verified data" if self._last_time is None else "no new verified data"
            advice = self.source.stale_hint() or ("check the cable, the port settings and that the meter's "
                                                  "interface is enabled")
            self._set_health(Health(Health.STALE, f"{what} for {int(now - last)} s: {advice}",
                                    source=self.source.name))
        wall = time.time()
        for out in list(self.outputs):
            self._call(out, "tick", wall)

    # ------------------------------------------------------------------ helpers
    def _set_health(self, health: Health) -> None:
        """Outputs hear of changes of the health; those that count failures of each error too."""
        with self._lock:
            previous = self.health
            repeat = previous.state == health.state and previous.cause == health.cause
            if repeat and health.state != Health.ERROR:
                return
            self.health = health
        for out in list(self.outputs):
            if not repeat or out.every_error:
                self._call(out, "publish_health", health)

    def tick_period(self) -> float:
        """``TICK`` when some output delivers held data or runs timers in ``tick``, else ``IDLE_TICK``."""
        timed = any(type(out).tick is not Output.tick for out in self.outputs)
        return self.TICK if timed else max(self.TICK, self.IDLE_TICK)

    def _tick_wait(self, period: float) -> float:
        """Seconds until the next tick: ``period`` for outputs with timers; otherwise until the
        source could first turn stale, at least ``period``. A meter pushing every second with a
        60 s time-out then costs one wake-up a minute here instead of sixty (each is worth a
        small push of CPU on a GX); staleness is seen exactly when it is due."""
        stale_after = self.source.stale_after
        if period <= self.TICK or not stale_after or self.health.state not in (Health.OK, Health.STARTING):
            return period
        with self._lock:
            last = self._last_time if self._last_time is not None else self._started_at
        return max(period, last + stale_after - self._clock() + 0.01)

    def _tick_loop(self) -> None:
        period = self.tick_period()
        while not self._stop.wait(self._tick_wait(period)):
            try:
                self.tick()
            except Exception:  # the ticker must survive anything
                log.exception("pipeline tick failed")

    def _call(self, out: Output, method: str, *args: Any) -> None:
        try:
            getattr(out, method)(*args)
        except Exception:  # one broken output must not stop the others or the source
            self.stats.count("output_errors")
            log.exception("output %s: %s failed", getattr(out, "name", out), method)


# ---------------------------------------------------------------------- registries
#: source kinds → "module:factory" (relative to this package); a factory takes keyword options
SOURCES: Dict[str, str] = {
    "readout": ".iec62056_21.source:make_readout_source",
    "push": ".dlms.source:make_push_source",
    "poll": ".poll.source:make_poll_source",
    "sml": ".sml.source:make_sml_source",
}
#: output kinds → "module:factory"
OUTPUTS: Dict[str, str] = {
    "mqtt": ".mqtt.output:make_mqtt_output",
    "victron": ".victron.output:make_victron_output",
    "print": ".cli_output:make_print_output",
}


def _load(table: Dict[str, str], kind: str, what: str) -> Callable[..., Any]:
    from .errors import ConfigurationError

    try:
        target = table[kind]
    except KeyError:
        raise ConfigurationError(f"unknown {what} {kind!r}",
                                 "use one of: " + ", ".join(sorted(table)) if table else None) from None
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module, __package__), func)


def make_source(kind: str, **options: Any) -> Source:
    """A source by kind name; its module is imported only now."""
    return _load(SOURCES, kind, "source")(**options)


def make_output(kind: str, **options: Any) -> Output:
    """An output by kind name; its module (D-Bus, MQTT) is imported only now."""
    return _load(OUTPUTS, kind, "output")(**options)


def host_loops(source: Source, outputs: Sequence[Output]) -> Optional[Output]:
    """Let ``source`` run the event loop of the first output that offers one (``LoopGuest``);
    that output, or None. Before ``Pipeline.start``."""
    for out in outputs:
        guest = out.loop_guest()
        if guest is not None and source.host_loop(guest):
            return out
    return None


__all__ = ["Health", "LoopGuest", "host_loops", "Output", "ScheduledSource", "Source", "KeepLatest", "Throttled",
           "Pipeline", "enrich",
           "SOURCES", "OUTPUTS", "make_source", "make_output", "Emit"]
