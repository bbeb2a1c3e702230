"""Shared pytest fixtures; plain helpers live in helpers.py (tests/ is on pythonpath)."""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers import CORPUS, need


@pytest.fixture
def corpus_dir() -> Path:
    need(CORPUS.is_dir(), f"real-meter corpus not found at {CORPUS} (set DLMS_CORPUS)")
    return CORPUS
