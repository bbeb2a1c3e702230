"""Helpers for the plugin tests: a plugins directory holding this repository as ``dlms``, waiting."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from .core import load_plugin_package

ROOT = Path(__file__).resolve().parents[2]
_PLUGINS_DIR = None


def plugins_dir() -> Path:
    """A ``plugins/`` directory with ``dlms`` -> this repository (what users do with a copy/symlink)."""
    global _PLUGINS_DIR
    if _PLUGINS_DIR is None:
        base = Path(tempfile.mkdtemp(prefix="shng-plugins-"))
        os.symlink(ROOT, base / "dlms")
        atexit.register(shutil.rmtree, base, True)  # a symlink only: the repository stays
        _PLUGINS_DIR = base
    return _PLUGINS_DIR


def plugin_package() -> Any:
    """The repository imported as ``plugins.dlms`` (through the double's lib.* modules)."""
    return load_plugin_package("dlms", plugins_dir() / "dlms")


def support() -> Any:
    plugin_package()
    import sys
    return sys.modules["plugins.dlms.plugin_support"]


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll until ``condition()`` is truthy; return it, or fail with the last value (never timing asserts)."""
    deadline = time.monotonic() + timeout
    value = condition()
    while not value:
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last value {value!r})")
        time.sleep(interval)
        value = condition()
    return value
