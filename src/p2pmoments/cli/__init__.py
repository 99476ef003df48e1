"""The `p2pmoments` command. Every command but init, run and service is a client
of the running daemon's control API, never of its database.

The commands are declared in one table (commands.py, of arguments.py's `Cmd` and `Arg`),
from which `_parser` below builds the parser, and carried out by a module per group:
setup.py (init, run, status, events, the service), friends.py (pairing, friends, peers),
devices.py, moments.py (circles and moments); output.py prints for people. None
imports the daemon, so the CLI starts fast (tests/test_cli_thin.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from p2pmoments import __version__
from p2pmoments.cli.arguments import Cmd
from p2pmoments.cli.commands import COMMANDS
from p2pmoments.cli.moments import _print_circle, _print_moment
from p2pmoments.cli.output import EXIT_ERROR, EXIT_USAGE, _Plain
from p2pmoments.core.errors import P2PMomentsError
from p2pmoments.errors import ConfigError
from p2pmoments.paths import HOME_ENV, resolve_paths

# _print_circle and _print_moment are here for the tests that use them.
__all__ = ["_parser", "_print_circle", "_print_moment", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    streams = sys.stdout, sys.stderr
    if not isinstance(sys.stdout, _Plain):
        sys.stdout, sys.stderr = _Plain(sys.stdout), _Plain(sys.stderr)
    try:
        return _run(args)
    finally:
        sys.stdout, sys.stderr = streams


def _run(args: argparse.Namespace) -> int:
    paths = resolve_paths(args.home)
    if paths.home is not None and paths.home.exists() and not paths.home.is_dir():
        print(
            f"p2pmoments: --home {paths.home} is a file, not a folder: name a folder "
            "(it is created if it does not exist)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        result: int = args.func(args, paths)
    except ConfigError as exc:
        print(f"p2pmoments: bad configuration: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except P2PMomentsError as exc:
        print(f"p2pmoments: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`p2pmoments qr | head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:
        # A file we could not read or write: say which and why, not a traceback.
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"p2pmoments: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_ERROR
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="p2pmoments",
        description="Share moments with the right small circle of friends, with no server.",
        epilog=(
            "examples:\n"
            "  p2pmoments init --name Alice\n"
            "  p2pmoments run\n"
            "  p2pmoments --home /tmp/bob status --json\n\n"
            f"The home (--home or ${HOME_ENV}) holds config and data; without it they go\n"
            "to your platform's user directories."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"p2pmoments {__version__}")
    parser.add_argument(
        "--home",
        metavar="DIR",
        help=f"keep config and data under DIR (default: ${HOME_ENV}, else the user directories)",
    )
    _add(parser.add_subparsers(dest="command", metavar="COMMAND", required=True), COMMANDS)
    return parser


def _add(sub: Any, commands: Sequence[Cmd]) -> None:
    """Add `commands` to the subparsers `sub`, with their arguments and actions."""
    for cmd in commands:
        p = sub.add_parser(
            cmd.name,
            help=cmd.summary,
            description=cmd.summary,
            epilog=f"example:\n  {cmd.example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(func=cmd.run)
        for a in cmd.args:
            group = p.add_mutually_exclusive_group() if isinstance(a, tuple) else p
            for one in a if isinstance(a, tuple) else (a,):
                group.add_argument(*one.names, **one.options)
        if cmd.actions:
            actions = p.add_subparsers(
                dest=f"{cmd.name}_command", metavar="ACTION", required=cmd.action_required
            )
            _add(actions, cmd.actions)
