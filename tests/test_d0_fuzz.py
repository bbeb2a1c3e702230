"""The D0 fuzz targets (bench/fuzz/targets_d0.py) run, find nothing, and count what they claim.

The real runs (200 000 cases each) are ``python3 tools/dev.py fuzz d0_dialogue_known 200000``;
here a few hundred cases keep the targets themselves working.
"""
from __future__ import annotations

import logging
import random
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parent.parent / "bench" / "fuzz"


@pytest.fixture(scope="module")
def runner():
    sys.path.insert(0, str(FUZZ))
    try:
        import run  # noqa: F401 - bench/fuzz/run.py
        run.load_targets()
        yield run
    finally:
        sys.path.remove(str(FUZZ))
        logging.disable(logging.NOTSET)  # the fuzz modules silence logging for their runs; not for later tests


@pytest.mark.parametrize("name", ["d0_datablock_known", "d0_dialogue_known", "d0_dialogue", "d0_datablock"])
def test_d0_fuzz_target_runs_clean(runner, name, corpus_dir):
    totals = runner.run_target(runner.TARGETS[name], 300, base_seed=7, hang=10.0, show=0)
    assert totals["cases"] == 300 and totals["crashes"] == 0 and totals["hangs"] == 0
    assert totals["accepted"] > 0 and totals["errors"] > 0  # both kinds of outcome were exercised
    if name.endswith("_known"):
        assert totals["unchecked"] == 0


def test_the_verdict_counts_a_value_accepted_without_its_checksum(runner):
    """The judge itself: an unframed copy of a BCC seed with a changed digit is 'unchecked'."""
    import targets_d0 as t
    seed = next(s for s in t._datablock_seeds() if s.context.checksum == "BCC" and b"\x06050\r\n\x02" in s.data)
    raw = seed.data
    damaged = raw[:raw.index(b"\x02")] + raw[raw.index(b"\x02") + 1:raw.rindex(b"\x03")]
    damaged = damaged.replace(b"012345.678", b"072345.678")
    verdict = t._check_datablock(False)(damaged, seed, random.Random(1))
    assert verdict.errors == 1  # offline: a mode C readout (ACK echo) without ETX/BCC is rejected
    unframed = damaged.replace(b"\x06050\r\n", b"")
    verdict = t._check_datablock(False)(unframed, seed, random.Random(1))
    assert verdict.unchecked == 1 and verdict.foreign == 1  # nothing in the bytes says a BCC is missing
    assert t._check_datablock(True)(unframed, seed, random.Random(1)).errors == 1  # the reader knows
