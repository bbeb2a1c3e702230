"""Command line: ``python -m dlms_protocol <command>``.

Each area registers its own subcommands (``register(subparsers)`` in the modules listed in
``COMMAND_MODULES``), so the readout, push and Victron parts stay independent. print() is
allowed here and in those command modules only: this is the user's terminal.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import List, Optional

from . import __version__
from .errors import DlmsError

#: modules (relative to this package) that add subcommands through register(subparsers)
COMMAND_MODULES = (
    "iec62056_21.cli", "dlms.cli", "dlms.profile_cli", "simulator.cli", "victron.cli", "poll.cli",
    "detect.cli", "serve",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dlms_protocol",
        description="Read smart meters: IEC 62056-21 optical readout and DLMS/COSEM push.",
    )
    parser.add_argument("--version", action="version", version=f"dlms_protocol {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more (-v info, -vv debug with protocol traces)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f".{name}", __package__)
        module.register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except DlmsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `demo | head`: the reader went away, not an error of ours
        try:
            sys.stdout = open(os.devnull, "w")  # keep the interpreter's final flush quiet
        except OSError:
            pass
        return 0


__all__ = ["main", "build_parser"]
