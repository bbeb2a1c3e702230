"""The run itself: CI must exercise the real corpus, not skip it."""
from __future__ import annotations

from helpers import CORPUS, need


def test_corpus_is_present() -> None:
    need(CORPUS.is_dir() and any(CORPUS.glob("d0/*.txt")) and any(CORPUS.glob("push/*.json")),
         f"real-meter corpus at {CORPUS}")
