"""CLI: ``victron --config FILE`` runs the Venus OS grid-meter service; ``--check-config`` only checks."""
from __future__ import annotations

import argparse


def register(sub) -> None:  # noqa: ANN001 - argparse's private subparsers type
    """Add the ``victron`` subcommand."""
    p = sub.add_parser(
        "victron", help="publish a meter as a Victron grid meter on D-Bus (Venus OS service)",
        description="Read one meter (DLMS push listener, IEC 62056-21 readout or DLMS polling) and publish "
                    "it as com.victronenergy.grid.<suffix> on D-Bus. The config file is our INI format "
                    "(venus/dlms-meter.ini.example) or dbus-dlms-meter's config.py. Stops on SIGTERM/Ctrl-C.")
    from ..serve_cli import add_service_arguments  # light: argparse and the service runner, no D-Bus

    add_service_arguments(p)
    p.set_defaults(func=cmd_victron)


def cmd_victron(args: argparse.Namespace) -> int:
    """``serve`` with the D-Bus output on whatever the file says."""
    from ..serve_cli import cmd_serve

    args.victron_always = True
    return cmd_serve(args)


__all__ = ["register", "cmd_victron"]
