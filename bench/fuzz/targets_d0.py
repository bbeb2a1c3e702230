"""Fuzz targets of the D0 (IEC 62056-21) side: the data-block parser and the live dialogue.

Seeds are real corpus readouts (read in place) and generated ones: mode C readouts with STX..ETX
BCC, DSMR 5 telegrams with CRC16, push telegrams with and without framing, a mode A readout.
A case mutates the meter's bytes (``registry.mutate``) and

* ``d0_datablock``: parses them offline with ``parse_readout`` (what ``parse`` does: nothing is
  known about the meter beyond the bytes);
* ``d0_datablock_known``: the same with ``expect`` = the checksum the meter sent before (what a
  reader knows after its first readout);
* ``d0_dialogue`` / ``d0_dialogue_known``: feeds them, cut into random reads, to the sans-io
  ``D0Dialogue`` (request mode after the sign-on, push mode as a stream), on a first read and
  with the checksum learned.

Verdict (see ``registry.Verdict``): ``unchecked`` = accepted without a verified checksum
although the meter sends one, holding a value the meter never sent (the issue's "values
accepted without checksum"); ``unprotected`` = accepted without a verified checksum but with
only values the meter sent, or from a meter that sends no checksum at all; ``foreign`` = an
accepted value that a meter with a checksum never sent (includes checksum collisions: two
damaged bytes with the same bit pattern cancel out in a BCC's XOR).
"""
from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import FrozenSet, List, Optional, Sequence, Tuple

from registry import Seed, Target, Verdict, chunks, register

from dlms_protocol.config import ReadoutConfig
from dlms_protocol.errors import DlmsError
from dlms_protocol.iec62056_21.client import D0Dialogue, Done, Receive, Wait
from dlms_protocol.iec62056_21.datablock import Readout, _crc16_arc, bcc, parse_readout

logging.disable(logging.CRITICAL)

ROOT = Path(__file__).resolve().parent.parent.parent
CORPUS = Path(os.environ.get("DLMS_CORPUS", ROOT.parent / "shared" / "corpus")) / "d0"
FIXTURES = ROOT / "tests" / "fixtures" / "d0"
#: dialogue steps after which a case counts as looping (a real hang is caught by the runner's alarm)
MAX_STEPS = 20000

Values = FrozenSet[Tuple[str, str, Optional[str]]]


class Ctx:
    """What a seed's mutations are judged against."""

    def __init__(self, readout: Readout, mode: str, prefix: bytes = b"") -> None:
        self.sent: Values = _values(readout)
        self.checksum = readout.checksum  # what the meter sends: BCC, CRC16 or None
        self.mode = mode                  # "request" (data = the meter's answer) or "push" (a stream)
        self.prefix = prefix


def _values(r: Readout) -> Values:
    return frozenset((ds.code, v.value, v.unit) for ds in r.datasets for v in ds.values)


def _framed(block: bytes) -> bytes:
    return b"\x02" + block + b"\x03" + bytes([bcc(block + b"\x03")])


def _dsmr(lines: Sequence[bytes]) -> bytes:
    body = b"/XYZ5\\2DSMR-FUZZ\r\n\r\n" + b"".join(line + b"\r\n" for line in lines) + b"!"
    return body + b"%04X\r\n" % _crc16_arc(body)


_BLOCK = (b"F.F(00000000)\r\n0.0.0(12345678)\r\n1.8.0(012345.678*kWh)\r\n1.8.1(007345.678*kWh)\r\n"
          b"2.8.0(000123.456*kWh)\r\n1.6.0(04.812*kW)(2403121815)\r\n32.7.0(231.4*V)\r\n!\r\n")
_DSMR5 = _dsmr([b"1-3:0.2.8(50)", b"0-0:1.0.0(240101120000W)", b"0-0:96.1.1(4530303034303031)",
                b"1-0:1.8.1(000123.456*kWh)", b"1-0:1.8.2(000654.321*kWh)", b"1-0:1.7.0(01.193*kW)",
                b"1-0:32.7.0(230.1*V)", b"0-1:24.2.1(240101120000W)(00012.345*m3)"])
_DSMR5_NO_VERSION = _dsmr([b"0-0:1.0.0(240101120000W)", b"1-0:1.8.1(000123.456*kWh)", b"1-0:1.7.0(01.193*kW)"])


def _request_seeds() -> List[Tuple[bytes, bytes]]:
    """(identification line, the rest of the meter's answer) of request-mode readouts."""
    out = [(b"/LGZ5ZMF110CC.S27\r\n", _framed(_BLOCK)),
           (b"/ABC0X\r\n", _framed(_BLOCK)),                       # mode C at 300 Bd
           (b"/KAM 685-382-QR-10\r\n", _BLOCK)]                      # mode A, no STX/ETX/BCC
    for name in ("iskra_mt174_1.txt", "landisgyr_e350_2.txt", "landisgyr_zmd120_1.txt"):
        path = CORPUS / name
        if path.exists():
            raw = path.read_bytes()
            start = raw.rfind(b"/", 0, raw.find(b"\n", raw.rfind(b"/", 0, 40)) + 1)
            line_end = raw.index(b"\n", start) + 1
            rest = raw[line_end:]
            if rest.startswith(b"\x06"):  # the echoed ACK is the reader's own, not the meter's
                rest = rest[rest.index(b"\n") + 1:]
            out.append((raw[start:line_end], rest))
    return out


def _push_seeds() -> List[bytes]:
    out = [_DSMR5, _DSMR5_NO_VERSION, b"/EBZ5DD3BZ06ETA_107\r\n" + _framed(_BLOCK),
           b"/EBZ5DD3BZ06ETA_107\r\n\r\n" + _BLOCK]
    for name in ("easymeter_q3d_1.txt", "emh_ehz_1.txt"):
        path = CORPUS / name
        if path.exists():
            out.append(path.read_bytes())
    return out


def _datablock_seeds() -> List[Seed]:
    seeds = []
    raws = [ident + rest for ident, rest in _request_seeds()] + _push_seeds()
    raws.append(b"/LGZ5ZMF110CC.S27\r\n\x06050\r\n" + _framed(_BLOCK))  # with the ACK echo, as captured
    for path in sorted(CORPUS.glob("*.txt")) + sorted(FIXTURES.glob("*.bin")) + sorted(FIXTURES.glob("*.txt")):
        raws.append(path.read_bytes())
    for raw in raws:
        try:
            readout = parse_readout(raw)
        except DlmsError:
            continue  # a seed with a bad BCC (two corpus captures): nothing intact to compare with
        seeds.append(Seed(raw, Ctx(readout, "offline")))
    return seeds


def _dialogue_seeds() -> List[Seed]:
    seeds = []
    for ident, rest in _request_seeds():
        try:
            readout = parse_readout(ident + rest)
        except DlmsError:
            continue
        seeds.append(Seed(rest, Ctx(readout, "request", prefix=ident)))
    for telegram in _push_seeds():
        seeds.append(Seed(telegram * 2, Ctx(parse_readout(telegram), "push")))
    return seeds


def _judge(ctx: Ctx, readout: Readout, v: Verdict, data: bytes) -> None:
    v.accepted += 1
    foreign = not _values(readout) <= ctx.sent
    verified = readout.checksum is not None
    if foreign and ctx.checksum is not None:  # a meter without checksum: nothing could tell
        v.foreign += 1
    if not verified and ctx.checksum is not None and foreign:
        v.unchecked += 1
        v.notes.append(f"accepted without {ctx.checksum}: {sorted(_values(readout) - ctx.sent)[:2]}")
    elif not verified:
        v.unprotected += 1


def _check_datablock(known: bool):
    def check(data: bytes, seed: Seed, rng: random.Random) -> Verdict:
        ctx: Ctx = seed.context
        v = Verdict()
        try:
            readout = parse_readout(data, expect=ctx.checksum if known else None)
        except DlmsError:
            v.errors += 1
            return v
        _judge(ctx, readout, v, data)
        return v
    return check


def _run_dialogue(config: ReadoutConfig, reads: List[bytes], expect: Optional[str]) -> Readout:
    now = [1000.0]
    dialogue = D0Dialogue(config, clock=lambda: now[0], expect=expect)
    action = dialogue.start()
    steps = 0
    while not isinstance(action, Done):
        steps += 1
        if steps > MAX_STEPS:
            raise RuntimeError("the dialogue did not end")  # counted as a crash: it must always end
        received: Optional[bytes] = None
        if isinstance(action, Receive):
            received = reads.pop(0) if reads else b""
            now[0] += 0.002 if received else action.timeout
        elif isinstance(action, Wait):
            now[0] += action.seconds
        action = dialogue.step(received)
    return action.result.readout


def _check_dialogue(known: bool):
    def check(data: bytes, seed: Seed, rng: random.Random) -> Verdict:
        ctx: Ctx = seed.context
        v = Verdict()
        config = ReadoutConfig(port="fuzz", mode=ctx.mode, retries=0)
        reads = chunks(rng, data)
        if ctx.mode == "request":
            reads = chunks(rng, ctx.prefix) + reads
        try:
            readout = _run_dialogue(config, reads, ctx.checksum if known else None)
        except DlmsError:
            v.errors += 1
            return v
        _judge(ctx, readout, v, data)
        return v
    return check


register(Target("d0_datablock", "D0 parse_readout offline (nothing known about the meter)",
                _datablock_seeds, _check_datablock(False)))
register(Target("d0_datablock_known", "D0 parse_readout with the checksum the meter sent before",
                _datablock_seeds, _check_datablock(True)))
register(Target("d0_dialogue", "D0Dialogue request + push mode, random reads, first read",
                _dialogue_seeds, _check_dialogue(False)))
register(Target("d0_dialogue_known", "D0Dialogue request + push mode, random reads, checksum learned",
                _dialogue_seeds, _check_dialogue(True)))
