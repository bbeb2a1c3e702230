"""One meter, one net power: items, the web chart, D-Bus and MQTT show the same net power, or all
none, because it is derived once in the pipeline (``enrich``) and no output has a rule of its own.

Three real meters from the corpus: an import-only SML meter (1.7.0 but no 2.7.0: no net power
anywhere, never "import - 0"), an import+export DLMS push meter (16.7.0 derived from 1.7.0 and
2.7.0) and a per-phase push meter (36.7.0 ... derived per phase as well). Run this file as a
script for the table of the closing note.
"""
from __future__ import annotations

import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any, Dict, Optional

import pytest

from helpers import CORPUS, need

FILES = {
    "import only (SML, EMH eHZ)": "sml/emh_ehz_gw8e2a500ak2_vzlogger.bin",
    "import + export (push, Kamstrup Omnipower)": "push/se-kamstrup-omnipower-hdlc-obisvalue-2022.json",
    "per phase (push, Iskra AM550)": "push/si-iskra-am550-hdlc-positional-live18.json",
}
_W = {"W": Decimal(1), "kW": Decimal(1000), "MW": Decimal(1000000)}


def snapshot(rel: str) -> Any:
    """The corpus file through our real decoder, then the pipeline's one enrichment."""
    from dlms_protocol.pipeline import enrich

    path = CORPUS / rel
    if rel.startswith("sml/"):
        from dlms_protocol.sml.decoder import decode_all

        telegrams, _errors = decode_all(path.read_bytes())
        return enrich(telegrams[0].to_meter_data())
    from dlms_protocol.config import ListenerConfig
    from dlms_protocol.dlms.decoder import decode_bytes

    doc = json.loads(path.read_text(encoding="utf-8"))
    keys = doc.get("keys") or {}
    msgs = decode_bytes(bytes.fromhex(doc["hex"]), ListenerConfig(port="corpus", key=keys.get("block_cipher_key")),
                        strict=False)
    return enrich(msgs[0].to_meter_data())


class _Sent:
    rc = 0


class _FakePaho:
    """Takes what the MQTT output hands to paho (the broker itself is tested in test_mqtt.py)."""

    def __init__(self) -> None:
        self.topics: Dict[str, str] = {}

    def publish(self, topic: str, payload: str, qos: int = 0, retain: bool = False) -> _Sent:
        self.topics[topic] = payload
        return _Sent()


def _item(data: Any, code: str) -> Optional[float]:
    from shng_double.testing import support

    ps = support()
    binding = ps.parse_obis_attribute(code, "W")
    reading = binding.select(data)
    return None if reading is None else float(ps.item_value(binding, reading, "num"))


def _mqtt(data: Any, code: str) -> Optional[float]:
    from dlms_protocol.mqtt.discovery import keys_of
    from dlms_protocol.mqtt.output import make_mqtt_output
    from dlms_protocol.obis import Obis

    out = make_mqtt_output(discovery="no")
    paho = _FakePaho()
    out._client = paho
    out.connected = True  # (as after the broker's CONNACK: before it, messages wait for the republish)
    out.deliver(data)
    pattern = Obis.parse(code)
    for key, reading in keys_of(data):
        if reading.obis is not None and pattern.matches(reading.obis):
            plain = next(v for t, v in paho.topics.items() if t.endswith(f"/{key}/value"))
            return float(Decimal(plain) * _W[reading.unit])
    return None


def net_powers(data: Any) -> Dict[str, Dict[str, Optional[float]]]:
    """Net power in W as each output shows it: total and L1."""
    from shng_double.testing import support

    from dlms_protocol.victron.mapping import Mapper

    dbus = Mapper().map(data).values
    return {
        "total": {"items": _item(data, "16.7.0"), "chart": support().grid_summary(data).get("power"),
                  "dbus": dbus.get("/Ac/Power"), "mqtt": _mqtt(data, "16.7.0")},
        "L1": {"items": _item(data, "36.7.0"), "dbus": dbus.get("/Ac/L1/Power"), "mqtt": _mqtt(data, "36.7.0")},
    }


def _same(values: Dict[str, Optional[float]]) -> bool:
    got = list(values.values())
    if all(v is None for v in got):
        return True
    return all(v is not None and abs(v - got[0]) <= 1e-6 * max(1.0, abs(got[0])) for v in got)


@pytest.mark.parametrize("kind", list(FILES))
def test_every_output_shows_the_same_net_power_or_none(kind: str) -> None:
    need((CORPUS / FILES[kind]).is_file(), f"corpus file {FILES[kind]} not found")
    data = snapshot(FILES[kind])
    shown = net_powers(data)
    assert _same(shown["total"]), shown
    total = shown["total"]["items"]
    if kind.startswith("import only"):
        assert total is None and shown["L1"]["items"] is None            # no fake "import - 0"
    else:
        assert total is not None
    if kind.startswith("per phase"):
        assert shown["L1"]["items"] is not None and _same(shown["L1"]), shown
    elif kind.startswith("import + export"):
        # /Ac/L1/Power without phase data is Victron's own total-on-L1 rule, not a net power rule
        assert shown["L1"]["items"] is None and shown["L1"]["mqtt"] is None


if __name__ == "__main__":  # the closing note's table
    sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parent.parent)]
    print("| meter | net power | items | web chart | D-Bus | MQTT |\n|---|---|---|---|---|---|")
    for name, rel in FILES.items():
        p = net_powers(snapshot(rel))
        for which in ("total", "L1"):
            row = p[which]
            cells = [("-" if row.get(k, "n/a") is None else "n/a" if k not in row else f"{row[k]:.0f} W")
                     for k in ("items", "chart", "dbus", "mqtt")]
            print(f"| {name} | {which} | " + " | ".join(cells) + " |")
