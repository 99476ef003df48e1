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

    answer = ApiClient(paths).call("POST", "/devices/link", {"confirm": not args.yes})
    link, expires = answer["link"], answer["expires_at"]
    wrote = _write_images(args, link, mode=0o600)
    if not wrote:
        _print_raw(qr.render_terminal(link))
    print(
        f"\nOn the new device, instead of init:\n  p2pmoments --home DIR devices join {link}\n"
        f"then start it (p2pmoments --home DIR run). The link works once, until "
        f"{_when(expires)}; it makes the new device yours: show it to no one else."
    )
    if not args.yes:
        print(
            "The new device shows 6 digits; once it is running, `p2pmoments"
            f"{_home_flag(paths)} devices` here lists its request with the same digits if "
            "it is the one you meant: confirm them with `devices confirm CODE`."
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
