"""How a command is declared (`Cmd`, `Arg`), the types the command line checks its
values with, and the arguments several commands share."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from p2pmoments.cli.output import EXIT_USAGE, Command


def _address(text: str) -> Any:
    from p2pmoments.config import parse_address

    return _as_argument(parse_address, text)


def _static_peer(text: str) -> Any:
    from p2pmoments.config import parse_static_peer

    return _as_argument(parse_static_peer, text)


def _as_argument(parse: Callable[[str], Any], text: str) -> Any:
    """`parse(text)`, its ValueError told as argparse tells a bad argument."""
    try:
        return parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _wait_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= 60:
        raise argparse.ArgumentTypeError("give between 0 and 60 seconds")
    return value


MAX_EXPIRY = 10 * 365 * 86400  # the API's limit on expires_in


def _duration(text: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    text = text.strip().lower()
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    if not number.isdigit() or int(number) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 10m, 2h or 7d")
    seconds = int(number) * units[unit]
    if seconds > MAX_EXPIRY:
        raise argparse.ArgumentTypeError(f"{text!r} is too long: at most 10 years (3650d)")
    return seconds


@dataclass(frozen=True, slots=True)
class Arg:
    """One argument of a command: what argparse's add_argument takes."""

    names: tuple[str, ...]
    options: dict[str, Any]


def arg(*names: str, **options: Any) -> Arg:
    """An argument, written as add_argument is called."""
    return Arg(names, options)


@dataclass(frozen=True, slots=True, kw_only=True)
class Cmd:
    """A command, or an action of one: its name, what runs it, its help and arguments."""

    name: str
    run: Command
    summary: str
    example: str
    args: tuple[Arg | tuple[Arg, ...], ...] = ()  # a tuple of Args: only one may be given
    actions: tuple[Cmd, ...] = ()  # p2pmoments NAME ACTION ...
    action_required: bool = False


def _needs_action(args: argparse.Namespace, paths: Any) -> int:
    return EXIT_USAGE  # never run: argparse asks for the action first


JSON = arg("--json", action="store_true", help="print JSON")
MOMENT = arg("id", help="the moment's id, or its first characters")
FRIEND = arg("friend", help="name, or the start of the identity")
CIRCLE = arg("circle", help="the circle's name or id")
PNG = arg("--png", metavar="FILE", help="write the code as a PNG image")
SVG = arg("--svg", metavar="FILE", help="write the code as an SVG image")
OUTPUT = arg("-o", "--output", required=True, metavar="FILE", help="where to save it")
