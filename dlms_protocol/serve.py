"""``serve --config FILE``: the standalone service, any source with any outputs, one INI file.

Why one service: the Venus OS driver (``victron --config``) used to be its own loop per mode
(a push loop and a readout loop, each wired to the bridge by hand). Here the file's [meter]
section chooses the source (``push``, ``readout``; later kinds register themselves in
``pipeline.SOURCES``), every further section names an output ([victron], [mqtt] ... from
``pipeline.OUTPUTS``), and one ``Pipeline`` connects them. ``victron --config`` is this with
the D-Bus output always on; dbus-dlms-meter's ``config.py`` is read as such a file. The command
line (``serve``, logging set-up, ``--check-config`` output) is in ``serve_cli``.

Runs in the foreground until SIGTERM/SIGINT (daemontools' ``svc -d`` sends TERM), logs to
stderr (multilog adds timestamps), and exits non-zero on errors no restart can fix (bad
configuration) so they show in ``svstat`` and the log.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, List, Optional

from . import __version__
from .errors import ConfigurationError
from .model import MeterData, Statistics
from .pipeline import Health, Output, Pipeline, Source, Throttled, host_loops, make_output, make_source
from .ratelimit import RepeatLimiter

LOG = logging.getLogger(__name__)

STATUS_EVERY = 900.0  # seconds between status lines in the log


class _RateLimited:
    """Log the first error of a kind at WARNING, repeats at DEBUG with a count every minute."""

    def __init__(self) -> None:
        self.limiter = RepeatLimiter(60.0)

    def __call__(self, exc: BaseException) -> None:
        log_now, repeats = self.limiter.check(type(exc).__name__)
        if log_now:
            LOG.warning("%s%s", exc, self.limiter.summary(repeats))
        else:
            LOG.debug("%s", exc)


class LogOutput(Output):
    """The service log as an output: health changes (error with cause, stale, valid again)."""

    name = "log"

    def __init__(self, source: Source, report: _RateLimited) -> None:
        self.source = source
        self.report = report
        self._bad = False

    def publish(self, data: MeterData) -> None:
        if self._bad:
            self._bad = False
            LOG.info("meter data valid again")

    def publish_health(self, health: Health) -> None:
        if health.state == Health.ERROR:
            self._bad = True
            if not self.source.logs_errors:
                self.report(health.error if health.error is not None else RuntimeError(health.cause))
        elif health.state == Health.STALE:
            self._bad = True
            LOG.warning("%s", health.cause)


def describe_start(cfg: Any) -> str:
    if cfg.listener is not None:
        lc = cfg.listener
        what = (f"DLMS push on {lc.port} {lc.baudrate} {lc.bytesize}{lc.parity}{lc.stopbits}, "
                f"key {'set' if lc.key else 'not set'}, profile {lc.profile or 'auto'}")
    elif getattr(cfg, "poll", None) is not None:
        what = f"DLMS/COSEM polling of {cfg.poll.describe()} every {cfg.interval:g} s"
    else:
        rc = cfg.readout
        what = f"IEC 62056-21 readout on {rc.port} every {cfg.interval:g} s (baudrate {rc.baudrate})"
    outs = []
    if cfg.victron:
        b = cfg.bridge
        outs.append(f"D-Bus {b.bus}, role {b.role}, time-out {b.timeout:g} s")
    outs += [f"output {kind}" for kind in sorted(cfg.outputs)]
    return f"dlms_protocol {__version__}: {what}; " + ("; ".join(outs) or "no output")


def build_source(cfg: Any, stats: Statistics) -> Source:
    """The source the [meter] section asks for (push listener, D0 readout loop or DLMS polling)."""
    text = bool(cfg.outputs) or not cfg.victron  # D-Bus shows no text: a DLMS push is not rendered for it
    # (a listener logs its own errors, rate-limited, and keeps quiet about a search's: no second line here)
    if cfg.listener is not None and getattr(cfg, "protocol", "dlms") != "dlms":  # SML, push-only D0, auto
        return make_source("sml", config=cfg.listener, listen_timeout=cfg.bridge.timeout, stats=stats,
                           protocol=cfg.protocol, text=text)
    if cfg.listener is not None:
        return make_source("push", config=cfg.listener, listen_timeout=cfg.bridge.timeout, stats=stats, text=text)
    if getattr(cfg, "poll", None) is not None:
        return make_source("poll", config=cfg.poll, cycle=cfg.interval, stats=stats, stale_after=cfg.bridge.timeout)
    return make_source("readout", config=cfg.readout, cycle=cfg.interval, stats=stats,
                       stale_after=cfg.bridge.timeout)


def build_outputs(cfg: Any, stats: Statistics) -> List[Output]:
    """Every output the file names; a push meter's ``min_interval`` limits all of them alike."""
    outputs: List[Output] = []
    if cfg.victron:
        outputs.append(make_output("victron", settings=cfg.bridge, stats=stats))
    for kind, options in sorted(cfg.outputs.items()):
        try:
            outputs.append(make_output(kind, **options))
        except TypeError as exc:  # an option the output does not know
            raise ConfigurationError(f"[{kind}]: {exc}", f"see the documentation of the {kind} output") from None
    interval = cfg.listener.min_interval if cfg.listener is not None else 0.0
    if interval > 0:
        outputs = [Throttled(out, interval) for out in outputs]
    return outputs


def run(cfg: Any, stop: threading.Event, stats: Optional[Statistics] = None) -> int:
    """Run until ``stop`` is set; returns the exit code. ConfigurationError before anything started."""
    stats = stats if stats is not None else Statistics()
    report = _RateLimited()
    outputs = build_outputs(cfg, stats)
    source = build_source(cfg, stats)
    LOG.info("%s", describe_start(cfg))
    pipe = Pipeline(source, [LogOutput(source, report), *outputs])
    hosted = host_loops(source, outputs)  # the D-Bus loop in the meter's reading thread (pipeline.LoopGuest)
    if hosted is not None:
        LOG.debug("the %s output's loop runs in the meter's reading thread", hosted.name)
    pipe.start()
    next_status = time.monotonic() + STATUS_EVERY
    try:
        while not stop.wait(5.0):  # signals end the wait at once; 5 s keeps the idle cost tiny
            if not source.running:
                LOG.error("the meter source ended (see the error above); exiting so the supervisor restarts")
                return 1
            if time.monotonic() >= next_status:
                _status_line(pipe, stats)
                next_status += STATUS_EVERY
    finally:
        pipe.stop(3.0)
        LOG.info("stopped; %s", _summary(stats))
    return 0


def _summary(stats: Statistics) -> str:
    c = stats.snapshot()["counters"]
    keys = ("messages", "reads", "victron_updates", "victron_disconnects", "decode_errors", "checksum_errors",
            "tag_failures", "decrypt_failures", "unknown_layouts", "timeouts", "transport_errors", "output_errors")
    return ", ".join(f"{k} {c[k]}" for k in keys if c.get(k)) or "no data yet"


def _status_line(pipe: Pipeline, stats: Statistics) -> None:
    parts = [f"meter {pipe.health.state}"]
    for out in pipe.outputs:
        st = out.status()
        if out.name == "victron":
            parts.append(f"service {st.get('service') or '(not registered)'}, instance {st.get('device_instance')}")
        elif out.name == "mqtt":
            parts.append(f"mqtt {'connected' if st.get('connected') else 'not connected'} to {st.get('broker')}")
    LOG.info("status: %s; %s", ", ".join(parts), _summary(stats))


__all__ = ["run", "describe_start", "build_source", "build_outputs", "LogOutput"]
