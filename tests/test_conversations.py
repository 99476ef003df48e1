"""Conversations apart from albums, delivered and read marks, and edits, between two
daemons in one process (issue 20, items 1, 3 and 15; spec/moments.md sections 1.1, 9, 10)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st

from p2pmoments.api import API_PREFIX, create_app
from p2pmoments.core import wire
from p2pmoments.core.errors import RejectedError
from p2pmoments.core.manifest import MANIFEST_CONTEXT, create_manifest, decode_manifest
from p2pmoments.core.moment import Content, Kind, seal_moment
from p2pmoments.errors import NotOwnerError
from p2pmoments.node import Node
from p2pmoments.store import Store
from p2pmoments.views import moment_text
from tests.multinode import befriend, eventually, get_moment, read_feed, until
from tests.test_api import AUTH, TOKEN, spec_check
from tests.test_manifest_and_moment import ALICE

Client = TestClient[Any, Any]


@pytest.fixture
async def apis(
    pair_of_nodes: tuple[Node, Node], aiohttp_client: Callable[..., Awaitable[Client]]
) -> tuple[Client, Client]:
    """Alice's and Bob's APIs (checked against spec/openapi.yaml), friends."""
    alice, bob = pair_of_nodes
    await befriend(alice, bob)
    out = []
    for node in (alice, bob):
        app = create_app(node, TOKEN)
        app.middlewares.insert(0, spec_check)
        out.append(await aiohttp_client(app))
    return out[0], out[1]


async def call(api: Client, method: str, path: str, body: Any = None, status: int = 200) -> Any:
    response = await api.request(method, f"{API_PREFIX}{path}", json=body, headers=AUTH)
    assert response.status == status, await response.text()
    return await response.json()


async def test_a_conversation_is_apart_from_the_albums_its_people_share(
    pair_of_nodes: tuple[Node, Node], apis: tuple[Client, Client]
) -> None:
    alice, bob = pair_of_nodes
    alice_api, bob_api = apis
    bob_id = bob.identity.public.text
    family = await call(alice_api, "POST", "/circles", {"name": "family", "members": [bob_id]}, 201)
    chat = await call(
        alice_api,
        "POST",
        "/circles",
        {"name": "Alice & Bob", "members": [bob_id], "kind": "conversation"},
        201,
    )
    assert (family["kind"], chat["kind"], chat["members_can_post"]) == (
        "album",
        "conversation",
        True,
    )

    async def both_at_bobs() -> bool:
        kinds = {c["name"]: c["kind"] for c in (await call(bob_api, "GET", "/circles"))["circles"]}
        return kinds == {"family": "album", "Alice & Bob": "conversation"}

    await until(bob, both_at_bobs, what="Bob to hold the album and the conversation")
    # Removing Bob from the album leaves the conversation as it was: a chat stays a chat.
    await call(alice_api, "PATCH", f"/circles/{family['id']}", {"remove": [bob_id]})
    renamed = await call(alice_api, "PATCH", f"/circles/{chat['id']}", {"name": "us two"})
    assert renamed["kind"] == "conversation"
    line = await call(
        bob_api, "POST", "/moments", {"circle": chat["id"], "text": "still here?"}, 201
    )

    async def arrived() -> bool:
        page = await call(alice_api, "GET", f"/moments?circle={chat['id']}")
        return [m["text"] for m in page["moments"]] == ["still here?"]

    await until(alice, arrived, what="Bob's line in the conversation at Alice's")
    await alice.posting.post(family["id"], "the album's own photo")
    family_page = await call(alice_api, "GET", f"/moments?circle={family['id']}")
    assert [m["text"] for m in family_page["moments"]] == ["the album's own photo"]
    # The feed of albums has no chat lines; the chats have no album posts.
    albums = await call(alice_api, "GET", "/moments?kind=album")
    chats = await call(alice_api, "GET", "/moments?kind=conversation")
    assert [m["text"] for m in albums["moments"]] == ["the album's own photo"]
    assert [m["text"] for m in chats["moments"]] == ["still here?"]
    assert line["circle"]["id"] == chat["id"]
    bad = await alice_api.post(
        f"{API_PREFIX}/circles", json={"name": "x", "kind": "diary"}, headers=AUTH
    )
    assert bad.status == 400


async def test_delivered_then_read_only_once_the_friend_allows_it(
    pair_of_nodes: tuple[Node, Node], apis: tuple[Client, Client]
) -> None:
    alice, bob = pair_of_nodes
    alice_api, bob_api = apis
    chat = await call(
        alice_api,
        "POST",
        "/circles",
        {"name": "chat", "members": [bob.identity.public.text], "kind": "conversation"},
        201,
    )
    await eventually(lambda: bob.circles.current(alice.circles.all()[0].circle_id), what="chat")
    first = await call(alice_api, "POST", "/moments", {"circle": chat["id"], "text": "one"}, 201)
    assert (first["delivered_to"], first["read_by"]) == ([], [])

    async def delivered() -> bool:
        mine = await call(alice_api, "GET", f"/moments/{first['id']}")
        return [p["name"] for p in mine["delivered_to"]] == ["Bob"]

    await until(alice, delivered, what="Alice to see her message delivered to Bob")
    # Bob reads it; read receipts are off by default: nothing is sent.
    assert (await call(bob_api, "GET", "/settings")) == {"read_receipts": False}
    await until(bob, lambda: _has(bob, first["id"]), what="the message at Bob's")
    await call(bob_api, "POST", f"/circles/{chat['id']}/read", {"moment": first["id"]})
    assert await bob.store.run(_receipts_sent) == 0
    assert (await call(bob_api, "PATCH", "/settings", {"read_receipts": True}))["read_receipts"]
    second = await call(alice_api, "POST", "/moments", {"circle": chat["id"], "text": "two"}, 201)
    await until(bob, lambda: _has(bob, second["id"]), what="the second message at Bob's")
    await call(bob_api, "POST", f"/circles/{chat['id']}/read", {})
    assert await bob.store.run(_receipts_sent) == 1

    async def read_both() -> bool:
        page = await call(alice_api, "GET", f"/moments?circle={chat['id']}")
        return all([p["name"] for p in m["read_by"]] == ["Bob"] for m in page["moments"])

    await until(alice, read_both, what="Alice to see both messages read by Bob")
    # A receipt is no post: no unread count, nothing in the chat.
    page = await call(alice_api, "GET", f"/moments?circle={chat['id']}")
    assert [m["text"] for m in page["moments"]] == ["two", "one"]


async def _has(node: Node, ref: str) -> bool:
    return await node.moments.row_of(_raw(ref)) is not None


def _raw(ref: str) -> bytes:
    from p2pmoments.core.ids import IdKind, decode_id

    return decode_id(ref, IdKind.MOMENT)


def _receipts_sent(store: Store) -> int:
    row = store._conn.execute("SELECT count(*) FROM moments WHERE kind = ?", (Kind.READ,))
    return int(row.fetchone()[0])


async def test_an_edit_reaches_every_member_and_only_its_author_edits(
    pair_of_nodes: tuple[Node, Node], apis: tuple[Client, Client]
) -> None:
    alice, bob = pair_of_nodes
    alice_api, bob_api = apis
    family = await alice.circles.create("family", [bob.identity.public.text], True)
    await eventually(lambda: bob.circles.current(family.circle_id), what="family at Bob's")
    post = await alice.posting.post("family", "dinner at 7")
    ref = moment_text(post.id)
    await call(alice_api, "PATCH", f"/moments/{ref}", {"text": "dinner at 8"})
    edited = await call(alice_api, "PATCH", f"/moments/{ref}", {"text": "dinner at 9"})
    assert (edited["text"], edited["edited"] is not None) == ("dinner at 9", True)

    async def seen() -> bool:
        row = await bob.moments.row_of(post.id)
        return row is not None and (await get_moment(bob, ref))["text"] == "dinner at 9"

    await until(bob, seen, what="the newest edit at Bob's")
    assert (await get_moment(bob, ref))["edited"] is not None
    assert [m["text"] for m in await read_feed(bob, 10)] == ["dinner at 9"]
    refused = await bob_api.patch(
        f"{API_PREFIX}/moments/{ref}", json={"text": "dinner never"}, headers=AUTH
    )
    assert refused.status == 403
    with pytest.raises(NotOwnerError):
        await bob.posting.edit(ref, "mine now")
    # A member's forged edit of Alice's post is refused when it arrives.
    forged = seal_moment(
        bob.identity,
        family,
        bob.circles.key_for(family),
        seq=50,
        time=post.time,
        content=Content(kind=Kind.EDIT, text="forged", target=post.id),
    )
    assert await alice.replication.receive([forged.envelope]) == []
    assert (await get_moment(alice, ref))["text"] == "dinner at 9"
    reasons = await alice.store.run(
        lambda s: [r[0] for r in s._conn.execute("SELECT reason FROM rejected ORDER BY id")]
    )
    assert "only its author can edit a moment" in reasons


@given(kind=st.one_of(st.integers(-3, 2**63 - 1), st.text(max_size=3), st.binary(max_size=3)))
def test_a_manifest_of_an_unknown_kind_is_refused_and_the_two_known_are_read(kind: Any) -> None:
    m = create_manifest(
        ALICE,
        circle_id=bytes(32),
        epoch=0,
        name="c",
        members=[],
        members_can_post=True,
        created=1,
        key=bytes(32),
        conversation=True,
    )
    assert m.conversation
    fields = wire.decode_map(wire.decode_map(m.raw, max_size=1 << 16)[1], max_size=1 << 16)
    fields[10] = kind
    body = wire.encode_map(fields)
    raw = wire.encode_map({1: body, 2: ALICE.signing_key.sign(MANIFEST_CONTEXT + body)})
    if type(kind) is int and kind in (1, 2):
        assert decode_manifest(raw).conversation == (kind == 2)
    else:
        with pytest.raises(RejectedError):
            decode_manifest(raw)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (Content(kind=Kind.EDIT, text="no target"), "names its target"),
        (Content(kind=Kind.READ), "names its target"),
        (Content(kind=Kind.READ, text="read", target=bytes(32)), "no text"),
        (Content(kind=Kind.READ, target=bytes(32), expires=5), "no text and no expiry"),
        (Content(kind=Kind.EDIT, target=bytes(31)), "32 bytes"),
    ],
)
def test_malformed_edits_and_read_receipts_are_refused(content: Content, reason: str) -> None:
    m, key = _manifest()
    with pytest.raises(RejectedError, match=reason):
        seal_moment(ALICE, m, key, seq=1, time=1, content=content)


def test_an_edit_and_a_read_receipt_open_as_sealed() -> None:
    from p2pmoments.core.moment import open_moment

    m, key = _manifest()
    for content in (
        Content(kind=Kind.EDIT, text="new words", target=bytes(32)),
        Content(kind=Kind.READ, target=bytes([1]) * 32),
    ):
        sealed = seal_moment(ALICE, m, key, seq=1, time=1, content=content)
        opened = open_moment(sealed.envelope, lambda c, e: m, lambda _: key)
        assert opened.content == content


def _manifest() -> tuple[Any, bytes]:
    key = bytes(range(32))
    m = create_manifest(
        ALICE,
        circle_id=bytes(32),
        epoch=0,
        name="chat",
        members=[],
        members_can_post=True,
        created=1,
        key=key,
        conversation=True,
    )
    return m, key


def test_the_cli_lists_a_conversation_as_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from p2pmoments.cli import main

    me, bob = {"identity": "a" * 56, "name": "Alice"}, {"identity": "b" * 56, "name": "Bob"}
    circles = [
        {"name": n, "mine": True, "owner": me, "members_can_post": True, "members": [me, bob],
         "kind": k}
        for n, k in (("Alice & Bob", "conversation"), ("family", "album"))
    ]  # fmt: skip

    class Client:
        def __init__(self, paths: object) -> None:
            pass

        def call(self, method: str, path: str, body: object = None) -> object:
            return {"circles": circles}

    monkeypatch.setattr("p2pmoments.cli.moments.ApiClient", Client)
    assert main(["--home", str(tmp_path), "circles"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "a conversation" in out[0]
    assert "everyone posts" in out[1]
