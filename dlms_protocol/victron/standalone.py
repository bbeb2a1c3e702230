"""The standalone Venus OS service: one meter (push listener or readout loop) plus the bridge.

Runs in the foreground until SIGTERM/SIGINT (daemontools' ``svc -d`` sends TERM), logs to
stderr (daemontools' multilog adds the timestamps), and exits non-zero on errors no restart can
fix (bad configuration) so they are visible in ``svstat`` and the log.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Optional

from .. import __version__
from ..errors import DlmsError, TransportError
from ..model import Statistics
from .bridge import VictronBridge
from .config_file import StandaloneConfig

LOG = logging.getLogger(__name__)

STATUS_EVERY = 900.0  # seconds between status lines in the log


class _RateLimited:
    """Log the first error of a kind at WARNING, repeats at DEBUG with a count every minute."""

    def __init__(self) -> None:
        self.last: dict = {}

    def __call__(self, exc: DlmsError) -> None:
        kind = type(exc).__name__
        now = time.monotonic()
        seen, count = self.last.get(kind, (0.0, 0))
        if now - seen >= 60.0:
            extra = f" ({count} more since the last report)" if count else ""
            LOG.warning("%s%s", exc, extra)
            self.last[kind] = (now, 0)
        else:
            self.last[kind] = (seen, count + 1)
            LOG.debug("%s", exc)


def describe_start(cfg: StandaloneConfig) -> str:
    if cfg.listener is not None:
        lc = cfg.listener
        what = (f"DLMS push on {lc.port} {lc.baudrate} {lc.bytesize}{lc.parity}{lc.stopbits}, "
                f"key {'set' if lc.key else 'not set'}, profile {lc.profile or 'auto'}")
    else:
        rc = cfg.readout
        assert rc is not None
        what = f"IEC 62056-21 readout on {rc.port} every {cfg.interval:g} s (baudrate {rc.baudrate})"
    b = cfg.bridge
    return f"dlms_protocol {__version__}: {what}; D-Bus {b.bus}, role {b.role}, time-out {b.timeout:g} s"


def run(cfg: StandaloneConfig, stop: threading.Event, stats: Optional[Statistics] = None) -> int:
    """Run until ``stop`` is set; returns the exit code."""
    stats = stats if stats is not None else Statistics()
    LOG.info("%s", describe_start(cfg))
    bridge = VictronBridge(cfg.bridge, stats)
    bridge.start()
    report = _RateLimited()
    code = 0
    try:
        if cfg.listener is not None:
            code = _run_push(cfg, bridge, stats, stop, report)
        else:
            code = _run_readout(cfg, bridge, stats, stop, report)
    finally:
        bridge.stop(3.0)
        LOG.info("stopped; %s", _summary(stats))
    return code


def _summary(stats: Statistics) -> str:
    c = stats.snapshot()["counters"]
    keys = ("messages", "reads", "victron_updates", "victron_disconnects", "decode_errors", "checksum_errors",
            "tag_failures", "decrypt_failures", "unknown_layouts", "timeouts", "transport_errors")
    return ", ".join(f"{k} {c[k]}" for k in keys if c.get(k)) or "no data yet"


def _status_line(bridge: VictronBridge, stats: Statistics) -> None:
    st = bridge.status()
    LOG.info("status: service %s, instance %s, meter %s; %s", st.get("service") or "(not registered)",
             st.get("device_instance"), "connected" if st.get("meter_connected") else "silent", _summary(stats))


def _run_push(cfg: StandaloneConfig, bridge: VictronBridge, stats: Statistics, stop: threading.Event,
              report: _RateLimited) -> int:
    from ..dlms.listener import PushListener

    assert cfg.listener is not None
    listener = PushListener(cfg.listener, bridge.publish, stats, on_error=report)
    listener.start()
    next_status = time.monotonic() + STATUS_EVERY
    try:
        while not stop.wait(5.0):  # signals end the wait at once; 5 s keeps the idle cost tiny
            if not listener.running:
                LOG.error("the push listener ended (see the error above); exiting so the supervisor restarts")
                return 1
            if time.monotonic() >= next_status:
                _status_line(bridge, stats)
                next_status += STATUS_EVERY
    finally:
        listener.stop(3.0)
    return 0


def _run_readout(cfg: StandaloneConfig, bridge: VictronBridge, stats: Statistics, stop: threading.Event,
                 report: _RateLimited) -> int:
    from ..iec62056_21.reader import D0Reader

    assert cfg.readout is not None
    reader = D0Reader(cfg.readout, stats)
    continuous = cfg.readout.mode == "push"
    next_status = time.monotonic() + STATUS_EVERY
    closer = threading.Thread(target=lambda: reader.close() if stop.wait() else None, name="readout-closer",
                              daemon=True)
    closer.start()
    backoff = 1.0
    try:
        while not stop.is_set():
            started = time.monotonic()
            try:
                data = reader.read()
            except DlmsError as exc:
                if stop.is_set():
                    break
                report(exc)
                if isinstance(exc, TransportError):
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 30.0)
                    continue
            else:
                backoff = 1.0
                bridge.publish(data)
            if time.monotonic() >= next_status:
                _status_line(bridge, stats)
                next_status += STATUS_EVERY
            if not continuous:
                stop.wait(max(0.0, cfg.interval - (time.monotonic() - started)))
    finally:
        reader.close()
    return 0


__all__ = ["run", "describe_start"]
