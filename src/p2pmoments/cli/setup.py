"""Setting up and running the daemon: init, run, status, profile, open, events and
the systemd service. init, run and service work on the home; the rest ask the daemon."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from p2pmoments.cli.output import EXIT_OK, EXIT_USAGE, _home_flag, _print_json, _when
from p2pmoments.client import ApiClient
from p2pmoments.core.errors import P2PMomentsError
from p2pmoments.paths import Paths

if TYPE_CHECKING:
    from p2pmoments.config import Config


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
        f"start the daemon with: p2pmoments{_home_flag(paths)} run\n"
        f"then make your recovery sheet, which gives you back if you lose every device: "
        f"p2pmoments{_home_flag(paths)} recovery --save FILE"
    )
    return EXIT_OK


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
