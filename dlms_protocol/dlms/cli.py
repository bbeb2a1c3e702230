"""CLI: ``listen`` (a push listener on a port) and ``decode`` (frames from hex or a capture file).

Output is a readable block per message, or with ``--json`` one JSON object per line: the
contract of ``PushMessage.to_json`` inside the one form of ``jsonform.meter_data_json``, printed by
``cli_output.PrintOutput`` (``listen`` runs Source → Pipeline → PrintOutput, so derived values
such as net power follow the meter's, marked ``"derived": true``). ``decode`` exits non-zero
with one line on stderr when any frame was lost (bad checksum, failed tag, wrong or missing
key, undecodable APDU), so scripts and bug reports see the cause at once; the key never
appears in that line.
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from typing import List, Optional, Tuple

from ..cli import loading
from ..config import SECURITY_LEVELS, ListenerConfig
from ..errors import ChecksumError, ConfigurationError, DlmsError, FramingError
from ..model import Statistics
from ..ratelimit import log_notes

log = logging.getLogger(__name__)

_HEX_TEXT = re.compile(rb"^[0-9A-Fa-f\s:]*$")
#: seconds without a verified message after which ``listen`` says the meter went quiet (stderr)
LISTEN_STALE = 60.0


def register(sub) -> None:  # noqa: ANN001 - argparse's private subparsers type
    """Add ``listen`` and ``decode``."""
    p = sub.add_parser("listen", help="listen for DLMS/COSEM pushes on a serial port or socket://host:port",
                       description="Print every push a meter sends (HDLC, M-Bus, DLMS/IP wrapper, raw APDU; "
                                   "auto-detected), decrypted and decoded. Ctrl-C ends it.")
    p.add_argument("port", help="serial device (/dev/serial/by-id/...), socket://host:port or rfc2217://host:port")
    p.add_argument("--protocol", choices=("auto", "dlms", "sml", "d0"), default="auto",
                   help="what the meter sends (default auto: the first that passes its checks; "
                        "`detect PORT` finds speed and format too)")
    p.add_argument("--baudrate", type=int, default=None,
                   help="default: the protocol's usual (dlms 2400, sml and d0 9600); with --protocol auto and "
                        "no line option, the usual settings are tried in turn (2400 8E1 first)")
    p.add_argument("--parity", choices=("N", "E", "O"), default=None, help="default E (SML: N)")
    p.add_argument("--bytesize", type=int, choices=(7, 8), default=None, help="default 8 (push-only D0: 7)")
    p.add_argument("--stopbits", type=int, choices=(1, 2), default=1)
    _common(p)
    p.add_argument("--min-interval", type=float, default=0.0, metavar="S",
                   help="print at most one message per S seconds (the latest)")
    p.set_defaults(func=cmd_listen)

    p = sub.add_parser("decode", help="decode push frames from hex or a capture file",
                       description="Decode any number of frames back to back. Exit status 1 and one line "
                                   "on stderr when a frame was lost (checksum, tag, key, decode).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--hex", metavar="HEX", help="the frames as hex (spaces allowed)")
    src.add_argument("--file", metavar="F", help="binary capture (or a hex text file); - reads stdin")
    _common(p)
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("simulate-push", help="run a simulated DLMS push meter on a pseudo-terminal",
                       description="A meter that pushes every INTERVAL seconds on a pty (HDLC, M-Bus, wrapper or "
                                   "bare APDU; plain or AES-GCM), with power wandering and energy counting up. "
                                   "Point `listen` at the printed port. Ctrl-C ends it.")
    p.add_argument("--wrapper", choices=("hdlc", "mbus", "wrapper", "apdu"), default="hdlc")
    p.add_argument("--key", metavar="HEX", help="encrypt with this key (GUEK)")
    p.add_argument("--auth-key", metavar="HEX", help="authentication key: security 0x30 (tag)")
    p.add_argument("--security", choices=("0x20", "0x30"),
                   help="default: 0x30 with both keys, 0x20 with --key only, plain without")
    p.add_argument("--segmented", action="store_true", help="HDLC segmentation / M-Bus continuation telegrams")
    p.add_argument("--gbt", action="store_true", help="General-Block-Transfer blocks")
    p.add_argument("--interval", type=float, default=1.0, metavar="S", help="seconds between pushes")
    p.add_argument("--profile", metavar="NAME",
                   help="push the list of this meter profile as its meter does (positional or push object "
                        "list; default: self-describing OBIS layout)")
    p.add_argument("--protocol", choices=("dlms", "sml"), default="dlms",
                   help="sml: an SML meter (9600 8N1 unless given) sending generated transmissions or --capture")
    p.add_argument("--capture", metavar="F", help="sml: replay this capture's transmissions (damaged ones too)")
    p.add_argument("--reduced", action="store_true", help="sml: send the reduced data set (no PIN entered)")
    p.add_argument("--baudrate", type=int, default=None, help="default 2400 (sml: 9600)")
    p.add_argument("--parity", choices=("N", "E", "O"), default=None, help="default E (sml: N)")
    p.add_argument("--time-scale", type=float, default=1.0, help="send characters this many times faster")
    p.add_argument("--link", metavar="PATH", help="also publish the pty under this symlink")
    p.set_defaults(func=cmd_simulate_push)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--key", metavar="HEX", help="encryption key (GUEK) from the grid operator, 32 hex digits")
    p.add_argument("--auth-key", metavar="HEX",
                   help="authentication key (GAK); without it a tag is not verified")
    p.add_argument("--profile", metavar="NAME|FILE", help="meter profile name, family, or JSON file (default auto)")
    p.add_argument("--wrapper", choices=("auto", "hdlc", "mbus", "wrapper", "apdu"), default="auto")
    p.add_argument("--security", choices=SECURITY_LEVELS, default="auto",
                   help="least protection a push must carry once keys are set: any (plaintext too), encrypted "
                        "(0x20 without tag too), authenticated (verified tag); default auto: authenticated with "
                        "--auth-key, else encrypted, never below what the meter sent before")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per message and line; 'checksum' says what was verified")
    p.add_argument("--sml-quirks", metavar="LIST", default=None,
                   help="SML meters: firmware quirks to allow, e.g. no_message_crc=on,kermit_crc=auto "
                        "(the plugin's sml_quirks; see data/sml_quirks.json)")


def _config(args: argparse.Namespace, port: str = "-", **serial: object) -> ListenerConfig:
    return ListenerConfig(port=port, key=args.key, auth_key=args.auth_key, profile=args.profile,
                          wrapper=args.wrapper, security=args.security, **serial)  # type: ignore[arg-type]


def _read_input(args: argparse.Namespace) -> bytes:
    if args.hex is not None:
        text = args.hex.encode("ascii", "replace")
        if not _HEX_TEXT.match(text):
            raise ConfigurationError("--hex contains characters that are not hex digits", "paste only the frame bytes")
        return _unhex(text)
    try:
        data = sys.stdin.buffer.read() if args.file == "-" else _read_bytes(args.file)
    except OSError as exc:
        raise ConfigurationError(f"cannot read {args.file} ({exc.strerror or exc})", "check the path") from None
    if data and _HEX_TEXT.match(data) and len(re.sub(rb"[\s:]", b"", data)) % 2 == 0 \
            and re.search(rb"[0-9A-Fa-f]", data):
        return _unhex(data)  # a hex dump saved as text
    return data


def _strip_llc(data: bytes) -> bytes:
    """An HDLC frame's information field pasted without its frame (``E6 E7 00`` + APDU, as
    decoders print it): the LLC header is no noise in front of the APDU."""
    from .hdlc import LLC_HEADERS
    from .wrapper import PUSH_TAGS

    if data[:3] in LLC_HEADERS and len(data) > 3 and data[3] in PUSH_TAGS:
        return data[3:]
    return data


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:  # open, not pathlib: pathlib is no part of decode's start-up
        return f.read()


def _unhex(text: bytes) -> bytes:
    digits = re.sub(rb"[\s:]", b"", text)
    if len(digits) % 2:
        raise ConfigurationError("hex input has an odd number of digits", "a byte is two hex digits; check the paste")
    return bytes.fromhex(digits.decode("ascii"))


#: what decode and dump say when the input holds no push frame at all (each adds its own hint)
NO_FRAME = "no push frame found in the input: check that it holds HDLC, M-Bus, DLMS/IP wrapper or APDU bytes"


#: bytes of a capture decoded (and shown) at a time: the messages of one slice (about a dozen
#: pushes of 185 bytes) stay below the collector's threshold of 700 new objects, so it hardly runs
#: (16 KB slices: 208 collections, 4 % of decoding 3000 AM550 pushes; now 6)
_SLICE = 2048


def cmd_decode(args: argparse.Namespace) -> int:
    with loading():  # start-up: see cli.loading
        from ..cli_output import decode_printer, show_message
        from .decoder import PushDecoder, UnexplainedLayout

    data = _strip_llc(_read_input(args))
    if b"\x1b\x1b\x1b\x1b\x01\x01\x01\x01" in data:  # an SML transmission's start sequence
        from ..sml.cli import decode_sml
        from ..sml.decoder import parse_quirks

        return decode_sml(data, args.json, parse_quirks(args.sml_quirks))
    config = _config(args)
    errors: List[DlmsError] = []
    with loading():  # the profile tables
        decoder = PushDecoder(config, Statistics(), on_error=errors.append)
    shown = 0
    printer = decode_printer(args.json)
    # in slices, each shown and dropped before the next: a capture of thousands of pushes held
    # whole kept every reading alive (memory, and the garbage collector scanning it again and again)
    for start in range(0, len(data), _SLICE):
        for msg in decoder.feed(data[start:start + _SLICE]):
            show_message(msg, printer)
            shown += 1
        if decoder.notes:  # (a profile problem, a counter restart: the log, as the listener says them)
            log_notes(log, decoder.take_notes())
    before_end = len(errors)
    for msg in decoder.finish():
        show_message(msg, printer)
        shown += 1
    log_notes(log, decoder.take_notes())
    sys.stdout.flush()  # a closed pipe raises here (cli.main: status 0, quietly)
    lost = [e for e in errors if not isinstance(e, UnexplainedLayout)]
    if shown:
        lost = _edge_notes(lost, decoder.lead_in, errors[before_end:])
    if not shown and decoder.deframer.frames and all(isinstance(e, FramingError) for e in lost):
        print(f"error: the input holds {decoder.deframer.frames} verified frame(s) but no complete message: a "
              "message in several HDLC segments, M-Bus telegrams or GBT blocks needs all of them; capture a "
              "longer stretch (at least two push periods)", file=sys.stderr)
        return 1
    if not shown and all(isinstance(e, FramingError) and not isinstance(e, ChecksumError) for e in lost):
        print(f"error: {NO_FRAME} (a bare APDU, which has no checksum, is told from noise by its start; if the "
              "input is one APDU, decode it with --wrapper apdu)", file=sys.stderr)
        return 1
    if lost:
        more = f" ({len(lost) - 1} more error(s))" if len(lost) > 1 else ""
        print(f"error: {lost[0]}{more}", file=sys.stderr)
        return 1
    return 0


def _edge_notes(lost: List[DlmsError], lead_in: Optional[DlmsError], at_end: List[DlmsError]) -> List[DlmsError]:
    """A capture cut out of a running line begins and ends inside a message: the bytes before
    the first frame and a frame left incomplete at the end are said in a note, not an error (the
    exit status stays 0). Damage between the decoded messages, or a checksum error, stays an error."""
    edges: List[DlmsError] = [e for e in at_end if isinstance(e, FramingError) and not isinstance(e, ChecksumError)]
    if lead_in is not None:
        edges.insert(0, lead_in)
    for exc in edges:
        where = "the capture began inside a message" if exc is lead_in else "at the end of the capture"
        print(f"note: {where}: {exc.cause}", file=sys.stderr)
    return [e for e in lost if not any(e is x for x in edges)]


def line_search(args: argparse.Namespace) -> Tuple[Tuple[int, str], ...]:
    """The line settings ``listen`` tries in turn: with ``--protocol auto`` and no line option, the
    plugin's search (``sml.source.usual_lines``); else none, the line named or the protocol's usual."""
    if args.protocol != "auto" or args.baudrate or args.parity or args.bytesize:
        return ()
    from ..sml.source import usual_lines

    return usual_lines()


def cmd_listen(args: argparse.Namespace) -> int:
    """Source → Pipeline → PrintOutput until Ctrl-C: the terminal is one more output."""
    from ..cli_output import LineFound, PrintOutput, quiet_stdout, run_until_interrupted
    from ..pipeline import Output, Pipeline, Throttled
    from ..sml.source import SmlSource

    from ..config import listen_line, parse_format

    baud, line = listen_line(args.protocol)
    bytesize, parity, _stop = parse_format(line)
    config = _config(args, args.port, baudrate=args.baudrate or baud, parity=args.parity or parity,
                     bytesize=args.bytesize or bytesize, stopbits=args.stopbits)
    quirks = None
    if args.sml_quirks:
        from ..sml.decoder import parse_quirks

        quirks = parse_quirks(args.sml_quirks)
    search = line_search(args)
    source = SmlSource(config, LISTEN_STALE, protocol=args.protocol, quirks=quirks, search=search)
    printer = PrintOutput(args.json, show_errors=not source.logs_errors)  # the listener logs its errors
    output: Output = Throttled(printer, args.min_interval) if args.min_interval > 0 else printer  # the latest
    outputs = [output]
    if search:
        from ..sml.source import SEARCH_DWELL

        tried = ", ".join(f"{b} {f}" for b, f in search)
        print(f"no line settings given: trying {tried} in turn (up to {SEARCH_DWELL:.0f} s each); "
              "--baudrate, --parity and --bytesize skip the search", file=sys.stderr, flush=True)
        outputs.append(LineFound(source))
    # Ctrl-C sets an event, also while the port is being opened; the listener ends by itself only
    # on a configuration error, and the reader may close the pipe (printer.done)
    run_until_interrupted(Pipeline(source, outputs), lambda: source.running, done=printer.done)
    if printer.closed:
        quiet_stdout()
    counters = source.stats.snapshot()["counters"]
    print("statistics: " + ", ".join(f"{k}={v}" for k, v in sorted(counters.items())), file=sys.stderr)
    last: Optional[str] = source.stats.last_error
    if not source.status().get("connects") and last:
        print(f"error: {last}", file=sys.stderr)
        return 1
    return 0


def cmd_simulate_push(args: argparse.Namespace) -> int:
    from ..config import parse_key
    from ..simulator.pty import stop_on_terminate
    from ..simulator.push import PushSimulator

    stop_on_terminate()

    if args.protocol == "sml":
        from ..sml.cli import simulate_sml

        return simulate_sml(args)
    args.baudrate, args.parity = args.baudrate or 2400, args.parity or "E"
    key = parse_key(args.key, "key")
    auth = parse_key(args.auth_key, "auth_key")
    security = int(args.security, 16) if args.security else (0x30 if key and auth else 0x20 if key else None)
    sim = PushSimulator(wrapper=args.wrapper, key=key, auth_key=auth, security=security, segmented=args.segmented,
                        gbt=args.gbt, interval=args.interval, layout="profile" if args.profile else "obis",
                        profile=args.profile)
    try:  # (from the link's creation on: a SIGTERM at any moment after it removes it again)
        port = sim.open_pty(args.link, baudrate=args.baudrate, parity=args.parity, time_scale=args.time_scale)
        sec = f"security 0x{security:02x}" if security is not None else "plain"
        print(f"push meter on {port}: {args.wrapper}, {sec}, every {args.interval:g} s, "
              f"{args.baudrate} Bd 8{args.parity}1")
        keys = (" --key HEX" if key else "") + (" --auth-key HEX" if auth else "")
        print(f"try:  python -m dlms_protocol listen {port} --baudrate {args.baudrate} --parity {args.parity}{keys}")
        print("Ctrl-C stops it.", flush=True)
        sim.start()
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


__all__ = ["register", "cmd_listen", "cmd_decode", "cmd_simulate_push"]
