"""Fuzz targets of the push parsers: HDLC, M-Bus, GBT, DLMS/IP wrapper, bare APDU.

Each seed is a short stream of one meter (real corpus frames with their published keys, and
generated ones: three pushes in a row, segmented, I-frames, ciphered 0x20/0x30), so a
mutation can lose a frame, splice two messages, replay one or damage a checksum. One case
decodes the mutated stream with the framing named by the target and in ``auto`` mode, each
in one read and in random reads (sometimes one byte per read), and judges every accepted
message against what the meter sent intact (see ``registry.Verdict``).
"""
from __future__ import annotations

import json
import logging
import os
import random
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from registry import Seed, Target, Verdict, chunks, register

from dlms_protocol.config import ListenerConfig
from dlms_protocol.dlms import decoder as _decoder
from dlms_protocol.dlms.apdu import Structure, encode_notification
from dlms_protocol.dlms.decoder import PushDecoder, PushMessage
from dlms_protocol.simulator.push import PushSimulator, han_notification

logging.disable(logging.CRITICAL)  # a damaged frame is logged as a warning; 200 000 of them are noise here

ROOT = Path(__file__).resolve().parent.parent.parent
CORPUS = Path(os.environ.get("DLMS_CORPUS", ROOT.parent / "shared" / "corpus")) / "push"
EK = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
AK = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
#: framings whose every frame carries a checksum
CHECKSUMMED = ("hdlc", "mbus")


# Most mutations leave the APDU of some frame intact, and decoding it again would spend most of a
# case's time on what the APDU target covers anyway: the pure APDU decode is memoised per input.
_decoder.decode_apdu = lru_cache(maxsize=4096)(_decoder.decode_apdu)  # type: ignore[assignment]
#: share of cases that are also decoded in random reads (and one byte per read) and compared
CHUNKED = 0.25
#: share of cases also decoded in auto mode (the target's own framing is decoded in every case)
AUTO = 0.5
#: plaintext APDUs any seed of the running target sent intact: a frame spliced in whole from
#: another seed is a genuine frame, not a foreign value
ALL_SENT: set = set()


class Ctx:
    """What a seed's mutations are judged against."""

    def __init__(self, wrapper: str, key: Optional[bytes], auth_key: Optional[bytes], security: str,
                 checksummed: bool) -> None:
        self.wrapper = wrapper
        self.key, self.auth_key, self.security = key, auth_key, security
        self.checksummed = checksummed
        self.sent: Counter = Counter()  # plaintext APDUs the meter sent intact, with multiplicity

    def config(self, wrapper: str) -> ListenerConfig:
        kwargs = {"security": self.security} if self.security else {}
        return ListenerConfig(port="fuzz", key=self.key, auth_key=self.auth_key, wrapper=wrapper, **kwargs)


def _decode(ctx: Ctx, wrapper: str, reads: Sequence[bytes]) -> List[PushMessage]:
    dec = PushDecoder(ctx.config(wrapper))
    out: List[PushMessage] = []
    for r in reads:
        out += dec.feed(r)
    return out + dec.finish()


def _key(m: PushMessage) -> Tuple[bytes, str]:
    return m.apdu, json.dumps(m.to_json(), sort_keys=True)


def _judge(ctx: Ctx, msgs: List[PushMessage], v: Verdict, mode: str) -> None:
    seen: Counter = Counter()
    for m in msgs:
        v.accepted += 1
        seen[m.apdu] += 1
        verified_tag = m.tag_verified is True
        if m.checksum == "none" and not ctx.checksummed and not ctx.auth_key:
            # a wrapper frame or bare APDU, plain or 0x20: nothing exists that could verify it
            v.unprotected += 1
            continue
        if ctx.auth_key and not verified_tag:
            v.unchecked += 1
            v.notes.append(f"{mode}: accepted without a verified tag")
        elif ctx.checksummed and m.wrapper not in CHECKSUMMED and not verified_tag:
            v.unchecked += 1
            v.notes.append(f"{mode}: accepted as {m.wrapper} (no checksum) from a {ctx.wrapper} stream")
        if m.apdu not in ctx.sent and m.apdu not in ALL_SENT and (ctx.key or ctx.checksummed):
            v.foreign += 1
            v.notes.append(f"{mode}: a message the meter never sent intact: {m.apdu.hex()[:120]}…")
    if ctx.key:  # ciphered with an invocation counter: a message accepted more often than sent is a replay
        for apdu, n in seen.items():
            if apdu in ctx.sent and n > ctx.sent[apdu]:
                v.foreign += n - ctx.sent[apdu]
                v.notes.append(f"{mode}: replay accepted ({n} times, sent {ctx.sent[apdu]})")


def check(data: bytes, seed: Seed, rng: random.Random) -> Verdict:
    ctx: Ctx = seed.context
    v = Verdict()
    for wrapper in dict.fromkeys((ctx.wrapper, "auto")):
        if wrapper == "auto" and wrapper != ctx.wrapper and rng.random() >= AUTO:
            continue
        whole = _decode(ctx, wrapper, [data])
        _judge(ctx, whole, v, wrapper)
        if rng.random() >= CHUNKED:
            continue
        reads = [data[i:i + 1] for i in range(len(data))] if rng.random() < 0.1 else chunks(rng, data)
        cut = _decode(ctx, wrapper, reads)
        if [_key(m) for m in cut] != [_key(m) for m in whole]:
            v.mismatch += 1
            v.notes.append(f"{wrapper}: {len(whole)} message(s) in one read, {len(cut)} in {len(reads)} reads")
    return v


def _seed(data: bytes, wrapper: str, key: Optional[bytes] = None, auth_key: Optional[bytes] = None,
          security: str = "") -> Seed:
    ctx = Ctx(wrapper, key, auth_key, security, wrapper in CHECKSUMMED)
    msgs = _decode(ctx, wrapper, [data])
    if not msgs:
        raise RuntimeError(f"fuzz seed ({wrapper}) does not decode: {data.hex()}")
    ctx.sent.update(m.apdu for m in msgs)
    ALL_SENT.update(ctx.sent)
    return Seed(data, ctx)


def _sim(wrapper: str, n: int = 3, **kw: object) -> bytes:
    sim = PushSimulator(wrapper=wrapper, seed=n, **kw)  # type: ignore[arg-type]
    return b"".join(sim.emit() for _ in range(n))


def _corpus(kind: str) -> List[Seed]:
    """Corpus frames of one link framing (the published keys; the tag-failing AK left out)."""
    out = []
    for path in sorted(CORPUS.glob("*.json")) if CORPUS.is_dir() else []:
        case = json.loads(path.read_text(encoding="utf-8"))
        raw = bytes.fromhex(case["hex"])
        head = raw[:1]
        framing = "hdlc" if head == b"\x7e" else "mbus" if head == b"\x68" else "wrapper" if head == b"\x00" else "apdu"
        gbt = b"\xe0" in raw[:20] and framing == "hdlc" and raw.find(b"\xe6\xe7\x00\xe0") >= 0
        if (kind == "gbt") != gbt or (kind != "gbt" and framing != kind):
            continue
        keys = case.get("keys") or {}
        sec = case.get("security") or {}
        ek = bytes.fromhex(keys["block_cipher_key"]) if keys.get("block_cipher_key") else None
        ak = bytes.fromhex(keys["authentication_key"]) if keys.get("authentication_key") and \
            sec.get("gcm_tag_verified") is True else None
        policy = "" if ak or not ek else ("encrypted" if case.get("ciphered") else "")
        if ek and sec.get("security_control") in ("0x30", "0x31") and not ak:
            policy = "encrypted"  # the tag cannot be checked without the AK: explicitly allowed
        out.append(_seed(raw, framing if kind != "gbt" else "hdlc", ek, ak, policy))
    return out


def _generated(wrapper: str) -> List[Seed]:
    ciphered = dict(key=EK, auth_key=AK, security=0x30)
    variants: List[Dict[str, object]] = [{}, dict(ciphered), dict(key=EK, security=0x20)]
    if wrapper == "hdlc":
        variants += [dict(segmented=True, max_info=60), dict(segmented=True, max_info=60, hdlc_kind="i"),
                     dict(ciphered, segmented=True, max_info=90, hdlc_kind="i")]
    if wrapper == "mbus":
        variants += [dict(segmented=True, max_info=80), dict(ciphered, segmented=True, max_info=100)]
    out = []
    for kw in variants:
        link = str(kw.pop("gbt_link", wrapper))
        data = _sim(link, **kw)
        security = "encrypted" if kw.get("security") == 0x20 else ""
        out.append(_seed(data, link, kw.get("key"), kw.get("auth_key"), security))  # type: ignore[arg-type]
    return out


def _han() -> List[Seed]:
    """Czech HAN pushes (XT211): bare APDUs of {untagged attribute descriptor, value} entries."""
    objects = [(1, "0-0:96.1.1.255", 2, "octet-string"), (70, "0-0:96.3.10.255", 3, "enum")] + \
        [(3, f"1-0:{c}.7.0.255", 2, "double-long-unsigned") for c in (1, 21, 41, 61, 2, 22, 42, 62)]
    frames = [han_notification(objects, [b"5100000042", 1] + [1000 * n + c for c in (1, 21, 41, 61, 2, 22, 42, 62)],
                               0x80000000 + n) for n in range(3)]
    flat = Structure([b"ZPA3HAN00200", b"G035499", 1] + [100 * n + 7 for n in range(8)])  # ZPA AM375: bare values
    flat.types = ("octet-string", "octet-string", "enum") + ("double-long-unsigned",) * 8
    zpa = b"".join(encode_notification(flat, None, invoke_id=3 + n) for n in range(3))
    return [_seed(b"".join(frames), "apdu"), _seed(zpa, "apdu")]


def _gbt_generated() -> List[Seed]:
    out = []
    for kw in ({}, dict(key=EK, auth_key=AK, security=0x30), dict(segmented=True, max_info=50)):
        data = _sim("hdlc", gbt=True, block_size=40, **kw)
        out.append(_seed(data, "hdlc", kw.get("key"), kw.get("auth_key")))  # type: ignore[arg-type]
    return out


for _name, _desc, _seeds in (
        ("hdlc", "HDLC frames (UI, I, segmented; plain and ciphered) via PushDecoder",
         lambda: _corpus("hdlc") + _generated("hdlc")),
        ("mbus", "wired M-Bus telegrams (CI sequence) via PushDecoder", lambda: _corpus("mbus") + _generated("mbus")),
        ("gbt", "General-Block-Transfer blocks in HDLC frames via PushDecoder",
         lambda: _corpus("gbt") + _gbt_generated()),
        ("wrapper", "DLMS/IP wrapper frames via PushDecoder", lambda: _corpus("wrapper") + _generated("wrapper")),
        ("apdu", "bare APDUs (data-notification, ciphered) via PushDecoder",
         lambda: _corpus("apdu") + _generated("apdu") + _han()),
):
    register(Target(_name, _desc, _seeds, check))
