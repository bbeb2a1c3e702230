"""The MQTT output against a real mosquitto broker and a real paho subscriber.

Each test starts its own ``mosquitto`` on a free loopback port (temp config: listener on
127.0.0.1 only, no persistence), drives a ``Pipeline`` with a manual source, and checks what a
subscriber really receives: every Home Assistant entity's config and value for a D0 readout
and for an encrypted push (corpus), availability following the source's health, a broker
restarted under a running output, and username/password from a mosquitto password file.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from dlms_protocol.config import ListenerConfig
from dlms_protocol.iec62056_21.datablock import parse_readout
from dlms_protocol.model import MeterData, Reading
from dlms_protocol.mqtt.discovery import is_serial, json_number, keys_of
from dlms_protocol.mqtt.output import MqttOutput, make_mqtt_output
from dlms_protocol.obis import Obis
from dlms_protocol.pipeline import Health, KeepLatest, Pipeline, Source, enrich, make_output, make_source
from helpers import CORPUS, Recorder, load_json, need, which

WAIT = 20.0  # upper bound for a broker round trip on a loaded machine; never a speed assertion
PASSWORD = "s3cret-Pa55word"


# ------------------------------------------------------------------------------ real parts
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A private mosquitto on 127.0.0.1:<port>, started and stopped by its pid."""

    def __init__(self, folder: Path, port: Optional[int] = None, users: Optional[Dict[str, str]] = None) -> None:
        self.exe = which("mosquitto")
        self.folder = folder
        self.port = port or _free_port()
        self.users = users
        self.extra: List[str] = []  # further lines for the listener (TLS files)
        self.proc: Optional[subprocess.Popen] = None

    def _config(self) -> Path:
        # as root mosquitto would switch to its own user, which cannot read the pytest temp folder
        lines = [
            f"listener {self.port} 127.0.0.1",
            "persistence false",
            "log_dest stderr",
            f"user {getpass.getuser()}",
        ]
        if self.users:
            pw = self.folder / "passwd"
            pw.write_text("")
            tool = which("mosquitto_passwd")
            for user, password in self.users.items():
                subprocess.run([tool, "-b", str(pw), user, password], check=True)
            os.chmod(pw, 0o600)
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines.append("allow_anonymous true")
        lines += self.extra
        conf = self.folder / f"mosquitto-{self.port}.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self) -> "Broker":
        log = open(self.folder / f"mosquitto-{self.port}.log", "ab")
        self.proc = subprocess.Popen([self.exe, "-c", str(self._config())], stdout=log, stderr=log)
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.folder / f"mosquitto-{self.port}.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError("mosquitto did not open its port")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path).start()
    try:
        yield b
    finally:
        b.kill()


class Subscriber:
    """A real paho client that records every message (topic → list of payloads)."""

    def __init__(self, port: int, topics: Tuple[str, ...] = ("#",), **auth: str) -> None:
        import paho.mqtt.client as mqtt

        self.messages: Dict[str, List[str]] = {}
        self.retained: Dict[str, bool] = {}
        self.cond = threading.Condition()
        api = getattr(mqtt, "CallbackAPIVersion", None)
        self.client = mqtt.Client(api.VERSION2) if api is not None else mqtt.Client()
        if auth:
            self.client.username_pw_set(auth["username"], auth["password"])
        self.topics = topics
        self.client.on_connect = lambda c, *a: [c.subscribe(t, qos=1) for t in self.topics]
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self.cond:
            self.messages.setdefault(msg.topic, []).append(msg.payload.decode("utf-8"))
            self.retained[msg.topic] = msg.retain
            self.cond.notify_all()

    def wait(self, predicate: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                assert left > 0, f"not received: {what}; got {sorted(self.messages)}"
                self.cond.wait(left)

    def last(self, topic: str) -> Optional[str]:
        with self.cond:
            got = self.messages.get(topic)
            return got[-1] if got else None

    def has(self, topic: str, payload: Optional[str] = None) -> Callable[[], bool]:
        return lambda: topic in self.messages and (payload is None or self.messages[topic][-1] == payload)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Manual(Source):
    """A source driven by the test."""

    name = "manual"

    def __init__(self, stale_after: float = 0.0) -> None:
        super().__init__()
        self.stale_after = stale_after

    def start(self, emit, report) -> None:
        self.emit, self.report = emit, report

    def stop(self, timeout: float = 2.0) -> None:
        pass


def _pipeline(
    port: int, clock: Optional[Callable[[], float]] = None, stale_after: float = 0.0, **options: Any
) -> Tuple[Manual, MqttOutput, Pipeline]:
    src = Manual(stale_after)
    out = make_output("mqtt", host="127.0.0.1", port=str(port), prefix="test/dlms", reconnect_max="2", **options)
    assert isinstance(out, MqttOutput)
    pipe = Pipeline(src, [out], clock=clock or time.monotonic)
    pipe.start(ticker=False)
    return src, out, pipe


def d0_readout(name: str) -> MeterData:
    path = CORPUS / "d0" / name
    need(path.exists(), f"corpus file {path} (../shared/corpus)")
    return parse_readout(path.read_bytes(), use_checksum=False).to_meter_data()


def push_message(name: str) -> MeterData:
    from dlms_protocol.dlms.decoder import decode_bytes

    path = CORPUS / "push" / name
    need(path.exists(), f"corpus file {path} (../shared/corpus)")
    frame = load_json(path)
    keys = frame["keys"]
    cfg = ListenerConfig(port="corpus", key=keys["block_cipher_key"], auth_key=keys["authentication_key"])
    (msg,) = decode_bytes(bytes.fromhex(frame["hex"]), cfg)
    assert msg.ciphered and msg.tag_verified is True
    return msg.to_meter_data()


def render(template: str, payload: str) -> Any:
    """Home Assistant's view of a state message: the two templates the output writes."""
    value = json.loads(payload)["value"]
    if template == "{{ value_json.value }}":
        return value
    prefix, suffix = "{{ (value_json.value | float * ", ") | round(6) }}"
    assert template.startswith(prefix) and template.endswith(suffix), template
    return round(float(value) * float(template[len(prefix) : -len(suffix)]), 6)


def _check_every_entity(sub: Subscriber, data: MeterData, meter: str) -> Dict[str, dict]:
    """Every reading's two state topics, and every numeric reading's entity config and value."""
    enriched = enrich(data)
    configs: Dict[str, dict] = {}
    expected_entities = set()
    for key, r in keys_of(enriched):
        topic = f"test/dlms/{meter}/{key}"
        sub.wait(sub.has(topic + "/value"), topic)
        body = json.loads(sub.last(topic) or "")
        assert body["value"] == json_number(r.value) and body["unit"] == r.unit
        assert body["timestamp"].endswith("Z")
        assert body.get("derived", False) is r.derived
        assert sub.last(topic + "/value") == (
            body["value"] if isinstance(body["value"], str) else json.dumps(body["value"])
        )
        assert sub.retained[topic] or len(sub.messages[topic]) >= 1
        if r.numeric() is not None and not is_serial(r):
            expected_entities.add(topic)
    sub.wait(
        lambda: len([t for t in sub.messages if t.startswith("homeassistant/")]) >= len(expected_entities),
        "all discovery configs",
    )
    for ctopic, payloads in sub.messages.items():
        if not ctopic.startswith("homeassistant/"):
            continue
        config = json.loads(payloads[-1])
        assert config["default_entity_id"] == f"sensor.{meter.lower()}_{config['unique_id'].split('_', 2)[2]}"
        assert ctopic == f"homeassistant/sensor/mynode/{config['default_entity_id'][7:]}/config"
        assert "object_id" not in config  # deprecated in HA 2025.10
        configs[config["state_topic"]] = config
        assert config["availability_topic"] == "test/dlms/mynode/status"
        assert (config["payload_available"], config["payload_not_available"]) == ("online", "offline")
        state = sub.last(config["state_topic"])
        assert state is not None
        value = render(config["value_template"], state)
        assert isinstance(value, (int, float)) and not isinstance(value, bool)
    assert set(configs) == expected_entities
    assert len({c["unique_id"] for c in configs.values()}) == len(configs)
    devices = {json.dumps(c["device"], sort_keys=True) for c in configs.values()}
    assert len(devices) == 1  # one device per meter
    return configs


# ------------------------------------------------------------------------------ tests
class FirstConnectionDropped:
    """A TCP front of the broker that takes the first connection and closes it after ``hold``
    seconds without an answer (a broker restarting, a flaky link), then forwards the next ones."""

    def __init__(self, target: int, hold: float = 0.8) -> None:
        self.target, self.hold = target, hold
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.first_taken = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        first = True
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            if first:
                first = False
                self.first_taken.set()
                threading.Timer(self.hold, conn.close).start()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


def test_a_snapshot_before_the_first_connack_is_not_lost(broker: Broker) -> None:
    """A reading that arrives while the first connection attempt is still open is sent once the
    output is connected. paho took it (rc 0) and dropped it when that attempt failed, so a
    readout meter's first values were missing until its next reading (minutes later)."""
    front = FirstConnectionDropped(broker.port)
    sub = Subscriber(broker.port, ("test/dlms/#",))
    src = Manual()
    out = make_output("mqtt", host="127.0.0.1", port=str(front.port), prefix="test/dlms", node="early",
                      reconnect_max="1")
    pipe = Pipeline(src, [out], clock=time.monotonic)
    try:
        pipe.start(ticker=False)
        assert front.first_taken.wait(10)
        time.sleep(0.2)  # (paho has its socket and has sent CONNECT: the broker will never answer it)
        src.emit(d0_readout("landisgyr_e350_1.txt"))
        sub.wait(sub.has("test/dlms/early/status", "online"), "online after the second attempt")
        sub.wait(sub.has("test/dlms/18438636/1.8.0/value"), "the first reading's value")
    finally:
        pipe.stop()
        sub.close()
        front.close()


def test_d0_readout_every_entity_config_and_value(broker: Broker) -> None:
    data = d0_readout("landisgyr_e350_1.txt")
    sub = Subscriber(broker.port, ("test/dlms/#", "homeassistant/#"))
    src, out, pipe = _pipeline(broker.port, node="mynode")
    try:
        src.emit(data)
        sub.wait(sub.has("test/dlms/mynode/status", "online"), "online")
        configs = _check_every_entity(sub, data, "18438636")
        pipe.stop()
        sub.wait(sub.has("test/dlms/mynode/status", "offline"), "offline when stopped")  # no Last Will on a clean stop
    finally:
        pipe.stop()
        sub.close()
    energy = configs["test/dlms/18438636/1.8.0"]
    assert (energy["device_class"], energy["state_class"], energy["unit_of_measurement"]) == (
        "energy",
        "total_increasing",
        "kWh",
    )
    assert energy["name"] == "Active import (+A), energy"
    assert render(energy["value_template"], sub.last("test/dlms/18438636/1.8.0")) == 219.252
    volt = configs["test/dlms/18438636/32.7"]
    assert (volt["device_class"], volt["state_class"], volt["unit_of_measurement"]) == (
        "voltage",
        "measurement",
        "V",
    )
    power = configs["test/dlms/18438636/16.7"]
    assert (power["device_class"], power["state_class"], power["unit_of_measurement"]) == (
        "power",
        "measurement",
        "kW",
    )
    amps = configs["test/dlms/18438636/31.7"]
    assert amps["device_class"] == "current" and render(amps["value_template"], sub.last(amps["state_topic"])) == 2.3
    # a status word is hex text (F.F, 96.5.x): a state topic as sent, no entity to graph
    assert "test/dlms/18438636/96.5.0" not in configs
    assert sub.last("test/dlms/18438636/96.5.0/value") == "1420"  # (0x1420: never the number 1420)
    assert energy["device"] == {
        "identifiers": ["dlms_18438636"],
        "name": "LGZ ZMF100AC.M27",
        "manufacturer": "LGZ",
        "model": "ZMF100AC.M27",
        "serial_number": "18438636",
    }
    assert "test/dlms/18438636/96.1.0" not in configs  # the serial is the device's, not an entity
    assert sub.last("test/dlms/18438636/0.2.0/value") == "M27"  # text: a state topic, no entity
    assert out.counters["errors"] == 0 and pipe.stats.get("output_errors") == 0


def test_encrypted_push_every_entity_config_and_value(broker: Broker) -> None:
    data = push_message("at-lg-e450-burgenland-hdlc-glo30-positional.json")
    sub = Subscriber(broker.port, ("test/dlms/#", "homeassistant/#"))
    src, out, pipe = _pipeline(broker.port, node="mynode", meter="e450")
    try:
        src.emit(data)
        sub.wait(sub.has("test/dlms/mynode/status", "online"), "online")
        configs = _check_every_entity(sub, data, "e450")
    finally:
        pipe.stop()
        sub.close()
    by_code = {c["state_topic"].rsplit("/", 1)[1]: c for c in configs.values()}
    energy = by_code["1-0:1.8.0"]
    assert (energy["device_class"], energy["state_class"], energy["unit_of_measurement"]) == (
        "energy",
        "total_increasing",
        "Wh",
    )
    sent = enrich(data).get("1-0:1.8.0")
    assert sent is not None and render(energy["value_template"], sub.last(energy["state_topic"])) == json_number(
        sent.value
    )
    power = by_code["1-0:1.7.0"]
    assert (power["device_class"], power["state_class"], power["unit_of_measurement"]) == (
        "power",
        "measurement",
        "W",
    )
    net = by_code.get("1-0:16.7.0")
    if net is not None and enrich(data).get("1-0:16.7.0").derived:  # type: ignore[union-attr]
        assert json.loads(sub.last(net["state_topic"]) or "")["derived"] is True
        assert net["name"].endswith("(derived)")
    assert not [t for t in sub.messages if "index_10" in t]  # a raw number without scaler is no value
    assert sub.last("test/dlms/e450/index_13/value") == "30137181"
    device = energy["device"]
    assert device["manufacturer"] == "LGZ" and device["identifiers"] == ["dlms_e450"]
    assert out.counters["errors"] == 0


def _snapshot(import_kwh: str, power_w: str) -> MeterData:
    def r(code: str, value: str, unit: str) -> Reading:
        return Reading(code=code, obis=Obis.parse(code), value=Decimal(value), unit=unit)

    return MeterData(
        kind="push",
        readings=(r("1-0:1.8.0", import_kwh, "kWh"), r("1-0:1.7.0", power_w, "W")),
        meter_id="4C475A6772A9A111",
    )


def test_availability_follows_health_stale_is_offline_never_zero(broker: Broker) -> None:
    now = [1000.0]
    sub = Subscriber(broker.port, ("test/dlms/#",))
    src, out, pipe = _pipeline(broker.port, clock=lambda: now[0], stale_after=10.0, node="n1", meter="m1")
    status, power = "test/dlms/n1/status", "test/dlms/m1/1-0:1.7.0/value"
    try:
        sub.wait(sub.has(status, "offline"), "offline before any data")  # starting: not available yet
        src.emit(_snapshot("100.5", "1500"))
        sub.wait(sub.has(status, "online"), "online with data")
        sub.wait(sub.has(power, "1500"), "power")
        now[0] += 11
        pipe.tick()
        sub.wait(sub.has(status, "offline"), "offline when stale")
        assert pipe.health.state == Health.STALE
        src.report(Health(Health.ERROR, "port vanished: plug the IR head in again"))
        now[0] += 5
        pipe.tick()
        src.emit(_snapshot("100.6", "1400"))
        sub.wait(sub.has(status, "online"), "online again when data returns")
        sub.wait(sub.has(power, "1400"), "new power")
        pipe.stop()
        sub.wait(sub.has(status, "offline"), "offline when stopped")
    finally:
        pipe.stop()
        sub.close()
    assert sub.messages[power] == ["1500", "1400"]  # nothing was published in between: no 0, no repeat
    assert sub.messages[status][-1] == "offline"  # stopped
    states = sub.messages[status]
    assert states[:4] == ["offline", "online", "offline", "online"]


def _nameless(power_w: str) -> MeterData:
    """A push that names no meter (Kaifa's Norwegian list 1: power only, no id)."""
    return MeterData(kind="push", readings=(Reading(code="1-0:1.7.0", obis=Obis.parse("1-0:1.7.0"),
                                                    value=Decimal(power_w), unit="W"),))


def test_topics_wait_for_a_snapshot_that_names_the_meter(broker: Broker) -> None:
    """Named by the first snapshot, a Kaifa's topics and entities were 'meter' or its serial by
    whichever list came first after a start. Snapshots that name no meter are not published
    until one does (at most NAMELESS_WAIT); the serial names everything from then on."""
    sub = Subscriber(broker.port, ("test/dlms/#",))
    src, out, pipe = _pipeline(broker.port, node="n7")
    try:
        sub.wait(sub.has("test/dlms/n7/status", "offline"), "connected")
        src.emit(_nameless("700"))
        src.emit(_snapshot("100.5", "1500"))  # (list 2: the system title names it)
        sub.wait(sub.has("test/dlms/4C475A6772A9A111/1-0:1.7.0/value", "1500"), "power under the meter's name")
        src.emit(_nameless("800"))
        sub.wait(sub.has("test/dlms/4C475A6772A9A111/1-0:1.7.0/value", "800"), "the next list 1 under it too")
    finally:
        pipe.stop()
        sub.close()
    assert not any("/meter/" in topic or "/n7/1-0" in topic for topic in sub.messages), sorted(sub.messages)


def test_a_meter_without_serial_is_named_by_the_readers_node(broker: Broker, caplog: pytest.LogCaptureFixture
                                                                ) -> None:
    """Two heat meters of one model without a serial (Siemens 2WR6) shared their topics and Home
    Assistant ids, named by the model: values of both alternated in one entity. With a node (the
    plugin's instance) the meter is named by it; without one, by the model, and the log says why."""
    text = b"/SIE5WR6\r\n6.8(0029.055*MWh)\r\n6.26(01589.28*m3)\r\n!\r\n"
    readout = parse_readout(text, use_checksum=False).to_meter_data()
    sub = Subscriber(broker.port, ("test/dlms/#", "homeassistant/#"))
    src, out, pipe = _pipeline(broker.port, node="heat_a")
    src2, out2, pipe2 = _pipeline(broker.port)
    try:
        with caplog.at_level(logging.WARNING, logger="dlms_protocol.mqtt.output"):
            src.emit(readout)
            src2.emit(readout)
            sub.wait(sub.has("test/dlms/heat_a/6.8/value", "29.055"), "named by the node")
            sub.wait(sub.has("test/dlms/SIE5WR6/6.8/value", "29.055"), "named by the model")
    finally:
        pipe.stop()
        pipe2.stop()
        sub.close()
    ids = {json.loads(p[-1]).get("unique_id") for t, p in sub.messages.items() if t.endswith("/config")}
    assert {"dlms_heat_a_6_8", "dlms_sie5wr6_6_8"} <= ids
    assert [r.getMessage() for r in caplog.records].count(
        "mqtt: the meter sends no serial number, so its topics and Home Assistant entities are named 'SIE5WR6'; "
        "a second such meter on this broker would share them: give each reader its own node (INI [mqtt] node or "
        "meter, plugin: an instance or mqtt_node)") == 1


def test_broker_restarted_under_a_running_output(tmp_path: Path) -> None:
    broker = Broker(tmp_path).start()
    src, out, pipe = _pipeline(broker.port, node="n2", meter="m2")
    sub = Subscriber(broker.port, ("test/dlms/#", "homeassistant/#"))
    sent = {"100.5", "1500", "100.7", "900"}
    try:
        src.emit(_snapshot("100.5", "1500"))
        sub.wait(sub.has("test/dlms/m2/1-0:1.7.0/value", "1500"), "first value")
        sub.close()
        broker.kill()  # no persistence: the retained messages are gone with it
        src.emit(_snapshot("100.7", "900"))  # while the broker is down: must not block or crash
        assert pipe.stats.get("output_errors") == 0
        broker.start()  # same port
        sub = Subscriber(broker.port, ("test/dlms/#", "homeassistant/#"))
        sub.wait(sub.has("test/dlms/m2/1-0:1.7.0/value", "900"), "last real value republished (retained)")
        sub.wait(sub.has("test/dlms/n2/status", "online"), "online after reconnect")
        sub.wait(lambda: len([t for t in sub.messages if t.startswith("homeassistant/")]) == 2, "discovery again")
        assert out.counters["connects"] >= 2 and out.connected
        assert sub.last("test/dlms/m2/1-0:1.8.0/value") == "100.7"
        for topic, payloads in sub.messages.items():
            if topic.endswith("/value"):
                assert set(payloads) <= sent, (topic, payloads)  # nothing invented, no 0
        src.emit(_snapshot("100.8", "700"))
        sub.wait(sub.has("test/dlms/m2/1-0:1.7.0/value", "700"), "live again")
    finally:
        pipe.stop()
        sub.close()
        broker.kill()
    assert out.counters["errors"] == 0 and pipe.stats.get("output_errors") == 0


def test_username_password_from_a_password_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    broker = Broker(tmp_path, users={"meter": PASSWORD}).start()
    try:
        sub = Subscriber(broker.port, ("test/dlms/#",), username="meter", password=PASSWORD)
        src, out, pipe = _pipeline(broker.port, node="n3", meter="m3", username="meter", password=PASSWORD)
        src.emit(_snapshot("1.5", "15"))
        sub.wait(sub.has("test/dlms/m3/1-0:1.7.0/value", "15"), "value with credentials")
        pipe.stop()
        sub.close()
        src, bad, pipe = _pipeline(broker.port, node="n4", username="meter", password="wrong-" + PASSWORD)
        src.emit(_snapshot("1.6", "16"))  # refused: never crashes, nothing published
        deadline = time.monotonic() + WAIT
        while bad.last_error is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not bad.connected and "refused" in (bad.last_error or "")
        assert "(set)" == bad.cfg.effective()["password"] and PASSWORD not in repr(bad.cfg)
        assert PASSWORD not in json.dumps(bad.status())
        pipe.stop()
    finally:
        broker.kill()
    assert PASSWORD not in caplog.text


class _StuckClient:
    """A paho stand-in whose publish blocks until released (a hung network)."""

    def __init__(self, client_id: str) -> None:
        self.release = threading.Event()
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return lambda *a, **k: None

    def publish(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        self.release.wait(WAIT)
        return type("Info", (), {"rc": 0, "wait_for_publish": lambda self, t=None: True})()


def test_publish_never_waits_for_the_network() -> None:
    clients: List[_StuckClient] = []
    out = make_mqtt_output(client_factory=lambda cid: clients.append(_StuckClient(cid)) or clients[-1])
    out.start()
    try:
        for i in range(50):  # the worker is stuck on the first message; the source thread is not
            out.publish(_snapshot(f"{i}.0", str(i)))
        assert out.counters["dropped"] >= 1  # keep-latest hand-over, not an unbounded queue
    finally:
        clients[0].release.set()
        out.stop()


def test_min_interval_holds_back_and_delivers_the_latest_from_tick(broker: Broker) -> None:
    sub = Subscriber(broker.port, ("test/dlms/#",))
    src, out, pipe = _pipeline(broker.port, node="n5", meter="m5", min_interval="60")
    t = [0.0]
    out._limit = KeepLatest(60.0, clock=lambda: t[0])
    try:
        src.emit(_snapshot("1.0", "10"))
        sub.wait(sub.has("test/dlms/m5/1-0:1.7.0/value", "10"), "first")
        t[0] = 1
        src.emit(_snapshot("1.1", "11"))
        src.emit(_snapshot("1.2", "12"))
        t[0] = 61
        pipe.tick()
        sub.wait(sub.has("test/dlms/m5/1-0:1.7.0/value", "12"), "latest after the interval")
    finally:
        pipe.stop()
        sub.close()
    assert sub.messages["test/dlms/m5/1-0:1.7.0/value"] == ["10", "12"]


def _certificates(folder: Path, name: str) -> Tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1/localhost signed by it (PEM files)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def key_pem(key: Any) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )

    now = dt.datetime.now(dt.timezone.utc)
    ca_key, srv_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"dlms test CA {name}")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    srv = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(srv_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / f"{name}-ca.pem", folder / f"{name}-server.pem", folder / f"{name}-server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(srv.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key_pem(srv_key))
    return paths


def test_tls_with_the_brokers_ca_and_certificate_checks_on(tmp_path: Path) -> None:
    ca, cert, key = _certificates(tmp_path, "good")
    other_ca, _, _ = _certificates(tmp_path, "other")
    broker = Broker(tmp_path)
    broker.extra = [f"cafile {ca}", f"certfile {cert}", f"keyfile {key}"]
    broker.start()
    try:
        src, out, pipe = _pipeline(broker.port, node="n6", meter="m6", tls="yes", ca_file=str(ca))
        src.emit(_snapshot("2.5", "25"))
        deadline = time.monotonic() + WAIT
        while out.counters["snapshots"] < 1 or not out.connected:
            assert time.monotonic() < deadline, out.status()
            time.sleep(0.05)
        pipe.stop()
        src, wrong, pipe = _pipeline(broker.port, node="n7", tls="yes", ca_file=str(other_ca))
        src.emit(_snapshot("2.6", "26"))  # a certificate from an unknown CA: no connection, no crash
        deadline = time.monotonic() + WAIT
        while wrong.last_error is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not wrong.connected and wrong.counters["connects"] == 0
        assert "cannot reach" in (wrong.last_error or "")
        pipe.stop()
    finally:
        broker.kill()


@pytest.mark.slow
def test_scheduled_d0_readout_over_a_pty_reaches_mqtt(broker: Broker) -> None:
    """A real readout source (simulated meter on a pty) → pipeline → MQTT, next to another output."""
    from dlms_protocol.config import ReadoutConfig
    from dlms_protocol.simulator.d0 import SimulatedMeter

    sub = Subscriber(broker.port, ("test/dlms/#", "homeassistant/#"))
    rec = Recorder()
    with SimulatedMeter("lgz_e350", time_scale=10.0, reaction_time=0.5, ack_reaction_time=1.0, switch_grace=1.0) as m:
        cfg = ReadoutConfig(port=m.port, timeout=1.0, baud_switch_delay=0.05)
        src = make_source("readout", config=cfg, cycle=0.0, reader_options={"time_scale": 10.0})
        out = make_output("mqtt", host="127.0.0.1", port=broker.port, prefix="test/dlms", node="mynode")
        pipe = Pipeline(src, [rec, out])
        pipe.start()
        try:
            assert src.read_once()
            (data,) = rec.data
            sub.wait(sub.has("test/dlms/mynode/status", "online"), "online")
            # the output names the meter when its own thread has taken the snapshot, which under
            # load can come after "online": wait for it rather than read it too early
            deadline = time.monotonic() + WAIT
            while out.status()["meter"] is None and time.monotonic() < deadline:
                time.sleep(0.02)
            meter = out.status()["meter"]
            assert meter is not None, "the MQTT output never took the readout"
            _check_every_entity(sub, data, meter)
        finally:
            pipe.stop()
            sub.close()
    assert pipe.stats.get("output_errors") == 0 and out.counters["errors"] == 0


def test_broker_not_there_at_start_gets_the_values_once_it_is(tmp_path: Path) -> None:
    """Data that came before the first connection is sent when it comes (the real values, once)."""
    port = _free_port()
    src, out, pipe = _pipeline(port, node="n8", meter="m8")
    try:
        src.emit(_snapshot("7.5", "75"))
        deadline = time.monotonic() + WAIT
        while out.last_error is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "cannot reach" in (out.last_error or "") and not out.connected
        broker = Broker(tmp_path, port=port).start()
        try:
            sub = Subscriber(broker.port, ("test/dlms/#", "homeassistant/#"))
            sub.wait(sub.has("test/dlms/m8/1-0:1.7.0/value", "75"), "the value from before the connection")
            sub.wait(sub.has("test/dlms/n8/status", "online"), "online")
            assert sub.messages["test/dlms/m8/1-0:1.8.0/value"] == ["7.5"]
            assert out.last_error is None
            sub.client.publish("homeassistant/status", "online")  # Home Assistant restarted
            sub.wait(
                lambda: all(len(p) >= 2 for t, p in sub.messages.items() if t.startswith("homeassistant/sensor/")),
                "discovery sent again for Home Assistant",
            )
            sub.close()
        finally:
            pipe.stop()
            broker.kill()
    finally:
        pipe.stop()
