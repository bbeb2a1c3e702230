"""The smartVISU files as smartVISU 3.x reads them (checked by hand against smartVISU 3.2.2 and
3.6.0, rendered in Chromium): what its widget parser, template checker and version switch need.

smartVISU takes a widget file's first ``/** */`` block as the file's header and the block right
before each ``{% macro %}`` as that macro's documentation, with typed ``@param {type}`` lines; a
macro documented in the header block was unknown to its template checker and widget assistant.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

WIDGETS = Path(__file__).resolve().parent.parent / "sv_widgets"
LIBRARY = (WIDGETS / "widget_dlms.html").read_text(encoding="utf-8")
PAGE = (WIDGETS / "dlms-page.html").read_text(encoding="utf-8")
MACRO = re.compile(r"/\*\*(?P<doc>(?:(?!\*/).)*)\*/\s*\{% macro (?P<name>\w+)\((?P<args>[^)]*)\) %\}", re.S)


def test_the_file_header_comes_first_and_documents_no_macro() -> None:
    header = LIBRARY[:LIBRARY.index("*/")]
    assert LIBRARY.startswith("/**") and "@package" in header and "@param" not in header


@pytest.mark.parametrize("name", ["meter", "health"])
def test_each_macro_has_its_own_block_with_a_typed_param_per_argument(name: str) -> None:
    found = {m["name"]: m for m in MACRO.finditer(LIBRARY)}
    assert name in found
    doc, args = found[name]["doc"], [a.strip() for a in found[name]["args"].split(",")]
    params = re.findall(r"@param \{([^}]*)\}", doc)
    assert len(params) == len(args) == doc.count("@param")
    assert params[0] == "id" and params[1] == "item"


def test_widget_ids_are_unique_within_the_file() -> None:
    ids = re.findall(r"\(id ~ '(\w+)'", LIBRARY)
    assert ids and len(ids) == len(set(ids))


def test_basic_widgets_are_imported_by_version_number() -> None:
    """'@widgets/' exists from 3.3 on; compared as text, a 3.10 would sort before 3.3."""
    imports = re.findall(r"\{% import (.*?) as basic %\}", LIBRARY)
    assert imports and all(i == 'config_version_major > 3 or config_version_minor >= 3 ? "@widgets/basic.html" : '
                           '"basic.html"' for i in imports)
    assert "config_version_full" not in LIBRARY


def test_the_page_does_not_import_the_library_again() -> None:
    """smartVISU's root.html imports every dropin as its name; '@widgets' fails on 3.0 to 3.2."""
    assert "{% import" not in PAGE and "{{ dlms.meter(" in PAGE and "{{ dlms.health(" in PAGE
    assert not re.search(r"<(root|project)>", LIBRARY + PAGE)  # read as HTML tags by the checker
