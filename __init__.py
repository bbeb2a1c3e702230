#!/usr/bin/env python3
# vim: set encoding=utf-8 tabstop=4 softtabstop=4 shiftwidth=4 expandtab
#########################################################################
#  This file is part of SmartHomeNG.
#  https://www.smarthomeNG.de
#
#  dlms plugin: reads smart meters through an optical head (IEC 62056-21)
#  or listens to DLMS/COSEM push messages, and writes verified values
#  into items.
#
#  SmartHomeNG is free software: you can redistribute it and/or modify
#  it under the terms of the GNU General Public License as published by
#  the Free Software Foundation, either version 3 of the License, or
#  (at your option) any later version.
#
#  SmartHomeNG is distributed in the hope that it will be useful,
#  but WITHOUT ANY WARRANTY; without even the implied warranty of
#  MERCHANTABILITY or FITNESS FOR A PARTICULAR PURPOSE.  See the
#  GNU General Public License for more details.
#
#  You should have received a copy of the GNU General Public License
#  along with SmartHomeNG. If not, see <http://www.gnu.org/licenses/>.
#########################################################################
"""SmartHomeNG plugin ``dlms``: the thin adapter between dlms_protocol and items.

All protocol work happens in ``dlms_protocol`` (no SmartHomeNG inside); this class only
assembles a pipeline from the parameters: a source (``readout``: a D0 meter read when the
SmartHomeNG scheduler says so; ``listen``: DLMS push) and its outputs (the items, the web
interface's chart history, optionally the Victron D-Bus meter). Every output gets every
verified snapshot the same way, whatever the source. On any error the items keep their last
value and the status items say why.
"""
from __future__ import annotations

import datetime
import json
import logging
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

try:
    from lib.model.smartplugin import SmartPlugin
    IN_SMARTHOMENG = True
except ModuleNotFoundError as _exc:
    # Imported outside SmartHomeNG: pytest imports the repository root as a package before it
    # collects tests/. The class below is then inert; everything else must stay importable.
    if _exc.name not in ("lib", "lib.model", "lib.model.smartplugin"):
        raise
    SmartPlugin = object  # type: ignore[misc,assignment]
    IN_SMARTHOMENG = False

if IN_SMARTHOMENG:
    from .webif import WebInterface
if __package__:  # pytest imports this file as a plain module when the checkout's folder name is no identifier
    from . import plugin_support as ps
    from .dlms_protocol.config import ListenerConfig, ReadoutConfig, listen_line, parse_key
    from .dlms_protocol.errors import ConfigurationError, DlmsError, TransportError
    from .dlms_protocol.model import MeterData, Statistics
    from .dlms_protocol.obis import Obis
    from .dlms_protocol.pipeline import Health, KeepLatest, Output, Pipeline, Source, make_output, make_source
else:  # only so the class statement below can be evaluated
    Output = object  # type: ignore[misc,assignment]

#: the parameters the web interface lists per mode (each mode's own: a poll meter has no querycode)
CONFIG_ROWS = {
    "listen": ("protocol", "listen_baudrate", "listen_format", "wrapper", "security", "profile", "min_update_interval",
               "listen_timeout"),
    "poll": ("poll_mode_e", "baudrate", "update_cycle", "update_crontab", "client_address", "logical_address",
             "physical_address", "address_size", "authentication", "system_title", "poll_obis", "poll_profiles",
             "poll_state_file", "timeout"),
    "readout": ("baudrate", "update_cycle", "update_crontab", "use_checksum", "reset_baudrate", "no_waiting",
                "only_listen", "device_address", "querycode", "timeout", "baud_switch_delay", "wakeup"),
}
#: and those it only says are set or not
SECRET_ROWS = {"listen": ("key", "auth_key"), "poll": ("password", "key", "auth_key")}

#: attributes this plugin reads from items
ATTR_CODE = "dlms_obis_code"
ATTR_READOUT = "dlms_obis_readout"
ATTR_STATUS = "dlms_status"
ATTR_PROFILE = "dlms_profile"
ATTR_UNIT = "dlms_unit"
ATTR_SCALE = "dlms_scale"

HISTORY_SECONDS = 3600.0
REPEAT_LOG_INTERVAL = 600.0  # seconds between two log lines about the same repeating problem
STOP_BUDGET = 1.6  # seconds stop() may spend waiting, so it returns well within 2 s


class DLMS(SmartPlugin):
    """Smart meter via IEC 62056-21 readout (``mode: readout``), DLMS/COSEM push (``mode: listen``) or
    DLMS/COSEM polling (``mode: poll``)."""

    PLUGIN_VERSION = "2.0.0"

    def __init__(self, sh):
        """Read and check the parameters; nothing is opened before run()."""
        super().__init__()
        self._pause_item_path = self.get_parameter_value("pause_item") or ""

        self._mode = (self.get_parameter_value("mode") or "readout").lower()
        self._port = str(self.get_parameter_value("serialport") or "").strip()
        self._stats = Statistics()
        self._status: Dict[str, Any] = {
            "connected": False, "last_success": None, "last_error": "", "last_error_time": None,
            "successes": 0, "failures": 0, "duration": None, "overlaps": 0,
        }
        self._status_lock = threading.Lock()
        self._life_lock = threading.RLock()
        self._read_lock = threading.Lock()
        self._read_started = 0.0
        #: how long the last readout that delivered data took (s): the advice on an overlap goes by it,
        #: not by a failed attempt's (a missing port fails at once)
        self._complete_duration: Optional[float] = None
        self._generation = 0
        self._pipeline: Optional[Pipeline] = None
        self._source: Optional[Source] = None
        self._victron: Any = None
        self._mqtt: Any = None
        self._readout_config: Optional[ReadoutConfig] = None
        self._listener_config: Optional[ListenerConfig] = None
        self._poll_config: Any = None  # mode poll: dlms_protocol.poll.config.PollConfig
        self._protocol = "auto"
        self._quirks: Optional[Dict[str, str]] = None
        #: listen with protocol auto and no line named: the line settings to try in turn
        self._search: Tuple[Tuple[int, str], ...] = ()

        self._obis_items: Dict[str, Tuple[Any, ps.ObisBinding]] = {}
        self._readout_items: Dict[str, Any] = {}
        self._status_items: Dict[str, Tuple[Any, str]] = {}
        self._profile_items: Dict[str, Tuple[Any, Any]] = {}  # path -> (item, Obis of the load profile)
        self._item_problems: Dict[str, str] = {}
        self._logged: Dict[str, str] = {}
        self._repeats = ps.RepeatLimiter(REPEAT_LOG_INTERVAL)

        self._last_data: Optional[MeterData] = None
        self._history = ps.ChartHistory(HISTORY_SECONDS)
        self._discovery_logged = False
        self._last_status_write = 0.0
        #: extra keyword arguments for D0Reader (tests pass time_scale for fast simulated meters)
        self._reader_options: Dict[str, Any] = {}
        self._run_epoch = time.time()
        self._min_interval = float(self.get_parameter_value("min_update_interval") or 0)
        self._listen_timeout = float(self.get_parameter_value("listen_timeout") or 60)
        self._cycle = int(self.get_parameter_value("update_cycle") or 0)
        self._crontab = str(self.get_parameter_value("update_crontab") or "").strip()
        self._start_offset = int(self.get_parameter_value("update_cycle_start_offset") or 0)
        #: a push-only D0 meter (readout with only_listen): read every telegram, but the items get the
        #: newest one at the update_cycle/update_crontab times, as dlms 1.9.5 and smarthome.py did
        self._only_listen = self._mode == "readout" and bool(self.get_parameter_value("only_listen"))
        self._items: Optional[_ItemsOutput] = None

        if not self._port:
            self.logger.error("serialport is empty: set it to the device of the IR head or RS485 adapter, "
                              "e.g. /dev/serial/by-id/usb-...; plugin not started")
            self._init_complete = False
            return
        try:
            if self._mode == "listen":
                # SML, DLMS push or push-only D0 (auto: by checksum)
                self._protocol = str(self.get_parameter_value("protocol") or "auto").lower()
                self._listener_config = self._make_listener_config()
                from .dlms_protocol.sml.decoder import parse_quirks
                from .dlms_protocol.sml import source as stream  # (missing packages show now)
                if self._protocol == "auto" and not self.get_parameter_value("listen_baudrate") \
                        and not str(self.get_parameter_value("listen_format") or "").strip():
                    self._search = stream.usual_lines()  # nothing named: the listener finds the line
                self._quirks = parse_quirks(self.get_parameter_value("sml_quirks") or "")
            elif self._mode == "poll":
                self._poll_config = self._make_poll_config()
            else:
                self._readout_config = self._make_readout_config()
                from .dlms_protocol.iec62056_21.client import check_request_options
                check_request_options(self._readout_config)  # a typo stops the start, not every read
        except (ConfigurationError, ps.BindingError) as exc:
            self.logger.error("configuration error: %s; plugin not started", exc)
            self._init_complete = False
            return
        except ImportError as exc:
            self.logger.error("cannot load the %s part of dlms_protocol (%s): install the packages from "
                              "plugins/dlms/requirements.txt (pyserial, gurux-dlms, cryptography); plugin not started",
                              self._mode, exc)
            self._init_complete = False
            return
        if self._only_listen:
            self.logger.info("the meter sends on its own: every telegram is read; the items get %s",
                             "every telegram (update_cycle 0)" if not self._cycle and not self._crontab else
                             "the newest at the update_cycle/update_crontab times (0 and no crontab: every telegram)")
        elif self._mode in ("readout", "poll") and not self._cycle and not self._crontab:
            self.logger.warning("neither update_cycle nor update_crontab is set: the meter is only read "
                                "when a logic calls read_now()")
        self.logger.debug("configured: mode %s on %s", self._mode, self._port)
        self.init_webinterface(WebInterface)

    # ------------------------------------------------------------------ configuration
    def _make_readout_config(self) -> ReadoutConfig:
        """ReadoutConfig from the parameters; the old dlms 1.9.5 options keep their meaning."""
        baud: Any = str(self.get_parameter_value("baudrate") or "auto").strip().lower()
        only_listen = bool(self.get_parameter_value("only_listen"))
        push_baud = 9600
        if baud != "auto":
            baud = int(baud)
            push_baud = baud
        if self.get_parameter_value("baudrate_fix"):
            baud = 300
        timeout = float(self.get_parameter_value("timeout") or 2.0)
        return ReadoutConfig(
            port=self._port,
            baudrate=baud,
            use_checksum=bool(self.get_parameter_value("use_checksum")),
            reset_baudrate=bool(self.get_parameter_value("reset_baudrate")),
            no_waiting=bool(self.get_parameter_value("no_waiting")),
            device_address=str(self.get_parameter_value("device_address") or ""),
            query_code=str(self.get_parameter_value("querycode") or "?"),
            char_format=str(self.get_parameter_value("char_format") or "7E1"),  # ReadoutConfig parses it
            timeout=timeout,
            identification_timeout=timeout,
            baud_switch_delay=float(self.get_parameter_value("baud_switch_delay") or 0.0),
            wakeup=bool(self.get_parameter_value("wakeup")),
            retries=int(self.get_parameter_value("retries") or 0),
            push_baudrate=push_baud,
            mode="push" if only_listen else "request",
        )

    def _make_poll_config(self) -> Any:
        """PollConfig (DLMS/COSEM client) from the parameters; password and keys are never logged."""
        from .dlms_protocol.poll.config import PollConfig

        baud = str(self.get_parameter_value("baudrate") or "auto").strip().lower()
        def codes(name: str) -> Tuple[str, ...]:
            return tuple(c for c in str(self.get_parameter_value(name) or "").replace(";", ",").split(",") if c.strip())

        return PollConfig(
            port=self._port,
            mode_e=bool(self.get_parameter_value("poll_mode_e")),
            baudrate=9600 if baud == "auto" else int(baud),
            client_address=int(self.get_parameter_value("client_address") or 16),
            logical_address=int(self.get_parameter_value("logical_address") or 1),
            physical_address=int(self.get_parameter_value("physical_address") or 17),
            address_size=int(self.get_parameter_value("address_size") or 2),
            authentication=str(self.get_parameter_value("authentication") or "none"),
            password=str(self.get_parameter_value("password") or "") or None,
            key=self.get_parameter_value("key") or None,
            auth_key=self.get_parameter_value("auth_key") or None,
            system_title=str(self.get_parameter_value("system_title") or "") or None,
            state_file=str(self.get_parameter_value("poll_state_file") or "") or None,
            obis=tuple(c.strip() for c in codes("poll_obis")),
            profiles=tuple(c.strip() for c in codes("poll_profiles")),
            timeout=float(self.get_parameter_value("timeout") or 3.0),
        )

    def _make_listener_config(self) -> ListenerConfig:
        """ListenerConfig from the parameters; keys are parsed here and never logged. Speed and
        format left out (0, empty) are the protocol's usual ones (``config.listen_line``)."""
        baud, line = listen_line(self._protocol)
        bytesize, parity, stopbits = ps.parse_format(self.get_parameter_value("listen_format") or line)
        profile = str(self.get_parameter_value("profile") or "").strip()
        return ListenerConfig(
            port=self._port,
            baudrate=int(self.get_parameter_value("listen_baudrate") or baud),
            bytesize=bytesize,
            parity=parity,
            stopbits=stopbits,
            key=parse_key(self.get_parameter_value("key") or None, "key"),
            auth_key=parse_key(self.get_parameter_value("auth_key") or None, "auth_key"),
            profile=profile or None,
            wrapper=str(self.get_parameter_value("wrapper") or "auto").lower(),
            security=str(self.get_parameter_value("security") or "auto").lower(),
        )

    # ------------------------------------------------------------------ life cycle
    def run(self):
        """Assemble source and outputs and start them; readout: scheduler with an immediate first read."""
        self.logger.debug("run() called")
        with self._life_lock:
            if self.alive:
                return
            self._generation += 1
            self._discovery_logged = False
            self._run_epoch = time.time()
            self.alive = True
            try:
                source = self._make_source()
                items = self._items = _ItemsOutput(self, self._min_interval,
                                                   scheduled=self._only_listen and bool(self._cycle or self._crontab))
                outputs: List[Output] = [items, self._history]
                victron = self._make_victron()
                if victron is not None:
                    outputs.append(victron)
                mqtt = self._mqtt = self._make_mqtt()
                if mqtt is not None:
                    outputs.append(mqtt)
                self._source, self._victron = source, victron
                self._pipeline = Pipeline(source, outputs)
                self._pipeline.start()
                if self._mode in ("readout", "poll") and (self._cycle or self._crontab):
                    first = self.shtime.now() + datetime.timedelta(seconds=self._start_offset)
                    self.scheduler_add("readout", self._poll, prio=5, cycle=self._cycle or None,
                                       cron=self._crontab or None, next=first)
            except DlmsError as exc:
                self.logger.error("cannot start: %s", exc)
                self._record_error(exc)
                self.alive = False
                self._teardown(STOP_BUDGET)
                return
        if self._pause_item:
            self._pause_item(False, self.get_fullname())

    def _make_source(self) -> Source:
        """The one per-mode choice: which source reads the meter (the outputs are the same for all)."""
        if self._mode == "listen":
            return make_source("sml", config=self._listener_config, listen_timeout=self._listen_timeout,
                               protocol=self._protocol, quirks=self._quirks, stats=self._stats,
                               on_problem=self._on_problem, search=self._search)
        # read when the SmartHomeNG scheduler says so; stale after two and a half missed cycles
        if self._mode == "poll":
            if not self._poll_config.obis:  # poll what the items want (all registers if none names a code)
                self._poll_config.obis = tuple(str(b.obis) for _, b in self._obis_items.values() if b.obis is not None)
            wanted = [str(code) for _, code in self._profile_items.values()]  # profiles the items ask for, too
            self._poll_config.profiles = tuple(dict.fromkeys(tuple(self._poll_config.profiles) + tuple(wanted)))
            return make_source("poll", config=self._poll_config, cycle=0.0, stats=self._stats,
                               on_profile=self._on_profile if self._profile_items else None,
                               time_scale=float(self._reader_options.get("time_scale", 1.0)),
                               stale_after=self._silence_allowed())
        return make_source("readout", config=self._readout_config, cycle=0.0, stats=self._stats,
                           reader_options=self._reader_options, stale_after=self._silence_allowed())

    def _silence_allowed(self) -> float:
        """Seconds without verified data before the meter counts as gone (0: no limit). A meter that
        sends on its own (listen, ``only_listen``): ``listen_timeout``, whatever the cycle at which the
        items get a telegram; a meter read at the update_cycle is silent between reads: 2.5 cycles."""
        if self._mode == "listen" or self._only_listen:
            return self._listen_timeout
        return max(10.0, 2.5 * self._cycle) if self._cycle else 0.0

    def stop(self):
        """Stop reading and release the port; returns within 2 s even during a readout."""
        self.logger.debug("stop() called")
        with self._life_lock:
            self.alive = False
            self._generation += 1
            self.scheduler_remove_all()
            self._teardown(STOP_BUDGET)
        with self._status_lock:
            self._status["connected"] = False
        self._write_status(force=True)
        if self._pause_item:
            self._pause_item(True, self.get_fullname())

    def _teardown(self, budget: float) -> None:
        deadline = time.monotonic() + budget
        pipeline, self._pipeline = self._pipeline, None
        source, self._source = self._source, None
        self._victron = self._mqtt = None
        if pipeline is not None:
            try:
                # the source first (ends a running read at once), then the outputs (D-Bus)
                pipeline.stop(timeout=max(0.2, budget - 0.4))
            except Exception as exc:  # stopping must never keep SmartHomeNG from stopping
                self.logger.warning("stopping: %s", exc)
        # wait for a running readout to notice the closed port, so the port is really free
        if self._read_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            self._read_lock.release()
        elif source is not None:
            self.logger.warning("a readout is still finishing; the port is released as soon as it ends")

    def _make_victron(self) -> Optional[Output]:
        """Victron D-Bus output, loaded only when enabled (dbus-fast may be missing)."""
        if not self.get_parameter_value("victron_publish"):
            return None
        timeout = self._silence_allowed() or 3600.0  # (read only when a logic asks: an hour)
        options = dict(
            bus=str(self.get_parameter_value("victron_bus") or "system"),
            role=str(self.get_parameter_value("victron_role") or "grid"),
            custom_name=str(self.get_parameter_value("victron_custom_name") or ""),
            device_suffix=self.get_instance_name() or None,
            timeout=timeout,
            port=self._port,
            connection=f"SmartHomeNG dlms ({self._mode}) {self._port}",
        )
        try:
            output = make_output("victron", stats=self._stats, **options)
        except ImportError as exc:
            self.logger.error("victron_publish is on, but the Victron bridge cannot be loaded (%s): install "
                              "dbus-fast or switch victron_publish off; reading the meter goes on", exc)
            return None
        except Exception as exc:  # bad settings: the meter must still be read
            self.logger.error("Victron bridge did not start: %s; reading the meter goes on", exc)
            return None
        return _Guarded(output, self.logger)

    #: plugin parameters mqtt_<option> passed to the MQTT output (an empty value means its default)
    MQTT_PARAMETERS = ("host", "port", "tls", "ca_file", "username", "password", "prefix", "node", "discovery",
                       "discovery_prefix", "retain", "qos", "min_interval")

    def _make_mqtt(self) -> Optional[Output]:
        """MQTT output with Home Assistant discovery, loaded only when enabled (paho-mqtt may be missing)."""
        if not self.get_parameter_value("mqtt_publish"):
            return None
        options = {name: self.get_parameter_value(f"mqtt_{name}") for name in self.MQTT_PARAMETERS}
        options["node"] = options.get("node") or self.get_instance_name() or None
        try:
            output = make_output("mqtt", **options)
        except DlmsError as exc:  # bad settings or no paho-mqtt: the meter must still be read
            self.logger.error("MQTT output not started: %s; reading the meter goes on", exc)
            return None
        return _Guarded(output, self.logger)

    @property
    def _listener(self) -> Any:
        """The push listener while running (tests, web interface), else None."""
        return getattr(self._source, "listener", None)

    @property
    def _bridge(self) -> Any:
        """The Victron bridge while running and started, else None."""
        victron = self._victron
        return victron.inner.bridge if victron is not None and victron.started else None

    @property
    def _reader(self) -> Any:
        return getattr(self._source, "reader", None)

    # ------------------------------------------------------------------ items
    def parse_item(self, item):
        """Register items with dlms_obis_code, dlms_obis_readout or dlms_status (and the pause item)."""
        if self._pause_item_path and item.property.path == self._pause_item_path:
            self.logger.debug("pause item %s registered", item.property.path)
            self._pause_item = item
            self.add_item(item, updating=True)
            return self.update_item

        conf = item.conf
        path = item.property.path
        config: Dict[str, Any] = {}
        if self.has_iattr(conf, ATTR_CODE):
            try:
                binding = ps.parse_obis_attribute(self.get_iattr_value(conf, ATTR_CODE),
                                                  self.get_iattr_value(conf, ATTR_UNIT),
                                                  self.get_iattr_value(conf, ATTR_SCALE))
            except ps.BindingError as exc:
                self.logger.error("item %s: %s", path, exc)
            else:
                if binding.obis is None:
                    self.logger.info("item %s: %r is no OBIS code, it is matched literally", path, binding.text)
                self._obis_items[path] = (item, binding)
                config["code"] = binding.label
        readout_on = self.has_iattr(conf, ATTR_READOUT) and ps.is_enabled(self.get_iattr_value(conf, ATTR_READOUT))
        if self.has_iattr(conf, ATTR_READOUT) and not readout_on:
            self.logger.debug("item %s: dlms_obis_readout is %r, so the raw readout is off for it", path,
                              self.get_iattr_value(conf, ATTR_READOUT))
        if readout_on:
            if item.property.type not in ("str", "foo"):
                self.logger.warning("item %s: dlms_obis_readout needs type str (or foo), not %s",
                                    path, item.property.type)
            self._readout_items[path] = item
            config["readout"] = True
        if self.has_iattr(conf, ATTR_STATUS):
            try:
                key = ps.parse_status_attribute(self.get_iattr_value(conf, ATTR_STATUS))
            except ps.BindingError as exc:
                self.logger.error("item %s: %s", path, exc)
            else:
                if key not in ps.STATUS_KEYS and key not in _known_counters():
                    self.logger.warning("item %s: dlms_status %r is no known status or counter; it shows 0 "
                                        "until such a counter appears (known: %s)", path, key,
                                        ", ".join(ps.STATUS_KEYS + tuple(sorted(_known_counters()))))
                self._status_items[path] = (item, key)
                config["status"] = key
        if self.has_iattr(conf, ATTR_PROFILE):
            self._parse_profile_item(item, path, config)
        if config:
            self.add_item(item, config_data_dict=config, mapping=config.get("code"))
        return None

    def _parse_profile_item(self, item: Any, path: str, config: Dict[str, Any]) -> None:
        """``dlms_profile: 1-0:99.1.0``: the load profile's new rows (mode poll) go to this item."""
        text = str(self.get_iattr_value(item.conf, ATTR_PROFILE) or "").strip()
        code = Obis.try_parse(text)
        if code is None:
            self.logger.error("item %s: dlms_profile %r is no OBIS code; write the load profile's code, "
                              "e.g. 1-0:99.1.0", path, text)
            return
        if self._mode != "poll":
            self.logger.warning("item %s: dlms_profile needs mode: poll (load profiles are read by polling); "
                                "the item stays as it is", path)
        if item.property.type not in ("list", "dict", "foo"):
            self.logger.warning("item %s: dlms_profile needs type list (the new rows), dict (the newest row) "
                                "or foo, not %s", path, item.property.type)
            return
        self._profile_items[path] = (item, code)
        config["profile"] = str(code)

    def _on_profile(self, code: str, rows: List[Any]) -> None:
        """New rows of a load profile (poll source thread): each row as {time, values, units}."""
        sent = Obis.try_parse(code)
        for item, wanted in list(self._profile_items.values()):
            if sent is None or not wanted.matches(sent):
                continue
            value: Any = [row.to_json() for row in rows]
            if item.property.type == "dict":
                value = value[-1]
            item(value, self.get_fullname(), self._port)

    def update_item(self, item, caller=None, source=None, dest=None):
        """Only the pause item is watched; meter values flow one way (meter → items)."""
        if item is self._pause_item:
            if caller != self.get_fullname():
                self.logger.debug("pause item changed to %s", item())
                if item() and self.alive:
                    self.stop()
                elif not item() and not self.alive:
                    self.run()

    # ------------------------------------------------------------------ readout
    def _poll(self) -> None:
        """Scheduler callback: one readout through the source, never two at once on the same port;
        with ``only_listen`` (the source reads every telegram itself) the newest one to the items."""
        if not self.alive:
            return
        if self._only_listen:
            items = self._items
            if items is not None:
                items.flush()
            return
        if not self._read_lock.acquire(blocking=False):
            running = time.monotonic() - self._read_started
            last = self._complete_duration
            if last is None:  # the first readout may include retries and the character format check
                self.logger.debug("readout skipped: none has delivered data yet, and the one running now "
                                  "started %.1f s ago", running)
                with self._status_lock:
                    self._status["overlaps"] += 1
                return
            self._log_repeat("overlap", "readout skipped: the previous one is still running after %.1f s (last "
                             "complete readout took %.1f s): set update_cycle to at least %d s", running, last,
                             int(max(running, last) * 1.5) + 5)
            with self._status_lock:  # counted after the explanation is logged (a reader of both sees both)
                self._status["overlaps"] += 1
            return
        try:
            source = self._source
            if source is None:
                return
            self._read_started = time.monotonic()
            if source.read_once():
                duration = time.monotonic() - self._read_started
                reader = getattr(source, "reader", None)
                if self._cycle and duration > self._cycle and getattr(reader, "last_read_tried_other", False):
                    self.logger.debug("the readout took %.1f s because the character format was checked", duration)
                elif self._cycle and duration > self._cycle:
                    self._log_repeat("slow", "the readout took %.1f s, longer than update_cycle (%d s): set "
                                     "update_cycle to at least %d s", duration, self._cycle, int(duration * 1.5) + 5)
                else:
                    self._repeats.clear("slow")
                    self._repeats.clear("overlap")
        finally:
            self._read_lock.release()

    def read_now(self) -> bool:
        """Plugin function: start one readout now in the background (``only_listen``: the newest
        telegram to the items now; False when none came since the last)."""
        if self._only_listen:
            items = self._items
            return self.alive and items is not None and items.flush()
        if self._mode not in ("readout", "poll") or not self.alive or self._read_lock.locked():
            return False
        threading.Thread(target=self._poll, name=f"plugins.{self.get_fullname()}.read_now").start()
        return True

    def last_data(self) -> Dict[str, Dict[str, Any]]:
        """Plugin function: the last verified data as {code: {value, unit, name}}."""
        data = self._last_data
        if data is None:
            return {}
        out: Dict[str, Dict[str, Any]] = {}
        for r in data.readings:
            key = (r.obis.normalized() if r.obis is not None else None) or r.code
            if key not in out:
                out[key] = {"value": ps.plain_value(r.value), "unit": r.unit, "name": r.name}
        return out

    # ------------------------------------------------------------------ data and health from the pipeline
    def _on_data(self, data: MeterData) -> None:
        """Every verified snapshot (before the items' rate limit): the status says all is well."""
        if not self.alive:
            return
        duration = self._source.status().get("duration") if self._source is not None else None
        self._record_success(duration)

    def _on_health(self, health: Health) -> None:
        """The source's health: an error or staleness keeps the items and says why in the status."""
        if not self.alive or health.state in (Health.OK, Health.STARTING, Health.STOPPED):
            return
        source = self._source
        if health.state == Health.ERROR:
            duration = source.status().get("duration") if source is not None else None
            error = health.error if health.error is not None else RuntimeError(health.cause)
            internal = not isinstance(error, DlmsError)
            self._record_error(error, duration, internal=internal,
                               logged=bool(source is not None and source.logs_errors) and not internal)
            return
        with self._status_lock:  # stale: no verified data for too long
            self._status["connected"] = False
            if not self._status["last_error"]:
                self._status["last_error"] = health.cause
                self._status["last_error_time"] = time.time()
        self._log_once("watchdog", logging.WARNING, "%s", health.cause)  # (with the source's stale_hint)
        self._write_status(force=True)

    def _on_problem(self, exc: DlmsError) -> None:
        """A rejected push message (bad frame, wrong key): the core logged it; here only the status.
        (The source passes on no tail of a message the port was opened into: see PushSource.)"""
        try:
            if self.alive:
                self._record_error(exc, logged=True)
        except Exception:
            self.logger.exception("unexpected error while handling a listener error")

    # ------------------------------------------------------------------ status
    def _record_success(self, duration: Optional[float]) -> None:
        with self._status_lock:
            recovered = self._status["failures"] > 0 and not self._status["connected"]
            first = self._status["successes"] == 0  # (after errors at the start: valid, not valid *again*)
            self._status["connected"] = True
            self._status["last_success"] = time.time()
            self._status["successes"] += 1
            if duration is not None:
                self._status["duration"] = round(duration, 3)
                self._complete_duration = duration
            self._status["last_error"] = ""
        if recovered:
            self.logger.info("meter data valid" if first else "meter data valid again")
        self._logged.pop("error", None)
        self._logged.pop("watchdog", None)

    def _record_error(self, exc: BaseException, duration: Optional[float] = None, internal: bool = False,
                      logged: bool = False) -> None:
        """Keep items as they are; remember why, count it, log it once (repeats at debug level).

        ``logged``: the core has logged it already, so it only goes to the debug log here."""
        text = f"internal error: {exc!r}" if internal else (str(exc) or type(exc).__name__)
        if internal and not isinstance(exc, RuntimeError):
            self._stats.error(exc)
        with self._status_lock:
            self._status["failures"] += 1
            self._status["last_error"] = text
            self._status["last_error_time"] = time.time()
            if duration is not None:
                self._status["duration"] = round(duration, 3)
            if self._mode in ("readout", "poll") or isinstance(exc, TransportError):
                self._status["connected"] = False
        if logged:
            self.logger.debug("meter error: %s", text)
        else:
            level = logging.ERROR if isinstance(exc, (TransportError, ConfigurationError)) or internal \
                else logging.WARNING
            self._log_once("error", level, "%s", text)
        self._write_status(force=True)

    def _log_repeat(self, key: str, msg: str, *args: Any) -> None:
        """WARNING the first time, then one line with the count every REPEAT_LOG_INTERVAL (debug between)."""
        log_now, repeats = self._repeats.check(key)
        if log_now:
            self.logger.warning(msg + "%s", *args, self._repeats.summary(repeats))
        else:
            self.logger.debug(msg, *args)

    def _log_once(self, key: str, level: int, msg: str, *args: Any) -> None:
        text = msg % args if args else msg
        if self._logged.get(key) == text:
            self.logger.debug(msg, *args)
            return
        self._logged[key] = text
        self.logger.log(level, msg, *args)

    def status(self) -> Dict[str, Any]:
        """Status and counters as plain values (for the web interface and summary items)."""
        with self._status_lock:
            status = dict(self._status)
        snap = self._stats.snapshot()
        status["counters"] = snap["counters"]
        status["durations"] = snap["durations"]
        status["alive"] = self.alive
        status["item_problems"] = len(self._item_problems)
        # what the meter's data says about itself (SML: firmware quirks, reduced data set and how to unlock it)
        status["notes"] = list(getattr(self._listener, "notes", {}).values())
        status["checksum"] = self._checksum_text()
        return status

    def _checksum_text(self) -> str:
        """How values are vouched for: a D0 meter without any checksum is read unchecked, and says so."""
        reader = self._reader
        if reader is not None and hasattr(reader, "checksum_state"):
            return str(reader.checksum_state)
        data = self._last_data
        return str(getattr(data, "checksum", None) or "") if data is not None else ""

    def _status_value(self, key: str, item_type: str) -> Any:
        with self._status_lock:
            status = dict(self._status)
        tz = self.shtime.now().tzinfo if self.shtime is not None else None
        if key in ("last_success", "last_error_time"):
            return ps.time_value(status[key], item_type, tz)
        if key == "connected":
            value: Any = bool(status["connected"]) and self.alive
        elif key == "last_error":
            value = status["last_error"] or ""
        elif key in ("successes", "failures", "overlaps"):
            value = int(status[key])
        elif key == "duration":
            if status["duration"] is None:
                raise ps.NotYet("no readout yet")
            value = status["duration"]
        elif key == "summary":
            summary = self.status()
            for k in ("last_success", "last_error_time"):
                summary[k] = ps.time_value(summary[k], "str", tz)
            if item_type in ("dict", "foo"):
                return summary
            return json.dumps(summary, sort_keys=True)
        else:
            value = self._stats.get(key)
        return ps.fit_to_type(value, item_type, key)

    def _write_status(self, force: bool = False) -> None:
        if not self._status_items:
            return
        now = time.monotonic()
        if not force and now - self._last_status_write < 1.0:
            return
        self._last_status_write = now
        for path, (item, key) in list(self._status_items.items()):
            try:
                item(self._status_value(key, item.property.type), self.get_fullname(), self._port)
            except ps.NotYet:
                continue
            except ps.ValueProblem as exc:
                self._log_once("status:" + path, logging.WARNING, "item %s: %s", path, exc)

    # ------------------------------------------------------------------ writing items
    def _apply(self, data: MeterData) -> None:
        """Write one verified snapshot into every item that asks for part of it."""
        self._last_data = data
        caller = self.get_fullname()
        for path, (item, binding) in list(self._obis_items.items()):
            try:
                reading = binding.select_or_derive(data)
                if reading is None:
                    raise ps.ValueProblem(f"code {binding.text} is not in the data of this meter: "
                                          "see the list of discovered codes in the web interface or the debug log")
                value = ps.item_value(binding, reading, item.property.type)
            except ps.ValueProblem as exc:
                self._item_problems[path] = str(exc)
                self._log_once("item:" + path, logging.WARNING, "item %s not updated: %s", path, exc)
                continue
            self._item_problems.pop(path, None)
            self._logged.pop("item:" + path, None)
            item(value, caller, self._port)
        for item in list(self._readout_items.values()):
            item(data.text, caller, self._port)

    def _applied(self, data: MeterData) -> None:
        """After ``_apply`` (and the success it belongs to): the status items, the discovery log once."""
        self._write_status(force=True)
        if not self._discovery_logged:
            self._discovery_logged = True
            self._log_discovery(data)

    def _log_discovery(self, data: MeterData) -> None:
        """Debug: every code with value, unit, meaning and item, then a ready-to-paste snippet."""
        if not self.logger.isEnabledFor(logging.DEBUG):
            return
        rows = ps.discover(data, self._users())
        derived = sum(1 for r in data.readings if r.derived)
        self.logger.debug("%d codes%s from %s%s:", len(rows) - derived, f" (+{derived} derived)" if derived else "",
                          data.meter_id or "the meter", f" (profile {data.profile})" if data.profile else "")
        for row in rows:
            self.logger.debug("  %-22s %18s %-6s %-45s %s", row.code, row.value, row.unit, row.name[:45],
                              ", ".join(row.items) or "-")
        self.logger.debug("items for these codes (paste into items/meter.yaml):\n%s",
                          ps.items_snippet(data, self.get_instance_name()))

    def _users(self) -> Dict[str, List[ps.ObisBinding]]:
        return {path: [binding] for path, (_item, binding) in self._obis_items.items()}

    # ------------------------------------------------------------------ web interface data
    def webif_data(self) -> Dict[str, Any]:
        """Everything the web interface shows, JSON-ready; keys are never part of it."""
        status = self.status()
        tz = self.shtime.now().tzinfo if self.shtime is not None else None
        for k in ("last_success", "last_error_time"):
            status[k] = ps.time_value(status[k], "str", tz)
        items = []
        for path, (item, binding) in sorted(self._obis_items.items()):
            items.append({"path": path, "kind": "code", "code": binding.label, "value": ps.format_value(item()),
                          "type": item.property.type, "problem": self._item_problems.get(path, "")})
        for path, (item, key) in sorted(self._status_items.items()):
            items.append({"path": path, "kind": "status", "code": key, "value": ps.format_value(item()),
                          "type": item.property.type, "problem": ""})
        for path, item in sorted(self._readout_items.items()):
            text = item()
            items.append({"path": path, "kind": "readout", "code": ATTR_READOUT,
                          "value": f"{len(text) if isinstance(text, str) else 0} characters",
                          "type": item.property.type, "problem": ""})
        data = self._last_data
        discovered = []
        snippet = ""
        if data is not None:
            for row in ps.discover(data, self._users()):
                discovered.append({"code": row.code, "normalized": row.normalized, "value": row.value,
                                   "unit": row.unit, "name": row.name, "items": row.items, "extra": row.extra})
            snippet = ps.items_snippet(data, self.get_instance_name())
        now = time.time()
        chart: Dict[str, List[List[float]]] = {"power": [], "import": [], "export": []}
        for t, summary in ps.downsample(self._history.points(), 720):
            for key in chart:
                if key in summary:
                    chart[key].append([round((t - now) / 60.0, 3), round(summary[key], 3)])
        unverified = ""
        reader = self._reader
        last = getattr(reader, "last_readout", None) if reader is not None else None
        last_text = getattr(last, "text", "") if last is not None else ""
        if last_text and (data is None or last_text != data.text):
            unverified = last_text
        return {
            "alive": self.alive, "mode": self._mode, "port": self._port, "status": status,
            "items": items, "discovered": discovered, "snippet": snippet,
            "raw": data.text if data is not None else "", "raw_unverified": unverified,
            "meter_id": (data.meter_id or "") if data is not None else "",
            "profile": (data.profile or "") if data is not None else "",
            "received": ps.time_value(data.received, "str", tz) if data is not None else "",
            "timings": dict(getattr(reader, "last_timings", {}) or {}) if reader is not None else {},
            "chart": chart,
        }

    def config_rows(self) -> List[Tuple[str, str]]:
        """Parameter table for the web interface; keys only show whether they are set."""
        rows = []
        listener = self._listener
        line = listener.config if listener is not None else self._listener_config  # (the search's line)
        names = CONFIG_ROWS.get(self._mode, CONFIG_ROWS["readout"]) + (("listen_timeout",) if self._only_listen else ())
        for name in ("mode", "serialport") + names:
            value = self.get_parameter_value(name)
            if name == "listen_format" and line is not None:  # as used: YAML reads an unquoted 8E1 as 80.0,
                value = f"{line.bytesize}{line.parity}{line.stopbits}"  # and empty is the protocol's usual one
            elif name == "listen_baudrate" and line is not None:
                value = line.baudrate
                if self._search:
                    state = "Suche" if getattr(listener, "searching", True) else "gefunden"
                    value = f"{value} ({self.translate(state)})"
            rows.append((name, str(value)))
        for name in SECRET_ROWS.get(self._mode, ()):
            rows.append((name, self.translate("gesetzt") if self.get_parameter_value(name) else "-"))
        if self.get_parameter_value("victron_publish"):
            rows.append(("victron_bus", str(self.get_parameter_value("victron_bus"))))
            rows.append(("victron", self.translate("aktiv") if self._bridge is not None
                         else self.translate("inaktiv")))
        if self.get_parameter_value("mqtt_publish"):
            mqtt = self._mqtt.status() if self._mqtt is not None else {}
            host, port = self.get_parameter_value("mqtt_host"), self.get_parameter_value("mqtt_port")
            rows.append(("mqtt_host", f"{host}:{port}"))
            rows.append(("mqtt", self.translate("verbunden") if mqtt.get("connected") else
                         self.translate("getrennt") + (f" ({mqtt['last_error']})" if mqtt.get("last_error") else "")))
        return rows


class _ItemsOutput(Output):
    """The plugin's items as a pipeline output, with their own keep-latest rate limit.

    ``min_update_interval`` limits item writes only; Victron and the chart get every snapshot.
    ``scheduled`` (a push-only D0 meter with an update_cycle or update_crontab): the same limit
    without an interval of its own: the first snapshot is written at once, the newest of the later
    ones when the plugin's scheduler calls ``flush``.
    """

    name = "items"
    every_error = True  # each failed readout counts in the status (failures, last_error_time)

    def __init__(self, plugin: "DLMS", interval: float, scheduled: bool = False) -> None:
        self.plugin = plugin
        self.limit = KeepLatest(float("inf") if scheduled else interval)

    def flush(self) -> bool:
        """Write the newest held snapshot now; False when none came since the last."""
        data = self.limit.take()
        if data is None:
            return False
        self._write(data)
        return True

    def publish(self, data: MeterData) -> None:
        due = self.limit.offer(data)
        if due is None:
            self.plugin._on_data(data)
        else:
            self._write(due, counted=data)

    def tick(self, now: float) -> None:
        due = self.limit.due()
        if due is not None:
            self._write(due)

    def publish_health(self, health: Health) -> None:
        self.plugin._on_health(health)

    def _write(self, data: MeterData, counted: Optional[MeterData] = None) -> None:
        """Write ``data`` into the items; ``counted``: the snapshot that just came, counted as a
        success only once the items hold the values (a logic or test that sees the count or
        ``connected`` change reads them from the items), before the status items are written."""
        plugin = self.plugin
        if not plugin.alive:
            return
        failed: Optional[Exception] = None
        try:
            plugin._apply(data)
        except Exception as exc:  # a bug while writing items must not leave a status that says all is well
            failed = exc
        if counted is not None:
            plugin._on_data(counted)
        if failed is not None:  # (after the success: the status says the error)
            plugin.logger.error("unexpected error while writing items", exc_info=failed)
            plugin._record_error(failed, internal=True)
            return
        plugin._applied(data)


class _Guarded(Output):
    """An optional output (Victron) whose start may fail: then it is off, and the meter is still read."""

    def __init__(self, inner: Output, logger: logging.Logger) -> None:
        self.inner = inner
        self.name = inner.name
        self.started = False
        self._logger = logger

    def start(self) -> None:
        try:
            self.inner.start()
        except Exception as exc:  # D-Bus missing, refused, bad address
            self._logger.error("%s output did not start: %s; reading the meter goes on", self.name, exc)
            return
        self.started = True

    def publish(self, data: MeterData) -> None:
        if self.started:
            self.inner.publish(data)

    def publish_health(self, health: Health) -> None:
        if self.started:
            self.inner.publish_health(health)

    def tick(self, now: float) -> None:
        if self.started:
            self.inner.tick(now)

    def stop(self, timeout: float = 2.0) -> None:
        if self.started:
            self.started = False
            self.inner.stop(timeout)

    def status(self) -> Dict[str, Any]:
        return self.inner.status() if self.started else {"running": False}


def _known_counters() -> set:
    """Counter names the core keeps: the one declared set (dlms_protocol.model.COUNTERS)."""
    from .dlms_protocol.model import COUNTERS
    return set(COUNTERS)
