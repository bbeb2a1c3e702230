"""Old-style configuration: plugin.conf and items.conf (smarthome.py format) drive the plugin.

The double's .conf parser follows smarthomeng-plugin-api.md §14; these tests pin those rules
and then run the plugin from a plugin.conf + items.conf pair against a simulated push meter.
"""
from __future__ import annotations

import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from shng_double import SmartHome, parse_conf_text
from shng_double.testing import plugins_dir, wait_for

from dlms_protocol.simulator.push import PushSimulator


# --------------------------------------------------------------------------- parser rules
def test_conf_nesting_lists_comments_and_empty_values() -> None:
    tree = parse_conf_text(textwrap.dedent("""\
        # a comment line
        [Smartmeter]
          [[Import_Energy]]
            type = num
            dlms_obis_code = 1.8.1   # trailing comment
          [[Legacy]]
            type = num
            dlms_obis_code = 1-1:1.8.1 | 0 | Value | num
            empty =
            quoted = 'kWh'
            [[[Deep]]]
              type = str
        [Other]
          name = "x"
        """))
    assert tree["Smartmeter"]["Import_Energy"] == {"type": "num", "dlms_obis_code": "1.8.1"}
    legacy = tree["Smartmeter"]["Legacy"]
    assert legacy["dlms_obis_code"] == ["1-1:1.8.1", "0", "Value", "num"]
    assert "empty" not in legacy
    assert legacy["quoted"] == "kWh"
    assert legacy["Deep"] == {"type": "str"}
    assert tree["Other"]["name"] == "x"


def test_conf_hash_cuts_values() -> None:
    tree = parse_conf_text("[a]\n  key = abc#def\n")
    assert tree["a"]["key"] == "abc"


# --------------------------------------------------------------------------- end to end
@pytest.fixture
def push_meter():
    sim = PushSimulator(wrapper="mbus", interval=0.25, seed=7)
    port = sim.open_pty(time_scale=20.0)  # 2400 Bd 8E1 (the plugin's defaults), twenty times faster
    yield sim, port
    sim.stop()


def _expected(sim: PushSimulator, dotted: str) -> Decimal:
    raw, scaler, _unit = sim.last_registers[dotted]
    return Decimal(raw).scaleb(scaler)


def test_plugin_conf_and_items_conf_listen(tmp_path: Path, push_meter) -> None:
    sim, port = push_meter
    (tmp_path / "plugin.conf").write_text(textwrap.dedent(f"""\
        [dlms]
            class_name = DLMS
            class_path = plugins.dlms
            serialport = {port}
            mode = listen
        #    key = 00112233445566778899aabbccddeeff
        """))
    (tmp_path / "meter.conf").write_text(textwrap.dedent("""\
        [Smartmeter]
          [[Import_Energy]]
            type = num
            dlms_obis_code = 1.8.0
          [[Import_kWh]]
            type = num
            dlms_obis_code = 1.8.0
            dlms_unit = kWh
          [[Voltage_L1]]
            type = num
            dlms_obis_code = 1-0:32.7.0.255
          [[Legacy]]
            type = num
            dlms_obis_code = 1-0:1.8.0*255 | 0 | Value | num
          [[Legacy_Unit]]
            type = str
            dlms_obis_code = 1-0:1.8.0*255 | 0 | Unit | str
          [[Readout]]
            type = str
            dlms_obis_readout = yes
          [[Connected]]
            type = bool
            dlms_status = connected
        """))
    sh = SmartHome(plugins_dir())
    assert len(sh.load_plugins_from(tmp_path / "plugin.conf")) == 1
    sh.load_items(tmp_path / "meter.conf")
    sh.start()
    try:
        plugin = sh.plugin("dlms")
        wait_for(lambda: plugin._listener is not None and plugin._listener.connected)
        assert sim.send_once()
        wait_for(lambda: sh.items.return_item("Smartmeter.Connected")())
        assert sh.items.return_item("Smartmeter.Legacy_Unit")() == "Wh"
        energy = _expected(sim, "1-0:1.8.0.255")
        assert sh.items.return_item("Smartmeter.Import_Energy")() == int(energy)
        assert sh.items.return_item("Smartmeter.Legacy")() == int(energy)
        assert sh.items.return_item("Smartmeter.Import_kWh")() == pytest.approx(float(energy / 1000))
        assert sh.items.return_item("Smartmeter.Voltage_L1")() == pytest.approx(float(_expected(sim, "1-0:32.7.0.255")))
        readout = sh.items.return_item("Smartmeter.Readout")()
        assert "1-0:1.8.0" in readout
    finally:
        sh.stop()


def test_plugin_conf_missing_serialport_is_not_loaded(tmp_path: Path, caplog) -> None:
    (tmp_path / "plugin.conf").write_text("[dlms]\n    class_name = DLMS\n    class_path = plugins.dlms\n")
    sh = SmartHome(plugins_dir())
    assert sh.load_plugins_from(tmp_path / "plugin.conf") == []
    assert "'serialport' is mandatory" in caplog.text
    sh.stop()
