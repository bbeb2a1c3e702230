"""Benchmark: DLMS/COSEM polling against the bound the wire and the meter impose.

Setup: the simulated DLMS meter (``simulator.dlms_meter.DlmsPtyMeter``, 13 registers, clock,
load profile, object list of 19 objects) on a real pseudo-terminal at REAL character timing,
HDLC at 9600 Bd 8N1 (10 bits per byte), max info field 128, max PDU 512, a 20 ms turnaround
before each of its answers. The client is ``DlmsPoller`` (gurux-dlms's client under our
session code), client 16, no security.

Wire bound of a session = (bytes sent + bytes received) × 10 / 9600 + answers × 20 ms: every
byte both ways on the half-duplex line and the meter's reaction before each answer; it ignores
the client's own time (gurux building/parsing frames), which is what the ratio shows.
Rows: a full discovery (object list, every scaler/unit and value), a poll of the 13 registers
(values only, SNRM → release/DISC included), and the same poll through the optical port's mode E
sign-on (bound + 300 Bd request, 200 ms reaction, identification, 200 ms rest, ACK, the 0.3 s
baud-switch delay). ``--full``: median of 3 runs each.
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from typing import Dict, List

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from dlms_protocol.poll.config import PollConfig  # noqa: E402
from dlms_protocol.poll.poller import DlmsPoller  # noqa: E402
from dlms_protocol.simulator.cosem_model import demo_model  # noqa: E402
from dlms_protocol.simulator.dlms_meter import DlmsPtyMeter  # noqa: E402

RATE = 9600
TURNAROUND = 0.02
REACTION = 0.2
SWITCH_DELAY = 0.3
REGISTERS = ("1.8.0", "2.8.0", "1.8.1", "1.8.2", "1.7.0", "2.7.0", "32.7.0", "52.7.0", "72.7.0", "31.7.0",
             "14.7.0", "1.6.0", "1.4.0")


def wire_bound(poller: DlmsPoller) -> float:
    s = poller.last_session
    assert s is not None
    return (s.bytes_out + s.bytes_in) * 10 / RATE + s.exchanges * TURNAROUND


def sign_on_bound(meter: DlmsPtyMeter) -> float:
    ct = 10 / 300
    ident = len(meter.identification)
    return len(b"/?!\r\n") * ct + REACTION + ident * ct + REACTION + max(6 * ct + REACTION, SWITCH_DELAY)


def run(mode_e: bool, discover: bool, repeat: int) -> Dict[str, float]:
    rows: List[Dict[str, float]] = []
    with DlmsPtyMeter(demo_model(), mode_e=mode_e, baudrate=RATE, turnaround=TURNAROUND,
                      reaction_time=REACTION) as meter:
        poller = DlmsPoller(PollConfig(meter.port, mode_e=mode_e, obis=() if discover else REGISTERS))
        if not discover:
            poller.read()  # discovery once; measure the cycles after it
        for _ in range(repeat):
            t0 = time.monotonic()
            data = poller.read(discover=discover)
            measured = time.monotonic() - t0
            bound = wire_bound(poller) + (sign_on_bound(meter) if mode_e else 0.0)
            s = poller.last_session
            assert s is not None
            rows.append({"measured": measured, "bound": bound, "objects": len(data.readings),
                         "bytes": s.bytes_out + s.bytes_in, "exchanges": s.exchanges})
            time.sleep(0.1)
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="median of 3 runs")
    args = ap.parse_args()
    repeat = 3 if args.full else 1
    logging.basicConfig(level=logging.ERROR)  # the one object client 16 may not read is expected
    cases = [("full discovery, RS485 HDLC", False, True), ("poll 13 registers, RS485 HDLC", False, False),
             ("poll 13 registers, mode E", True, False)]
    print(f"DLMS polling at {RATE} Bd, real character timing, {TURNAROUND * 1000:.0f} ms meter turnaround")
    print(f"{'case':<32} {'objects':>7} {'bytes':>6} {'answers':>7} {'measured s':>10} {'bound s':>8} "
          f"{'ratio':>6} {'reg/s':>6}")
    for name, mode_e, discover in cases:
        r = run(mode_e, discover, repeat)
        print(f"{name:<32} {int(r['objects']):>7} {int(r['bytes']):>6} {int(r['exchanges']):>7} "
              f"{r['measured']:>10.2f} {r['bound']:>8.2f} {r['measured'] / r['bound']:>6.2f} "
              f"{r['objects'] / r['measured']:>6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
