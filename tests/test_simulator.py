"""The simulated meter and its emulated serial line, checked from the outside with a real
pseudo-terminal and pyserial (through transport.Transport), the way a reader sees them."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import serial
from hypothesis import given, settings
from hypothesis import strategies as st

from dlms_protocol.errors import ConfigurationError
from dlms_protocol.iec62056_21.datablock import bcc as parser_bcc
from dlms_protocol.iec62056_21.datablock import parse_readout
from dlms_protocol.iec62056_21.stream import D0StreamSplitter
from dlms_protocol.simulator.d0 import SimulatedMeter
from dlms_protocol.simulator.meters import (block_check, compose_identification, frame_message,
                                            image_from_capture, load_meter, sample_meters)
from dlms_protocol.simulator.pty import uart_resample
from dlms_protocol.transport import PARITY_ERROR, Transport
from helpers import corpus_files, load_json

SCALE = 10.0


# ------------------------------------------------------------------------- the UART model
@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=40), rate=st.sampled_from([300, 2400, 9600]))
def test_equal_rates_pass_bytes_unchanged(data, rate):
    assert uart_resample(data, rate, rate) == bytes(b & 0x7F for b in data)


@settings(max_examples=100, deadline=None)
@given(data=st.binary(min_size=1, max_size=40),
       rates=st.sampled_from([(9600, 300), (300, 9600), (4800, 300), (300, 2400)]))
def test_other_rates_never_deliver_more_than_the_receiver_can_sample(data, rates):
    sender, receiver = rates
    out = uart_resample(data, sender, receiver)
    # a receiver frame is 10 of its bit times; the burst lasts 10 sender bit times per byte
    assert len(out) <= len(data) * 10 * receiver / sender / 9 + 2


def test_a_sign_on_at_the_wrong_rate_arrives_as_garbage():
    assert b"/?!" not in uart_resample(b"/?!\r\n", 9600, 300)
    assert b"/?!" not in uart_resample(b"/?!\r\n", 300, 9600)
    assert b"/?!" not in uart_resample(b"/?!\r\n", 600, 300)


# --------------------------------------------------------------------------- meter images
def test_every_sample_meter_frames_into_a_readout_the_parser_accepts():
    assert {"lgz_e350", "lgz_zmd_large", "easymeter_push", "heat_2wr6", "kamstrup_mode_a"} <= set(sample_meters())
    for name in sample_meters():
        image = load_meter(name)
        raw = compose_identification(image, image.mode, image.baudrate) + frame_message(image.block, image.framing)
        readout = parse_readout(raw)
        assert readout.bcc == ("ok" if image.framing == "bcc" else "absent"), name
        assert len(readout.datasets) >= image.lines, name  # several sets may share a line
        assert image.description, name


def test_large_sample_meter_has_over_300_lines():
    image = load_meter("lgz_zmd_large")
    assert image.lines >= 300
    assert len(parse_readout(compose_identification(image, "C", 9600) + frame_message(image.block)).datasets) >= 300


def test_simulator_bcc_agrees_with_the_parser():
    for name in sample_meters():
        message = frame_message(load_meter(name).block, "bcc")
        assert message[-1] == parser_bcc(message) == block_check(message[1:-1])


@pytest.mark.parametrize("mode,rate,expected", [
    ("C", 9600, b"/LGZ5ZMF110CC.S27\r\n"), ("C", 300, b"/LGZ0ZMF110CC.S27\r\n"),
    ("B", 2400, b"/LGZCZMF110CC.S27\r\n"), ("E", 9600, b"/LGZ5\\2ZMF110CC.S27\r\n"),
    ("A", 300, b"/LGZ ZMF110CC.S27\r\n"),
])
def test_identification_follows_mode_and_rate(mode, rate, expected):
    assert compose_identification(load_meter("lgz_e350"), mode, rate) == expected


def test_unknown_meter_is_a_configuration_error():
    with pytest.raises(ConfigurationError):
        load_meter("no-such-meter")
    with pytest.raises(ConfigurationError):
        SimulatedMeter("lgz_e350", mode="X")


def test_capture_extraction_skips_echoes_and_keeps_the_captured_bytes():
    capture = (b"\x7f\x7f/?!\r\n/ABC5METER\r\n\x06050\r\n\x02" + b"1.8.0(1*kWh)\r\n!\r\n\x03" + b"X\x7f")
    image = image_from_capture(capture, "test")
    assert image.identification == "/ABC5METER"
    assert image.block == b"1.8.0(1*kWh)\r\n!\r\n"
    assert image.capture == b"\x02" + b"1.8.0(1*kWh)\r\n!\r\n\x03" + b"X\x7f"
    assert (image.mode, image.baudrate) == ("C", 9600)


@pytest.mark.parametrize("path", corpus_files("d0", ".txt"), ids=lambda p: p.stem)
def test_every_corpus_capture_can_be_replayed_with_a_correct_bcc(path):
    side = load_json(path.with_suffix(".json"))
    image = load_meter(str(path))
    if side["mode"].startswith("push"):
        assert image.mode == "push"
    raw = compose_identification(image, image.mode, image.baudrate) + frame_message(image.block, "bcc")
    readout = parse_readout(raw)
    assert readout.bcc == "ok"
    assert readout.datasets


# --------------------------------------------------------------------- over the pty line
def test_meter_answers_only_at_300_bd_and_paces_its_characters():
    with SimulatedMeter("lgz_e350", time_scale=SCALE) as meter:
        with Transport.open(meter.port, 9600) as port:
            port.write(b"/?!\r\n")
            assert port.read_some(100, timeout=0.5) == b""  # the request reached it as garbage
            assert meter.wait_for("rx-wrong-baud", 2.0)
            assert "sign-on" not in meter.event_names()
            port.set_baudrate(300)
            port.write(b"/?!\r\n")
            start = time.monotonic()
            line = port.read_until(b"\n", timeout=3.0)
            elapsed = time.monotonic() - start
        names = meter.event_names()
    assert line == b"/LGZ5ZMF110CC.S27\r\n"
    assert "sign-on" in names
    # at least the reaction time plus 19 characters of 10 bits at 300 Bd, scaled (a lower bound only)
    assert elapsed >= (0.2 + 18 * 10 / 300) / SCALE


def test_echo_returns_the_readers_bytes():
    with SimulatedMeter("lgz_e350", time_scale=SCALE, echo=True) as meter:
        with Transport.open(meter.port, 300) as port:
            port.write(b"/?!\r\n")
            assert port.read_until(b"\n", timeout=2.0) == b"/?!\r\n"
            assert port.read_until(b"\n", timeout=3.0) == b"/LGZ5ZMF110CC.S27\r\n"


def test_mode_b_meter_switches_by_itself_after_the_identification():
    with SimulatedMeter("heat_2wr6", time_scale=SCALE, wakeup=False, reaction_time=1.0) as meter:
        with Transport.open(meter.port, 300) as port:
            port.write(b"/?!\r\n")
            assert port.read_until(b"\n", timeout=3.0) == b"/SIEC2WR6\r\n"
            port.set_baudrate(2400)
            message = port.read_until(b"!\r\n\x03", timeout=5.0, char_timeout=1.0) + port.read(1, timeout=1.0)
    assert message.startswith(b"\x02") and message == meter.message


def test_mode_c_meter_without_ack_sends_at_300_bd():
    with SimulatedMeter("lgz_e350", time_scale=4 * SCALE, ack_timeout=1.5) as meter:
        with Transport.open(meter.port, 300) as port:
            port.write(b"/?!\r\n")
            port.read_until(b"\n", timeout=3.0)
            message = port.read_until(b"\x03", timeout=10.0, char_timeout=1.0) + port.read(1, timeout=1.0)
        names = meter.event_names()
    assert "no-ack" in names and message == meter.message


def test_push_meter_repeats_its_telegram():
    with SimulatedMeter("easymeter_push", time_scale=SCALE, push_interval=1.0) as meter:
        with Transport.open(meter.port, 9600) as port:
            splitter = D0StreamSplitter()
            telegrams = []
            deadline = time.monotonic() + 5
            while len(telegrams) < 2 and time.monotonic() < deadline:
                telegrams += splitter.feed(port.read_some(4096, timeout=0.5))
    assert len(telegrams) >= 2
    assert telegrams[0] == telegrams[1] == meter.identification + meter.message
    assert parse_readout(telegrams[0]).identification.raw == "/ESY5Q3DB1024 V3.08"


def test_reader_open_and_close_are_seen():
    with SimulatedMeter("lgz_e350", time_scale=SCALE) as meter:
        port = Transport.open(meter.port, 300)
        port.write(b"x")
        assert meter.wait_for("connected", 2.0)
        port.close()
        assert meter.wait_for("disconnected", 2.0)


# ------------------------------------------------------------- 7E1 on a pty: the parity bit
def _with_parity(chars: bytes) -> bytes:
    """The 8N1 view of 7E1 characters: even parity bit in bit 7 (written out here, not imported)."""
    return bytes(c | (bin(c).count("1") & 1) << 7 for c in chars)


@settings(max_examples=100, deadline=None)
@given(data=st.binary(min_size=1, max_size=30).map(lambda b: bytes(x & 0x7F for x in b)),
       rates=st.sampled_from([(300, 300), (9600, 300), (300, 9600), (4800, 300), (300, 2400)]))
def test_a_7e1_frame_and_its_8n1_byte_are_the_same_bits_on_the_wire(data, rates):
    """The link resamples 8N1 views of 7E1 frames; a 7E1 receiver must sample the same characters."""
    sender, receiver = rates
    as_8n1 = uart_resample(_with_parity(data), sender, receiver, 8, "N", 1)
    as_7e1 = uart_resample(data, sender, receiver, 7, "E", 1)
    assert bytes(b & 0x7F for b in as_8n1) == as_7e1


def test_meter_sends_parity_bits_and_ignores_characters_without_them():
    with SimulatedMeter("lgz_e350", time_scale=SCALE) as meter:
        with serial.Serial(meter.port, 300, bytesize=8, parity="N", timeout=0) as port:  # no Transport
            port.write(b"/?!\r\n")  # bare 7-bit: '/' and CR have a wrong parity bit
            assert meter.wait_for("rx-parity-error", 2.0)
            time.sleep(0.3)
            assert "sign-on" not in meter.event_names()
            port.write(_with_parity(b"/?!\r\n"))
            assert meter.wait_for("identification", 3.0)
            port.timeout = 2.0
            line = port.read_until(_with_parity(b"\n"))
    assert line == _with_parity(b"/LGZ5ZMF110CC.S27\r\n")


def test_meter_for_peer_tools_that_expect_bare_7_bit_characters():
    with SimulatedMeter("lgz_e350", time_scale=SCALE, parity_bit=False) as meter:
        with serial.Serial(meter.port, 300, bytesize=8, parity="N", timeout=2.0) as port:
            port.write(b"/?!\r\n")
            assert port.read_until(b"\n") == b"/LGZ5ZMF110CC.S27\r\n"


def test_corrupt_at_flips_a_bit_on_the_wire_so_the_reader_sees_a_parity_error():
    with SimulatedMeter("easymeter_push", time_scale=SCALE, corrupt_at=40, push_interval=1.0) as meter:
        with Transport.open(meter.port, 9600) as port:
            splitter = D0StreamSplitter()
            telegrams = []
            deadline = time.monotonic() + 5
            while not telegrams and time.monotonic() < deadline:
                telegrams += splitter.feed(port.read_some(4096, timeout=0.5))
            assert port.parity_errors >= 1
    sent = meter.identification + meter.message
    index = len(meter.identification) + 40
    assert telegrams[0] == sent[:index] + bytes([PARITY_ERROR]) + sent[index + 1:]


# ------------------------------------------------------------ push profiles
_PROFILE_FILES = sorted((Path(__file__).resolve().parents[1] / "dlms_protocol" / "data" / "profiles").glob("*.json"))


@pytest.mark.parametrize("path", _PROFILE_FILES, ids=lambda p: p.stem)
def test_simulate_push_sends_every_profile_it_can_and_says_why_not_for_the_rest(path: Path) -> None:
    """Found on a real Venus OS set-up: simulate-push --profile crashed for every push-list profile
    (max() of an empty sequence), for positional ones with unnamed non-text positions, and put
    the serial where a profile's marker looks for its list id (KFM_001), so auto never matched.
    Each positional and push-list profile is now sent as its meter sends it: the decoder reads
    every simulated register back, and auto finds the profile unless it needs a family first."""
    import json

    from dlms_protocol.config import ListenerConfig
    from dlms_protocol.dlms.decoder import PushDecoder
    from dlms_protocol.simulator.push import PushSimulator

    match = json.loads(path.read_text())["match"]
    if match.get("shape") not in ("positional", "push-list"):
        with pytest.raises(ConfigurationError) as exc:
            PushSimulator(wrapper="hdlc", layout="profile", profile=path.stem)
        assert "without --profile" in str(exc.value.fix)
        return
    sim = PushSimulator(wrapper="hdlc", layout="profile", profile=path.stem, seed=3)
    for _ in range(3):
        frame = sim.emit()
        (msg,) = PushDecoder(ListenerConfig(port="x", profile=path.stem)).feed(frame)
        got = {r.code: r.raw for r in msg.readings}
        assert msg.profile == path.stem and sim.last_registers
        assert {code: got.get(code) for code in sim.last_registers} == \
            {code: raw for code, (raw, _s, _u) in sim.last_registers.items()}
    auto = PushDecoder(ListenerConfig(port="x")).feed(frame)
    assert auto and auto[0].profile == (None if match.get("requires_family") else path.stem)
