"""A person's devices (spec/devices.md): list them, link a new one, join as one."""

from __future__ import annotations

import argparse
import sys

from p2pmoments.cli.output import (
    EXIT_OK,
    _home_flag,
    _print_json,
    _print_raw,
    _q,
    _when,
    _write_images,
)
from p2pmoments.client import ApiClient
from p2pmoments.paths import Paths


def cmd_devices(args: argparse.Namespace, paths: Paths) -> int:
    answer = ApiClient(paths).call("GET", "/devices")
    if args.json:
        _print_json(answer)
        return EXIT_OK
    devices = answer["devices"]
    if "joining" in answer:
        code = _digits(answer["joining"]["code"])
        print(
            f"This device waits to be linked: confirm the code {code} on the device that "
            "showed the link (p2pmoments devices confirm there, or its web app)."
        )
        return EXIT_OK
    for d in devices:
        where = "this device" if d["this"] else ("linked" if d.get("linked") else "not linked now")
        print(f"{d['name']}  ({where})")
    for r in answer.get("requests", []):
        print(
            f"\n{r['name']!r} asks to be linked. If it shows {_digits(r['code'])}: "
            f"p2pmoments{_home_flag(paths)} devices confirm {r['code']}"
        )
    if len(devices) == 1:
        print(f"\nLink another: p2pmoments{_home_flag(paths)} devices link")
    return EXIT_OK


def _digits(code: str) -> str:
    """A join code as people read it: 123 456."""
    return f"{code[:3]} {code[3:]}"


def cmd_devices_confirm(args: argparse.Namespace, paths: Paths) -> int:
    answer = ApiClient(paths).call("POST", f"/devices/requests/{_q(args.code, 'code')}", {})
    print(f"linked {answer['linked']!r}: it is one of your devices now")
    return EXIT_OK


def cmd_devices_refuse(args: argparse.Namespace, paths: Paths) -> int:
    answer = ApiClient(paths).call("DELETE", f"/devices/requests/{_q(args.code, 'code')}")
    print(f"refused {answer['refused']!r}: make a fresh link for the device you meant")
    return EXIT_OK


def cmd_devices_link(args: argparse.Namespace, paths: Paths) -> int:
    from p2pmoments import qr

    client = ApiClient(paths)
    answer = client.call("POST", "/devices/link", {"confirm": not args.yes})
    link, expires = answer["link"], answer["expires_at"]
    wrote = _write_images(args, link, mode=0o600)
    if not wrote:
        _print_raw(qr.render_terminal(link))
    print(
        f"\nOn the new device, instead of init:\n  p2pmoments --home DIR devices join {link}\n"
        f"then start it (p2pmoments --home DIR run). The link works once, until "
        f"{_when(expires)}; it makes the new device yours: show it to no one else."
    )
    for path in wrote:
        print(f"wrote {path} (valid once, until {_when(expires)})", file=sys.stderr)
    if args.yes:
        return EXIT_OK
    if _at_a_terminal():  # someone is here to answer: wait for the device, and ask
        return _wait_and_ask(client, expires)
    print(
        "The new device shows 6 digits; once it is running, `p2pmoments"
        f"{_home_flag(paths)} devices` here lists its request with the same digits if "
        "it is the one you meant: confirm them with `devices confirm CODE`."
    )
    return EXIT_OK


def _at_a_terminal() -> bool:
    """Someone reads and answers (a script's output, or a test's, is not a terminal)."""
    return sys.stdin.isatty() and sys.stdout.isatty()


def _wait_and_ask(client: ApiClient, expires: int) -> int:
    """Wait (until the link expires) for the device that uses it, then ask the person
    to compare its 6 digits (spec/devices.md section 10)."""
    import time

    print("\nWaiting for the new device (Ctrl-C to stop waiting; its request stays)...")
    after = client.call("GET", "/events?after=0&timeout=0")["last_id"]
    try:
        while time.time() < expires:
            requests = client.call("GET", "/devices").get("requests", [])
            if requests:
                r = requests[0]
                question = (
                    f"Link {r['name']!r}? It should show {_digits(r['code'])}. Does it? [y/N] "
                )
                path = f"/devices/requests/{_q(r['code'], 'code')}"
                if input(question).strip().lower() in ("y", "yes"):
                    client.call("POST", path, {})
                    print(f"linked {r['name']!r}: it is one of your devices now")
                    return EXIT_OK
                client.call("DELETE", path)
                print("refused: someone else used the link; make a fresh one")
                return EXIT_OK
            wait = max(1, min(25, int(expires - time.time())))
            after = client.call("GET", f"/events?after={after}&timeout={wait}")["last_id"]
    except (KeyboardInterrupt, EOFError):
        print("\nstopped waiting: `p2pmoments devices` lists the request, `devices confirm`")
        return EXIT_OK
    print("the link expired before a device used it")
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

    from p2pmoments.home import device_join_code, join_home

    name = args.name or socket.gethostname().split(".")[0][:32] or "device"
    code = join_home(paths, args.link, name)
    digits = device_join_code(paths) or ""
    print(
        f"This home is now {code.name}'s device {name!r}, with keys of its own.\n"
        f"Start it: p2pmoments{_home_flag(paths)} run\n"
        f"It links itself to {code.name}'s device (which must be running, within "
        f"{_when(code.expires)}) and then has everything {code.name} has.\n"
        f"Code: {_digits(digits)}. That device asks you to confirm these 6 digits "
        "(unless its link was made with --yes): if it shows others, someone else used "
        "the link; refuse them there."
    )
    return EXIT_OK
