"""tools/dev.py test runs the suite in parallel workers unless the caller chose otherwise: an
explicit -n, pytest-xdist switched off, or a debugger (which needs the one process)."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _dev():
    spec = importlib.util.spec_from_file_location("dev_tool", ROOT / "tools" / "dev.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.mark.parametrize("cpus,workers", [(1, "2"), (2, "3"), (3, "4"), (16, "4")])
def test_one_more_worker_than_cpus_at_most_four(monkeypatch, cpus: int, workers: str) -> None:
    dev = _dev()
    monkeypatch.delenv("DLMS_TEST_WORKERS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    assert dev.test_workers(["-k", "push"]) == ["-n", workers, "-k", "push"]
    monkeypatch.setenv("DLMS_TEST_WORKERS", "7")
    assert dev.test_workers([]) == ["-n", "7"]


@pytest.mark.parametrize("args", [["-n", "0"], ["-n0"], ["--numprocesses=2"], ["-p", "no:xdist"], ["--pdb"],
                                  ["-x", "--trace"]])
def test_the_caller_s_choice_is_kept(args: list) -> None:
    assert _dev().test_workers(list(args)) == args
