"""Polling over a pty: optical mode E (300 Bd sign-on, then HDLC at 9600 Bd) and RS485 HDLC.

The pty carries real character timing (``PtyLink``, time-scaled) and the baud rates of both
ends: a client that switches too early or too late gets garbage, as on a real line.
"""
from __future__ import annotations

import os
import re
from decimal import Decimal

import pytest

from dlms_protocol.errors import AssociationError, AuthenticationError, NoResponseError
from dlms_protocol.poll.config import PollConfig
from dlms_protocol.poll.poller import DlmsPoller
from dlms_protocol.poll.source import PollSource
from dlms_protocol.simulator.cosem_model import demo_model
from dlms_protocol.simulator.d0 import SimulatedMeter
from dlms_protocol.simulator.dlms_cli import DEMO_AUTH_KEY, DEMO_KEY
from dlms_protocol.simulator.dlms_meter import DlmsPtyMeter
from dlms_protocol.simulator.dlms_server import ServerSecurity
from dlms_protocol.simulator.pty import PtyLink

SCALE = 10.0
WAIT = 10.0  # answer time-out on a loaded test machine (never a speed assertion)
EK, AK = bytes.fromhex(DEMO_KEY), bytes.fromhex(DEMO_AUTH_KEY)


def cfg(port: str, **kw) -> PollConfig:
    kw.setdefault("timeout", WAIT)
    kw.setdefault("identification_timeout", WAIT)
    return PollConfig(port, **kw)


def pty_meter(**kw) -> DlmsPtyMeter:
    kw.setdefault("time_scale", SCALE)
    return DlmsPtyMeter(demo_model(), security=ServerSecurity(EK, AK), **kw)


def test_mode_e_sign_on_then_hdlc():
    with pty_meter(mode_e=True) as meter:
        poller = DlmsPoller(cfg(meter.port, mode_e=True, obis=("1.8.0", "32.7.0", "14.7.0")), time_scale=SCALE)
        data = poller.read()
        assert [(r.code, r.value, r.unit) for r in data.readings] == [
            ("1-0:1.8.0.255", Decimal(12345678), "Wh"), ("1-0:32.7.0.255", Decimal("230.1"), "V"),
            ("1-0:14.7.0.255", Decimal("50.01"), "Hz"),
            ("0-0:96.1.0.255", "12345678", None)]  # (the serial number: the codes asked for name no meter)
        assert poller.identification == "/LGZ5\\2ZMD4104407.B32"
        assert data.meter_id == "12345678"  # (the serial number, before the identification line)
        names = meter.event_names()
        assert names[:5] == ["sign-on", "identification", "ack", "mode-e", "snrm"]
        assert ("ack", repr(b"\x06252\r\n")) in meter.events  # ACK, HDLC procedure, 9600 Bd, binary mode
        assert "block-transfer" in names  # the object list came in blocks, over segmented HDLC frames
        assert names.index("release") < names.index("disc")  # release, then DISC ends the link
        # the meter is back at 300 Bd: the next poll signs on again
        assert poller.read().get("1.8.0").value == Decimal(12345678)
        assert meter.event_names().count("sign-on") == 2
        assert "session-end" in meter.event_names()


def test_mode_e_ceiling_lowers_the_rate():
    with pty_meter(mode_e=True) as meter:
        poller = DlmsPoller(cfg(meter.port, mode_e=True, baudrate=4800, obis=("1.8.0",)), time_scale=SCALE)
        assert poller.read().get("1.8.0").value == Decimal(12345678)
        assert ("ack", repr(b"\x06242\r\n")) in meter.events and ("mode-e", "HDLC at 4800 Bd") in meter.events


@pytest.mark.parametrize("size,physical", [(1, 17), (2, 17), (4, 2345)])
def test_rs485_hdlc_discovery_with_each_address_size(size, physical):
    with pty_meter(mode_e=False, address_size=size, physical=physical) as meter:
        poller = DlmsPoller(cfg(meter.port, address_size=size, physical_address=physical), time_scale=SCALE)
        data = poller.read(discover=True)
        assert len(data.readings) == len(meter.model.registers) + 3  # + serial, frame counter, clock
        assert data.get("1-0:31.7.0").value == Decimal("1.52")
        assert "sign-on" not in meter.event_names()


def test_wrong_server_address_gets_no_answer_to_snrm():
    with pty_meter(mode_e=False) as meter:
        with pytest.raises(NoResponseError) as exc:
            DlmsPoller(PollConfig(meter.port, physical_address=18, timeout=0.5), time_scale=SCALE).read()
        assert "SNRM" in exc.value.cause and "address size" in exc.value.fix
        assert "hdlc-ignored" in meter.event_names()


def test_silent_optical_port_gets_no_answer_to_the_sign_on():
    link = PtyLink(baudrate=300)
    try:
        with pytest.raises(NoResponseError) as exc:
            DlmsPoller(PollConfig(link.port, mode_e=True, identification_timeout=0.5), time_scale=SCALE).read()
        assert "sign-on" in exc.value.cause and "optical head" in exc.value.fix
        # 1.5 s of reaction time, time-scaled: repeated every 0.15 s (at 0.15, 0.3 and 0.45 s; on a
        # loaded machine the last one may fall after the time-out), and the error says how often
        sent = int(re.search(r"sent (\d+) times", exc.value.cause).group(1))
        assert sent in (3, 4)
        heard = b""
        while True:
            more = link.receive(0.1)
            if not more:
                break
            heard += more
        assert heard.count(b"/?!\r\n") == sent
    finally:
        link.close()


def test_a_sign_on_the_meter_did_not_hear_is_repeated():
    """A request lost on the line (or one that only woke the optical port) gets no answer: the
    client repeats it after the longest reaction time instead of waiting out its time-out."""
    with pty_meter(mode_e=True, deaf_sign_ons=2) as meter:
        poller = DlmsPoller(cfg(meter.port, mode_e=True, obis=("1.8.0",)), time_scale=SCALE)
        assert poller.read().get("1.8.0").value == Decimal(12345678)
        names = meter.event_names()
        assert names[:4] == ["sign-on-ignored", "sign-on-ignored", "sign-on", "identification"]
        # each repeat waited the (scaled) 1.5 s; a resend within it would mean no patience at all
        assert 0.3 <= poller.last_timings["sign-on"] < WAIT


def test_meter_without_mode_e_falls_back_to_the_mode_c_readout():
    with SimulatedMeter("lgz_e350", mode="C", baudrate=9600, time_scale=SCALE, switch_grace=0.5) as meter:
        source = PollSource(cfg(meter.port, mode_e=True), time_scale=SCALE)
        got = []
        source.start(got.append, lambda health: None)
        assert source.read_once()
        assert got[0].kind == "readout" and got[0].get("1.8.0") is not None
        assert source.poller.mode_e_refused and source.stats.get("mode_e_refused") == 1
        assert source.read_once()  # later reads go straight to the readout
        assert source.stats.get("mode_e_refused") == 1
        source.stop()
        assert meter.readouts >= 2


def test_one_poll_of_a_meter_without_mode_e_reads_the_mode_c_readout(capsys, caplog):
    """Audit: the README says poll falls back to the mode C readout, but only --cycle (the
    source) did; a single ``poll --mode-e`` ended with an error naming an option it has not."""
    from dlms_protocol.cli import main

    with SimulatedMeter("lgz_e350", mode="C", baudrate=9600, time_scale=SCALE, switch_grace=0.5) as meter:
        assert main(["poll", meter.port, "--mode-e", "--obis", "1.8.0", "--time-scale", str(SCALE)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^1\.8\.0\s+12345\.678\s+kWh", out, re.M), out
    assert "reading the mode C readout instead" in caplog.text


def test_each_security_level_over_hdlc(tmp_path):
    with pty_meter(mode_e=True) as meter:
        lls = cfg(meter.port, mode_e=True, client_address=32, authentication="low", password="12345678",
                         obis=("1.8.0",))
        assert DlmsPoller(lls, time_scale=SCALE).read().get("1.8.0").value == Decimal(12345678)
        gmac = cfg(meter.port, mode_e=True, client_address=1, authentication="high_gmac", key=EK,
                          auth_key=AK, obis=("1.8.0", "96.1.1"), state_file=str(tmp_path / "ic"))
        data = DlmsPoller(gmac, time_scale=SCALE).read()
        assert data.get("96.1.1").value == "secret"  # the management client may read what client 16 may not
        wrong = cfg(meter.port, mode_e=True, client_address=32, authentication="low", password="00000000",
                           obis=("1.8.0",))
        with pytest.raises(AssociationError):
            DlmsPoller(wrong, time_scale=SCALE).read()
        bad_key = cfg(meter.port, mode_e=True, client_address=1, authentication="high_gmac", key=bytes(16),
                             auth_key=AK, obis=("1.8.0",), invocation_counter=1000)
        with pytest.raises(AuthenticationError):
            DlmsPoller(bad_key, time_scale=SCALE).read()
        # every failed session still ended with DISC: the meter went back to the sign-on each time;
        # the two HLS pollers without a known counter first read the meter's through the public
        # client, in a session of its own (its own sign-on)
        assert meter.event_names().count("sign-on") == 4 + 2
        assert [d for n, d in meter.events if n == "get"].count("0.0.43.1.0.255 attribute 2") == 2
        assert os.path.exists(tmp_path / "ic")


def test_optical_head_echo_is_skipped_in_sign_on_and_hdlc():
    sessions = []
    for echo in (False, True):
        with pty_meter(mode_e=True, echo=echo) as meter:
            poller = DlmsPoller(cfg(meter.port, mode_e=True, obis=("1.8.0", "31.7.0")), time_scale=SCALE)
            poller.read()
            data = poller.read()
            assert data.get("31.7.0").value == Decimal("1.52")
            assert meter.event_names().count("disc") == 2
            sessions.append(poller.last_session)
    plain, echoed = sessions
    # every frame came back, and was skipped (a late echo of the ACK on a loaded machine may add a few bytes)
    assert echoed.bytes_in >= plain.bytes_in + echoed.bytes_out


@pytest.mark.parametrize("client_info,meter_info,agreed", [(64, 128, 64), (128, 64, 64), (251, 251, 251)])
def test_snrm_ua_negotiates_the_frame_size(client_info, meter_info, agreed):
    with pty_meter(mode_e=False, max_info=meter_info) as meter:
        poller = DlmsPoller(cfg(meter.port, max_info=client_info, obis=("1.8.0",)), time_scale=SCALE)
        assert poller.read().get("1.8.0").value == Decimal(12345678)
        session = poller.last_session
        # what gurux took from the meter's UA, and what the meter took from our SNRM
        assert session.max_info_tx == min(client_info, meter_info)
        assert ("snrm", f"client 16, max info {agreed}") in meter.events
