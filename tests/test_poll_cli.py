"""``python -m dlms_protocol poll`` and ``simulate-dlms`` as a user runs them (real processes, real TCP)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from dlms_protocol.cli import main
from dlms_protocol.simulator.cosem_model import demo_model
from dlms_protocol.simulator.dlms_cli import DEMO_AUTH_KEY, DEMO_KEY
from dlms_protocol.simulator.dlms_meter import DlmsTcpMeter
from dlms_protocol.simulator.dlms_server import ServerSecurity

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def meter():
    with DlmsTcpMeter(demo_model(), security=ServerSecurity(bytes.fromhex(DEMO_KEY), bytes.fromhex(DEMO_AUTH_KEY))) \
            as m:
        yield m


def test_list_prints_code_value_unit_meaning(meter, capsys):
    assert main(["poll", meter.url, "--list"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split() == ["code", "value", "unit", "meaning"]
    assert re.search(r"^1-0:32\.7\.0\.255\s+230\.1\s+V\s+Voltage L1", out, re.M)
    assert re.search(r"^1-0:1\.8\.0\.255\s+12345678\s+Wh\s+Active import", out, re.M)
    table = lines[:lines.index("")]
    assert len(table) == 1 + len(meter.model.registers) + 3 + 1  # + net power, derived by the core
    assert re.search(r"^1-0:16\.7\.0\S*\s+1234\s+W\s+Active net.*\(derived\)$", out, re.M)
    assert "  1.0.99.1.0.255" in out  # the load profile is named, with how to read it
    assert "not readable: 0.0.96.1.1.255 attribute 2: read-write denied" in err


def test_items_snippet_is_yaml_with_every_code(meter, capsys):
    assert main(["poll", meter.url, "--items"]) == 0
    items = yaml.safe_load(capsys.readouterr().out)["meter"]
    codes = {item["dlms_obis_code"]: item for item in items.values() if "dlms_obis_code" in item}
    assert codes["1-0:1.8.0*255"]["type"] == "num" and codes["0-0:96.1.0*255"]["type"] == "str"
    assert len(codes) == len(meter.model.registers) + 3 + 1  # + net power, which the plugin derives
    assert "1-0:16.7.0*255" in codes
    assert items["connected"]["dlms_status"] == "connected"  # the core's snippet, status items included


def test_json_with_profile_and_hls(meter, capsys, tmp_path):
    args = ["poll", meter.url, "--client", "1", "--auth", "high_gmac", "--key", DEMO_KEY, "--auth-key", DEMO_AUTH_KEY,
            "--obis", "1.8.0,96.1.1", "--profile", "1.0.99.1.0.255", "--state-file", str(tmp_path / "ic"), "--json"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)  # nothing else on stdout (gurux's prints are kept off it)
    assert [v["code"] for v in data["readings"]] == ["0-0:96.1.1.255", "1-0:1.8.0.255"]  # object-list order
    assert len(data["profiles"]["1-0:99.1.0.255"]) == len(meter.model.profile_rows)
    assert DEMO_KEY not in out + err and DEMO_AUTH_KEY not in out + err


def test_selected_derived_code_is_shown_with_what_it_is_made_of(meter, capsys):
    assert main(["poll", meter.url, "--obis", "16.7.0"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^1-0:16\.7\.0\S*\s+1234\s+W\s+Active net", out, re.M)  # 1.7.0 - 2.7.0, both polled
    assert "1-0:1.7.0.255" in out and "1-0:2.7.0.255" in out


def test_wrong_password_exits_1_with_cause_and_fix(meter, capsys):
    assert main(["poll", meter.url, "--client", "32", "--auth", "low", "--password", "nope-nope"]) == 1
    err = capsys.readouterr().err
    assert "refused the password" in err and "nope-nope" not in err


def test_simulate_dlms_process_answers_poll(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "dlms_protocol", "simulate-dlms", "--tcp"], cwd=str(ROOT), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = None
        deadline = time.monotonic() + 30
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line.startswith("port: "):
                url = line.split()[1]
        assert url and url.startswith("tcp://127.0.0.1:")
        done = subprocess.run([sys.executable, "-m", "dlms_protocol", "poll", url, "--obis", "1.8.0", "--json"],
                              cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        reading = json.loads(done.stdout)["readings"][0]  # the one JSON form: a number stays a number
        assert reading["value"] == 12345678 and reading["unit"] == "Wh" and reading["derived"] is False
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
