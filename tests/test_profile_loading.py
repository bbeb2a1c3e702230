"""Loading the profile files: the schema walk's shortcuts (one isinstance per leaf, per-node plans,
cached OBIS parsing) say exactly what the plain walk says, for any document."""
from __future__ import annotations

import json
import os
from typing import Any, Optional

from hypothesis import given, settings
from hypothesis import strategies as st

from dlms_protocol.dlms import profiles
from dlms_protocol.dlms.profiles import SCHEMA, validate_schema
from dlms_protocol.errors import ConfigurationError

_NAMES = sorted(n for n in os.listdir(profiles._BUILTIN) if n.endswith(".json"))
DOCS = [json.loads(open(os.path.join(profiles._BUILTIN, n), encoding="utf-8").read()) for n in _NAMES]


def plain_walk(value: Any, spec: Any = SCHEMA, path: str = "") -> None:
    """The schema walk as first written: every node visited, every type name tried one by one."""
    label = path or "the document"
    if isinstance(spec, str):
        spec = (spec,)
    if spec[0] == "object":
        _, props, required = spec
        if not isinstance(value, dict):
            raise ConfigurationError(f"{label} must be a JSON object, not {profiles._json_name(value)}")
        for key in required:
            if key not in value:
                raise ConfigurationError(f"'{path + '.' if path else ''}{key}' is missing")
        for key, sub in props.items():
            if key in value:
                plain_walk(value[key], sub, f"{path}.{key}" if path else key)
        return
    if spec[0] == "array":
        if not isinstance(value, list):
            raise ConfigurationError(f"{label} must be a JSON list, not {profiles._json_name(value)}")
        for i, item in enumerate(value):
            plain_walk(item, spec[1], f"{path}[{i}]")
        return
    kinds = {"string": str, "integer": int, "boolean": bool, "null": type(None)}
    if not any(isinstance(value, kinds[t]) and (t == "boolean" or not isinstance(value, bool)) for t in spec):
        raise ConfigurationError(f"{label} must be {' or '.join(spec)}, not {profiles._json_name(value)}")


def verdict(walk: Any, doc: Any) -> Optional[str]:
    try:
        walk(doc)
    except ConfigurationError as exc:
        return str(exc)
    return None


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-300, 300) | st.floats(allow_nan=False)
                           | st.text(max_size=4), lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.sampled_from(["index", "obis", "name", "x"]), inner, max_size=3),
                           max_leaves=6)


def _containers(doc: Any, out: list) -> list:
    if isinstance(doc, (dict, list)):
        out.append(doc)
        for child in (doc.values() if isinstance(doc, dict) else doc):
            _containers(child, out)
    return out


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(range(len(DOCS))), st.data(), JSON_VALUES)
def test_schema_shortcuts_agree_with_the_plain_walk(which: int, data: Any, value: Any) -> None:
    doc = json.loads(json.dumps(DOCS[which]))
    target = data.draw(st.sampled_from(_containers(doc, [])))
    if isinstance(target, dict):
        key = data.draw(st.sampled_from(sorted(target) + ["meter_id", "scaler", "family"]))
        if data.draw(st.booleans()) and key in target:
            del target[key]
        else:
            target[key] = value
    elif target:
        target[data.draw(st.integers(0, len(target) - 1))] = value
    else:
        target.append(value)
    assert verdict(validate_schema, doc) == verdict(plain_walk, doc)


def test_every_built_in_profile_passes_both_walks_and_loads() -> None:
    for doc in DOCS:
        assert verdict(validate_schema, doc) is None and verdict(plain_walk, doc) is None
    assert sorted(p.name for p in profiles.load_profiles().values()) == sorted(d["name"] for d in DOCS)


def test_cached_obis_parse_is_the_plain_parse() -> None:
    """Profiles share the Obis objects of one text (frozen, so sharing is safe)."""
    from dlms_protocol.obis import Obis

    for text in ("1-0:1.8.0.255", "1.8.0", "0-0:C.1.0*255", "F.F", "1.8.0.0.0.0.0", "", "1-0:256.8.0"):
        cached = profiles._try_obis(text)
        assert cached == Obis.try_parse(text) and profiles._try_obis(text) is cached
