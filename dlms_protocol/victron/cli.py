"""CLI: ``victron --config FILE`` runs the Venus OS grid-meter service; ``--check-config`` only checks."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from typing import Any

from ..errors import ConfigurationError


def register(sub) -> None:  # noqa: ANN001 - argparse's private subparsers type
    """Add the ``victron`` subcommand."""
    p = sub.add_parser(
        "victron", help="publish a meter as a Victron grid meter on D-Bus (Venus OS service)",
        description="Read one meter (DLMS push listener or IEC 62056-21 readout) and publish it as "
                    "com.victronenergy.grid.<suffix> on D-Bus. The config file is our INI format "
                    "(venus/dlms-meter.ini.example) or dbus-dlms-meter's config.py. Stops on SIGTERM/Ctrl-C.")
    p.add_argument("--config", required=True, metavar="FILE", help="INI file or dbus-dlms-meter config.py")
    p.add_argument("--check-config", action="store_true", help="read and check FILE, print the settings, exit")
    p.add_argument("--error-delay", type=float, default=0.0, metavar="S",
                   help="wait S seconds before exiting on a configuration error (keeps a supervisor "
                        "from restarting a broken setup every second; the Venus run script uses 30)")
    p.set_defaults(func=cmd_victron)


def _setup_logging(level: str, verbose: int) -> None:
    """Use the file's level unless -v asked for more; no timestamps when multilog adds them."""
    root = logging.getLogger()
    wanted = getattr(logging, level.upper(), logging.INFO)
    if verbose:
        wanted = min(wanted, logging.INFO if verbose == 1 else logging.DEBUG)
    root.setLevel(wanted)
    if not sys.stderr.isatty():
        for handler in root.handlers:
            handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))


def cmd_victron(args: argparse.Namespace) -> int:
    from .config_file import load_config

    try:
        cfg = load_config(args.config)
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        if args.error_delay > 0 and not args.check_config:
            time.sleep(args.error_delay)
        return 2
    if args.check_config:
        print(f"{args.config}: OK")
        width = max(len(k) for k, _ in cfg.describe())
        for key, value in cfg.describe():
            print(f"  {key:<{width}}  {value}")
        for note in cfg.notes:
            print(f"  note: {note}")
        return 0
    _setup_logging(cfg.log_level, int(getattr(args, "verbose", 0) or 0))
    for note in cfg.notes:  # after the level is set, so they reach the service log
        logging.getLogger("dlms_protocol.victron").info("config: %s", note)
    from .standalone import run

    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        logging.getLogger(__name__).info("signal %d: stopping", signum)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    code = run(cfg, stop)
    if code and args.error_delay > 0 and not stop.is_set():
        stop.wait(args.error_delay)  # a supervisor would otherwise restart a hopeless setup every second
    return code


__all__ = ["register", "cmd_victron"]
