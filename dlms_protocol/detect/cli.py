"""CLI ``detect PORT``: find protocol, speed, format and encryption, print a ready configuration.

print() is allowed here: this is the user's terminal. Progress goes to stderr, the result to
stdout (so ``detect PORT > dlms.txt`` keeps only the result).
"""
from __future__ import annotations

import argparse
import sys


def register(sub) -> None:  # noqa: ANN001 - argparse's private subparsers type
    p = sub.add_parser("detect", help="find out what a meter on PORT sends (protocol, speed, format, encryption)",
                       description="Listen at the usual speeds and formats (SML, DLMS push, push-only D0), then "
                                   "sign on at 300 Bd 7E1 (IEC 62056-21); print what answered and a ready "
                                   "plugin.yaml block with the matching items. Stop other programs on the port first.")
    p.add_argument("port", help="serial device (/dev/serial/by-id/...) or socket://host:port")
    p.add_argument("--total", type=float, default=120.0, metavar="S", help="give up after S seconds (default 120)")
    p.add_argument("--listen", type=float, default=3.0, metavar="S",
                   help="seconds per speed/format while nothing arrives (default 3)")
    p.add_argument("--dwell", type=float, default=12.0, metavar="S",
                   help="seconds per speed/format once bytes arrive (longest push period; default 12)")
    p.add_argument("--no-sign-on", action="store_true", help="only listen; never send the IEC 62056-21 sign-on")
    p.add_argument("--key", metavar="HEX", help="DLMS key (GUEK), to decode encrypted pushes")
    p.add_argument("--auth-key", metavar="HEX", help="DLMS authentication key (GAK)")
    p.add_argument("--instance", default="", help="plugin instance name for the printed configuration")
    p.add_argument("--time-scale", type=float, default=1.0, help=argparse.SUPPRESS)  # simulated meters in tests
    p.set_defaults(func=cmd_detect)


def cmd_detect(args: argparse.Namespace) -> int:
    from ..config import parse_key
    from .probe import Detector
    from .report import report

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    detector = Detector(args.port, listen=args.listen, dwell=args.dwell, total=args.total,
                        sign_on=not args.no_sign_on, progress=progress,
                        reader_options={"time_scale": args.time_scale} if args.time_scale != 1.0 else None,
                        key=parse_key(args.key, "key"), auth_key=parse_key(args.auth_key, "auth_key"))
    finding = detector.run()
    for line in report(finding, detector.seen, args.instance):
        print(line)
    if finding is None and detector.silent:
        # a push meter that sends once a minute (Czech HAN meters) is silent in most windows
        longer = max(65.0, args.listen * 2)
        where = "" if detector.remote else f" at {', '.join(detector.silent)}"  # (a server sets a remote port's)
        print(f"nothing arrived{where} within {args.listen:g} s each: a meter that "
              f"pushes only now and then (Czech HAN meters every 60 s) needs longer windows: run "
              f"`python -m dlms_protocol detect {args.port} --listen {longer:g} --dwell {longer:g} "
              f"--total {longer * 9:g}`")
    return 0 if finding is not None else 1


__all__ = ["register", "cmd_detect"]
