"""Statistics counters are one declared set (model.COUNTERS): every name the code counts under is in
it, and the plugin knows every one of them (a status item naming a real counter is not warned about)."""
from __future__ import annotations

import logging
import re
from pathlib import Path

from shng_double import SmartHome
from shng_double.testing import plugins_dir

from dlms_protocol import errors
from dlms_protocol.model import COUNTERS

ROOT = Path(__file__).resolve().parent.parent
_LITERAL = re.compile(r"\b(?:stats|statistics)\.(?:count|success)\(\s*[\"']([a-z_0-9]+)[\"']")


def counted_names() -> set:
    names = set()
    for path in list((ROOT / "dlms_protocol").rglob("*.py")) + [ROOT / "__init__.py", ROOT / "plugin_support.py"]:
        names.update(_LITERAL.findall(path.read_text(encoding="utf-8")))
    return names


def test_every_counted_name_is_declared() -> None:
    names = counted_names()
    assert {"reads", "messages", "parity_errors", "connects", "decrypted", "victron_updates"} <= names
    assert names - set(COUNTERS) == set()


def test_every_error_class_counts_under_a_declared_name() -> None:
    stats = {cls.stat for cls in vars(errors).values()
             if isinstance(cls, type) and issubclass(cls, errors.DlmsError)}
    assert stats - set(COUNTERS) == set()


def test_status_items_naming_real_counters_are_not_warned_about(caplog) -> None:
    names = ["parity_errors", "connects", "decrypted", "victron_updates", "victron_disconnects", "tag_failures"]
    items = {"meter": {n: {"type": "num", "dlms_status": n} for n in names}}
    items["meter"]["typo"] = {"type": "num", "dlms_status": "parity_erors"}
    sh = SmartHome(plugins_dir())
    caplog.set_level(logging.WARNING, logger="plugins.dlms")
    try:
        sh.load_plugins({"dlms": {"plugin_name": "dlms", "serialport": "/dev/null", "update_cycle": 0}})
        sh.load_item_tree(items)
        warned = [r.getMessage() for r in caplog.records if "no known status or counter" in r.getMessage()]
    finally:
        sh.stop()
    assert len(warned) == 1 and "parity_erors" in warned[0]


def test_the_web_interface_names_every_counter_and_phase_in_both_languages() -> None:
    """The statistics tab showed ten counters (replays, downgrades, plaintext_rejected ...) and the
    poll's phases as bare keys: its label list was a copy that fell behind COUNTERS."""
    import sys

    import yaml

    translations = yaml.safe_load((ROOT / "locale.yaml").read_text(encoding="utf-8"))["plugin_translations"]
    sh = SmartHome(plugins_dir())
    try:
        sh.load_plugins({"dlms": {"plugin_name": "dlms", "serialport": "/dev/null", "update_cycle": 0}})
        sh.webif("dlms")  # (the plugin's web interface module is loaded)
        webif = sys.modules["plugins.dlms.webif"]
    finally:
        sh.stop()
    assert {"sign-on", "association", "reading", "identification", "data"} <= set(webif.PHASES)
    assert set(COUNTERS) | set(webif.PHASES) <= set(webif.COUNTER_NAMES)
    for name in webif.COUNTER_NAMES:
        entry = translations.get(name)
        assert entry and entry.get("de") and entry.get("en"), name
