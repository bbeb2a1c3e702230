#!/usr/bin/env python3
"""Bootstrap a private virtual environment and run the demo, the tests or a benchmark.

Only the standard library is used here, because this script runs before anything is installed
(a fresh Debian machine with nothing but ``python3``). Usage::

    python3 tools/dev.py demo          # simulated meter read through a real pseudo-terminal
    python3 tools/dev.py test [ARGS]   # the whole test suite (ARGS go to pytest; -n 0: in one process)
    python3 tools/dev.py bench [NAME]  # benchmarks in bench/
    python3 tools/dev.py fuzz ARGS     # bench/fuzz/run.py ARGS, e.g. --target hdlc --cases 200000
    python3 tools/dev.py lint          # ruff and mypy with the settings in pyproject.toml
    python3 tools/dev.py run ARGS      # python -m dlms_protocol ARGS inside the venv
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("DLMS_VENV", ROOT / ".venv"))
REQUIREMENTS = [ROOT / "requirements.txt", ROOT / "requirements-dev.txt"]
# Debian packages the tests use for real parts (D-Bus daemon, daemontools, node, MQTT broker); installed when we may.
SYSTEM_TOOLS = {"dbus-daemon": "dbus-daemon", "svscan": "daemontools", "node": "nodejs", "mosquitto": "mosquitto"}


def _say(msg: str) -> None:
    print(f"[dev] {msg}", file=sys.stderr, flush=True)


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _apt_install(packages: list[str]) -> bool:
    """Install Debian packages when we are root and apt-get exists; never fails the caller."""
    if not packages or not _is_root() or not shutil.which("apt-get"):
        return False
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    _say("installing Debian packages: " + " ".join(packages))
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=False)
    res = subprocess.run(["apt-get", "install", "-y", "-qq", *packages], env=env, check=False)
    return res.returncode == 0


def _venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_venv() -> Path:
    """Create the venv (installing python3-venv if Debian lacks it) and keep its packages current."""
    py = _venv_python()
    if not py.exists():
        _say(f"creating virtual environment in {VENV}")
        res = subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=False)
        if res.returncode != 0:
            shutil.rmtree(VENV, ignore_errors=True)
            ver = f"python3.{sys.version_info.minor}-venv"
            if not (_apt_install([ver]) or _apt_install(["python3-venv"])):
                sys.exit("[dev] cannot create a virtual environment: install python3-venv "
                         "(apt-get install python3-venv) and run this command again")
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in REQUIREMENTS)).hexdigest()
    stamp = VENV / ".requirements.sha256"
    if not stamp.exists() or stamp.read_text().strip() != digest:
        _say("installing Python packages (pyserial, gurux-dlms, cryptography, paho-mqtt, dbus-fast, pytest, ...)")
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=False)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "-r", str(ROOT / "requirements-dev.txt")],
                       check=True)
        stamp.write_text(digest + "\n")
    return py


def ensure_system_tools() -> None:
    missing = sorted({pkg for tool, pkg in SYSTEM_TOOLS.items() if not shutil.which(tool)})
    if missing and not _apt_install(missing):
        _say("not installed: " + ", ".join(missing) + " (tests that need them are skipped; "
             "as root this script installs them)")


def test_workers(args: list[str]) -> list[str]:
    """pytest-xdist's ``-n`` for the suite, unless the caller chose (``-n 0`` runs in one process).

    Why: most tests wait in real time (serial lines at 300 to 115200 Bd, line searches, bus
    services), so the whole suite used about a third of one CPU; workers overlap the waits. One
    more worker than CPUs, at most 4 (``DLMS_TEST_WORKERS`` overrides), keeps timing tests honest."""
    if any(a.startswith(("-n", "--numprocesses", "--pdb", "--trace")) or a.endswith("no:xdist") for a in args):
        return args  # (the caller chose, or a debugger needs the one process)
    workers = os.environ.get("DLMS_TEST_WORKERS") or str(min(4, (os.cpu_count() or 1) + 1))
    return ["-n", workers, *args]


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    py = ensure_venv()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if cmd == "demo":
        args = [str(py), "-m", "dlms_protocol", "demo", *rest]
    elif cmd == "test":
        ensure_system_tools()
        args = [str(py), "-m", "pytest", *test_workers(rest)]
    elif cmd == "bench":
        args = [str(py), str(ROOT / "bench" / "run_all.py"), *rest]
    elif cmd == "fuzz":
        args = [str(py), str(ROOT / "bench" / "fuzz" / "run.py"), *rest]
    elif cmd == "lint":
        for tool in (["ruff", "check", "."], ["mypy"]):
            code = subprocess.run([str(py), "-m", *tool], cwd=str(ROOT), env=env, check=False).returncode
            if code:
                return code
        return 0
    elif cmd == "run":
        args = [str(py), "-m", "dlms_protocol", *rest]
    else:
        _say(f"unknown command {cmd!r}: use demo, test, lint, bench, fuzz or run")
        return 2
    return subprocess.run(args, cwd=str(ROOT), env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
