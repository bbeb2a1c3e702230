"""Test helpers (importable as `helpers`): where the real-meter corpus lives, and which real tools exist.

The corpus in ../shared/corpus is read in place (its licences forbid copying it here). Set
DLMS_CORPUS to point elsewhere. Where it is absent, corpus tests are skipped, unless
DLMS_REQUIRE_ALL=1 (CI), which turns every such skip into a failure.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("DLMS_CORPUS", ROOT.parent / "shared" / "corpus"))
REQUIRE_ALL = os.environ.get("DLMS_REQUIRE_ALL") == "1"


def need(condition: bool, reason: str) -> None:
    """Skip when a real part is missing, or fail under DLMS_REQUIRE_ALL=1 (CI)."""
    if condition:
        return
    if REQUIRE_ALL:
        pytest.fail(f"required for this run but missing: {reason}")
    pytest.skip(reason)


def corpus_files(kind: str, suffix: str) -> list:
    """Corpus files for parametrisation (an empty list when the corpus is absent)."""
    folder = CORPUS / kind
    return sorted(folder.glob(f"*{suffix}")) if folder.is_dir() else []


def load_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def which(tool: str) -> str:
    path = shutil.which(tool)
    need(path is not None, f"{tool} is not installed (python3 tools/dev.py test installs it as root)")
    return path  # type: ignore[return-value]
