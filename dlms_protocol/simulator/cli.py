"""CLI ``simulate``: run a simulated meter on a pseudo-terminal until Ctrl-C.

Point any reader at the printed port: this package's ``read``, the SmartHomeNG plugin, or a
peer tool, to try configurations without standing in front of a meter.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time

log = logging.getLogger(__name__)


def register(sub) -> None:  # noqa: ANN001 - argparse's private subparsers type
    """Add ``simulate`` (the DLMS meter simulator registers ``simulate-dlms`` in dlms_cli.py)."""
    p = sub.add_parser("simulate", help="run a simulated D0 meter on a pseudo-terminal",
                       description="Start a simulated IEC 62056-21 meter on a pseudo-terminal, print its port "
                                   "path and serve readouts until Ctrl-C.")
    p.add_argument("--meter", default=None,
                   help="built-in meter name (see --list) or the path of a captured readout to replay")
    p.add_argument("--list", action="store_true", help="list the built-in meters and exit")
    p.add_argument("--mode", choices=["A", "B", "C", "E", "push"], default=None,
                   help="protocol mode (default: what the meter's identification says)")
    p.add_argument("--baud", type=int, default=None, help="highest rate the meter offers (push: line rate)")
    p.add_argument("--echo", action="store_true", help="echo every byte back, like many half-duplex IR heads")
    p.add_argument("--wakeup", action="store_true", help="battery meter: ignore sign-ons without NUL wake-up")
    p.add_argument("--address", default=None, help="device address the meter answers to")
    p.add_argument("--query-code", default=None, help="sign-on character it answers to (default ?)")
    p.add_argument("--reaction-time", type=float, default=0.2, help="seconds before it answers (default 0.2)")
    p.add_argument("--time-scale", type=float, default=1.0, help="run this many times faster than real time")
    p.add_argument("--noise", action="store_true", help="send line noise (0x7F x5) before the identification")
    p.add_argument("--keep-bytes", action="store_true",
                   help="replay a capture's data message byte for byte (its own BCC) instead of re-framing it")
    p.add_argument("--corrupt-at", type=int, default=None, help="flip one bit of the data message at this index")
    p.add_argument("--interval", type=float, default=1.0, help="push mode: seconds between telegrams")
    p.add_argument("--no-parity-bit", action="store_true",
                   help="send bare 7-bit bytes (for tools that open the pty as 7E1; by default the line "
                        "carries real even-parity bits, as a UART would)")
    p.set_defaults(func=cmd_simulate)


def cmd_simulate(args: argparse.Namespace) -> int:
    from .d0 import SimulatedMeter
    from .meters import load_meter, sample_meters
    from .pty import stop_on_terminate

    stop_on_terminate()

    if args.list:
        for name in sample_meters():
            image = load_meter(name)
            print(f"{name:<18} {image.identification:<22} mode {image.mode:<4} {image.description}")
        return 0
    meter = SimulatedMeter(
        args.meter, mode=args.mode, baudrate=args.baud, reaction_time=args.reaction_time,
        time_scale=args.time_scale, echo=args.echo, noise=b"\x7f" * 5 if args.noise else b"",
        wakeup=True if args.wakeup else None, address=args.address, query_code=args.query_code,
        keep_bytes=args.keep_bytes, corrupt_at=args.corrupt_at, push_interval=args.interval,
        parity_bit=not args.no_parity_bit)
    with meter:
        print(f"simulated meter: {meter.describe()}")
        print(f"port: {meter.port}")
        print(f"try:  python -m dlms_protocol read {meter.port}" + (" --push" if meter.mode == "push" else ""))
        print("Ctrl-C stops it.", flush=True)
        seen = 0
        try:
            while True:
                time.sleep(0.2)
                events = meter.events
                for _, name, detail in events[seen:]:
                    if name not in ("telegram",) or args.verbose:
                        print(f"  {name} {detail}".rstrip(), file=sys.stderr, flush=True)
                seen = len(events)
        except KeyboardInterrupt:
            # Stop first: a session whose last character just went out counts once its thread ends.
            meter.stop()
            print(f"\nstopped after {meter.readouts} readout(s)")
    return 0


__all__ = ["register", "cmd_simulate"]
