"""The push listener end to end: a simulated meter on a real pseudo-terminal (paced at its baud
rate), the listener thread reading it through dlms_protocol.transport, unplug/replug, a
ser2net-like socket that drops, stop(), rate limit and a sink that throws."""
from __future__ import annotations

import os
import socket
import threading
import time
from decimal import Decimal
from typing import Callable, List

import pytest

from dlms_protocol.config import ListenerConfig
from dlms_protocol.dlms.listener import PushListener
from dlms_protocol.dlms.source import PushSource
from dlms_protocol.errors import ConfigurationError, DlmsError, TransportError
from dlms_protocol.model import MeterData, Statistics
from dlms_protocol.pipeline import LoopGuest
from dlms_protocol.simulator.push import PushSimulator
from dlms_protocol.transport import Transport, select_waiter

EK = bytes.fromhex("0F0E0D0C0B0A09080706050403020100")
AK = bytes.fromhex("A0A1A2A3A4A5A6A7A8A9AAABACADAEAF")
BAUD, SCALE = 9600, 25.0  # 9600 Bd 8E1, simulated 25 times faster than real


def wait_for(cond: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Poll until cond() holds; generous time-outs, the machine is shared."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def check_against_sent(data: MeterData, sent: dict) -> None:
    """Every register the simulator sent is in the MeterData with raw, scaler, unit and value."""
    by_code = {r.obis.dotted(): r for r in data.readings if r.obis is not None}
    assert sent
    for code, (raw, scaler, unit) in sent.items():
        r = by_code[code]
        if scaler is None:  # text: the serial number
            assert r.value == raw.decode("ascii") and r.unit is None, code
            continue
        assert (r.raw, r.scaler, r.unit) == (raw, scaler, unit), code
        assert r.value == Decimal(raw).scaleb(scaler), code


@pytest.fixture
def sim_factory(tmp_path):
    sims: List[PushSimulator] = []

    def make(**kwargs) -> PushSimulator:
        sim = PushSimulator(seed=len(sims), **kwargs)
        sims.append(sim)
        return sim
    yield make
    for sim in sims:
        sim.stop()


@pytest.fixture
def listeners():
    made: List[PushListener] = []
    yield made
    for lst in made:
        lst.stop()


@pytest.mark.parametrize("wrapper,security,segmented,gbt", [
    ("hdlc", 0x30, True, False),
    ("hdlc", None, False, False),
    ("mbus", 0x20, True, False),
    ("mbus", None, False, True),
    ("hdlc", 0x30, False, True),
])
def test_decoded_values_equal_what_the_meter_sent(sim_factory, listeners, wrapper, security, segmented, gbt) -> None:
    sim = sim_factory(wrapper=wrapper, key=EK, auth_key=AK, security=security, segmented=segmented, gbt=gbt,
                      max_info=90, block_size=120)
    port = sim.open_pty(baudrate=BAUD, parity="E", time_scale=SCALE)
    got: List[MeterData] = []
    # the keys the operator hands out for this security (with keys set, plaintext would be refused)
    config = ListenerConfig(port=port, baudrate=BAUD, parity="E", key=EK if security else None,
                            auth_key=AK if security == 0x30 else None)
    lst = PushListener(config, got.append)
    listeners.append(lst)
    lst.start()
    assert wait_for(lambda: lst.connected)
    sent = []
    for _ in range(3):
        assert sim.send_once()
        sent.append(dict(sim.last_registers))
        assert wait_for(lambda: len(got) == len(sent)), lst.stats.snapshot()
    for data, registers in zip(got, sent):
        check_against_sent(data, registers)
        assert data.kind == "push" and data.meter_time is not None
        assert data.meter_id == ("53494D0000012345" if security else "SIM0000012345")
    counters = lst.stats.snapshot()["counters"]
    assert counters["messages"] == 3 and counters.get("checksum_errors", 0) == 0
    assert counters.get("decrypted", 0) == (3 if security else 0)


def test_wrong_key_is_counted_not_silent(sim_factory, listeners) -> None:
    """User pain #3: bytes and frames arrive, decryption fails: the counters say so."""
    sim = sim_factory(wrapper="hdlc", key=EK, auth_key=AK, security=0x20)
    port = sim.open_pty(baudrate=BAUD, time_scale=SCALE)
    errors: List[DlmsError] = []
    lst = PushListener(ListenerConfig(port=port, baudrate=BAUD, key=AK), lambda d: None, on_error=errors.append)
    listeners.append(lst)
    lst.start()
    assert wait_for(lambda: lst.connected)
    sim.send_once()
    sim.send_once()
    assert wait_for(lambda: lst.stats.get("decrypt_failures") == 2)
    assert lst.stats.get("frames") == 2 and lst.stats.get("messages") == 0
    assert lst.stats.last_error == "decrypted data is not a valid APDU: check the encryption key"
    assert [type(e).__name__ for e in errors] == ["DecryptionError", "DecryptionError"]


def test_the_listener_logs_what_its_decoder_says(sim_factory, listeners, caplog) -> None:
    """The decoder is sans-io (no logger, no clock); its driver, the listener, logs its errors at
    a limited rate, its notes (the AES engine, once), the debug line of each deciphered push, and
    gives each message its receive time."""
    import logging

    caplog.set_level(logging.DEBUG, logger="dlms_protocol")
    sim = sim_factory(wrapper="hdlc", key=EK, auth_key=AK, security=0x30)
    port = sim.open_pty(baudrate=BAUD, time_scale=SCALE)
    got: List[MeterData] = []
    wrong = PushListener(ListenerConfig(port=port, baudrate=BAUD, key=AK, auth_key=EK), got.append)
    listeners.append(wrong)
    wrong.start()
    assert wait_for(lambda: wrong.connected)
    for _ in range(3):
        sim.send_once()
    assert wait_for(lambda: wrong.stats.get("tag_failures") + wrong.stats.get("decrypt_failures") == 3)
    wrong.stop()
    said = [(r.name, r.levelname) for r in caplog.records if "tag" in r.getMessage() or "key" in r.getMessage()]
    assert said.count(("dlms_protocol.dlms.listener", "WARNING")) == 1  # then once a minute at most
    assert not [r for r in caplog.records if r.name == "dlms_protocol.dlms.decoder"]
    assert got == [] and EK.hex() not in caplog.text.lower() and AK.hex() not in caplog.text.lower()

    caplog.clear()
    port = sim.open_pty(baudrate=BAUD, time_scale=SCALE)
    right = PushListener(ListenerConfig(port=port, baudrate=BAUD, key=EK, auth_key=AK), got.append)
    listeners.append(right)
    right.start()
    assert wait_for(lambda: right.connected)
    before = time.time()
    for _ in range(2):
        sim.send_once()
        assert wait_for(lambda: len(got) == right.stats.get("messages"))
    assert wait_for(lambda: len(got) == 2)
    assert all(before <= d.received <= time.time() for d in got)
    infos = [r.getMessage() for r in caplog.records if r.levelname == "INFO" and "deciphering" in r.getMessage()]
    assert len(infos) == 1 and [r.name for r in caplog.records if "deciphering" in r.getMessage()] == [
        "dlms_protocol.dlms.listener"]
    traced = [r.getMessage() for r in caplog.records if r.getMessage().startswith("deciphered APDU")]
    assert len(traced) == 2 and all("security control 0x30" in t and "tag verified" in t for t in traced)


def test_wrong_baud_rate_gives_errors_not_values(sim_factory, listeners) -> None:
    sim = sim_factory(wrapper="hdlc")
    port = sim.open_pty(baudrate=BAUD, time_scale=SCALE)
    got: List[MeterData] = []
    lst = PushListener(ListenerConfig(port=port, baudrate=2400), got.append)
    listeners.append(lst)
    lst.start()
    assert wait_for(lambda: lst.connected)
    for _ in range(30):
        sim.send_once()
        if lst.stats.get("framing_errors") + lst.stats.get("checksum_errors"):
            break
    assert wait_for(lambda: lst.stats.get("framing_errors") + lst.stats.get("checksum_errors") > 0)
    assert got == [] and lst.stats.get("messages") == 0 and lst.stats.get("bytes") > 0


def test_unplug_and_replug_reconnects_by_itself(sim_factory, listeners, tmp_path) -> None:
    link = str(tmp_path / "usb-meter-if00")  # what /dev/serial/by-id gives after a replug
    sim = sim_factory(wrapper="mbus", key=EK, security=0x20, segmented=True)
    sim.open_pty(link, baudrate=BAUD, time_scale=SCALE)
    got: List[MeterData] = []
    lst = PushListener(ListenerConfig(port=link, baudrate=BAUD, key=EK), got.append,
                       backoff_initial=0.05, backoff_max=0.4)
    listeners.append(lst)
    lst.start()
    assert wait_for(lambda: lst.connected)
    sim.send_once()
    assert wait_for(lambda: len(got) == 1)
    sim.unplug()
    assert wait_for(lambda: not lst.connected)
    assert wait_for(lambda: lst.stats.get("transport_errors") >= 2)  # the read failed, then opens failed
    assert lst.running
    sim.replug()
    assert os.path.islink(link)
    assert wait_for(lambda: lst.connected and lst.connects == 2)
    sim.send_once()
    assert wait_for(lambda: len(got) == 2)
    check_against_sent(got[-1], sim.last_registers)



def test_a_replugged_adapter_is_read_again_without_waiting_out_the_back_off(sim_factory, listeners,
                                                                           tmp_path, caplog) -> None:
    """The back-off after a lost port doubles up to 30 s, so a missing adapter is not hammered;
    but an adapter plugged back in is opened as soon as its device is there, not after the rest
    of the pause (here the whole back-off is 60 s: the old code read it again only then)."""
    import logging

    caplog.set_level(logging.INFO, logger="dlms_protocol.dlms.listener")
    link = str(tmp_path / "usb-meter-if00")
    sim = sim_factory(wrapper="hdlc", key=EK, auth_key=AK, security=0x30)
    sim.open_pty(link, baudrate=BAUD, time_scale=SCALE)
    got: List[MeterData] = []
    lst = PushListener(ListenerConfig(port=link, baudrate=BAUD, key=EK, auth_key=AK), got.append,
                       backoff_initial=60.0, backoff_max=60.0)
    listeners.append(lst)
    lst.start()
    assert wait_for(lambda: lst.connected)
    sim.unplug()
    assert wait_for(lambda: not lst.connected and lst.stats.get("transport_errors") >= 1)
    time.sleep(1.0)  # in the back-off, the device gone
    assert lst.connects == 1
    sim.replug()
    assert wait_for(lambda: lst.connected and lst.connects == 2, timeout=20.0)  # (60 s before)
    assert f"{link} is there again: opening it now" in caplog.text
    assert wait_for(sim.reader_ready, timeout=20.0) and sim.send_once()
    assert wait_for(lambda: bool(got), timeout=20.0)
    check_against_sent(got[-1], sim.last_registers)

class DroppingServer:
    """A ser2net stand-in: each connection gets some pushes, then the server hangs up."""

    def __init__(self, sim: PushSimulator, pushes_per_connection: int = 2, connections: int = 2) -> None:
        self.sim = sim
        self.per = pushes_per_connection
        self.left = connections
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(1)
        self.server.settimeout(30)
        self.port = self.server.getsockname()[1]
        self.sent: List[dict] = []
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while self.left:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.left -= 1
            with conn:
                # pyserial's socket:// open discards what is already waiting, as a meter's first
                # push after a reconnect may be lost on a real line too: push a moment later
                time.sleep(0.3)
                for _ in range(self.per):
                    conn.sendall(self.sim.emit())
                    self.sent.append(dict(self.sim.last_registers))
                    time.sleep(0.05)
                time.sleep(0.2)
        self.server.close()


def test_socket_that_drops_is_reopened(sim_factory, listeners) -> None:
    sim = sim_factory(wrapper="hdlc", key=EK, auth_key=AK, security=0x30)
    server = DroppingServer(sim)
    got: List[MeterData] = []
    lst = PushListener(ListenerConfig(port=f"socket://127.0.0.1:{server.port}", key=EK, auth_key=AK),
                       got.append, backoff_initial=0.05, backoff_max=0.2)
    listeners.append(lst)
    lst.start()
    assert wait_for(lambda: len(got) == 4), lst.stats.snapshot()
    assert lst.connects >= 2
    for data, registers in zip(got, server.sent):
        check_against_sent(data, registers)


def test_stop_releases_the_port_and_a_throwing_sink_does_not_kill_the_thread(sim_factory, listeners) -> None:
    sim = sim_factory(wrapper="hdlc")
    port = sim.open_pty(baudrate=BAUD, time_scale=SCALE)
    calls: List[MeterData] = []

    def sink(data: MeterData) -> None:
        calls.append(data)
        raise RuntimeError("sink bug")

    stats = Statistics()
    lst = PushListener(ListenerConfig(port=port, baudrate=BAUD), sink, stats)
    listeners.append(lst)
    lst.start()
    assert wait_for(lambda: lst.connected)
    sim.send_once()
    sim.send_once()
    assert wait_for(lambda: len(calls) == 2)
    assert lst.running and stats.get("callback_errors") == 2
    lst.stop()
    assert not lst.running and not lst.connected
    # an exclusive open fails ("could not exclusively lock") while anyone holds the port. 8N1:
    # this machine's pty driver refuses a second tcsetattr with parity (EINVAL), a real UART does not
    again = Transport.open(port, BAUD, 8, "N", 1)
    again.close()


def test_rate_limit_keeps_the_latest(sim_factory, listeners) -> None:
    sim = sim_factory(wrapper="hdlc")
    port = sim.open_pty(baudrate=BAUD, time_scale=200.0)
    got: List[MeterData] = []
    lst = PushListener(ListenerConfig(port=port, baudrate=BAUD, min_interval=3.0), got.append)
    listeners.append(lst)
    lst.start()
    assert wait_for(lambda: lst.connected)
    sent = []
    for _ in range(3):
        sim.send_once()
        sent.append(dict(sim.last_registers))
    assert wait_for(lambda: lst.stats.get("messages") == 3)
    assert len(got) == 1
    check_against_sent(got[0], sent[0])
    assert wait_for(lambda: len(got) == 2)
    check_against_sent(got[1], sent[2])  # the second push was replaced by the third
    assert lst.stats.get("rate_limited") == 1


def test_configuration_error_ends_the_thread(listeners) -> None:
    errors: List[DlmsError] = []
    lst = PushListener(ListenerConfig(port="nonsense://x"), lambda d: None, on_error=errors.append)
    listeners.append(lst)
    lst.start()
    assert wait_for(lambda: not lst.running)
    assert errors and isinstance(errors[0], ConfigurationError)


def test_missing_port_is_retried_with_back_off(listeners, tmp_path) -> None:
    errors: List[DlmsError] = []
    lst = PushListener(ListenerConfig(port=str(tmp_path / "ttyUSB9")), lambda d: None, on_error=errors.append,
                       backoff_initial=0.02, backoff_max=0.05)
    listeners.append(lst)
    lst.start()
    assert wait_for(lambda: len(errors) >= 3)
    assert lst.running and all(isinstance(e, TransportError) for e in errors)
    assert "not found" in str(errors[0])


class RecordingGuest(LoopGuest):
    """An output's loop as the listener sees it (``pipeline.LoopGuest``): records the waits it is
    given and waits with select; returns early now and then, as the contract allows."""

    def __init__(self) -> None:
        self.calls: List[tuple] = []
        self.woken = 0
        self.released = threading.Event()

    def wait(self, fds, timeout):  # type: ignore[no-untyped-def]
        self.calls.append((tuple(fds), timeout))
        return select_waiter(fds, min(timeout, 0.2))

    def wake(self) -> None:
        self.woken += 1

    def release(self) -> None:
        self.released.set()


def test_a_hosted_loop_runs_in_the_port_waits_and_is_handed_back(sim_factory, listeners) -> None:
    """The Venus service's one-thread mode seen from the listener: every wait for the pty goes
    through the guest (the descriptor and the abort pipe), values are decoded as without it, and
    stopping wakes the guest and hands it back."""
    sim = sim_factory(wrapper="hdlc", key=EK, auth_key=AK, security=0x30)
    port = sim.open_pty(baudrate=BAUD, parity="E", time_scale=SCALE)
    got: List[MeterData] = []
    source = PushSource(ListenerConfig(port=port, baudrate=BAUD, parity="E", key=EK, auth_key=AK))
    guest = RecordingGuest()
    assert source.host_loop(guest) and guest.hosted
    source.start(got.append, lambda health: None)
    lst = source.listener
    assert lst is not None
    listeners.append(lst)
    assert wait_for(lambda: lst.connected)
    sent = []
    for _ in range(3):
        assert sim.send_once()
        sent.append(dict(sim.last_registers))
        assert wait_for(lambda: len(got) == len(sent))
    for data, registers in zip(got, sent):
        check_against_sent(data, registers)
    direct = getattr(lst._port, "_direct", None)  # (the pty's descriptor and pyserial's abort pipe)
    assert direct is not None
    assert (direct[0], direct[1]) in {fds for fds, _ in guest.calls}
    assert not guest.released.is_set()
    source.stop(2.0)
    assert not lst.running and guest.woken >= 1 and guest.released.is_set()


def test_back_off_runs_the_hosted_loop_and_stop_ends_it_at_once(listeners, tmp_path) -> None:
    """A missing port: the pauses between reopens run the guest (D-Bus stays answered), and
    stop() wakes it instead of waiting out the pause."""
    lst = PushListener(ListenerConfig(port=str(tmp_path / "ttyUSB9")), lambda d: None,
                       backoff_initial=30.0, backoff_max=30.0)
    guest = RecordingGuest()
    lst.host_loop(guest)
    listeners.append(lst)
    lst.start()
    assert wait_for(lambda: any(fds == () for fds, _ in guest.calls))
    start = time.monotonic()
    lst.stop(5.0)
    assert time.monotonic() - start < 1.0 and not lst.running
    assert guest.woken == 1 and guest.released.is_set()


def test_only_a_local_port_before_start_hosts_a_loop() -> None:
    """socket:// and rfc2217:// reads wait inside pyserial, where no guest can run."""
    for url in ("socket://localhost:7000", "rfc2217://host:2217"):
        guest = RecordingGuest()
        assert not PushSource(ListenerConfig(port=url)).host_loop(guest) and not guest.hosted
    source = PushSource(ListenerConfig(port="/dev/ttyUSB0"))
    guest = RecordingGuest()
    assert source.host_loop(guest) and guest.hosted
