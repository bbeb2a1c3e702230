"""The MQTT output: every verified reading to a broker, with availability and Home Assistant discovery.

Why a worker thread: ``publish`` is called from the source's thread (a serial reader, the push
listener), which must never wait for a network. ``publish`` only hands the snapshot over
(keeping the latest when the broker is slower than the meter) and returns; a worker turns it
into messages and paho's own network thread sends them and reconnects (``reconnect_delay_set``).

What is sent is described in ``discovery.py``. Availability follows the source's health: the
status topic says ``online`` only while the source is ``ok`` and ``offline`` when it is stale,
failing or stopped (and, as Last Will, when this process dies): a dead meter is unavailable
in Home Assistant, never 0. After a reconnect only what was really sent before is sent again
(availability, discovery, and the last real values when they are retained).

paho-mqtt 1.x and 2.x both work: ``CallbackAPIVersion`` exists only in 2.x, and the callbacks
below accept both signatures.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple

from ..errors import ConfigurationError
from ..model import MeterData, Reading
from ..pipeline import Health, KeepLatest, Output
from .discovery import (
    channel_types,
    device_block,
    discovery_config,
    identity,
    keys_of,
    meter_name,
    slug,
    state_payloads,
    topic_level,
)

log = logging.getLogger(__name__)

#: snapshots that name no meter (neither serial nor id) waited for one that does, before the
#: topics are named without it (MqttOutput._name_for); Kaifa's list 2 names the meter every
#: 10 s, its list 1 comes every 2 s
NAMELESS_WAIT = 10

ONLINE, OFFLINE = "online", "offline"


@dataclass
class MqttConfig:
    """Options of the MQTT output (see ``make_mqtt_output`` for their string forms and ranges)."""

    host: str = "localhost"
    port: int = 1883
    tls: bool = False
    ca_file: Optional[str] = None
    tls_insecure: bool = False
    username: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)
    client_id: Optional[str] = None
    prefix: str = "dlms"
    node: Optional[str] = None
    meter: Optional[str] = None
    discovery: bool = True
    discovery_prefix: str = "homeassistant"
    retain: bool = True
    qos: int = 0
    min_interval: float = 0.0
    keepalive: int = 60
    reconnect_max: int = 60
    language: str = "en"

    @property
    def node_name(self) -> str:
        """This reader's name on the broker (status topic, discovery node id)."""
        return topic_level(self.node or self.meter or "dlms", 48)

    @property
    def status_topic(self) -> str:
        return f"{self.prefix}/{self.node_name}/status"

    def effective(self) -> Dict[str, Any]:
        """The settings for ``--check-config`` and status pages; the password only as set/not set."""
        shown = {k: v for k, v in self.__dict__.items() if k != "password"}
        shown["password"] = "(set)" if self.password else None
        shown["status_topic"] = self.status_topic
        return shown


def _new_client(client_id: str) -> Any:
    """A paho client with the version-2 callback API when paho has it (2.x), else 1.x."""
    import paho.mqtt.client as mqtt

    api = getattr(mqtt, "CallbackAPIVersion", None)
    if api is not None:
        return mqtt.Client(api.VERSION2, client_id=client_id, clean_session=True)
    return mqtt.Client(client_id=client_id, clean_session=True)


def _reason(rc: Any) -> str:
    """A reason code as text (paho 2.x ReasonCode, or the 1.x int)."""
    if isinstance(rc, int):
        try:
            import paho.mqtt.client as mqtt

            return f"{mqtt.connack_string(rc)} ({rc})"
        except Exception:  # only for the message text
            return str(rc)
    return str(rc)


def _failed(rc: Any) -> bool:
    failure = getattr(rc, "is_failure", None)
    return bool(failure) if failure is not None else rc != 0


class MqttOutput(Output):
    """Publishes each enriched ``MeterData`` (rate-limited by ``min_interval``) and the source's health."""

    name = "mqtt"

    def __init__(self, config: MqttConfig, *, client_factory: Callable[[str], Any] = _new_client) -> None:
        self.cfg = config
        self._client_factory = client_factory
        self._client: Any = None
        self._limit = KeepLatest(config.min_interval)
        self._cond = threading.Condition()
        self._pending: Optional[MeterData] = None
        self._health = Health(Health.STARTING)
        self._health_dirty = False
        self._resync = False
        self._stopping = False
        self._worker: Optional[threading.Thread] = None
        self.connected = False
        self._availability: Optional[str] = None
        self._meter: Optional[str] = config.meter and topic_level(config.meter, 48)
        self._nameless = 0  # snapshots that named no meter, before the first that did (``_name_for``)
        self._device: Optional[Dict[str, Any]] = None
        self._states: Dict[str, str] = {}  # topic -> last real payload (republished when retained)
        self._configs: Dict[str, str] = {}  # discovery topic -> config payload
        self._known: Set[str] = set()
        self._unsent: Set[str] = set()  # topics whose last value could not be handed to paho
        self.counters: Dict[str, int] = {
            "connects": 0,
            "disconnects": 0,
            "snapshots": 0,
            "messages": 0,
            "not_sent": 0,
            "dropped": 0,
            "errors": 0,
        }
        self.last_error: Optional[str] = None

    # ------------------------------------------------------------------ Output interface
    def start(self) -> None:
        """Connect in the background (paho's loop retries until the broker answers) and start the worker."""
        cfg = self.cfg
        client = self._client_factory(cfg.client_id or f"dlms-{cfg.node_name}-{os.getpid()}")
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        if hasattr(client, "on_connect_fail"):
            client.on_connect_fail = self._on_connect_fail
        if cfg.username:
            client.username_pw_set(cfg.username, cfg.password)
        if cfg.tls:
            client.tls_set(
                ca_certs=cfg.ca_file or None,
                cert_reqs=ssl.CERT_NONE if cfg.tls_insecure else ssl.CERT_REQUIRED,
            )
            if cfg.tls_insecure:
                client.tls_insecure_set(True)
        client.will_set(cfg.status_topic, OFFLINE, qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=cfg.reconnect_max)
        client.max_queued_messages_set(1000)
        self._client = client
        self._stopping = False
        self._worker = threading.Thread(target=self._run, name=f"dlms-mqtt {cfg.host}:{cfg.port}", daemon=True)
        self._worker.start()
        client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive)
        client.loop_start()

    def publish(self, data: MeterData) -> None:
        """Hand the snapshot to the worker; never waits for the network."""
        ready = self._limit.offer(data)
        if ready is not None:
            self._hand_over(ready)

    def tick(self, now: float) -> None:
        held = self._limit.due()
        if held is not None:
            self._hand_over(held)

    def publish_health(self, health: Health) -> None:
        with self._cond:
            self._health = health
            self._health_dirty = True
            self._cond.notify()

    def stop(self, timeout: float = 2.0) -> None:
        """Say ``offline`` (a clean disconnect fires no Last Will), then disconnect within ``timeout``."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._worker is not None:
            self._worker.join(timeout / 2)
        client, self._client = self._client, None
        if client is None:
            return
        try:
            if self.connected:
                info = client.publish(self.cfg.status_topic, OFFLINE, qos=1, retain=True)
                info.wait_for_publish(timeout / 2)
            client.disconnect()
        except Exception as exc:  # stopping goes on whatever the network does
            log.debug("mqtt: disconnect: %s", exc)
        finally:
            client.loop_stop()
            self.connected = False

    def status(self) -> Dict[str, Any]:
        return {
            "connected": self.connected,
            "broker": f"{self.cfg.host}:{self.cfg.port}",
            "status_topic": self.cfg.status_topic,
            "meter": self._meter,
            "entities": len(self._configs),
            "last_error": self.last_error,
            **self.counters,
            "held_back": self._limit.dropped,
        }

    # ------------------------------------------------------------------ worker
    def _hand_over(self, data: MeterData) -> None:
        with self._cond:
            if self._pending is not None:
                self.counters["dropped"] += 1
            self._pending = data
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._stopping or self._pending is not None or self._health_dirty or self._resync):
                    self._cond.wait()
                if self._stopping:
                    return
                data, self._pending = self._pending, None
                health_dirty, self._health_dirty = self._health_dirty, False
                resync, self._resync = self._resync, False
                health = self._health
            try:
                if resync:
                    self._republish(health)
                elif health_dirty:
                    self._send_availability(health)
                if data is not None:
                    self.deliver(data)
            except Exception as exc:  # a bug here must not end the worker
                self.counters["errors"] += 1
                self.last_error = f"publishing failed: {exc}"
                log.exception("mqtt: publishing failed")

    def deliver(self, data: MeterData) -> None:
        """Turn one snapshot into state (and, for new readings, discovery) messages and send them."""
        cfg = self.cfg
        if self._meter is None:
            self._meter = self._name_for(data)
            if self._meter is None:
                return  # (no topic yet: see _name_for)
        if self._device is None:
            self._device = device_block(self._meter, identity(data))
        base = f"{cfg.prefix}/{self._meter}"
        states = self._states
        messages: List[Tuple[str, str]] = []
        channels: Optional[Dict[int, int]] = None  # (M-Bus device types: only when announcing, which is rare)
        for key, reading in keys_of(data):
            topic = f"{base}/{key}"
            if cfg.discovery and topic not in self._known:
                channels = channel_types(data) if channels is None else channels
                code = reading.obis
                self._announce(topic, key, reading, channels.get(code.b) if code is not None and code.b else None)
            body, plain = state_payloads(reading, data)
            value_topic = topic + "/value"
            states[topic] = body
            states[value_topic] = plain
            messages.append((topic, body))
            messages.append((value_topic, plain))
        self._send_all(messages)
        self.counters["snapshots"] += 1

    def _name_for(self, data: MeterData) -> Optional[str]:
        """The meter's name in every topic and Home Assistant id, fixed by the first snapshot that
        names the meter; None while snapshots name none (the first ``NAMELESS_WAIT``).

        Why wait: Kaifa's Norwegian list 1 (power only, every 2 s) names no meter, its list 2 (every
        10 s) does; named by whichever came first, the entities changed with every restart. A meter
        without a serial number is named by the reader's node (``node``; the plugin's instance)
        when one is set, else by its model: two meters of one model would share their topics and
        entities, which the log says once."""
        ident = identity(data)
        if ident.serial is None and data.meter_id is None and self._nameless < NAMELESS_WAIT:
            self._nameless += 1
            return None
        # (a D0 readout's id is its identification line: the model, the same for every such meter)
        unique = ident.serial is not None or (data.meter_id is not None and data.kind != "readout")
        if not unique and self.cfg.node:
            return topic_level(self.cfg.node, 48)
        name = meter_name(data)
        if not unique:
            log.warning("mqtt: the meter sends no serial number, so its topics and Home Assistant entities are named "
                        "%r; a second such meter on this broker would share them: give each reader its own node "
                        "(INI [mqtt] node or meter, plugin: an instance or mqtt_node)", name)
        return name

    def _announce(self, topic: str, key: str, reading: Reading, device_type: Optional[int] = None) -> None:
        """The Home Assistant config of a reading seen for the first time (none for text values)."""
        cfg = self.cfg
        self._known.add(topic)
        config = discovery_config(
            reading,
            key,
            meter=self._meter or "meter",
            state_topic=topic,
            availability_topic=cfg.status_topic,
            device=self._device or {},
            language=cfg.language,
            device_type=device_type,
        )
        if config is None:
            return
        obj = config["default_entity_id"].split(".", 1)[1]
        ctopic = f"{cfg.discovery_prefix}/sensor/{slug(cfg.node_name)}/{obj}/config"
        payload = json.dumps(config, separators=(",", ":"), ensure_ascii=False)
        self._configs[ctopic] = payload
        self._send(ctopic, payload, retain=True)

    def _send_availability(self, health: Health, again: bool = False) -> None:
        """``online`` only while the source is ok; a change of cause alone sends nothing new."""
        state = ONLINE if health.ok else OFFLINE
        if state != self._availability or again:
            self._availability = state
            self._send(self.cfg.status_topic, state, retain=True)

    def _republish(self, health: Health) -> None:
        """After (re)connecting: availability, discovery, and the last values not sent yet.

        On a reconnect the broker may have lost its retained messages (restarted without
        persistence), so with retain every last value goes out again; otherwise only those
        that could not be sent before. Nothing but values the meter sent is ever sent.
        """
        self._send_availability(health, again=True)
        for topic, payload in list(self._configs.items()):
            self._send(topic, payload, retain=True)
        again = self.cfg.retain and self.counters["connects"] > 1
        for topic, payload in list(self._states.items()):
            if again or topic in self._unsent:
                self._send(topic, payload)

    def _send(self, topic: str, payload: str, retain: Optional[bool] = None) -> None:
        self._send_all(((topic, payload),), retain)

    def _send_all(self, messages: Iterable[Tuple[str, str]], retain: Optional[bool] = None) -> None:
        """Hand messages to paho (only the worker sends; stop()'s last word goes to paho directly)."""
        client = self._client
        if client is None:
            return
        qos, keep = self.cfg.qos, self.cfg.retain if retain is None else retain
        unsent, sent, failed = self._unsent, 0, 0
        # before the broker's CONNACK paho may take a QoS 0 message (rc 0) and then drop it when
        # its connection attempt starts or fails: the first snapshot of a readout meter was lost
        # until the next reading. Until connected, messages wait for _republish.
        up = self.connected
        for topic, payload in messages:
            if up and client.publish(topic, payload, qos=qos, retain=keep).rc == 0:
                sent += 1
                if unsent:
                    unsent.discard(topic)
            else:  # not connected (QoS 0): the next snapshot, or the republish after reconnecting, brings it
                failed += 1
                unsent.add(topic)
        self.counters["messages"] += sent
        self.counters["not_sent"] += failed

    # ------------------------------------------------------------------ paho callbacks (network thread)
    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, properties: Any = None) -> None:
        if _failed(rc):
            error = (
                f"the broker {self.cfg.host}:{self.cfg.port} refused the connection: {_reason(rc)}; "
                "check username/password and the broker's ACL"
            )
            if error != self.last_error:  # paho retries; say it once, not on every retry
                log.warning("mqtt: %s", error)
            self.last_error = error
            return
        self.connected = True
        self.last_error = None
        self.counters["connects"] += 1
        log.info("mqtt: connected to %s:%s", self.cfg.host, self.cfg.port)
        if self.cfg.discovery:
            client.subscribe(f"{self.cfg.discovery_prefix}/status")
        with self._cond:
            self._resync = True
            self._cond.notify()

    def _on_disconnect(self, client: Any, userdata: Any, *args: Any) -> None:
        rc = args[1] if len(args) >= 2 else (args[0] if args else 0)
        was = self.connected
        self.connected = False
        if self._stopping or self._client is None:
            return
        if was:
            self.counters["disconnects"] += 1
            self.last_error = f"lost the connection to {self.cfg.host}:{self.cfg.port} ({_reason(rc)}); reconnecting"
            log.warning("mqtt: %s", self.last_error)

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        if self.last_error is None or "cannot reach" not in self.last_error:
            log.warning(
                "mqtt: cannot reach the broker %s:%s; retrying (check host, port and TLS settings)",
                self.cfg.host,
                self.cfg.port,
            )
        self.last_error = f"cannot reach the broker {self.cfg.host}:{self.cfg.port}; retrying"

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        """Home Assistant says ``online`` on its status topic when it starts: send discovery again."""
        if message.topic == f"{self.cfg.discovery_prefix}/status" and message.payload == b"online":
            with self._cond:
                self._resync = True
                self._cond.notify()


# ---------------------------------------------------------------------- options
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigurationError(f"mqtt option {name}={value!r} is no yes/no value", "write yes or no (true/false, 1/0)")


def _as_number(name: str, value: Any, low: float, high: float, kind: type = int) -> Any:
    try:
        number = kind(str(value).strip()) if isinstance(value, str) else kind(value)
        if isinstance(value, float) and kind is int and value != int(value):
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"mqtt option {name}={value!r} is no {'whole ' if kind is int else ''}number",
            f"use a value from {low:g} to {high:g}",
        ) from None
    if not low <= number <= high:
        raise ConfigurationError(
            f"mqtt option {name}={value!r} is out of range", f"use a value from {low:g} to {high:g}"
        )
    return number


def _as_topic(name: str, value: Any) -> str:
    text = str(value).strip().strip("/")
    if not text or len(text) > 100 or any(c in text for c in "+#\x00") or "//" in text:
        raise ConfigurationError(
            f"mqtt option {name}={value!r} is no usable topic prefix",
            "use letters, digits, '_', '-' and '/' between levels (no + or #), at most 100 characters",
        )
    return text


def _as_text(name: str, value: Any) -> Optional[str]:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


_PARSERS: Dict[str, Callable[[str, Any], Any]] = {
    "host": lambda n, v: _as_text(n, v) or "localhost",
    "port": lambda n, v: _as_number(n, v, 1, 65535),
    "tls": _as_bool,
    "ca_file": _as_text,
    "tls_insecure": _as_bool,
    "username": _as_text,
    "password": lambda n, v: None if v is None or str(v) == "" else str(v),
    "client_id": _as_text,
    "prefix": _as_topic,
    "node": _as_text,
    "meter": _as_text,
    "discovery": _as_bool,
    "discovery_prefix": _as_topic,
    "retain": _as_bool,
    "qos": lambda n, v: _as_number(n, v, 0, 2),
    "min_interval": lambda n, v: _as_number(n, v, 0, 86400, float),
    "keepalive": lambda n, v: _as_number(n, v, 5, 3600),
    "reconnect_max": lambda n, v: _as_number(n, v, 1, 3600),
    "language": lambda n, v: _as_language(v),
}


#: every option ``make_mqtt_output`` takes (for INI sections and plugin parameters ``mqtt_<name>``)
OPTION_NAMES = tuple(_PARSERS)


def _as_language(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in ("en", "de"):
        raise ConfigurationError(f"mqtt option language={value!r} is not supported", "use en or de")
    return text


def parse_options(**options: Any) -> MqttConfig:
    """Plain option values (INI strings allowed) → MqttConfig; ConfigurationError names the option."""
    values: Dict[str, Any] = {}
    for name, value in options.items():
        parser = _PARSERS.get(name)
        if parser is None:
            raise ConfigurationError(f"unknown mqtt option {name!r}", "known options: " + ", ".join(sorted(_PARSERS)))
        if value is None or (isinstance(value, str) and not value.strip()):
            continue  # empty (an unset INI key or plugin parameter): the default
        values[name] = parser(name, value)
    cfg = MqttConfig(**values)
    if cfg.ca_file and not os.path.isfile(cfg.ca_file):
        raise ConfigurationError(
            f"mqtt option ca_file={cfg.ca_file!r}: no such file",
            "give the path of the CA certificate (PEM) that signed the broker's certificate",
        )
    if cfg.ca_file and not cfg.tls:
        raise ConfigurationError("mqtt option ca_file is set but tls is off", "set tls = yes (and usually port = 8883)")
    if cfg.password and not cfg.username:
        raise ConfigurationError("mqtt option password is set without username", "set username as well")
    if cfg.meter is not None and topic_level(cfg.meter, 48) != cfg.meter:
        raise ConfigurationError(
            f"mqtt option meter={cfg.meter!r} is no single topic level", "use letters, digits, '_', '-' and '.' only"
        )
    if cfg.node is not None and topic_level(cfg.node, 48) != cfg.node:
        raise ConfigurationError(
            f"mqtt option node={cfg.node!r} is no single topic level",
            "use letters, digits, '_', '-' and '.' only",
        )
    return cfg


def make_mqtt_output(**options: Any) -> MqttOutput:
    """The ``"mqtt"`` entry of ``pipeline.OUTPUTS``: options as keywords (strings from INI allowed)."""
    client_factory = options.pop("client_factory", None)
    cfg = parse_options(**options)
    if client_factory is not None:
        return MqttOutput(cfg, client_factory=client_factory)
    if importlib.util.find_spec("paho") is None:
        raise ConfigurationError(
            "MQTT is configured but paho-mqtt is not installed",
            "install it (pip install paho-mqtt, or the package python3-paho-mqtt) or switch MQTT off",
        )
    return MqttOutput(cfg)


__all__ = ["MqttConfig", "MqttOutput", "make_mqtt_output", "parse_options", "OPTION_NAMES", "ONLINE", "OFFLINE"]
