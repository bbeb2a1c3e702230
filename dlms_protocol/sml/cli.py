"""CLI pieces for SML: ``decode`` of SML input and ``simulate-push --protocol sml``.

``dlms.cli`` calls these when the input holds an SML start sequence or ``--protocol sml`` is
given, so SML needs no commands of its own and smllib is loaded only then. print() is allowed
here: this is the user's terminal.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Dict, List, Optional

from ..errors import DlmsError


def decode_sml(data: bytes, as_json: bool, quirks: Optional[Dict[str, str]] = None) -> int:
    """Print every verified transmission; exit 1 with one line when any was lost (CRC, cut).

    A capture cut out of a running line ends inside a transmission: after verified ones, that is
    a note, not an error (as the push decode says it; the bytes before the first start are
    skipped quietly already)."""
    from ..cli_output import decode_printer, show_message
    from .decoder import SmlDecoder

    errors: List[DlmsError] = []
    decoder = SmlDecoder(on_error=errors.append, quirks=quirks)
    telegrams = decoder.feed(data)
    before_end = len(errors)
    telegrams += decoder.finish()
    printer = decode_printer(as_json)  # the printer of decode and listen
    for tel in telegrams:
        show_message(tel, printer)
    sys.stdout.flush()  # a closed pipe raises here (cli.main: status 0, quietly)
    for note in dict.fromkeys(n for tel in telegrams for n in tel.notes):
        print(f"note: {note}", file=sys.stderr)
    if telegrams:
        for exc in errors[before_end:]:
            print(f"note: the capture ended inside a transmission: {exc.cause}", file=sys.stderr)
        del errors[before_end:]
    if not telegrams and not errors:
        print("error: no complete SML transmission in the input", file=sys.stderr)
        return 1
    if errors:
        more = f" ({len(errors) - 1} more)" if len(errors) > 1 else ""
        print(f"error: {len(errors)} SML transmission(s) lost, first: {errors[0]}{more}", file=sys.stderr)
        return 1
    return 0


def simulate_sml(args: argparse.Namespace) -> int:
    """An SML meter on a pty until Ctrl-C (generated transmissions, or a capture replayed)."""
    from ..simulator.sml import SmlSimulator

    sim = SmlSimulator(args.capture, interval=args.interval, reduced=args.reduced)
    baud, parity = args.baudrate or 9600, args.parity or "N"
    port = sim.open_pty(baudrate=baud, parity=parity, time_scale=args.time_scale, link=args.link)
    what = f"replaying {args.capture} ({len(sim.chunks)} chunk(s))" if args.capture else "generated transmissions"
    print(f"SML meter on {port}: {what}, every {args.interval:g} s, {baud} Bd 8{parity}1")
    print(f"try:  python -m dlms_protocol listen {port} --protocol sml --baudrate {baud} --parity {parity}")
    print("Ctrl-C stops it.", flush=True)
    sim.start()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


def demo_sml(args: argparse.Namespace) -> int:
    """A simulated SML meter at 9600 8N1 on a pty: ``detect`` finds it, then one telegram is shown."""
    from ..detect.probe import Detector
    from ..detect.report import report
    from ..simulator.sml import SmlSimulator

    sim = SmlSimulator(interval=0.5 if args.fast else 1.0, seed=1)
    port = sim.open_pty(baudrate=9600, parity="N")
    print("dlms demo: a simulated SML meter (9600 8N1, a transmission every "
          f"{sim.interval:g} s) on {port}; detect finds out what it is:", flush=True)
    sim.start()
    try:
        detector = Detector(port, listen=1.0, dwell=4.0, total=30.0, sign_on=False,
                            progress=lambda text: print(f"  {text}", flush=True))
        finding = detector.run()
    finally:
        sim.stop()
    print()
    for line in report(finding, detector.seen):
        print(line)
    if finding is not None and finding.data is not None:
        print()
        print(finding.data.text)
    print()
    print("Next: python -m dlms_protocol detect /dev/serial/by-id/<your IR head>")
    return 0 if finding is not None else 1


__all__ = ["decode_sml", "simulate_sml", "demo_sml"]
