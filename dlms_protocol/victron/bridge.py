"""Publish verified meter snapshots as a Victron grid meter on D-Bus, from any thread.

``VictronBridge`` runs its own asyncio loop in a daemon thread, so a synchronous caller (the
SmartHomeNG plugin, the push listener's thread, the readout loop) only calls ``publish(data)``.
Mapping happens in the caller's thread; the loop only applies the result and sends one
``ItemsChanged``. The bus is connected lazily and reconnected by itself.

Or the loop lives in the push listener's thread (``loop_guest``, ``pipeline.LoopGuest``; the
standalone service on a local serial port), and ``publish`` from that thread applies the snapshot
at once: handing every push to the loop's own thread woke that thread each time, about 0.1 ms of
CPU on the development VM for an idle asyncio loop alone. The listener's waits watch the loop's
selector as well and run the loop only when it has work (bus traffic, a timer, a callback), since
a pass of the loop costs about as much as the push's D-Bus work (``_HostedEventLoop``). Everything on
the loop still runs in one thread at a time; when the listener's thread ends (or its port cannot
run the loop), the bridge's own thread takes the loop over.

Staleness (victron-dbus.md §10.4, user pains #13/#18): values are held while frames keep
coming. When no verified frame at all arrived within the time-out (``timeout``, but at least
three times the meter's median frame interval), ``/Connected`` becomes 0 and every measurement
is invalidated (an empty value, never 0 W); the next frame restores everything. Each
instantaneous path (power, voltage, current, ...) also has its own time-out: that one, but at
least three times the path's own observed update interval, so a meter that pushes power every
2 s and voltages every 10 s does not blink its voltages; a path seen only once is held twice
the time-out. An interval is learnt only while the value is still valid, so an outage never
teaches a long time-out and a value that stops coming never freezes.

Service name (user-visible, README "What Venus sees"): the suffix must not depend on which of a
meter's lists came first after a restart, because localsettings keeps the VRM instance and
custom name under it. ``device_suffix`` always wins; otherwise the service opens as soon as a
frame carried the meter serial, or after ``identity_wait`` seconds (from the first frame) with
the meter id (system title) or the port. A readout carries the whole data set, so its first
frame settles the name. If a better identity (the serial) shows up after that, the service
moves to it; only upwards, so two meters on one line cannot make it flap.
"""
from __future__ import annotations

import asyncio
import logging
import math
import operator
import selectors
import threading
import time
from collections import deque
from itertools import repeat
from typing import Any, Deque, Dict, List, Optional, Tuple

from ..errors import ConfigurationError, DlmsError
from ..model import MeterData, Statistics
from ..pipeline import LoopGuest
from ..ratelimit import Backoff
from ..transport import select_waiter
from .bridge_settings import ROLES, BridgeSettings
from .mapping import Mapped, Mapper, estimated_note
from .naming import RANK_SERIAL, pick_suffix

LOG = logging.getLogger(__name__)

_IDENTITY = ("/Serial", "/FirmwareVersion")
#: seconds a phase stays named as estimated in ``/Mgmt/Connection`` after the last frame that
#: estimated its power: a meter whose phases are exact in some pushes and estimated in others
#: (per-phase import only, phases exporting now and then) made the GX's device page change its
#: text with nearly every push
NOTE_HOLD = 60.0



def _median(values: Any) -> float:
    """The median of a few intervals (statistics would load fractions, random and hashlib)."""
    ordered = sorted(values)
    mid = len(ordered) // 2
    return float(ordered[mid]) if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0

class _Core:
    """Everything that runs on the bridge's loop."""

    def __init__(self, cfg: BridgeSettings, mapper: Mapper, stats: Statistics) -> None:
        from .service import MeterService  # needs dbus-fast; imported on the loop only

        self.cfg = cfg
        self.stats = stats
        self.loop = asyncio.get_running_loop()
        self.service = MeterService(cfg, mapper, stats)
        self.mapper = mapper
        self.connected = False
        self.control_ready = False
        self.last_frame: Optional[float] = None
        self.times: Dict[str, float] = {}  # valid instantaneous path -> monotonic time of its last value
        self.path_intervals: Dict[str, Deque[float]] = {}  # path -> its own observed update intervals
        self.intervals: Deque[float] = deque(maxlen=9)
        self.frames = 0
        self.frames_before_open = 0
        self.first_frame: Optional[float] = None
        self.complete_frames = False  # readouts: every frame carries the whole data set
        self.empty_said = False  # (the warning about frames without any value for Venus: once)
        self.estimated_at: Dict[int, float] = {}  # phase -> time of the last frame that estimated its power
        self.timer: Optional[asyncio.TimerHandle] = None
        self.identity_timer: Optional[asyncio.TimerHandle] = None
        self.opening: Optional["asyncio.Task[None]"] = None
        self.renaming: Optional["asyncio.Task[None]"] = None
        self.rename_retry_at = 0.0
        self.retry_at = 0.0
        self.stopping = False
        self.registered_event = asyncio.Event()
        self._meter_id: Optional[str] = None

    # ----------------------------------------------------------- connection
    async def run(self) -> None:
        """Keep the control connection up; re-register after the bus came back."""
        backoff = Backoff(1.0, 30.0)
        while not self.stopping:
            try:
                await self.service.connect_control()
            except DlmsError as exc:
                self.stats.error(exc)
                LOG.warning("victron: %s (retry in %.0f s)", exc, backoff.delay)
                await asyncio.sleep(backoff.next())
                continue
            except Exception:  # the bridge must survive anything; retry like a lost bus
                self.stats.count("victron_internal_errors")
                LOG.exception("victron: unexpected error while connecting (retry in %.0f s)", backoff.delay)
                await asyncio.sleep(backoff.next())
                continue
            backoff.reset()
            self.control_ready = True
            if self.service.opened:
                await self._guarded(self.service.reopen())
            else:
                self._maybe_open()
            try:
                await self.service.control.wait_for_disconnect()
            except Exception as exc:  # noqa: BLE001 - the end of the connection, whatever its reason
                LOG.debug("victron: control connection ended: %r", exc)
            self.control_ready = False
            if not self.stopping:
                LOG.warning("victron: D-Bus connection lost; reconnecting")

    async def _guarded(self, coro: Any) -> bool:
        try:
            await coro
            return True
        except DlmsError as exc:
            self.stats.error(exc)
            LOG.error("victron: %s", exc)
            return False
        except asyncio.CancelledError:
            raise
        except Exception:  # never let one failed registration end the bridge
            self.stats.count("victron_internal_errors")
            LOG.exception("victron: unexpected error while registering on D-Bus")
            return False

    def _maybe_open(self) -> None:
        svc = self.service
        if svc.opened or self.opening is not None or not self.control_ready or not self.connected:
            return
        if "/Ac/Power" not in svc.values and self.frames_before_open < 2:
            return  # wait for the frame with power (two-telegram meters send energy separately)
        now = time.monotonic()
        if not self._identity_settled(now):
            self._wake_for_identity(now)
            return
        if now < self.retry_at:
            return
        self.opening = self.loop.create_task(self._open())

    # -------------------------------------------------------------- identity
    def _identity(self) -> Tuple[str, int]:
        return pick_suffix(self.cfg.device_suffix, self.service.values.get("/Serial"), self._meter_id, self.cfg.port)

    def _identity_settled(self, now: float) -> bool:
        """True when waiting longer cannot give a better service name (see the module docstring)."""
        if self._identity()[1] >= RANK_SERIAL or self.complete_frames:
            return True
        return self.first_frame is not None and now - self.first_frame >= self.cfg.identity_wait

    def _wake_for_identity(self, now: float) -> None:
        """Open at the end of the identity wait even if no frame comes then (slow push meters)."""
        if self.identity_timer is not None or self.first_frame is None:
            return
        delay = max(0.0, self.first_frame + self.cfg.identity_wait - now) + 0.01
        self.identity_timer = self.loop.call_later(delay, self._identity_wait_over)

    def _identity_wait_over(self) -> None:
        self.identity_timer = None
        if self.stopping or self.service.opened:
            return
        if self._identity()[1] < RANK_SERIAL:
            LOG.info("victron: no frame with the meter serial within %.0f s; using %s", self.cfg.identity_wait,
                     self._identity()[0])
        self._maybe_open()

    def _maybe_rename(self) -> None:
        svc = self.service
        if svc.rank >= RANK_SERIAL:
            return  # nothing ranks higher but device_suffix, which would have been used from the start
        if not svc.opened or self.opening is not None or self.renaming is not None or not self.control_ready:
            return
        if self._identity()[1] <= svc.rank or time.monotonic() < self.rename_retry_at:
            return
        self.renaming = self.loop.create_task(self._rename())

    async def _rename(self) -> None:
        svc = self.service
        try:
            if not await self._guarded(svc.rename(svc.values.get("/Serial"), self._meter_id)):
                self.rename_retry_at = time.monotonic() + 30.0
        finally:
            self.renaming = None

    async def _open(self) -> None:
        svc = self.service
        try:
            ok = await self._guarded(svc.open(svc.values.get("/Serial"), self._meter_id))
            if ok:
                self.registered_event.set()
            else:
                self.retry_at = time.monotonic() + 5.0
        finally:
            self.opening = None

    # ---------------------------------------------------------------- frames
    def on_frame(self, mapped: Mapped, meter_id: Optional[str], t: float, kind: str = "push") -> None:
        if self.stopping or self._no_reading(mapped):
            return
        if self.last_frame is not None:
            iv = t - self.last_frame
            if 0.0 < iv < 3600.0:
                self.intervals.append(iv)
        self.last_frame = t
        if self.first_frame is None:
            self.first_frame = t
        if kind == "readout":
            self.complete_frames = True
        self.frames += 1
        if meter_id and not self._meter_id:
            self._meter_id = meter_id
        svc = self.service
        changes: Dict[str, Any] = dict(mapped.values)
        self._learn_intervals(changes, t)
        for path in mapped.withheld:  # unknown in this frame: an older frame's value would be wrong now
            changes[path] = None
            self.times.pop(path, None)
        if not self.connected:
            if svc.opened:
                LOG.info("victron: verified readings again; /Connected = 1")
            self.connected = True
        changes["/Connected"] = 1
        if mapped.phases - svc.phases:
            svc.add_phases(mapped.phases)
            changes["/NrOfPhases"] = max(svc.phases)
        changes["/RefreshTime"] = self._refresh_time()
        changes["/Mgmt/Connection"] = svc.connection_text(self._phase_note(mapped, t))
        n = svc.update(changes)
        if n:
            self.stats.count("victron_updates")
        if not svc.opened:
            self.frames_before_open += 1
            self._maybe_open()
        else:
            self._maybe_rename()
        if self.timer is None:
            self._schedule(t)

    def _learn_intervals(self, changes: Dict[str, Any], t: float) -> None:
        """Note the frame's time per instantaneous path, and the interval since its last value
        (only while that value is still valid: outages teach nothing).

        The usual push (every path known, with an interval so far, and the frame later than all of
        them) is done by C-level calls over the paths (``map``, ``dict.update``), not by a Python
        loop over each: that loop was about 30 bytecode operations per path and push."""
        fresh = self.mapper.instant_paths.intersection(changes)
        if not fresh:
            return
        times, intervals = self.times, self.path_intervals
        if times.keys() >= fresh and intervals.keys() >= fresh and max(map(times.__getitem__, fresh)) < t:
            deque(map(deque.append, map(intervals.__getitem__, fresh),
                      map(operator.sub, repeat(t), map(times.__getitem__, fresh))), 0)
            times.update(dict.fromkeys(fresh, t))
            return
        for path in changes:  # (in the frame's order: a new path's place in ``times`` is its place in the log)
            if path in fresh:
                prev = times.get(path)
                if prev is None:
                    times[path] = t
                elif t > prev:  # (frames published from several threads may arrive out of order)
                    ivs = intervals.get(path)
                    if ivs is None:  # (not setdefault: that would make a deque per path and push)
                        ivs = intervals[path] = deque(maxlen=5)
                    ivs.append(t - prev)
                    times[path] = t

    def _phase_note(self, mapped: Mapped, t: float) -> Optional[str]:
        """The frame's note for ``/Mgmt/Connection``, naming every phase estimated within the
        last ``NOTE_HOLD`` seconds (the log says per frame which phases are exact)."""
        held = self.estimated_at
        for ph in mapped.estimated_phases():
            held[ph] = t
        if held:
            for ph in [ph for ph, at in held.items() if t - at > NOTE_HOLD]:
                del held[ph]
            if held:
                return estimated_note(held)
        return mapped.phase_note()

    def _no_reading(self, mapped: Mapped) -> bool:
        """A frame without any value for Venus (an unknown layout's positions, texts only) is no
        reading: neither a sign of life nor a reason to register."""
        if mapped.measures:
            return False
        if not self.empty_said:
            self.empty_said = True
            LOG.warning("victron: a frame from the meter gives no value Venus uses (no power, energy, voltage "
                        "or current; the log above says whether its layout is unknown): it neither registers "
                        "the grid meter nor keeps /Connected = 1; set the meter's profile (see the dump "
                        "command) if it is a list of values by position")
        return True

    def _refresh_time(self) -> Optional[int]:
        if self.cfg.refresh_time_ms:
            return int(self.cfg.refresh_time_ms)
        if not self.intervals:
            return self.service.values.get("/RefreshTime")
        ms = _median(self.intervals) * 1000.0
        return int(round(ms, -2 if ms >= 1000 else -1)) or 10

    def effective_timeout(self) -> float:
        """The meter's time-out (/Connected): ``timeout``, at least three median frame intervals."""
        if len(self.intervals) >= 3:
            return max(self.cfg.timeout, 3.0 * _median(self.intervals))
        return self.cfg.timeout

    def path_timeout(self, path: str, eff: Optional[float] = None) -> float:
        """One path's time-out: the meter's, but at least three of the path's own update intervals;
        twice the meter's while the path was seen only once (its list may be the slow one)."""
        if eff is None:
            eff = self.effective_timeout()
        ivs = self.path_intervals.get(path)
        if not ivs:
            return 2.0 * eff
        return max(eff, 3.0 * _median(ivs))

    # ------------------------------------------------------------- staleness
    def _schedule(self, now: float) -> None:
        if self.last_frame is None:
            return
        eff = self.effective_timeout()
        due = self.last_frame + eff
        for path, t in self.times.items():
            due = min(due, t + self.path_timeout(path, eff))
        delay = max(0.05, due - now + 0.01)
        self.timer = self.loop.call_later(delay, self._check)

    def _check(self) -> None:
        self.timer = None
        if self.stopping or self.last_frame is None:
            return
        now = time.monotonic()
        eff = self.effective_timeout()
        svc = self.service
        if now - self.last_frame >= eff:
            if self.connected:
                changes: Dict[str, Any] = {p: None for p, v in svc.values.items()
                                           if v is not None and self.mapper.spec(p) is not None
                                           and p not in _IDENTITY}
                changes["/Connected"] = 0
                svc.update(changes)
                self.connected = False
                self.stats.count("victron_disconnects")
                LOG.warning("victron: no verified reading for %.1f s: /Connected = 0, measurements invalid",
                            now - self.last_frame)
            self.times.clear()
            return  # nothing can go stale any more: no timer while the meter is silent
        stale: List[str] = [p for p, t in self.times.items() if now - t >= self.path_timeout(p, eff)]
        if stale:
            for p in stale:
                del self.times[p]
            svc.update({p: None for p in stale})
            LOG.info("victron: %s not refreshed within %.1f s: invalidated", ", ".join(stale),
                     min(self.path_timeout(p, eff) for p in stale))
        self._schedule(now)

    # ------------------------------------------------------------------- end
    async def shutdown(self) -> None:
        self.stopping = True
        for timer in (self.timer, self.identity_timer):
            if timer is not None:
                timer.cancel()
        self.timer = self.identity_timer = None
        for task in (self.opening, self.renaming):
            if task is not None:
                task.cancel()
        await self.service.close()


class VictronBridge:
    """Thread-safe front of the D-Bus grid-meter service (see module docstring)."""

    def __init__(self, settings: BridgeSettings, stats: Optional[Statistics] = None) -> None:
        self.settings = settings
        self.stats = stats if stats is not None else Statistics()
        self.mapper = Mapper(settings.mapping_file, settings.mapping_options)  # bad mapping: error now
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._core: Optional[_Core] = None
        self._main: Optional["asyncio.Future[Any]"] = None
        self._ready = threading.Event()
        self._guest: Optional[_HostedLoop] = None  #: the loop as a push listener's guest (``loop_guest``)
        self._life = threading.Lock()  # start/stop against a host thread handing the loop back
        self._stopping = False

    # ------------------------------------------------------------------ life
    def loop_guest(self) -> Optional[LoopGuest]:
        """The bridge's loop for a push listener's thread to run (module docstring); before ``start``."""
        if self._guest is None and can_host():
            self._guest = _HostedLoop(self)
        return self._guest

    def start(self) -> None:
        """Start the loop thread and return at once; the bus is connected in the background.
        With a host (``loop_guest`` taken) the loop is only prepared: the host's waits run it."""
        if self._thread is not None or self._loop is not None:
            return
        try:
            import dbus_fast  # noqa: F401
        except ImportError:
            raise ConfigurationError("the Victron bridge needs the Python package dbus-fast",
                                     "Venus OS >= 3.50 ships it; elsewhere: pip install dbus-fast "
                                     "(or opkg install python3-dbus-fast)") from None
        self._stopping = False
        if self._guest is not None and self._guest.hosted:
            self._prepare(hosted=True)
            return
        self._spawn()
        self._ready.wait(5.0)

    def _spawn(self) -> None:
        self._ready.clear()
        self._thread = threading.Thread(target=self._thread_main, name="victron-dbus", daemon=True)
        self._thread.start()

    def _prepare(self, hosted: bool = False) -> asyncio.AbstractEventLoop:
        """A new loop with the core made on it (it wants the running loop) and its main task."""
        loop = _HostedEventLoop() if hosted else asyncio.new_event_loop()

        async def make() -> _Core:
            return _Core(self.settings, self.mapper, self.stats)

        self._core = loop.run_until_complete(make())
        self._main = loop.create_task(self._core.run())
        self._loop = loop
        return loop

    def _thread_main(self) -> None:
        loop = self._loop
        try:
            if loop is None:
                loop = self._prepare()
            asyncio.set_event_loop(loop)
            self._ready.set()
            loop.run_forever()
        except Exception:  # the bridge thread must never take the host down silently
            LOG.exception("victron: bridge loop crashed")
        finally:
            self._ready.set()
            if loop is not None:
                self._finish(loop)

    @staticmethod
    def _finish(loop: asyncio.AbstractEventLoop) -> None:
        """Cancel what is left on a loop that no thread runs any more, and close it."""
        try:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()
        except RuntimeError as exc:  # a host thread that did not end in time still runs it
            LOG.debug("victron: loop left open: %r", exc)

    def _released(self) -> None:
        """The host thread waits no more (``_HostedLoop.release``): the bridge's own thread runs the
        loop from now on, unless the bridge is stopping (``stop`` finishes it then)."""
        with self._life:
            if self._stopping or self._loop is None or self._thread is not None:
                return
            self._spawn()

    def stop(self, timeout: float = 2.0) -> None:
        """Drop the service from the bus and end the thread (waits at most ``timeout`` s)."""
        with self._life:
            self._stopping = True
            loop, core, thread = self._loop, self._core, self._thread
        if loop is None:
            return
        if thread is None:
            self._stop_unthreaded(loop, core, timeout)
        else:
            if core is not None and loop.is_running():
                self._shutdown_on_loop(loop, core, timeout)
                loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
        self._thread = None
        self._loop = None
        self._core = None

    @staticmethod
    def _shutdown_on_loop(loop: asyncio.AbstractEventLoop, core: "_Core", timeout: float) -> None:
        fut = asyncio.run_coroutine_threadsafe(core.shutdown(), loop)
        try:
            fut.result(timeout)
        except Exception as exc:  # noqa: BLE001 - best effort on the way out
            LOG.debug("victron: shutdown: %r", exc)

    def _stop_unthreaded(self, loop: asyncio.AbstractEventLoop, core: Optional["_Core"], timeout: float) -> None:
        """Stop a hosted loop: here when its host has ended (the usual order: the pipeline stops
        the source first), else on the host's next wait."""
        if core is not None and loop.is_running():
            self._shutdown_on_loop(loop, core, timeout)
            return  # the host thread still runs the loop; it ends with the process
        if core is not None:
            try:
                loop.run_until_complete(asyncio.wait_for(core.shutdown(), timeout))
            except Exception as exc:  # noqa: BLE001 - best effort on the way out
                LOG.debug("victron: shutdown: %r", exc)
        self._finish(loop)

    # ---------------------------------------------------------------- data
    def publish(self, data: MeterData) -> None:
        """Map a verified snapshot and put it on the bus (one ItemsChanged). Any thread."""
        loop, core = self._loop, self._core
        try:
            mapped = self.mapper.map(data)
        except Exception as exc:  # a mapping bug must not break the caller's reading loop
            self.stats.count("victron_map_errors")
            LOG.exception("victron: cannot map a reading set: %s", exc)
            return
        if loop is None or core is None:
            LOG.debug("victron: publish() before start(); dropped")
            return
        meter_id = data.meter_id
        guest = self._guest
        if guest is not None and guest.host == threading.get_ident() and not loop.is_running():
            core.on_frame(mapped, meter_id, time.monotonic(), data.kind)  # the host, between its waits
            return
        try:
            loop.call_soon_threadsafe(core.on_frame, mapped, meter_id, time.monotonic(), data.kind)
        except RuntimeError:  # loop closed during stop()
            pass

    # ------------------------------------------------------------- queries
    def wait_registered(self, timeout: float) -> bool:
        """Block until the service holds its bus name (tests, the standalone's start-up log)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            core = self._core
            if core is not None and core.registered_event.is_set():
                return True
            time.sleep(0.05)
        return False

    def status(self) -> Dict[str, Any]:
        """A snapshot for diagnostics (web interface, logs); safe from any thread."""
        core, loop = self._core, self._loop
        if core is None or loop is None:
            return {"running": False}

        def snapshot() -> Dict[str, Any]:
            out = core.service.status()
            out.update({
                "running": True,
                "bus_connected": core.control_ready,
                "meter_connected": core.connected,
                "frames": core.frames,
                "timeout": core.effective_timeout(),
                "path_timeouts": {p: round(core.path_timeout(p), 1) for p in core.times},
            })
            return out

        async def on_loop() -> Dict[str, Any]:
            return snapshot()

        if threading.current_thread() is self._thread:
            raise RuntimeError("status() is for other threads; on the loop use the core directly")
        guest = self._guest
        if guest is not None and guest.host == threading.get_ident() and not loop.is_running():
            return snapshot()  # the host thread, between its waits: the loop's state is this thread's
        try:
            return asyncio.run_coroutine_threadsafe(on_loop(), loop).result(2.0)
        except Exception:  # noqa: BLE001 - loop stopping or busy: report what is known
            return {"running": loop.is_running()}


class _HostSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """The hosted loop's selector: during a pass (``_HostedEventLoop.run_pending``) it never blocks;
    where the loop would wait, it notes until when (``due``) and ends the pass."""

    loop: Optional["_HostedEventLoop"] = None
    passing = False

    def select(self, timeout: Optional[float] = None) -> Any:
        if not self.passing or self.loop is None:
            return super().select(timeout)
        events = super().select(0)
        if not events and (timeout is None or timeout > 0):
            self.loop.due = math.inf if timeout is None else time.monotonic() + timeout
            self.loop.stop()
        return events


class _HostedEventLoop(asyncio.SelectorEventLoop):  # type: ignore[misc,valid-type]
    """An asyncio loop that another thread runs in passes: ``due`` says when it has work again
    (``call_soon``: now; ``call_at``/``call_later``: that time; I/O: its selector's descriptor
    ``fd`` turns readable), so the host runs it only then, not on every wait."""

    def __init__(self) -> None:
        selector = _HostSelector()
        super().__init__(selector)
        selector.loop = self
        self._host_selector = selector
        self.fd: int = selector.fileno()
        self.due = 0.0  #: monotonic time of its next work (inf: only when ``fd`` turns readable)

    def call_soon(self, callback: Any, *args: Any, context: Any = None) -> Any:  # type: ignore[override]
        self.due = 0.0
        return super().call_soon(callback, *args, context=context)

    def call_at(self, when: float, callback: Any, *args: Any, context: Any = None) -> Any:  # type: ignore[override]
        if when < self.due:
            self.due = when
        return super().call_at(when, callback, *args, context=context)

    def run_pending(self) -> None:
        """Run what is due now, and what that makes due, until the loop would wait."""
        self._host_selector.passing = True
        try:
            self.run_forever()
        finally:
            self._host_selector.passing = False


def can_host() -> bool:
    """Whether this platform's selector has a descriptor to watch (epoll, kqueue: yes)."""
    return callable(getattr(selectors.DefaultSelector, "fileno", None))


class _HostedLoop(LoopGuest):
    """The bridge's loop as a ``pipeline.LoopGuest``: the push listener's waits watch the loop's
    selector too and run the loop only when it has work (``_HostedEventLoop``), so a push costs
    no pass of the loop at all: ``publish`` from that thread applies it directly."""

    def __init__(self, bridge: VictronBridge) -> None:
        self._bridge = bridge
        #: the thread that runs the loop in its waits (its first wait says which); None after release
        self.host: Optional[int] = None
        self._released = False
        self._woken = False

    def _hosted_loop(self) -> Optional[_HostedEventLoop]:
        loop = self._bridge._loop
        if self._released or not isinstance(loop, _HostedEventLoop) or loop.is_closed():
            return None
        if self.host != threading.get_ident():
            self.host = threading.get_ident()
            asyncio.set_event_loop(loop)  # what asyncio.get_event_loop() means in this thread now
        return loop

    def wait(self, fds: Any, timeout: float) -> List[int]:
        loop = self._hosted_loop()
        if loop is None:
            return select_waiter(fds, timeout)
        watch = [*fds, loop.fd]
        end = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            if loop.due <= now:
                try:
                    loop.run_pending()
                except RuntimeError:  # the bridge's stop() runs it from another thread now
                    return select_waiter(fds, max(0.0, end - now))
                now = time.monotonic()
            if self._woken:
                self._woken = False
                return []
            left = end - now
            if left <= 0:
                return []
            ready = select_waiter(watch, min(left, max(0.0, loop.due - now)))
            if loop.fd in ready:
                loop.due = 0.0  # D-Bus traffic or a call from another thread: a pass before or after
                ready.remove(loop.fd)
            if ready:
                return ready

    def wake(self) -> None:
        self._woken = True
        loop = self._bridge._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(lambda: None)  # (makes the loop's descriptor readable)
            except RuntimeError:  # closed
                pass

    def release(self) -> None:
        self._released = True
        self.host = None
        self._bridge._released()


__all__ = ["BridgeSettings", "VictronBridge", "ROLES"]
