"""What a simulated D0 meter says: built-in sample meters and replays of captured readouts.

A ``MeterImage`` is the meter's identification plus its data block (the bytes between STX and
ETX, ending with ``!`` CR LF). The simulator frames the block itself (STX, ETX, a correct BCC)
so that any capture can be replayed through a real dialogue; ``capture`` keeps the captured
data message byte for byte, for replaying a capture's own (possibly wrong) BCC.

Built-in meters live in ``data/sample_meters/<name>.txt`` (the readout text: identification
line, data lines, ``!``) with a ``<name>.json`` beside it (description, mode, wake-up, address,
framing). They were written for this project; corpus captures are only read at run time from
a path the user gives.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from ..errors import ConfigurationError

log = logging.getLogger(__name__)

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "data" / "sample_meters"
DEFAULT_METER = "lgz_e350"
DEFAULT_IDENTIFICATION = "/SIM5REPLAY"

_C_CHARS = {300: "0", 600: "1", 1200: "2", 2400: "3", 4800: "4", 9600: "5", 19200: "6"}
_B_CHARS = {600: "A", 1200: "B", 2400: "C", 4800: "D", 9600: "E", 19200: "F"}
_RATE_OF = {**{v: k for k, v in _C_CHARS.items()}, **{v: k for k, v in _B_CHARS.items()}}
MODES = ("A", "B", "C", "E", "push")
FRAMINGS = ("bcc", "stx", "none")


def block_check(data: bytes) -> int:
    """XOR of ``data`` over 7-bit characters: the BCC of ``STX data ETX`` is block_check(data + ETX).

    The simulator's own implementation, kept apart from the parser's so that the two check
    each other.
    """
    value = 0
    for byte in data:
        value ^= byte & 0x7F
    return value


@dataclass(frozen=True)
class MeterImage:
    """Identification, data block and behaviour defaults of one simulated meter."""

    name: str
    identification: str              # "/LGZ5ZMF110CC.S27", without CR LF
    block: bytes                     # between STX and ETX, ending with "!\r\n"
    description: str = ""
    mode: str = "C"                  # A, B, C, E or push
    baudrate: int = 9600             # highest rate offered (B/C/E), 300 for A, line rate for push
    wakeup: bool = False             # battery meter: answers only after the NUL wake-up
    address: str = ""                # device address for /?<address>!
    query_code: str = "?"
    framing: str = "bcc"             # bcc: STX block ETX BCC; stx: STX block; none: block only
    capture: Optional[bytes] = None  # the captured data message, verbatim (STX .. BCC)

    @property
    def lines(self) -> int:
        """Data lines: lines holding at least one ``(``."""
        return sum(1 for line in self.block.split(b"\n") if b"(" in line)


def mode_of_identification(identification: str) -> Tuple[str, int]:
    """(mode, highest rate) from the baud character of ``/XXXZ...`` (see docs §3)."""
    z = identification[4:5]
    enhanced = identification[5:7]
    if z in _C_CHARS.values():
        return ("E" if enhanced == "\\2" else "C"), _RATE_OF[z]
    if z in "789":
        return "C", 300
    if z in _B_CHARS.values():
        return "B", _RATE_OF[z]
    if z in ("G", "H", "I"):
        return "B", 300
    return "A", 300


def compose_identification(image: MeterImage, mode: str, baudrate: int) -> bytes:
    """The identification line (with CR LF) a meter in ``mode`` offering ``baudrate`` sends."""
    ident = image.identification
    if mode == "push":
        return ident.encode("ascii", "replace") + b"\r\n"
    manufacturer = ident[1:4]
    rest = ident[5:]
    enhanced = ""
    if rest.startswith("\\") and len(rest) >= 2:
        enhanced, rest = rest[:2], rest[2:]
    if mode in ("C", "E"):
        if baudrate not in _C_CHARS:
            raise ConfigurationError(f"mode C cannot offer {baudrate} Bd", "use 300 ... 19200")
        z = _C_CHARS[baudrate]
        if mode == "E":
            enhanced = "\\2"
        elif enhanced == "\\2":
            enhanced = ""
    elif mode == "B":
        if baudrate not in _B_CHARS:
            raise ConfigurationError(f"mode B cannot offer {baudrate} Bd", "use 600 ... 19200")
        z = _B_CHARS[baudrate]
    elif mode == "A":
        original = ident[4:5]
        z = original if original and mode_of_identification(ident)[0] == "A" else " "
    else:
        raise ConfigurationError(f"meter mode {mode!r} unknown", "use A, B, C, E or push")
    return f"/{manufacturer}{z}{enhanced}{rest}\r\n".encode("ascii", "replace")


def frame_message(block: bytes, framing: str = "bcc") -> bytes:
    """The data message: ``STX block ETX BCC`` (bcc), ``STX block`` (stx) or ``block`` (none)."""
    if framing == "bcc":
        return b"\x02" + block + b"\x03" + bytes([block_check(block + b"\x03")])
    if framing == "stx":
        return b"\x02" + block
    if framing == "none":
        return block
    raise ConfigurationError(f"framing {framing!r} unknown", "use bcc, stx or none")


# ----------------------------------------------------------------------------- loading
def sample_meters() -> Dict[str, Path]:
    """Names of the built-in sample meters and their files."""
    return {p.stem: p for p in sorted(SAMPLE_DIR.glob("*.txt"))}


def load_meter(meter: Union[str, Path, MeterImage, None] = None) -> MeterImage:
    """A built-in meter by name, or a readout file (a capture) by path."""
    if isinstance(meter, MeterImage):
        return meter
    if meter is None:
        meter = DEFAULT_METER
    builtin = sample_meters()
    if isinstance(meter, str) and meter in builtin:
        return _load_sample(builtin[meter])
    path = Path(meter)
    if not path.is_file():
        raise ConfigurationError(f"meter {str(meter)!r} is neither a built-in meter nor a readable file",
                                 "use one of " + ", ".join(builtin) + " or the path of a captured readout")
    return image_from_capture(path.read_bytes(), path.stem, _sidecar(path))


def _sidecar(path: Path) -> dict:
    side = path.with_suffix(".json")
    if not side.is_file():
        return {}
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("ignoring %s: %s", side, exc)
        return {}
    return data if isinstance(data, dict) else {}


def _load_sample(path: Path) -> MeterImage:
    text = path.read_text(encoding="ascii")
    lines = [line.rstrip("\r") for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    if not lines or not lines[0].startswith("/"):
        raise ConfigurationError(f"sample meter {path.name} has no identification line", "fix the data file")
    meta = _sidecar(path)
    identification = lines[0]
    block = "".join(line + "\r\n" for line in lines[1:]).encode("ascii")
    return _image(path.stem, identification, block, meta, None)


def _image(name: str, identification: str, block: bytes, meta: dict, capture: Optional[bytes]) -> MeterImage:
    mode, rate = mode_of_identification(identification)
    given = str(meta.get("mode") or "")
    if given.lower().startswith("push"):
        mode, rate = "push", int(meta.get("baudrate") or 9600)
    elif given in MODES:
        mode = given
    if meta.get("baudrate") and mode != "push":
        rate = int(meta["baudrate"])
    framing = str(meta.get("framing") or ("none" if mode == "push" else "bcc"))
    return MeterImage(
        name=name, identification=identification, block=block,
        description=str(meta.get("description") or meta.get("meter") or ""),
        mode=mode, baudrate=rate, wakeup=bool(meta.get("wakeup", False)),
        address=str(meta.get("address") or ""), query_code=str(meta.get("query_code") or "?"),
        framing=framing if framing in FRAMINGS else "bcc", capture=capture)


_LINE = re.compile(rb"/[^\r\n]*\r?\n|/[^\r\n]+$")


def image_from_capture(raw: bytes, name: str = "capture", meta: Optional[dict] = None) -> MeterImage:
    """Take identification and data block out of a captured readout (exact bytes of a session).

    Skips an echoed request (``/?!``) and echoed ACK lines, keeps the data block up to the
    ``!`` that ends it, and remembers the captured data message for ``keep_bytes`` replays.
    Captures without identification get ``/SIM5REPLAY``.
    """
    meta = dict(meta or {})
    identification = None
    original = raw
    raw = bytes(b & 0x7F for b in raw)  # a 7E1 capture read as 8N1 carries parity in bit 7
    rest = raw
    for m in _LINE.finditer(raw):
        body = m.group(0).rstrip(b"\r\n")
        if body.endswith(b"!"):
            continue  # an echo of the sign-on request
        identification = body.decode("ascii", "replace")
        rest = raw[m.end():]
        break
    if identification is None:
        log.info("capture %s has no identification; the simulator sends %s", name, DEFAULT_IDENTIFICATION)
        identification = DEFAULT_IDENTIFICATION
    # '\2' stored as the byte 0x02 in test data means enhanced identification '2'
    identification = re.sub("[\x00-\x07]", lambda c: "\\" + str(ord(c.group(0))), identification)
    offset = len(raw) - len(rest)
    stx = rest.find(b"\x02")
    capture: Optional[bytes] = None
    if stx >= 0:
        capture = original[offset + stx:]
        body = rest[stx + 1:]
        if "framing" not in meta:
            meta["framing"] = "bcc"
    else:
        body = rest
        while body[:1] == b"\x06":  # echoed ACK
            lf = body.find(b"\n")
            body = body[lf + 1:] if lf >= 0 else b""
        meta.setdefault("framing", "none")
        capture = original[len(raw) - len(body):]
    etx = body.find(b"\x03")
    region = body[:etx] if etx >= 0 else body
    bang = region.rfind(b"!")
    if bang >= 0:
        block = region[:bang + 1] + b"\r\n"
    else:  # a programming-mode answer (no '!'): end it the way a readout ends
        block = region if region.endswith(b"\n") or not region else region + b"\r\n"
        block += b"!\r\n"
    return _image(name, identification, block, meta, capture)


def list_meters() -> List[MeterImage]:
    return [load_meter(name) for name in sample_meters()]


__all__ = ["MeterImage", "load_meter", "sample_meters", "image_from_capture", "frame_message",
           "compose_identification", "mode_of_identification", "block_check", "list_meters",
           "SAMPLE_DIR", "DEFAULT_METER"]
