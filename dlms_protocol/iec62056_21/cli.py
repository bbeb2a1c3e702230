"""CLI for IEC 62056-21 optical readout: ``read``, ``parse`` and ``demo``.

``read`` talks to a meter through an IR head (or ``socket://`` / ``rfc2217://``), ``parse``
reads a captured readout file offline, ``demo`` reads a simulated meter on a real
pseudo-terminal so that a new user sees the whole dialogue work before touching hardware.
``--items`` turns what a meter sends into a SmartHomeNG ``items.yaml`` snippet.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from typing import Callable, Dict, Optional, TextIO

from ..config import ReadoutConfig
from ..errors import ChecksumError, DlmsError
from .datablock import MAX_READOUT, Readout, parse_readout, reading_value

#: a readout shown on a terminal is cut to this width per column
_VALUE_WIDTH = 28
#: value group C of abstract objects (identifiers, clock, status, errors, profiles): digits, but no
#: quantity, so their items are str (a num item would drop the leading zeros of a serial number)


def register(sub) -> None:  # noqa: ANN001 - argparse's private subparsers type
    """Add ``read``, ``parse`` and ``demo``."""
    p = sub.add_parser("read", help="read a meter through an optical IR head (IEC 62056-21 / D0)",
                       description="Sign on to a meter (modes A, B, C, E) or listen to a push-only D0 meter, "
                                   "and print what it sends.")
    p.add_argument("port", help="serial port (/dev/serial/by-id/..., /dev/ttyUSB0) or socket://host:port")
    p.add_argument("--baudrate", default="auto",
                   help="'auto' follows the meter's offer; a number is the highest rate to use "
                        "(300 keeps the whole readout at 300 Bd). Default: auto")
    p.add_argument("--no-checksum", action="store_true", help="accept a readout whose BCC does not match")
    p.add_argument("--address", default="", help="device address for /?<address>! (usually empty)")
    p.add_argument("--query-code", default="?", help="character after '/' in the sign-on, e.g. 2 for /2! (default ?)")
    p.add_argument("--wakeup", action="store_true", help="send the NUL wake-up first (battery meters)")
    p.add_argument("--push", action="store_true", help="push-only meter (EasyMeter, eBZ, EMH): just listen")
    p.add_argument("--push-baudrate", type=int, default=9600, help="line rate of a push-only meter (default 9600)")
    p.add_argument("--timeout", type=float, default=1.5,
                   help="per-character time-out in seconds (ta, default 1.5)")
    p.add_argument("--switch-delay", type=float, default=0.3,
                   help="seconds from handing over the ACK to the baud switch (default 0.3)")
    p.add_argument("--retries", type=int, default=1, help="further attempts, each at the next lower rate (default 1)")
    p.add_argument("--no-waiting", action="store_true", help="skip the optional waits (reaction-time rest)")
    p.add_argument("--json", action="store_true", help="print the readout as JSON")
    p.add_argument("--items", action="store_true", help="print a SmartHomeNG items.yaml snippet for every code")
    # for simulated meters that run faster than real time (python -m dlms_protocol simulate --time-scale)
    p.add_argument("--time-scale", type=float, default=1.0, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_read)

    p = sub.add_parser("parse", help="parse a captured D0 readout file offline",
                       description="Parse the exact bytes of a readout (identification, data block, BCC).")
    p.add_argument("file", help="file with the raw bytes of a readout or push telegram")
    p.add_argument("--no-checksum", action="store_true", help="accept a readout whose BCC does not match")
    p.add_argument("--json", action="store_true", help="print Readout.to_json()")
    p.add_argument("--items", action="store_true", help="print a SmartHomeNG items.yaml snippet for every code")
    p.set_defaults(func=cmd_parse)

    p = sub.add_parser("demo", help="read a simulated meter through a real pseudo-terminal (no hardware needed)",
                       description="Start a simulated meter on a pseudo-terminal and read it like a real one: "
                                   "sign-on at 300 Bd, identification, ACK, switch to 9600 Bd, data, BCC.")
    p.add_argument("--meter", default=None, help="built-in meter name or a captured readout file")
    p.add_argument("--fast", action="store_true", help="run the meter ten times faster than real time")
    p.add_argument("--json", action="store_true", help="print the readout as JSON")
    p.add_argument("--items", action="store_true", help="print a SmartHomeNG items.yaml snippet instead of the table")
    p.add_argument("--sml", action="store_true", help="an SML meter (German INFO interface) instead, found by detect")
    p.set_defaults(func=cmd_demo)


# ------------------------------------------------------------------------------ output
def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def describe_identification(readout: Readout, push: bool = False) -> str:
    ident = readout.identification
    if ident is None:
        return "no identification line"
    if push:
        return f"{ident.raw}  (manufacturer {ident.manufacturer}, push-only telegram)"
    rate = f"offers {ident.baudrate} Bd" if ident.mode in ("B", "C", "E") else "300 Bd only"
    extra = f", enhanced \\{ident.enhanced}" if ident.enhanced else ""
    return (f"{ident.raw}  (manufacturer {ident.manufacturer}, mode {ident.mode}, {rate}, "
            f"reaction time {int(ident.reaction_time * 1000)} ms{extra})")


def print_table(readout: Readout, out: Optional[TextIO] = None) -> None:
    """code / value / unit / meaning, one line per data set (further value groups in brackets).
    ``out`` defaults to the ``sys.stdout`` of the call, not of the import (a host or test may swap it)."""
    out = sys.stdout if out is None else out
    rows = []
    readings = readout.to_meter_data().readings  # (one per data set: the maker's meanings, as everywhere)
    for ds, reading in zip(readout.datasets, readings):
        shown, _, unit_, _ = reading_value(ds)  # the group the reading's value comes from, first
        value = ds.values[shown].value.strip() if ds.values else ""
        unit = unit_ or ""
        others = [v for i, v in enumerate(ds.values) if i != shown]
        if others:
            value += " " + " ".join(f"({v.value.strip()}{('*' + v.unit) if v.unit else ''})" for v in others)
        name = reading.meaning()
        rows.append((ds.code, _cut(value, _VALUE_WIDTH), unit, name or ""))
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(("code", "value", "unit"))]
    print(f"{'code':<{widths[0]}}  {'value':>{widths[1]}}  {'unit':<{widths[2]}}  meaning", file=out)
    for code, value, unit, name in rows:
        print(f"{code:<{widths[0]}}  {value:>{widths[1]}}  {unit:<{widths[2]}}  {name}".rstrip(), file=out)
    bad = [name for name, state in (("BCC", readout.bcc), ("CRC16", readout.crc)) if state == "bad"]
    why = f"the {' and '.join(bad)} did not match, ignored by --no-checksum" if bad else \
        "the readout carries no checksum"
    checked = readout.checksum or f"none (read unchecked: {why})"
    print(f"{len(rows)} data sets, BCC {readout.bcc}, CRC16 {readout.crc}, checksum verified: {checked}", file=out)
    if readout.skipped:  # (noise, an echo, a damaged set: the table shows only what was read)
        first = ", ".join(repr(text) for text in readout.skipped[:3])
        more = f" and {len(readout.skipped) - 3} more" if len(readout.skipped) > 3 else ""
        print(f"not read ({len(readout.skipped)}): {first}{more}", file=out)


def format_timings(timings: Dict[str, float], nbytes: int, baudrate: int, mode: Optional[str] = None) -> str:
    parts = []
    if "wakeup" in timings:
        parts.append(f"wake-up {timings['wakeup']:.2f} s")
    if "identification" in timings:
        parts.append(f"sign-on -> identification {timings['identification']:.2f} s")
    if "switch" in timings:
        label = {"C": "ACK + switch", "E": "ACK + switch", "B": "switch"}.get(mode or "", "until data")
        parts.append(f"{label} {timings['switch']:.2f} s")
    if "data" in timings:
        parts.append(f"data {timings['data']:.2f} s at {baudrate} Bd")
    parts.append(f"total {timings.get('total', 0.0):.2f} s for {nbytes} bytes")
    return " | ".join(parts)


def _slug(text: str) -> str:
    slug = re.sub(r"[^0-9a-z]+", "_", text.lower()).strip("_")
    return slug or "value"


def items_yaml(readout: Readout, parent: str = "meter") -> str:
    """The SmartHomeNG items.yaml snippet: the core's one generator, so it is the plugin's snippet."""
    from ..items import items_snippet

    ident = readout.identification.raw if readout.identification is not None else "meter"
    return (f"# SmartHomeNG items for {ident}, generated by 'python -m dlms_protocol read --items'\n"
            + items_snippet(readout.to_meter_data(), root=parent).rstrip("\n"))


def _progress_printer(stream: TextIO) -> Callable[[int], None]:
    """Bytes received and rate on one terminal line (only used when stderr is a terminal)."""
    start = time.monotonic()

    def show(nbytes: int) -> None:
        elapsed = max(time.monotonic() - start, 1e-6)
        stream.write(f"\r  received {nbytes} bytes ({nbytes / elapsed:.0f} B/s)   ")
        stream.flush()
    return show


def _emit(readout: Readout, args: argparse.Namespace, extra: Optional[dict] = None) -> None:
    if args.json:
        data = readout.to_json()
        if extra:
            data = dict(data, **extra)
        print(json.dumps(data, indent=2, ensure_ascii=False))
    elif args.items:
        print(items_yaml(readout))
    else:
        print_table(readout)


# ---------------------------------------------------------------------------- commands
def cmd_read(args: argparse.Namespace) -> int:
    from .reader import D0Reader

    config = ReadoutConfig(
        port=args.port, baudrate=args.baudrate, use_checksum=not args.no_checksum,
        device_address=args.address, query_code=args.query_code, wakeup=args.wakeup,
        mode="push" if args.push else "request", push_baudrate=args.push_baudrate,
        timeout=args.timeout, baud_switch_delay=args.switch_delay, retries=args.retries,
        no_waiting=args.no_waiting)
    progress = _progress_printer(sys.stderr) if sys.stderr.isatty() else None
    reader = D0Reader(config, progress=progress, time_scale=args.time_scale)
    try:
        reader.read()
    except ChecksumError as exc:
        print(f"error: {exc}{_anyway(exc)}", file=sys.stderr)
        return 1
    finally:
        reader.close()
        if progress is not None:
            sys.stderr.write("\r" + " " * 60 + "\r")
            sys.stderr.flush()
    result = reader.last_result
    assert result is not None
    readout = result.readout
    mode = readout.identification.mode if readout.identification is not None else None
    timing = format_timings(result.timings, result.bytes_received, result.baudrate, mode)
    if args.json:
        _emit(readout, args, {"timings": result.timings, "baudrate": result.baudrate,
                              "bytes": result.bytes_received})
        return 0
    if not args.items:
        print(f"Meter   {describe_identification(readout, push=args.push)}")
        print()
    _emit(readout, args)
    if not args.items:
        print()
        print(f"Timing  {timing}")
    else:
        print(f"# read in {timing}", file=sys.stderr)
    return 0


def _anyway(exc: DlmsError) -> str:
    """For a BCC/CRC that did not match: how to see the values anyway (unverified, so marked)."""
    if isinstance(exc, ChecksumError) and exc.what in ("BCC", "CRC16"):
        return "; to see the values anyway (unverified), add --no-checksum"
    return ""


def cmd_parse(args: argparse.Namespace) -> int:
    try:
        with open(args.file, "rb") as fh:
            raw = fh.read(MAX_READOUT + 1)  # never more: a 50 MB file is no readout and must not fill memory
    except OSError as exc:
        print(f"error: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if len(raw) > MAX_READOUT:
        print(f"error: {args.file}: more than {MAX_READOUT} bytes: not one readout or telegram "
              "(cut one out of the capture)", file=sys.stderr)
        return 1
    try:
        readout = parse_readout(raw, use_checksum=not args.no_checksum)
    except DlmsError as exc:
        print(f"error: {args.file}: {' '.join(str(exc).split())}{_anyway(exc)}", file=sys.stderr)
        return 1
    if not args.json and not args.items:
        print(f"Meter   {describe_identification(readout)}")
        print()
    _emit(readout, args)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ..simulator.d0 import SimulatedMeter
    from .reader import D0Reader

    if getattr(args, "sml", False):
        from ..sml.cli import demo_sml

        return demo_sml(args)
    scale = 10.0 if args.fast else 1.0
    # Ten times faster, the ACK is on the wire for 20 ms and the reader switches 30 ms after it;
    # a meter that answers 60 ms after the ACK leaves room for a busy machine.
    meter = SimulatedMeter(args.meter, time_scale=scale, ack_reaction_time=0.6 if args.fast else None)
    quiet = args.json or args.items
    say = (lambda *a: print(*a, file=sys.stderr)) if quiet else print
    say("dlms demo: reading a simulated meter through a real pseudo-terminal, with real IEC 62056-21 timing"
        + (" (10x faster)" if args.fast else ""))
    say(f"  meter:  {meter.describe()}")
    if meter.image.description:
        say(f"          {meter.image.description}")
    with meter:
        say(f"  port:   {meter.port} (opened with pyserial like /dev/ttyUSB0)")
        if meter.mode == "push":
            say("  dialogue: listen for the next telegram ...")
        else:
            say("  dialogue: sign-on /?! at 300 Bd -> identification -> ACK -> "
                "baud switch -> data message -> BCC check ...")
        say("")
        config = ReadoutConfig(port=meter.port, mode="push" if meter.mode == "push" else "request",
                               push_baudrate=meter.push_baudrate, wakeup=meter.wakeup,
                               baud_switch_delay=0.3 / scale)
        reader = D0Reader(config, time_scale=scale)
        try:
            reader.read()
        finally:
            reader.close()
    result = reader.last_result
    assert result is not None
    readout = result.readout
    mode = readout.identification.mode if readout.identification is not None else None
    timing = format_timings(result.timings, result.bytes_received, result.baudrate, mode)
    if quiet:
        _emit(readout, args, {"timings": result.timings} if args.json else None)
        return 0
    print(f"Meter   {describe_identification(readout, push=meter.mode == 'push')}")
    print()
    print_table(readout)
    print()
    print(f"Timing  {timing}")
    print()
    print("Next: python -m dlms_protocol read /dev/serial/by-id/<your IR head>   "
          "(--items prints a SmartHomeNG items.yaml snippet)")
    return 0


__all__ = ["register", "cmd_read", "cmd_parse", "cmd_demo", "items_yaml", "print_table"]
