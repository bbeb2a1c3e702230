"""``python -m dlms_protocol parse | read | demo | simulate`` run as real subprocesses."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from dlms_protocol.simulator.d0 import SimulatedMeter
from dlms_protocol.simulator.meters import compose_identification, frame_message, load_meter
from helpers import ROOT, corpus_files, load_json

ENV = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dlms_protocol", *args], capture_output=True, text=True,
                          timeout=timeout, env=ENV, cwd=str(ROOT))


def run_main(capsys, *args: str) -> subprocess.CompletedProcess:
    """The same command in this process (cli.main), for sweeps over many files."""
    from dlms_protocol.cli import main
    code = main(list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out, err)


def _one_line_error(res: subprocess.CompletedProcess) -> str:
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    return lines[0]


# ------------------------------------------------------------------------------- parse
@pytest.fixture
def own_readout(tmp_path: Path) -> Path:
    """A readout generated from the built-in sample meter (the suite runs without ../shared too)."""
    image = load_meter("lgz_e350")
    path = tmp_path / "lgz_e350.bin"
    path.write_bytes(b"/?!\r\n" + compose_identification(image, "C", 9600) + b"\x06050\r\n"
                     + frame_message(image.block))
    return path


def test_parse_own_readout_table_and_json(own_readout: Path):
    res = cli("parse", str(own_readout))
    assert res.returncode == 0, res.stderr
    assert "/LGZ5ZMF110CC.S27" in res.stdout
    assert "Active import (+A), energy, tariff 1" in res.stdout and "008123.456" in res.stdout
    res = cli("parse", str(own_readout), "--json")
    assert res.returncode == 0
    data = json.loads(res.stdout)
    # the documented keys, plus the readings in the one JSON form of every tool (jsonform)
    assert set(data) == {"identification", "manufacturer", "bcc", "crc", "checksum", "datasets", "meter_id",
                         "readings", "skipped"}
    assert data["bcc"] == "ok" and data["identification"] == "/LGZ5ZMF110CC.S27"
    energy = next(d for d in data["datasets"] if d["code"] == "1.8.0")
    assert energy["values"] == [{"value": "012345.678", "unit": "kWh"}]
    reading = next(r for r in data["readings"] if r["code"] == "1.8.0")
    assert (reading["raw"], reading["value"], reading["unit"]) == ("012345.678", 12345.678, "kWh")
    assert reading["name"] == "Active import (+A), energy" and reading["derived"] is False
    assert len(data["readings"]) == len(data["datasets"]) and data["meter_id"] == data["identification"]


def test_parse_bad_bcc_fails_with_one_line_unless_no_checksum(own_readout: Path, tmp_path: Path):
    raw = bytearray(own_readout.read_bytes())
    raw[-1] ^= 0x01
    bad = tmp_path / "bad.bin"
    bad.write_bytes(bytes(raw))
    res = cli("parse", str(bad))
    assert res.returncode != 0 and res.stdout == ""
    assert "BCC mismatch" in _one_line_error(res) and "add --no-checksum" in _one_line_error(res)
    res = cli("parse", str(bad), "--no-checksum", "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["bcc"] == "bad"
    res = cli("parse", str(bad), "--no-checksum")  # the table says why nothing was verified
    assert res.returncode == 0 and "the BCC did not match, ignored by --no-checksum" in res.stdout
    assert "carries no checksum" not in res.stdout


def test_parse_missing_file():
    res = cli("parse", "/nonexistent/readout.txt")
    assert res.returncode != 0
    assert "cannot read" in _one_line_error(res)


def test_parse_names_what_it_left_out(tmp_path: Path, capsys):
    """A fragment that forms no data set is left out of the table; the summary says so and names
    the first ones (before, only ``--json``'s ``skipped`` had them). So is a capture's next
    telegram: ``parse`` reads one."""
    path = tmp_path / "readout.txt"
    path.write_bytes(b"/ISK5ME162\r\n\r\n1.8.0(000123.4*kWh)\r\n2.8.0(1(2)\r\nxx\r\n!\r\n")
    res = run_main(capsys, "parse", str(path))
    assert res.returncode == 0
    assert "not read (3): '2.8.0(', '1(2)', 'xx'" in res.stdout
    path.write_bytes(b"/ISK5ME162\r\n\r\n1.8.0(000123.4*kWh)\r\n!\r\n")
    assert "not read" not in run_main(capsys, "parse", str(path)).stdout
    path.write_bytes(b"/LOG5LK13BE803049\r\n\r\n1-0:1.8.0*255(000123.4*kWh)\r\n!\r\n"
                     b"/LOG5LK13BE803049\r\n\r\n1-0:1.8.0*255(000123.5*kWh)\r\n!\r\n")
    res = run_main(capsys, "parse", str(path))
    assert res.returncode == 0 and "000123.4" in res.stdout and "000123.5" not in res.stdout
    assert "not read (1): 'the next telegram from /LOG5LK13BE803049'" in res.stdout


def test_parse_items_snippet_is_valid_yaml(own_readout: Path):
    res = cli("parse", str(own_readout), "--items")
    assert res.returncode == 0
    items = yaml.safe_load(res.stdout)["meter"]
    by_code = {item["dlms_obis_code"]: item for item in items.values() if "dlms_obis_code" in item}
    assert by_code["1.8.0"]["type"] == "num" and "visu_acl" not in by_code["1.8.0"]   # the smartvisu plugin's
    assert by_code["0.0.1"]["type"] == "str"  # '1LGZ0041827635' is no number
    # identifiers are digits but no quantity: a num item would drop leading zeros (as the plugin's snippet)
    assert by_code["0.0.0"]["type"] == "str" and by_code["C.1.0"]["type"] == "str"
    assert items["obis_1_8_1"]["dlms_obis_code"] == "1.8.1"                # the plugin's names: one generator
    assert items["connected"]["dlms_status"] == "connected"
    assert len(by_code) == len([item for item in items.values() if "dlms_obis_code" in item])


def test_cli_and_plugin_give_the_same_snippet(own_readout: Path):
    """One items.yaml generator: `parse --items` prints what the plugin shows for the same data."""
    from shng_double.testing import support

    from dlms_protocol.iec62056_21.datablock import parse_readout

    res = cli("parse", str(own_readout), "--items")
    data = parse_readout(own_readout.read_bytes()).to_meter_data()
    plugin_snippet = support().items_snippet(data)
    assert res.stdout.split("\n", 1)[1].rstrip("\n") == plugin_snippet.rstrip("\n")


@pytest.mark.parametrize("path", corpus_files("d0", ".txt"), ids=lambda p: p.stem)
def test_parse_corpus_exit_codes_follow_the_bcc(path: Path, capsys):
    side = load_json(path.with_suffix(".json"))
    bcc_ok = side["framing"]["bcc_ok"]  # computed by the corpus builder, not by this code
    # two files through a real interpreter, the rest in-process (same code, no start-up cost)
    run = cli if path.stem in ("iskra_mt174_1", "siemens_2wr5_1") else lambda *a: run_main(capsys, *a)
    res = run("parse", str(path), "--json")
    if bcc_ok is False:
        assert res.returncode != 0
        assert "BCC" in _one_line_error(res)
        res = run("parse", str(path), "--json", "--no-checksum")
        assert res.returncode == 0
        assert json.loads(res.stdout)["bcc"] == "bad"
        return
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["bcc"] == {True: "ok", None: "absent"}[bcc_ok]
    assert data["datasets"]
    for item in side.get("expected") or []:
        if item["obis"] == "*" or not item["values"]:
            continue
        found = [d for d in data["datasets"] if d["code"].lstrip("0-:") and d["code"] in _spellings(item["obis"])]
        assert found, item["obis"]
        got = found[0]["values"][0]["value"].strip()
        want = item["values"][0]["value"]
        if isinstance(want, str):
            assert got == want, item["obis"]
        else:
            assert Decimal(got.replace(",", ".")) == Decimal(str(want)), item["obis"]


def _spellings(code: str) -> set:
    spellings = {code}
    if code.endswith("*07"):
        spellings.add(code[:-3] + "*7")
    return spellings


# -------------------------------------------------------------------------------- read
# A meter five times faster than real: the ACK is on the wire 40 ms, the meter answers 100 ms
# after it, the reader switches 60 ms after handing it over.
FAST = ("--time-scale", "5", "--switch-delay", "0.06")


def fast_meter(name: str) -> SimulatedMeter:
    return SimulatedMeter(name, time_scale=5, reaction_time=0.5, switch_grace=1.0)


def test_read_against_the_simulated_meter():
    with SimulatedMeter("lgz_e350") as meter:  # real time and strict timing: about 2.5 s
        res = cli("read", meter.port, "--json")
        assert res.returncode == 0, res.stderr
        data = json.loads(res.stdout)
        assert data["identification"] == "/LGZ5ZMF110CC.S27" and data["bcc"] == "ok"
        assert data["baudrate"] == 9600 and data["timings"]["total"] > 0
        assert {"code": "32.7.0", "obis": None, "values": [{"value": "231.4", "unit": "V"}]} in data["datasets"]
    with fast_meter("lgz_e350") as meter:
        res = cli("read", meter.port, "--baudrate", "4800", "--items", *FAST)
    assert res.returncode == 0, res.stderr
    items = yaml.safe_load(res.stdout)["meter"]
    assert {item.get("dlms_obis_code") for item in items.values()} >= {"1.8.0", "1.8.1", "32.7.0", "F.F"}
    assert "at 4800 Bd" in res.stderr  # the timing line goes to stderr with --items


def test_read_table_shows_phases_and_failure_is_one_line():
    with fast_meter("heat_2wr6") as meter:
        res = cli("read", meter.port, "--retries", "0", *FAST)
        assert res.returncode == 1
        assert "wakeup" in _one_line_error(res)
        res = cli("read", meter.port, "--wakeup", *FAST)
    assert res.returncode == 0, res.stderr
    assert "Timing" in res.stdout and "wake-up" in res.stdout and "at 2400 Bd" in res.stdout
    assert "mode B" in res.stdout


def test_demo_runs_without_the_corpus():
    res = cli("demo")  # real time, about 3 s
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("dlms demo:")
    for text in ("/LGZ5ZMF110CC.S27", "1.8.0", "Active import (+A), energy", "Timing", "9600 Bd", "BCC ok"):
        assert text in res.stdout


def test_simulate_serves_until_interrupted():
    proc = subprocess.Popen([sys.executable, "-m", "dlms_protocol", "simulate", "--meter", "lgz_e350",
                             "--time-scale", "5", "--reaction-time", "0.5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENV, cwd=str(ROOT))
    try:
        port = None
        for _ in range(10):
            line = proc.stdout.readline()
            if line.startswith("port: "):
                port = line.split(": ", 1)[1].strip()
                break
        assert port and port.startswith("/dev/")
        from dlms_protocol.config import ReadoutConfig
        from dlms_protocol.iec62056_21.reader import D0Reader
        # ACK on the wire 40 ms, the meter answers 100 ms later: switching after 60 ms leaves slack
        reader = D0Reader(ReadoutConfig(port=port, baud_switch_delay=0.06), time_scale=5)
        data = reader.read()
        reader.close()
        assert data.get("1.8.2").value == Decimal("4222.222")
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "stopped after 1 readout(s)" in out


def test_read_of_a_readout_whose_bcc_fails_names_the_option_that_shows_it_anyway():
    """Every attempt's BCC fails (one bit of the data message flipped each time): the one error line
    says how to see the values anyway, unverified, as parse's does."""
    with SimulatedMeter("lgz_e350", time_scale=5, reaction_time=0.5, switch_grace=1.0, corrupt_at=20) as meter:
        res = cli("read", meter.port, "--retries", "0", *FAST)
    assert res.returncode == 1 and res.stdout == ""
    line = _one_line_error(res)
    assert "BCC mismatch" in line and "add --no-checksum" in line
