"""A simulated SML meter on a pseudo-terminal: replays a capture or sends generated transmissions.

``SmlSimulator(capture=path)`` replays any SML capture (every transmission in it, damaged ones
included, as the meter sent them), one every ``interval`` seconds, paced at the line's baud
rate by ``PtyLink``; without a capture it builds SML 1.04 transmissions itself (``encode_sml``):
OpenResponse, GetListResponse with energy counting up and power wandering, CloseResponse, with
message and transport CRCs, escaping and padding as the standard says. Options make it send the
reduced data set (no PIN), the Holley DTZ541 KERMIT CRC, or damage a transmission on purpose.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from pathlib import Path
from decimal import Decimal
from typing import Dict, List, Optional, Sequence, Tuple, Union

from ..sml.framing import ESCAPE, START, crc16_kermit, crc16_x25

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------- encoding
def _tl(kind: int, total: int) -> bytes:
    """TL byte(s) for a field of ``total`` bytes including the TL (one or two TL bytes)."""
    if total < 16:
        return bytes([kind | total])
    total += 1  # a second TL byte
    return bytes([0x80 | kind | (total >> 4), total & 0x0F])


def octets(data: bytes) -> bytes:
    return _tl(0x00, len(data) + 1) + data


def unsigned(value: int, width: int) -> bytes:
    return bytes([0x60 | (width + 1)]) + value.to_bytes(width, "big")


def signed(value: int, width: int) -> bytes:
    return bytes([0x50 | (width + 1)]) + value.to_bytes(width, "big", signed=True)


def lst(*items: bytes) -> bytes:
    return bytes([0x70 | len(items)]) + b"".join(items)


NONE = b"\x01"


def message(transaction: bytes, tag: int, body: bytes, crc: str = "x25") -> bytes:
    """One SML message with its CRC (X.25 low byte first; KERMIT as Holley sends it)."""
    head = b"\x76" + octets(transaction) + unsigned(0, 1) + unsigned(0, 1) + b"\x72" + unsigned(tag, 2) + body
    if crc == "kermit":
        value = crc16_kermit(head)
        return head + b"\x63" + value.to_bytes(2, "big") + b"\x00"
    value = crc16_x25(head)
    return head + b"\x63" + value.to_bytes(2, "little") + b"\x00"


def transport(payload: bytes, crc: str = "x25") -> bytes:
    """Wrap SML messages into a transport-v1 transmission: padding, escaping, end, CRC."""
    padding = (-len(payload)) % 4
    payload = payload + b"\x00" * padding
    escaped = bytearray()
    for i in range(0, len(payload), 4):
        chunk = payload[i:i + 4]
        escaped += chunk + chunk if chunk == ESCAPE else chunk
    body = START + bytes(escaped) + ESCAPE + bytes([0x1A, padding])
    if crc == "kermit":
        return body + crc16_kermit(body).to_bytes(2, "big")
    return body + crc16_x25(body).to_bytes(2, "little")


Entry = Tuple[str, Optional[int], Optional[int], bytes]  # obis hex, unit, scaler, encoded value


def entry(obis: str, value: bytes, unit: Optional[int] = None, scaler: Optional[int] = None,
          status: Optional[int] = None) -> bytes:
    return lst(octets(bytes.fromhex(obis)), unsigned(status, 3) if status is not None else NONE, NONE,
               unsigned(unit, 1) if unit is not None else NONE, signed(scaler, 1) if scaler is not None else NONE,
               value, NONE)


def encode_sml(server_id: bytes, entries: Sequence[bytes], seq: int = 0, sec_index: int = 0,
               crc: str = "x25") -> bytes:
    """A complete transmission: OpenResponse, GetListResponse(entries), CloseResponse."""
    tid = [seq.to_bytes(4, "big") + bytes([n]) for n in range(3)]
    open_body = lst(NONE, NONE, octets(b"SIM" + seq.to_bytes(4, "big")), octets(server_id), NONE, NONE)
    act_time = lst(unsigned(1, 1), unsigned(sec_index, 4))
    get_list = lst(NONE, octets(server_id), octets(bytes.fromhex("0100620AFFFF")), act_time, lst(*entries), NONE,
                   NONE)
    payload = (message(tid[0], 0x0101, open_body, crc) + message(tid[1], 0x0701, get_list, crc)
               + message(tid[2], 0x0201, lst(NONE), crc))
    return transport(payload, crc)


# ---------------------------------------------------------------------- the meter
class SmlSimulator:
    """An SML meter on a pty (see module docstring).

    ``capture``: a file whose transmissions are replayed in a loop. Otherwise generated ones:
    ``manufacturer`` (3 letters) and ``serial`` make the server ID; ``reduced`` sends only the
    energies in kWh (no PIN entered); ``crc="kermit"`` is the Holley DTZ541 quirk.
    """

    def __init__(self, capture: Union[str, Path, None] = None, *, interval: float = 1.0, manufacturer: str = "SIM",
                 serial: int = 0x12345678, reduced: bool = False, crc: str = "x25", seed: Optional[int] = None) -> None:
        self.interval = float(interval)
        self.manufacturer = manufacturer
        self.server_id = b"\x0a\x01" + manufacturer.encode("ascii")[:3] + serial.to_bytes(5, "big")
        self.reduced = reduced
        self.crc = crc
        self._rng = random.Random(seed)
        self.chunks: List[bytes] = split_capture(Path(capture).read_bytes()) if capture else []
        self.seq = 0
        self.energy_in = 12_345_678.9
        self.energy_out = 1_234_567.8
        self.power = 400.0
        self.sent = 0
        self.dropped = 0
        #: physical values of the last generated transmission (the tests' expectation)
        self.last_registers: Dict[str, Decimal] = {}
        self.pty = None  # type: Optional[object]
        self._link: Optional[str] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ content
    def values(self) -> List[bytes]:
        """The value list of the next generated transmission (the house model moves on)."""
        step = self.interval
        self.power = max(-3000.0, min(9000.0, self.power + self._rng.uniform(-150, 150)))
        if self.power >= 0:
            self.energy_in += self.power * step / 3600.0
        else:
            self.energy_out += -self.power * step / 3600.0
        ident = [entry("8181c78203ff", octets(self.manufacturer.encode("ascii"))),
                 entry("0100000009ff", octets(self.server_id))]
        if self.reduced:
            self.last_registers = {"1-0:1.8.0*255": Decimal(int(self.energy_in // 1000)).scaleb(3),
                                   "1-0:2.8.0*255": Decimal(int(self.energy_out // 1000)).scaleb(3)}
            return ident + [entry("0100010800ff", unsigned(int(self.energy_in // 1000), 4), 30, 3, status=0x1C0104),
                            entry("0100020800ff", unsigned(int(self.energy_out // 1000), 4), 30, 3)]
        phases = [self.power * share for share in (0.5, 0.3, 0.2)]
        self.last_registers = {
            "1-0:1.8.0*255": Decimal(int(self.energy_in * 10)).scaleb(-1),
            "1-0:2.8.0*255": Decimal(int(self.energy_out * 10)).scaleb(-1),
            "1-0:16.7.0*255": Decimal(int(round(self.power))),
        }
        return ident + [
            entry("0100010800ff", unsigned(int(self.energy_in * 10), 8), 30, -1, status=0x1C0104),
            entry("0100020800ff", unsigned(int(self.energy_out * 10), 8), 30, -1),
            entry("0100100700ff", signed(int(round(self.power)), 4), 27, 0),
        ] + [entry(f"0100{c:02x}0700ff", signed(int(round(p)), 4), 27, 0) for c, p in zip((36, 56, 76), phases)] + [
            entry(f"0100{c:02x}0700ff", unsigned(2300 + self._rng.randint(-30, 30), 2), 35, -1) for c in (32, 52, 72)]

    def build(self) -> bytes:
        """The next transmission (generated, or the next chunk of the capture)."""
        with self._lock:
            self.seq += 1
            if self.chunks:
                return self.chunks[(self.seq - 1) % len(self.chunks)]
            return encode_sml(self.server_id, self.values(), self.seq, self.seq * int(max(1, self.interval)),
                              self.crc)

    # ------------------------------------------------------------------ the line
    def open_pty(self, baudrate: int = 9600, bytesize: int = 8, parity: str = "N", stopbits: int = 1,
                 time_scale: float = 1.0, link: Optional[str] = None) -> str:
        """The meter's paced serial line; ``link``: also under this symlink (removed by ``stop``),
        a stable name for a configuration, as with ``simulate-push --link``."""
        from .pty import PtyLink, publish_link

        self.pty = PtyLink(baudrate=baudrate, bytesize=bytesize, parity=parity, stopbits=stopbits,
                           time_scale=time_scale)
        port: str = self.pty.port  # type: ignore[attr-defined]
        if link:
            self._link = link
            return publish_link(port, link)
        return port

    def reader_ready(self) -> bool:
        pty = self.pty
        if pty is None:
            return False
        pty.receive(0.0)  # type: ignore[attr-defined]
        return bool(pty.connected) and pty.peer_baudrate() == pty.baudrate  # type: ignore[attr-defined]

    def send_once(self) -> bool:
        pty = self.pty
        data = self.build()
        ok = pty is not None and pty.send(data, stop=self._stop.is_set) and not pty.closed  # type: ignore
        if ok:
            self.sent += 1
        else:
            self.dropped += 1
        return bool(ok)

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sml-simulator", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self.send_once()
            except Exception:  # the simulated meter keeps sending whatever happens
                log.exception("SML simulator: sending failed")
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.pty is not None:
            self.pty.close()  # type: ignore[attr-defined]
        if self._link:
            from .pty import remove_link

            remove_link(self._link)
            self._link = None

    def __enter__(self) -> "SmlSimulator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def split_capture(data: bytes) -> List[bytes]:
    """A capture cut at its start sequences (bytes before the first one stay a chunk of their own)."""
    cuts = []
    pos = data.find(START)
    while pos >= 0:
        cuts.append(pos)
        pos = data.find(START, pos + 8)
    if not cuts:
        return [data] if data else []
    bounds = ([0] if cuts[0] else []) + cuts + [len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


__all__ = ["SmlSimulator", "encode_sml", "transport", "message", "entry", "octets", "signed", "unsigned", "lst",
           "split_capture"]
