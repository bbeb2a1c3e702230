"""CLI subcommands of this area (filled in by the area's implementation)."""
from __future__ import annotations


def register(sub) -> None:  # noqa: ANN001 - argparse's private subparsers type
    """Add this area's subcommands to the CLI."""
