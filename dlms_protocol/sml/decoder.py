"""SML transmissions to ``Reading``s: smllib parses, this module checks, converts and explains.

``SmlDecoder.feed(bytes)`` returns one ``SmlTelegram`` per transmission whose CRC held and
whose messages parsed completely; everything else is counted (``Statistics``) and handed to
``on_error`` as a ``DlmsError`` subclass, never returned half-parsed. Every entry of every
GetListResponse becomes a ``Reading``: OBIS, raw value as sent (sign as the TL field says),
scaler, ``value = raw·10^scaler`` as Decimal, unit through the project's DLMS unit table, and in
``extra`` the SML type, the status word and the valTime where the meter sent them.

Known firmware quirks are data (``data/sml_quirks.json``), each with a mode (off/auto/on),
detected where possible and always logged by the caller (``SmlTelegram.notes``).

smllib is imported here only, so code paths that never see SML never load it.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..errors import ChecksumError, ConfigurationError, DecodeError, DlmsError, FramingError
from ..model import HELD_DETAIL, MeterData, Reading, Statistics
from ..obis import Obis, best_identity
from .framing import SmlFramer, Transmission, crc16_kermit, crc16_x25

MODES = ("off", "auto", "on")
_MANUFACTURER_CODES = ((129, 129, 199, 130, 3), (1, 0, 96, 50, 1))


@lru_cache(maxsize=1)
def quirk_table() -> Dict[str, Any]:
    """The quirk and data-set rules (data/sml_quirks.json)."""
    path = Path(__file__).resolve().parent.parent / "data" / "sml_quirks.json"
    return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def parse_quirks(text: Optional[str]) -> Dict[str, str]:
    """``"dzg_power_sign=auto, kermit_crc=off"`` → modes for every known quirk (defaults filled in)."""
    known = quirk_table()["quirks"]
    modes = {name: str(q["default"]) for name, q in known.items()}
    for part in (text or "").replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        name, _, mode = part.partition("=")
        name, mode = name.strip(), (mode.strip() or "on").lower()
        if name not in known:
            raise ConfigurationError(f"unknown SML quirk {name!r}", "known: " + ", ".join(sorted(known)))
        if mode not in MODES:
            raise ConfigurationError(f"SML quirk {name}: mode {mode!r} unknown", "use off, auto or on")
        modes[name] = mode
    return modes


@dataclass(frozen=True)
class SmlTelegram:
    """One verified SML transmission, decoded."""

    readings: Tuple[Reading, ...]
    server_id: Optional[bytes]
    manufacturer: Optional[str]
    crc: str  # "x25" or "kermit"
    raw: bytes
    meter_time: Optional[datetime] = None
    #: quirks seen in this transmission, e.g. "kermit_crc", "dzg_power_sign (applied)"
    quirks: Tuple[str, ...] = ()
    #: True when the meter sends the reduced data set (PIN/InF not set)
    reduced: bool = False
    notes: Tuple[str, ...] = field(default=(), compare=False)

    @property
    def meter_id(self) -> Optional[str]:
        """Server ID (hex, or its text when it is printable), else an ID entry's value."""
        sid = self.server_id
        if sid and any(sid):
            text = sid.decode("latin-1")
            return text if text.isprintable() and text.isalnum() else sid.hex().upper()
        return best_identity((r.obis, r.raw.hex().upper() if isinstance(r.raw, bytes) else str(r.raw))
                             for r in self.readings if r.raw)

    def to_json(self) -> dict:
        """The JSON contract of ``decode``/``listen --json``, the same keys as a push message's;
        readings in the one form of ``jsonform.reading_json`` plus SML's ``status``/``val_time``."""
        from ..jsonform import reading_json

        return {
            "wrapper": "sml",
            "ciphered": False,
            "tag_verified": None,
            "checksum": self.checksum,  # transport and message CRCs
            "timestamp": self.meter_time.isoformat() if self.meter_time else None,
            "profile": None,
            "readings": [
                dict(reading_json(r), **{k: _status_json(v) if k == "status" else v for k, v in r.details})
                for r in self.readings
            ],
            "protocol": "sml",
            "meter_id": self.meter_id,
            "manufacturer": self.manufacturer,
            "crc": self.crc,
            "quirks": list(self.quirks),
            "reduced_data_set": self.reduced,
        }

    def render(self) -> str:
        """Readable multi-line form (MeterData.text, the CLI)."""
        from ..model import json_value

        head = [f"SML, meter {self.meter_id or '?'}" + (f" ({self.manufacturer})" if self.manufacturer else "")]
        if self.crc != "x25":
            head.append(f"CRC {self.crc}")
        head += list(self.quirks)
        if self.reduced:
            head.append("reduced data set")
        lines = ["; ".join(head)]
        for r in self.readings:
            unit = f" {r.unit}" if r.unit else ""
            name = r.name or ""
            shown = json_value(r.value)
            lines.append(f"  {r.code:<22} {shown}{unit}" + (f"  ({name})" if name else ""))
        return "\n".join(lines)

    @property
    def checksum(self) -> str:
        """What vouched for the values (MeterData.checksum): the transport and message CRCs."""
        return "SML CRC16" + ("/KERMIT" if self.crc == "kermit" else "")

    def to_meter_data(self, text: bool = True, received: Optional[float] = None) -> MeterData:
        """``text=False``: no rendering (a sink that never shows it); ``received``: the driver's
        time of the bytes (None: now). The stream messages' one form (``detect.decoders``)."""
        return MeterData.of("push", self.readings, received, self.meter_time, self.meter_id,
                            self.render() if text else "", self.raw, "sml", self.checksum, self)


# ---------------------------------------------------------------------- smllib glue
@lru_cache(maxsize=1)
def _context() -> Dict[Any, Any]:
    """smllib's build context with a list-entry builder that keeps the value's TL byte(s)."""
    from smllib.builder import SmlMessageBuilder, SmlObjBuilder, create_context
    from smllib.sml import SmlListEntry, SmlMessage

    class _EntryBuilder(SmlObjBuilder):  # type: ignore[type-arg]
        """Like smllib's, but keeps octet strings as hex (no guessing text) and the TL type."""

        BUILDS = SmlListEntry

        def build(self, obj: Any, classes: Any) -> Any:
            ret = super().build(obj, classes)
            snippet = obj.value[5]
            ret.tl = bytes(snippet.msg) if snippet.msg is not None else b""
            return ret

    class _MessageBuilder(SmlMessageBuilder):  # type: ignore[misc]
        """Like smllib's, but checks the message CRC (smllib does not): ``crc_kind`` x25/kermit/None."""

        def build(self, obj: Any, classes: Any) -> Any:
            kind, calc, sent = _message_crc(obj)
            ret = super().build(obj, classes)
            ret.crc_kind, ret.crc_calc, ret.crc_sent = kind, calc, sent  # type: ignore[attr-defined]
            return ret

    ctx = create_context()
    ctx[SmlListEntry] = _EntryBuilder()
    ctx[SmlMessage] = _MessageBuilder()
    return ctx  # type: ignore[no-any-return]


def _message_crc(obj: Any) -> Tuple[Optional[str], int, int]:
    """Which CRC an SML message's crc16 field holds over the message's bytes before it, with the
    X.25 computed and the value sent (low byte first) for the error message."""
    items = obj.value
    if not isinstance(items, list) or len(items) < 5 or obj.msg is None or items[4].msg is None:
        return None, 0, 0
    field_ = items[4]
    body = bytes(obj.msg[:field_.pos - obj.pos])
    sent = bytes(field_.msg[1:]).rjust(2, b"\0")
    calc = crc16_x25(body)
    if sent == calc.to_bytes(2, "little"):
        return "x25", calc, calc
    if sent == crc16_kermit(body).to_bytes(2, "big"):
        return "kermit", calc, int.from_bytes(sent[-2:], "little")
    return None, calc, int.from_bytes(sent[-2:], "little")


def _tl_type(tl_and_data: bytes) -> Tuple[str, int]:
    """("int"|"uint"|"octet_string"|"bool"|"list", data width) from a value's TL byte(s)."""
    if not tl_and_data:
        return "none", 0
    n = 1
    while n < len(tl_and_data) and tl_and_data[n - 1] & 0x80:
        n += 1
    kind = {0x50: "int", 0x60: "uint", 0x00: "octet_string", 0x40: "bool", 0x70: "list"}.get(
        tl_and_data[0] & 0x70, "?")
    return kind, len(tl_and_data) - n


def _type_name(kind: str, width: int) -> str:
    if kind in ("int", "uint"):
        return f"{kind}{8 * width}"
    if kind == "octet_string":
        return f"octet_string[{width}]"
    return "time" if kind == "list" else kind


def _parse(payload: bytes) -> List[Any]:
    """smllib's full parse of the messages; any failure of it becomes a DecodeError."""
    from smllib.sml_frame import SmlFrame

    try:
        return SmlFrame(payload, build_ctx=_context()).parse_frame()  # type: ignore[no-any-return]
    except Exception as exc:  # smllib raises its own, ValueError, IndexError …: all mean "not SML"
        raise DecodeError(f"SML messages cannot be parsed ({type(exc).__name__}: {_text_of(exc)[:80]})",
                          "the CRC held, so the meter sent this; please report it with the capture") from None


def _text_of(exc: Exception) -> str:
    """An exception's text; smllib's own ``__str__`` can fail on what it could not parse (a choice
    tag that is a list compares with an int)."""
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - its text only; the error itself is reported
        return ""


def _scaled(raw: int, scaler: Any, details: List[Tuple[str, Optional[str]]]) -> Optional[Decimal]:
    """raw * 10**scaler; None (held back, said in ``details``) for a scaler SML's Integer8 cannot
    carry: smllib reads any width, and 10**2147483647 is no meter's value."""
    if not scaler:
        return Decimal(raw)
    if type(scaler) is not int or not -128 <= scaler <= 127:
        details.append((HELD_DETAIL, f"scaler {scaler!r} is outside SML's Integer8 (-128..127): no value"))
        return None
    return Decimal(raw).scaleb(scaler)


def _status_text(status: Any) -> str:
    """An entry's status word in hex (``0x1A2``); a signed or odd one as the meter sent it, in a
    form ``to_json`` reads back."""
    if type(status) is int:
        return f"-0x{-status:X}" if status < 0 else f"0x{status:X}"
    return str(status)


def _status_json(text: Optional[str]) -> Any:
    try:
        return int(text, 16) if text else text
    except ValueError:
        return text


@lru_cache(maxsize=1024)
def _obis(hex_code: str) -> Tuple[Obis, str]:
    """The OBIS code of a list entry and its ``A-B:C.D.E*F`` text (a meter sends the same ones each time)."""
    obis = Obis.from_bytes(bytes.fromhex(hex_code))
    return obis, obis.normalized() or hex_code


@lru_cache(maxsize=256)
def _unit(code: int) -> Optional[str]:
    """The symbol of a DLMS unit code through the project's one unit table."""
    from ..dlms import units

    return units.symbol(code)


def _manufacturer_from_id(server_id: Optional[bytes]) -> Optional[str]:
    """The FLAG code inside a server ID (``0A 01 'DZG' …``, ``06 'EMH' …``), if there is one."""
    if not server_id:
        return None
    for off in (2, 1):
        chunk = server_id[off:off + 3]
        if len(chunk) == 3 and all(0x41 <= b <= 0x5A for b in chunk):
            return chunk.decode("ascii")
    return None


def _serial_from_id(server_id: Optional[bytes]) -> Optional[int]:
    if not server_id or len(server_id) < 6:
        return None
    off = 5 if _manufacturer_from_id(server_id) == server_id[2:5].decode("latin-1") else 4
    return int.from_bytes(server_id[off:], "big")


def _dzg_suspect(reading: Reading, quirk: Dict[str, Any]) -> bool:
    """A power the DZG firmware bug may have turned negative: a 1-3 byte signed integer below 0."""
    return (reading.obis is not None and reading.obis.short() in quirk["codes"]
            and 0 < _signed_width(reading) <= quirk["max_width"] and isinstance(reading.raw, int) and reading.raw < 0)


def _dzg_suspected(serial: int, quirks: List[str], notes: List[str]) -> None:
    """A DZG from before the fixed firmware but outside the serial ranges DZG named sent a short
    negative power: the bytes cannot tell a real export from the bug (a later firmware and other
    models send real negatives so too), so the value stays as sent and the log says how to decide."""
    quirks.append("dzg_power_sign (suspected)")
    notes.append(f"quirk dzg_power_sign suspected (serial {serial}, outside the ranges DZG named): power arrives as "
                 "a short negative number, which is either real (export) or that firmware bug, where 327.68 W and "
                 "more arrive negative; if the meter's display shows positive power meanwhile, set sml_quirks "
                 "dzg_power_sign=on")


def _signed_width(reading: Reading) -> int:
    """Data bytes of a reading sent as signed integer (``int16`` → 2), else 0."""
    name = str(dict(reading.details).get("sml_type") or "")
    return int(name[3:]) // 8 if name.startswith("int") and name[3:].isdigit() else 0


class SmlDecoder:
    """Bytes in, verified ``SmlTelegram``s out; errors counted in ``stats`` and sent to ``on_error``."""

    def __init__(self, stats: Optional[Statistics] = None, on_error: Optional[Callable[[DlmsError], None]] = None,
                 *, quirks: Optional[Dict[str, str]] = None, max_size: int = 16 * 1024) -> None:
        self.stats = stats if stats is not None else Statistics()
        self.on_error = on_error
        self.quirks = dict(parse_quirks(None), **(quirks or {}))
        self.framer = SmlFramer(self._error, max_size=max_size)
        self.reduced: Optional[bool] = None  #: the last telegram's data set (None: none seen yet)
        self.seen_quirks: Dict[str, str] = {}  #: quirk → first note about it

    def reset(self) -> None:
        self.framer.reset()

    def settle(self, quiet: float = math.inf) -> list:
        """A quiet line: nothing here waits for it (a transmission ends with its own escape sequence)."""
        return []

    def finish(self) -> list:
        """End of input: a transmission still buffered is incomplete (counted, not returned)."""
        if self.framer.in_transmission:
            grid = self.framer.end_off_grid()
            if grid is not None and grid[1]:  # its CRC holds: nothing was lost, the sender did not pad it
                self._error(FramingError(f"SML transmission not padded: its end sequence sits {grid[0]} byte(s) off "
                                         "the 4-byte grid although its CRC matches", "the sender broke SML's framing "
                                         "(an edited capture, or a meter's firmware); nothing of it is used"))
            elif grid is not None:  # its end is there, but not where the bytes before it put it
                self._error(FramingError(f"SML transmission lost bytes: its end sequence sits {grid[0]} byte(s) off "
                                         "the 4-byte grid", "bytes were lost on the line (loose reading head, "
                                         "wrong speed); nothing of it is used"))
            else:
                self._error(FramingError("SML transmission incomplete at the end of the input",
                                         "the capture or the connection ended mid-transmission"))
        self.framer.reset()
        return []

    def feed(self, chunk: bytes) -> List[SmlTelegram]:
        self.stats.count("bytes", len(chunk))
        out: List[SmlTelegram] = []
        for tx in self.framer.feed(chunk):
            self.stats.count("frames")
            try:
                out.append(self.decode(tx))
            except DlmsError as exc:
                self._error(exc)
                continue
            self.stats.success("messages")
        return out

    # ------------------------------------------------------------------ decoding
    def decode(self, tx: Transmission) -> SmlTelegram:
        """One CRC-checked transmission to a telegram; DlmsError when it is not acceptable."""
        messages = _parse(tx.payload)
        unchecked = self._check_message_crcs(messages, tx)
        server_id: Optional[bytes] = None
        client_id: Optional[bytes] = None
        entries: List[Any] = []
        meter_time: Optional[datetime] = None
        for msg in messages:
            body = msg.message_body
            sid = getattr(body, "server_id", None)
            if sid and server_id is None and any(bytes.fromhex(sid)):
                server_id = bytes.fromhex(sid)
            if getattr(body, "client_id", None) and client_id is None:
                client_id = bytes.fromhex(body.client_id)
            if hasattr(body, "val_list"):
                entries.extend(body.val_list)
                if isinstance(body.act_sensor_time, datetime):
                    meter_time = body.act_sensor_time
        readings = tuple(self._reading(i, e) for i, e in enumerate(entries) if e.value is not None)
        manufacturer = self._manufacturer(readings, server_id)
        notes: List[str] = []
        quirks: List[str] = []
        if unchecked:  # (only the transport CRC vouches for these messages: the output says so)
            quirks.append("no_message_crc (applied)")
            notes.append(f"quirk no_message_crc applied: the CRC of message(s) {', '.join(map(str, unchecked))} of "
                         f"{len(messages)} does not match and was not checked; the transport CRC matched")
        if tx.crc == "kermit":
            self._check_kermit(manufacturer, tx)
            quirks.append("kermit_crc")
            notes.append(f"quirk kermit_crc: the meter ({manufacturer or 'unknown manufacturer'}) sends "
                         "CRC-16/KERMIT instead of X.25 (early Holley DTZ541 firmware); accepted")
        readings = self._dzg_power_sign(readings, manufacturer, server_id, quirks, notes)
        reduced = self._reduced(readings)
        if reduced:
            notes.append(quirk_table()["reduced_data_set"]["hint"])
        self.reduced = reduced
        for q, n in zip(quirks, notes):
            self.seen_quirks.setdefault(q.split(" ")[0], n)
        return SmlTelegram(readings=readings, server_id=server_id or client_id, manufacturer=manufacturer,
                           crc=tx.crc, raw=tx.raw, meter_time=meter_time, quirks=tuple(quirks), reduced=reduced,
                           notes=tuple(notes))

    @staticmethod
    def _reading(index: int, entry: Any) -> Reading:
        obis, code = _obis(entry.obis)
        kind, width = _tl_type(getattr(entry, "tl", b""))
        raw: Any = entry.value
        scaler = entry.scaler
        unit = _unit(entry.unit) if entry.unit is not None else None
        details: List[Tuple[str, Optional[str]]] = [("sml_type", _type_name(kind, width))]
        value: Any
        if isinstance(raw, bool):
            value = raw
        elif isinstance(raw, int):
            value = _scaled(raw, scaler, details)
        elif isinstance(raw, str):  # octet string as hex
            raw = bytes.fromhex(raw)
            text = raw.decode("latin-1")
            value = text if raw and all(0x20 <= b < 0x7F for b in raw) else raw
        else:  # a time value
            value = raw
        if entry.status is not None:
            details.append(("status", _status_text(entry.status)))
        if entry.val_time is not None:
            vt = entry.val_time
            details.append(("val_time", vt.isoformat() if isinstance(vt, datetime) else f"secindex {vt}"))
        return Reading(code=code, obis=obis, value=value, unit=unit, raw=raw,
                       scaler=scaler,
                       index=index, timestamp=entry.val_time if isinstance(entry.val_time, datetime) else None,
                       details=tuple(details))

    @staticmethod
    def _manufacturer(readings: Sequence[Reading], server_id: Optional[bytes]) -> Optional[str]:
        for r in readings:
            if r.obis is not None and r.obis.groups[:5] in _MANUFACTURER_CODES and isinstance(r.value, str):
                return r.value.strip()
        return _manufacturer_from_id(server_id)

    def _check_message_crcs(self, messages: Sequence[Any], tx: Transmission) -> List[int]:
        """Every message's own CRC must hold, in the transport's algorithm (a second, independent
        check: a damaged transmission whose transport CRC matches by chance is still refused).
        With the quirk no_message_crc on: the messages (1-based) whose CRC did not match."""
        bad = [n for n, msg in enumerate(messages) if getattr(msg, "crc_kind", None) != tx.crc]
        if self.quirks.get("no_message_crc", "off") == "on":
            return [n + 1 for n in bad]
        if bad:
            self.stats.count("message_crc_errors")
            msg = messages[bad[0]]
            raise ChecksumError(f"SML message CRC (message {bad[0] + 1} of {len(messages)})",
                                getattr(msg, "crc_calc", 0), getattr(msg, "crc_sent", 0),
                                "the transmission is dropped; a meter that always sends wrong message CRCs "
                                "needs sml_quirks no_message_crc=on (CLI: --sml-quirks no_message_crc=on)", digits=4)
        return []

    def _check_kermit(self, manufacturer: Optional[str], tx: Transmission) -> None:
        quirk = quirk_table()["quirks"]["kermit_crc"]
        mode = self.quirks.get("kermit_crc", "auto")
        if mode == "on" or (mode == "auto" and manufacturer in quirk["manufacturers"]):
            return
        sent = tx.raw[-2] | tx.raw[-1] << 8
        why = ("quirk kermit_crc is off" if mode == "off" else
               f"the meter's manufacturer ({manufacturer or 'unknown'}) is not one known for it")
        raise ChecksumError("SML transport CRC-16/X.25", crc16_x25(tx.raw[:-2]), sent,
                            f"the transmission carries a CRC-16/KERMIT instead ({why}): if your meter is known "
                            "to do so, set sml_quirks kermit_crc=on (CLI: --sml-quirks kermit_crc=on)", digits=4)

    def _dzg_power_sign(self, readings: Tuple[Reading, ...], manufacturer: Optional[str],
                        server_id: Optional[bytes], quirks: List[str], notes: List[str]) -> Tuple[Reading, ...]:
        quirk = quirk_table()["quirks"]["dzg_power_sign"]
        if manufacturer not in quirk["manufacturers"]:
            return readings
        serial = _serial_from_id(server_id)
        detected = serial is not None and any(lo <= serial <= hi for lo, hi in quirk["serial_ranges"])
        mode = self.quirks.get("dzg_power_sign", "off")
        if not detected and mode != "on":
            if (serial is not None and serial < quirk["fixed_from_serial"]
                    and any(_dzg_suspect(r, quirk) for r in readings)):
                _dzg_suspected(serial, quirks, notes)
            return readings
        apply = mode == "on" or (mode == "auto" and detected)
        changed = 0
        out = []
        for r in readings:
            if apply and _dzg_suspect(r, quirk):
                raw = r.raw + (1 << (8 * _signed_width(r)))  # type: ignore[operator]
                value = Decimal(raw).scaleb(r.scaler or 0)
                r = replace(r, raw=raw, value=value, details=r.details + (("quirk", "dzg_power_sign"),))
                changed += 1
            out.append(r)
        if apply:
            quirks.append("dzg_power_sign (applied)")
            which = quirk["meter"] if detected else f"dzg_power_sign=on (serial {serial}, outside the ranges)"
            notes.append(f"quirk dzg_power_sign applied: {which}; {changed} value(s) read as unsigned")
        else:
            quirks.append("dzg_power_sign (detected, not applied)")
            notes.append(f"quirk dzg_power_sign detected (serial {serial}): {quirk['what']}; values are kept as "
                         "sent; set sml_quirks dzg_power_sign=auto to correct them")
        return tuple(out)

    @staticmethod
    def _reduced(readings: Sequence[Reading]) -> bool:
        rule = quirk_table()["reduced_data_set"]
        shorts = {r.obis.short(): r for r in readings if r.obis is not None}
        energies = [shorts[c] for c in rule["energy_codes"] if c in shorts and isinstance(shorts[c].raw, int)]
        if not energies or any(c in shorts for c in rule["power_codes"]):
            return False
        return all((r.scaler or 0) >= rule["min_energy_scaler"] for r in energies)

    def _error(self, exc: DlmsError) -> None:
        self.stats.error(exc)
        if self.on_error is not None:
            self.on_error(exc)


def decode_all(data: bytes, quirks: Optional[Dict[str, str]] = None) -> Tuple[List[SmlTelegram], List[DlmsError]]:
    """Every verified telegram in ``data`` and every error met on the way (captures, tests)."""
    errors: List[DlmsError] = []
    decoder = SmlDecoder(on_error=errors.append, quirks=quirks)
    telegrams = decoder.feed(data)
    decoder.finish()
    return telegrams, errors


def looks_like_sml(data: bytes) -> bool:
    """True when the bytes hold an SML start sequence (cheap; smllib is not loaded)."""
    return b"\x1b\x1b\x1b\x1b\x01\x01\x01\x01" in data


__all__ = ["SmlDecoder", "SmlTelegram", "decode_all", "looks_like_sml", "parse_quirks", "quirk_table", "MODES"]
