"""``python -m dlms_protocol serve --config FILE``: load, check (and show), then run the service.

The service itself (source, outputs, one pipeline) is ``serve``; this module is its terminal
side, so print() stays in command modules.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from typing import Any, List, Tuple

from .errors import ConfigurationError, SecurityError
from .pipeline import make_output
from .serve import run

def register(sub) -> None:  # noqa: ANN001 - argparse's private subparsers type
    """Add the ``serve`` subcommand."""
    p = sub.add_parser(
        "serve", help="run one meter with its outputs (Victron D-Bus, MQTT ...) from an INI file",
        description="Read one meter ([meter]: DLMS push listener, IEC 62056-21 readout or DLMS polling) and "
                    "publish every verified reading to the outputs the file names ([victron], [mqtt] ...). "
                    "Stops on SIGTERM/Ctrl-C. 'victron --config FILE' is the same with the D-Bus output always on.")
    add_service_arguments(p)
    p.set_defaults(func=cmd_serve, victron_always=False)


def add_service_arguments(p: argparse.ArgumentParser) -> None:
    """The options ``serve`` and ``victron`` share (one service, two names)."""
    p.add_argument("--config", required=True, metavar="FILE", help="INI file or dbus-dlms-meter config.py")
    p.add_argument("--check-config", action="store_true", help="read and check FILE, show the effective settings")
    p.add_argument("--error-delay", type=float, default=0.0, metavar="S",
                   help="wait S seconds before exiting on a configuration error (keeps a supervisor "
                        "from restarting a broken setup every second; the Venus run script uses 30)")


def setup_logging(level: str, verbose: int) -> None:
    """Use the file's level unless -v asked for more; no timestamps when multilog adds them."""
    root = logging.getLogger()
    wanted = getattr(logging, level.upper(), logging.INFO)
    if verbose:
        wanted = min(wanted, logging.INFO if verbose == 1 else logging.DEBUG)
    root.setLevel(wanted)
    if not sys.stderr.isatty():
        for handler in root.handlers:
            handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))


def cmd_serve(args: argparse.Namespace) -> int:
    """``serve`` and ``victron``: load, check (and show), then run until a signal."""
    from .victron.config_file import load_config

    try:
        cfg = load_config(args.config, victron=True if args.victron_always else None)
        if not cfg.victron and not cfg.outputs:
            from .pipeline import OUTPUTS
            raise ConfigurationError(f"{args.config} names no output",
                                     "add a section for one: " + ", ".join(f"[{k}]" for k in sorted(OUTPUTS)))
    except ConfigurationError as exc:
        return _config_error(args, exc)
    if args.check_config:
        try:  # the further outputs' factories check their options ([mqtt] port, qos ...); nothing connects
            for kind, options in sorted(cfg.outputs.items()):
                make_output(kind, **options)
        except ConfigurationError as exc:
            return _config_error(args, exc)
        return _show(args.config, cfg)
    _skip_openssl(cfg)
    setup_logging(cfg.log_level, int(getattr(args, "verbose", 0) or 0))
    for note in cfg.notes:  # after the level is set, so they reach the service log
        logging.getLogger("dlms_protocol.victron").info("config: %s", note)
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        logging.getLogger(__name__).info("signal %d: stopping", signum)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        code = run(cfg, stop)
    except ConfigurationError as exc:  # an output's options (mapping file, [mqtt] keys): nothing started
        return _config_error(args, exc)
    if code and args.error_delay > 0 and not stop.is_set():
        stop.wait(args.error_delay)  # a supervisor would otherwise restart a hopeless setup every second
    return code


def _skip_openssl(cfg: Any) -> None:
    """A service with no output that speaks TLS (Victron alone) does not load OpenSSL at all.

    asyncio imports ``ssl`` and dbus-fast ``hashlib`` only in case they are needed, and both fall
    back cleanly when OpenSSL's module is missing (no TLS transports; hashlib's built-in SHA-2).
    OpenSSL is 6-9 MB of the service's memory, a third of a GX driver's budget. Deciphering
    (``dlms/gcm.py``) loads libcrypto alone, without these modules' set-up, on the first
    enciphered frame, and cryptography has its own binding: neither is affected. Done only when
    this process is our own ``python -m dlms_protocol`` and nothing has loaded them yet, never
    inside a host program.
    """
    main = getattr(sys.modules.get("__main__"), "__spec__", None)
    if cfg.outputs or getattr(main, "name", None) != f"{__package__}.__main__":
        return
    for name in ("ssl", "_hashlib"):  # not _ssl: cryptography 2.8 (Venus OS 3.0x-3.5x) imports it
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]  # the documented way to block an import


def _config_error(args: argparse.Namespace, exc: ConfigurationError) -> int:
    print(f"error: {exc}", file=sys.stderr, flush=True)
    if args.error_delay > 0 and not args.check_config:
        time.sleep(args.error_delay)
    return 2


def _show(path: str, cfg: Any) -> int:
    print(f"{path}: OK")
    rows = cfg.describe() + _aes_engine(cfg)
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    for note in cfg.notes:
        print(f"  note: {note}")
    return 0


def _aes_engine(cfg: Any) -> List[Tuple[str, str]]:
    """For a push meter with a key: which library will decipher, known before any frame arrives."""
    listener = getattr(cfg, "listener", None)
    if listener is None or not listener.key:
        return []
    from .dlms import gcm
    try:
        return [("aes_gcm", gcm.engine().name)]
    except SecurityError as exc:  # the service would refuse every encrypted push: said here already
        return [("aes_gcm", f"none usable: {exc}")]


__all__ = ["register", "add_service_arguments", "cmd_serve", "setup_logging"]
