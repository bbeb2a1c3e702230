"""The SML stream end to end: framer edge cases, ``listen --protocol sml`` and ``auto`` over a real
pty replaying captures at their baud rate, the pipeline source, ``simulate-push --protocol sml``
as a subprocess, and AutoDecoder choosing by checksum."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Iterator, List, Tuple

import pytest

from dlms_protocol.config import ListenerConfig
from dlms_protocol.detect.decoders import AutoDecoder
from dlms_protocol.model import Statistics
from dlms_protocol.pipeline import Health, Pipeline, make_source
from dlms_protocol.simulator.push import PushSimulator
from dlms_protocol.simulator.sml import SmlSimulator, encode_sml, entry, signed, split_capture, transport
from dlms_protocol.sml.decoder import SmlDecoder, decode_all
from dlms_protocol.sml.framing import MAX_SIZE, SmlFramer
from helpers import CORPUS, ROOT, Recorder, corpus_files, load_json

SID = b"\x0a\x01SIM\x00\x00\x00\x00\x09"


def one(power: int) -> bytes:
    return encode_sml(SID, [entry("0100100700ff", signed(power, 4), 27, 0)])


# ------------------------------------------------------------------ framer
def test_garbage_and_a_cut_transmission_do_not_cost_the_next_one() -> None:
    good = one(1234)
    cut = good[:len(good) // 2]  # the end never came
    errors: List[Exception] = []
    framer = SmlFramer(errors.append)
    out = framer.feed(b"\x00\xff" * 50 + cut + good + good[:3])
    assert [t.raw for t in out] == [good]
    assert framer.cut == 1 and framer.crc_errors == 0 and len(errors) == 1
    assert framer.buffered <= 7  # only what may be the start of the next transmission is kept


def test_buffer_stays_bounded_without_an_end() -> None:
    framer = SmlFramer(max_size=4096)
    for _ in range(100):
        framer.feed(b"\x1b\x1b\x1b\x1b\x01\x01\x01\x01" + b"\x42" * 1000)
        assert framer.buffered <= 4096 + 8 + 1000
    assert framer.oversized > 0 or framer.cut > 0
    assert MAX_SIZE >= 4096


@pytest.mark.parametrize("pad", range(4))
def test_padding_and_escapes(pad: int) -> None:
    payload = bytes(range(1, 5)) * 3 + b"\x1b\x1b\x1b\x1b" + bytes(4 - pad if pad else 0)
    raw = transport(payload)
    (tx,) = SmlFramer().feed(raw)
    assert tx.payload[:len(payload)] == payload and tx.crc == "x25"


def test_reduced_simulated_meter_is_recognised() -> None:
    telegrams, _ = decode_all(SmlSimulator(seed=1, reduced=True).build())
    (tel,) = telegrams
    assert tel.reduced and all(r.scaler == 3 for r in tel.readings if r.unit == "Wh")


# ------------------------------------------------------------------ auto
def test_auto_decoder_chooses_by_a_checksum_that_held() -> None:
    sml = SmlSimulator(seed=2).build()
    push = PushSimulator(wrapper="hdlc", seed=2).emit()
    auto = AutoDecoder(ListenerConfig(port="-"))
    assert auto.feed(push[: len(push) // 2]) == [] and auto.protocol is None
    got = auto.feed(push[len(push) // 2:])
    assert auto.protocol == "dlms" and len(got) == 1
    auto = AutoDecoder(ListenerConfig(port="-"))
    got = auto.feed(b"\x7e\x00garbage" + sml)
    assert auto.protocol == "sml" and len(got) == 1 and got[0].to_json()["protocol"] == "sml"


def test_auto_reports_an_encrypted_push_without_key_at_once() -> None:
    errors: List[Exception] = []
    push = PushSimulator(wrapper="hdlc", key=bytes(16), security=0x20, seed=3).emit()
    auto = AutoDecoder(ListenerConfig(port="-"), on_error=errors.append)
    assert auto.feed(push) == [] and errors and errors[0].stat == "decrypt_failures"


# ------------------------------------------------------------------ listen over a pty
def listen(port: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dlms_protocol", "listen", port, *args, "--json"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("protocol", ["sml", "auto"])
def test_listen_replays_a_raw_dump_and_counts_the_damaged(protocol: str) -> None:
    path = next((p for p in corpus_files("sml", ".bin") if p.stem == "easymeter_q3a_a1064_dump"), None)
    if path is None:
        pytest.skip(f"SML corpus not found at {CORPUS}")
    case = load_json(path.with_suffix(".json"))
    sim = SmlSimulator(path, interval=0.05)
    port = sim.open_pty(baudrate=9600, parity="N", time_scale=4)
    proc = listen(port, "--protocol", protocol, "--baudrate", "9600", "--parity", "N")
    try:
        deadline = time.monotonic() + 60
        while not sim.reader_ready() and time.monotonic() < deadline:
            time.sleep(0.05)
        for _ in range(len(sim.chunks)):  # the whole dump once, chunk by chunk, paced at 9600 Bd
            assert sim.send_once()
        lines = [json.loads(proc.stdout.readline()) for _ in range(4)]
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        sim.stop()
    expected = [e for e in case["expected"] if e["frame"] == 1]
    got = {r["obis"]: r for r in lines[0]["readings"]}
    energy = next(e for e in expected if e["obis"] == "1-0:1.8.0*255")
    assert got["1-0:1.8.0.255"]["raw"] == energy["value"] and got["1-0:1.8.0.255"]["scaler"] == -4
    assert all(line["protocol"] == "sml" for line in lines)
    stats = err.split("statistics: ")[1]
    assert "messages=4" in stats
    assert "checksum_errors=1" in stats and "framing_errors=2" in stats  # 3 damaged, none shown


# ------------------------------------------------------------------ the pipeline source
@contextmanager
def sml_pipeline(sim: SmlSimulator, listen_timeout: float) -> Iterator[Tuple[Any, Recorder, Pipeline]]:
    """(source, recorder, pipeline) of an SML source on the simulator's line, once it reads there."""
    port = sim.open_pty(baudrate=9600, parity="N", time_scale=4)
    source = make_source("sml", config=ListenerConfig(port=port, baudrate=9600, parity="N"),
                         listen_timeout=listen_timeout)
    out = Recorder()
    pipe = Pipeline(source, [out])
    pipe.start()
    try:
        deadline = time.monotonic() + 30
        while not sim.reader_ready() and time.monotonic() < deadline:
            time.sleep(0.05)
        yield source, out, pipe
    finally:
        pipe.stop()
        sim.stop()


def test_sml_source_through_the_pipeline() -> None:
    sim = SmlSimulator(seed=5, interval=0.2)
    with sml_pipeline(sim, listen_timeout=10) as (source, out, _pipe):
        assert sim.send_once()
        assert out.event.wait(20)
    data = out.data[0]
    power = data.get("16.7.0")
    assert power is not None and power.value == sim.last_registers["1-0:16.7.0*255"]
    assert data.get("1.8.0").value == sim.last_registers["1-0:1.8.0*255"]
    assert data.meter_id == "0A0153494D0012345678"
    assert any(h.state == Health.OK for h in out.health)
    assert source.status()["protocol"] == "sml"


def test_a_stale_sml_meter_says_what_its_bytes_show_on_every_host() -> None:
    """Transmissions arrive but fail their CRC: the source's stale cause (serve's log, MQTT, the
    plugin's status alike) gives the last failure and the diagnosis of the bytes with its fix (the
    reading head, kermit_crc), not "check the cable". Before, only the SmartHomeNG plugin added
    the diagnosis, to its own log line."""
    sim = SmlSimulator(seed=13)
    with sml_pipeline(sim, listen_timeout=1) as (_source, out, pipe):
        stale: List[Health] = []
        deadline = time.monotonic() + 30
        while not stale and time.monotonic() < deadline:
            bad = bytearray(sim.build())
            bad[60] ^= 0x04
            assert sim.pty.send(bytes(bad))
            time.sleep(0.3)
            pipe.tick()
            stale = [h for h in out.health if h.state == Health.STALE]
    assert stale and not out.data
    cause = stale[0].cause
    assert "frames arrive but fail; the last one: SML" in cause and "CRC" in cause
    assert "SML transmissions at 9600 Bd 8N1 whose CRC fails: check the reading head's position" in cause
    assert "check the cable, the port settings" not in cause


# ------------------------------------------------------------------ simulate-push --protocol sml
def test_simulate_push_sml_subprocess_is_read_by_listen(tmp_path: Path) -> None:
    """Also under a stable name (``--link``, as for a DLMS push meter: it was ignored for SML)."""
    link = tmp_path / "sml-meter"
    sim = subprocess.Popen([sys.executable, "-m", "dlms_protocol", "simulate-push", "--protocol", "sml",
                            "--interval", "0.3", "--baudrate", "19200", "--link", str(link)], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc = None
    try:
        first = sim.stdout.readline()
        assert first.startswith(f"SML meter on {link}:") and "19200 Bd 8N1" in first
        assert os.readlink(link).startswith("/dev/pts/")
        port = str(link)
        proc = listen(port, "--protocol", "sml", "--baudrate", "19200")
        msg = json.loads(proc.stdout.readline())
        assert msg["manufacturer"] == "SIM" and msg["reduced_data_set"] is False
        energy = next(r for r in msg["readings"] if r["obis"] == "1-0:1.8.0.255")
        assert Decimal(str(energy["value"])) == Decimal(energy["raw"]).scaleb(-1)
    finally:
        for p in (proc, sim):
            if p is not None:
                p.send_signal(signal.SIGINT)
                p.communicate(timeout=30)
    assert not os.path.lexists(link)  # the stable name goes with the meter


def test_split_capture_keeps_every_byte() -> None:
    for path in corpus_files("sml", ".bin"):
        data = path.read_bytes()
        assert b"".join(split_capture(data)) == data


def test_decoder_reset_forgets_a_partial_transmission() -> None:
    good = one(-5)
    dec = SmlDecoder()
    assert dec.feed(good[:30]) == []
    dec.reset()
    assert dec.feed(good[30:]) == []  # the rest alone is no transmission
    (tel,) = dec.feed(good)
    assert tel.readings[0].value == Decimal(-5)


def test_demo_sml_finds_the_simulated_meter(capsys) -> None:
    from dlms_protocol.cli import main

    assert main(["demo", "--sml", "--fast"]) == 0
    out = capsys.readouterr().out
    assert "protocol:   SML (optical INFO interface)" in out and "    protocol: 'sml'" in out
    assert "1-0:16.7.0*255" in out  # the telegram itself, after the configuration


def test_a_d0_read_never_loads_smllib() -> None:
    code = ("import sys; from dlms_protocol.cli import main; "
            "main(['parse', sys.argv[1], '--json']); print('smllib' in sys.modules)")
    sample = ROOT / "dlms_protocol" / "data" / "sample_meters" / "lgz_e350.txt"
    out = subprocess.run([sys.executable, "-c", code, str(sample)], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip().endswith("False")


def test_decode_hex_recognises_sml(capsys) -> None:
    from dlms_protocol.cli import main

    data = one(-42)
    assert main(["decode", "--hex", data.hex(" "), "--json"]) == 0
    (msg,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    power = msg["readings"][0]
    assert (power["obis"], power["raw"], power["value"], power["unit"], power["scaler"]) == \
        ("1-0:16.7.0.255", -42, -42, "W", 0)
    bad = bytearray(data)
    bad[20] ^= 1
    assert main(["decode", "--hex", bytes(bad).hex()]) == 1
    assert "error: 1 SML transmission(s) lost" in capsys.readouterr().err


def test_detect_over_socket_listens_once(capsys) -> None:
    """socket:// (ser2net): the serial server sets speed and format, so one passive window."""
    import socket

    from dlms_protocol.cli import main

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    stop = threading.Event()
    sim = SmlSimulator(seed=21)

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            while not stop.wait(0.2):
                try:
                    conn.sendall(sim.build())
                except OSError:
                    return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        port = f"socket://127.0.0.1:{server.getsockname()[1]}"
        assert main(["detect", port, "--listen", "0.5", "--dwell", "2", "--total", "20", "--no-sign-on"]) == 0
        out, err = capsys.readouterr()
    finally:
        stop.set()
        server.close()
    assert err.count("listening") == 1 and "protocol:   SML" in out and f"serialport: '{port}'" in out
    assert "set on the serial server" in out


def test_every_stream_message_takes_the_text_flag_and_the_receive_time() -> None:
    """SML, D0 and DLMS messages have one ``to_meter_data(text, received)``: the listener gives
    each the receive time of its clock and leaves the text out for a sink that never shows it."""
    from dlms_protocol.detect.decoders import D0PushDecoder, make_decoder

    sml = decode_all(SmlSimulator(seed=2).build())[0][0]
    dlms = make_decoder("dlms").feed(PushSimulator(wrapper="hdlc", seed=3).emit())[0]
    d0 = D0PushDecoder(use_checksum=False).feed(b"/ABC5METER\r\n\r\n1-0:1.8.0(000123.4*kWh)\r\n!\r\n")[0]
    for msg in (sml, dlms, d0):
        shown, bare = msg.to_meter_data(), msg.to_meter_data(False, 12.5)
        assert shown.text == msg.render() and bare.text == "" and bare.received == 12.5
        assert bare.readings == shown.readings and bare.checksum == shown.checksum


def test_the_victron_service_renders_no_text_for_a_dlms_meter_found_by_auto(tmp_path) -> None:
    """``protocol = auto`` with only the D-Bus output: a DLMS push recognised by the search is not
    rendered as text, as with ``protocol = dlms`` (D-Bus shows none; rendering is part of a GX's
    CPU per push); with another output it is."""
    from dlms_protocol.serve import build_source
    from dlms_protocol.victron.config_file import load_config

    for victron, rendered in ((True, False), (False, True)):
        sim = PushSimulator(wrapper="hdlc", seed=41)
        port = sim.open_pty(baudrate=2400, parity="E", time_scale=4)
        ini = tmp_path / "auto.ini"
        ini.write_text(f"[meter]\nmode = push\nprotocol = auto\nport = {port}\nbaudrate = 2400\nparity = E\n")
        cfg = load_config(str(ini), victron=victron)
        out = Recorder()
        pipe = Pipeline(build_source(cfg, Statistics()), [out])
        pipe.start()
        try:
            deadline = time.monotonic() + 30
            while not out.data and time.monotonic() < deadline:
                sim.send_once()
                out.event.wait(0.5)
        finally:
            pipe.stop()
            sim.stop()
        assert out.data and out.data[0].get("1.8.0") is not None, victron
        assert bool(out.data[0].text) is rendered, victron


def test_serve_config_with_protocol_sml_reads_the_meter(tmp_path) -> None:
    """The Venus OS / standalone service: [meter] protocol = sml gives the SML source (Victron, MQTT)."""
    from dlms_protocol.serve import build_source
    from dlms_protocol.sml.source import SmlSource
    from dlms_protocol.victron.config_file import load_config

    sim = SmlSimulator(seed=31)
    port = sim.open_pty(baudrate=9600, parity="N", time_scale=4)
    ini = tmp_path / "meter.ini"
    ini.write_text(f"[meter]\nmode = push\nprotocol = sml\nport = {port}\n")  # 9600 8N1 without saying so
    cfg = load_config(str(ini), victron=False)
    line = cfg.listener
    assert (line.baudrate, line.bytesize, line.parity, line.stopbits) == (9600, 8, "N", 1)
    stats = Statistics()
    source = build_source(cfg, stats)
    assert isinstance(source, SmlSource) and source.stats is stats and cfg.protocol == "sml"
    out = Recorder()
    pipe = Pipeline(source, [out])
    pipe.start()
    try:
        deadline = time.monotonic() + 30
        while not sim.reader_ready() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sim.send_once()
        assert out.event.wait(20)
    finally:
        pipe.stop()
        sim.stop()
    assert out.data[0].get("1.8.0").value == sim.last_registers["1-0:1.8.0*255"]
    dlms = tmp_path / "dlms.ini"  # a DLMS push meter stays at M-Bus's 2400 8E1; what is written is kept
    dlms.write_text(f"[meter]\nmode = push\nport = {port}\n")
    line = load_config(str(dlms), victron=False).listener
    assert (line.baudrate, line.bytesize, line.parity) == (2400, 8, "E")
    ini.write_text(f"[meter]\nmode = push\nprotocol = sml\nport = {port}\nbaudrate = 2400\nparity = E\n")
    line = load_config(str(ini), victron=False).listener
    assert (line.baudrate, line.bytesize, line.parity) == (2400, 8, "E")
    bad = tmp_path / "bad.ini"
    bad.write_text(f"[meter]\nmode = push\nprotocol = smk\nport = {port}\n")
    with pytest.raises(Exception, match="protocol = 'smk' is unknown"):
        load_config(str(bad), victron=False)


# ------------------------------------------------------------------ a quiet line between pushes
def _dsmr_push(n: int) -> bytes:
    from test_push_profiles import _telegram
    return _telegram([f"1-0:1.8.0({1234 + n:06d}.567*kWh)", f"1-0:1.7.0(00.{500 + n}*kW)"])


@pytest.mark.parametrize("protocol,meter", [("sml", "sml"), ("auto", "sml"), ("d0", "d0"), ("auto", "d0")])
def test_a_quiet_line_between_pushes_keeps_the_port_open(protocol: str, meter: str, monkeypatch, caplog) -> None:
    """Between two pushes the listener's read ends without a byte and asks its decoder to settle:
    every protocol's decoder answers it (the SML, D0 and auto listeners once failed there and
    reopened the port after each quiet read, losing what arrived meanwhile)."""
    from dlms_protocol.dlms import listener as listener_module
    from dlms_protocol.simulator.pty import PtyLink
    from dlms_protocol.sml.source import StreamListener

    monkeypatch.setattr(listener_module, "IDLE_READ", 0.1)  # many quiet reads between two pushes
    sim = SmlSimulator(seed=5)
    link = None
    if meter == "sml":
        port = sim.open_pty(baudrate=9600, parity="N", time_scale=4)
        send = sim.send_once
    else:
        link = PtyLink(baudrate=9600, bytesize=8, parity="N")
        port = link.port
        sent = [0]

        def send() -> bool:
            sent[0] += 1
            return link.send(_dsmr_push(sent[0]))
    got: List = []
    listener = StreamListener(ListenerConfig(port=port, baudrate=9600, parity="N"), got.append, protocol=protocol)
    listener.start()
    try:
        deadline = time.monotonic() + 20
        while listener.connects < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        for n in range(3):
            assert send()
            deadline = time.monotonic() + 20
            while len(got) <= n and time.monotonic() < deadline:
                time.sleep(0.02)
            assert len(got) == n + 1, (n, got)
            time.sleep(0.5)  # five quiet reads
    finally:
        listener.stop()
        sim.stop()
        if link is not None:
            link.close()
    assert listener.connects == 1, caplog.text
    assert "unexpected error" not in caplog.text
    assert listener.stats.get("messages") == 3


def test_the_line_search_finds_a_dlms_meter_at_2400_8e1(monkeypatch, caplog) -> None:
    """The search (a listener with no line named) goes through detect's usual lines; at the wrong
    ones a DLMS push arrives as garbage, which is no warning and no failure; at 2400 8E1 the push
    passes its checks, is delivered, and the line is kept."""
    import logging

    import dlms_protocol.sml.source as stream
    from dlms_protocol.detect.probe import PASSIVE
    from dlms_protocol.sml.source import StreamListener

    monkeypatch.setattr(stream, "SEARCH_LISTEN", 0.5)
    monkeypatch.setattr(stream, "SEARCH_DWELL", 6.0)  # (opened just inside a push: 1.9 s of it, 0.4 s
    # pause, and the next push's 1.9 s on the line)
    caplog.set_level(logging.INFO)
    sim = PushSimulator(wrapper="hdlc", seed=21, interval=0.4)
    port = sim.open_pty(baudrate=2400, parity="E")
    got: List = []
    problems: List = []
    listener = StreamListener(ListenerConfig(port=port), got.append, on_error=problems.append, protocol="auto",
                              search=PASSIVE)
    assert (listener.config.baudrate, listener.config.parity) == (9600, "N")  # the first usual line
    assert "no message passed its checks at 9600 8N1 so far (of 8)" in listener.diagnosis()
    sim.start()
    listener.start()
    try:
        deadline = time.monotonic() + 30
        while not got and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        listener.stop()
        sim.stop()
    assert got and got[0].get("1.8.0") is not None
    c = listener.config
    assert (c.baudrate, c.bytesize, c.parity, c.stopbits) == (2400, 8, "E", 1) and not listener.searching
    assert listener.detected_protocol == "dlms"
    assert "2400 Bd 8E1" in listener.notes["line search"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [e for e in problems if not e.lead_in]  # (the tail of a push it opened into, at most)
    assert listener.connects >= 3  # one open per line tried


def test_the_line_search_reads_a_d0_meter_as_7e1(monkeypatch) -> None:
    """A push-only D0 meter (9600 7E1) passes its BCC already at 9600 8N1, the same bits with the
    parity bit as eighth data bit, unchecked. The search then reopens the line as 7E1, where the
    transport checks each character's parity, and names 7E1."""
    import dlms_protocol.sml.source as stream
    from dlms_protocol.detect.probe import PASSIVE
    from dlms_protocol.simulator.d0 import SimulatedMeter
    from dlms_protocol.sml.source import StreamListener

    monkeypatch.setattr(stream, "SEARCH_LISTEN", 1.0)
    monkeypatch.setattr(stream, "SEARCH_DWELL", 3.0)
    with SimulatedMeter("lgz_e350", mode="push", push_interval=0.5, push_baudrate=9600) as meter:
        got: List = []
        listener = StreamListener(ListenerConfig(port=meter.port), got.append, protocol="auto", search=PASSIVE)
        listener.start()
        try:
            deadline = time.monotonic() + 30
            while (len(got) < 3 or listener.detected_protocol is None) and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            listener.stop()
    c = listener.config
    assert (c.baudrate, c.bytesize, c.parity, c.stopbits) == (9600, 7, "E", 1) and listener.detected_protocol == "d0"
    assert "9600 Bd 7E1" in listener.notes["line search"]
    assert len(got) >= 3 and all(d.checksum == "BCC" and d.get("0.0.0") is not None for d in got)
    assert listener.connects == 2  # found at 9600 8N1, then the same line as 7E1


@pytest.mark.parametrize("kind", ["dlms", "dlms-segmented", "sml", "d0"])
def test_auto_decoder_counts_what_the_protocols_own_decoder_counts(kind: str) -> None:
    """The statistics (web interface, dlms_status items) do not depend on ``protocol: auto``: the
    first message's frames, APDUs and decryptions count too (they were once lost, so a push meter
    showed one message more than APDUs)."""
    from dlms_protocol.detect.decoders import make_decoder
    from dlms_protocol.iec62056_21.datablock import _crc16_arc

    if kind.startswith("dlms"):
        key = bytes(range(16))
        sim = PushSimulator(wrapper="hdlc", key=key, security=0x20, seed=4, segmented=kind.endswith("segmented"),
                            max_info=60)
        stream = b"\x11\x22" * 20 + b"".join(sim.emit() for _ in range(4))
        protocol, config = "dlms", ListenerConfig(port="-", key=key)
    elif kind == "sml":
        stream = b"\x00" * 7 + b"".join(SmlSimulator(seed=s).build() for s in range(4))
        protocol, config = "sml", ListenerConfig(port="-")
    else:
        stream = b""
        for s in range(4):  # DSMR telegrams: push-only D0 with a CRC
            body = f"/ISK5\\2M550T-1012\r\n\r\n1-0:1.8.0({1234 + s:010.3f}*kWh)\r\n!".encode("ascii")
            stream += body + f"{_crc16_arc(body):04X}\r\n".encode("ascii")
        protocol, config = "d0", ListenerConfig(port="-")
    for piece in (len(stream), 7, 1):
        chunks = [stream[i:i + piece] for i in range(0, len(stream), piece)]
        auto, plain = AutoDecoder(config), make_decoder(protocol, config)
        got_auto = [m for c in chunks for m in auto.feed(c)]
        got_plain = [m for c in chunks for m in plain.feed(c)]
        assert auto.protocol == protocol and len(got_auto) == len(got_plain) == 4
        counters = dict(auto.stats.counters)
        assert counters == plain.stats.counters
        if protocol == "dlms":
            assert counters["decrypted"] == counters["apdus"] == counters["messages"] == 4


@pytest.mark.parametrize("wrapper,security", [("mbus", 0x20), ("hdlc", 0x30)])
def test_auto_takes_checksummed_frames_that_fail_the_key_for_the_meter_s_protocol(wrapper: str,
                                                                                 security: int) -> None:
    """An encrypted push with a wrong key: its frames pass their HDLC/M-Bus checksums, then fail
    deciphering. That is the meter's protocol, only the key is wrong: auto says so (the errors
    reach the sink) and recognises DLMS after two such frames, instead of searching on."""
    key = bytes(range(16))
    sim = PushSimulator(wrapper=wrapper, key=key, auth_key=key if security == 0x30 else None, security=security,
                        seed=3, segmented=wrapper == "mbus")
    errors: List[Any] = []
    dec = AutoDecoder(ListenerConfig(port="-", key=bytes(16)), Statistics(), errors.append)
    assert dec.feed(sim.emit()) == [] and dec.protocol is None
    assert dec.feed(sim.emit()) == [] and dec.protocol == "dlms"
    assert errors and all("key" in str(e) for e in errors)
    noisy = AutoDecoder(ListenerConfig(port="-", key=bytes(16)), Statistics())  # (the same bytes, cut anew)
    for chunk in (sim.emit(), b"\x00" * 40, sim.emit()):
        for i in range(0, len(chunk), 7):
            noisy.feed(chunk[i:i + 7])
    assert noisy.protocol == "dlms"


def test_the_line_search_stops_at_the_line_whose_frames_fail_only_the_key(monkeypatch, caplog) -> None:
    """Austrian M-Bus meter at 2400 8E1 with a wrong key (pain 3): the search keeps that line and
    the log says to check the key, instead of searching on and pointing at an SML PIN."""
    import logging

    import dlms_protocol.sml.source as stream
    from dlms_protocol.detect.probe import PASSIVE
    from dlms_protocol.sml.source import StreamListener

    monkeypatch.setattr(stream, "SEARCH_LISTEN", 0.5)
    monkeypatch.setattr(stream, "SEARCH_DWELL", 6.0)
    caplog.set_level(logging.INFO)
    sim = PushSimulator(wrapper="mbus", key=bytes(range(16)), security=0x20, segmented=True, seed=8, interval=0.5)
    port = sim.open_pty(baudrate=2400, parity="E")
    got: List = []
    # one wrong line before the meter's (the search is under way), and the line after it, which
    # a search that does not stop there goes on to
    lines = (PASSIVE[0], (2400, "8E1"), PASSIVE[1])
    listener = StreamListener(ListenerConfig(port=port, key=bytes(16)), got.append, protocol="auto", search=lines)
    sim.start()
    listener.start()
    try:
        deadline = time.monotonic() + 40
        while listener.searching and time.monotonic() < deadline:
            time.sleep(0.05)
        deadline = time.monotonic() + 10  # (more pushes at the line kept: their errors are logged)
        while "check the encryption key" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # (a push or two more: still at that line, still no value)
    finally:
        listener.stop()
        sim.stop()
    c = listener.config
    assert not listener.searching and (c.baudrate, c.parity) == (2400, "E")
    assert listener.detected_protocol == "dlms" and got == []
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("check the encryption key" in w for w in warned), warned
    assert "0f0e0d0c" not in caplog.text and bytes(range(16)).hex() not in caplog.text


def test_the_line_search_leaves_a_line_whose_bursts_all_fail_before_its_dwell() -> None:
    """A German SML meter (9600 8N1, a push every second) and a configuration that names no line:
    the search begins at 2400 8E1, where the pushes arrive as bursts of garbage. After four such
    bursts it moves on (it waited the whole 25 s dwell before), so the meter is read within
    seconds. The usual settings and time-outs, unpatched."""
    from dlms_protocol.simulator.sml import SmlSimulator
    from dlms_protocol.sml.source import SEARCH_DWELL, StreamListener, usual_lines

    sim = SmlSimulator(seed=6, interval=1.0)
    port = sim.open_pty(baudrate=9600, parity="N")
    got: List = []
    listener = StreamListener(ListenerConfig(port=port), got.append, protocol="auto", search=usual_lines())
    assert (listener.config.baudrate, listener.config.parity) == (2400, "E")
    sim.start()
    begun = time.monotonic()
    listener.start()
    try:
        while not got and time.monotonic() - begun < SEARCH_DWELL + 10:
            time.sleep(0.05)
        took = time.monotonic() - begun
    finally:
        listener.stop()
        sim.stop()
    c = listener.config
    assert got and (c.baudrate, c.bytesize, c.parity) == (9600, 8, "N") and listener.detected_protocol == "sml"
    assert took < SEARCH_DWELL, took  # (four bursts of a 1 s meter, about 5 s, and the first push at 9600 8N1)
