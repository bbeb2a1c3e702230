"""The SmartHomeNG plugin with ``mqtt_publish``: push and scheduled readouts reach a real broker.

The plugin runs in the SmartHomeNG test double with a simulated meter on a real pseudo-terminal;
the broker is a private mosquitto, the consumer a real paho subscriber. Expected values come
from the simulator's own record of what it sent.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Iterator

import pytest

from dlms_protocol.simulator import SimulatedMeter
from dlms_protocol.simulator.push import PushSimulator
from shng_double import SmartHome
from shng_double.testing import plugins_dir, wait_for
from test_mqtt import Broker, Subscriber
from test_shng_plugin import PUSH_ITEMS, listen_section, push_once, sample_lines, sent, start


@pytest.fixture
def shng() -> Iterator[SmartHome]:
    sh = SmartHome(plugins_dir())
    yield sh
    sh.stop()


@pytest.fixture
def broker(tmp_path) -> Iterator[Broker]:
    b = Broker(tmp_path).start()
    try:
        yield b
    finally:
        b.kill()


def _mqtt(broker: Broker, **extra: object) -> dict:
    return dict(
        {"mqtt_publish": True, "mqtt_host": "127.0.0.1", "mqtt_port": broker.port, "mqtt_prefix": "shng"}, **extra
    )


def test_push_mode_publishes_every_push_to_mqtt(shng: SmartHome, broker: Broker) -> None:
    sim = PushSimulator(wrapper="hdlc", interval=0.25, seed=3)
    sim.open_pty(baudrate=115200, parity="N")
    sub = Subscriber(broker.port, ("shng/#", "homeassistant/#"))
    try:
        start(shng, {"dlms": listen_section(sim, **_mqtt(broker, mqtt_node="house"))}, PUSH_ITEMS)
        topic = "shng/SIM0000012345/1-0:1.7.0/value"
        for _ in range(2):
            push_once(sim, shng)
            want = sent(sim, "1-0:1.7.0.255")
            sub.wait(lambda want=want: sub.last(topic) is not None and Decimal(sub.last(topic) or "0") == want, "power")
        sub.wait(sub.has("shng/house/status", "online"), "online")
        body = json.loads(sub.last("shng/SIM0000012345/1-0:1.8.0") or "")
        assert Decimal(str(body["value"])) == sent(sim, "1-0:1.8.0.255") and body["unit"] == "Wh"
        config = json.loads(sub.last("homeassistant/sensor/house/sim0000012345_1_0_1_8_0/config") or "")
        assert config["device_class"] == "energy" and config["state_class"] == "total_increasing"
        rows = dict(shng.plugin("dlms").config_rows())  # the web interface's parameter table
        assert rows["mqtt_host"] == f"127.0.0.1:{broker.port}" and rows["mqtt"] in ("verbunden", "connected")
        shng.stop()
        sub.wait(sub.has("shng/house/status", "offline"), "offline when SmartHomeNG stops")
    finally:
        sub.close()
        sim.stop()


@pytest.mark.slow
def test_scheduled_readout_reaches_mqtt(shng: SmartHome, broker: Broker) -> None:
    meter = SimulatedMeter("lgz_e350", mode="C", baudrate=9600).start()
    sub = Subscriber(broker.port, ("shng/#",))
    try:
        section = dict({"serialport": meter.port, "mode": "readout", "update_cycle": 60}, **_mqtt(broker))
        start(shng, {"dlms": section}, {"m": {"e": {"type": "num", "dlms_obis_code": "1.8.0"}}})
        sub.wait(sub.has("shng/dlms/status", "online"), "online after the first scheduled readout")
        sub.wait(lambda: any(t.endswith("/1.8.0/value") for t in sub.messages), "1.8.0")
        topic = next(t for t in sub.messages if t.endswith("/1.8.0/value"))
        expected = sample_lines()["1.8.0"].split("(")[1].split("*")[0]
        assert Decimal(sub.last(topic) or "") == Decimal(expected)
        wait_for(lambda: shng.items.return_item("m.e")() == float(Decimal(expected)))
    finally:
        sub.close()
        meter.stop()
