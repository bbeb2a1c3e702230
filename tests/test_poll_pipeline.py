"""A polled meter through the seam: PollSource on a cycle → Pipeline → outputs (recorder, real MQTT)."""
from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from dlms_protocol.pipeline import SOURCES, Health, Pipeline, make_output, make_source
from dlms_protocol.poll.config import PollConfig
from dlms_protocol.poll.source import PollSource
from dlms_protocol.simulator.cosem_model import demo_model
from dlms_protocol.simulator.dlms_meter import DlmsTcpMeter
from helpers import Recorder, need, which

WAIT = 20.0  # upper bound on a loaded machine, never a speed assertion


@pytest.fixture
def meter():
    with DlmsTcpMeter(demo_model()) as m:
        yield m


def test_poll_is_a_registered_source(meter):
    assert SOURCES["poll"] == ".poll.source:make_poll_source"
    src = make_source("poll", config=PollConfig(meter.url, timeout=WAIT, obis=("1.8.0",)))
    assert isinstance(src, PollSource) and src.kind == "poll" and src.stale_after == 0.0


def test_cycle_polls_selected_registers_into_the_outputs(meter):
    config = PollConfig(meter.url, timeout=WAIT, obis=("1.8.0", "2.8.0", "1.7.0", "2.7.0", "32.7.0"))
    src = PollSource(config, cycle=0.3)
    rec = Recorder()
    pipe = Pipeline(src, [rec])
    pipe.start()
    try:
        rec.wait(lambda: len(rec.data) >= 1, "first poll")
        meter.model.set_value("1.0.1.8.0.255", 12350000)
        meter.model.set_value("1.0.1.7.0.255", 2000)
        rec.wait(lambda: rec.data[-1].get("1.8.0").value == Decimal(12350000), "a later cycle with the new value")
    finally:
        pipe.stop()
    first, last = rec.data[0], rec.data[-1]
    assert first.get("1.8.0").value == Decimal(12345678) and first.get("1.8.0").unit == "Wh"
    assert last.get("1.7.0").value == Decimal(2000) and last.get("32.7.0").value == Decimal("230.1")
    # enriched once by the pipeline: net power = import - export, marked derived
    net = last.get("16.7.0")
    assert net is not None and net.derived and net.value == Decimal(2000)
    assert [h.state for h in rec.health][:1] == [Health.OK]
    assert src.stats.get("reads") >= 2 and src.stats.get("discoveries") == 1
    assert meter.connections >= 2  # one TCP connection per cycle, released each time


def test_a_refused_association_becomes_error_health_with_the_cause(meter):
    src = PollSource(PollConfig(meter.url, timeout=WAIT, client_address=32, authentication="low", password="wrong-one"))
    rec = Recorder()
    pipe = Pipeline(src, [rec])
    pipe.start(ticker=False)
    try:
        assert not src.read_once()
    finally:
        pipe.stop()
    errors = [h for h in rec.health if h.state == Health.ERROR]
    assert errors and "password" in errors[0].cause and "wrong-one" not in errors[0].cause
    assert rec.data == [] and src.stats.get("association_errors") == 1


def test_polled_meter_reaches_mqtt(meter, tmp_path: Path):
    need(bool(which("mosquitto")), "mosquitto is not installed")
    from dlms_protocol.mqtt.discovery import meter_name
    from test_mqtt import Broker, Subscriber, _check_every_entity

    broker = Broker(tmp_path).start()
    sub = Subscriber(broker.port, ("test/dlms/#", "homeassistant/#"))
    try:
        config = PollConfig(meter.url, timeout=WAIT, obis=("96.1.0", "1.8.0", "2.8.0", "1.7.0", "32.7.0"))
        src = make_source("poll", config=config)
        rec = Recorder()
        out = make_output("mqtt", host="127.0.0.1", port=broker.port, prefix="test/dlms", node="mynode")
        pipe = Pipeline(src, [rec, out])
        pipe.start()
        try:
            assert src.read_once()
            (data,) = rec.data
            sub.wait(sub.has("test/dlms/mynode/status", "online"), "online")
            _check_every_entity(sub, data, meter_name(data))  # the output's worker may not have set status yet
        finally:
            pipe.stop()
        assert pipe.stats.get("output_errors") == 0 and out.counters["errors"] == 0
    finally:
        sub.close()
        broker.kill()
