"""The table of commands: every command's name, help, example and arguments, and what
runs it.

Why so long: every command and argument with its help, written out one by one.
"""

from __future__ import annotations

import argparse
from typing import Any

from p2pmoments import __version__
from p2pmoments.cli.devices import cmd_devices, cmd_devices_join, cmd_devices_link
from p2pmoments.cli.friends import (
    _friend_action,
    cmd_friends,
    cmd_friends_rename,
    cmd_pair,
    cmd_peers,
    cmd_qr,
)
from p2pmoments.cli.moments import (
    _circle_change,
    _download,
    cmd_circle_create,
    cmd_circle_delete,
    cmd_circles,
    cmd_comment,
    cmd_feed,
    cmd_moment,
    cmd_post,
    cmd_react,
    cmd_retract,
)
from p2pmoments.cli.output import (
    EXIT_USAGE,
    Command,
)
from p2pmoments.cli.setup import (
    cmd_events,
    cmd_init,
    cmd_open,
    cmd_profile,
    cmd_run,
    cmd_service_install,
    cmd_service_uninstall,
    cmd_status,
)
from p2pmoments.paths import HOME_ENV


def _address(text: str) -> Any:
    from p2pmoments.config import parse_address

    try:
        return parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _static_peer(text: str) -> Any:
    from p2pmoments.config import parse_static_peer

    try:
        return parse_static_peer(text)
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


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
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
        formatter_class=fmt,
    )
    parser.add_argument("--version", action="version", version=f"p2pmoments {__version__}")
    parser.add_argument(
        "--home",
        metavar="DIR",
        help=f"keep config and data under DIR (default: ${HOME_ENV}, else the user directories)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, func: Command, summary: str, example: str, parent: Any = sub) -> Any:
        p = parent.add_parser(
            name,
            help=summary,
            description=summary,
            epilog=f"example:\n  {example}",
            formatter_class=fmt,
        )
        p.set_defaults(func=func)
        return p

    p = add(
        "init",
        cmd_init,
        "Create your identity (keys), API token, config and database.",
        "p2pmoments init --name Alice",
    )
    p.add_argument(
        "--name",
        help="your display name, at most 32 bytes (default: asked for at a terminal, else the "
        "first line of standard input, else your login's name)",
    )
    p.add_argument(
        "--exist-ok",
        action="store_true",
        help="succeed without changes if an identity already exists",
    )

    p = add(
        "run",
        cmd_run,
        "Run the daemon in the foreground until Ctrl-C or SIGTERM.",
        "p2pmoments run --listen 0.0.0.0:47470 --api 127.0.0.1:0",
    )
    p.add_argument(
        "--listen",
        type=_address,
        metavar="HOST:PORT",
        help="where peers connect (config network.listen; port 0 picks a free one)",
    )
    p.add_argument(
        "--api",
        type=_address,
        metavar="HOST:PORT",
        help="the control API, loopback only (config api.listen; port 0 picks one)",
    )
    p.add_argument(
        "--no-mdns",
        action="store_true",
        help="do not use mDNS on the local network (config network.mdns)",
    )
    tor = p.add_mutually_exclusive_group()
    tor.add_argument(
        "--tor",
        action="store_const",
        const="on",
        help="reach friends beyond the LAN through Tor onion services (config network.tor)",
    )
    tor.add_argument(
        "--no-tor",
        dest="tor",
        action="store_const",
        const="off",
        help="do not use Tor, even if it is installed (config network.tor)",
    )
    p.add_argument(
        "--peer",
        type=_static_peer,
        action="append",
        metavar="IDENTITY@HOST:PORT",
        help="a friend to reach at a fixed address (repeatable; adds to network.peers)",
    )
    p.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="how much to log to standard output (config log.level)",
    )

    p = add(
        "status",
        cmd_status,
        "Show the running daemon's identity, addresses and counts.",
        "p2pmoments status --json | jq .api_url",
    )
    p.add_argument("--json", action="store_true", help="print JSON (has api_url and token_file)")

    p = add(
        "profile",
        cmd_profile,
        "Show or change your display name.",
        "p2pmoments profile --name 'Alice B.'",
    )
    p.add_argument("--name", help="the new display name, at most 32 bytes")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add(
        "open",
        cmd_open,
        "Open the web app in your browser, logged in (the daemon must be running).",
        "p2pmoments open        or   p2pmoments open --print",
    )
    p.add_argument(
        "--print",
        action="store_true",
        help="only print a single-use login link (valid 2 minutes) to open yourself",
    )

    p = add(
        "qr",
        cmd_qr,
        "Show your pairing QR code for a friend to scan (valid once).",
        "p2pmoments qr --png code.png",
    )
    p.add_argument("--png", metavar="FILE", help="write the code as a PNG image")
    p.add_argument("--svg", metavar="FILE", help="write the code as an SVG image")
    p.add_argument("--link", action="store_true", help="print only the link, as text")

    p = add(
        "devices",
        cmd_devices,
        "List your devices, or link a new one (spec/devices.md).",
        "p2pmoments devices   or   p2pmoments devices link",
    )
    p.add_argument("--json", action="store_true", help="print the API's JSON")
    devices_sub = p.add_subparsers(dest="devices_command", metavar="ACTION")
    q = add(
        "link",
        cmd_devices_link,
        "Show a single-use link (and QR) that makes a new device one of yours.",
        "p2pmoments devices link --png device.png",
        parent=devices_sub,
    )
    q.add_argument("--png", metavar="FILE", help="write the code as a PNG image")
    q.add_argument("--svg", metavar="FILE", help="write the code as an SVG image")
    q = add(
        "join",
        cmd_devices_join,
        "On a new home, instead of init: become a device of whoever showed the link.",
        "p2pmoments --home ~/.p2pm-laptop devices join P2PD:1/... --name laptop",
        parent=devices_sub,
    )
    q.add_argument("link", help="the device link (P2PD:1/...) shown by `devices link`")
    q.add_argument("--name", help="this device's name (default: the host's name)")

    p = add(
        "pair",
        cmd_pair,
        "Become friends with whoever showed you their pairing code.",
        "p2pmoments pair P2PM:1/...   or   p2pmoments pair --image photo.jpg",
    )
    p.add_argument("link", nargs="?", help="the pairing link (P2PM:1/...)")
    p.add_argument(
        "--image",
        metavar="FILE",
        help="read the code from a photo or screenshot (PNG, JPEG, …)",
    )
    p.add_argument("--no-wait", action="store_true", help="return at once, even if pending")
    p.add_argument(
        "--timeout",
        type=_wait_seconds,
        default=15.0,
        metavar="SECONDS",
        help="how long to wait for the friend's daemon (default 15, at most 60)",
    )
    p.add_argument("--json", action="store_true", help="print the pairing as JSON")

    p = add(
        "friends",
        cmd_friends,
        "List friends and pairings; rename, remove or block one.",
        "p2pmoments friends rename bob 'Bob (work)'",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    friend_sub = p.add_subparsers(dest="friends_command", metavar="ACTION")
    q = add(
        "rename",
        cmd_friends_rename,
        "Change what you call a friend.",
        "p2pmoments friends rename Bob 'Bob (work)'",
        parent=friend_sub,
    )
    q.add_argument("friend", help="name, or the start of the identity")
    q.add_argument("name", help="the new name")
    for action, method, suffix, verb, summary in (
        ("remove", "DELETE", "", "removed", "Stop being friends; their daemon is dropped."),
        ("block", "POST", "/block", "blocked", "Refuse every link from this friend."),
        ("unblock", "POST", "/unblock", "unblocked", "Accept links from this friend again."),
    ):
        q = add(
            action,
            _friend_action(method, suffix, verb),
            summary,
            f"p2pmoments friends {action} Bob",
            parent=friend_sub,
        )
        q.add_argument("friend", help="name, or the start of the identity")

    p = add("peers", cmd_peers, "Show the daemons connected right now.", "p2pmoments peers --json")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add(
        "events",
        cmd_events,
        "Print the daemon's events: friend.*, pairing.*, peer.*, circle.*, moment.*, "
        "transfer.* (spec/openapi.yaml lists each kind).",
        "p2pmoments events --follow",
    )
    p.add_argument("--after", type=int, default=0, metavar="ID", help="only events after ID")
    p.add_argument("--follow", action="store_true", help="keep waiting for new events")
    p.add_argument("--json", action="store_true", help="one JSON object per line")

    p = add(
        "circles", cmd_circles, "List your circles and their members.", "p2pmoments circles --json"
    )
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add(
        "circle",
        lambda a, p: EXIT_USAGE,
        "Create, change or delete a circle of friends.",
        "p2pmoments circle create family --member Bob --member Carol",
    )
    circle_sub = p.add_subparsers(dest="circle_command", metavar="ACTION", required=True)
    q = add(
        "create",
        cmd_circle_create,
        "Create a circle of some of your friends.",
        "p2pmoments circle create family --member Bob --members-can-post",
        parent=circle_sub,
    )
    q.add_argument("name", help="the circle's name")
    q.add_argument(
        "--member",
        action="append",
        metavar="FRIEND",
        help="a friend to include, by name or identity (repeatable)",
    )
    q.add_argument(
        "--members-can-post",
        action="store_true",
        help="let every member post (by default only you post; all may comment)",
    )
    for action, field, summary in (
        ("add", "add", "Add friends to a circle (a new key; they see what comes next)."),
        ("remove", "remove", "Remove members: a new key, so they receive nothing new."),
    ):
        q = add(
            action,
            _circle_change(field),
            summary,
            f"p2pmoments circle {action} family Bob",
            parent=circle_sub,
        )
        q.add_argument("circle", help="the circle's name or id")
        q.add_argument("friends", nargs="+", metavar="FRIEND", help="name or identity")
    q = add(
        "rename",
        _circle_change("name"),
        "Rename a circle.",
        "p2pmoments circle rename family 'family & co'",
        parent=circle_sub,
    )
    q.add_argument("circle", help="the circle's name or id")
    q.add_argument("new_name", metavar="NAME", help="the new name")
    q = add(
        "delete",
        cmd_circle_delete,
        "Forget a circle and its moments on this device.",
        "p2pmoments circle delete family",
        parent=circle_sub,
    )
    q.add_argument("circle", help="the circle's name or id")

    p = add(
        "post",
        cmd_post,
        "Post a moment to a circle; prints its id.",
        "p2pmoments post --circle family --photo beach.jpg --expires 7d 'first steps!'",
    )
    p.add_argument("--circle", required=True, help="the circle's name or id")
    p.add_argument(
        "--photo",
        action="append",
        metavar="FILE",
        help="a photo (repeatable; at most 100 MiB and 80 megapixels); its location is removed"
        " unless photos.keep_location is set",
    )
    p.add_argument(
        "--file",
        action="append",
        metavar="FILE",
        help="any file, of any size up to 1 TiB (repeatable; streamed, never read whole)",
    )
    p.add_argument(
        "--expires",
        type=_duration,
        metavar="DURATION",
        help="delete it everywhere after this long: 90s, 10m, 2h, 7d, 2w",
    )
    p.add_argument(
        "text",
        nargs="?",
        default="",
        help="what to say, at most 16 KiB of text; - reads it from standard input",
    )
    p.add_argument("--text-file", metavar="FILE", help="read the text from FILE (at most 16 KiB)")

    p = add(
        "photo",
        _download("photos"),
        "Save a moment's photo (or its thumbnail) to a file.",
        "p2pmoments photo 3fq2k7 2 -o beach.jpg",
    )
    p.add_argument("id", help="the moment's id, or its first characters")
    p.add_argument("n", nargs="?", type=int, default=1, help="which photo, from 1 (default 1)")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="where to save it")
    p.add_argument("--thumbnail", action="store_true", help="the thumbnail, not the photo")

    p = add(
        "file",
        _download("files"),
        "Save a file attached to a moment.",
        "p2pmoments file 3fq2k7 -o report.pdf",
    )
    p.add_argument("id", help="the moment's id, or its first characters")
    p.add_argument("n", nargs="?", type=int, default=1, help="which file, from 1 (default 1)")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="where to save it")

    p = add(
        "feed",
        cmd_feed,
        "Show the newest moments, with comments and reactions.",
        "p2pmoments feed --circle family",
    )
    p.add_argument("--circle", help="only this circle")
    p.add_argument(
        "--limit", type=int, default=20, help="how many a page (default 20, at most 200)"
    )
    p.add_argument("--cursor", help="start past this point (what the last page said: --cursor X)")
    p.add_argument("--all", action="store_true", help="every page, to the oldest moment")
    p.add_argument(
        "--json",
        action="store_true",
        help='print a page as the API does: {"moments": [...], "next_cursor": ...}',
    )

    p = add("moment", cmd_moment, "Show one moment.", "p2pmoments moment 3fq2k7")
    p.add_argument("id", help="the moment's id, or its first characters")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add("comment", cmd_comment, "Comment on a moment.", "p2pmoments comment 3fq2k7 'so sweet'")
    p.add_argument("id", help="the moment's id, or its first characters")
    p.add_argument(
        "text", help="the comment, at most 16 KiB of text; - reads it from standard input"
    )

    p = add("react", cmd_react, "React to a moment with an emoji.", "p2pmoments react 3fq2k7 🎉")
    p.add_argument("id", help="the moment's id, or its first characters")
    p.add_argument("emoji", help="one emoji")

    p = add(
        "retract",
        cmd_retract,
        "Retract your moment: its content is deleted everywhere.",
        "p2pmoments retract 3fq2k7",
    )
    p.add_argument("id", help="the moment's id, or its first characters")

    p = add(
        "service",
        lambda a, p: EXIT_USAGE,
        "Run the daemon at login as a systemd user service.",
        "p2pmoments service install",
    )
    service_sub = p.add_subparsers(dest="service_command", metavar="ACTION", required=True)
    q = add(
        "install",
        cmd_service_install,
        "Write and enable a systemd user unit that runs the daemon at login.",
        "p2pmoments --home ~/p2p service install",
        parent=service_sub,
    )
    q.add_argument("--no-start", action="store_true", help="enable it, but do not start it now")
    q.add_argument("--print", action="store_true", help="only print the unit file")
    add(
        "uninstall",
        cmd_service_uninstall,
        "Stop, disable and remove the systemd user unit.",
        "p2pmoments service uninstall",
        parent=service_sub,
    )
    return parser
