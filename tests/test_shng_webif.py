"""The plugin's web interface: page rendering, the auto-refresh JSON, escaping, no keys, and the
page's JavaScript run against that JSON (node with a minimal DOM stand-in).
"""
from __future__ import annotations

import json
import re
import subprocess
import textwrap
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

from helpers import which
from shng_double import SmartHome
from shng_double.testing import plugins_dir, wait_for

from dlms_protocol.simulator.push import PushSimulator

KEY = bytes(range(16))
AUTH = bytes(range(16, 32))
EVIL = "<img src=x onerror=alert(1)>"

ITEMS = {
    "grid": {
        "energy": {"type": "num", "dlms_obis_code": "1.8.0"},
        "power": {"type": "num", "dlms_obis_code": "1.7.0"},
        "serial": {"type": "str", "dlms_obis_code": "0-0:96.1.0.255"},
        "ghost": {"type": "num", "dlms_obis_code": "99.99.99"},
        "connected": {"type": "bool", "dlms_status": "connected"},
        "readout": {"type": "str", "dlms_obis_readout": "yes"},
    }
}


@pytest.fixture
def running() -> Iterator[Dict[str, Any]]:
    """A listening plugin with an encrypted push meter whose serial number is an HTML injection."""
    sim = PushSimulator(wrapper="hdlc", interval=0.2, seed=11, key=KEY, auth_key=AUTH, security=0x30,
                        serial=EVIL[:16])
    sim.open_pty(baudrate=115200, parity="N")
    sh = SmartHome(plugins_dir())
    sh.load_plugins({"dlms": {"plugin_name": "dlms", "serialport": sim.path, "mode": "listen",
                              "listen_baudrate": 115200, "listen_format": "8N1",
                              "key": KEY.hex(), "auth_key": AUTH.hex()}})
    sh.load_item_tree(ITEMS)
    sh.start()
    plugin = sh.plugin("dlms")
    wait_for(lambda: plugin._listener is not None and plugin._listener.connected)
    sim.start()
    wait_for(lambda: plugin.status()["successes"] >= 3)
    yield {"sh": sh, "sim": sim, "plugin": plugin, "webif": sh.webif("dlms")}
    sh.stop()
    sim.stop()


def test_index_page(running: Dict[str, Any]) -> None:
    page = running["webif"].index()
    for path in ITEMS["grid"]:
        assert f"grid.{path}" in page
    assert 'id="grid.energy_value"' in page
    assert "OBIS-Codes" in page and "Statistik" in page and "Diagramm" in page and "Rohdaten" in page
    assert "unbenutzt" in page                                           # codes no item uses are marked
    assert EVIL[:16] not in page and "&lt;img" in page                   # meter text is escaped
    assert KEY.hex() not in page and AUTH.hex() not in page
    assert "key" in page and "gesetzt" in page                           # only whether a key is set
    assert "99.99.99 ist nicht in den Daten" in page                     # per-item problem shown, in German


def test_english_page() -> None:
    sim = PushSimulator(wrapper="hdlc", interval=0.2, seed=2)
    sim.open_pty(baudrate=115200, parity="N")
    sh = SmartHome(plugins_dir(), language="en")
    try:
        sh.load_plugins({"dlms": {"plugin_name": "dlms", "serialport": sim.path, "mode": "listen",
                                  "listen_baudrate": 115200, "listen_format": "8N1"}})
        sh.load_item_tree(ITEMS)
        page = sh.webif("dlms").index()
        assert "Statistics" in page and "Chart" in page and "Raw data" in page and "disconnected" in page
    finally:
        sh.stop()
        sim.stop()


def test_refresh_json(running: Dict[str, Any]) -> None:
    data = json.loads(running["webif"].get_data_html("overview"))
    assert data["status"]["connected"] is True
    assert data["status"]["counters"]["messages"] >= 3
    assert data["mode"] == "listen"
    by_code = {c["normalized"]: c for c in data["discovered"]}
    assert by_code["1-0:1.8.0*255"]["items"] == ["grid.energy"]
    assert by_code["1-0:3.8.0*255"]["items"] == []                      # unused
    assert by_code["1-0:1.8.0*255"]["unit"] == "Wh"
    serial = by_code["0-0:96.1.0*255"]["value"]
    assert "<" not in serial and "&lt;img" in serial                     # escaped for shngInsertText
    items = {i["path"]: i for i in data["items"]}
    assert items["grid.ghost"]["problem"]
    assert items["grid.connected"]["value"] == "True"
    assert EVIL[:16] in data["raw"]                                       # raw goes through textContent
    assert data["chart"]["power"], "power points for the chart"
    assert all(-60.0 <= x <= 0.0 for x, _ in data["chart"]["power"])
    assert data["chart"]["import"]
    text = json.dumps(data)
    assert KEY.hex() not in text and AUTH.hex() not in text


def test_page_script_handles_refresh(running: Dict[str, Any], tmp_path: Path) -> None:
    """Run the page's own JavaScript (node) on the JSON the server returns."""
    node = which("node")
    page = running["webif"].index()
    scripts = re.findall(r"<script>(.*?)</script>", page, re.S)
    plugin_js = next(s for s in scripts if "function handleUpdatedData" in s)
    payload = running["webif"].get_data_html("overview")
    harness = textwrap.dedent("""\
        const elements = {};
        function el(id) {
          if (!elements[id]) elements[id] = {id: id, textContent: '', innerHTML: '', style: {},
                                              getContext: () => ({})};
          return elements[id];
        }
        global.document = {getElementById: el};
        const inserted = {};
        global.shngInsertText = function (id, text) { inserted[id] = String(text); };
        """) + plugin_js + textwrap.dedent("""
        const payload = require('fs').readFileSync(process.argv[2], 'utf8');
        handleUpdatedData(payload, 'overview');
        console.log(JSON.stringify({inserted: inserted, raw: el('dlms_raw').textContent,
          codes: el('dlms_codes_body').innerHTML, stats: el('dlms_stats_body').innerHTML,
          svg: el('dlms_chart_svg').innerHTML, snippet: el('dlms_snippet').textContent}));
        """)
    script = tmp_path / "harness.js"
    script.write_text(harness)
    data_file = tmp_path / "data.json"
    data_file.write_text(payload)
    out = subprocess.run([node, str(script), str(data_file)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    items = {i["path"]: i for i in json.loads(payload)["items"]}
    assert result["inserted"]["grid.energy_value"] == items["grid.energy"]["value"] != ""
    assert result["inserted"]["grid.ghost_problem"] == items["grid.ghost"]["problem"] != ""
    assert "1-0:1.8.0" in result["raw"]
    assert "grid.energy" in result["codes"] and "unbenutzt" in result["codes"]
    assert "<img" not in result["codes"]                                  # no markup from the meter
    assert "Nachrichten" in result["stats"] and "messages" not in result["stats"]   # counter names in German
    assert "<polyline" in result["svg"]                                  # chart without Chart.js
    assert "dlms_obis_code" in result["snippet"]


def test_page_fills_the_base_templates_blocks(running: Dict[str, Any]) -> None:
    """The page extends the http module's base_plugin.html (the repository's test double of it, which has
    the same blocks and settings): five tabs, the data set for the auto-refresh, no key.

    Rendering with a real SmartHomeNG checkout is not part of the suite: no package of it can be installed
    reproducibly, and a test that depends on one machine's folders is red on every other machine.
    """
    page = running["webif"].index()
    for tab in range(1, 6):
        assert f'id="bodytab_{tab}"' in page
    body5 = page.split('id="bodytab_5"', 1)[1].split('id="bodytab_6"', 1)[0]
    assert body5.strip() not in (">", "></div>")                        # the fifth tab has content
    assert "window.dataSet = 'overview'" in page
    assert KEY.hex() not in page and AUTH.hex() not in page
