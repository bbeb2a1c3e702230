"""Issue 13, items 7, 9 and 10: every number range-checked, every enum checked, file paths
confined, no decimal error out of the item writer, no traceback from the CLI, no key echoed.

Each case is a minimal input that crashed, hung or was accepted before.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tracemalloc
from decimal import Decimal
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlms_protocol.cli import redact_secrets
from dlms_protocol.config import ListenerConfig, ReadoutConfig
from dlms_protocol.errors import ConfigurationError
from dlms_protocol.victron.config_file import load_config
from dlms_protocol.victron.naming import MAX_SUFFIX, clean_suffix, derive_suffix
from shng_double import SmartHome
from shng_double.testing import plugins_dir, support

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
KEY = "000102030405060708090A0B0C0D0E0F"


def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dlms_protocol", *args], cwd=str(ROOT), env=ENV, input=stdin,
                          capture_output=True, text=True, timeout=60)


# ------------------------------------------------------------------ item 9: the dataclasses
@pytest.mark.parametrize("kw", [
    {"timeout": float("nan")}, {"timeout": float("inf")}, {"timeout": 0}, {"timeout": -1},
    {"identification_timeout": float("nan")}, {"initial_baudrate": 0}, {"initial_baudrate": -300},
    {"baudrate": 0}, {"baudrate": "0"}, {"push_baudrate": 0}, {"retries": -1}, {"retries": float("nan")},
    {"retries": 1.5}, {"baud_switch_delay": float("inf")}, {"baud_switch_delay": -0.1},
    {"max_read_time": 0}, {"timeout": "1.5"},
])
def test_readout_config_refuses_numbers_out_of_range(kw: Dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="out of range|neither"):
        ReadoutConfig(port="x", **kw)


@pytest.mark.parametrize("kw", [
    {"baudrate": 0}, {"baudrate": float("nan")}, {"bytesize": 5}, {"stopbits": 3}, {"stopbits": True},
    {"min_interval": float("nan")}, {"min_interval": -1},
])
def test_listener_config_refuses_numbers_and_enums_out_of_range(kw: Dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        ListenerConfig(port="x", **kw)


def test_valid_configs_still_pass() -> None:
    assert ReadoutConfig(port="x", baudrate="9600", timeout=0.5, retries=0, baud_switch_delay=0).baudrate == 9600
    assert ListenerConfig(port="x", baudrate=115200, bytesize=8, parity="N", stopbits=1).baudrate == 115200


# ------------------------------------------------------------------ item 9: config files
READOUT = "[meter]\nmode = readout\nport = /dev/ttyUSB0\n"
PUSH = "[meter]\nport = /dev/ttyUSB0\n"

BROKEN_INI = [
    READOUT + "interval = nan\n", READOUT + "interval = inf\n", READOUT + "interval = 0\n",
    READOUT + "interval = -5\n", READOUT + "timeout = nan\n", READOUT + "timeout = 0\n",
    READOUT + "initial_baudrate = 0\n", READOUT + "retries = -1\n", READOUT + "baudrate = 0\n",
    READOUT + "baud_switch_delay = inf\n", PUSH + "baudrate = 0\n", PUSH + "baudrate = -2400\n",
    PUSH + "bytesize = 5\nstopbits = 3\n", PUSH + "min_interval = nan\n",
    PUSH + "[victron]\ntimeout = inf\n", PUSH + "[victron]\ntimeout = nan\n", PUSH + "[victron]\ntimeout = 0\n",
    PUSH + "[victron]\nrefresh_time_ms = 0\n", PUSH + "[victron]\ndevice_instance = 100000\n",
    PUSH + "[victron]\ntotal_power_on_l1 = maybe\n",
    PUSH + "profile = /etc/passwd\n", PUSH + "profile = ../../../../etc/passwd\n",
    PUSH + "[victron]\nmapping_file = /etc/passwd\n", PUSH + "[victron]\nmapping_file = ../outside.json\n",
    PUSH + "[victron]\nmapping_file = missing.json\n",
]


@pytest.mark.parametrize("text", BROKEN_INI)
def test_broken_ini_is_a_configuration_error(tmp_path: Path, text: str) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    (tmp_path / "outside.json").write_text("{}")
    path = folder / "dlms-meter.ini"
    path.write_text(text)
    with pytest.raises(ConfigurationError):
        load_config(str(path))


def test_check_config_calls_every_broken_ini_invalid(tmp_path: Path) -> None:
    """--check-config runs them all (one process per file would take minutes: run them in one)."""
    folder = tmp_path / "conf"
    folder.mkdir()
    paths = []
    for i, text in enumerate(BROKEN_INI):
        p = folder / f"{i}.ini"
        p.write_text(text)
        paths.append(str(p))
    script = ("import sys\nfrom dlms_protocol.cli import main\n"
              "codes = [main(['victron', '--config', p, '--check-config']) for p in sys.argv[1:]]\n"
              "print('CODES', codes)\n")
    res = subprocess.run([sys.executable, "-c", script, *paths], cwd=str(ROOT), env=ENV, capture_output=True,
                         text=True, timeout=120)
    assert "Traceback" not in res.stderr, res.stderr
    codes = eval(res.stdout.split("CODES", 1)[1])  # noqa: S307 - our own list of ints
    assert codes == [2] * len(BROKEN_INI)
    assert res.stderr.count("error: ") == len(BROKEN_INI)


def test_files_inside_the_config_folder_are_taken(tmp_path: Path) -> None:
    (tmp_path / "mapping.json").write_text('{"options": {"total_power_on_l1": "yes"}}')
    (tmp_path / "my_meter.json").write_text("{}")
    path = tmp_path / "dlms-meter.ini"
    path.write_text(PUSH + "profile = my_meter.json\n[victron]\nmapping_file = mapping.json\n"
                    "total_power_on_l1 = yes\n")
    cfg = load_config(str(path))
    assert cfg.bridge.mapping_file == str((tmp_path / "mapping.json").resolve())
    assert cfg.listener is not None and cfg.listener.profile == str((tmp_path / "my_meter.json").resolve())
    path.write_text(PUSH + "profile = landis_gyr_e450\n")
    assert load_config(str(path)).listener.profile == "landis_gyr_e450"  # a name, not a path


def test_mapping_file_with_a_non_numeric_factor_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "mapping.json").write_text('{"units": {"W": {"W": 1, "kW": "abc"}}}')
    path = tmp_path / "dlms-meter.ini"
    path.write_text(PUSH + "[victron]\nmapping_file = mapping.json\n")
    with pytest.raises(ConfigurationError, match="not a number"):
        load_config(str(path))
    (tmp_path / "mapping.json").write_text('{"units": {"W": {"W": 1, "kW": "Infinity"}}}')
    with pytest.raises(ConfigurationError, match="not a number"):
        load_config(str(path))


def test_legacy_config_py_with_thousands_of_minus_signs(tmp_path: Path) -> None:
    """Read, never executed, and a clean error instead of RecursionError."""
    path = tmp_path / "config.py"
    path.write_text("TTY_INTERFACE = 'ttyUSB0'\nSERIAL_BAUD_RATE = " + "-" * 5000 + "2400\n")
    with pytest.raises(ConfigurationError):
        load_config(str(path))
    path.write_text("TTY_INTERFACE = 'ttyUSB0'\nSERIAL_BAUD_RATE = " + "[" * 3000 + "]" * 3000 + "\n")
    with pytest.raises(ConfigurationError):
        load_config(str(path))
    path.write_text("TTY_INTERFACE = 'ttyUSB0'\nSERIAL_BAUD_RATE = 0\n")
    with pytest.raises(ConfigurationError, match="out of range"):
        load_config(str(path))
    path.write_text("TTY_INTERFACE = 'ttyUSB0'\nBYTE_SIZE = 5\n")
    with pytest.raises(ConfigurationError, match="bytesize"):
        load_config(str(path))


# ------------------------------------------------------------------ item 9: D-Bus service name
_BUS_ELEMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def test_a_230_character_serial_gives_a_valid_bounded_stable_name() -> None:
    serial = "1ESY" + "9" * 230
    name = derive_suffix(None, serial, None, "/dev/ttyUSB0")
    assert _BUS_ELEMENT.fullmatch(name) and len(name) <= MAX_SUFFIX + len("dlms_")
    assert name == derive_suffix(None, serial, None, "/dev/ttyUSB1")  # stable: from the serial only
    assert name != derive_suffix(None, serial[:-1] + "8", None, "")   # two long serials stay apart
    assert derive_suffix(None, "1ESY1160142770", None, "") == "dlms_1ESY1160142770"  # short ones unchanged


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_any_serial_gives_a_valid_bus_name_element(serial: str) -> None:
    name = derive_suffix(None, serial, None, "/dev/ttyUSB0")
    assert _BUS_ELEMENT.fullmatch(name) and len(name) <= MAX_SUFFIX + len("dlms_")
    assert len("com.victronenergy.grid." + name) < 255
    cleaned = clean_suffix(serial)
    assert cleaned == "" or (_BUS_ELEMENT.fullmatch(cleaned) and len(cleaned) <= MAX_SUFFIX)


# ------------------------------------------------------------------ item 7: the CLI
@pytest.mark.parametrize("args", [
    ("read", "/dev/null", "--timeout", "nan"), ("read", "/dev/null", "--timeout", "0"),
    ("read", "/dev/null", "--retries", "-1"), ("read", "/dev/null", "--push-baudrate", "0"),
    ("listen", "/dev/null", "--baudrate", "0"), ("listen", "/dev/null", "--min-interval", "nan"),
    ("simulate", "--time-scale", "0"), ("simulate", "--time-scale", "nan"),
    ("dump", "--hex", "00", "--template", "/nonexistent/folder/x.json"),
    ("dump", "--hex", "00", "--template", "/tmp"),
])
def test_cli_values_out_of_range_are_usage_errors(args: tuple) -> None:
    res = cli(*args)
    assert res.returncode == 2 and "error:" in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_read_with_an_out_of_range_baudrate_is_a_clean_error() -> None:
    res = cli("read", "/dev/null", "--baudrate", "0")
    assert res.returncode in (1, 2) and "baudrate" in res.stderr and "Traceback" not in res.stderr


def test_parse_of_a_50_mb_file_stays_small(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    with open(big, "wb") as fh:
        line = b"1.8.0(" + b"1" * 60 + b")\r\n"
        fh.write(b"/ABC5X\r\n" + line * (50_000_000 // len(line)) + b"!\r\n")
    from dlms_protocol.iec62056_21 import cli as d0cli
    import argparse
    args = argparse.Namespace(file=str(big), no_checksum=False, json=True, items=False)
    tracemalloc.start()
    try:
        assert d0cli.cmd_parse(args) == 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50_000_000 / 4  # a bound, not a timing: the file is never read whole
    res = cli("parse", str(big))
    assert res.returncode == 1 and "not one readout" in res.stderr


# ------------------------------------------------------------------ item 7: fit_to_type
def test_fit_to_type_with_a_2_mb_value_is_a_clear_value_problem() -> None:
    ps = support()
    huge = Decimal("9" * 2_000_000)
    for item_type in ("num", "str", "bool"):
        with pytest.raises(ps.ValueProblem, match="digits or characters"):
            ps.fit_to_type(huge, item_type, "1.8.0")
    with pytest.raises(ps.ValueProblem):
        ps.fit_to_type("9" * 2_000_000, "num", "1.8.0")


def test_a_400_digit_value_in_a_str_item_is_its_digits_not_inf() -> None:
    ps = support()
    value = Decimal("1" + "0" * 399)
    assert ps.fit_to_type(value, "str") == "1" + "0" * 399
    with pytest.raises(ps.ValueProblem, match="too large"):
        ps.fit_to_type(value, "num")
    assert ps.fit_to_type(Decimal("12.5"), "str") == "12.5"


@pytest.fixture
def shng() -> Iterator[SmartHome]:
    sh = SmartHome(plugins_dir())
    yield sh
    sh.stop()


def test_one_unwritable_value_leaves_the_other_items_written(shng: SmartHome) -> None:
    """_apply stopped at a decimal.Overflow and left the remaining items unwritten."""
    ps = support()
    loaded = shng.load_plugins({"dlms": {"plugin_name": "dlms", "serialport": "/dev/null-not-there",
                                         "update_cycle": 3600}})
    shng.load_item_tree({"meter": {
        "huge": {"type": "num", "dlms_obis_code": "1.8.0", "dlms_unit": "Wh"},
        "long": {"type": "str", "dlms_obis_code": "3.8.0"},
        "power": {"type": "num", "dlms_obis_code": "1.7.0"},
    }})
    plugin = loaded[0]
    data = ps.MeterData("readout", (
        ps.Reading("1.8.0", ps.Obis.parse("1.8.0"), Decimal("9" * 2_000_000), "kWh"),
        ps.Reading("3.8.0", ps.Obis.parse("3.8.0"), Decimal("1" + "0" * 399), None, raw="1" + "0" * 399),
        ps.Reading("1.7.0", ps.Obis.parse("1.7.0"), Decimal("1.193"), "kW"),
    ))
    plugin._apply(data)
    assert shng.items.return_item("meter.power")() == 1.193
    assert shng.items.return_item("meter.long")() == "1" + "0" * 399
    assert re.search("out of range|digits or characters", plugin._item_problems["meter.huge"])


# ------------------------------------------------------------------ item 10: no key echoed
@pytest.mark.parametrize("args", [
    ("decode", "--key", *re.findall("..", KEY), "--hex", "00"),
    ("decode", "--kye", KEY, "--hex", "00"),
    ("decode", "--hex", "00", "--auth-key", KEY, "--kye=" + KEY),
    ("decode", "--key", KEY, "--wrapper", KEY),
])
def test_usage_errors_never_echo_a_key(args: tuple) -> None:
    res = cli(*args)
    assert res.returncode == 2 and "error:" in res.stderr
    out = res.stdout + res.stderr
    assert KEY not in out and KEY.lower() not in out and "0A 0B 0C" not in out.upper()
    assert "0102030405" not in out.replace(" ", "")
    assert "[redacted]" in res.stderr


def test_redaction_keeps_harmless_words() -> None:
    assert redact_secrets("unrecognized arguments: 2400 /dev/ttyUSB0") == "unrecognized arguments: 2400 /dev/ttyUSB0"
    assert redact_secrets("unrecognized arguments: --kye 00:11:22:33:44:55:66:77") == \
        "unrecognized arguments: --kye [redacted]"


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=4, max_size=16), st.sampled_from([" ", ":", "-", ""]), st.text(max_size=20))
def test_no_hex_run_of_8_digits_survives_redaction(key: bytes, sep: str, before: str) -> None:
    message = f"{before} unrecognized arguments: " + sep.join(f"{b:02x}" for b in key)
    redacted = redact_secrets(message)
    assert key.hex() not in re.sub(r"[\s:-]", "", redacted.split("arguments:", 1)[1])


# ------------------------------------------------------------ keys YAML read as numbers
def _as_shng_str(yaml_line: str) -> str:
    """What the plugin gets for ``key: …`` in etc/plugin.yaml: SmartHomeNG's YAML 1.2 value, made
    text by the ``type: str`` of plugin.yaml (shng_double.metadata: ``str(value)``)."""
    from shng_double import yaml12

    return str(yaml12.load(yaml_line)["key"])


def test_an_unquoted_0x_key_is_taken_back_as_hex() -> None:
    from dlms_protocol.config import parse_key

    hex_key = "A89AE6C225E45130298B3CC3F4D23463"
    assert parse_key(_as_shng_str(f"key: 0x{hex_key}")) == bytes.fromhex(hex_key)
    assert parse_key(int(hex_key, 16)) == bytes.fromhex(hex_key)


@pytest.mark.parametrize("line", [
    "key: 0x0A89AE6C225E45130298B3CC3F4D2346",   # leading 0: the width is lost, 31 digits would pass too
    "key: 0xA89AE6C225E45130298B3CC3F4D2346",     # 31 hex digits
    "key: 01234567890123456789012345678901",     # digits: decimal, the leading 0 is lost
])
def test_a_key_yaml_read_as_a_number_that_cannot_be_taken_back_asks_for_quotes(line: str) -> None:
    from dlms_protocol.config import parse_key

    text = _as_shng_str(line)
    with pytest.raises(ConfigurationError) as info:
        parse_key(text)
    assert "quotes" in str(info.value)
    assert text not in str(info.value) and text[:8] not in str(info.value)
    with pytest.raises(ConfigurationError, match="quotes"):
        parse_key(int(text))


def test_a_key_of_the_wrong_length_says_the_length_not_hex() -> None:
    from dlms_protocol.config import parse_key

    key = "A89AE6C225E45130298B3CC3F4D23463" * 2
    with pytest.raises(ConfigurationError) as info:
        parse_key(key[:63])
    assert "63 hex digits; a key has 32" in str(info.value)
    assert "not a hex" not in str(info.value) and key[:8] not in str(info.value)
