"""The terminal as a pipeline output (``cli_output.PrintOutput``): ``listen`` and ``poll --cycle``
run Source → Pipeline → PrintOutput, against a real pty push meter and a real TCP DLMS server."""
from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from decimal import Decimal
from typing import List

import pytest

from dlms_protocol.cli import main
from dlms_protocol.cli_output import PrintOutput
from dlms_protocol.errors import ConfigurationError
from dlms_protocol.jsonform import METER_DATA_KEYS
from dlms_protocol.model import MeterData, Reading
from dlms_protocol.obis import Obis
from dlms_protocol.pipeline import OUTPUTS, Health, make_output
from dlms_protocol.simulator.cosem_model import demo_model
from dlms_protocol.simulator.dlms_meter import DlmsTcpMeter
from dlms_protocol.simulator.push import PushSimulator
from helpers import ROOT


def snapshot(text: str = "block") -> MeterData:
    energy = Reading("1-0:1.8.0.255", Obis.parse("1-0:1.8.0.255"), Decimal("0.5"), "kWh")
    return MeterData(kind="push", readings=(energy,), received=0.0, text=text)


# ------------------------------------------------------------------ the output itself
def test_printer_prints_text_or_one_json_line_and_stops_after_count() -> None:
    out, err = io.StringIO(), io.StringIO()
    printer = PrintOutput(True, stream=out, errors=err, count=2)
    for _ in range(3):
        printer.publish(snapshot())
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and printer.done.is_set()  # the third is not printed
    doc = json.loads(lines[0])
    assert tuple(doc) == METER_DATA_KEYS and doc["readings"][0]["value"] == 0.5
    text = io.StringIO()
    PrintOutput(stream=text).publish(snapshot("push via hdlc, plain\n  1-0:1.8.0.255 0.5 kWh"))
    assert text.getvalue() == "push via hdlc, plain\n  1-0:1.8.0.255 0.5 kWh\n\n"  # the listen block


def test_printer_says_stale_and_back_on_stderr_only() -> None:
    out, err = io.StringIO(), io.StringIO()
    printer = PrintOutput(stream=out, errors=err, show_errors=False)
    printer.publish_health(Health(Health.OK))
    printer.publish_health(Health(Health.ERROR, "port gone"))  # the source logs it itself
    printer.publish_health(Health(Health.OK))
    printer.publish_health(Health(Health.STALE, "no new verified data for 60 s"))
    printer.publish_health(Health(Health.OK))
    assert out.getvalue() == ""
    assert err.getvalue() == "# stale: no new verified data for 60 s\n# ok: verified data again\n"


def test_print_is_a_registered_output_with_ini_options() -> None:
    assert OUTPUTS["print"] == ".cli_output:make_print_output"
    printer = make_output("print", json="yes", indent="2")
    assert isinstance(printer, PrintOutput) and printer.as_json and printer.indent == 2
    assert not make_output("print", json="no").as_json
    with pytest.raises(ConfigurationError, match="json"):
        make_output("print", json="maybe")


# ------------------------------------------------------------------ listen over a pty
def _listen(port: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dlms_protocol", "listen", port, "--baudrate", "9600", *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _send(sim: PushSimulator, n: int) -> List[bytes]:
    """Send ``n`` pushes once the listener has the port open; the frames as sent."""
    sent: List[bytes] = []
    build = sim.build

    def recording() -> List[bytes]:
        frames = build()
        sent.append(b"".join(frames))
        return frames

    sim.build = recording  # type: ignore[method-assign]
    deadline = time.monotonic() + 60
    while not sim.reader_ready() and time.monotonic() < deadline:
        time.sleep(0.05)
    for _ in range(n):
        assert sim.send_once()
    return sent


def _stop(proc: subprocess.Popen, sim: PushSimulator) -> str:
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    sim.stop()
    return err


def test_listen_json_line_is_the_one_form_with_the_derived_net_power() -> None:
    sim = PushSimulator(wrapper="hdlc", seed=11)
    port = sim.open_pty(baudrate=9600, parity="E", time_scale=25)
    proc = _listen(port, "--json")
    try:
        _send(sim, 1)
        registers = dict(sim.last_registers)
        line = json.loads(proc.stdout.readline())
    finally:
        err = _stop(proc, sim)
    assert proc.returncode == 0 and "messages=1" in err
    assert set(METER_DATA_KEYS) <= set(line) and line["wrapper"] == "hdlc" and line["received"].endswith("Z")
    by_obis = {r["obis"]: r for r in line["readings"]}
    imp, exp = registers["1-0:1.7.0.255"][0], registers["1-0:2.7.0.255"][0]
    net = by_obis["1-0:16.7.0.255"]  # not sent: the pipeline derives it, once, and says so
    assert net["derived"] is True and net["raw"] is None and Decimal(str(net["value"])) == Decimal(imp) - Decimal(exp)
    assert by_obis["1-0:1.7.0.255"]["derived"] is False and by_obis["1-0:1.7.0.255"]["value"] == imp


def test_listen_without_line_options_searches_and_says_what_it_found() -> None:
    """``listen PORT`` alone (protocol auto, no line option) searches like the plugin, 2400 8E1 first,
    and names the line found as the options that skip the search next time."""
    sim = PushSimulator(wrapper="hdlc", seed=14)
    port = sim.open_pty(baudrate=2400, parity="E", time_scale=25)
    proc = subprocess.Popen([sys.executable, "-m", "dlms_protocol", "listen", port, "--json"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _send(sim, 1)
        line = json.loads(proc.stdout.readline())
    finally:
        err = _stop(proc, sim)
    assert proc.returncode == 0 and line["wrapper"] == "hdlc"
    assert "no line settings given: trying 2400 8E1, 9600 8N1, 9600 7E1" in err
    assert "line found: 2400 Bd 8E1; next time add --baudrate 2400 --parity E --bytesize 8" in err


def test_listen_text_is_byte_for_byte_what_decode_prints(capsys) -> None:
    sim = PushSimulator(wrapper="mbus", seed=12)
    port = sim.open_pty(baudrate=9600, parity="E", time_scale=25)
    proc = _listen(port)
    try:
        (frame,) = _send(sim, 1)
        block = []
        while not block or block[-1] != "\n":
            block.append(proc.stdout.readline())
    finally:
        _stop(proc, sim)
    assert main(["decode", "--hex", frame.hex()]) == 0
    assert "".join(block) == capsys.readouterr().out  # one printer: listen's block is decode's


def test_listen_ends_quietly_when_the_reader_goes_away() -> None:
    """``listen --json | head -1``: the next message finds the pipe closed; status 0, no traceback."""
    sim = PushSimulator(wrapper="hdlc", seed=13)
    port = sim.open_pty(baudrate=9600, parity="E", time_scale=25)
    proc = _listen(port, "--json")
    try:
        _send(sim, 1)
        assert json.loads(proc.stdout.readline())["wrapper"] == "hdlc"
        proc.stdout.close()  # the reader went away
        for _ in range(3):
            sim.send_once()
        err = proc.stderr.read()
        assert proc.wait(60) == 0, err
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
        sim.stop()
    assert "Traceback" not in err and "output_errors" not in err and "statistics:" in err


# ------------------------------------------------------------------ poll --cycle over TCP
@pytest.fixture
def meter():
    with DlmsTcpMeter(demo_model()) as m:
        yield m


def _documents(text: str) -> list:
    decoder, docs, pos = json.JSONDecoder(), [], 0
    while text[pos:].strip():
        while text[pos].isspace():
            pos += 1
        doc, pos = decoder.raw_decode(text, pos)
        docs.append(doc)
    return docs


def test_poll_cycle_runs_through_the_pipeline_to_the_printer(meter, capsys) -> None:
    assert main(["poll", meter.url, "--obis", "16.7.0", "--cycle", "0.2", "--count", "2", "--json"]) == 0
    out, err = capsys.readouterr()
    docs = _documents(out)
    assert len(docs) == 2  # --count 2, then it stops by itself
    for doc in docs:
        assert set(METER_DATA_KEYS) <= set(doc) and doc["kind"] == "poll"
        by_obis = {r["obis"]: r for r in doc["readings"]}
        net = by_obis["1-0:16.7.0.255"]  # asked for, derived from 1.7.0 - 2.7.0 (both polled for it)
        assert net["derived"] is True and net["value"] == 1234 and net["unit"] == "W"
        assert by_obis["1-0:1.7.0.255"]["derived"] is False and by_obis["1-0:1.7.0.255"]["value"] == 1234


def test_poll_cycle_text_prints_a_table_per_cycle(meter, capsys) -> None:
    assert main(["poll", meter.url, "--obis", "1.8.0", "--cycle", "0.2", "--count", "2"]) == 0
    out, err = capsys.readouterr()
    assert [line.split() for line in out.splitlines() if line.startswith("code")] == [
        ["code", "value", "unit", "meaning"]] * 2
    assert err.count("objects in") == 2


# ------------------------------------------------------------------ serve --config with [print]
def test_serve_prints_d0_readouts_as_json_lines(tmp_path) -> None:
    """The registered output in the standalone service: a D0 readout source (real pty, mode C) → stdout."""
    from dlms_protocol.simulator.d0 import SimulatedMeter

    meter = SimulatedMeter("lgz_e350", mode="C", baudrate=9600).start()  # real timing, as serve reads it
    cfg = tmp_path / "serve.ini"
    cfg.write_text(f"[meter]\nmode = readout\nport = {meter.port}\ninterval = 60\n\n[print]\njson = yes\n")
    proc = subprocess.Popen([sys.executable, "-m", "dlms_protocol", "serve", "--config", str(cfg)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = json.loads(proc.stdout.readline())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
        meter.stop()
    assert line["kind"] == "readout" and line["checksum"] == "BCC" and line["identification"].startswith("/LGZ")
    by_code = {r["code"]: r for r in line["readings"]}
    # lgz_e350: 1.7.0(00.845*kW), 2.7.0(00.000*kW), 1.8.0(012345.678*kWh)
    assert by_code["1.8.0"]["value"] == 12345.678 and by_code["1.8.0"]["raw"] == "012345.678"
    net = next(r for r in line["readings"] if r["derived"])
    assert net["code"] == "16.7.0" and net["obis"] is None and net["value"] == 0.845 and net["unit"] == "kW"


@pytest.mark.parametrize("delay", [0.0, 0.02, 0.3])
def test_ctrl_c_at_any_moment_after_start_ends_listen_cleanly(delay: float) -> None:
    """Ctrl-C while the pipeline is still starting or already waiting: status 0, statistics printed
    (the signal sets an event; no KeyboardInterrupt lands inside a lock or a thread start)."""
    sim = PushSimulator(wrapper="hdlc", seed=14)
    port = sim.open_pty(baudrate=9600, parity="E", time_scale=25)
    proc = _listen(port, "--json")
    deadline = time.monotonic() + 60
    while not sim.reader_ready() and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(delay)
    err = _stop(proc, sim)
    assert proc.returncode == 0, err
    assert "statistics:" in err and "Traceback" not in err
