"""Stock Venus OS has no cryptography (opkg feed only): a plain meter, --check-config and the
whole service must run without it; an encrypted meter is deciphered through the OpenSSL Python
itself links (``dlms_protocol.dlms.gcm``), and where that is not usable either (no ctypes), an
encrypted push is refused with the opkg command.

Each test runs Python in a subprocess whose path starts with a blocking ``cryptography`` package
(an ImportError, like a missing package), so the tests mean the same here and in the matrix's
``py38-plain`` environment (.ci/matrix.sh), where cryptography is not installed at all."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Iterator

import pytest

from dbus_fixtures import DbusDaemon, SettingsStandIn, VenusClient
from dlms_protocol.dlms import gcm
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
    env.pop("DLMS_AES_ENGINE", None)
    return env


@pytest.fixture
def no_engine_env(no_crypto_env: Dict[str, str], tmp_path: Path) -> Dict[str, str]:
    """Neither cryptography nor ctypes (a Python built without libffi, or without its ctypes package)."""
    block = tmp_path / "block"
    (block / "ctypes").mkdir(parents=True)
    (block / "ctypes" / "__init__.py").write_text("raise ImportError('No module named ctypes')\n")
    return no_crypto_env


DECODE_ALL = r"""
import json, sys
from pathlib import Path
from dlms_protocol.config import ListenerConfig
from dlms_protocol.dlms.decoder import decode_bytes
from dlms_protocol.errors import SecurityError
out = {"plain": 0, "refused": [], "deciphered": {}, "loaded": None}
for path in sorted(Path(sys.argv[1]).glob("*.json")):
    doc = json.loads(path.read_text())
    key = (doc.get("keys") or {}).get("block_cipher_key")
    if not doc.get("ciphered"):
        out["plain"] += len(decode_bytes(bytes.fromhex(doc["hex"]), ListenerConfig(port="x"), strict=False))
    elif key:
        try:
            msgs = decode_bytes(bytes.fromhex(doc["hex"]), ListenerConfig(port="x", key=key), strict=True)
            out["deciphered"][path.name] = [m.apdu.hex() for m in msgs]
        except SecurityError as exc:
            out["refused"].append(str(exc))
out["loaded"] = "cryptography" in sys.modules and sys.modules["cryptography"] is not None
print(json.dumps(out))
"""


def _decode_corpus(env: Dict[str, str]) -> Dict[str, object]:
    need((CORPUS / "push").is_dir(), f"push corpus not found at {CORPUS}")
    res = subprocess.run([sys.executable, "-c", DECODE_ALL, str(CORPUS / "push")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    out: Dict[str, object] = json.loads(res.stdout)
    plain = [p for p in corpus_files("push", ".json") if not json.loads(p.read_text()).get("ciphered")]
    assert out["plain"] >= len(plain) - 1  # every plain frame (one has no profile) decodes ...
    assert out["loaded"] is False  # ... without ever importing cryptography
    return out


def test_without_cryptography_encrypted_frames_decipher_through_pythons_openssl(
        no_crypto_env: Dict[str, str]) -> None:
    """Every encrypted corpus frame with a key gives its published plaintext APDU, cryptography blocked."""
    out = _decode_corpus(no_crypto_env)
    assert out["refused"] == []
    wanted = {p.name: json.loads(p.read_text()) for p in corpus_files("push", ".json")}
    wanted = {k: d for k, d in wanted.items() if d.get("ciphered") and (d.get("keys") or {}).get("block_cipher_key")}
    assert wanted and set(out["deciphered"]) == set(wanted)  # type: ignore[arg-type]
    for name, apdus in out["deciphered"].items():  # type: ignore[attr-defined]
        assert apdus == [wanted[name]["plaintext_apdu_hex"].lower()], name


def test_without_any_aes_engine_encrypted_frames_name_the_opkg_command(no_engine_env: Dict[str, str]) -> None:
    out = _decode_corpus(no_engine_env)
    assert out["refused"], "no encrypted corpus frame with a key"
    assert out["deciphered"] == {}
    for text in out["refused"]:  # type: ignore[attr-defined]
        assert "cryptography is not installed" in text and "opkg install python3-cryptography" in text
        assert "OpenSSL cannot be used" in text


def test_check_config_with_a_key_needs_no_cryptography(no_crypto_env: Dict[str, str], tmp_path: Path) -> None:
    cfg = tmp_path / "dlms-meter.ini"
    cfg.write_text("[meter]\nport = /dev/ttyUSB0\nkey = 000102030405060708090A0B0C0D0E0F\n")
    res = subprocess.run([sys.executable, "-m", "dlms_protocol", "victron", "--config", str(cfg), "--check-config"],
                         cwd=ROOT, env=no_crypto_env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "000102030405060708090A0B0C0D0E0F" not in res.stdout + res.stderr
    assert [line.split(None, 1)[1] for line in res.stdout.splitlines() if line.split()[:1] == ["aes_gcm"]] == [
        gcm.load_openssl().name]  # which library will decipher, before any frame


def test_check_config_says_when_no_aes_engine_is_usable(no_engine_env: Dict[str, str], tmp_path: Path) -> None:
    cfg = tmp_path / "dlms-meter.ini"
    cfg.write_text("[meter]\nport = /dev/ttyUSB0\nkey = 000102030405060708090A0B0C0D0E0F\n")
    res = subprocess.run([sys.executable, "-m", "dlms_protocol", "victron", "--config", str(cfg), "--check-config"],
                         cwd=ROOT, env=no_engine_env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr  # the file is right; the line says what is missing
    line = [x for x in res.stdout.splitlines() if x.split()[:1] == ["aes_gcm"]]
    assert len(line) == 1 and "none usable" in line[0] and "opkg install python3-cryptography" in line[0]
    assert "000102030405060708090A0B0C0D0E0F" not in res.stdout + res.stderr


@pytest.fixture
def bus(daemon: DbusDaemon) -> Iterator[VenusClient]:
    settings = SettingsStandIn(daemon.address)
    client = VenusClient(daemon.address)
    yield client
    client.stop()
    settings.stop()


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_service_runs_a_meter_without_cryptography(daemon: DbusDaemon, bus: VenusClient, tmp_path: Path,
                                                   no_crypto_env: Dict[str, str], encrypted: bool) -> None:
    """The standalone service with a push meter: registers, publishes grid power per phase, and no
    cryptography library is mapped into the process; an encrypted meter (tag verified) maps only
    the libcrypto Python links, a plain one no OpenSSL at all."""
    from dlms_protocol.simulator.push import PushSimulator

    keys = {"key": bytes(range(16)), "auth_key": bytes(range(16, 32)), "security": 0x30} if encrypted else {}
    if encrypted and importlib.util.find_spec("cryptography") is None:  # py38-plain: expected, not a missing part
        pytest.skip("the simulator encrypts with cryptography")
    sim = PushSimulator(seed=3, interval=1.0, **keys)  # type: ignore[arg-type]
    port = sim.open_pty(baudrate=115200, parity="N")
    cfg = tmp_path / "dlms-meter.ini"
    lines = f"key = {bytes(range(16)).hex()}\nauth_key = {bytes(range(16, 32)).hex()}\nsecurity = authenticated\n"
    cfg.write_text(f"[meter]\nport = {port}\nbaudrate = 115200\nparity = N\n{lines if encrypted else ''}\n"
                   f"[victron]\nbus = {daemon.address}\n")
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
        assert ("libcrypto" in maps) is encrypted
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
        sim.stop()
