"""Notes written together, between real daemons in one process (spec/notes.md): members
typing at once end with one text; an offline member's edits merge when she is back; a
removed member receives no edit made after her removal."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from p2pmoments.config import Address
from p2pmoments.errors import NotFoundError
from p2pmoments.node import Node
from p2pmoments.notes import Notes
from tests.multinode import befriend, eventually, make_home, running, until


def notes_of(node: Node) -> Notes:
    return Notes(
        node.store,
        node.moments,
        node.posting,
        node.circles,
        node.events,
        lambda key: node.friends.person(key).identity,
    )


async def text_of(notes: Notes, note: str) -> str | None:
    try:
        return (await notes.read(note)).text
    except NotFoundError:
        return None


async def wait_text(node: Node, notes: Notes, note: str, check: object, what: str) -> str:
    async def ok() -> bool:
        text = await text_of(notes, note)
        return text is not None and bool(check(text))  # type: ignore[operator]

    try:
        await until(node, ok, timeout=30, what=what)
    except AssertionError:
        raise AssertionError(f"{what}: {await text_of(notes, note)!r}") from None
    return (await notes.read(note)).text


async def test_three_members_type_at_once_and_one_offline_edits_and_all_agree(
    tmp_path: Path,
) -> None:
    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob", "Carol")]
    async with contextlib.AsyncExitStack() as stack:
        alice, bob, carol = [await stack.enter_async_context(running(h)) for h in homes]
        ports = [n.listen_port for n in (alice, bob, carol)]
        await befriend(alice, bob)
        await befriend(alice, carol)
        await alice.circles.create("work", ["Bob", "Carol"], members_can_post=True)
        await eventually(lambda: bob.circles.all() and carol.circles.all(), what="manifests")
        na, nb, nc = notes_of(alice), notes_of(bob), notes_of(carol)
        note = await na.create("work", "Plan", "one\ntwo\nthree\n")
        ref = note.id.hex()
        from p2pmoments.views import moment_text

        ref = moment_text(note.id)
        for node, n in ((bob, nb), (carol, nc)):
            await wait_text(node, n, ref, lambda t: t == "one\ntwo\nthree\n", "the note")
        # All three write at once, each from the version each saw.
        bases = [(await n.read(ref)).version for n in (na, nb, nc)]
        await asyncio.gather(
            na.write(ref, base=bases[0], title=None, text="one ALICE\ntwo\nthree\n"),
            nb.write(ref, base=bases[1], title=None, text="one\ntwo BOB\nthree\n"),
            nc.write(ref, base=bases[2], title="Plan!", text="one\ntwo\nthree CAROL\n"),
        )
        want = "one ALICE\ntwo BOB\nthree CAROL\n"
        for node, n in ((alice, na), (bob, nb), (carol, nc)):
            await wait_text(node, n, ref, lambda t: t == want, f"{node.name} to merge")
            assert (await n.read(ref)).title == "Plan!"
        await nb.aclose()
    # Bob, alone (no one to link with), edits; Alice edits without him meanwhile.
    async with running(homes[1], listen=Address(host="127.0.0.1", port=ports[1] or 0)) as bob:
        nb = notes_of(bob)
        await nb.write(ref, base=None, title=None, text="zero\n" + want)
        assert (await nb.read(ref)).text == "zero\n" + want
        await nb.aclose()
    async with contextlib.AsyncExitStack() as stack:
        alice, bob, carol = [
            await stack.enter_async_context(
                running(h, listen=Address(host="127.0.0.1", port=p or 0))
            )
            for h, p in zip(homes, ports, strict=True)
        ]
        na, nb, nc = notes_of(alice), notes_of(bob), notes_of(carol)
        seen = await na.read(ref)  # Bob's offline edit may be here already, or not
        await na.write(ref, base=seen.version, title=None, text=seen.text + "four\n")
        final = "zero\n" + want + "four\n"
        await wait_text(bob, nb, ref, lambda t: t == final, "Bob to catch up")
        for node, n in ((alice, na), (bob, nb), (carol, nc)):
            await wait_text(node, n, ref, lambda t: t == final, f"{node.name} to catch up")


async def test_a_removed_member_receives_no_edit_made_after_her_removal(tmp_path: Path) -> None:
    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob", "Carol")]
    async with contextlib.AsyncExitStack() as stack:
        alice, bob, carol = [await stack.enter_async_context(running(h)) for h in homes]
        await befriend(alice, bob)
        await befriend(alice, carol)
        await alice.circles.create("work", ["Bob", "Carol"], members_can_post=True)
        await eventually(lambda: bob.circles.all() and carol.circles.all(), what="manifests")
        na, nb, nc = notes_of(alice), notes_of(bob), notes_of(carol)
        from p2pmoments.views import moment_text

        ref = moment_text((await na.create("work", "Secrets", "before\n")).id)
        await wait_text(carol, nc, ref, lambda t: t == "before\n", "Carol to get the note")
        await wait_text(bob, nb, ref, lambda t: t == "before\n", "Bob to get the note")
        await alice.circles.change("work", remove=["Carol"])
        await nb.write(ref, base=None, title=None, text="before\nafter Carol left (Bob)\n")
        seen = await na.read(ref)
        await na.write(ref, base=seen.version, title=None, text=seen.text + "Alice\n")
        await wait_text(bob, nb, ref, lambda t: "Alice\n" in t, "Bob to merge Alice's")
        await wait_text(alice, na, ref, lambda t: "(Bob)" in t, "Alice to merge Bob's")
        assert await text_of(nc, ref) == "before\n"


async def test_a_member_who_joins_later_gets_the_note_as_a_snapshot_not_every_keystroke(
    tmp_path: Path,
) -> None:
    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob", "Carol")]
    async with contextlib.AsyncExitStack() as stack:
        alice, bob, carol = [await stack.enter_async_context(running(h)) for h in homes]
        await befriend(alice, bob)
        await befriend(alice, carol)
        await alice.circles.create("work", ["Bob"], members_can_post=True)
        await eventually(lambda: bob.circles.all(), what="the manifest")
        na, nc = notes_of(alice), notes_of(carol)
        from p2pmoments.views import moment_text

        ref = moment_text((await na.create("work", "Log", "")).id)
        text = ""
        for n in range(30):  # keystrokes before Carol joins
            text += "abc"[n % 3]
            await na.write(ref, base=None, title=None, text=text)
        await alice.circles.change("work", add=["Carol"])
        await eventually(lambda: carol.circles.all(), what="Carol to get the manifest")
        text += "!"
        await na.write(ref, base=None, title=None, text=text)  # the first edit since
        await wait_text(carol, nc, ref, lambda t: t == text, "Carol to get the note")
        held, _, _ = await nc.sizes(ref)
        assert held < 10, f"Carol holds {held} of the note's moments"
