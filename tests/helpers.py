"""Test helpers (importable as `helpers`): where the real-meter corpus lives, and which real tools exist.

The corpus in ../shared/corpus is read in place (its licences forbid copying it here). Set
DLMS_CORPUS to point elsewhere. Where it is absent, corpus tests are skipped, unless
DLMS_REQUIRE_ALL=1 (CI), which turns every such skip into a failure.
"""
from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable, List

import pytest

from dlms_protocol.model import MeterData
from dlms_protocol.pipeline import Health, Output

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


class Recorder(Output):
    """A pipeline output that keeps what it got (data, health) for assertions.

    ``event`` is set on every snapshot; ``wait(predicate, what)`` waits (at most ``timeout`` s,
    an upper bound for a loaded machine, never a speed assertion) until the predicate holds.
    """

    name = "recorder"

    def __init__(self) -> None:
        self.data: List[MeterData] = []
        self.health: List[Health] = []
        self.event = threading.Event()
        self.cond = threading.Condition()

    def publish(self, data: MeterData) -> None:
        with self.cond:
            self.data.append(data)
            self.cond.notify_all()
        self.event.set()

    def publish_health(self, health: Health) -> None:
        with self.cond:
            self.health.append(health)
            self.cond.notify_all()

    def wait(self, predicate: Callable[[], Any], what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                assert left > 0, f"never happened: {what}"
                self.cond.wait(left)
