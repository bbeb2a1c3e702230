"""CLI: ``profiles`` (list the meter profiles) and ``dump`` (every value of a push by position).

``dump`` is the one command a user with an unknown meter runs: it decodes the frame(s) with
the normal pipeline (so keys, checksums and tags work as in ``decode``), prints every body
element with its position, DLMS type and raw value, and writes a ``profile_template`` JSON
that only needs the OBIS codes, scalers and units from the grid operator's document.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..config import ListenerConfig
from ..errors import ConfigurationError, FramingError


def register(sub) -> None:  # noqa: ANN001 - argparse's private subparsers type
    """Add ``profiles`` and ``dump``."""
    p = sub.add_parser("profiles", help="list the meter profiles (built-in and your own)",
                       description="Profiles say what the values of pushes without OBIS codes or "
                                   "scalers mean.")
    p.add_argument("--dir", action="append", default=[], metavar="PATH",
                   help="also load profile JSON files from this folder or file (repeatable)")
    p.add_argument("--show", metavar="NAME", help="print one profile as JSON, with its sources")
    p.set_defaults(func=cmd_profiles)

    p = sub.add_parser("dump", help="show every value of a push by position and write a profile template",
                       description="Decode push frames and print each value of the notification body "
                                   "with its position, DLMS type and raw value; the template JSON is the "
                                   "start of a profile for a meter no built-in profile knows.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--hex", metavar="HEX", help="the frame(s) as hex; spaces allowed")
    src.add_argument("--file", metavar="F", help="binary capture or hex text file; - reads stdin")
    p.add_argument("--key", metavar="HEX", help="encryption key (GUEK), 32 hex digits")
    p.add_argument("--auth-key", metavar="HEX",
                   help="authentication key (GAK); without it a tag is not verified")
    p.add_argument("--profile", metavar="NAME|FILE", help="apply this profile (default auto)")
    p.add_argument("--wrapper", choices=("auto", "hdlc", "mbus", "wrapper", "apdu"), default="auto",
                   help="how the frames are wrapped (default auto; a bare APDU, as P1 and HAN ports of "
                        "some meters send it, needs apdu)")
    p.add_argument("--template", metavar="OUT.json",
                   help="write the profile template of the first message here")
    p.add_argument("--json", action="store_true", help="print the dump as JSON")
    p.set_defaults(func=cmd_dump)


# ------------------------------------------------------------------------ profiles
def cmd_profiles(args: argparse.Namespace) -> int:
    from .profiles import BUILTIN_DIR, load_profiles  # the push stack loads only for push commands

    profiles = load_profiles([Path(d) for d in args.dir])
    if args.show:
        p = profiles.get(args.show)
        if p is None:
            raise ConfigurationError(f"unknown profile {args.show!r}",
                                     "use one of: " + ", ".join(sorted(profiles)))
        doc = {"name": p.name, "description": p.description, "family": p.family, "source": p.source,
               "file": p.path, "match": p.match,
               "fields": [{k: v for k, v in f.__dict__.items()
                           if v is not None and v is not False and (k != "scaler" or f.kind == "number")}
                          for f in p.fields]}
        print(json.dumps(doc, indent=2, ensure_ascii=False))
        return 0
    rows = []
    for p in sorted(profiles.values(), key=lambda x: (x.family or "", x.name)):
        n = p.match.get("elements")
        layout = f"{p.shape} {n}" if n is not None else p.shape
        origin = "" if p.path and Path(p.path).parent == BUILTIN_DIR else f"  [{p.path}]"
        rows.append((p.name, layout, p.family or "-", p.description + origin))
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    w2 = max(len(r[2]) for r in rows)
    print(f"{'name':<{w0}}  {'layout':<{w1}}  {'family':<{w2}}  description")
    for r in rows:
        print(f"{r[0]:<{w0}}  {r[1]:<{w1}}  {r[2]:<{w2}}  {r[3]}")
    print(f"\n{len(rows)} profiles. Set profile to a name, a family (all its lists) or a JSON file; "
          "default auto selects by structure.")
    return 0


# ---------------------------------------------------------------------------- dump
_HEX = re.compile(rb"^[0-9A-Fa-f\s:]*$")


def _input(args: argparse.Namespace) -> bytes:
    if args.hex is not None:
        data = args.hex.encode("ascii", "replace")
        if not _HEX.match(data):
            raise ConfigurationError("--hex contains characters that are not hex digits",
                                     "paste only the frame bytes")
    else:
        try:
            data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
        except OSError as exc:
            raise ConfigurationError(f"cannot read {args.file} ({exc.strerror or exc})",
                                     "check the path") from None
        if not (data and _HEX.match(data) and re.search(rb"[0-9A-Fa-f]", data)):
            return data
    digits = re.sub(rb"[\s:]", b"", data)
    if len(digits) % 2:
        raise ConfigurationError("hex input has an odd number of digits",
                                 "a byte is two hex digits; check the paste")
    return bytes.fromhex(digits.decode("ascii"))


def _shown(value: Any) -> str:
    from .apdu import BitString
    from ..model import json_value

    if isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
        text = raw.decode("ascii") if raw and all(0x20 <= b < 0x7F for b in raw) else None
        return f"{raw.hex().upper()}" + (f"  '{text}'" if text else "")
    if isinstance(value, BitString):
        return value.bits
    if isinstance(value, list):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    return str(json_value(value))


def _elements(body: Any, body_type: str) -> List[dict]:
    if isinstance(body, list):
        types = list(getattr(body, "types", ()))
        return [{"index": i, "type": t, "raw": v} for i, (v, t) in enumerate(zip(body, types))]
    return [{"index": 0, "type": body_type, "raw": body}]


def cmd_dump(args: argparse.Namespace) -> int:
    from .apdu import decode_apdu
    from ..model import json_value
    from .profiles import detect_shape, profile_template, reading_body

    from .decoder import decode_bytes  # the pipeline: deframing, GBT, decryption, tag check

    data = _input(args)
    config = ListenerConfig(port="-", key=args.key, auth_key=args.auth_key, profile=args.profile,
                            wrapper=args.wrapper)
    try:
        messages = decode_bytes(data, config, strict=True)
    except FramingError:
        if args.wrapper != "auto" or decode_bytes(data, config, strict=False):
            raise  # (frames with damage between them: that damage is the error)
        messages = []
    if not messages:
        from .cli import NO_FRAME  # (auto tells a bare APDU, which has no checksum, from noise only by its start)

        print(f"error: {NO_FRAME}; if the input is one APDU, dump it with --wrapper apdu", file=sys.stderr)
        return 1
    out: List[dict] = []
    template: Optional[dict] = None
    for n, msg in enumerate(messages):
        if msg.apdu[:1] == b"/":
            print(f"message {n + 1}: DSMR text telegram (profile dsmr), nothing to dump by position")
            continue
        note = decode_apdu(msg.apdu)
        body = reading_body(note)
        elems = _elements(body, note.body_type)
        by_index: Dict[int, Any] = {}
        for reading in msg.readings:
            by_index.setdefault(reading.index, reading)
        if template is None:
            template = profile_template(note)
        if args.json:
            out.append({"message": n + 1, "shape": detect_shape(body), "profile": msg.profile,
                        "timestamp": note.timestamp.isoformat() if note.timestamp else None,
                        "elements": [{"index": e["index"], "type": e["type"], "raw": json_value(e["raw"])}
                                     for e in elems]})
            continue
        print(f"message {n + 1}: {msg.wrapper}, {msg.protection()}, meter time "
              f"{note.timestamp.isoformat() if note.timestamp else '-'}, {len(elems)} element(s), "
              f"shape {detect_shape(body)}, profile {msg.profile or 'none'}")
        for e in elems:
            r = by_index.get(e["index"])
            meaning = ""
            if r is not None and (r.obis is not None or r.value is not None):
                unit = f" {r.unit}" if r.unit else ""
                value = json_value(r.value) if r.value is not None else "?"
                meaning = f"  -> {r.code} = {value}{unit}"
            print(f"  [{e['index']:>3}] {e['type']:<21} {_shown(e['raw'])}{meaning}")
    if args.json:
        print(json.dumps({"messages": out, "template": template}, indent=2, ensure_ascii=False))
    if template is not None and args.template:
        text = json.dumps(template, indent=2, ensure_ascii=False) + "\n"
        Path(args.template).write_text(text, encoding="utf-8")
        if not args.json:
            print(f"\nprofile template written to {args.template}: fill in name, obis, scaler and unit, then "
                  "use it with --profile FILE or put it in your profile folder")
    elif template is not None and not args.json:
        print("\nprofile template (save as JSON, fill in obis, scaler and unit):")
        print(json.dumps(template, indent=2, ensure_ascii=False))
    return 0


__all__ = ["register", "cmd_profiles", "cmd_dump"]
