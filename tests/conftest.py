"""Shared pytest fixtures; plain helpers live in helpers.py (tests/ is on pythonpath)."""
from __future__ import annotations

import signal
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import pytest

from helpers import CORPUS, need

# A test run started as a background job without job control (a CI runner, ``cmd &`` in a script)
# inherits SIGINT ignored, and so would every command the tests start: Python then installs no
# KeyboardInterrupt, and the tests that stop a simulator with Ctrl-C (SIGINT) waited in vain.
# The tests' own processes get Python's usual Ctrl-C back.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

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
