"""Config files of the standalone service: our INI format and dbus-dlms-meter's config.py."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from dlms_protocol.errors import ConfigurationError
from dlms_protocol.victron.config_file import load_config, read_python_literals

ROOT = Path(__file__).resolve().parent.parent
KEY = "000102030405060708090A0B0C0D0E0F"
AKEY = "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"

LEGACY = """from gurux_common.io import Parity, StopBits

TTY_INTERFACE = 'ttyUSB0'  # Default TTY interface

SERIAL_BAUD_RATE = 38400
BYTE_SIZE = 8
PARITY = Parity.NONE  # No parity
STOP_BITS = StopBits.ONE  # One stop bit


AUTHENTICATION_KEY = '{ak}'
BLOCK_CIPHER_KEY = '{ek}'
TELEGRAM_ID = '{tid}'
"""


def write(tmp_path: Path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


# ------------------------------------------------------------------ dbus-dlms-meter
def test_legacy_config_py_is_read_without_executing(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    text = LEGACY.format(ak=AKEY, ek=KEY, tid="") + f"\nopen({str(marker)!r}, 'w')\n"
    cfg = load_config(write(tmp_path, "config.py", text))
    assert not marker.exists()  # the file was parsed, not run (and the gurux import need not resolve)
    lc = cfg.listener
    assert lc is not None and cfg.mode == "push"
    assert (lc.port, lc.baudrate, lc.bytesize, lc.parity, lc.stopbits) == ("/dev/ttyUSB0", 38400, 8, "N", 1)
    assert lc.key == bytes.fromhex(KEY) and lc.auth_key == bytes.fromhex(AKEY)
    assert lc.profile is None  # empty TELEGRAM_ID: detect the layout
    assert cfg.bridge.role == "grid" and cfg.bridge.port == "/dev/ttyUSB0"


@pytest.mark.parametrize("tid, expected", [("", None), ("auto", None), ("default", None),
                                           ("si-sodo-reduxi", "si-sodo"), ("si-sodo-elektromaribor", "si-sodo"),
                                           ("my-own-telegrams", None)])
def test_legacy_telegram_id(tmp_path: Path, tid: str, expected: str) -> None:
    cfg = load_config(write(tmp_path, "config.py", LEGACY.format(ak="", ek="", tid=tid)))
    assert cfg.listener is not None and cfg.listener.profile == expected
    assert cfg.listener.key is None and cfg.listener.auth_key is None


@pytest.mark.parametrize("line, value", [("PARITY = Parity.EVEN", "E"), ("PARITY = Parity.ODD", "O"),
                                         ("PARITY = 'N'", "N")])
def test_legacy_parity_spellings(tmp_path: Path, line: str, value: str) -> None:
    text = LEGACY.format(ak="", ek="", tid="").replace("PARITY = Parity.NONE  # No parity", line)
    cfg = load_config(write(tmp_path, "config.py", text))
    assert cfg.listener is not None and cfg.listener.parity == value


@pytest.mark.parametrize("old, new, fragment", [
    ("PARITY = Parity.NONE", "PARITY = Parity.MARK", "PARITY"),
    ("STOP_BITS = StopBits.ONE", "STOP_BITS = StopBits.ONE_POINT_FIVE", "STOP_BITS"),
    ("SERIAL_BAUD_RATE = 38400", "SERIAL_BAUD_RATE = int('38400')", "only literal values"),
    ("SERIAL_BAUD_RATE = 38400", "SERIAL_BAUD_RATE = 'fast'", "not a number"),
    ("TTY_INTERFACE = 'ttyUSB0'", "TTY_INTERFACE = ''", "TTY_INTERFACE"),
    ("BYTE_SIZE = 8", "BYTE_SIZE = 8 +", "syntax error"),
])
def test_legacy_errors_name_the_setting(tmp_path: Path, old: str, new: str, fragment: str) -> None:
    text = LEGACY.format(ak="", ek="", tid="").replace(old, new)
    with pytest.raises(ConfigurationError, match=fragment):
        load_config(write(tmp_path, "config.py", text))


def test_legacy_bad_key_never_shows_the_key(tmp_path: Path) -> None:
    secret = "00112233445566778899AABBCCDDEE"  # 15 bytes
    with pytest.raises(ConfigurationError) as info:
        load_config(write(tmp_path, "config.py", LEGACY.format(ak="", ek=secret, tid="")))
    assert secret not in str(info.value) and "15 bytes" in str(info.value)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200))
def test_literal_reader_never_executes_or_crashes(text: str) -> None:
    try:
        read_python_literals(text, "config.py")
    except ConfigurationError:
        pass


# ---------------------------------------------------------------------------- INI
INI = f"""
[meter]
mode = push
port = /dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A1B2C3-if00-port0
baudrate = 115200
parity = N
key = {KEY}   ; inline comment
profile = auto

[victron]
bus = unix:path=/run/dbus/system_bus_socket
role = pvinverter
custom_name = PV meter
device_instance = 33
timeout = 4
total_power_on_l1 = yes

[logging]
level = debug
"""


def test_ini_push(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "m.ini", INI))
    lc, b = cfg.listener, cfg.bridge
    assert lc is not None and lc.port.endswith("A1B2C3-if00-port0") and lc.baudrate == 115200
    assert lc.parity == "N" and lc.key == bytes.fromhex(KEY) and lc.profile is None
    assert (b.bus, b.role, b.custom_name, b.device_instance, b.timeout) == (
        "unix:path=/run/dbus/system_bus_socket", "pvinverter", "PV meter", 33, 4.0)
    assert b.mapping_options == {"total_power_on_l1": "yes"} and cfg.log_level == "debug"
    assert KEY not in repr(cfg) and KEY not in str(cfg.describe())
    assert ("key", "set") in cfg.describe()


def test_ini_push_security_policy(tmp_path: Path) -> None:
    """A meter that really sends plaintext although the operator handed out keys: security = any."""
    cfg = load_config(write(tmp_path, "s.ini", f"[meter]\nport = /dev/x\nkey = {KEY}\nsecurity = ANY\n"))
    assert cfg.listener is not None and cfg.listener.security == "any"
    assert ("security", "any") in cfg.describe()
    default = load_config(write(tmp_path, "d.ini", "[meter]\nport = /dev/x\n"))
    assert default.listener is not None and default.listener.security == "auto"


def test_ini_settings_wait(tmp_path: Path) -> None:
    """How long the service waits for localsettings before registering without it (GX default 60 s)."""
    assert load_config(write(tmp_path, "d.ini", "[meter]\nport = /dev/x\n")).bridge.settings_wait == 60.0
    cfg = load_config(write(tmp_path, "w.ini", "[meter]\nport = /dev/x\n[victron]\nsettings_wait = 5\n"))
    assert cfg.bridge.settings_wait == 5.0 and ("settings_wait", "5 s") in cfg.describe()
    with pytest.raises(ConfigurationError, match="settings_wait"):
        load_config(write(tmp_path, "b.ini", "[meter]\nport = /dev/x\n[victron]\nsettings_wait = -1\n"))


def test_ini_poll(tmp_path: Path) -> None:
    """mode = poll: the DLMS/COSEM client's settings; the password is never shown."""
    cfg = load_config(write(tmp_path, "p.ini", "[meter]\nmode = poll\nport = /dev/ttyUSB0\ninterval = 15\n"
                            "client_address = 32\nphysical_address = 145\nauthentication = low\n"
                            "password = 12345678\nobis = 1.8.0; 2.8.0, 1-0:16.7.0\nstate_file = ic.state\n"))
    pc = cfg.poll
    assert pc is not None and cfg.listener is None and cfg.readout is None and cfg.mode == "poll"
    assert (pc.port, pc.client_address, pc.physical_address, pc.authentication) == ("/dev/ttyUSB0", 32, 145, "low")
    assert pc.obis == ("1.8.0", "2.8.0", "1-0:16.7.0") and pc.state_file == str(tmp_path / "ic.state")
    assert cfg.interval == 15.0 and cfg.bridge.timeout == 2 * 15 + 60 and cfg.bridge.refresh_time_ms == 15000
    assert cfg.bridge.connection == "DLMS poll /dev/ttyUSB0"
    shown = str(cfg.describe()) + repr(cfg)
    assert "12345678" not in shown and ("obis", "1.8.0, 2.8.0, 1-0:16.7.0") in cfg.describe()


def test_ini_readout_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "r.ini", "[meter]\nmode = readout\nport = /dev/ttyUSB1\ninterval = 60\n"))
    assert cfg.readout is not None and cfg.listener is None
    assert cfg.readout.baudrate == "auto" and cfg.readout.char_format == "7E1"
    assert cfg.interval == 60.0
    assert cfg.bridge.timeout == 2 * 60 + 60  # readout cycle plus margin
    assert cfg.bridge.refresh_time_ms == 60000


@pytest.mark.parametrize("text, fragment", [
    ("[meter]\nport = /dev/x\nbaudrat = 9600\n", "did you mean 'baudrate'"),
    ("[metre]\nport = /dev/x\n", r"did you mean \[meter\]"),
    ("[meter]\nmode = push\n", "port is missing"),
    ("[meter]\nport = /dev/x\nmode = pull\n", "use push, readout or poll"),
    ("[meter]\nport = /dev/x\nclient_address = 16\n", "do not apply to mode = push"),
    ("[meter]\nmode = poll\nport = tcp://h:4059\nparity = E\n", "do not apply to mode = poll"),
    ("[meter]\nmode = poll\nport = tcp://h:4059\nauthentication = low\n", "needs a password"),
    ("[meter]\nmode = poll\nport = tcp://h:4059\nobis = 1.8.0, 1.8.x\n", "not an OBIS code"),
    ("[meter]\nport = /dev/x\ninterval = 5\n", "do not apply to mode = push"),
    ("[meter]\nport = /dev/x\nkey = 0011\n", "2 bytes"),
    ("[meter]\nport = /dev/x\n[victron]\nrole = battery\n", "role"),
    ("[meter]\nport = /dev/x\n[victron]\ntimeout = soon\n", "not a number"),
    ("[meter]\nport = /dev/x\n[logging]\nlevel = loud\n", "level"),
    ("no section header\n", "not a valid INI"),
    ("[meter]\nport = /dev/x\nsecurity = maybe\n", "security 'maybe' unknown"),
    ("[meter]\nmode = readout\nport = /dev/x\nsecurity = any\n", "do not apply to mode = readout"),
])
def test_ini_errors(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        load_config(write(tmp_path, "bad.ini", text))


def test_missing_file() -> None:
    with pytest.raises(ConfigurationError, match="cannot be read"):
        load_config("/nonexistent/dlms-meter.ini")


def test_example_file_is_valid() -> None:
    cfg = load_config(str(ROOT / "venus" / "dlms-meter.ini.example"))
    assert cfg.mode == "push" and cfg.bridge.timeout == 10.0


def test_check_config_cli(tmp_path: Path) -> None:
    path = write(tmp_path, "config.py", LEGACY.format(ak="", ek=KEY, tid="si-sodo-reduxi"))
    res = subprocess.run([sys.executable, "-m", "dlms_protocol", "victron", "--config", path, "--check-config"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "dbus-dlms-meter config.py" in res.stdout and "38400 8N1" in res.stdout
    assert "key              set" in res.stdout and KEY not in res.stdout + res.stderr
    bad = write(tmp_path, "bad.ini", "[meter]\nport = /dev/x\nparity = X\n")
    res = subprocess.run([sys.executable, "-m", "dlms_protocol", "victron", "--config", bad, "--check-config"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "parity" in res.stderr


def test_config_notes_reach_the_service_log(tmp_path: Path) -> None:
    """How TELEGRAM_ID was mapped is logged after the log level is set (it used to be dropped)."""
    import os
    import signal
    import time

    path = write(tmp_path, "config.py", LEGACY.format(ak="", ek="", tid="si-sodo-reduxi").replace(
        "'ttyUSB0'", f"'{tmp_path / 'no-such-port'}'"))
    log = tmp_path / "service.log"
    env = dict(os.environ, DBUS_SESSION_BUS_ADDRESS=f"unix:path={tmp_path / 'no-bus'}")
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "dlms_protocol", "victron", "--config", path],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while "dlms_protocol" not in log.read_text() and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    text = log.read_text()
    assert "config: TELEGRAM_ID 'si-sodo-reduxi'" in text, text


def test_install_from_legacy_config_keeps_the_keys_private(tmp_path: Path) -> None:
    """install.sh --from copies dbus-dlms-meter's config.py (with the keys): only root may read it,
    and nothing install.sh prints shows a key."""
    legacy = Path(write(tmp_path, "config.py", LEGACY.format(ak=AKEY, ek=KEY, tid="")))
    legacy.chmod(0o644)
    dest = tmp_path / "data" / "dbus-dlms-meter"
    env = {"PATH": "/usr/bin:/bin", "DLMS_METER_DIR": str(dest), "DLMS_METER_SERVICE_ROOT": str(tmp_path / "service"),
           "DLMS_METER_RC_LOCAL": str(tmp_path / "data" / "rc.local"), "DLMS_METER_UDEV_DIR": str(tmp_path / "udev"),
           "DLMS_METER_PYTHON": sys.executable}
    res = subprocess.run(["sh", str(ROOT / "venus" / "install.sh"), "--from", str(legacy)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (dest / "config.py").read_text() == legacy.read_text()
    assert (dest / "config.py").stat().st_mode & 0o077 == 0
    for key in (KEY, AKEY):
        assert key not in res.stdout + res.stderr and key.lower() not in res.stdout + res.stderr
    # byte-compiled at install: every module has a cache file of this Python, so no start compiles
    sources = sorted((dest / "dlms_protocol").rglob("*.py"))
    assert sources and all(Path(importlib.util.cache_from_source(str(p))).is_file() for p in sources)


@pytest.mark.parametrize("key, ctypes", [(True, False), (True, True), (False, False)],
                         ids=["key-no-openssl", "key-openssl", "plain"])
def test_install_gets_cryptography_through_opkg_only_where_a_key_has_no_aes_engine(tmp_path: Path, key: bool,
                                                                                  ctypes: bool) -> None:
    """Stock Venus OS has no cryptography: for a configuration with a key install.sh runs opkg for
    it only when Python's own OpenSSL is not usable either (no ctypes), and says which engine
    deciphers; a plain meter needs neither. The Python here is made to miss cryptography (and
    ctypes) by blocking packages on its path; the stub opkg 'installs' it by removing its block."""
    block = tmp_path / "block"
    for name in ("cryptography",) + (() if ctypes else ("ctypes",)):
        (block / name).mkdir(parents=True)
        (block / name / "__init__.py").write_text("raise ImportError('not installed (test)')\n")
    python = tmp_path / "python3"
    python.write_text(f'#!/bin/sh\nPYTHONPATH="{block}${{PYTHONPATH:+:$PYTHONPATH}}" exec {sys.executable} "$@"\n')
    python.chmod(0o755)
    opkg = tmp_path / "opkg"
    opkg.write_text(f'#!/bin/sh\necho "opkg $*" >> "{tmp_path}/opkg.log"\n'
                    f'[ "$1" = install ] && rm -rf "{block}/cryptography"\nexit 0\n')
    opkg.chmod(0o755)
    cfg = tmp_path / "dlms-meter.ini"
    cfg.write_text("[meter]\nport = /dev/ttyUSB0\n" + (f"key = {KEY}\n" if key else ""))
    dest = tmp_path / "data" / "dbus-dlms-meter"
    dest.mkdir(parents=True)
    (dest / "dlms-meter.ini").write_text(cfg.read_text())
    env = {"PATH": "/usr/bin:/bin", "DLMS_METER_DIR": str(dest), "DLMS_METER_SERVICE_ROOT": str(tmp_path / "service"),
           "DLMS_METER_RC_LOCAL": str(tmp_path / "data" / "rc.local"), "DLMS_METER_UDEV_DIR": str(tmp_path / "udev"),
           "DLMS_METER_PYTHON": str(python), "DLMS_METER_OPKG": str(opkg)}
    res = subprocess.run(["sh", str(ROOT / "venus" / "install.sh")], env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    log = (tmp_path / "opkg.log").read_text() if (tmp_path / "opkg.log").exists() else ""
    if key and not ctypes:
        assert log == "opkg update\nopkg install python3-cryptography\n"
        assert "installing it with opkg" in res.stdout and "installed python3-cryptography" in res.stdout
        assert "deciphered with cryptography" in res.stdout
    elif key:
        assert log == "" and "deciphered with OpenSSL" in res.stdout
    else:
        assert log == "" and "no AES-GCM needed" in res.stdout
    assert KEY not in res.stdout + res.stderr


_STUB_MOUNT = """#!/bin/sh
echo "mount $*" >> "$STUB_LOG"
case "$*" in
    *remount,rw*) sed -i 's| / ext4 ro,| / ext4 rw,|' "$FAKE_MOUNTS" ;;
    *remount,ro*) sed -i 's| / ext4 rw,| / ext4 ro,|' "$FAKE_MOUNTS" ;;
esac
"""


@pytest.mark.parametrize("root", ["ro", "rw"])
@pytest.mark.parametrize("script", ["uninstall.sh", "boot.sh"])
def test_udev_rule_change_leaves_the_root_file_system_as_it_was(tmp_path: Path, script: str, root: str) -> None:
    """Venus OS mounts / read-only; boot.sh (re-applying the udev rule) and uninstall.sh
    (removing it) open it for the change and close it again. Remounting this machine's / is
    not possible in a test, so ``mount`` and remount-rw.sh are stand-ins that flip a copy of
    /proc/mounts (passed through install.conf, as on a device) and log their calls."""
    base = tmp_path / "data" / "dbus-dlms-meter"
    (base / "dlms_protocol").mkdir(parents=True)
    (base / "dlms_protocol" / "__init__.py").write_text("")
    (base / "udev").mkdir()
    for name in ("boot.sh", "uninstall.sh", "rootfs.sh"):
        (base / name).write_text((ROOT / "venus" / name).read_text())
    udev = tmp_path / "etc" / "udev" / "rules.d"
    udev.mkdir(parents=True)
    rule = 'ACTION=="add", ENV{ID_SERIAL_SHORT}=="A1B2", ENV{VE_SERVICE}="ignore"\n'
    if script == "boot.sh":
        (base / "udev" / "zz-dbus-dlms-meter.rules").write_text(rule)  # a firmware update lost /etc's copy
    else:
        (udev / "zz-dbus-dlms-meter.rules").write_text(rule)
    mounts = tmp_path / "mounts"
    mounts.write_text(f"/dev/mmcblk0p2 / ext4 {root},relatime 0 0\n/dev/mmcblk0p4 /data ext4 rw,relatime 0 0\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    stubs = {"mount": _STUB_MOUNT, "udevadm": '#!/bin/sh\necho "udevadm $*" >> "$STUB_LOG"\n',
             "svc": '#!/bin/sh\necho "svc $*" >> "$STUB_LOG"\n',
             "remount-rw.sh": '#!/bin/sh\necho "remount-rw.sh" >> "$STUB_LOG"\nmount -o remount,rw /\n'}
    for name, text in stubs.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (base / "install.conf").write_text(
        f'SERVICE_ROOT="{tmp_path / "service"}"\nRC_LOCAL="{tmp_path / "data" / "rc.local"}"\n'
        f'UDEV_DIR="{udev}"\nMOUNTS="{mounts}"\nREMOUNT_RW="{bin_dir / "remount-rw.sh"}"\n')
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "STUB_LOG": str(log), "FAKE_MOUNTS": str(mounts)}
    res = subprocess.run(["sh", str(base / script)], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (udev / "zz-dbus-dlms-meter.rules").exists() == (script == "boot.sh")
    calls = log.read_text().splitlines() if log.exists() else []
    assert f"/dev/mmcblk0p2 / ext4 {root}," in mounts.read_text()  # as it was before
    if root == "ro":
        assert calls.index("remount-rw.sh") < calls.index("mount -o remount,ro /")
    else:
        assert not [c for c in calls if "remount" in c]


def test_files_named_in_a_config_stay_inside_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A profile or mapping file must lie in the config file's folder (a profile also among the
    built-in ones): no ``..`` and no symlink lead out of it, and the error says where it belongs."""
    conf = tmp_path / "conf"
    (conf / "sub").mkdir(parents=True)
    (conf / "sub" / "mine.json").write_text("{}", encoding="utf-8")
    (tmp_path / "outside.json").write_text("{}", encoding="utf-8")
    (conf / "link.json").symlink_to(tmp_path / "outside.json")
    builtin = ROOT / "dlms_protocol" / "data" / "profiles" / "kamstrup-han.json"

    def profile(text: str) -> object:
        return load_config(write(conf, "m.ini", f"[meter]\nport = /dev/x\nprofile = {text}\n")).listener.profile

    assert profile("sub/mine.json") == str((conf / "sub" / "mine.json").resolve())
    assert profile(str(builtin)) == str(builtin.resolve())
    assert profile("kamstrup-han") == "kamstrup-han"  # a name stays a name
    for bad in ("../outside.json", "link.json", str(tmp_path / "outside.json"), "sub/../../outside.json"):
        with pytest.raises(ConfigurationError, match=r"points outside the config folder") as err:
            profile(bad)
        assert str(conf) in err.value.fix
    with pytest.raises(ConfigurationError, match=r"no such file"):
        profile("sub/missing.json")
    mapping = load_config(write(conf, "v.ini", "[meter]\nport = /dev/x\n[victron]\nmapping_file = sub/mine.json\n"))
    assert mapping.bridge.mapping_file == str((conf / "sub" / "mine.json").resolve())
    with pytest.raises(ConfigurationError, match=r"\[victron\] mapping_file = '../outside.json' points outside"):
        load_config(write(conf, "w.ini", "[meter]\nport = /dev/x\n[victron]\nmapping_file = ../outside.json\n"))
    # a config named without a folder: its folder is the working directory
    monkeypatch.chdir(conf)
    write(conf, "m.ini", "[meter]\nport = /dev/x\nprofile = sub/mine.json\n")
    assert load_config("m.ini").listener.profile == str((conf / "sub" / "mine.json").resolve())
