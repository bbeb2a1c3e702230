"""A D0 ``read`` loads nothing of the push, SML, polling, MQTT or D-Bus stacks (lazy imports):
checked with ``python -X importtime`` on a real readout against the simulated meter on a pty."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from dlms_protocol.simulator.d0 import SimulatedMeter

ROOT = Path(__file__).resolve().parent.parent
#: stacks a D0 readout never needs
FOREIGN = ("dlms_protocol.dlms.", "dlms_protocol.sml", "dlms_protocol.poll", "dlms_protocol.mqtt",
           "dlms_protocol.victron", "dlms_protocol.detect", "dbus_fast", "smllib", "gurux_dlms", "paho",
           "cryptography")


def imported_modules(stderr: str) -> set:
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


def test_d0_read_loads_no_other_stack() -> None:
    with SimulatedMeter("lgz_e350") as meter:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        done = subprocess.run([sys.executable, "-X", "importtime", "-m", "dlms_protocol", "read", "--json",
                               meter.port], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["datasets"]                           # a real readout happened
    modules = imported_modules(done.stderr)
    assert "dlms_protocol.iec62056_21.reader" in modules and "serial" in modules
    foreign = sorted(m for m in modules if m.startswith(FOREIGN))
    assert foreign == []


def test_each_command_is_registered_by_the_module_the_dispatcher_names() -> None:
    """``cli.COMMANDS`` says which module to import for a command; a run imports that one alone."""
    import argparse
    import importlib

    from dlms_protocol import cli

    for module in cli.COMMAND_MODULES:
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(f"dlms_protocol.{module}").register(sub)
        registered = set(sub.choices)
        assert registered == {c for c, m in cli.COMMANDS.items() if m == module}, module
    for command in cli.COMMANDS:  # the one-module parser knows the command (and its options)
        parser = cli.build_parser([command, "--help"])
        assert command in cli._subparser(parser, argparse.Namespace(command=command)).prog


#: what the Victron service of a plain push meter never loads: the D0 readout, polling, the
#: simulators, statistics (fractions, random) and OpenSSL (no output of it speaks TLS)
SERVICE_FOREIGN = ("dlms_protocol.iec62056_21", "dlms_protocol.simulator", "dlms_protocol.detect",
                   "dlms_protocol.poll", "dlms_protocol.mqtt", "dlms_protocol.sml", "gurux_dlms", "smllib",
                   "paho", "cryptography", "statistics")


#: standard modules no module of ours loads in the service (memory: 0.2-0.3 MB each with what
#: they import): pathlib for a few data paths, hashlib (with every builtin hash when OpenSSL's
#: is kept out) for the rare over-long service name, glob for a hint after a port error
SERVICE_FOREIGN_STDLIB = {"pathlib", "hashlib", "glob", "fnmatch"}


def test_victron_service_of_a_plain_meter_loads_only_what_it_runs(tmp_path: Path) -> None:
    from dlms_protocol.simulator.pty import PtyLink

    link = PtyLink(baudrate=9600, bytesize=8, parity="N")
    try:
        cfg = tmp_path / "meter.ini"
        cfg.write_text(f"[meter]\nport = {link.port}\nbaudrate = 9600\nparity = N\n\n"
                       f"[victron]\nbus = unix:path={tmp_path / 'no-bus'}\n")
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "dlms_protocol", "victron", "--config",
                                 str(cfg), "--error-delay", "0"], cwd=ROOT, env=env, stderr=subprocess.PIPE,
                                text=True)
        try:
            lines = []
            for line in proc.stderr:  # type: ignore[union-attr]
                lines.append(line)
                if "cannot connect" in line:  # started: the listener is loaded, the bridge ran
                    break
            maps = Path(f"/proc/{proc.pid}/maps").read_text()
        finally:
            proc.terminate()
            proc.wait(30)
    finally:
        link.close()
    modules = imported_modules("".join(lines))
    assert {"dbus_fast", "dlms_protocol.dlms.listener"} <= modules  # the service did start
    assert sorted(m for m in modules if m.startswith(SERVICE_FOREIGN)) == []
    parents = importers("".join(lines))
    ours = sorted(m for m in SERVICE_FOREIGN_STDLIB & set(parents)
                  if parents[m] is None or parents[m].startswith("dlms_protocol"))
    assert ours == []
    libraries = {Path(line.split()[-1]).name.split(".")[0] for line in maps.splitlines() if "/" in line}
    assert not libraries & {"libssl", "libcrypto", "_ssl", "_hashlib"}, sorted(libraries)


#: what ``decode`` of an encrypted push never loads: the other stacks and the simulators
DECODE_FOREIGN = ("dlms_protocol.iec62056_21", "dlms_protocol.simulator", "dlms_protocol.detect",
                  "dlms_protocol.poll", "dlms_protocol.mqtt", "dlms_protocol.sml", "dlms_protocol.victron",
                  "dlms_protocol.transport", "serial", "gurux_dlms", "smllib", "dbus_fast", "paho")
#: standard modules our code no longer imports on the decode path (start-up time): pathlib and
#: urllib for data paths, shutil with bz2/lzma for argparse's terminal width, signal for the
#: streaming commands only. Python 3.8's argparse and cryptography 2.8/42's backend load some of
#: them themselves: what counts is that no module of ours imports them (``importers``).
DECODE_FOREIGN_STDLIB = {"pathlib", "urllib", "urllib.parse", "ipaddress", "shutil", "bz2", "lzma", "fnmatch",
                         "signal", "subprocess", "asyncio", "socket", "selectors", "configparser", "tempfile"}


def importers(stderr: str) -> dict:
    """Each module of a ``-X importtime`` log and the module whose import loaded it (None: loaded
    at run time, from a function). The log lists a module after the modules it imported, one
    indentation level deeper."""
    rows = []
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "imported package" not in line:
            field = line.rsplit("|", 1)[1][1:]
            rows.append(((len(field) - len(field.lstrip())) // 2, field.strip()))
    parents: dict = {}
    stack: list = []
    for level, name in reversed(rows):
        while stack and stack[-1][0] >= level:
            stack.pop()
        parents.setdefault(name, stack[-1][1] if stack else None)
        stack.append((level, name))
    return parents


def test_decode_loads_only_what_one_frame_needs(tmp_path: Path) -> None:
    from dlms_protocol.simulator.push import PushSimulator

    key, auth = "000102030405060708090A0B0C0D0E0F", "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"
    sim = PushSimulator(wrapper="hdlc", key=bytes.fromhex(key), auth_key=bytes.fromhex(auth), security=0x30,
                        layout="profile", profile="si-sodo-reduxi-live23", seed=9, invocation_counter=50000)
    capture = tmp_path / "one.bin"
    capture.write_bytes(sim.emit())
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "dlms_protocol", "decode", "--json", "--file",
                           str(capture), "--key", key, "--auth-key", auth], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    message = json.loads(done.stdout)
    assert message["profile"] == "si-sodo-reduxi-live23" and len(message["readings"]) >= 20  # decoded, verified
    parents = importers(done.stderr)
    # the AES engine dlms/gcm.py chooses: Python's OpenSSL through ctypes, cryptography only when forced
    engine, other = ("cryptography", "ctypes") if os.environ.get("DLMS_AES_ENGINE") == "cryptography" else \
        ("ctypes", "cryptography")
    assert {"dlms_protocol.dlms.decoder", engine} <= set(parents) | {m.split(".")[0] for m in parents}
    assert sorted(m for m in parents if m.startswith(DECODE_FOREIGN + (other,))) == []
    ours = sorted(m for m in DECODE_FOREIGN_STDLIB & set(parents)
                  if parents[m] is None or parents[m].startswith("dlms_protocol"))
    assert ours == []


def test_importers_reads_the_import_tree() -> None:
    log = ("import time: self [us] | cumulative | imported package\n"
           "import time:   1 |   1 |     c\n"
           "import time:   1 |   2 |   b\n"
           "import time:   1 |   1 |   d\n"
           "import time:   1 |   4 | a\n"
           "import time:   1 |   1 | e\n")
    assert importers(log) == {"a": None, "b": "a", "c": "b", "d": "a", "e": None}


#: runs ``python -m dlms_protocol ARGS`` as -m does (runpy) and says at exit whether the cyclic GC
#: runs again and how many start-up objects were frozen
_GC_PROBE = ("import atexit, gc, runpy, sys\n"
             "atexit.register(lambda: sys.stderr.write(f'\\ngc {gc.isenabled()} {gc.get_freeze_count()}\\n'))\n"
             "sys.argv = ['dlms_protocol'] + sys.argv[1:]\n"
             "runpy.run_module('dlms_protocol', run_name='__main__', alter_sys=True)\n")


def _gc_state(args: list) -> tuple:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", _GC_PROBE, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    last = done.stderr.strip().splitlines()[-1].split()
    assert last[0] == "gc", done.stderr[-2000:]
    return done.returncode, last[1] == "True", int(last[2])


def test_start_up_pauses_the_collector_and_always_resumes_it(tmp_path: Path) -> None:
    """``__main__`` pauses the cyclic GC before the first import; ``cli.loading`` freezes what
    start-up loaded and resumes it: after a decode, after --version (SystemExit inside start-up)
    and after a usage error the collector runs again."""
    from dlms_protocol.simulator.push import PushSimulator

    capture = tmp_path / "plain.bin"
    capture.write_bytes(PushSimulator(wrapper="hdlc", seed=3).emit())
    code, enabled, frozen = _gc_state(["decode", "--file", str(capture)])
    assert (code, enabled) == (0, True) and frozen > 10000  # the modules and profile tables
    for args, status in ((["--version"], 0), (["decode", "--file", str(capture), "--wrapper", "x"], 2)):
        assert _gc_state(args)[:2] == (status, True), args


def test_loading_leaves_the_collector_alone_outside_our_own_process() -> None:
    """Inside a host program or a test (``RESUME_GC`` False) start-up never touches the GC."""
    import gc

    from dlms_protocol import cli

    assert cli.RESUME_GC is False
    before = (gc.isenabled(), gc.get_freeze_count())
    with cli.loading():
        assert gc.isenabled() == before[0]
    assert (gc.isenabled(), gc.get_freeze_count()) == before
