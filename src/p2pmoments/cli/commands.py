"""The table of commands: every command's name, what runs it, its help, example and
arguments, in the order `p2pmoments --help` lists them.

Why so long: it is one table, an entry per command; split, `--help` would lose its one
order and a reader the one place that says what the CLI offers.
"""

from __future__ import annotations

from p2pmoments.cli.arguments import (
    CIRCLE,
    FRIEND,
    JSON,
    MOMENT,
    OUTPUT,
    PNG,
    SVG,
    Cmd,
    _address,
    _duration,
    _needs_action,
    _static_peer,
    _wait_seconds,
    arg,
)
from p2pmoments.cli.devices import (
    cmd_devices,
    cmd_devices_confirm,
    cmd_devices_join,
    cmd_devices_link,
    cmd_devices_refuse,
    cmd_devices_rename,
    cmd_devices_revoke,
)
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
from p2pmoments.cli.notes import NOTE_COMMANDS
from p2pmoments.cli.recovery import RECOVERY_COMMANDS
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
from p2pmoments.cli.versions import FILE_ARGS, cmd_file

COMMANDS: tuple[Cmd, ...] = (
    Cmd(
        name="init",
        run=cmd_init,
        summary="Create your identity (keys), API token, config and database.",
        example="p2pmoments init --name Alice",
        args=(
            arg(
                "--name",
                help="your display name, at most 32 bytes (default: asked for at a terminal, "
                "else the first line of standard input, else your login's name)",
            ),
            arg(
                "--exist-ok",
                action="store_true",
                help="succeed without changes if an identity already exists",
            ),
        ),
    ),
    Cmd(
        name="run",
        run=cmd_run,
        summary="Run the daemon in the foreground until Ctrl-C or SIGTERM.",
        example="p2pmoments run --listen 0.0.0.0:47470 --api 127.0.0.1:0",
        args=(
            arg(
                "--listen",
                type=_address,
                metavar="HOST:PORT",
                help="where peers connect (config network.listen; port 0 picks a free one)",
            ),
            arg(
                "--api",
                type=_address,
                metavar="HOST:PORT",
                help="the control API, loopback only (config api.listen; port 0 picks one)",
            ),
            arg(
                "--no-mdns",
                action="store_true",
                help="do not use mDNS on the local network (config network.mdns)",
            ),
            (
                arg(
                    "--tor",
                    action="store_const",
                    const="on",
                    help="reach friends beyond the LAN through Tor onion services "
                    "(config network.tor)",
                ),
                arg(
                    "--no-tor",
                    dest="tor",
                    action="store_const",
                    const="off",
                    help="do not use Tor, even if it is installed (config network.tor)",
                ),
            ),
            arg(
                "--peer",
                type=_static_peer,
                action="append",
                metavar="IDENTITY@HOST:PORT",
                help="a friend to reach at a fixed address (repeatable; adds to network.peers)",
            ),
            arg(
                "--log-level",
                choices=["debug", "info", "warning", "error"],
                help="how much to log to standard output (config log.level)",
            ),
        ),
    ),
    Cmd(
        name="status",
        run=cmd_status,
        summary="Show the running daemon's identity, addresses and counts.",
        example="p2pmoments status --json | jq .api_url",
        args=(arg("--json", action="store_true", help="print JSON (has api_url and token_file)"),),
    ),
    Cmd(
        name="profile",
        run=cmd_profile,
        summary="Show or change your display name.",
        example="p2pmoments profile --name 'Alice B.'",
        args=(arg("--name", help="the new display name, at most 32 bytes"), JSON),
    ),
    Cmd(
        name="open",
        run=cmd_open,
        summary="Open the web app in your browser, logged in (the daemon must be running).",
        example="p2pmoments open        or   p2pmoments open --print",
        args=(
            arg(
                "--print",
                action="store_true",
                help="only print a single-use login link (valid 2 minutes) to open yourself",
            ),
        ),
    ),
    Cmd(
        name="qr",
        run=cmd_qr,
        summary="Show your pairing QR code for a friend to scan (valid once).",
        example="p2pmoments qr --png code.png",
        args=(PNG, SVG, arg("--link", action="store_true", help="print only the link, as text")),
    ),
    Cmd(
        name="devices",
        run=cmd_devices,
        summary="List your devices, or link a new one (spec/devices.md).",
        example="p2pmoments devices   or   p2pmoments devices link",
        args=(arg("--json", action="store_true", help="print the API's JSON"),),
        actions=(
            Cmd(
                name="link",
                run=cmd_devices_link,
                summary="Show a single-use link (and QR) that makes a new device one of yours.",
                example="p2pmoments devices link --png device.png",
                args=(
                    PNG,
                    SVG,
                    arg(
                        "--yes",
                        action="store_true",
                        help="link whichever device uses it first, without confirming its code",
                    ),
                ),
            ),
            Cmd(
                name="confirm",
                run=cmd_devices_confirm,
                summary="Link the device waiting to join that shows this 6-digit code.",
                example="p2pmoments devices confirm 123456",
                args=(arg("code", help="the 6 digits the new device shows"),),
            ),
            Cmd(
                name="refuse",
                run=cmd_devices_refuse,
                summary="Refuse the device waiting to join with this code (not the one meant).",
                example="p2pmoments devices refuse 123456",
                args=(arg("code", help="the 6 digits `devices` lists"),),
            ),
            Cmd(
                name="join",
                run=cmd_devices_join,
                summary="On a new home, instead of init: become a device of whoever showed "
                "the link.",
                example="p2pmoments --home ~/.p2pm-laptop devices join P2PD:1/... --name laptop",
                args=(
                    arg("link", help="the device link (P2PD:1/...) shown by `devices link`"),
                    arg("--name", help="this device's name (default: the host's name)"),
                ),
            ),
            Cmd(
                name="rename",
                run=cmd_devices_rename,
                summary="Rename one of your devices (on all of them).",
                example="p2pmoments devices rename laptop 'old laptop'",
                args=(
                    arg("device", help="the device's name"),
                    arg("new", metavar="NAME", help="its new name"),
                ),
            ),
            Cmd(
                name="revoke",
                run=cmd_devices_revoke,
                summary="Revoke a lost or stolen device: it receives nothing new; what it had, "
                "it keeps.",
                example="p2pmoments devices revoke laptop",
                args=(arg("device", help="the device's name"),),
            ),
        ),
    ),
    *RECOVERY_COMMANDS,
    Cmd(
        name="pair",
        run=cmd_pair,
        summary="Become friends with whoever showed you their pairing code.",
        example="p2pmoments pair P2PM:1/...   or   p2pmoments pair --image photo.jpg",
        args=(
            arg("link", nargs="?", help="the pairing link (P2PM:1/...)"),
            arg(
                "--image",
                metavar="FILE",
                help="read the code from a photo or screenshot (PNG, JPEG, …)",
            ),
            arg("--no-wait", action="store_true", help="return at once, even if pending"),
            arg(
                "--timeout",
                type=_wait_seconds,
                default=15.0,
                metavar="SECONDS",
                help="how long to wait for the friend's daemon (default 15, at most 60)",
            ),
            arg("--json", action="store_true", help="print the pairing as JSON"),
        ),
    ),
    Cmd(
        name="friends",
        run=cmd_friends,
        summary="List friends and pairings; rename, remove or block one.",
        example="p2pmoments friends rename bob 'Bob (work)'",
        args=(JSON,),
        actions=(
            Cmd(
                name="rename",
                run=cmd_friends_rename,
                summary="Change what you call a friend.",
                example="p2pmoments friends rename Bob 'Bob (work)'",
                args=(FRIEND, arg("name", help="the new name")),
            ),
            *(
                Cmd(
                    name=action,
                    run=_friend_action(method, suffix, verb),
                    summary=summary,
                    example=f"p2pmoments friends {action} Bob",
                    args=(FRIEND,),
                )
                for action, method, suffix, verb, summary in (
                    (
                        "remove",
                        "DELETE",
                        "",
                        "removed",
                        "Stop being friends; their daemon is dropped.",
                    ),
                    ("block", "POST", "/block", "blocked", "Refuse every link from this friend."),
                    (
                        "unblock",
                        "POST",
                        "/unblock",
                        "unblocked",
                        "Accept links from this friend again.",
                    ),
                )
            ),
        ),
    ),
    Cmd(
        name="peers",
        run=cmd_peers,
        summary="Show the daemons connected right now.",
        example="p2pmoments peers --json",
        args=(JSON,),
    ),
    Cmd(
        name="events",
        run=cmd_events,
        summary="Print the daemon's events: friend.*, pairing.*, peer.*, circle.*, moment.*, "
        "transfer.* (spec/openapi.yaml lists each kind).",
        example="p2pmoments events --follow",
        args=(
            arg("--after", type=int, default=0, metavar="ID", help="only events after ID"),
            arg("--follow", action="store_true", help="keep waiting for new events"),
            arg("--json", action="store_true", help="one JSON object per line"),
        ),
    ),
    Cmd(
        name="circles",
        run=cmd_circles,
        summary="List your circles and their members.",
        example="p2pmoments circles --json",
        args=(JSON,),
    ),
    Cmd(
        name="circle",
        run=_needs_action,
        summary="Create, change or delete a circle of friends.",
        example="p2pmoments circle create family --member Bob --member Carol",
        action_required=True,
        actions=(
            Cmd(
                name="create",
                run=cmd_circle_create,
                summary="Create a circle of some of your friends.",
                example="p2pmoments circle create family --member Bob --members-can-post",
                args=(
                    arg("name", help="the circle's name"),
                    arg(
                        "--member",
                        action="append",
                        metavar="FRIEND",
                        help="a friend to include, by name or identity (repeatable)",
                    ),
                    arg(
                        "--members-can-post",
                        action="store_true",
                        help="let every member post (by default only you post; all may comment)",
                    ),
                ),
            ),
            *(
                Cmd(
                    name=action,
                    run=_circle_change(action),
                    summary=summary,
                    example=f"p2pmoments circle {action} family Bob",
                    args=(
                        CIRCLE,
                        arg("friends", nargs="+", metavar="FRIEND", help="name or identity"),
                    ),
                )
                for action, summary in (
                    ("add", "Add friends to a circle (a new key; they see what comes next)."),
                    ("remove", "Remove members: a new key, so they receive nothing new."),
                )
            ),
            Cmd(
                name="rename",
                run=_circle_change("name"),
                summary="Rename a circle.",
                example="p2pmoments circle rename family 'family & co'",
                args=(CIRCLE, arg("new_name", metavar="NAME", help="the new name")),
            ),
            Cmd(
                name="delete",
                run=cmd_circle_delete,
                summary="Forget a circle and its moments on this device.",
                example="p2pmoments circle delete family",
                args=(CIRCLE,),
            ),
        ),
    ),
    Cmd(
        name="post",
        run=cmd_post,
        summary="Post a moment to a circle; prints its id.",
        example="p2pmoments post --circle family --photo beach.jpg --expires 7d 'first steps!'",
        args=(
            arg("--circle", required=True, help="the circle's name or id"),
            arg(
                "--photo",
                action="append",
                metavar="FILE",
                help="a photo (repeatable; at most 100 MiB and 80 megapixels); its location is "
                "removed unless photos.keep_location is set",
            ),
            arg(
                "--file",
                action="append",
                metavar="FILE",
                help="any file, of any size up to 1 TiB (repeatable; streamed, never read whole)",
            ),
            arg(
                "--expires",
                type=_duration,
                metavar="DURATION",
                help="delete it everywhere after this long: 90s, 10m, 2h, 7d, 2w",
            ),
            arg(
                "text",
                nargs="?",
                default="",
                help="what to say, at most 16 KiB of text; - reads it from standard input",
            ),
            arg("--text-file", metavar="FILE", help="read the text from FILE (at most 16 KiB)"),
        ),
    ),
    Cmd(
        name="photo",
        run=_download("photos"),
        summary="Save a moment's photo (or its thumbnail) to a file.",
        example="p2pmoments photo 3fq2k7 2 -o beach.jpg",
        args=(
            MOMENT,
            arg("n", nargs="?", type=int, default=1, help="which photo, from 1 (default 1)"),
            OUTPUT,
            arg("--thumbnail", action="store_true", help="the thumbnail, not the photo"),
        ),
    ),
    Cmd(
        name="file",
        run=cmd_file,
        summary="Save a file attached to a moment (any version of it); add a version, "
        "list them, pick one (spec/moments.md section 9).",
        example="p2pmoments file 3fq2k7 -o report.pdf\n"
        "  p2pmoments file update 3fq2k7 report.pdf --note 'Q3 figures'\n"
        "  p2pmoments file versions 3fq2k7\n"
        "  p2pmoments file 3fq2k7 -o old.pdf --version 1\n"
        "  p2pmoments file pick 3fq2k7 3",
        args=(*FILE_ARGS,),
    ),
    Cmd(
        name="feed",
        run=cmd_feed,
        summary="Show the newest moments, with comments and reactions.",
        example="p2pmoments feed --circle family",
        args=(
            arg("--circle", help="only this circle"),
            arg("--limit", type=int, default=20, help="how many a page (default 20, at most 200)"),
            arg("--cursor", help="start past this point (what the last page said: --cursor X)"),
            arg("--all", action="store_true", help="every page, to the oldest moment"),
            arg(
                "--json",
                action="store_true",
                help='print a page as the API does: {"moments": [...], "next_cursor": ...}',
            ),
        ),
    ),
    Cmd(
        name="moment",
        run=cmd_moment,
        summary="Show one moment.",
        example="p2pmoments moment 3fq2k7",
        args=(MOMENT, JSON),
    ),
    Cmd(
        name="comment",
        run=cmd_comment,
        summary="Comment on a moment.",
        example="p2pmoments comment 3fq2k7 'so sweet'",
        args=(
            MOMENT,
            arg("text", help="the comment, at most 16 KiB of text; - reads it from standard input"),
        ),
    ),
    Cmd(
        name="react",
        run=cmd_react,
        summary="React to a moment with an emoji.",
        example="p2pmoments react 3fq2k7 🎉",
        args=(MOMENT, arg("emoji", help="one emoji")),
    ),
    Cmd(
        name="retract",
        run=cmd_retract,
        summary="Retract your moment: its content is deleted everywhere.",
        example="p2pmoments retract 3fq2k7",
        args=(MOMENT,),
    ),
    *NOTE_COMMANDS,
    Cmd(
        name="service",
        run=_needs_action,
        summary="Run the daemon at login as a systemd user service.",
        example="p2pmoments service install",
        action_required=True,
        actions=(
            Cmd(
                name="install",
                run=cmd_service_install,
                summary="Write and enable a systemd user unit that runs the daemon at login.",
                example="p2pmoments --home ~/p2p service install",
                args=(
                    arg(
                        "--no-start", action="store_true", help="enable it, but do not start it now"
                    ),
                    arg("--print", action="store_true", help="only print the unit file"),
                ),
            ),
            Cmd(
                name="uninstall",
                run=cmd_service_uninstall,
                summary="Stop, disable and remove the systemd user unit.",
                example="p2pmoments service uninstall",
            ),
        ),
    ),
)
