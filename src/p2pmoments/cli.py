"""The `p2pmoments` command. Every command but init, run and service is a client
of the running daemon's control API, never of its database.

Why so long: it declares every command with its help and example, and prints each
answer for people; each command is a few lines, and keeping them in one module keeps
the CLI's import, and so its start-up, small (tests/test_cli_thin.py).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import shlex
import sys
import time
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from p2pmoments import __version__
from p2pmoments.client import ApiClient
from p2pmoments.core.errors import P2PMomentsError
from p2pmoments.errors import ConfigError
from p2pmoments.paths import HOME_ENV, Paths, resolve_paths

if TYPE_CHECKING:
    from p2pmoments.config import Config

__all__ = ["main"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2

Command = Callable[[argparse.Namespace, Paths], int]


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


def _ask_name() -> str | None:
    """The display name to start with: asked for at a terminal, read from the first line
    of piped input (`echo Alice | make run`), else the login's. None if a piped name is
    too long (said on stderr): there is no one to ask again."""
    default = _default_name()
    if not sys.stdin.isatty():
        piped = sys.stdin.readline().strip()
        if len(piped.encode("utf-8")) > 32:
            print(
                "The name on standard input is over 32 bytes: give a shorter one "
                "(a short name or a first name).",
                file=sys.stderr,
            )
            return None
        return piped or default
    while True:
        try:
            given = input(f"Your name, as your friends will see it [{default}]: ").strip()
        except EOFError:
            return default
        if not given:
            return default
        if len(given.encode("utf-8")) <= 32:
            return given
        print("At most 32 bytes, please (a short name or a first name).", file=sys.stderr)


def _default_name() -> str:
    try:
        return getpass.getuser().capitalize()[:32] or "Me"
    except (KeyError, OSError):
        return "Me"


def cmd_init(args: argparse.Namespace, paths: Paths) -> int:
    from p2pmoments.home import init_home, is_initialised

    if args.exist_ok and is_initialised(paths):
        print(f"an identity already exists in {paths.data_dir}; keeping it")
        return EXIT_OK
    name = args.name or _ask_name()
    if name is None:
        return EXIT_USAGE
    identity = init_home(paths, name)
    print(
        f"created identity {identity.public.text}\n"
        f"  config: {paths.config_file}\n"
        f"  data:   {paths.data_dir}\n"
        f"start the daemon with: p2pmoments{_home_flag(paths)} run"
    )
    return EXIT_OK


def _home_flag(paths: Paths) -> str:
    return f" --home {paths.home}" if paths.home is not None else ""


def _load_config(args: argparse.Namespace, paths: Paths) -> Config:
    from p2pmoments.config import load_config

    config = load_config(paths.config_file)
    return config.with_overrides(
        listen=args.listen,
        api_listen=args.api,
        mdns=False if args.no_mdns else None,
        tor=args.tor,
        log_level=args.log_level,
        peers=(*config.peers, *args.peer) if args.peer else None,
    )


def cmd_run(args: argparse.Namespace, paths: Paths) -> int:
    from p2pmoments.daemon import run_daemon
    from p2pmoments.logs import configure_logging

    config = _load_config(args, paths)
    configure_logging(config.log_level)
    run_daemon(paths, config)
    return EXIT_OK


# What a terminal would obey rather than show: C0 and C1 controls but for tab and line
# feed (an escape sequence in a friend's name could retitle the window, rewrite the
# screen or, in some terminals, write files), and the bidirectional overrides and
# isolates (they make a file "gpj.exe" read as "exe.jpg").
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


class _Plain:
    """A text stream that shows what peers chose (names, texts, file names) as text:
    every character a terminal would obey is replaced by U+FFFD. The CLI's own escape
    sequences (the QR code's colours) go to the stream underneath, `raw`."""

    def __init__(self, raw: TextIO) -> None:
        self.raw = raw

    def write(self, text: str) -> int:
        return self.raw.write(_UNSAFE.sub("\ufffd", text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


def _print_raw(text: str) -> None:
    """Print the CLI's own text, escape sequences included (not a peer's)."""
    out = sys.stdout
    print(text, file=out.raw if isinstance(out, _Plain) else out)


def _print_json(value: Any) -> None:
    """JSON as the API gave it; the characters a terminal would obey escaped as \\uXXXX
    (JSON escapes C0 itself), so the data stays exact and the terminal safe."""
    text = json.dumps(value, indent=2, ensure_ascii=False)
    print(_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text))


def cmd_status(args: argparse.Namespace, paths: Paths) -> int:
    status = ApiClient(paths).call("GET", "/status")
    if args.json:
        _print_json(status)
        return EXIT_OK
    uptime = max(0, int(time.time() - float(status["started_at"])))
    print(
        f"Name:      {status['name']}\n"
        f"Identity:  {status['identity']}\n"
        f"Peers on:  {', '.join(status['listen'])}"
        f"{'' if status['mdns'] else '  (mDNS off)'}\n"
        f"API:       {status['api_url']}\n"
        f"Peers:     {status['peers_connected']} connected\n"
        f"Tor:       {_tor_line(status['tor'])}\n"
        f"Friends:   {status['friends']}    Circles: {status['circles']}    "
        f"Moments: {status['moments']}\n"
        f"Up:        {uptime // 3600}h {uptime % 3600 // 60}m {uptime % 60}s (pid {status['pid']})"
    )
    return EXIT_OK


def _tor_line(tor: dict[str, Any]) -> str:
    state = tor["state"]
    if state == "off":
        return "off (network.tor)"
    if state == "missing":
        return f"not installed: {tor['error']}"
    if state == "failed":
        return f"failed, trying again: {tor['error']}"
    if not tor["bootstrapped"]:
        return f"bootstrapping ({tor['bootstrap']} %), onion {tor['onion']}"
    published = "published" if tor["published"] else "publishing"
    return (
        f"bootstrapped, onion {tor['onion']} ({published}, "
        f"{tor['authorized_clients']} clients admitted)"
    )


def cmd_profile(args: argparse.Namespace, paths: Paths) -> int:
    client = ApiClient(paths)
    if args.name is not None:
        profile = client.call("PATCH", "/profile", {"name": args.name})
    else:
        profile = client.call("GET", "/profile")
    if args.json:
        _print_json(profile)
    else:
        print(f"{profile['name']}  {profile['identity']}")
    return EXIT_OK


def _when(seconds: float | None) -> str:
    if not seconds:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds))


def _redirect_page(url: str) -> bytes:
    """A page that sends the browser on to `url` (as Jupyter's jpserver-*-open.html)."""
    import html

    safe = html.escape(url, quote=True)
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="refresh" content="0;url={safe}">'
        '<meta name="referrer" content="no-referrer"><title>Opening Moments</title></head>'
        f'<body><p>Opening Moments… If nothing happens, <a href="{safe}">click here</a>.</p>'
        "</body></html>\n"
    ).encode()


def cmd_open(args: argparse.Namespace, paths: Paths) -> int:
    import webbrowser

    from p2pmoments.files import write_file_atomically

    link = ApiClient(paths).call("POST", "/login-links")
    if args.print:
        print(link["url"])
        print(
            f"Open it in your browser: it logs you in once, until {_when(link['expires_at'])}.",
            file=sys.stderr,
        )
        return EXIT_OK
    # The browser gets the path of a 0600 file, not the link: the token stays out of the
    # browser's argv, where other users of this machine could read it.
    write_file_atomically(paths.open_file, _redirect_page(link["url"]), mode=0o600)
    if not webbrowser.open(paths.open_file.as_uri()):
        raise P2PMomentsError(
            f"no browser could be started; run `p2pmoments{_home_flag(paths)} open --print` "
            "and open the link it prints"
        )
    print(f"Opened Moments in your browser ({link['url'].split('/login', 1)[0]}/).")
    return EXIT_OK


def cmd_qr(args: argparse.Namespace, paths: Paths) -> int:
    from p2pmoments import qr
    from p2pmoments.files import write_file_atomically

    answer = ApiClient(paths).call("GET", "/pairing/link")
    link, expires = answer["link"], answer["expires_at"]
    wrote = []
    if args.png:
        write_file_atomically(Path(args.png), qr.render_png(link), mode=0o644)
        wrote.append(args.png)
    if args.svg:
        write_file_atomically(Path(args.svg), qr.render_svg(link), mode=0o644)
        wrote.append(args.svg)
    if args.link:
        print(link)
    elif not wrote:
        _print_raw(qr.render_terminal(link))
        print(f"\nShow this to a friend to scan; it works once, until {_when(expires)}.")
        print(f"Or send them the link:\n{link}")
    for path in wrote:
        print(f"wrote {path} (valid once, until {_when(expires)})", file=sys.stderr)
    return EXIT_OK


def cmd_devices(args: argparse.Namespace, paths: Paths) -> int:
    answer = ApiClient(paths).call("GET", "/devices")
    if args.json:
        _print_json(answer)
        return EXIT_OK
    devices = answer["devices"]
    for d in devices:
        where = "this device" if d["this"] else ("linked" if d.get("linked") else "not linked now")
        print(f"{d['name']}  ({where})")
    if len(devices) == 1:
        print(f"\nLink another: p2pmoments{_home_flag(paths)} devices link")
    return EXIT_OK


def cmd_devices_link(args: argparse.Namespace, paths: Paths) -> int:
    from p2pmoments import qr
    from p2pmoments.files import write_file_atomically

    answer = ApiClient(paths).call("POST", "/devices/link", {})
    link, expires = answer["link"], answer["expires_at"]
    wrote = []
    if args.png:
        write_file_atomically(Path(args.png), qr.render_png(link), mode=0o600)
        wrote.append(args.png)
    if args.svg:
        write_file_atomically(Path(args.svg), qr.render_svg(link), mode=0o600)
        wrote.append(args.svg)
    if not wrote:
        _print_raw(qr.render_terminal(link))
    print(
        f"\nOn the new device, instead of init:\n  p2pmoments --home DIR devices join {link}\n"
        f"then start it (p2pmoments --home DIR run). The link works once, until "
        f"{_when(expires)}; it makes the new device yours: show it to no one else."
    )
    for path in wrote:
        print(f"wrote {path} (valid once, until {_when(expires)})", file=sys.stderr)
    return EXIT_OK


def cmd_devices_rename(args: argparse.Namespace, paths: Paths) -> int:
    ApiClient(paths).call("PATCH", f"/devices/{_q(args.device, 'device')}", {"name": args.new})
    print(f"renamed {args.device!r} to {args.new!r} on all your devices")
    return EXIT_OK


def cmd_devices_revoke(args: argparse.Namespace, paths: Paths) -> int:
    answer = ApiClient(paths).call("POST", f"/devices/{_q(args.device, 'device')}/revoke", {})
    print(
        f"revoked {answer['revoked']!r}: from now on it receives nothing new from your devices, "
        "friends or co-members, and nothing it signs is taken as yours. What it already "
        "had, it keeps: a lost device still holds what it had received."
    )
    return EXIT_OK


def cmd_devices_join(args: argparse.Namespace, paths: Paths) -> int:
    import socket

    from p2pmoments.home import join_home

    name = args.name or socket.gethostname().split(".")[0][:32] or "device"
    code = join_home(paths, args.link, name)
    print(
        f"This home is now {code.name}'s device {name!r}, with keys of its own.\n"
        f"Start it: p2pmoments{_home_flag(paths)} run\n"
        f"It links itself to {code.name}'s device (which must be running, within "
        f"{_when(code.expires)}) and then has everything {code.name} has."
    )
    return EXIT_OK


def cmd_pair(args: argparse.Namespace, paths: Paths) -> int:
    client = ApiClient(paths)  # fail early if no daemon runs
    if args.image:
        from p2pmoments import qr

        try:
            data = Path(args.image).read_bytes()
        except OSError as exc:
            raise P2PMomentsError(f"cannot read {args.image}: {exc.strerror}") from None
        found = [t for t in qr.decode_image(data) if t.upper().startswith("P2PM:")]
        if not found:
            raise P2PMomentsError(f"no p2pmoments pairing code found in {args.image}")
        link = found[0]
    elif args.link:
        link = args.link
    else:
        raise P2PMomentsError("give the pairing link, or --image FILE with a photo of the code")
    wait = 0 if args.no_wait else args.timeout
    pairing = client.call("POST", "/friends", {"link": link, "wait": wait})["pairing"]
    name, state = pairing["name"], pairing["state"]
    if args.json:
        _print_json(pairing)
    elif state == "confirmed":
        print(f"You and {name} are now friends.")
    elif state == "pending":
        print(
            f"Pending: {name} could not be reached yet. Pairing completes by itself when "
            f"their daemon can be reached (on the LAN, or through Tor), until the code "
            f"expires at {_when(pairing['expires_at'])}."
        )
    elif state == "refused":
        print(
            f"{name}'s daemon refused this code: {pairing['reason'] or 'no reason given'}. "
            f"Ask {name} to show you a fresh code."
        )
    else:
        print(f"Pairing with {name}: {state} {pairing['reason']}".rstrip())
    return EXIT_OK if state in ("confirmed", "pending") else EXIT_ERROR


def cmd_friends(args: argparse.Namespace, paths: Paths) -> int:
    answer = ApiClient(paths).call("GET", "/friends")
    if args.json:
        _print_json(answer)
        return EXIT_OK
    friends, pairings = answer["friends"], answer["pairings"]
    if not friends:
        print(
            "No friends yet: show your code with `p2pmoments qr`, or scan one with "
            "`p2pmoments pair`."
        )
    for f in friends:
        mark = "●" if f["connected"] else " "
        state = "  (blocked)" if f["state"] == "blocked" else ""
        aka = f" (calls themselves {f['their_name']})" if f["their_name"] != f["name"] else ""
        seen = "online" if f["connected"] else f"last seen {_when(f['last_seen'])}"
        since = _when(f["since"])
        print(f"{mark} {f['name']}{aka}  {f['identity'][:12]}  since {since}  {seen}{state}")
    open_ = [p for p in pairings if p["state"] in ("pending", "refused")][:10]
    if open_:
        print("\nPairing:")
        for p in open_:
            who = p["name"] or (p["identity"] or "someone")[:12]
            direction = "you scanned" if p["direction"] == "out" else "scanned your code"
            print(f"  {p['state']:9} {who} ({direction}, {_when(p['updated'])}) {p['reason']}")
    return EXIT_OK


def _friend_action(method: str, suffix: str, verb: str) -> Command:
    def run(args: argparse.Namespace, paths: Paths) -> int:
        answer = ApiClient(paths).call(method, f"/friends/{_q(args.friend, 'friend')}{suffix}")
        friend = answer.get("removed", answer)
        print(f"{verb} {friend['name']} ({friend['identity'][:12]})")
        return EXIT_OK

    return run


def cmd_friends_rename(args: argparse.Namespace, paths: Paths) -> int:
    ref = _q(args.friend, "friend")
    friend = ApiClient(paths).call("PATCH", f"/friends/{ref}", {"name": args.name})
    print(f"renamed {friend['identity'][:12]} to {friend['name']}")
    return EXIT_OK


def cmd_peers(args: argparse.Namespace, paths: Paths) -> int:
    peers = ApiClient(paths).call("GET", "/peers")["peers"]
    if args.json:
        _print_json(peers)
        return EXIT_OK
    if not peers:
        print("No peers connected.")
    for p in peers:
        up = int(time.time() - p["since"])
        print(
            f"{p['name']}  {p['identity'][:12]}  {p['path']}  {p['address'] or '-'}  "
            f"via {p['found_via']}  "
            f"up {up // 60}m{up % 60:02d}s  in {_size(p['bytes_in'])}  out {_size(p['bytes_out'])}"
        )
    return EXIT_OK


def cmd_events(args: argparse.Namespace, paths: Paths) -> int:
    client = ApiClient(paths)
    after = args.after
    while True:
        answer = client.call("GET", f"/events?after={after}&timeout={25 if args.follow else 0}")
        for event in answer["events"]:
            if args.json:
                print(json.dumps(event, ensure_ascii=False), flush=True)
            else:
                print(
                    f"{event['id']:>6} {_when(event['time'])} {event['kind']} "
                    f"{json.dumps(event['data'], ensure_ascii=False)}",
                    flush=True,
                )
        after = answer["last_id"]
        if not args.follow:
            return EXIT_OK


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


def _q(ref: str, what: str = "") -> str:
    """A friend, circle or moment reference for a URL path; an empty one is refused here
    (the API would only see a path that names nothing)."""
    if not ref.strip():
        raise P2PMomentsError(f"name the {what or 'thing'}: an empty name matches nothing")
    return urllib.parse.quote(ref, safe="")


def _who(person: dict[str, Any]) -> str:
    """A person's name, marked if they are not our friend (a co-member we never paired with)."""
    return person["name"] if person.get("friend", True) else f"{person['name']} (not a friend)"


def _print_circle(c: dict[str, Any]) -> None:
    owner = "yours" if c["mine"] else f"owned by {_who(c['owner'])}"
    posting = "everyone posts" if c["members_can_post"] else "only the owner posts"
    names = ", ".join(_who(m) for m in c["members"])
    if c.get("removed"):
        print(
            f"{c['name']}  ({owner}; you were removed on {_when(c['removed']['at'])}: "
            "you keep what you had and get nothing new)"
        )
        return
    count = len(c["members"])
    print(f"{c['name']}  ({owner}; {posting}; {count} member{'' if count == 1 else 's'}: {names})")


def cmd_circles(args: argparse.Namespace, paths: Paths) -> int:
    circles = ApiClient(paths).call("GET", "/circles")["circles"]
    if args.json:
        _print_json(circles)
    elif not circles:
        print("No circles yet: p2pmoments circle create family --member Bob")
    for c in [] if args.json else circles:
        _print_circle(c)
    return EXIT_OK


def cmd_circle_create(args: argparse.Namespace, paths: Paths) -> int:
    circle = ApiClient(paths).call(
        "POST",
        "/circles",
        {
            "name": args.name,
            "members": args.member or [],
            "members_can_post": args.members_can_post,
        },
    )
    _print_circle(circle)
    return EXIT_OK


def _circle_change(field: str) -> Command:
    def run(args: argparse.Namespace, paths: Paths) -> int:
        value: Any = args.friends if field in ("add", "remove") else args.new_name
        circle = ApiClient(paths).call(
            "PATCH", f"/circles/{_q(args.circle, 'circle')}", {field: value}
        )
        _print_circle(circle)
        return EXIT_OK

    return run


def cmd_circle_delete(args: argparse.Namespace, paths: Paths) -> int:
    gone = ApiClient(paths).call("DELETE", f"/circles/{_q(args.circle, 'circle')}")["deleted"]
    print(f"deleted the circle {gone['name']} and its moments from this device")
    return EXIT_OK


def _size(n: int) -> str:
    """A byte count for people: 950 B, 3.2 MB."""
    if n < 1000:
        return f"{n} B"
    value = n / 1000
    for unit in ("kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            break
        value /= 1000
    return f"{value:.1f} {unit}"


def _arrival(blob: dict[str, Any]) -> str:
    """How much of a photo or file is here, while it is still arriving."""
    if blob["chunks_held"] >= blob["chunks"]:
        return ""
    return f"  (arriving: {100 * blob['chunks_held'] // blob['chunks']} %)"


def _print_moment(m: dict[str, Any], *, indent: str = "") -> None:
    when = _when(m["time"])
    if m["retracted"]:
        print(
            f"{indent}[retracted]  {_who(m['author'])} in {m['circle']['name']}, {when}  "
            f"{m['id'][:10]}"
        )
        return
    expires = f", expires {_when(m['expires'])}" if m["expires"] else ""
    print(f"{indent}{_who(m['author'])} in {m['circle']['name']}, {when}{expires}  {m['id'][:10]}")
    for line in m["text"].splitlines() or [""]:
        print(f"{indent}  {line}")
    for photo in m["photos"]:
        print(
            f"{indent}  photo {photo['n']}: {photo['width']}×{photo['height']}, "
            f"{_size(photo['size'])}{_arrival(photo)}"
        )
    for file in m["files"]:
        print(f"{indent}  file {file['n']}: {file['name']}, {_size(file['size'])}{_arrival(file)}")
    if m["reactions"]:
        print(indent + "  " + "  ".join(f"{e} {len(who)}" for e, who in m["reactions"].items()))
    for c in m["comments"]:
        print(f"{indent}  ↳ {_who(c['author'])}: {c['text']}")


def _readable(path: str) -> Path:
    """A file to upload, checked readable now (it is read as it is sent)."""
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise P2PMomentsError(f"cannot read {path}: {exc.strerror}") from None
    if Path(path).is_dir():
        raise P2PMomentsError(f"cannot read {path}: it is a folder")
    return Path(path)


MAX_TEXT = 16 * 1024  # bytes of UTF-8 in a moment or comment (spec/moments.md)


def _text_of(args: argparse.Namespace) -> str:
    """The text argument, or standard input for `-`, or the --text-file; checked for size."""
    text_file = getattr(args, "text_file", None)
    if text_file is not None and args.text:
        raise P2PMomentsError("give the text as an argument or with --text-file, not both")
    if text_file is not None or args.text == "-":
        from_stdin = text_file in (None, "-")
        source = "standard input" if from_stdin else str(text_file)
        try:
            if from_stdin:
                raw = sys.stdin.buffer.read(MAX_TEXT + 1)
            else:
                with open(source, "rb") as f:
                    raw = f.read(MAX_TEXT + 1)
        except OSError as exc:
            raise P2PMomentsError(f"cannot read {source}: {exc.strerror}") from None
        if len(raw) > MAX_TEXT:
            raise P2PMomentsError(_too_long())
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise P2PMomentsError(f"the text from {source} is not UTF-8") from None
    else:
        text = args.text or ""
    if len(text.encode("utf-8")) > MAX_TEXT:
        raise P2PMomentsError(_too_long())
    return text


def _too_long() -> str:
    return (
        f"the text is too long: at most {MAX_TEXT // 1024} KiB ({MAX_TEXT} bytes of UTF-8); "
        "put a long text in a file and post it with --file"
    )


def cmd_post(args: argparse.Namespace, paths: Paths) -> int:
    import mimetypes

    text = _text_of(args)
    client = ApiClient(paths)
    if not args.photo and not args.file:
        body: dict[str, Any] = {"circle": args.circle, "text": text}
        if args.expires:
            body["expires_in"] = args.expires
        moment = client.call("POST", "/moments", body)
    else:
        fields = {"circle": args.circle, "text": text}
        if args.expires:
            fields["expires_in"] = str(args.expires)
        # Photos and files are streamed from disk as they are sent, never read whole.
        uploads: list[tuple[str, str, bytes | Path, str]] = [
            ("photo", Path(p).name, _readable(p), "application/octet-stream")
            for p in args.photo or []
        ]
        uploads += [
            (
                "file",
                Path(f).name,
                _readable(f),
                mimetypes.guess_type(f)[0] or "application/octet-stream",
            )
            for f in args.file or []
        ]
        moment = client.post_multipart("/moments", fields, uploads)
    print(moment["id"])
    return EXIT_OK


def _download(kind: str) -> Command:
    def run(args: argparse.Namespace, paths: Paths) -> int:
        suffix = "/thumbnail" if getattr(args, "thumbnail", False) else ""
        output = Path(args.output)
        if output.is_dir():
            raise P2PMomentsError(
                f"{output} is a folder: give the file to write, e.g. -o {output / 'photo.jpg'}"
            )
        if not output.parent.is_dir():
            raise P2PMomentsError(
                f"cannot write {output}: the folder {output.parent} does not exist"
            )
        try:  # a piece at a time, written whole or not at all
            size = ApiClient(paths).download_to(
                f"/moments/{_q(args.id, 'moment')}/{kind}/{args.n}{suffix}", output
            )
        except OSError as exc:
            raise P2PMomentsError(f"cannot write {output}: {exc.strerror}") from None
        print(f"wrote {output} ({_size(size)})")
        return EXIT_OK

    return run


def cmd_feed(args: argparse.Namespace, paths: Paths) -> int:
    client = ApiClient(paths)
    query = {"limit": str(args.limit)} | ({"circle": args.circle} if args.circle else {})
    cursor: str | None = args.cursor
    moments: list[dict[str, Any]] = []
    while True:  # one page, or with --all every page: each starts past the last
        page_query = query | ({"cursor": cursor} if cursor else {})
        page = client.call("GET", "/moments?" + urllib.parse.urlencode(page_query))
        moments += page["moments"]
        cursor, before = page["next_cursor"], page["next_before"]
        if not args.all or cursor is None or not page["moments"]:
            break
    if args.json:  # the API's shape: a page, here of every moment read
        _print_json({"moments": moments, "next_cursor": cursor, "next_before": before})
        return EXIT_OK
    if not moments:
        print("Nothing here yet." if args.cursor is None else "Nothing older.")
    for m in moments:
        _print_moment(m)
        print()
    if cursor is not None:
        circle = f" --circle {shlex.quote(args.circle)}" if args.circle else ""
        print(f"More: p2pmoments{_home_flag(paths)} feed{circle} --cursor {cursor}  (or --all)")
    return EXIT_OK


def cmd_moment(args: argparse.Namespace, paths: Paths) -> int:
    moment = ApiClient(paths).call("GET", f"/moments/{_q(args.id, 'moment')}")
    if args.json:
        _print_json(moment)
    else:
        _print_moment(moment)
    return EXIT_OK


def cmd_comment(args: argparse.Namespace, paths: Paths) -> int:
    text = _text_of(args)
    _print_moment(
        ApiClient(paths).call("POST", f"/moments/{_q(args.id, 'moment')}/comments", {"text": text})
    )
    return EXIT_OK


def cmd_react(args: argparse.Namespace, paths: Paths) -> int:
    _print_moment(
        ApiClient(paths).call(
            "POST", f"/moments/{_q(args.id, 'moment')}/reactions", {"emoji": args.emoji}
        )
    )
    return EXIT_OK


def cmd_retract(args: argparse.Namespace, paths: Paths) -> int:
    gone = ApiClient(paths).call("DELETE", f"/moments/{_q(args.id, 'moment')}")["retracted"]
    print(f"retracted {gone}")
    return EXIT_OK


def cmd_service_install(args: argparse.Namespace, paths: Paths) -> int:
    from p2pmoments import service

    if args.print:
        print(service.unit_text(paths), end="")
        return EXIT_OK
    path = service.install(paths, start=not args.no_start)
    verb = "enabled" if args.no_start else "enabled and started"
    print(f"wrote {path}; {verb} {path.name}\nlogs: journalctl --user -u {path.name} -f")
    return EXIT_OK


def cmd_service_uninstall(args: argparse.Namespace, paths: Paths) -> int:
    from p2pmoments import service

    path = service.uninstall(paths)
    print(f"stopped, disabled and removed {path}")
    return EXIT_OK


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
    q = add(
        "rename",
        cmd_devices_rename,
        "Rename one of your devices (on all of them).",
        "p2pmoments devices rename laptop 'old laptop'",
        parent=devices_sub,
    )
    q.add_argument("device", help="the device's name")
    q.add_argument("new", metavar="NAME", help="its new name")
    q = add(
        "revoke",
        cmd_devices_revoke,
        "Revoke a lost or stolen device: it receives nothing new; what it had, it keeps.",
        "p2pmoments devices revoke laptop",
        parent=devices_sub,
    )
    q.add_argument("device", help="the device's name")

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
