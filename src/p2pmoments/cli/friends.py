"""Friends and pairing: the pairing code, pair, friends and their actions, and the
peers linked right now."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from p2pmoments.cli.output import (
    EXIT_ERROR,
    EXIT_OK,
    Command,
    _print_json,
    _print_raw,
    _q,
    _size,
    _when,
    _write_images,
)
from p2pmoments.client import ApiClient
from p2pmoments.core.errors import P2PMomentsError
from p2pmoments.paths import Paths


def cmd_qr(args: argparse.Namespace, paths: Paths) -> int:
    from p2pmoments import qr

    answer = ApiClient(paths).call("GET", "/pairing/link")
    link, expires = answer["link"], answer["expires_at"]
    wrote = _write_images(args, link, mode=0o644)
    if args.link:
        print(link)
    elif not wrote:
        _print_raw(qr.render_terminal(link))
        print(f"\nShow this to a friend to scan; it works once, until {_when(expires)}.")
        print(f"Or send them the link:\n{link}")
    for path in wrote:
        print(f"wrote {path} (valid once, until {_when(expires)})", file=sys.stderr)
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
