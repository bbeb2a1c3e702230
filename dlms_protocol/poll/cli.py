"""CLI ``poll``: read a DLMS/COSEM meter as a client (optical mode E, RS485 HDLC, TCP wrapper).

``poll PORT --list`` discovers every object and prints code / value / unit / meaning like
``read``; ``--items`` prints the SmartHomeNG snippet; ``--obis`` selects what to read and
``--cycle`` repeats it. Passwords and keys given here never appear in any output.
"""
from __future__ import annotations

import argparse
import io
import sys
from decimal import Decimal
from typing import Any, Dict, List, Optional, TextIO

from ..cli_output import PrintOutput, run_until_interrupted
from ..model import MeterData, decimal_text


def register(sub) -> None:  # noqa: ANN001 - argparse's private subparsers type
    p = sub.add_parser("poll", help="poll a DLMS/COSEM meter (mode E optical port, RS485 HDLC, TCP 4059)",
                       description="Read a DLMS/COSEM meter as a client on gurux-dlms: discover its objects "
                                   "(--list), print a SmartHomeNG snippet (--items) or poll selected objects.")
    p.add_argument("port", help="serial port, socket://host:port (serial server, HDLC) or tcp://host:4059 (wrapper)")
    p.add_argument("--list", action="store_true", help="discover every object and print code/value/unit/meaning")
    p.add_argument("--items", action="store_true", help="print a SmartHomeNG items.yaml snippet for every object")
    p.add_argument("--json", action="store_true", help="print the values (and profile rows) as JSON")
    p.add_argument("--obis", action="append", default=[], help="object to read (repeat, or comma-separated)")
    p.add_argument("--profile", action="append", default=[],
                   help="load profile to read incrementally, e.g. 1.0.99.1.0.255")
    p.add_argument("--mode-e", action="store_true", help="optical port: IEC 62056-21 sign-on, then HDLC (mode E)")
    p.add_argument("--baudrate", type=int, default=9600, help="HDLC rate (mode E: the highest rate to accept)")
    p.add_argument("--interface", choices=["auto", "hdlc", "wrapper"], default="auto",
                   help="auto: wrapper for tcp://, HDLC otherwise")
    p.add_argument("--client", type=int, default=16, help="client address (16 public, 1 management, 32 reading)")
    p.add_argument("--logical", type=int, default=1, help="server logical device (default 1)")
    p.add_argument("--physical", type=int, default=17, help="server physical address (default 17)")
    p.add_argument("--address-size", type=int, choices=[1, 2, 4], default=2, help="server address bytes (default 2)")
    p.add_argument("--auth", default="none", help="none, low (password) or high_gmac (keys)")
    p.add_argument("--password", default=None, help="LLS password")
    p.add_argument("--key", default=None, help="encryption key for high_gmac (32 hex digits)")
    p.add_argument("--auth-key", default=None, help="authentication key for high_gmac (32 hex digits)")
    p.add_argument("--system-title", default=None, help="our system title (8 characters or 16 hex digits)")
    p.add_argument("--invocation-counter", type=int, default=0, help="first invocation counter (high_gmac)")
    p.add_argument("--state-file", default=None, help="keep the invocation counter in this file")
    p.add_argument("--invocation-counter-ln", default="0.0.43.1.0.255", metavar="LN",
                   help="high_gmac: where the public client reads the meter's invocation counter when it is "
                        "not known (no state file, or refused); empty: never (default 0.0.43.1.0.255)")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for each answer (default 3)")
    p.add_argument("--cycle", type=float, default=0.0, help="poll again every N seconds (Ctrl-C stops)")
    p.add_argument("--count", type=int, default=0, help="with --cycle: stop after N polls")
    p.add_argument("--time-scale", type=float, default=1.0, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_poll)


def config_from_args(args: argparse.Namespace) -> Any:
    from .config import PollConfig

    codes = tuple(c.strip() for arg in args.obis for c in arg.split(",") if c.strip())
    return PollConfig(
        port=args.port, interface=args.interface, mode_e=args.mode_e, baudrate=args.baudrate,
        client_address=args.client, logical_address=args.logical, physical_address=args.physical,
        address_size=args.address_size, authentication=args.auth, password=args.password, key=args.key,
        auth_key=args.auth_key, system_title=args.system_title, invocation_counter=args.invocation_counter,
        state_file=args.state_file, invocation_counter_ln=args.invocation_counter_ln, obis=codes,
        profiles=tuple(args.profile), timeout=args.timeout)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.hex()
    if hasattr(value, "isoformat"):
        return value.isoformat(sep=" ")
    if isinstance(value, Decimal):
        return decimal_text(value)  # a positive scaler: 2345000, not str()'s 2.345E+6 (as JSON writes it)
    return str(value)


def print_table(data: MeterData, out: Optional[TextIO] = None) -> None:
    """code / value / unit / meaning, the same columns as ``read``."""
    out = out or sys.stdout  # looked up now: a default bound at import would keep a stale stream
    rows = [(r.code, _text(r.value), r.unit or "", (r.name or "") + (" (derived)" if r.derived else ""))
            for r in data.readings]
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(("code", "value", "unit"))]
    print(f"{'code':<{widths[0]}}  {'value':>{widths[1]}}  {'unit':<{widths[2]}}  meaning", file=out)
    for code, value, unit, name in rows:
        print(f"{code:<{widths[0]}}  {value:>{widths[1]}}  {unit:<{widths[2]}}  {name}".rstrip(), file=out)


def items_yaml(data: MeterData, parent: str = "meter") -> str:
    """SmartHomeNG items for every polled object: the core's snippet (the same as ``read --items``)."""
    from ..items import items_snippet

    return (f"# SmartHomeNG items for {data.meter_id or 'the meter'}, generated by "
            "'python -m dlms_protocol poll --items'\n" + items_snippet(data, root=parent).rstrip("\n"))


def to_json(data: MeterData, profiles: Optional[Dict[str, List[Any]]] = None,
            unreadable: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The one JSON form of the snapshot (``jsonform.meter_data_json``), plus the new load-profile
    rows and the objects that could not be read."""
    from ..jsonform import meter_data_json

    return dict(meter_data_json(data),
                profiles={code: [row.to_json() for row in rows] for code, rows in (profiles or {}).items()},
                unreadable={code: str(err) for code, err in (unreadable or {}).items()})


class PollPrinter(PrintOutput):
    """The terminal for ``poll``: the table (with load-profile rows), ``--items`` or ``--json`` (the
    one form plus profile rows), then unreadable objects and the time taken on stderr. One-shot
    polls and ``--cycle`` (Source → Pipeline → this output) print alike."""

    def __init__(self, args: argparse.Namespace, poller: Any, count: int = 0) -> None:
        super().__init__(args.json, text=self._text_form, json_form=self._json_form, indent=2, count=count)
        self.args = args
        self.poller = poller
        self.describe = ""  # the connection, for the time line

    def _json_form(self, data: MeterData) -> Dict[str, Any]:
        return to_json(data, self.poller.last_profile_rows, self.poller.unreadable)

    def _text_form(self, data: MeterData) -> str:
        if self.args.items:
            return items_yaml(data)
        buf = io.StringIO()
        print_table(data, buf)
        profiles = [o for o in self.poller.catalog or [] if o.class_id == 7]
        if self.args.list and profiles:
            print("\nload profiles (read with --profile CODE):", file=buf)
            for obj in profiles:
                print(f"  {obj.ln:<16} {obj.obis.name() or ''}".rstrip(), file=buf)
        for code, rows in self.poller.last_profile_rows.items():
            print(f"\nload profile {code}: {len(rows)} new row(s)", file=buf)
            for row in rows:
                print("  " + (row.time.isoformat(sep=" ") if row.time else "?") + "  "
                      + "  ".join(f"{c}={_text(v)}{' ' + u if u else ''}" for c, v, u in row.values), file=buf)
        return buf.getvalue()[:-1]  # print adds the last newline back

    def publish(self, data: MeterData) -> None:
        super().publish(data)
        for err in self.poller.unreadable.values():
            print(f"not readable: {err}", file=sys.stderr)
        if not self.args.json and not self.args.items:
            total = self.poller.last_timings.get("total", 0.0)
            print(f"# {len(data.readings)} objects in {total:.2f} s ({self.describe})", file=sys.stderr, flush=True)


def cmd_poll(args: argparse.Namespace) -> int:
    from ..pipeline import enrich
    from .poller import DlmsPoller
    from .source import mode_c_readout

    config = config_from_args(args)
    discover = args.list or args.items or not config.obis
    if args.cycle > 0:
        return _poll_cycle(args, config, discover)
    poller = DlmsPoller(config, time_scale=args.time_scale,  # a meter without mode E: its mode C readout
                        readout_factory=mode_c_readout(config, args.time_scale) if config.mode_e else None)
    printer = PollPrinter(args, poller)
    printer.describe = config.describe()
    try:
        printer.publish(enrich(poller.read(discover=discover)))  # net power etc., as the pipeline does
    finally:
        poller.close()
    if printer.closed:  # `poll ... | head`: ends as for any closed pipe (cli.main: status 0, no message)
        raise BrokenPipeError
    return 0


def _poll_cycle(args: argparse.Namespace, config: Any, discover: bool) -> int:
    """Source → Pipeline → PollPrinter every ``--cycle`` seconds until Ctrl-C or ``--count`` polls;
    an error is shown on stderr and the next cycle tries again (with back-off after port errors)."""
    from ..pipeline import Pipeline
    from .source import PollSource

    class CliPollSource(PollSource):
        """Discovers every object on the first poll when the command lists them (or has no --obis)."""

        def _read(self) -> MeterData:
            nonlocal discover
            data = self.poller.read(discover=discover)
            discover = False
            return data

    source = CliPollSource(config, args.cycle, time_scale=args.time_scale)
    printer = PollPrinter(args, source.poller, count=args.count)
    printer.describe = config.describe()
    run_until_interrupted(Pipeline(source, [printer]), lambda: source.running, 5.0, done=printer.done)
    if printer.closed:
        from ..cli_output import quiet_stdout

        quiet_stdout()
        return 0
    return 0 if printer.printed else 1


__all__ = ["register", "cmd_poll", "items_yaml", "print_table", "to_json", "PollPrinter"]
