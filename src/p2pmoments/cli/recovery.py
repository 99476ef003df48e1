"""Recovery (spec/devices.md section 5): make the recovery sheet; on a new home, recover
from it and revoke the devices that were lost."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from p2pmoments.cli.arguments import Cmd, arg
from p2pmoments.cli.output import EXIT_ERROR, EXIT_OK, EXIT_USAGE, _home_flag, _print_json
from p2pmoments.client import ApiClient
from p2pmoments.paths import Paths

KEEP_IT = (
    "Keep it where you keep a passport: printed or written on paper, or this file on a "
    "USB stick in a drawer. It gives back your friends and circles on a new machine if "
    "you lose every device, and it outranks all of them: whoever holds it can be you. "
    "It is shown this once and kept on no device."
)


def cmd_recovery(args: argparse.Namespace, paths: Paths) -> int:
    client = ApiClient(paths)
    status = client.call("GET", "/recovery")
    if not status["can_make"]:
        if args.json:
            _print_json(status)
        elif status["recovering"]:
            print(f"This device is recovering: see p2pmoments{_home_flag(paths)} recover")
        elif status["set"]:
            print(
                "You have a recovery sheet already (it is shown only when it is made): "
                "keep the one you have."
            )
        else:
            print("Make your recovery sheet on your first device: it holds what the sheet needs.")
        return EXIT_OK
    if args.save and Path(args.save).exists():
        print(f"{args.save} exists: give a new file name", file=sys.stderr)
        return EXIT_USAGE
    sheet = client.call("POST", "/recovery", {})
    if args.json:
        _print_json(sheet)
    if args.save:
        fd = os.open(args.save, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(sheet["sheet"] + "\n")
        print(f"wrote your recovery sheet to {args.save}", file=sys.stderr)
    elif not args.json:
        print("Your recovery sheet:\n")
        for line in sheet["lines"]:
            print(f"    {line}")
        print()
    if not args.json:
        print(KEEP_IT)
        print(
            "\nIf you lose every device, on a new machine:\n"
            "  p2pmoments --home DIR recover SHEET-FILE   (or paste the sheet when asked)\n"
            "  p2pmoments --home DIR run\n"
            "and once your friends and circles are back:\n"
            "  p2pmoments --home DIR recover --revoke-others"
        )
    return EXIT_OK


def _read_sheet(source: str | None) -> str:
    if source and source != "-":
        return Path(source).read_text(encoding="ascii", errors="replace")
    if sys.stdin.isatty():
        print("Type or paste your recovery sheet, then an empty line:", file=sys.stderr)
    lines = []
    for _ in range(64):  # a sheet is 6 lines as printed: bounded
        line = sys.stdin.readline()
        if not line.strip():
            break
        lines.append(line)
    return "".join(lines)


def cmd_recover(args: argparse.Namespace, paths: Paths) -> int:
    from p2pmoments.home import is_initialised

    if not is_initialised(paths):
        return _recover_home(args, paths)
    client = ApiClient(paths)
    if args.revoke_others or args.revoke:
        body = {} if args.revoke_others else {"devices": args.revoke}
        answer = client.call("POST", "/recovery/revoke", body)
        if args.json:
            _print_json(answer)
            return EXIT_OK
        print(
            f"revoked {', '.join(repr(n) for n in answer['revoked']) or 'nothing'} with your "
            "recovery key: they receive nothing new from anyone, and nothing they sign "
            "from now on is yours. This device no longer holds the recovery sheet; keep "
            "the sheet: it is still yours, and it is also this device's key."
        )
        return EXIT_OK
    status = client.call("GET", "/recovery")
    if args.json:
        _print_json(status)
        return EXIT_OK
    if not status["recovering"]:
        print("This device is not recovering from a recovery sheet.")
        return EXIT_OK
    print(
        f"Recovering: {status['friends']} friend(s) and {status['circles']} circle(s) back "
        "so far (they come back as friends' and co-members' daemons link with this one).\n"
        f"Your other devices: {', '.join(status['devices']) or 'none known yet'}.\n"
        f"Once everything is back: p2pmoments{_home_flag(paths)} recover --revoke-others"
    )
    return EXIT_OK


def _recover_home(args: argparse.Namespace, paths: Paths) -> int:
    import socket

    from p2pmoments.core.errors import P2PMomentsError
    from p2pmoments.home import recover_home

    if args.revoke_others or args.revoke:
        print(
            "first recover (without --revoke), start the daemon, and revoke once your "
            "friends and circles are back",
            file=sys.stderr,
        )
        return EXIT_USAGE
    device = args.device or socket.gethostname().split(".")[0][:32] or "device"
    try:
        recover_home(paths, _read_sheet(args.sheet), args.name or "Me", device)
    except OSError as exc:
        print(f"cannot read the sheet: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except P2PMomentsError as exc:
        print(f"not a recovery sheet: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(
        f"This home is now your device {device!r}, made from your recovery sheet.\n"
        f"Start it: p2pmoments{_home_flag(paths)} run\n"
        "Your friends' and co-members' daemons find it and link with it: your friends, "
        "circles and their moments come back as they do.\n"
        f"Then revoke the devices you lost: p2pmoments{_home_flag(paths)} recover "
        "--revoke-others (or --revoke NAME)."
    )
    return EXIT_OK


# The commands' rows in cli/commands.py's table.
RECOVERY_COMMANDS = (
    Cmd(
        name="recovery",
        run=cmd_recovery,
        summary="Make your recovery sheet (once, on your first device): it gives you back "
        "if you lose every device.",
        example="p2pmoments recovery --save recovery-sheet.txt",
        args=(
            arg("--save", metavar="FILE", help="write the sheet to FILE (mode 0600) instead"),
            arg("--json", action="store_true", help="print the API's JSON"),
        ),
    ),
    Cmd(
        name="recover",
        run=cmd_recover,
        summary="On a new home, instead of init: become yourself again from your recovery "
        "sheet; later, revoke the devices you lost.",
        example="p2pmoments --home ~/.p2pm-new recover sheet.txt   then   "
        "p2pmoments --home ~/.p2pm-new recover --revoke-others",
        args=(
            arg("sheet", nargs="?", help="the sheet's file (default: read it from stdin)"),
            arg("--name", help="your display name until friends are back (default: Me)"),
            arg("--device", help="this device's name (default: the host's name)"),
            (
                arg(
                    "--revoke-others",
                    action="store_true",
                    help="with the daemon running: revoke every other device of yours",
                ),
                arg(
                    "--revoke",
                    action="append",
                    metavar="DEVICE",
                    help="with the daemon running: revoke this device (repeat for more)",
                ),
            ),
            arg("--json", action="store_true", help="print the API's JSON"),
        ),
    ),
)
