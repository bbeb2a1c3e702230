"""Command line: ``python -m dlms_protocol <command>``.

Each area registers its own subcommands (``register(subparsers)`` in the modules listed in
``COMMAND_MODULES``), so the readout, push and Victron parts stay independent. print() is
allowed here and in those command modules only: this is the user's terminal.
"""
from __future__ import annotations

import argparse
import gc
import importlib
import logging
import math
import os
import re
import sys
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, NoReturn, Optional, Tuple

from . import __version__
from .errors import DlmsError

#: each command and the module (relative to this package) whose register(subparsers) adds it. A run
#: imports only its command's module: the Victron service on a GX does not load the readout, the
#: simulators or gurux (memory, start-up time); help without a command loads them all.
COMMANDS: Dict[str, str] = {
    "read": "iec62056_21.cli", "parse": "iec62056_21.cli", "demo": "iec62056_21.cli",
    "listen": "dlms.cli", "decode": "dlms.cli", "simulate-push": "dlms.cli",
    "profiles": "dlms.profile_cli", "dump": "dlms.profile_cli",
    "simulate": "simulator.cli", "simulate-dlms": "simulator.dlms_cli",
    "victron": "victron.cli", "poll": "poll.cli", "detect": "detect.cli", "serve": "serve_cli",
}
COMMAND_MODULES = tuple(dict.fromkeys(COMMANDS.values()))


_HEX_WORD = re.compile(r"(?:0[xX])?[0-9A-Fa-f]+(?:[:_-][0-9A-Fa-f]+)*")
_TOKENS = re.compile(r"(\s+|=)")
_PUNCT = "'\",.()[]{}"
#: hex digits in a row (one word, or several words one after another) from which on they are
#: taken for a key and never shown
SECRET_DIGITS = 8


def _hex_digits(token: str) -> int:
    core = token.strip(_PUNCT)
    if not core or not _HEX_WORD.fullmatch(core):
        return 0
    core = core[2:] if core[:2].lower() == "0x" else core
    return sum(ch in "0123456789abcdefABCDEF" for ch in core)


def redact_secrets(message: str) -> str:
    """Replace what looks like key material in ``message`` with ``[redacted]``.

    A key pasted unquoted (``--key 00 11 22 ...``) or after a misspelt option (``--kye KEY``)
    ends up in argparse's "unrecognized arguments" or "invalid value" errors: every run of
    hex-looking words with SECRET_DIGITS or more hex digits in all is taken out.
    """
    parts = _TOKENS.split(message)
    out: List[str] = []
    i = 0
    while i < len(parts):
        if not _hex_digits(parts[i]):  # a run starts with a hex word, never with a separator
            out.append(parts[i])
            i += 1
            continue
        j, digits, last = i, 0, i
        while j < len(parts):  # a run of hex words (separators in between)
            if _TOKENS.fullmatch(parts[j]) or parts[j] == "":
                j += 1
                continue
            d = _hex_digits(parts[j])
            if not d:
                break
            digits += d
            last = j
            j += 1
        if digits >= SECRET_DIGITS:
            first = parts[i]
            lead = first[:len(first) - len(first.lstrip(_PUNCT))]
            end = parts[last]
            out.append(lead + "[redacted]" + end[len(end.rstrip(_PUNCT)):])
            i = last + 1
        else:
            out.append(parts[i])
            i += 1
    return "".join(out)


def _columns() -> int:
    """``shutil.get_terminal_size().columns`` without importing shutil (and with it bz2, lzma and
    fnmatch): argparse's formatter asks for the width for every option a parser adds."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, with the width from ``_columns`` (start-up time of every command)."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: Optional[int] = None, **more: Any) -> None:
        super().__init__(prog, indent_increment, max_help_position, _columns() - 2 if width is None else width,
                         **more)


class RedactingParser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors never echo key material (subparsers inherit the class)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        super().error(redact_secrets(message))


#: CLI options (argparse ``dest``) and their ranges: (low, high, whole, low excluded). A NaN,
#: an infinity, 0 where it hangs or divides, or a negative time is a usage error, not a traceback.
CLI_RANGES: Dict[str, Tuple[float, float, bool, bool]] = {
    "timeout": (0, 600, False, True),
    "time_scale": (0, 1000, False, True),
    "push_baudrate": (300, 921600, True, False),
    "baud": (300, 921600, True, False),
    "switch_delay": (0, 10, False, False),
    "retries": (0, 10, True, False),
    "min_interval": (0, 86400, False, False),
    "interval": (0, 86400, False, True),
    "reaction_time": (0, 60, False, False),
    "corrupt_at": (0, 1 << 20, True, False),
    "error_delay": (0, 3600, False, False),
    "hang": (0, 3600, False, True),
}


def check_ranges(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage error (exit 2) for any number out of range; a numeric ``baudrate`` must be a line speed."""
    for dest, (low, high, whole, low_open) in CLI_RANGES.items():
        value = getattr(args, dest, None)
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        bad = not math.isfinite(value) or value < low or value > high or (low_open and value == low) \
            or (whole and not float(value).is_integer())
        if bad:
            lowest = f"more than {low:g}" if low_open else f"at least {low:g}"
            parser.error(f"--{dest.replace('_', '-')} {value!r}: use a number {lowest} and at most {high:g}")
    baud = getattr(args, "baudrate", None)
    if isinstance(baud, int) and not isinstance(baud, bool) and not 300 <= baud <= 921600:
        parser.error(f"--baudrate {baud}: use a line speed from 300 to 921600 (baud 0 hangs up a serial line)")
    template = getattr(args, "template", None)
    if isinstance(template, str) and template:
        _check_output_path(parser, "--template", template)


def _check_output_path(parser: argparse.ArgumentParser, option: str, text: str) -> None:
    from pathlib import Path  # only for commands with --template: not at start-up

    path = Path(text)
    if path.is_dir():
        parser.error(f"{option} {text}: is a directory; name a file such as {path / 'my_meter.json'}")
    if not path.parent.is_dir() if str(path.parent) else False:
        parser.error(f"{option} {text}: the folder {path.parent} does not exist")


def _command_of(argv: Optional[List[str]]) -> Optional[str]:
    """The command named on the command line (the first word that is no top-level option)."""
    for word in argv or ():
        if word == "--":
            return None
        if not word.startswith("-"):
            return word
    return None


def build_parser(argv: Optional[List[str]] = None) -> argparse.ArgumentParser:
    """The parser for ``argv``'s command alone, or for all commands (help, a misspelt command)."""
    parser = RedactingParser(
        prog="python -m dlms_protocol",
        description="Read smart meters: IEC 62056-21 optical readout and DLMS/COSEM push.",
    )
    parser.add_argument("--version", action="version", version=f"dlms_protocol {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more (-v info, -vv debug with protocol traces)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    command = _command_of(argv)
    for name in (COMMANDS[command],) if command in COMMANDS else COMMAND_MODULES:
        module = importlib.import_module(f".{name}", __package__)
        module.register(sub)
    return parser


#: set by ``__main__`` (our own process, where it paused the collector): ``loading`` may pause it
#: and resumes it; False inside a host program or a test, where ``loading`` does nothing
RESUME_GC = False


@contextmanager
def loading() -> Iterator[None]:
    """Start-up (imports, parsers, profile tables): the cyclic GC paused, then what was loaded frozen.

    Start-up makes objects that live as long as the process, not cyclic garbage; collecting
    meanwhile only traversed them again and again, and every later collection of a run
    traversed them once more. ``gc.freeze`` moves them out of the collector's sight: one-frame
    ``decode`` 7 ms, 3000 frames 20 ms less CPU. Only in our own process (``RESUME_GC``).
    """
    if not RESUME_GC:
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def main(argv: Optional[List[str]] = None) -> int:
    with loading():  # __main__ paused the collector before the first import
        parser = build_parser(sys.argv[1:] if argv is None else argv)
        args = parser.parse_args(argv)
    check_ranges(_subparser(parser, args), args)
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
        from .cli_output import quiet_stdout

        quiet_stdout()  # keep the interpreter's final flush quiet
        return 0
    except OSError as exc:  # a file the user named cannot be written or read
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"error:{where}: {exc.strerror or exc}", file=sys.stderr)
        return 1


def _subparser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The subcommand's parser, so that a usage error shows that command's usage."""
    command = getattr(args, "command", None)
    for action in parser._actions:  # argparse keeps its subparsers here
        choices: Any = getattr(action, "choices", None)
        if isinstance(action, argparse._SubParsersAction) and command in (choices or {}):
            return choices[command]
    return parser


__all__ = ["main", "build_parser", "COMMANDS", "redact_secrets", "RedactingParser", "check_ranges", "CLI_RANGES"]
