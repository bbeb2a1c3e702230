"""CLI ``decode`` and ``listen``: the JSON contract, every corpus frame end to end against the
values its source states, exit codes with one-line errors, and listen on a simulated meter."""
from __future__ import annotations

import json
import math
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

import pytest

from dlms_protocol.cli import main
from dlms_protocol.obis import Obis
from dlms_protocol.simulator.push import PushSimulator
from helpers import ROOT, corpus_files, load_json

PUSH = corpus_files("push", ".json")
EK = "00112233445566778899AABBCCDDEEFF"
AK = "FFEEDDCCBBAA99887766554433221100"
READING_KEYS = ["obis", "index", "raw", "scaler", "unit", "value"]
MESSAGE_KEYS = ["wrapper", "ciphered", "tag_verified", "checksum", "timestamp", "profile", "readings"]


def run_cli(capsys, *args: str):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines() if line.strip()], err


def sim_frames(n: int = 3, **kwargs) -> bytes:
    sim = PushSimulator(key=bytes.fromhex(EK), auth_key=bytes.fromhex(AK), seed=5, **kwargs)
    return b"".join(sim.emit() for _ in range(n))


def key_args(case: dict) -> list:
    keys = case.get("keys") or {}
    args = ["--key", keys["block_cipher_key"]] if keys.get("block_cipher_key") else []
    if keys.get("authentication_key") and (case.get("security") or {}).get("gcm_tag_verified") is True:
        args += ["--auth-key", keys["authentication_key"]]
    return args


# -------------------------------------------------------------------- contract
def test_decode_json_contract(capsys) -> None:
    frame = sim_frames(1, wrapper="hdlc", security=0x30)
    code, lines, err = run_cli(capsys, "decode", "--hex", frame.hex(" "), "--key", EK, "--auth-key", AK, "--json")
    assert code == 0 and err == "" and len(lines) == 1
    msg = lines[0]
    # the documented keys first, then the rest of the one MeterData form (jsonform; no receive time offline)
    assert list(msg)[:len(MESSAGE_KEYS)] == MESSAGE_KEYS
    assert list(msg)[len(MESSAGE_KEYS):] == ["meter_id", "kind", "meter_time"]
    assert (msg["wrapper"], msg["ciphered"], msg["tag_verified"], msg["profile"]) == ("hdlc", True, True, None)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+01:00", msg["timestamp"])
    for r in msg["readings"]:
        assert list(r) == READING_KEYS + ["code", "name", "derived", "timestamp"]  # the one form (jsonform)
        assert r["obis"] == Obis.parse(r["obis"]).dotted()
    energy = next(r for r in msg["readings"] if r["obis"] == "1-0:1.8.0.255")
    assert isinstance(energy["raw"], int) and energy["value"] == energy["raw"] and energy["unit"] == "Wh"
    volt = next(r for r in msg["readings"] if r["obis"] == "1-0:32.7.0.255")
    assert volt["scaler"] == -1 and math.isclose(volt["value"], volt["raw"] / 10)
    # only the encryption key: decrypted, tag not verified (null)
    code, lines, _ = run_cli(capsys, "decode", "--hex", frame.hex(), "--key", EK, "--json")
    assert code == 0 and lines[0]["tag_verified"] is None and lines[0]["readings"] == msg["readings"]


def test_decode_binary_capture_with_many_frames(capsys, tmp_path) -> None:
    capture = tmp_path / "capture.bin"
    capture.write_bytes(sim_frames(4, wrapper="mbus", security=0x20, segmented=True, max_info=100))
    code, lines, err = run_cli(capsys, "decode", "--file", str(capture), "--key", EK, "--json")
    assert code == 0 and len(lines) == 4 and {m["wrapper"] for m in lines} == {"mbus"}
    hexdump = tmp_path / "capture.hex"
    hexdump.write_text(capture.read_bytes().hex(" ") + "\n")
    code, again, _ = run_cli(capsys, "decode", "--file", str(hexdump), "--key", EK, "--json")
    assert code == 0 and again == lines


def test_decode_says_a_push_without_a_tag_has_none(capsys, tmp_path) -> None:
    """Security 0x20 enciphers without a tag: 'no tag', not 'tag not verified' as if a key were missing."""
    from dlms_protocol.cli import main

    capture = tmp_path / "capture.bin"
    capture.write_bytes(sim_frames(1, wrapper="hdlc", security=0x20))
    assert main(["decode", "--file", str(capture), "--key", EK]) == 0
    assert capsys.readouterr().out.startswith("push via hdlc, ciphered, no tag;")
    capture.write_bytes(sim_frames(1, wrapper="hdlc", security=0x30))
    assert main(["decode", "--file", str(capture), "--key", EK]) == 0
    assert capsys.readouterr().out.startswith("push via hdlc, ciphered, tag not verified;")


def test_decode_table_output(capsys) -> None:
    code = main(["decode", "--hex", sim_frames(1, wrapper="hdlc").hex()])
    out = capsys.readouterr().out
    assert code == 0 and "push via hdlc, plain" in out and "1-0:1.8.0.255" in out and " Wh" in out


# ----------------------------------------------------------------- exit codes
def cli_process(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dlms_protocol", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_decode_errors_exit_non_zero_with_one_line() -> None:
    frame = bytearray(sim_frames(1, wrapper="hdlc", security=0x30))
    cases = [
        (["--key", EK, "--auth-key", AK], 20, "error: HDLC FCS mismatch"),
        (["--key", EK, "--auth-key", EK], None,
         "error: authentication tag mismatch (the encryption key fits): check the authentication key"),
        (["--key", AK], None, "error: decrypted data is not a valid APDU: check the encryption key"),
        ([], None,
         "error: frame is encrypted but no key is configured: set key (the GUEK from your grid operator; CLI: --key)"),
    ]
    for args, damage, want in cases:
        data = bytearray(frame)
        if damage is not None:
            data[damage] ^= 0x01
        done = cli_process("decode", "--hex", data.hex(), *args)
        assert done.returncode == 1, done
        assert done.stdout == ""
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(want), lines
        assert EK not in done.stderr and AK not in done.stderr and EK.lower() not in done.stderr.lower()


def test_a_security_hint_names_the_command_line_option_too() -> None:
    """A frame without a tag (0x20) decoded with --auth-key (one key pasted into both options): the
    hint named only the settings (auth_key, security: encrypted), which a decode user does not have."""
    done = cli_process("decode", "--hex", sim_frames(1, wrapper="hdlc", security=0x20).hex(), "--key", EK,
                       "--auth-key", AK)
    assert done.returncode == 1 and "the meter sends no tag" in done.stderr
    assert "--auth-key" in done.stderr and "--security encrypted" in done.stderr
    assert cli_process("decode", "--hex", sim_frames(1, wrapper="hdlc", security=0x20).hex(), "--key", EK,
                       "--auth-key", AK, "--security", "encrypted").returncode == 0


def test_decode_usage_errors() -> None:
    done = cli_process("decode", "--hex", "7E A0 0G")
    assert done.returncode == 1 and done.stderr.startswith("error: --hex contains characters")
    done = cli_process("decode", "--hex", "00112233")
    assert done.returncode == 1 and "no push frame found" in done.stderr
    done = cli_process("decode", "--hex", "7EA0", "--key", "1234")
    assert done.returncode == 1 and done.stderr.strip() == (
        "error: key has 2 bytes, an AES-128 key has 16: write the key as 32 hex digits; "
        "check that it was copied completely")


# ------------------------------------------------------------ corpus end to end
def expected_matches(expected: dict, msg: dict) -> bool:
    """Does one source-stated value appear in our JSON message (same OBIS or position)?

    Numbers: ``raw`` equals the transmitted value and ``value`` equals raw·10^scaler with the
    scaler the source states (the corpus' ``physical`` is sometimes given in kWh, so it is not
    used). Values without OBIS code or position may be the notification's date-time header.
    """
    readings = msg["readings"]
    value = expected["value"]
    if isinstance(value, str):
        value = re.sub(r" \(status 0x[0-9a-f]{2}\)$", "", value)
    code = expected.get("obis")
    if code and not code.endswith("?"):
        want = Obis.parse(code).dotted()
        candidates = [r for r in readings if r["obis"] == want]
    elif expected.get("index") is not None:
        candidates = [r for r in readings if r["index"] == expected["index"]]
    else:
        if msg["timestamp"] and isinstance(value, str) and re.fullmatch(r"\d{4}-.*T.*", value):
            stamp = datetime.fromisoformat(msg["timestamp"]).replace(microsecond=0)  # E360 sends hundredths
            if stamp == datetime.fromisoformat(value):
                return True
        candidates = readings
    for r in candidates:
        if value in (r["raw"], r["value"]) or str(value) in (str(r["raw"]), str(r["value"])):
            if isinstance(value, int) and not isinstance(value, bool) and expected.get("scaler") is not None:
                return math.isclose(float(r["value"]), value * 10.0 ** expected["scaler"], rel_tol=1e-12)
            return True
    return False


@pytest.mark.parametrize("path", PUSH, ids=[p.stem for p in PUSH])
def test_corpus_frame_decodes_end_to_end(capsys, path) -> None:
    case = load_json(path)
    code, lines, err = run_cli(capsys, "decode", "--hex", case["hex"], "--json", *key_args(case))
    assert code == 0, err
    assert len(lines) == 1
    msg = lines[0]
    assert msg["ciphered"] is bool(case.get("ciphered"))
    descriptive = ("push object list", "DataNotification")
    checked = [e for e in case["expected"]
               if not (isinstance(e["value"], str) and e["value"].startswith(descriptive))
               and not (e.get("obis") or "").endswith("?")]
    missing = [e for e in checked if not expected_matches(e, msg)]
    assert not missing, missing


# ------------------------------------------------------------------------ listen
def test_listen_prints_json_lines_until_interrupted() -> None:
    key, ak = bytes.fromhex(EK), bytes.fromhex(AK)
    sim = PushSimulator(wrapper="hdlc", key=key, auth_key=ak, security=0x30, segmented=True, seed=9)
    port = sim.open_pty(baudrate=9600, parity="E", time_scale=25)
    proc = subprocess.Popen([sys.executable, "-m", "dlms_protocol", "listen", port, "--baudrate", "9600",
                             "--key", EK, "--auth-key", AK, "--json"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        sent = []
        deadline = time.monotonic() + 60
        while not sim.reader_ready() and time.monotonic() < deadline:
            time.sleep(0.05)
        for _ in range(2):
            assert sim.send_once()
            sent.append(dict(sim.last_registers))
        lines = [json.loads(proc.stdout.readline()) for _ in range(2)]
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        sim.stop()
    assert proc.returncode == 0
    for msg, registers in zip(lines, sent):
        assert msg["tag_verified"] is True
        raws = {r["obis"]: r["raw"] for r in msg["readings"]}
        assert raws["1-0:1.8.0.255"] == registers["1-0:1.8.0.255"][0]
    assert "statistics:" in err and "messages=2" in err
    assert EK not in out + err


def test_simulate_push_removes_its_link_when_terminated(tmp_path) -> None:
    """Seen in a real SmartHomeNG test set-up: a simulator stopped with SIGTERM (kill, a service
    manager) left its --link pointing at a pty number the system then gave another program."""
    link = tmp_path / "ttyPUSH"
    proc = subprocess.Popen([sys.executable, "-m", "dlms_protocol", "simulate-push", "--link", str(link),
                             "--interval", "5"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not link.is_symlink() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert link.is_symlink()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert not link.is_symlink() and not link.exists()


def test_a_simulator_stopped_inside_its_start_removes_its_link(tmp_path) -> None:
    """The SIGTERM of the test above can come while ``start()`` runs, before its thread started: the
    fresh-clone CI (Python 3.8 matrix) saw ``stop()`` raise "cannot join thread before it is
    started", exit 1 and the link left behind."""
    link = tmp_path / "ttyPUSH"
    sim = PushSimulator(wrapper="hdlc", seed=3)
    sim.open_pty(str(link))
    sim._thread = threading.Thread(target=sim._run, daemon=True)  # what start() had made, not started yet
    sim.stop()
    assert not link.is_symlink() and not link.exists()


def test_a_reader_that_goes_away_is_no_error(tmp_path) -> None:
    """``decode --file big | head -1``: the closed pipe ends the command quietly with status 0."""
    sim = PushSimulator(wrapper="hdlc", seed=3)
    capture = tmp_path / "frames.bin"
    capture.write_bytes(b"".join(sim.emit() for _ in range(400)))
    proc = subprocess.Popen([sys.executable, "-m", "dlms_protocol", "decode", "--file", str(capture)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().startswith(b"push via hdlc")
    proc.stdout.close()  # the reader went away
    err = proc.stderr.read() if proc.stderr is not None else b""
    assert proc.wait(60) == 0, err
    assert err == b""


def test_decode_takes_an_information_field_pasted_with_its_llc(capsys) -> None:
    """``E6 E7 00`` + APDU, as other decoders print an HDLC frame's payload, decodes without a
    noise error (auto mode would take the LLC for the rest of a damaged frame)."""
    sim = PushSimulator(seed=5, wrapper="apdu", clock=lambda: datetime(2026, 12, 3, 8, 0).astimezone())
    apdu = sim.emit()
    code, lines, err = run_cli(capsys, "decode", "--hex", "E6E700" + apdu.hex(), "--json")
    assert code == 0 and len(lines) == 1 and lines[0]["readings"] and not err
    code, plain, _ = run_cli(capsys, "decode", "--hex", apdu.hex(), "--json")
    assert plain == lines


def test_decode_of_one_segment_says_the_rest_is_missing(capsys) -> None:
    """A single verified segment (HDLC, M-Bus, GBT) is no message: say so, not "no frame found"."""
    for kwargs in ({"wrapper": "hdlc", "segmented": True, "max_info": 60},
                   {"wrapper": "mbus", "segmented": True, "max_info": 60},
                   {"wrapper": "hdlc", "gbt": True, "block_size": 60}):
        sim = PushSimulator(key=bytes.fromhex(EK), auth_key=bytes.fromhex(AK), seed=5, security=0x30, **kwargs)
        frames = sim.build()
        assert len(frames) > 1
        code, lines, err = run_cli(capsys, "decode", "--hex", frames[0].hex(), "--key", EK, "--auth-key", AK)
        assert code == 1 and not lines
        assert "verified frame(s) but no complete message" in err and "no push frame found" not in err, kwargs


def test_decode_of_a_capture_cut_out_of_a_running_line(capsys, tmp_path) -> None:
    """A capture begins and ends inside a push: those ends are notes, the exit status stays 0;
    damage between two decoded pushes is still an error (exit 1).

    The pushes carry a fixed meter time: with the wall clock's, the cut-off rest of the first
    push is different ciphertext every run, and now and then (2 of 400 meter times) it holds a false HDLC frame start
    whose HCS fails, which the decoder rightly counts as a checksum error, not as the lead-in."""
    fixed = datetime(2026, 12, 3, 12, 0, 0, tzinfo=timezone.utc)
    frames = [sim_frames(1, wrapper="hdlc", security=0x30, invocation_counter=n, clock=lambda: fixed)
              for n in (7, 8, 9)]
    whole = b"".join(frames)
    capture = tmp_path / "cut.bin"
    for head, tail, pushes, notes in ((40, 0, 2, ["began"]), (0, 60, 2, ["ended"]), (40, 60, 1, ["began", "ended"]),
                                      (0, 0, 3, [])):
        capture.write_bytes(whole[head:len(whole) - tail])
        code, lines, err = run_cli(capsys, "decode", "--file", str(capture), "--key", EK, "--auth-key", AK, "--json")
        assert code == 0 and len(lines) == pushes, (head, tail, err)
        said = re.findall(r"^note: (the capture began inside a message: \d+ bytes|at the end of the capture: the input "
                          r"ended inside a frame \(\d+ bytes of it arrived\))", err, re.M)
        assert ["began" if "began" in note else "ended" for note in said] == notes, err
        assert "error" not in err
    # bytes after the last frame that are no frame (not the start of one) are said as such
    capture.write_bytes(whole + b"\x00\x11\x22")
    code, lines, err = run_cli(capsys, "decode", "--file", str(capture), "--key", EK, "--auth-key", AK, "--json")
    assert code == 0 and len(lines) == 3
    assert err == "note: at the end of the capture: 3 bytes after the last frame are no frame\n"
    capture.write_bytes(frames[0] + b"\x11\x22\x33" + frames[1] + frames[2][:-30])
    code, lines, err = run_cli(capsys, "decode", "--file", str(capture), "--key", EK, "--auth-key", AK, "--json")
    assert code == 1 and len(lines) == 2 and err.splitlines()[-1].startswith("error: 3 bytes of noise skipped")
    capture.write_bytes(frames[0][40:100])  # nothing decoded: the bytes are an error, not a note
    code, lines, err = run_cli(capsys, "decode", "--file", str(capture), "--key", EK, "--auth-key", AK)
    assert code == 1 and err.startswith("error: no push frame found")


def test_only_a_raw_number_lacks_a_scaler():
    """A structure (Energomera's 0-0:96.5.135 {OBIS, 3}) or octets without a value are raw, but
    'scaler unknown' would send the user looking for a profile that cannot help."""
    from dlms_protocol.dlms.decoder import _build_line_parts
    from dlms_protocol.model import new_reading
    from dlms_protocol.obis import Obis

    code = Obis.parse("0-0:96.5.135.255")
    readings = (new_reading("0-0:96.5.135.255", code, None, None, ["0000636204FF", 3], None, 1, None, ()),
                new_reading("1-0:1.8.0.255", Obis.parse("1-0:1.8.0.255"), None, "Wh", 1234, None, 2, None, ()))
    notes = [parts[2] for parts in _build_line_parts(readings)]
    assert notes == [" (raw)", " (raw; scaler unknown)"]
