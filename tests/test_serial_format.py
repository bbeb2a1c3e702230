"""The one serial-format parser (config.parse_format): every caller reads "8e1" the same way."""
from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlms_protocol.config import FORMATS, ListenerConfig, ReadoutConfig, format_name, parse_format
from dlms_protocol.detect.probe import Detector
from dlms_protocol.errors import ConfigurationError

from helpers import ROOT as REPO

_VALID = re.compile(r"[78][NEO][12]")


@st.composite
def spelled(draw):
    """A valid format written as people write it: any case, spaces around."""
    bits, parity, stop = draw(st.sampled_from("78")), draw(st.sampled_from("NEO")), draw(st.sampled_from("12"))
    text = "".join(c.lower() if draw(st.booleans()) else c for c in bits + parity + stop)
    pad = st.text(alphabet=" \t", max_size=3)
    return (int(bits), parity, int(stop)), draw(pad) + text + draw(pad)


@given(spelled())
@settings(max_examples=300)
def test_every_spelling_of_a_valid_format_parses_to_its_parts(case) -> None:
    parts, text = case
    assert parse_format(text) == parts
    assert format_name(text) == "%d%s%d" % parts
    assert format_name(format_name(text)) == format_name(text)


@given(st.text(max_size=8))
@settings(max_examples=500)
def test_anything_else_is_a_configuration_error_with_cause_and_fix(text: str) -> None:
    if _VALID.fullmatch(text.strip().upper()) or text.strip() in ("80.0", "70.0", "80", "70"):
        return
    with pytest.raises(ConfigurationError) as err:
        parse_format(text)
    assert repr(text) in err.value.cause and "unknown" in err.value.cause
    assert err.value.fix and "8E1" in err.value.fix


def test_yaml_numbers_of_an_unquoted_format_mean_that_format() -> None:
    # 8E1 unquoted in YAML is 8 * 10**1 = 80.0: no other format can have been meant
    assert [format_name(v) for v in (80.0, "80.0", 80, 70.0, "70")] == ["8E1", "8E1", "8E1", "7E1", "7E1"]
    with pytest.raises(ConfigurationError):
        parse_format(81.0)


def test_the_readout_config_parses_with_it_and_keeps_the_d0_subset() -> None:
    assert ReadoutConfig(port="/dev/null", char_format=" 7e1").char_format == "7E1"
    assert ReadoutConfig(port="/dev/null", char_format="8n1").char_format == "8N1"
    with pytest.raises(ConfigurationError, match=r"character format '9Z9' unknown"):
        ReadoutConfig(port="/dev/null", char_format="9Z9")
    with pytest.raises(ConfigurationError, match=r"'7O1' is not one a D0 meter uses: use one of 7E1"):
        ReadoutConfig(port="/dev/null", char_format="7o1")
    for name, parts in FORMATS.items():  # the subset is spelt as the parser spells it
        assert parse_format(name) == parts


def test_detect_normalises_its_probes_and_rejects_a_bad_one_at_once() -> None:
    assert Detector("/dev/null", passive=[(2400, "8e1 ")]).passive == [(2400, "8E1")]
    with pytest.raises(ConfigurationError, match="serial format '8X1' unknown"):
        Detector("/dev/null", passive=[(2400, "8X1")])
    parts = parse_format("8o2")  # what a listener gets from it
    assert ListenerConfig(port="/dev/null", bytesize=parts[0], parity=parts[1], stopbits=parts[2]).parity == "O"


def test_no_second_format_parser_in_the_code() -> None:
    """Fails when a module grows its own "8E1" parser or format table again."""
    sources = list((REPO / "dlms_protocol").rglob("*.py")) + [REPO / "plugin_support.py", REPO / "__init__.py"]
    offenders = []
    for path in sources:
        text = path.read_text(encoding="utf-8")
        if path == REPO / "dlms_protocol" / "config.py":
            continue
        if re.search(r"def (parse_format|format_name)\b|\[NEOneo\]|\[NEO\]|_FORMAT_NUMBERS|\"80\.0\"", text):
            offenders.append(str(path.relative_to(REPO)))
    assert offenders == []
