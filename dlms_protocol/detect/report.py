"""What ``detect`` prints: a ready ``plugin.yaml`` block and the matching items, and ``diagnose``,
the explanation of bytes that nobody could read (the plugin logs it when nothing arrives).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from ..model import MeterData, Statistics
from .probe import Finding


def plugin_parameters(finding: Finding, instance: str = "") -> Dict[str, Any]:
    """The plugin parameters that read the meter found (the values ``plugin_yaml`` prints)."""
    params: Dict[str, Any] = {"plugin_name": "dlms", "serialport": finding.port}
    if instance:
        params["instance"] = instance
    if finding.protocol in ("sml", "dlms"):
        params.update(mode="listen", protocol=finding.protocol, listen_baudrate=finding.baudrate,
                      listen_format=finding.char_format)
        if finding.protocol == "dlms" and finding.encrypted:  # keys are never printed, not even the given ones
            params["key"] = "<32 hex digits from your grid operator>"
            if finding.security is not None and finding.security & 0x10 and not finding.published_auth:
                params["auth_key"] = "<32 hex digits, if your grid operator hands one out>"
        if finding.period:
            params["listen_timeout"] = max(30, int(round(finding.period * 6)))
    elif finding.protocol == "d0-push":
        params.update(mode="readout", only_listen=True, baudrate=str(finding.baudrate),
                      char_format=finding.char_format, update_cycle=max(10, int(round((finding.period or 2) * 5))))
    else:
        params.update(mode="readout", baudrate="auto", char_format="7E1", update_cycle=60)
    return params


def plugin_yaml(finding: Finding, name: str = "dlms", instance: str = "") -> str:
    """The ``plugin.yaml`` block (etc/plugin.yaml of SmartHomeNG)."""
    lines = [f"{name}:"]
    params = plugin_parameters(finding, instance)
    for key, value in params.items():
        if isinstance(value, bool):
            text = "True" if value else "False"
        elif isinstance(value, (int, float)):
            text = str(value)
        else:
            text = f"'{value}'" if not str(value).startswith("<") else f"'{value}'  # fill in"
        if key == "update_cycle" and params.get("only_listen"):
            text += f"  # the items get the newest telegram every {value} s (0: every telegram)"
        lines.append(f"    {key}: {text}")
    return "\n".join(lines) + "\n"


def items_yaml(data: Optional[MeterData], instance: str = "") -> str:
    """The items for every code of the snapshot, through the core's generator where there is one."""
    if data is None:
        return "# no values yet (encrypted without key): run detect again with --key, or start the plugin and\n" \
               "# copy the items from its web interface\n"
    generator = _core_generator()
    if generator is not None:
        return generator(data, instance)  # type: ignore[no-any-return]
    return _items(data, instance)


def _core_generator() -> Any:
    """The project's shared items generator, if this version has one (it is being unified)."""
    import importlib

    for module, name in ((".items", "items_snippet"), (".pipeline", "items_snippet")):
        try:
            mod = importlib.import_module(module, __package__.rpartition(".")[0])
        except ImportError:
            continue
        func = getattr(mod, name, None)
        if callable(func):
            return func
    return None


def _items(data: MeterData, instance: str) -> str:
    suffix = f"@{instance}" if instance else ""
    lines = ["meter:", "    connected:", "        type: bool", f"        dlms_status{suffix}: connected"]
    taken: set = set()
    for r in data.readings:
        if r.obis is None or r.derived:
            continue
        code = r.obis.normalized() or r.code
        name = "obis_" + r.obis.short().replace(".", "_").replace("*", "_")
        if name in taken:
            continue
        taken.add(name)
        typ = "num" if r.numeric() is not None else "str"
        unit = f"  # [{r.unit}]" if r.unit else ""
        lines += [f"    {name}:{unit}", f"        type: {typ}", f"        dlms_obis_code{suffix}: '{code}'"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- diagnosis
def diagnose(raw: bytes, stats: Optional[Statistics] = None, baudrate: Optional[int] = None,
             char_format: Optional[str] = None) -> str:
    """One sentence on why bytes from a port gave nothing readable, with what to do.

    ``raw``: the last bytes received (may be empty); ``stats``: the listener's counters.
    Used by ``detect`` and by the plugin when nothing readable arrives.
    """
    where = f" at {baudrate} Bd {char_format}" if baudrate else ""
    counters = stats.snapshot()["counters"] if stats is not None else {}
    if not raw and not counters.get("bytes"):
        return (f"nothing arrives{where}: check the cable and the reading head's position, and that the "
                "meter's interface is enabled; run `python -m dlms_protocol detect PORT` with the plugin stopped")
    security = _ciphered_security(raw)
    if security is not None or counters.get("decrypt_failures"):
        sec = f"security 0x{security:02X}" if security is not None else "encrypted frames"
        if counters.get("decrypt_failures") and not _has_key_error_only(stats):
            return f"encrypted, {sec}: the key does not fit; check key (and auth_key) with your grid operator"
        return f"encrypted, {sec}: ask your grid operator for the key"
    if counters.get("tag_failures"):
        return "encrypted frames whose authentication tag fails: check auth_key (or leave it empty)"
    if b"\x1b\x1b\x1b\x1b\x01\x01\x01\x01" in raw:
        return (f"SML transmissions{where} whose CRC fails: check the reading head's position and that nothing "
                "else reads the port; an early Holley DTZ541 needs sml_quirks kermit_crc=on")
    if _looks_like_d0(raw):
        return (f"D0 text telegrams{where} that do not pass their checks: a push-only D0 meter usually sends "
                "9600 Bd 7E1 (mode readout, only_listen); run detect to find speed and format")
    return (f"bytes arrive{where} but nothing passes a check: wrong speed or format; run "
            "`python -m dlms_protocol detect PORT` with the plugin stopped")


def _has_key_error_only(stats: Optional[Statistics]) -> bool:
    last = stats.last_error if stats is not None else None
    return bool(last and "no key" in last)


def _ciphered_security(raw: bytes) -> Optional[int]:
    """The security byte of a ciphered APDU in a checksummed frame within ``raw``, if any."""
    from ..dlms.deframer import Deframer
    from ..dlms.security import parse_ciphered
    from ..dlms.wrapper import CIPHERED_TAGS
    from ..errors import DlmsError

    for item in Deframer("auto").feed(bytes(raw)):
        if isinstance(item, DlmsError) or item.wrapper not in ("hdlc", "mbus"):
            continue
        if item.apdu[:1] and item.apdu[0] in CIPHERED_TAGS:
            try:
                return parse_ciphered(bytes(item.apdu)).security_control
            except DlmsError:
                continue
    return None


def _looks_like_d0(raw: bytes) -> bool:
    text = bytes(b & 0x7F for b in raw[-4096:])
    return text.count(b"(") >= 3 and (b"/" in text or b"!" in text)


def report(finding: Optional[Finding], seen: Sequence[str] = (), instance: str = "") -> List[str]:
    """Everything ``detect`` prints after probing."""
    if finding is None:
        lines = ["nothing readable found."]
        lines += [f"  {s}" for s in seen]
        lines.append("check the cable and the head's position, that the meter's interface is enabled, and that no "
                     "other program has the port open")
        return lines
    lines = finding.summary()
    lines += ["", "plugin.yaml:", plugin_yaml(finding, instance=instance).rstrip("\n"), "",
              "items:", items_yaml(finding.data, instance if instance else "").rstrip("\n")]
    return lines


__all__ = ["plugin_parameters", "plugin_yaml", "items_yaml", "diagnose", "report"]
