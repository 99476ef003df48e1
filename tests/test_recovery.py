"""Recovery from the recovery sheet (spec/devices.md section 5): the sheet's text as hostile
input (pure core), and in one process: Alice makes her sheet, loses her only device, and
a new home made from the sheet gets back Bob as a friend, both circles with their moments
(hers and his), and revokes the lost device, which Bob then refuses."""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st

from p2pmoments.api import API_PREFIX
from p2pmoments.core.recovery import (
    RecoveryError,
    RecoverySheet,
    decode_friendship_message,
    decode_sheet,
    encode_sheet,
    sheet_device,
    sheet_lines,
)
from p2pmoments.home import load_identity, recover_home
from p2pmoments.node import Node
from p2pmoments.paths import resolve_paths
from tests.multinode import LOOPBACK, befriend, eventually, make_home, read_feed, running, until
from tests.test_api import AUTH, client

__all__ = ["client"]  # the fixture, shared with tests/test_api.py


def _sheet() -> RecoverySheet:
    return RecoverySheet(person=os.urandom(32), secret=os.urandom(32), person_link=os.urandom(32))


def test_a_sheet_reads_back_as_printed_and_a_typo_fails_its_check() -> None:
    sheet = _sheet()
    text = encode_sheet(sheet)
    assert decode_sheet(text) == sheet
    assert decode_sheet("\n".join(sheet_lines(text)).lower()) == sheet  # as copied by hand
    i = text.index("/", 20) + 3
    typo = text[:i] + ("A" if text[i] != "A" else "B") + text[i + 1 :]
    with pytest.raises(RecoveryError, match=r"check|base32"):
        decode_sheet(typo)
    assert repr(sheet).count(sheet.secret.hex()[:8]) == 0  # no secret in a repr
    # The sheet's device is the same keys wherever the sheet is typed in.
    one, two = sheet_device(sheet.secret), sheet_device(sheet.secret)
    assert one.public == two.public


@given(st.one_of(st.text(max_size=300), st.binary(max_size=50), st.integers()))
def test_any_text_decodes_to_a_sheet_or_raises_recovery_error(text: object) -> None:
    with contextlib.suppress(RecoveryError):
        decode_sheet(text)


@given(st.dictionaries(st.integers(-2, 40), st.integers(0, 40), max_size=3))
def test_only_the_exact_friendship_message_decodes(body: dict[int, int]) -> None:
    try:
        decode_friendship_message(body)
    except RecoveryError:
        return
    assert body == {0: 30}


async def _texts(node: Node) -> dict[str, str]:
    return {m["text"]: m["author"]["name"] for m in await read_feed(node, 100)}


@pytest.mark.timeout(120)
async def test_a_recovered_home_gets_friends_and_circles_back_and_revokes_the_lost_device(
    tmp_path: Path,
) -> None:
    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob")]
    async with running(homes[1]) as bob:
        async with running(homes[0]) as alice:
            await befriend(alice, bob)
            await alice.circles.create("family", ["Bob"], members_can_post=True)
            await bob.circles.create("bobs", ["Alice"], members_can_post=True)
            await eventually(lambda: len(bob.circles.all()) == 2, what="Bob's manifests")
            await eventually(lambda: len(alice.circles.all()) == 2, what="Alice's manifests")
            await alice.posting.post("family", "Alice, before")
            await bob.posting.post("bobs", "Bob, before")
            await until(bob, lambda: _has(bob, {"Alice, before"}), what="Alice's post at Bob's")
            sheet = await alice.recovery.make_sheet()
            await eventually(
                lambda: (r := bob.persons.roster(alice.me)) is not None and r.recovery is not None,
                what="Bob to hold Alice's roster with her recovery key",
            )
            lost = alice.me
        # Alice's only device is lost. A new home from her sheet:
        new_home = tmp_path / "new"
        paths = resolve_paths(new_home)
        await asyncio.to_thread(recover_home, paths, sheet["sheet"], "Alice", "phone")
        identity = await asyncio.to_thread(load_identity, paths)
        async with Node(
            paths=paths, config=replace(LOOPBACK), identity=identity, person=lost
        ) as new:
            assert new.recovery.recovering
            assert new.listen_port is not None
            bob.links.seen(new.me, "127.0.0.1", new.listen_port, "mdns")  # what mDNS tells
            await eventually(lambda: new.friends.get(bob.me) is not None, what="Bob back")
            await until(
                new,
                lambda: _has(new, {"Alice, before", "Bob, before"}),
                what="both circles' moments back",
            )
            assert {m.name for m in new.circles.all()} == {"family", "bobs"}
            assert (await _texts(new))["Alice, before"] == "Alice"
            assert await new.recovery.revoke(None) == ["first device"]
            assert not new.recovery.recovering
            assert not paths.sheet_file.exists()  # R is on no device once recovery is done
            await eventually(lambda: bob.persons.is_revoked(lost), what="Bob to learn it")
            assert new.devices.devices()[0]["name"] == "phone"
            # Alice's old post is still hers at Bob's (within the cut-off); a new one
            # from the recovered device reaches Bob as Alice's.
            await new.posting.post("bobs", "Alice, after")
            await until(bob, lambda: _has(bob, {"Alice, after"}), what="the new post at Bob's")
            shown = await _texts(bob)
            assert shown["Alice, after"] == shown["Alice, before"] == "Alice"
            # The lost device, found again, is refused by Bob.
            async with running(homes[0]) as found:
                found.links.seen(bob.me, "127.0.0.1", bob.listen_port or 0, "mdns")
                await eventually(
                    lambda: (
                        found.statistics()["failed_dials"] >= 1
                        or found.statistics().get("links_refused", 0) >= 1
                    ),
                    timeout=20,
                    what="the lost device's dial to fail",
                )
                assert found.me not in bob.links.linked()


async def _has(node: Node, wanted: set[str]) -> bool:
    return wanted <= set(await _texts(node))


async def test_the_api_makes_the_sheet_once_and_refuses_bad_revocations(
    client: TestClient[Any, Any],
) -> None:
    """Checked against spec/openapi.yaml (tests/test_api.py's client)."""
    status = await (await client.get(f"{API_PREFIX}/recovery", headers=AUTH)).json()
    assert (status["can_make"], status["set"], status["recovering"]) == (True, False, False)
    made = await client.post(f"{API_PREFIX}/recovery", headers=AUTH, json={})
    assert made.status == 201
    sheet = await made.json()
    assert decode_sheet(sheet["sheet"]) == decode_sheet(" ".join(sheet["lines"]))
    again = await client.post(f"{API_PREFIX}/recovery", headers=AUTH, json={})
    assert again.status == 400
    status = await (await client.get(f"{API_PREFIX}/recovery", headers=AUTH)).json()
    assert (status["set"], status["can_make"]) == (True, False)
    for body in ({"devices": "laptop"}, {"devices": []}, {"devices": [1]}, {"other": True}, {}):
        answer = await client.post(f"{API_PREFIX}/recovery/revoke", headers=AUTH, json=body)
        assert answer.status == 400, body
