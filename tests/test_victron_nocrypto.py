"""Stock Venus OS has no cryptography (opkg feed only): a plain meter, --check-config and the
whole service must run without it, and an encrypted push must be refused with the opkg command.

Each test runs Python in a subprocess whose path starts with a blocking ``cryptography`` package
(an ImportError, like a missing package), so the tests mean the same here and in the matrix's
``py38-plain`` environment (.ci/matrix.sh), where cryptography is not installed at all."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Iterator

import pytest

from dbus_fixtures import DbusDaemon, SettingsStandIn, VenusClient
from helpers import CORPUS, corpus_files, need

ROOT = Path(__file__).resolve().parent.parent
WAIT = 40.0


@pytest.fixture
def no_crypto_env(tmp_path: Path) -> Dict[str, str]:
    block = tmp_path / "block"
    (block / "cryptography").mkdir(parents=True)
    (block / "cryptography" / "__init__.py").write_text("raise ImportError('No module named cryptography')\n")
    env = dict(os.environ, PYTHONPATH=f"{block}{os.pathsep}{ROOT}")
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    return env


DECODE_ALL = r"""
import json, sys
from pathlib import Path
from dlms_protocol.config import ListenerConfig
from dlms_protocol.dlms.decoder import decode_bytes
from dlms_protocol.errors import SecurityError
out = {"plain": 0, "refused": [], "loaded": None}
for path in sorted(Path(sys.argv[1]).glob("*.json")):
    doc = json.loads(path.read_text())
    key = (doc.get("keys") or {}).get("block_cipher_key")
    if not doc.get("ciphered"):
        out["plain"] += len(decode_bytes(bytes.fromhex(doc["hex"]), ListenerConfig(port="x"), strict=False))
    elif key:
        try:
            decode_bytes(bytes.fromhex(doc["hex"]), ListenerConfig(port="x", key=key), strict=True)
        except SecurityError as exc:
            out["refused"].append(str(exc))
out["loaded"] = "cryptography" in sys.modules and sys.modules["cryptography"] is not None
print(json.dumps(out))
"""


def test_plain_frames_decode_and_encrypted_ones_name_the_opkg_command(no_crypto_env: Dict[str, str]) -> None:
    need((CORPUS / "push").is_dir(), f"push corpus not found at {CORPUS}")
    res = subprocess.run([sys.executable, "-c", DECODE_ALL, str(CORPUS / "push")], cwd=ROOT, env=no_crypto_env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    plain = [p for p in corpus_files("push", ".json") if not json.loads(p.read_text()).get("ciphered")]
    assert out["plain"] >= len(plain) - 1  # every plain frame (one has no profile) decodes ...
    assert out["loaded"] is False  # ... without ever importing cryptography
    assert out["refused"], "no encrypted corpus frame with a key"
    for text in out["refused"]:
        assert "cryptography is not installed" in text and "opkg install python3-cryptography" in text


def test_check_config_with_a_key_needs_no_cryptography(no_crypto_env: Dict[str, str], tmp_path: Path) -> None:
    cfg = tmp_path / "dlms-meter.ini"
    cfg.write_text("[meter]\nport = /dev/ttyUSB0\nkey = 000102030405060708090A0B0C0D0E0F\n")
    res = subprocess.run([sys.executable, "-m", "dlms_protocol", "victron", "--config", str(cfg), "--check-config"],
                         cwd=ROOT, env=no_crypto_env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "000102030405060708090A0B0C0D0E0F" not in res.stdout + res.stderr


@pytest.fixture
def bus(daemon: DbusDaemon) -> Iterator[VenusClient]:
    settings = SettingsStandIn(daemon.address)
    client = VenusClient(daemon.address)
    yield client
    client.stop()
    settings.stop()


def test_service_runs_a_plain_meter_without_cryptography(daemon: DbusDaemon, bus: VenusClient, tmp_path: Path,
                                                         no_crypto_env: Dict[str, str]) -> None:
    """The standalone service with a plain push meter: registers, publishes grid power per phase,
    and no cryptography library is mapped into the process."""
    from dlms_protocol.simulator.push import PushSimulator

    sim = PushSimulator(seed=3, interval=1.0)
    port = sim.open_pty(baudrate=115200, parity="N")
    cfg = tmp_path / "dlms-meter.ini"
    cfg.write_text(f"[meter]\nport = {port}\nbaudrate = 115200\nparity = N\n\n[victron]\nbus = {daemon.address}\n")
    log = (tmp_path / "service.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "dlms_protocol", "victron", "--config", str(cfg)],
                            cwd=ROOT, env=no_crypto_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        name = None
        deadline = time.monotonic() + WAIT
        while name is None and time.monotonic() < deadline:
            sim.send_once()
            try:
                name = bus.wait_for(lambda c: c.service("grid"), 1.0)
            except TimeoutError:
                pass
        assert name is not None, (tmp_path / "service.log").read_text()
        bus.wait_for(lambda c: isinstance(c.value(name, "/Ac/L1/Power"), float), WAIT)
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "cryptography" not in maps  # neither the package nor its Rust/OpenSSL bindings
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
        sim.stop()
