"""What a device costs friends and co-members (issue 19), each figure beside a baseline
measured in the same run.

    .venv/bin/python benchmarks/devices.py [--json FILE] [--runs N]

A member of a circle of 150 people with 3 devices each holds 150 rosters. Figures:
- adding a device: the roster entry every member receives (bytes), and the time for a
  member to decode, verify and apply it, beside verifying one moment's signature;
- revoking one: the revocation entry (bytes, with cut-offs in 10 circles) and its time,
  and the new epoch every circle owner then issues (the manifest at 150 members),
  beside the same manifest of a circle without devices (what removing a member costs);
- pairing with a person's second device: the introduction the friend receives
  (bytes) and its check, beside one signature check;
- a post on one device of a person until it shows on another of theirs, two daemons in
  one process on loopback, beside a post between two friends' daemons.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import report

from p2pmoments.core import wire
from p2pmoments.core.device_entries import EntryKind, consent_message, decode_entry, sign_entry
from p2pmoments.core.devices import Roster
from p2pmoments.core.identity import Identity
from p2pmoments.core.introduction import (
    check_introduction,
    decode_introduction,
    encode_introduction,
)
from p2pmoments.core.manifest import Member, create_manifest, decode_manifest, new_epoch_key
from p2pmoments.node import Node

PEOPLE, DEVICES = 150, 3


def person_with_devices(n: int) -> tuple[Identity, list[Identity], list[bytes]]:
    """A person, their n further devices, and their roster's entries as signed."""
    first = Identity.generate()
    p, link = bytes(first.public.verify_key), bytes(first.public.link_key)
    genesis = sign_entry(
        first.signing_key,
        person=p,
        parents=(),
        kind=EntryKind.ADD,
        time=1,
        device=p,
        link=link,
        name="laptop",
        consent=first.signing_key.sign(consent_message(p, p, link)),
    )
    raws, heads, devices = [genesis.raw], [genesis.id], []
    for i in range(n):
        d = Identity.generate()
        dk, dl = bytes(d.public.verify_key), bytes(d.public.link_key)
        entry = sign_entry(
            first.signing_key,
            person=p,
            parents=heads,
            kind=EntryKind.ADD,
            time=2 + i,
            device=dk,
            link=dl,
            name=f"device {i}",
            consent=d.signing_key.sign(consent_message(p, dk, dl)),
        )
        raws.append(entry.raw)
        heads = [entry.id]
        devices.append(d)
    return first, devices, raws


def roster_figures(runs: int) -> dict[str, float]:
    people = [person_with_devices(DEVICES - 1) for _ in range(PEOPLE)]
    rosters = {}
    for first, _, raws in people:
        roster = Roster(bytes(first.public.verify_key))
        roster.apply_all([decode_entry(r) for r in raws])
        rosters[bytes(first.public.verify_key)] = roster
    alice, _, _ = people[0]
    a = bytes(alice.public.verify_key)
    add_times, revoke_times = [], []
    add_size = revoke_size = 0
    for _ in range(runs):
        new = Identity.generate()
        nk, nl = bytes(new.public.verify_key), bytes(new.public.link_key)
        roster = rosters[a]
        entry = sign_entry(
            alice.signing_key,
            person=a,
            parents=roster.heads(),
            kind=EntryKind.ADD,
            time=100,
            device=nk,
            link=nl,
            name="desktop",
            consent=new.signing_key.sign(consent_message(a, nk, nl)),
        )
        add_size = len(entry.raw)
        began = time.perf_counter()
        roster.apply(decode_entry(entry.raw))
        add_times.append(time.perf_counter() - began)
        cutoffs = [(bytes([i]) * 16, 1000 + i) for i in range(10)]
        revoke = sign_entry(
            alice.signing_key,
            person=a,
            parents=roster.heads(),
            kind=EntryKind.REVOKE,
            time=101,
            device=nk,
            cutoffs=cutoffs,
        )
        revoke_size = len(revoke.raw)
        began = time.perf_counter()
        roster.apply(decode_entry(revoke.raw))
        revoke_times.append(time.perf_counter() - began)
    members = [
        Member(verify_key=f.public.verify_key, link_key=f.public.link_key) for f, _, _ in people
    ]
    began = time.perf_counter()
    manifest = create_manifest(
        alice,
        circle_id=b"c" * 32,
        epoch=1,
        name="everyone",
        members=members,
        members_can_post=True,
        created=1,
        key=new_epoch_key(),
    )
    made = time.perf_counter() - began
    began = time.perf_counter()
    decode_manifest(manifest.raw)
    checked = time.perf_counter() - began
    signer = Identity.generate()
    message = b"m" * 300
    signature = signer.signing_key.sign(message)
    began = time.perf_counter()
    for _ in range(100):
        signer.public.verify_key.verify(message, signature)
    one_check = (time.perf_counter() - began) / 100
    return {
        "add_size": add_size,
        "add_ms": statistics.median(add_times) * 1000,
        "revoke_size": revoke_size,
        "revoke_ms": statistics.median(revoke_times) * 1000,
        "manifest_size": len(manifest.raw),
        "manifest_make_ms": made * 1000,
        "manifest_check_ms": checked * 1000,
        "signature_ms": one_check * 1000,
    }


def introduction_figures(runs: int) -> tuple[int, float]:
    """Pairing with a person's second device (spec/devices.md section 8.1): the
    introduction the friend receives (bytes) and its check (median ms)."""
    first, devices, raws = person_with_devices(1)
    body = encode_introduction(bytes(first.public.link_key), first.link_signature, raws)
    intro = decode_introduction(body)
    p = bytes(first.public.verify_key)
    d, dl = bytes(devices[0].public.verify_key), bytes(devices[0].public.link_key)
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        check_introduction(decode_introduction(body), person=p, device=d, device_link=dl)
        times.append(time.perf_counter() - began)
    assert intro.entries == tuple(raws)
    return len(wire.encode_map(body)), statistics.median(times) * 1000


async def post_to_showing(runs: int) -> tuple[float, float]:
    """(to another device of the same person, to a friend), median seconds."""
    from tests.multinode import befriend, eventually, make_home, running
    from tests.test_devices import second_device, sighted

    with tempfile.TemporaryDirectory() as root:
        tmp = Path(root)
        homes = [await make_home(tmp, n) for n in ("Alice", "Bob")]
        async with running(homes[0]) as laptop, running(homes[1]) as bob:
            await befriend(laptop, bob)
            await laptop.circles.create("family", ["Bob"], members_can_post=True)
            await eventually(lambda: bob.circles.all(), what="the manifest")
            async with second_device(tmp, laptop, "desktop") as desktop:
                sighted(laptop, desktop)
                await eventually(lambda: desktop.me in laptop.links.linked(), what="linked")
                await eventually(lambda: desktop.circles.all(), timeout=20, what="the circle")
                to_device, to_friend = [], []
                for i in range(runs):
                    for target, out in ((desktop, to_device), (bob, to_friend)):
                        text = f"run {i} to {target.me.hex()[:6]}"
                        began = time.perf_counter()
                        await laptop.posting.post("family", text)
                        async with asyncio.timeout(30):  # bounded: a figure, or an error
                            while not await _shows(target, text):
                                await target.events.wait_after(target.events.last_id, 5)
                        out.append(time.perf_counter() - began)
                return statistics.median(to_device), statistics.median(to_friend)


async def _shows(node: Node, text: str) -> bool:
    page = await node.moments.feed_page(None, 5)
    return any(v.moment is not None and v.moment.content.text == text for v in page.moments)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    f = roster_figures(args.runs)
    device_s, friend_s = asyncio.run(post_to_showing(args.runs))
    intro_size, intro_ms = introduction_figures(args.runs)
    sig = ("one signature check (ms)", f["signature_ms"])
    rows: list[tuple[str, float, str, float]] = [
        ("add a device: entry each member gets (bytes)", f["add_size"], "", 0),
        ("  its check and apply, 150 rosters held (ms)", f["add_ms"], *sig),
        ("revoke one: the entry (bytes, 10 cut-offs)", f["revoke_size"], "", 0),
        ("  its check and apply (ms)", f["revoke_ms"], *sig),
        (
            "  then a new epoch, 150 members (bytes)",
            f["manifest_size"],
            "a member removed today",
            f["manifest_size"],
        ),
        ("  made by its owner (ms)", f["manifest_make_ms"], "", 0),
        ("  checked and opened by a member (ms)", f["manifest_check_ms"], "", 0),
        ("pair with a second device: introduction (bytes)", intro_size, "", 0),
        ("  its check by the friend (ms)", intro_ms, *sig),
        (
            "post to another device of ours (ms)",
            device_s * 1000,
            "to a friend (ms)",
            friend_s * 1000,
        ),
    ]
    report(rows, args.json)


if __name__ == "__main__":
    main()
