"""CLI ``simulate-dlms``: a DLMS/COSEM meter to poll, on a pty (mode E / HDLC) or TCP (wrapper).

The keys and the password of the simulated meter are printed on purpose: they are test values
of a meter that does not exist, and a user trying ``poll`` against it needs them.
"""
from __future__ import annotations

import argparse
import sys
import time

#: test keys of the simulated meter (never a real meter's)
DEMO_KEY = "000102030405060708090A0B0C0D0E0F"
DEMO_AUTH_KEY = "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"


def register(sub) -> None:  # noqa: ANN001 - argparse's private subparsers type
    p = sub.add_parser("simulate-dlms", help="run a simulated DLMS/COSEM meter to poll (pty or TCP)",
                       description="Start a simulated DLMS/COSEM meter (registers, clock, load profile, object list; "
                                   "client 16 no security, 32 LLS, 1 HLS-GMAC) on a pseudo-terminal or TCP.")
    p.add_argument("--tcp", action="store_true", help="DLMS/IP wrapper on 127.0.0.1 instead of a pty")
    p.add_argument("--tcp-port", type=int, default=0, help="TCP port (default: any free one)")
    p.add_argument("--rs485", action="store_true", help="pty without the mode E sign-on: HDLC from the start")
    p.add_argument("--baud", type=int, default=9600, help="HDLC rate (default 9600)")
    p.add_argument("--password", default="12345678", help="LLS password of client 32 (default 12345678)")
    p.add_argument("--time-scale", type=float, default=1.0, help="run this many times faster than real time")
    p.set_defaults(func=cmd_simulate_dlms)


def cmd_simulate_dlms(args: argparse.Namespace) -> int:
    from .cosem_model import demo_model
    from .dlms_meter import DlmsPtyMeter, DlmsTcpMeter
    from .dlms_server import ServerSecurity, default_accounts
    from .pty import stop_on_terminate

    stop_on_terminate()

    security = ServerSecurity(bytes.fromhex(DEMO_KEY), bytes.fromhex(DEMO_AUTH_KEY))
    accounts = default_accounts(args.password.encode())
    meter = (DlmsTcpMeter(demo_model(), port=args.tcp_port, accounts=accounts, security=security) if args.tcp else
             DlmsPtyMeter(demo_model(), mode_e=not args.rs485, baudrate=args.baud, time_scale=args.time_scale,
                          accounts=accounts, security=security))
    with meter:
        where = meter.url if isinstance(meter, DlmsTcpMeter) else meter.port
        print(f"simulated meter: {meter.describe()}")
        print(f"port: {where}")
        mode = "" if args.tcp or args.rs485 else " --mode-e"
        print(f"try:  python -m dlms_protocol poll {where}{mode} --list")
        print(f"      ... --client 32 --auth low --password {args.password}")
        print(f"      ... --client 1 --auth high_gmac --key {DEMO_KEY} --auth-key {DEMO_AUTH_KEY}")
        print("Ctrl-C stops it.", flush=True)
        seen = 0
        try:
            while True:
                time.sleep(0.2)
                events = meter.events
                for name, detail in events[seen:]:
                    if args.verbose or name not in ("get", "get-rows"):
                        print(f"  {name} {detail}".rstrip(), file=sys.stderr, flush=True)
                seen = len(events)
        except KeyboardInterrupt:
            print("\nstopped")
    return 0


__all__ = ["register", "cmd_simulate_dlms", "DEMO_KEY", "DEMO_AUTH_KEY"]
