"""Configuration file of the standalone Venus OS service (``victron --config FILE``).

Two formats are read:

1. **Our INI file** (``venus/dlms-meter.ini.example``): sections ``[meter]``, ``[victron]`` and
   ``[logging]`` with ``key = value`` lines; ``;`` or ``#`` start comments, empty values mean
   "default". INI because it needs no library, takes comments and is what people edit with
   ``nano`` on a GX device.
2. **dbus-dlms-meter's ``config.py``** (AndyTempel/victron-dlms-gird-meter), so its users can
   move over unchanged. The file is *read, never executed*: ``ast`` picks out the literal
   assignments (``TTY_INTERFACE = 'ttyUSB0'``, ``PARITY = Parity.NONE``), so its
   ``from gurux_common.io import ...`` line need not resolve and nothing in it can run. An empty
   ``TELEGRAM_ID`` or ``auto`` means the push layout is detected; dbus-dlms-meter's telegram ids
   (``si-sodo-reduxi`` ...) are covered by our profiles' auto-detection as well.

Keys never appear in errors, logs or ``describe()``: only whether one is set.
"""
from __future__ import annotations

import ast
import configparser
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .. import DATA_DIR
from ..config import ListenerConfig, ReadoutConfig, check_number, listen_line, parse_format
from ..errors import ConfigurationError
from .bridge_settings import ROLES, BridgeSettings

LOG = logging.getLogger(__name__)

DEFAULT_PUSH_TIMEOUT = 10.0
LEGACY_KEYS = ("TTY_INTERFACE", "SERIAL_BAUD_RATE", "BYTE_SIZE", "PARITY", "STOP_BITS",
               "AUTHENTICATION_KEY", "BLOCK_CIPHER_KEY", "TELEGRAM_ID")
_PARITY = {"NONE": "N", "EVEN": "E", "ODD": "O", "N": "N", "E": "E", "O": "O"}
_STOPBITS = {"ONE": 1, "TWO": 2, "1": 1, "2": 2}
_TRUE = {"1", "yes", "true", "on"}
_FALSE = {"0", "no", "false", "off"}
_TOTAL_ON_L1 = {"auto"} | _TRUE | _FALSE
#: (low, high, whole, low excluded) of the INI numbers not checked by ReadoutConfig/ListenerConfig
_RANGES: Dict[str, Tuple[float, float, bool, bool]] = {
    "interval": (0, 86400, False, True),
    "timeout": (0, 86400, False, True),
    "refresh_time_ms": (1, 3600000, True, False),
    "settings_wait": (0, 3600, False, False),
    "device_instance": (0, 999, True, False),
}
#: where a profile JSON may be read from besides the config file's folder
PROFILE_DIR = os.path.join(DATA_DIR, "profiles")

#: INI keys per section and a one-line meaning (also used by --check-config and the docs)
METER_KEYS: Dict[str, str] = {
    "mode": "push (DLMS/COSEM push listener), readout (IEC 62056-21 optical readout) or poll (DLMS/COSEM "
            "client: optical mode E, RS485, TCP)",
    "port": "serial device (/dev/serial/by-id/... or /dev/ttyUSB0), socket://host:port or rfc2217://; "
            "poll also tcp://host:4059 (DLMS/IP wrapper)",
    "protocol": "push: what the meter sends: dlms (default), sml (German INFO interface, 9600 8N1), d0, auto",
    "baudrate": "push: line speed (2400; protocol sml or d0: 9600); readout: auto or a maximum; poll: the HDLC "
                "rate (9600)",
    "bytesize": "push: data bits (8; protocol d0: 7)",
    "parity": "push: N, E or O (E; protocol sml: N)",
    "stopbits": "push: 1 or 2",
    "key": "push: encryption key (GUEK), 32 hex digits; poll: with authentication = high_gmac",
    "auth_key": "push: authentication key (GAK), 32 hex digits, only if your operator gave one; poll: high_gmac",
    "profile": "push: auto, or the name/JSON file of a positional layout",
    "wrapper": "push: auto, hdlc, mbus, wrapper or apdu",
    "security": "push: least protection once keys are set: auto, any, encrypted or authenticated",
    "min_interval": "push: at most one update per this many seconds (0 = every push)",
    "interval": "readout, poll: seconds between readouts (30)",
    "initial_baudrate": "readout: sign-on speed (300)",
    "char_format": "readout: 7E1 or 8N1 ...",
    "use_checksum": "readout: check the BCC (yes)",
    "reset_baudrate": "readout: reopen at the initial speed before each read (yes)",
    "no_waiting": "readout: skip the optional waits (no)",
    "device_address": "readout: meter address for the sign-on (empty)",
    "query_code": "readout: ? (default)",
    "timeout": "readout: character/answer time-out in seconds (1.5); poll: answer time-out (3)",
    "wakeup": "readout: send NUL wake-up characters (no)",
    "retries": "readout: further attempts at lower speeds (1)",
    "baud_switch_delay": "readout: seconds between ACK and speed change (0.3)",
    "readout_mode": "readout: request (sign-on) or push (meters that send by themselves)",
    "mode_e": "poll: optical head, sign on at 300 Bd and switch to HDLC (IEC 62056-21 mode E) (no)",
    "client_address": "poll: 16 public client (default), 1 management, 32 reading client ...",
    "logical_address": "poll: server logical address (1)",
    "physical_address": "poll: server physical address (17; RS485: the meter's address)",
    "address_size": "poll: server address size in bytes: 1, 2 (default) or 4",
    "authentication": "poll: none (default), low (password) or high_gmac (key, auth_key)",
    "password": "poll: the meter's LLS password for authentication = low",
    "system_title": "poll: our system title for high_gmac, 8 characters or 16 hex digits (SHNGDLMS)",
    "state_file": "poll: file that keeps the high_gmac invocation counter (relative to this file)",
    "obis": "poll: the registers to read each cycle, comma-separated (empty: every register found)",
}
VICTRON_KEYS: Dict[str, str] = {
    "bus": "auto, system, session or a D-Bus address",
    "role": "first-start role: " + ", ".join(ROLES),
    "custom_name": "first-start custom name (the GUI can change it later)",
    "device_suffix": "last part of the service name (default dlms_<meter serial>, waited for up to 30 s, "
                     "else dlms_<meter id or port>)",
    "device_instance": "preferred VRM instance (40)",
    "product_name": "shown as product (DLMS smart meter)",
    "timeout": "seconds without a verified reading before /Connected = 0",
    "refresh_time_ms": "the meter's update period for /RefreshTime (default: measured)",
    "settings_wait": "seconds to wait for localsettings (role, instance) before registering without it (60)",
    "mapping_file": "JSON file overriding the OBIS -> D-Bus mapping",
    "total_power_on_l1": "auto, yes or no: publish the total on L1 when the meter sends no phase power",
    "missing_part_is_zero": "ignored (a missing import or export is never taken as 0)",
}
LOGGING_KEYS: Dict[str, str] = {"level": "debug, info, warning or error (info)"}
SECTIONS = {"meter": METER_KEYS, "victron": VICTRON_KEYS, "logging": LOGGING_KEYS}


def _output_sections() -> List[str]:
    """Further outputs ``serve`` takes from a section of their name ([mqtt] ...): whatever is registered."""
    from ..pipeline import OUTPUTS

    return sorted(kind for kind in OUTPUTS if kind not in SECTIONS)


@dataclass
class StandaloneConfig:
    """Everything ``victron --config`` needs, checked before any I/O."""

    mode: str
    bridge: BridgeSettings
    listener: Optional[ListenerConfig] = None
    readout: Optional[ReadoutConfig] = None
    interval: float = 30.0
    log_level: str = "info"
    source: str = ""
    notes: List[str] = field(default_factory=list)
    #: publish on D-Bus (always for ``victron --config``; for ``serve`` when the file has [victron])
    victron: bool = True
    #: further outputs by kind (``[mqtt]`` ...) with their options as written; checked by their factory
    outputs: Dict[str, Dict[str, str]] = field(default_factory=dict)
    #: push mode: dlms (PushSource), or sml/d0/auto (the SML source's StreamListener)
    protocol: str = "dlms"
    #: poll mode: the DLMS/COSEM client's settings (poll/config.py)
    poll: Optional[Any] = None

    @property
    def port(self) -> str:
        for part in (self.listener, self.readout, self.poll):
            if part is not None:
                return str(part.port)
        return ""

    def describe(self) -> List[Tuple[str, str]]:
        """Settings as (name, text) for --check-config; keys only as 'set'/'not set'."""
        out = [("format", self.source), ("mode", self.mode), ("port", self.port)]
        if self.listener is not None:
            lc = self.listener
            out += [("serial", f"{lc.baudrate} {lc.bytesize}{lc.parity}{lc.stopbits}"),
                    ("key", "set" if lc.key else "not set"), ("auth_key", "set" if lc.auth_key else "not set"),
                    ("profile", lc.profile or "auto"), ("wrapper", lc.wrapper), ("security", lc.security)]
        if self.readout is not None:
            rc = self.readout
            out += [("baudrate", str(rc.baudrate)), ("char_format", rc.char_format),
                    ("interval", f"{self.interval:g} s"),
                    ("readout_mode", rc.mode)]
        if self.poll is not None:
            pc = self.poll
            out += [("interval", f"{self.interval:g} s"), ("connection", pc.describe()),
                    ("obis", ", ".join(pc.obis) or "(every register found)")]
        for kind, options in sorted(self.outputs.items()):
            shown = ", ".join(f"{k}={'(set)' if _secret(k) else v}" for k, v in sorted(options.items()))
            out.append((f"output {kind}", shown or "(defaults)"))
        if not self.victron:
            return out + [("victron", "off (no [victron] section)"), ("log level", self.log_level)]
        b = self.bridge
        out += [("bus", b.bus), ("role", b.role), ("custom_name", b.custom_name or "(none)"),
                ("device_suffix", b.device_suffix or "(from the meter serial)"),
                ("device_instance", str(b.device_instance)), ("timeout", f"{b.timeout:g} s"),
                ("settings_wait", f"{b.settings_wait:g} s"),
                ("mapping_file", b.mapping_file or "(built-in)"), ("log level", self.log_level)]
        return out


# ---------------------------------------------------------------------- helpers
def _secret(key: str) -> bool:
    return any(word in key.lower() for word in ("key", "password", "secret", "token"))


def _bool(section: str, key: str, text: str) -> bool:
    t = text.strip().lower()
    if t in _TRUE:
        return True
    if t in _FALSE:
        return False
    raise ConfigurationError(f"[{section}] {key} = {text!r} is not yes/no", f"write {key} = yes or {key} = no")


def _number(section: str, key: str, text: str, kind: type = float) -> Any:
    """A number; NaN and infinities are refused, and so is any value outside ``_RANGES``."""
    try:
        value = kind(text.strip())
    except ValueError:
        raise ConfigurationError(f"[{section}] {key} = {text!r} is not a number",
                                 f"write a {'whole ' if kind is int else ''}number") from None
    low, high, whole, low_open = _RANGES.get(key, (-1e18, 1e18, kind is int, False))
    try:
        return check_number(key, value, low, high, whole=whole, low_open=low_open)
    except ConfigurationError as exc:
        raise ConfigurationError(f"[{section}] {exc.cause}", exc.fix) from None


def _confined(section: str, key: str, text: str, base: str, also: Optional[str] = None) -> str:
    """A file path resolved against the config file's folder, which must stay inside it (or ``also``).

    A config must not make the service read /etc/shadow or ../../something as a mapping or
    profile: the error says where such files belong.
    """
    path = os.path.realpath(os.path.join(base, text))
    for root in (os.path.realpath(base),) + ((os.path.realpath(also),) if also is not None else ()):
        if os.path.commonpath((path, root)) != root:
            continue
        if not os.path.isfile(path):
            raise ConfigurationError(f"[{section}] {key} = {text!r}: no such file ({path})",
                                     f"put the file beside the config file ({base}) and name it there")
        return path
    where = f"{base}" + (f" or {also}" if also is not None else "")
    raise ConfigurationError(f"[{section}] {key} = {text!r} points outside the config folder",
                             f"put the file in {where} and write its name (relative to the config file)")


def _profile(text: str, base: str) -> Optional[str]:
    """auto -> None; a name stays a name; a file path is confined (see ``_confined``)."""
    if text.lower() == "auto":
        return None
    if "/" in text or "\\" in text or text.lower().endswith(".json"):
        return _confined("meter", "profile", text, base, PROFILE_DIR)
    return text


def _built(section: str, factory: Any, **kwargs: Any) -> Any:
    """ReadoutConfig/ListenerConfig/BridgeSettings(**kwargs) with the section named in its error."""
    try:
        return factory(**kwargs)
    except ConfigurationError as exc:
        raise ConfigurationError(f"[{section}] {exc.cause}", exc.fix) from None


def _port(text: str) -> str:
    """dbus-dlms-meter writes 'ttyUSB0'; we open '/dev/ttyUSB0'. URLs and paths stay."""
    text = text.strip()
    if not text:
        return text
    if "://" in text or text.startswith("/"):
        return text
    return "/dev/" + text


#: [meter] keys every mode takes, and those of each mode (others are refused with the mode named)
_COMMON_KEYS = {"mode", "port", "baudrate"}
_MODE_KEYS = {
    "push": {"bytesize", "parity", "stopbits", "key", "auth_key", "profile", "wrapper", "min_interval",
             "protocol", "security"},
    "readout": {"interval", "initial_baudrate", "char_format", "use_checksum", "reset_baudrate", "no_waiting",
                "device_address", "query_code", "timeout", "wakeup", "retries", "baud_switch_delay",
                "readout_mode"},
    "poll": {"interval", "timeout", "mode_e", "client_address", "logical_address", "physical_address",
             "address_size", "authentication", "password", "key", "auth_key", "system_title", "state_file",
             "obis"},
}
_CONNECTION = {"push": "DLMS push", "readout": "IEC 62056-21", "poll": "DLMS poll"}


def _poll_config(m: Dict[str, str], port: str, base: str) -> Any:
    """[meter] of mode = poll as the DLMS client's PollConfig (keys and password never shown)."""
    from ..poll.config import PollConfig

    baud = m.get("baudrate", "9600").lower()
    state = m.get("state_file")
    return _built(
        "meter", PollConfig,
        port=port,
        mode_e=_bool("meter", "mode_e", m.get("mode_e", "no")),
        baudrate=9600 if baud == "auto" else _number("meter", "baudrate", baud, int),
        client_address=_number("meter", "client_address", m.get("client_address", "16"), int),
        logical_address=_number("meter", "logical_address", m.get("logical_address", "1"), int),
        physical_address=_number("meter", "physical_address", m.get("physical_address", "17"), int),
        address_size=_number("meter", "address_size", m.get("address_size", "2"), int),
        authentication=m.get("authentication", "none"),
        password=m.get("password") or None,
        key=m.get("key") or None,
        auth_key=m.get("auth_key") or None,
        system_title=m.get("system_title") or None,
        state_file=os.path.realpath(os.path.join(base, state)) if state else None,
        obis=tuple(c.strip() for c in m.get("obis", "").replace(";", ",").split(",") if c.strip()),
        timeout=_number("meter", "timeout", m.get("timeout", "3")),
    )


# -------------------------------------------------------------------------- INI
def _read_ini(path: str, text: str) -> StandaloneConfig:
    cp = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"), strict=True)
    try:
        cp.read_string(text, source=path)
    except configparser.Error as exc:
        raise ConfigurationError(f"{path} is not a valid INI file ({str(exc).splitlines()[0]})",
                                 "see venus/dlms-meter.ini.example for the layout") from None
    extra = _output_sections()
    for section in cp.sections():
        if section in extra:
            continue  # an output's own options, checked by its factory
        known = SECTIONS.get(section)
        if known is None:
            import difflib  # for a typo only: not in the running service

            hint = difflib.get_close_matches(section, list(SECTIONS) + extra, 1)
            raise ConfigurationError(f"{path}: unknown section [{section}]",
                                     f"did you mean [{hint[0]}]?" if hint else
                                     "use [meter], [victron], [logging]" + "".join(f", [{x}]" for x in extra))
        for key in cp[section]:
            if key not in known:
                import difflib

                hint = difflib.get_close_matches(key, known, 1)
                raise ConfigurationError(f"{path}: unknown option {key!r} in [{section}]",
                                         f"did you mean {hint[0]!r}?" if hint else "see the example file")
    m = {k: v.strip() for k, v in cp["meter"].items()} if cp.has_section("meter") else {}
    v = {k: x.strip() for k, x in cp["victron"].items()} if cp.has_section("victron") else {}
    lg = {k: x.strip() for k, x in cp["logging"].items()} if cp.has_section("logging") else {}
    m = {k: x for k, x in m.items() if x != ""}
    v = {k: x for k, x in v.items() if x != ""}

    mode = m.get("mode", "push").lower()
    if mode not in _MODE_KEYS:
        raise ConfigurationError(f"[meter] mode = {mode!r} is unknown", "use push, readout or poll")
    port = m.get("port", "")
    if not port:
        raise ConfigurationError(f"{path}: [meter] port is missing",
                                 "write port = /dev/serial/by-id/<your adapter> (ls /dev/serial/by-id)")
    port = _port(port)
    protocol = m.get("protocol", "dlms").lower()
    if protocol not in ("dlms", "sml", "d0", "auto"):
        raise ConfigurationError(f"[meter] protocol = {protocol!r} is unknown", "use dlms, sml, d0 or auto")
    wrong = sorted(set(m) - _COMMON_KEYS - _MODE_KEYS[mode])
    if wrong:
        raise ConfigurationError(f"[meter] {', '.join(wrong)} do not apply to mode = {mode}",
                                 "remove them or change mode")
    listener = readout = poll = None
    interval = 30.0
    base = os.path.dirname(path) or "."
    if mode == "poll":
        interval = _number("meter", "interval", m.get("interval", "30"))
        poll = _poll_config(m, port, base)
        default_timeout = 2 * interval + 60.0
    elif mode == "push":
        baud, line = listen_line(protocol)  # (an SML meter: 9600 8N1 unless the file says otherwise)
        bytesize, parity, _stop = parse_format(line)
        listener = _built(
            "meter", ListenerConfig,
            port=port,
            baudrate=_number("meter", "baudrate", m.get("baudrate", str(baud)), int),
            bytesize=_number("meter", "bytesize", m.get("bytesize", str(bytesize)), int),
            parity=_PARITY.get(m.get("parity", parity).upper(), m.get("parity", parity)),
            stopbits=_number("meter", "stopbits", m.get("stopbits", "1"), int),
            key=m.get("key") or None,  # type: ignore[arg-type]  # parsed by ListenerConfig
            auth_key=m.get("auth_key") or None,  # type: ignore[arg-type]
            profile=_profile(m.get("profile", "auto"), base),
            wrapper=m.get("wrapper", "auto"),
            security=m.get("security", "auto").lower(),
            min_interval=_number("meter", "min_interval", m.get("min_interval", "0")),
        )
        default_timeout = DEFAULT_PUSH_TIMEOUT
    else:
        interval = _number("meter", "interval", m.get("interval", "30"))
        readout = _built(
            "meter", ReadoutConfig,
            port=port,
            baudrate=m.get("baudrate", "auto"),
            use_checksum=_bool("meter", "use_checksum", m.get("use_checksum", "yes")),
            reset_baudrate=_bool("meter", "reset_baudrate", m.get("reset_baudrate", "yes")),
            no_waiting=_bool("meter", "no_waiting", m.get("no_waiting", "no")),
            device_address=m.get("device_address", ""),
            query_code=m.get("query_code", "?"),
            initial_baudrate=_number("meter", "initial_baudrate", m.get("initial_baudrate", "300"), int),
            char_format=m.get("char_format", "7E1"),  # ReadoutConfig parses it (config.parse_format)
            timeout=_number("meter", "timeout", m.get("timeout", "1.5")),
            wakeup=_bool("meter", "wakeup", m.get("wakeup", "no")),
            retries=_number("meter", "retries", m.get("retries", "1"), int),
            baud_switch_delay=_number("meter", "baud_switch_delay", m.get("baud_switch_delay", "0.3")),
            mode=m.get("readout_mode", "request"),
        )
        # a readout cycle plus margin: one failed read (retried next cycle) is still tolerated
        default_timeout = 2 * interval + 60.0
    options: Dict[str, Any] = {}
    notes: List[str] = []
    if "total_power_on_l1" in v:
        options["total_power_on_l1"] = v["total_power_on_l1"].lower()
        if options["total_power_on_l1"] not in _TOTAL_ON_L1:
            raise ConfigurationError(f"[victron] total_power_on_l1 = {v['total_power_on_l1']!r} is unknown",
                                     "use auto, yes or no")
    if "missing_part_is_zero" in v:  # gone: a missing part is never 0; kept readable so old files still start
        notes.append("[victron] missing_part_is_zero is ignored: net power is published only when the meter "
                     "sends it or both import and export (a missing part is never taken as 0)")
    bridge = _built(
        "victron", BridgeSettings,
        bus=v.get("bus", "auto"),
        role=v.get("role", "grid"),
        custom_name=v.get("custom_name", ""),
        device_suffix=v.get("device_suffix") or None,
        product_name=v.get("product_name", "DLMS smart meter"),
        timeout=_number("victron", "timeout", v["timeout"]) if "timeout" in v else default_timeout,
        refresh_time_ms=_number("victron", "refresh_time_ms", v["refresh_time_ms"], int)
        if "refresh_time_ms" in v else (int(interval * 1000) if mode != "push" else None),
        mapping_file=_confined("victron", "mapping_file", v["mapping_file"], base) if v.get("mapping_file") else None,
        port=port,
        connection=f"{_CONNECTION[mode]} {port}",
        device_instance=_number("victron", "device_instance", v.get("device_instance", "40"), int),
        mapping_options=options,
        **({"settings_wait": _number("victron", "settings_wait", v["settings_wait"])} if "settings_wait" in v else {}),
    )
    level = lg.get("level", "info").lower() or "info"
    if level not in ("debug", "info", "warning", "error"):
        raise ConfigurationError(f"[logging] level = {level!r} is unknown", "use debug, info, warning or error")
    outputs = {kind: {k: x.strip() for k, x in cp[kind].items() if x.strip() != ""}
               for kind in extra if cp.has_section(kind)}
    return StandaloneConfig(mode=mode, bridge=bridge, listener=listener, readout=readout, interval=interval,
                            log_level=level, source=f"INI ({path})", victron=cp.has_section("victron"),
                            outputs=outputs, protocol=protocol, notes=notes, poll=poll)


# ------------------------------------------------------------ dbus-dlms-meter
def _literal(node: ast.AST, where: str) -> Any:
    """A literal value, or ``Name.ATTR`` (``Parity.NONE``) as the string 'Parity.NONE'."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)) \
            and isinstance(node.operand, ast.Constant) and isinstance(node.operand.value, (int, float)):
        return -node.operand.value if isinstance(node.op, ast.USub) else node.operand.value
    if isinstance(node, ast.Attribute):
        parts = []
        cur: ast.AST = node
        while isinstance(cur, ast.Attribute):
            parts.append(cur.attr)
            cur = cur.value
        if isinstance(cur, ast.Name):
            parts.append(cur.id)
            return ".".join(reversed(parts))
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e, where) for e in node.elts]
    raise ConfigurationError(f"{where}: only literal values are read from config.py (the file is never executed)",
                             "write the value literally, e.g. 'ttyUSB0', 38400 or Parity.NONE")


def read_python_literals(text: str, filename: str) -> Dict[str, Any]:
    """Top-level ``NAME = literal`` assignments of a Python file, without executing it."""
    try:
        tree = ast.parse(text, filename)
    except (RecursionError, MemoryError):  # e.g. thousands of leading minus signs or brackets
        raise ConfigurationError(f"{filename}: an expression is nested too deeply to be a setting",
                                 "write each value literally, e.g. SERIAL_BAUD_RATE = 2400") from None
    except SyntaxError as exc:
        raise ConfigurationError(f"{filename}:{exc.lineno}: Python syntax error ({exc.msg})",
                                 "fix the line; the file is read as dbus-dlms-meter config.py") from None
    except ValueError:  # Python < 3.12: NUL bytes in the source
        raise ConfigurationError(f"{filename} contains NUL bytes", "save it as plain text") from None
    out: Dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # a docstring
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name, value_node = node.targets[0].id, node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            name, value_node = node.target.id, node.value
        else:
            LOG.warning("%s:%d: statement ignored (only NAME = value lines are read)", filename,
                        getattr(node, "lineno", 0))
            continue
        if name not in LEGACY_KEYS:
            LOG.warning("%s:%d: %s is not a dbus-dlms-meter setting; ignored", filename, node.lineno, name)
            continue
        try:
            out[name] = _literal(value_node, f"{filename}:{node.lineno} ({name})")
        except RecursionError:
            raise ConfigurationError(f"{filename}:{node.lineno} ({name}): the value is nested too deeply",
                                     "write the value literally, e.g. 'ttyUSB0' or 38400") from None
    return out


def _legacy_profile(telegram_id: Any, notes: List[str]) -> Optional[str]:
    tid = str(telegram_id or "").strip()
    if not tid or tid.lower() in ("auto", "default"):
        return None
    try:
        from ..dlms.profiles import load_profiles
        profiles = load_profiles()
    except Exception as exc:  # noqa: BLE001 - profile files are another area's; auto-detection still works
        LOG.debug("profiles not loadable: %r", exc)
        profiles = {}
    if tid in profiles or any(getattr(p, "family", None) == tid for p in profiles.values()):
        return tid
    # dbus-dlms-meter ids name a telegram *file* holding several layouts (live + usage lists);
    # our profiles of that meter share a family, so the family allows all of them
    matched = sorted(n for n in profiles if n.startswith(tid))
    families = {getattr(profiles[n], "family", None) for n in matched} - {None}
    if len(families) == 1:
        family = families.pop()
        notes.append(f"TELEGRAM_ID {tid!r}: using the profile family {family!r} ({', '.join(matched)} and "
                     "the other layouts of that meter)")
        return family
    notes.append(f"TELEGRAM_ID {tid!r} is a dbus-dlms-meter telegram file this driver does not know; "
                 "the layout is detected automatically (write a profile JSON if that fails)")
    return None


def _read_legacy(path: str, text: str) -> StandaloneConfig:
    values = read_python_literals(text, path)
    notes: List[str] = []
    where = os.path.basename(path)
    port = _port(str(values.get("TTY_INTERFACE") or ""))
    if not port:
        raise ConfigurationError(f"{where}: TTY_INTERFACE is missing", "write TTY_INTERFACE = 'ttyUSB0'")
    parity_raw = str(values.get("PARITY", "Parity.NONE"))
    parity = _PARITY.get(parity_raw.rsplit(".", 1)[-1].upper())
    if parity is None:
        raise ConfigurationError(f"{where}: PARITY = {parity_raw} is not supported",
                                 "use Parity.NONE, Parity.EVEN or Parity.ODD")
    stop_raw = str(values.get("STOP_BITS", "StopBits.ONE"))
    stopbits = _STOPBITS.get(stop_raw.rsplit(".", 1)[-1].upper())
    if stopbits is None:
        raise ConfigurationError(f"{where}: STOP_BITS = {stop_raw} is not supported",
                                 "use StopBits.ONE or StopBits.TWO")

    def whole(name: str, default: int) -> int:
        raw = values.get(name, default)
        if isinstance(raw, bool) or not isinstance(raw, (int, str)):
            raise ConfigurationError(f"{where}: {name} = {raw!r} is not a whole number",
                                     f"write e.g. {name} = {default}")
        return _number("config.py", name, str(raw), int)

    def key(name: str) -> Optional[str]:
        raw = values.get(name)
        if raw in (None, ""):
            return None
        if not isinstance(raw, str):
            raise ConfigurationError(f"{where}: {name} must be a string of hex digits", f"write {name} = '0123…'")
        return raw

    listener = _built(
        where, ListenerConfig,
        port=port, baudrate=whole("SERIAL_BAUD_RATE", 38400), bytesize=whole("BYTE_SIZE", 8), parity=parity,
        stopbits=stopbits, key=key("BLOCK_CIPHER_KEY"), auth_key=key("AUTHENTICATION_KEY"),  # type: ignore[arg-type]
        profile=_legacy_profile(values.get("TELEGRAM_ID"), notes),
    )
    bridge = BridgeSettings(port=port, connection=f"DLMS push {port}", timeout=DEFAULT_PUSH_TIMEOUT)
    return StandaloneConfig(mode="push", bridge=bridge, listener=listener,
                            source=f"dbus-dlms-meter config.py ({path})", notes=notes)


def _looks_legacy(path: str, text: str) -> bool:
    if os.path.splitext(path)[1] == ".py":
        return True
    head = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith(("#", ";")))
    return "TTY_INTERFACE" in head and "[" not in head.split("TTY_INTERFACE", 1)[0]


def load_config(path: str, victron: Optional[bool] = True) -> StandaloneConfig:
    """Read and check a config file (either format); ConfigurationError names the line or key.

    ``victron``: True publishes on D-Bus whatever the file says (``victron --config``); None
    (``serve``) only when the file has a [victron] section (dbus-dlms-meter's config.py: always).
    """
    p = str(path)
    try:
        with open(p, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigurationError(f"config file {path} cannot be read ({exc.strerror})",
                                 "check the path given with --config") from None
    except UnicodeDecodeError:
        raise ConfigurationError(f"config file {path} is not UTF-8 text", "save it as UTF-8") from None
    # cfg.notes are logged by the caller once the log level is set (serve_cli.cmd_serve)
    cfg = _read_legacy(p, text) if _looks_legacy(p, text) else _read_ini(p, text)
    if victron is not None:
        cfg.victron = victron
    from .mapping import Mapper
    Mapper(cfg.bridge.mapping_file, cfg.bridge.mapping_options)  # a bad mapping file or option: error now
    return cfg


__all__ = ["StandaloneConfig", "load_config", "read_python_literals", "SECTIONS", "LEGACY_KEYS"]
