"""The seam: sources emit verified MeterData, the pipeline enriches once and fans out to outputs."""
from __future__ import annotations

import time
from decimal import Decimal
from typing import List

import pytest

from dlms_protocol.config import ReadoutConfig
from dlms_protocol.model import MeterData, Reading
from dlms_protocol.obis import Obis
from dlms_protocol.pipeline import Health, KeepLatest, Output, Pipeline, Source, enrich, make_source
from dlms_protocol.simulator.d0 import SimulatedMeter
from helpers import Recorder

SCALE = 10.0


def reading(code: str, value: str, unit: str) -> Reading:
    return Reading(code=code, obis=Obis.parse(code), value=Decimal(value), unit=unit)


def snapshot(*readings: Reading) -> MeterData:
    return MeterData(kind="push", readings=tuple(readings))


class Broken(Output):
    name = "broken"

    def publish(self, data: MeterData) -> None:
        raise RuntimeError("output bug")


class Manual(Source):
    """A source driven by the test: emits what it is told to."""

    name = "manual"

    def __init__(self, stale_after: float = 0.0) -> None:
        super().__init__()
        self.stale_after = stale_after
        self.emit = None

    def start(self, emit, report) -> None:
        self.emit, self.report = emit, report

    def stop(self, timeout: float = 2.0) -> None:
        self.emit = None


def test_net_power_is_derived_once_and_marked_for_every_output():
    src = Manual()
    a, b = Recorder(), Recorder()
    pipe = Pipeline(src, [a, b])
    pipe.start(ticker=False)
    src.emit(snapshot(reading("1-0:1.7.0", "1.500", "kW"), reading("1-0:2.7.0", "200", "W")))
    (da,), (db,) = a.data, b.data
    assert da is db  # enriched once, the same object everywhere
    net = da.get("16.7.0")
    assert net is not None and net.derived and net.numeric() == Decimal("1.3") and net.unit == "kW"
    assert str(net.obis) == str(Obis.parse("1-0:16.7.0"))


def test_nothing_is_derived_from_a_missing_part():
    data = enrich(snapshot(reading("1-0:1.7.0", "1000", "W"), reading("1-0:21.7.0", "300", "W")))
    assert data.get("16.7.0") is None and data.get("36.7.0") is None
    assert not any(r.derived for r in data.readings)


def test_a_sent_value_is_never_replaced_by_a_derived_one():
    data = enrich(snapshot(reading("1-0:1.7.0", "1000", "W"), reading("1-0:2.7.0", "0", "W"),
                           reading("1-0:16.7.0", "999", "W")))
    assert [r.numeric() for r in data.find("16.7.0")] == [Decimal(999)]


def test_a_broken_output_is_counted_and_the_others_still_get_data():
    src, rec = Manual(), Recorder()
    pipe = Pipeline(src, [Broken(), rec])
    pipe.start(ticker=False)
    src.emit(snapshot(reading("1-0:1.8.0", "1", "kWh")))
    assert len(rec.data) == 1
    assert pipe.stats.get("output_errors") == 1


def test_staleness_is_decided_once_for_every_source_and_recovers():
    now = [100.0]
    src, rec = Manual(stale_after=10.0), Recorder()
    pipe = Pipeline(src, [rec], clock=lambda: now[0])
    pipe.start(ticker=False)
    src.emit(snapshot(reading("1-0:1.8.0", "1", "kWh")))
    now[0] += 11
    pipe.tick()
    pipe.tick()  # reported once, not on every tick
    assert [h.state for h in rec.health] == [Health.OK, Health.STALE]
    assert "no new verified data for 11 s" in rec.health[-1].cause
    src.emit(snapshot(reading("1-0:1.8.0", "2", "kWh")))
    assert rec.health[-1].state == Health.OK


def test_keep_latest_delivers_the_freshest_after_the_interval():
    t = [0.0]
    limit = KeepLatest(5.0, clock=lambda: t[0])
    first, second, third = (snapshot(reading("1-0:1.8.0", str(i), "kWh")) for i in range(3))
    assert limit.offer(first) is first
    t[0] = 1
    assert limit.offer(second) is None
    assert limit.offer(third) is None and limit.dropped == 1
    assert limit.due() is None
    t[0] = 5
    assert limit.due() is third and limit.due() is None


def test_keep_latest_carries_over_the_codes_another_list_sent():
    """A Kaifa in Norway pushes power every 2 s (list 1) and its energies once an hour (list 3).
    Behind a rate limit the hour's list was replaced by the next list 1 within the interval, and
    the energy never reached the output. The newest values win; codes only the held list had
    come along, as the meter sent them; another meter's never do."""
    t = [0.0]
    limit = KeepLatest(10.0, clock=lambda: t[0])
    power = [snapshot(reading("1-0:1.7.0", w, "W")) for w in ("500", "510", "520")]
    energy = MeterData(kind="push", readings=(reading("1-0:1.8.0", "12345", "kWh"), reading("1-0:1.7.0", "505", "W")),
                       received=0.0)
    assert limit.offer(power[0]) is power[0]
    t[0] = 2
    assert limit.offer(energy) is None
    t[0] = 4
    assert limit.offer(power[1]) is None and limit.offer(power[2]) is None
    t[0] = 10
    out = limit.due()
    assert out is not None and [(r.code, str(r.value)) for r in out.readings] == [("1-0:1.7.0", "520"),
                                                                                 ("1-0:1.8.0", "12345")]
    assert out.get("1-0:1.8.0") is energy.readings[0]  # the meter's own reading, not a copy or a sum
    t[0] = 11
    other = MeterData(kind="push", readings=(reading("1-0:1.8.0", "1", "kWh"),), meter_id="B", received=0.0)
    assert limit.offer(snapshot(reading("1-0:1.7.0", "1", "W"))) is None
    mine = MeterData(kind="push", readings=(reading("1-0:1.7.0", "2", "W"),), meter_id="A", received=0.0)
    assert limit.offer(other) is None and limit.offer(mine) is None
    t[0] = 20
    assert [r.code for r in limit.due().readings] == ["1-0:1.7.0"]  # (B's energy is no reading of A)


def test_keep_latest_without_an_interval_hands_the_freshest_when_taken():
    """A scheduler decides when (the plugin's items for a push-only D0 meter): the first at once,
    then the newest held one at each ``take``, never from ``due``."""
    limit = KeepLatest(float("inf"))
    first, second, third = (snapshot(reading("1-0:1.8.0", str(i), "kWh")) for i in range(3))
    assert limit.offer(first) is first
    assert limit.offer(second) is None and limit.offer(third) is None
    assert limit.due() is None
    assert limit.take() is third and limit.take() is None


def test_readout_source_over_a_pty_reaches_every_output():
    """A scheduled D0 readout goes through the same seam as a push (it used to miss Victron)."""
    with SimulatedMeter("lgz_e350", time_scale=SCALE, reaction_time=0.5, ack_reaction_time=1.0,
                        switch_grace=1.0) as m:
        cfg = ReadoutConfig(port=m.port, timeout=1.0, baud_switch_delay=0.05)
        src = make_source("readout", config=cfg, cycle=0.0, reader_options={"time_scale": SCALE})
        rec = Recorder()
        pipe = Pipeline(src, [rec])
        pipe.start()
        try:
            assert src.read_once()
        finally:
            pipe.stop()
    (data,) = rec.data
    assert data.kind == "readout" and data.get("1.8.0") is not None
    assert pipe.health.state == Health.STOPPED
    assert src.stats.get("reads") == 1


def test_readout_source_reports_an_error_with_its_cause():
    cfg = ReadoutConfig(port="/dev/does-not-exist-dlms", timeout=0.2)
    src = make_source("readout", config=cfg)
    rec = Recorder()
    Pipeline(src, [rec]).start(ticker=False)
    assert not src.read_once()
    assert rec.health[-1].state == Health.ERROR and "/dev/does-not-exist-dlms" in rec.health[-1].cause
    time.sleep(0)  # nothing published
    assert rec.data == []


def test_d0_reader_takes_an_injected_opener():
    """Transport as a protocol: the reader opens its port only through the opener it was given."""
    from dlms_protocol.iec62056_21.reader import D0Reader, open_serial

    opened = []

    def opener(port, baudrate, bytesize, parity, stopbits):
        opened.append((port, baudrate, bytesize, parity, stopbits))
        return open_serial(port, baudrate, bytesize, parity, stopbits)

    with SimulatedMeter("lgz_e350", time_scale=SCALE, reaction_time=0.5, ack_reaction_time=1.0,
                        switch_grace=1.0) as m:
        cfg = ReadoutConfig(port=m.port, timeout=1.0, baud_switch_delay=0.05)
        reader = D0Reader(cfg, time_scale=SCALE, opener=opener)
        try:
            data = reader.read()
        finally:
            reader.close()
    assert data.get("1.8.0") is not None
    assert opened == [(m.port, 300, 7, "E", 1)]                          # sign-on at 300 Bd 7E1


def test_no_protocol_module_imports_pyserial():
    """The sans-io layers and the D0 reader load without pyserial; only the transport needs it."""
    import subprocess
    import sys

    code = ("import sys; import dlms_protocol.iec62056_21.client, dlms_protocol.iec62056_21.reader, "
            "dlms_protocol.iec62056_21.datablock, dlms_protocol.dlms.decoder, dlms_protocol.pipeline; "
            "print('serial' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


#: the protocol layers (bytes in, dataclasses or errors out) and what they build on
SANS_IO = ("dlms/apdu", "dlms/cadence", "dlms/decoder", "dlms/deframer", "dlms/encode", "dlms/gbt", "dlms/gcm",
           "dlms/hdlc", "dlms/mbus", "dlms/payload", "dlms/profiles", "dlms/security", "dlms/template",
           "dlms/units", "dlms/wrapper", "iec62056_21/client", "iec62056_21/datablock",
           "iec62056_21/identification", "iec62056_21/stream", "sml/decoder", "derive", "errors", "obis", "units")


@pytest.mark.parametrize("module", SANS_IO)
def test_a_protocol_layer_imports_no_logging_clock_thread_or_port(module: str) -> None:
    """Sans-io: no logger (the driver logs errors and notes), no clock (the driver passes the
    time), no threads and no port; one import of any of them would let it slip back in."""
    import ast
    from pathlib import Path

    import dlms_protocol

    tree = ast.parse((Path(dlms_protocol.__file__).parent / f"{module}.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"logging", "time", "threading", "serial", "socket", "select", "asyncio"}, module


def test_the_ticker_runs_fast_only_for_outputs_with_timers() -> None:
    """Outputs without timers (D-Bus, a recorder) need only the staleness check (next test); a
    rate-limited output delivers held data, so its pipeline ticks every TICK."""
    from dlms_protocol.pipeline import Throttled

    assert Pipeline(Manual(), [Recorder()]).tick_period() == Pipeline.IDLE_TICK
    assert Pipeline(Manual(), [Recorder(), Throttled(Recorder(), 5.0)]).tick_period() == Pipeline.TICK


def test_the_idle_ticker_sleeps_until_staleness_is_due() -> None:
    """Without timed outputs the ticker wakes when the source could first turn stale, not every
    IDLE_TICK: a source that keeps delivering costs no tick at all within its time-out, and
    staleness is still seen once the data stops, when it is due."""
    ticks: List[float] = []

    class Counting(Pipeline):
        def tick(self) -> None:
            ticks.append(time.monotonic())
            super().tick()

    src = Manual()
    src.stale_after = 3.0
    rec = Recorder()
    pipe = Counting(src, [rec])
    pipe.start()
    try:
        end = time.monotonic() + 2.2  # two IDLE_TICKs: the old ticker woke twice here (0.8 s to spare)
        while time.monotonic() < end:
            pipe.feed(MeterData(kind="push", readings=()))
            time.sleep(0.1)
        assert ticks == []
        stopped = time.monotonic()
        rec.wait(lambda: any(h.state == Health.STALE for h in rec.health), "stale 3 s after the last data")
        assert 2.9 <= time.monotonic() - stopped <= 3.0 + Pipeline.IDLE_TICK + 1.0
    finally:
        pipe.stop()


@pytest.mark.parametrize("profile, says", [
    # frames arrive and pass their checks, but the configured profile does not fit them
    ("kaifa-no-list2-3ph", "frames arrive but fail; the last one: profile 'kaifa-no-list2-3ph' does not fit this "
                           "frame (kaifa-no-list2-3ph: the frame has 23 elements, the profile expects 13): set "
                           "profile to auto"),
    # nothing arrives at all: the cable advice
    (None, "check the cable, the port settings and that the meter's interface is enabled"),
])
def test_staleness_says_what_arrived_instead_of_blaming_the_cable(profile, says) -> None:
    """A push meter whose frames arrive but fail (a wrong profile here; a wrong key alike) is
    stale with that failure as its cause and fix, not with "check the cable" (serve's log, the
    plugin's status and MQTT's availability text show it)."""
    from dlms_protocol.config import ListenerConfig
    from dlms_protocol.dlms.source import PushSource
    from dlms_protocol.simulator.push import PushSimulator

    sim = PushSimulator(wrapper="hdlc", layout="profile", profile="si-sodo-reduxi-live23", seed=3, interval=0.3)
    port = sim.open_pty(baudrate=9600, parity="N")
    if profile is not None:
        sim.start()
    src = PushSource(ListenerConfig(port=port, baudrate=9600, parity="N", profile=profile or "auto"), 1.5)
    rec = Recorder()
    pipe = Pipeline(src, [rec])
    pipe.start()
    try:
        rec.wait(lambda: any(h.state == Health.STALE for h in rec.health), "stale after 1.5 s")
    finally:
        pipe.stop()
        sim.stop()
    (stale,) = [h for h in rec.health if h.state == Health.STALE]
    assert says in stale.cause and stale.cause.startswith("no verified data for ")
    assert not rec.data


def test_a_scheduled_meter_whose_adapter_comes_back_is_read_at_once(tmp_path, caplog) -> None:
    """A readout whose port is missing backs off (1 s doubling up to 30 s; here 60 s at once);
    the adapter plugged in (its /dev/serial/by-id link there again) ends the pause: it is read
    then, not after the rest of it (the old code: 60 s)."""
    import logging
    import os

    caplog.set_level(logging.INFO, logger="dlms_protocol.pipeline")
    link = tmp_path / "usb-ir-head-if00"
    with SimulatedMeter("lgz_e350", time_scale=SCALE, reaction_time=0.5, ack_reaction_time=1.0,
                        switch_grace=1.0) as m:
        cfg = ReadoutConfig(port=str(link), timeout=1.0, baud_switch_delay=0.05)
        src = make_source("readout", config=cfg, cycle=600.0, reader_options={"time_scale": SCALE})
        src.BACKOFF_INITIAL = 60.0
        rec = Recorder()
        pipe = Pipeline(src, [rec])
        pipe.start()
        try:
            rec.wait(lambda: any(h.state == Health.ERROR for h in rec.health), "the failed open")
            time.sleep(0.7)  # in the pause, the adapter still missing
            os.symlink(m.port, link)
            plugged = time.monotonic()
            rec.wait(lambda: bool(rec.data), "a readout after the adapter came back", timeout=40.0)
            took = time.monotonic() - plugged
        finally:
            pipe.stop()
    assert rec.data[0].get("1.8.0") is not None
    assert src.stats.get("transport_errors") == 1
    assert f"{link} is there again: reading it now" in caplog.text
    assert took < 40.0  # (the rest of the 60 s pause, before)
