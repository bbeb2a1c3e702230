#!/usr/bin/env python3
# vim: set encoding=utf-8 tabstop=4 softtabstop=4 shiftwidth=4 expandtab
#########################################################################
#  This file is part of SmartHomeNG.
#
#  Web interface of the dlms plugin: configured items with live values,
#  discovered OBIS codes, statistics, the last raw readout and a chart of
#  power and energy over the last hour.
#
#  SmartHomeNG is free software: you can redistribute it and/or modify
#  it under the terms of the GNU General Public License as published by
#  the Free Software Foundation, either version 3 of the License, or
#  (at your option) any later version.
#########################################################################
"""Web interface of the dlms plugin (CherryPy app mounted at /plugin/dlms[_<instance>]/)."""
from __future__ import annotations

import html
import json
from typing import Any, Optional

import cherrypy

from lib.item import Items
from lib.model.smartplugin import SmartPluginWebIf

from ..dlms_protocol.model import COUNTERS
from ..plugin_support import items_snippet, translate_problem

#: longest value shown in the item table (a dlms_status summary is a whole dict)
VALUE_CHARS = 48

#: the durations of a readout's or a poll's phases (D0Reader / Poller ``last_timings``)
PHASES = ("identification", "switch", "data", "total", "wakeup", "sign-on", "association", "reading")
#: every label of the statistics tab: the plugin's status fields, every counter the core declares
#: (model.COUNTERS: one set, so a new counter cannot show as its bare key), the phases
COUNTER_NAMES = ("successes", "failures", "overlaps", "duration", "item_problems") + tuple(COUNTERS) + PHASES


def _escape(value: Any) -> Any:
    """HTML-escape every string: shngInsertText() writes cells with jQuery .html(), and the text
    comes from the meter."""
    if isinstance(value, str):
        return html.escape(value)
    if isinstance(value, list):
        return [_escape(v) for v in value]
    if isinstance(value, dict):
        return {k: _escape(v) for k, v in value.items()}
    return value


class WebInterface(SmartPluginWebIf):

    def __init__(self, webif_dir, plugin):
        """Set up the template environment (loader paths: webif/templates, then the http module's)."""
        self.logger = plugin.logger
        self.webif_dir = webif_dir
        self.plugin = plugin
        self.items = Items.get_instance()
        self.tplenv = self.init_template_environment()

    def _data(self) -> dict:
        """webif_data() with the texts per item in the interface's language (locale.yaml)."""
        data = self.plugin.webif_data()
        for row in data.get("items", []):
            for key in ("problem", "value") if row.get("kind") == "readout" else ("problem",):
                if row.get(key):
                    row[key] = translate_problem(str(row[key]), self.plugin.translate)
            value = str(row.get("value", ""))
            if len(value) > VALUE_CHARS:  # a summary dict would make the table too wide to show values
                row["value"] = value[:VALUE_CHARS - 1] + "…"
        status = data.get("status") or {}
        if status.get("checksum"):
            status["checksum"] = translate_problem(str(status["checksum"]), self.plugin.translate)
        data["labels"] = {name: self.plugin.translate(name) for name in COUNTER_NAMES}
        self._in_language(data)
        return data

    def _in_language(self, data: dict) -> None:
        """Meanings of the codes and the snippet's comments in the interface's language (de/en)."""
        language = self.plugin.translate("language_code")
        meter = getattr(self.plugin, "_last_data", None)
        if language not in ("de", "en") or meter is None or not data.get("discovered"):
            return
        names = [r.label(language) or "" for r in meter.readings]  # (a maker's meaning too: EasyMeter's 1.7.255)
        if len(names) == len(data["discovered"]):
            for row, name in zip(data["discovered"], names):
                row["name"] = name
        data["snippet"] = items_snippet(meter, self.plugin.get_instance_name(), language=language)

    @cherrypy.expose
    def index(self, reload=None):
        """Render the page; values are refreshed through get_data_html."""
        data = self._data()
        tmpl = self.tplenv.get_template("index.html")
        return tmpl.render(p=self.plugin,
                           webif_pagelength=self.plugin.get_parameter_value("webif_pagelength"),
                           data=data,
                           config_rows=self.plugin.config_rows(),
                           item_count=len(data["items"]),
                           code_count=len(data["discovered"]))

    @cherrypy.expose
    def get_data_html(self, dataSet: Optional[str] = None, params: Optional[str] = None) -> str:
        """JSON for the periodic refresh (smarthomeng.js calls get_data.html?dataSet=...)."""
        try:
            data = self._data()
        except Exception as exc:  # the page must not break because of one bad value
            self.logger.error("web interface data: %s", exc)
            return json.dumps({"error": str(exc)})
        snippet = data.get("snippet", "")
        raw = data.get("raw", "")
        unverified = data.get("raw_unverified", "")
        out = _escape(data)
        # these go through textContent in the page, so they stay unescaped
        out["snippet"] = snippet
        out["raw"] = raw
        out["raw_unverified"] = unverified
        return json.dumps(out, default=str)
