"""Shared pytest fixtures; plain helpers live in helpers.py (tests/ is on pythonpath)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import pytest

from helpers import CORPUS, need

if TYPE_CHECKING:
    from dbus_fixtures import DbusDaemon


@pytest.fixture
def corpus_dir() -> Path:
    need(CORPUS.is_dir(), f"real-meter corpus not found at {CORPUS} (set DLMS_CORPUS)")
    return CORPUS


@pytest.fixture(scope="module")
def daemon() -> Iterator["DbusDaemon"]:
    """A private dbus-daemon per test module (the real daemon, not a mock)."""
    from dbus_fixtures import DbusDaemon, have_dbus

    need(have_dbus(), "dbus-daemon is not installed (apt-get install dbus-daemon)")
    d = DbusDaemon()
    yield d
    d.stop()
