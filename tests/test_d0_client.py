"""The IEC 62056-21 readout client: the sans-io dialogue with scripted bytes, then D0Reader over
real pseudo-terminals against the simulated meter (time-scaled, so the whole file stays fast)."""
from __future__ import annotations

import ast
import logging
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import List, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlms_protocol.config import ReadoutConfig
from dlms_protocol.errors import (ChecksumError, ConfigurationError, FramingError, IdentificationError,
                                  NoResponseError, ProtocolError, TransportError)
from dlms_protocol.iec62056_21.client import (D0Dialogue, Done, Drain, Quiet, Receive, ResetInput, Send,
                                              SetBaudrate, Wait, acknowledgement, choose_rate, sign_on_request)
from dlms_protocol.iec62056_21.reader import D0Reader
from dlms_protocol.model import Statistics
from dlms_protocol.simulator.d0 import SimulatedMeter
from dlms_protocol.simulator.meters import block_check
from dlms_protocol.simulator.pty import PtyLink
from helpers import load_json, need

SCALE = 10.0  # simulated meters run ten times faster than real ones


# ----------------------------------------------------------------------------- sans-io
class Script:
    """Drives a D0Dialogue: records actions, answers each Receive with the next scripted chunk."""

    def __init__(self, config: ReadoutConfig, chunks: List[bytes]) -> None:
        self.now = 1000.0
        self.dialogue = D0Dialogue(config, clock=lambda: self.now)
        self.chunks = list(chunks)
        self.actions: list = []

    def run(self):
        action = self.dialogue.start()
        while not isinstance(action, Done):
            self.actions.append(action)
            received: Optional[bytes] = None
            if isinstance(action, Receive):
                received = self.chunks.pop(0) if self.chunks else b""
                self.now += 0.001 if received else action.timeout
            elif isinstance(action, Wait):
                self.now += action.seconds
            action = self.dialogue.step(received)
        return action.result

    @property
    def sent(self) -> List[bytes]:
        return [a.data for a in self.actions if isinstance(a, Send)]

    @property
    def rates(self) -> List[int]:
        return [a.baudrate for a in self.actions if isinstance(a, SetBaudrate)]


def cfg(**kw) -> ReadoutConfig:
    kw.setdefault("port", "unused")
    return ReadoutConfig(**kw)


BLOCK = b"F.F(00000000)\r\n1.8.0(012345.678*kWh)\r\n1.6.0(04.812*kW)(2403121815)\r\n!\r\n"


def framed(block: bytes = BLOCK) -> bytes:
    return b"\x02" + block + b"\x03" + bytes([block_check(block + b"\x03")])


def test_sign_on_and_acknowledgement_bytes():
    assert sign_on_request() == b"/?!\r\n"
    assert sign_on_request("2") == b"/2!\r\n"
    assert sign_on_request("?", "12345678") == b"/?12345678!\r\n"
    assert acknowledgement(9600) == b"\x06050\r\n"
    assert acknowledgement(300) == b"\x06000\r\n"


@pytest.mark.parametrize("offer,ceiling,expected", [
    (9600, "auto", 9600), (9600, 4800, 4800), (9600, 300, 300), (4800, 9600, 4800),
    (19200, "auto", 19200), (9600, 5000, 4800), (300, "auto", 300),
])
def test_choose_rate(offer, ceiling, expected):
    assert choose_rate(offer, ceiling) == expected


def test_mode_c_skips_echoes_and_noise_and_stops_right_after_the_bcc():
    script = Script(cfg(), [
        b"\x7f\x7f\x7f/?!\r\n",              # line noise, then the IR head's echo of the sign-on
        b"/LGZ5ZMF110CC.S27\r\n",
        b"\x06050\r\n",                      # echo of the ACK
        framed()[:30], framed()[30:],
        b"\x7f\x7fTRAILING",                 # must never be asked for
    ])
    result = script.run()
    assert script.sent == [b"/?!\r\n", b"\x06050\r\n"]
    assert script.rates == [300, 9600]
    assert script.chunks == [b"\x7f\x7fTRAILING"]  # nothing read after the BCC
    assert result.readout.bcc == "ok"
    assert result.baudrate == 9600
    assert [ds.code for ds in result.readout.datasets] == ["F.F", "1.8.0", "1.6.0"]
    assert result.readout.identification.raw == "/LGZ5ZMF110CC.S27"
    # the ACK is drained and the switch comes after the configured delay, in this order
    kinds = [type(a).__name__ for a in script.actions]
    ack = kinds.index("Send", kinds.index("Send") + 1)
    assert kinds[ack + 1] == "Drain" and "SetBaudrate" in kinds[ack + 2:ack + 4]


def _block_with_bcc(value: int) -> bytes:
    for c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz":
        for n in range(16):
            block = b"1.8.0(%06d*kWh)\r\n0.0.0(%c)\r\n!\r\n" % (n, c)
            if block_check(block + b"\x03") == value:
                return block
    raise AssertionError("no block found")


@pytest.mark.parametrize("bcc_value", [0x01, 0x02, 0x03, ord("/"), ord("!")])
def test_the_bcc_is_exactly_one_byte_whatever_its_value(bcc_value):
    """A BCC may be STX, ETX, '/' or '!': it is read as one byte and never taken for a frame mark."""
    block = _block_with_bcc(bcc_value)
    message = framed(block)
    assert message[-1] == bcc_value
    script = Script(cfg(), [b"/LGZ5ZMF110CC.S27\r\n"] + [bytes([b]) for b in message] + [b"\x03\x02X"])
    result = script.run()
    assert result.readout.bcc == "ok"
    assert script.chunks == [b"\x03\x02X"]


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=120), max_size=12))
def test_any_chunking_of_the_answer_gives_the_same_readout(cuts):
    stream = b"/?!\r\n/LGZ5ZMF110CC.S27\r\n\x06050\r\n" + framed()
    chunks, pos = [], 0
    for cut in sorted(set(cuts)):
        if pos < cut < len(stream):
            chunks.append(stream[pos:cut])
            pos = cut
    chunks.append(stream[pos:])
    script = Script(cfg(), chunks + [b"LEFT"])
    result = script.run()
    assert [ds.code for ds in result.readout.datasets] == ["F.F", "1.8.0", "1.6.0"]
    assert result.readout.bcc == "ok"
    assert script.chunks == [b"LEFT"]


def test_frame_without_etx_ends_at_bang_after_a_short_grace():
    script = Script(cfg(use_checksum=False), [b"/ITR5EM214\r\n", b"\x02" + BLOCK])
    result = script.run()
    assert result.readout.bcc == "absent"
    last = script.actions[-1]
    assert isinstance(last, Receive) and last.timeout < 1.5  # the grace, not the character time-out
    assert len(result.readout.datasets) == 3


def test_a_framed_message_that_loses_its_etx_is_not_accepted_unchecked():
    """A message that starts with STX ends with ETX and BCC. When noise hits the ETX (or the
    meter stops after '!'), use_checksum must not silently read the block without a check:
    here a digit was damaged too (012345.678 -> 012385.678)."""
    damaged = b"\x02" + BLOCK.replace(b"012345.678", b"012385.678") + b"\x13Q"
    with pytest.raises(FramingError, match="ETX"):
        Script(cfg(retries=0), [b"/LGZ5ZMF110CC.S27\r\n", damaged]).run()
    script = Script(cfg(retries=0), [b"/LGZ5ZMF110CC.S27\r\n", b"\x02" + BLOCK])
    with pytest.raises(FramingError, match="ETX"):
        script.run()
    waits = [a.timeout for a in script.actions if isinstance(a, Receive)]
    assert waits[-1] == 1.5  # the character time-out for the ETX, not the short grace
    # with use_checksum off such a frame is read as before
    result = Script(cfg(use_checksum=False), [b"/LGZ5ZMF110CC.S27\r\n", damaged]).run()
    assert result.readout.bcc == "absent"


def test_push_telegram_with_a_bad_dsmr_crc_is_rejected():
    """use_checksum covers the CRC16 of DSMR 4/5 telegrams too: they carry no ETX/BCC, and a
    damaged telegram must not become a reading (tests/fixtures/d0 from make_fixtures.py)."""
    fixtures = Path(__file__).parent / "fixtures" / "d0"
    good = (fixtures / "dsmr5_crc.txt").read_bytes()
    bad = (fixtures / "dsmr5_bad_crc.txt").read_bytes()
    assert Script(cfg(mode="push"), [good]).run().readout.crc == "ok"
    with pytest.raises(ChecksumError):
        Script(cfg(mode="push"), [bad]).run()
    assert Script(cfg(mode="push", use_checksum=False), [bad]).run().readout.crc == "bad"


def test_push_telegram_with_stx_that_lost_its_etx_is_skipped_not_read_unchecked():
    """A push telegram that starts with STX ends with ETX and BCC. Noise on the ETX (here it
    became DC3) must not let it through unchecked, with a damaged digit (012345.678 -> 012385.678)."""
    ident = b"/EBZ5DD3BZ06ETA_107\r\n"
    damaged = ident + b"\x02" + BLOCK.replace(b"012345.678", b"012385.678") + b"\x13Q"
    good = ident + framed()
    result = Script(cfg(mode="push"), [damaged, good]).run()
    assert result.readout.bcc == "ok"
    assert result.readout.to_meter_data().get("1.8.0").value == Decimal("12345.678")
    with pytest.raises(FramingError, match="ETX"):
        Script(cfg(mode="push"), [damaged]).run()
    # with use_checksum off such a telegram is read as before
    lenient = Script(cfg(mode="push", use_checksum=False), [damaged, good]).run()
    assert lenient.readout.bcc == "absent"
    assert lenient.readout.to_meter_data().get("1.8.0").value == Decimal("12385.678")


def test_an_identification_with_a_parity_error_is_not_taken():
    """The transport hands a character with a parity error over as PARITY_ERROR (0x80)."""
    with pytest.raises(IdentificationError, match="parity"):
        Script(cfg(retries=0), [b"/LGZ5ZMF110CC.S2\x80\r\n"]).run()
    with pytest.raises(IdentificationError, match="parity"):
        Script(cfg(retries=0), [b"/LGZ\x80ZMF110CC.S27\r\n"]).run()  # the baud-rate character


def test_a_damaged_first_character_of_a_frame_without_stx_is_not_stripped_as_noise():
    """Mode A, no STX: the damaged '2' of '21.7.0' (L1) must not turn the set into '1.7.0' (total)."""
    answer = b"\x801.7.0(00123.4*W)\r\n1.8.0(0012345*kWh)\r\n!\r\n"
    result = Script(cfg(retries=0), [b"/KAM MC382SIM\r\n", answer]).run()
    assert [ds.code for ds in result.readout.datasets] == ["1.8.0"]


@pytest.mark.parametrize("baudrate,ack,rates", [
    (300, b"\x06000\r\n", [300]),
    (4800, b"\x06040\r\n", [300, 4800]),
    ("auto", b"\x06050\r\n", [300, 9600]),
])
def test_baudrate_option_is_a_ceiling(baudrate, ack, rates):
    script = Script(cfg(baudrate=baudrate), [b"/LGZ5ZMF110CC.S27\r\n", framed()])
    result = script.run()
    assert script.sent[1] == ack
    assert script.rates == rates
    assert result.baudrate == rates[-1]


def test_mode_e_is_read_in_mode_c():
    script = Script(cfg(), [b"/ISk5\\2MT382-1000\r\n", framed()])
    script.run()
    assert script.dialogue.identification.mode == "E"
    assert script.sent[1] == b"\x06050\r\n"  # V=0 (normal), Y=0 (data readout), not HDLC
    # the sans-io dialogue has no logger: it leaves the note to its driver
    assert ("info", "meter /ISk5\\2MT382-1000 offers mode E (HDLC); reading it in mode C") in script.dialogue.notes
    assert script.dialogue.take_notes() and script.dialogue.notes == []


def test_mode_b_switches_without_ack_and_mode_a_stays():
    script = Script(cfg(), [b"/SIEC2WR6\r\n", framed()])
    script.run()
    assert script.sent == [b"/?!\r\n"]
    assert script.rates == [300, 2400]
    script = Script(cfg(baudrate=1200), [b"/KAM MC382SIM\r\n", BLOCK])
    result = script.run()
    assert script.sent == [b"/?!\r\n"]
    assert script.rates == [300]
    assert result.readout.bcc == "absent"


def test_query_code_and_address_go_into_the_sign_on():
    script = Script(cfg(query_code="2", device_address="A1"), [b"/LGZ5ZMF110CC.S27\r\n", framed()])
    script.run()
    assert script.sent[0] == b"/2A1!\r\n"
    for bad in (dict(query_code="??"), dict(query_code="!"), dict(device_address="a/b"),
                dict(device_address="zähler")):
        with pytest.raises(ConfigurationError):
            D0Dialogue(cfg(**bad), clock=lambda: 0.0)


def test_wakeup_sends_2_2_seconds_of_nuls_then_pauses():
    script = Script(cfg(wakeup=True), [b"/SIEC2WR6\r\n", framed()])
    script.run()
    first = script.actions[:7]
    nuls = next(a for a in first if isinstance(a, Send))
    assert nuls.data == b"\x00" * 66  # 2.2 s * 300 Bd / 10 bits per 7E1 character
    kinds = [type(a) for a in first]
    i = kinds.index(Send)
    assert kinds[i + 1:i + 4] == [Drain, Wait, ResetInput]
    assert 1.5 <= first[i + 2].seconds <= 1.7
    assert isinstance(first[i + 4], Send) and first[i + 4].data == b"/?!\r\n"


def test_reaction_time_rest_before_the_ack():
    script = Script(cfg(), [b"/LGZ5ZMF110CC.S27\r\n", framed()])
    script.run()
    rests = [a for a in script.actions if isinstance(a, Wait) and a.what == "reaction time"]
    assert len(rests) == 1 and rests[0].seconds == pytest.approx(0.2, abs=0.01)
    script = Script(cfg(), [b"/ISk5MT174-0001\r\n", framed()])  # lower-case 3rd letter: 20 ms
    script.run()
    rests = [a for a in script.actions if isinstance(a, Wait) and a.what == "reaction time"]
    assert rests[0].seconds == pytest.approx(0.02, abs=0.005)
    script = Script(cfg(no_waiting=True), [b"/LGZ5ZMF110CC.S27\r\n", framed()])
    script.run()
    assert not [a for a in script.actions if isinstance(a, Wait) and a.what == "reaction time"]


def test_no_answer_and_echo_only_have_different_hints():
    with pytest.raises(NoResponseError) as err:
        Script(cfg(retries=0), []).run()
    assert "IR head" in str(err.value) and "within 1.5 s after sign-on" in str(err.value)
    with pytest.raises(NoResponseError) as err:
        Script(cfg(retries=0), [b"/?!\r\n"]).run()
    assert "echoes the sign-on" in str(err.value)


def test_a_slash_line_that_is_no_identification_is_reported():
    with pytest.raises(IdentificationError):
        Script(cfg(retries=0), [b"/12\r\n"]).run()


def test_data_that_stops_is_no_response_and_garbage_is_framing():
    with pytest.raises(NoResponseError) as err:
        Script(cfg(retries=0), [b"/LGZ5ZMF110CC.S27\r\n", framed()[:20]]).run()
    assert "stopped after" in str(err.value)
    with pytest.raises(NoResponseError) as err:
        Script(cfg(retries=0), [b"/LGZ5ZMF110CC.S27\r\n"]).run()
    assert "after the acknowledgement for 9600 Bd" in str(err.value)
    with pytest.raises(ProtocolError) as err:
        Script(cfg(retries=0), [b"/LGZ5ZMF110CC.S27\r\n", b"\x00\xff\x80" * 40]).run()
    assert "garbled" in str(err.value)


def test_a_failed_fast_attempt_is_retried_at_the_next_lower_rate():
    bad = bytearray(framed())
    bad[-1] ^= 0x01
    script = Script(cfg(retries=1), [b"/LGZ5ZMF110CC.S27\r\n", bytes(bad), b"/LGZ5ZMF110CC.S27\r\n", framed()])
    result = script.run()
    assert script.sent == [b"/?!\r\n", b"\x06050\r\n", b"/?!\r\n", b"\x06040\r\n"]
    assert any(isinstance(a, Quiet) for a in script.actions)
    assert result.attempts == 2 and result.baudrate == 4800
    assert len(script.dialogue.failures) == 1 and isinstance(script.dialogue.failures[0], ChecksumError)


def test_bcc_mismatch_is_rejected_unless_checksums_are_off():
    bad = bytearray(framed())
    bad[-1] ^= 0x01
    with pytest.raises(ChecksumError):
        Script(cfg(retries=0), [b"/LGZ5ZMF110CC.S27\r\n", bytes(bad)]).run()
    result = Script(cfg(retries=0, use_checksum=False), [b"/LGZ5ZMF110CC.S27\r\n", bytes(bad)]).run()
    assert result.readout.bcc == "bad"


def test_push_mode_takes_the_first_complete_telegram():
    telegram = b"/ESY5Q3DB1024 V3.08\r\n\r\n1-0:1.8.0*255(00012345.6789012*kWh)\r\n!\r\n"
    # b"": the line is silent after the telegram (an ETX + BCC would follow within a few characters)
    script = Script(cfg(mode="push"), [b"55*kWh)\r\n!\r\n", telegram[:17], telegram[17:], b"", telegram])
    result = script.run()
    assert script.sent == []
    assert script.rates == [9600]
    assert [ds.code for ds in result.readout.datasets] == ["1-0:1.8.0*255"]
    assert script.chunks == [telegram]


# ------------------------------------------------------------------ over pseudo-terminals
def reader_config(port: str, **kw) -> ReadoutConfig:
    kw.setdefault("timeout", 1.0)
    # The reader switches 50 ms after handing over the ACK: the ACK is on the (simulated) wire for
    # 20 ms and the meter answers 100 ms after it, so a busy machine has 30-50 ms of slack either way.
    kw.setdefault("baud_switch_delay", 0.05)
    return ReadoutConfig(port=port, **kw)


def meter(*args, **kw) -> SimulatedMeter:
    kw.setdefault("time_scale", SCALE)
    kw.setdefault("reaction_time", 0.5)       # 50 ms at SCALE: room for a mode B reader to switch
    kw.setdefault("ack_reaction_time", 1.0)   # 100 ms at SCALE
    kw.setdefault("switch_grace", 1.0)        # a loaded machine must not garble a correct switch
    return SimulatedMeter(*args, **kw)


def test_full_mode_c_dialogue_with_echo_wakeup_and_baud_switch():
    stats = Statistics()
    seen: List[int] = []
    with meter("lgz_e350", echo=True, wakeup=True, noise=b"\x7f" * 5) as m:
        reader = D0Reader(reader_config(m.port, wakeup=True), stats, progress=seen.append, time_scale=SCALE)
        data = reader.read()
        reader.close()
        names = m.event_names()
    energy = data.get("1.8.0")
    assert energy.value == Decimal("12345.678") and energy.unit == "kWh"   # data/sample_meters/lgz_e350.txt
    assert data.get("32.7.0").value == Decimal("231.4")
    demand = data.get("1.6.0")
    assert demand.value == Decimal("4.812") and demand.extra == (("2403121815", None),)
    assert data.meter_id == "/LGZ5ZMF110CC.S27"
    assert reader.last_result.baudrate == 9600 and reader.last_readout.bcc == "ok"
    assert names.index("woken") < names.index("sign-on") < names.index("ack") < names.index("data-start")
    assert ("data-start", "9600 Bd") in [(n, d) for _, n, d in m.events]
    assert set(reader.last_timings) >= {"wakeup", "identification", "switch", "data", "total"}
    assert stats.get("reads") == 1 and stats.get("bytes") == reader.last_result.bytes_received
    assert seen and seen == sorted(seen) and seen[-1] >= len(m.message)


def test_the_debug_trace_logs_the_dialogue_a_line_at_a_time(caplog):
    """Seen in a real SmartHomeNG with plugins.dlms at DEBUG (what the user guide advises for
    finding codes): a meter read one byte per read logged one line per byte, about 900 per readout.
    The trace now logs what came a line at a time, the bytes unchanged."""
    caplog.set_level(logging.DEBUG, logger="dlms_protocol.iec62056_21.reader")
    with meter("lgz_e350") as m:
        reader = D0Reader(reader_config(m.port), time_scale=SCALE)
        reader.read()
        reader.close()
        message = m.message
    received = [r.getMessage() for r in caplog.records if " <- " in r.getMessage()]
    lines = message.count(b"\n")
    # at most a record per line (the identification, the data lines, ETX + BCC), never one per
    # byte; fewer when a read brought several lines at once (a loaded machine's pty)
    assert 2 <= len(received) <= lines + 6
    text = b"".join(ast.literal_eval(r.split(" <- ", 1)[1]) for r in received)
    assert message in text


def test_mode_a_meter_without_stx_stays_at_300():
    with meter("kamstrup_mode_a") as m:
        reader = D0Reader(reader_config(m.port), time_scale=SCALE)
        data = reader.read()
        reader.close()
    assert reader.last_result.baudrate == 300
    assert data.get("1.6.0").value == Decimal("6.4")        # decimal comma '000006,4'
    assert data.get("6.31").value == Decimal("12345")       # '!' glued to the last set
    assert reader.last_readout.bcc == "absent"
    assert "ack" not in m.event_names()


def test_mode_b_battery_meter_switches_by_itself():
    with meter("heat_2wr6") as m:
        reader = D0Reader(reader_config(m.port, wakeup=True), time_scale=SCALE)
        data = reader.read()
        reader.close()
    assert reader.last_result.baudrate == 2400
    assert data.get("6.8").value == Decimal("31.412") and data.get("6.8").unit == "MWh"
    assert "ack" not in m.event_names()
    assert ("data-start", "2400 Bd") in [(n, d) for _, n, d in m.events]


def test_battery_meter_ignores_a_sign_on_without_wakeup():
    with meter("heat_2wr6") as m:
        reader = D0Reader(reader_config(m.port, retries=0, identification_timeout=0.5), time_scale=SCALE)
        with pytest.raises(NoResponseError) as err:
            reader.read()
        reader.close()
        assert m.wait_for("ignored-asleep", 10.0)  # the meter thread notes it on its own time
    assert "wakeup" in str(err.value)


def test_push_only_meter():
    with meter("easymeter_push", push_interval=0.5) as m:
        reader = D0Reader(reader_config(m.port, mode="push"), time_scale=SCALE)
        data = reader.read()
        reader.close()
    assert data.get("1-0:1.8.0").value == Decimal("12345.6789012")
    assert data.get("1-0:41.7.255").value == Decimal("-42.07")
    assert reader.last_readout.bcc == "absent"


def test_device_address():
    with meter("lgz_e350", address="41827635") as m:
        reader = D0Reader(reader_config(m.port, device_address="41827635"), time_scale=SCALE)
        assert reader.read().get("1.8.1").value == Decimal("8123.456")
        wrong = D0Reader(reader_config(m.port, device_address="99", retries=0, identification_timeout=0.4),
                         time_scale=SCALE)
        with pytest.raises(NoResponseError) as err:
            wrong.read()
        reader.close()
        wrong.close()
        assert "'99'" in str(err.value)
        assert m.wait_for("ignored-address", 10.0)


def test_query_code():
    with meter("lgz_e350", query_code="2") as m:
        reader = D0Reader(reader_config(m.port, query_code="2"), time_scale=SCALE)
        assert reader.read().get("1.8.0") is not None
        standard = D0Reader(reader_config(m.port, retries=0, identification_timeout=0.4), time_scale=SCALE)
        with pytest.raises(NoResponseError):
            standard.read()
        reader.close()
        standard.close()
        assert m.wait_for("ignored-query-code", 10.0)  # the meter thread notes it on its own time


@pytest.mark.parametrize("ceiling,rate", [(300, 300), (4800, 4800)])
def test_fixed_baudrate(ceiling, rate):
    scale = 3 * SCALE if rate == 300 else SCALE  # a whole readout at 300 Bd: run it faster
    with meter("lgz_e350", time_scale=scale) as m:
        reader = D0Reader(reader_config(m.port, baudrate=ceiling), time_scale=scale)
        data = reader.read()
        reader.close()
        events = [(n, d) for _, n, d in m.events]
    assert reader.last_result.baudrate == rate
    assert ("data-start", f"{rate} Bd") in events
    assert data.get("2.8.0").value == Decimal("3456.789")


def test_fallback_to_a_lower_rate_after_a_failure_at_high_speed():
    stats = Statistics()
    with meter("lgz_e350", unreliable_above=4800) as m:
        reader = D0Reader(reader_config(m.port, retries=1), stats, time_scale=SCALE)
        data = reader.read()
        reader.close()
        starts = [d for _, n, d in m.events if n == "data-start"]
    assert starts == ["9600 Bd", "4800 Bd"]
    assert reader.last_result.attempts == 2 and reader.last_result.baudrate == 4800
    assert data.get("1.8.0").value == Decimal("12345.678")
    assert stats.get("checksum_errors") == 1 and stats.get("reads") == 1


def test_bcc_mismatch_is_rejected_and_counted():
    stats = Statistics()
    with meter("lgz_e350", corrupt_at=60) as m:
        reader = D0Reader(reader_config(m.port, retries=0), stats, time_scale=SCALE)
        with pytest.raises(ChecksumError):
            reader.read()
        reader.close()
    assert stats.get("checksum_errors") == 1 and stats.get("reads") == 0
    assert reader.last_readout is None


@pytest.mark.parametrize("name,mode,code,sent,other,value", [
    ("easymeter_push", "push", "1-0:1.8.0", b"00012345.6789012", "1-0:2.8.0", Decimal("4321.0987654")),
    ("kamstrup_mode_a", "request", "1.8.0", b"0012345", "2.8.0", Decimal("1234")),
])
def test_a_bit_flipped_on_the_line_drops_the_value_never_changes_it(name, mode, code, sent, other, value):
    """No BCC protects these (push telegram; mode A without STX): the parity bit is all there is.
    The simulated line flips bit 0 of the '3' in the energy register (...12345 -> ...12245)."""
    stats = Statistics()
    m = meter(name, push_interval=0.5)
    m.corrupt_at = m.message.index(sent) + sent.index(b"3")
    wrong = sent.replace(b"3", b"2", 1).decode()
    with m:
        reader = D0Reader(reader_config(m.port, mode=mode, retries=0), stats, time_scale=SCALE)
        data = reader.read()
        reader.close()
    assert data.get(code) is None
    assert all(reading.raw.strip() != wrong for reading in data.readings)
    assert data.get(other).value == value
    assert stats.get("parity_errors") >= 1


def test_no_answer_gives_the_ir_head_hint():
    link = PtyLink(time_scale=SCALE)  # a port with nothing behind it
    stats = Statistics()
    try:
        reader = D0Reader(reader_config(link.port, retries=0, identification_timeout=0.3), stats, time_scale=SCALE)
        with pytest.raises(NoResponseError) as err:
            reader.read()
        reader.close()
    finally:
        link.close()
    assert "IR head" in str(err.value)
    assert stats.get("timeouts") == 1


def test_reader_stops_right_after_the_bcc():
    """The meter keeps the line silent after its BCC. A reader that waited for a read time-out
    (2 s here) would still hold the port when the meter's idle timer (1 s) fires."""
    with meter("lgz_e350", idle_timeout=1.0 * SCALE) as m:
        reader = D0Reader(reader_config(m.port, timeout=2.0, reset_baudrate=True), time_scale=SCALE)
        reader.read()
        assert m.wait_for("disconnected", 5.0)
        time.sleep(1.2)
        names = m.event_names()
    after = names[names.index("data-end") + 1:]
    assert after[0] == "disconnected"
    assert "idle-timeout" not in names


def test_reset_baudrate_false_keeps_the_port_open_between_reads():
    with meter("lgz_e350") as m:
        reader = D0Reader(reader_config(m.port, reset_baudrate=False), time_scale=SCALE)
        first = reader.read()
        port = reader._transport
        time.sleep(0.2)  # the meter would notice a close now
        second = reader.read()
        assert reader._transport is port and port.is_open
        assert m.wait_for("data-end", 2.0, after=m.event_names().index("data-end") + 1)
        time.sleep(0.1)
        names = m.event_names()
        reader.close()
        assert m.wait_for("disconnected", 5.0)
    assert names.count("data-end") == 2
    assert "disconnected" not in names
    assert first.get("1.8.0").value == second.get("1.8.0").value
    # and with True the port is closed after each read
    with meter("lgz_e350") as m:
        reader = D0Reader(reader_config(m.port, reset_baudrate=True), time_scale=SCALE)
        reader.read()
        assert m.wait_for("disconnected", 5.0)
        reader.read()
        reader.close()
        assert m.wait_for("data-end", 2.0, after=m.event_names().index("data-end") + 1)
        names = m.event_names()
    assert names.count("data-end") == 2
    assert names.index("disconnected") < len(names) - 1 - names[::-1].index("sign-on")


def test_close_from_another_thread_ends_a_running_read():
    link = PtyLink(time_scale=SCALE)
    stats = Statistics()
    reader = D0Reader(ReadoutConfig(port=link.port, identification_timeout=30.0, retries=0), stats)
    outcome = {}

    def run():
        try:
            reader.read()
        except (TransportError, NoResponseError) as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    try:
        thread.start()
        time.sleep(0.3)
        reader.close()
        thread.join(5)  # a liveness bound, far above the ~0.2 s it takes
        assert not thread.is_alive()
    finally:
        link.close()
    assert isinstance(outcome.get("error"), TransportError)
    assert stats.get("transport_errors") == 0  # stopping is not a fault of the line


# ------------------------------------------------------------------------ corpus replays
def test_corpus_mt174_replayed_through_a_real_dialogue(corpus_dir, caplog):
    path = corpus_dir / "d0" / "iskra_mt174_1.txt"
    need(path.is_file(), "corpus file iskra_mt174_1.txt")
    side = load_json(path.with_suffix(".json"))
    caplog.set_level(logging.DEBUG, logger="dlms_protocol.iec62056_21.reader")
    with meter(str(path), echo=True) as m:
        reader = D0Reader(reader_config(m.port), time_scale=SCALE)
        data = reader.read()
        reader.close()
    # the dialogue's notes reach the reader's log: the echo of the sign-on was skipped
    assert "skipping echo of a request: b'/?!\\r\\n'" in caplog.text
    assert len(data.readings) == 343
    for item in side["expected"]:
        reading = data.get(item["obis"])
        assert reading is not None, item["obis"]
        assert float(reading.value) == pytest.approx(item["values"][0]["value"])
        assert reading.unit == item["values"][0]["unit"]
    assert reader.last_readout.identification.short_reaction  # 'ISk': 20 ms


def test_corpus_capture_with_its_own_bad_bcc(corpus_dir):
    path = corpus_dir / "d0" / "siemens_2wr5_1.txt"
    need(path.is_file(), "corpus file siemens_2wr5_1.txt")
    assert load_json(path.with_suffix(".json"))["framing"]["bcc_ok"] is False
    with meter(str(path), keep_bytes=True, wakeup=True) as m:
        reader = D0Reader(reader_config(m.port, wakeup=True, retries=0), time_scale=SCALE)
        with pytest.raises(ChecksumError):
            reader.read()
        lenient = D0Reader(reader_config(m.port, wakeup=True, use_checksum=False), time_scale=SCALE)
        data = lenient.read()
        reader.close()
        lenient.close()
    assert lenient.last_readout.bcc == "bad"
    assert data.get("6.8").value == Decimal("29.055")
    # re-framed (the default), the same capture gets a correct BCC
    with meter(str(path), wakeup=True) as m:
        reader = D0Reader(reader_config(m.port, wakeup=True), time_scale=SCALE)
        reader.read()
        reader.close()
    assert reader.last_readout.bcc == "ok"




def test_a_reader_that_switches_too_late_gets_a_garbled_answer():
    """Pain #4: the meter answers 100 ms after the ACK at 9600 Bd; a reader still at 300 Bd then
    (switch delay 0.5 s) sees garbage. The strict meter does not wait for it."""
    with meter("lgz_e350", switch_grace=0.0) as m:
        reader = D0Reader(reader_config(m.port, baud_switch_delay=0.5, retries=0), time_scale=SCALE)
        with pytest.raises(ProtocolError):
            reader.read()
        reader.close()
        assert m.wait_for("data-end", 2.0)
    assert ("data-start", "9600 Bd") in [(n, d) for _, n, d in m.events]


@settings(max_examples=150, deadline=None)
@given(answer=st.lists(st.binary(max_size=60), max_size=8),
       alphabet_answer=st.lists(st.text(alphabet="/?!()*\r\n\x02\x03\x06 .:-0123456789ABCLGZkWh", max_size=60),
                                max_size=8))
def test_any_bytes_from_the_line_end_in_a_result_or_a_dlms_error(answer, alphabet_answer):
    """Fuzz: whatever arrives, the dialogue ends (finite actions) with a readout or a DlmsError."""
    from dlms_protocol.errors import DlmsError
    for chunks in (answer, [t.encode("latin-1") for t in alphabet_answer],
                   [b"/LGZ5ZMF110CC.S27\r\n"] + answer):
        script = Script(cfg(retries=1), list(chunks))
        try:
            result = script.run()
        except DlmsError:
            continue
        assert result.readout.datasets
        assert len(script.actions) < 200
