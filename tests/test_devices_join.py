"""Joining a device with its 6-digit code (spec/devices.md section 10): the device that
used a device link waits until the person confirms, on the device that showed the
link, the digits it shows; a device that joined with a copy of the link shows other
digits and is refused. Through the API, checked against spec/openapi.yaml."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from p2pmoments.api import API_PREFIX
from p2pmoments.api.base import NODE
from p2pmoments.core.device_entries import consent_message
from p2pmoments.core.pairing import decode_device_link, device_link_psk, join_code
from p2pmoments.core.self_sync import encode_friends_message, encode_join_message
from p2pmoments.home import device_join_code, join_home, load_identity
from p2pmoments.node import Node
from p2pmoments.paths import resolve_paths
from tests.multinode import LOOPBACK, eventually
from tests.test_api import AUTH, client

__all__ = ["client"]  # the fixture, shared with tests/test_api.py


@contextlib.asynccontextmanager
async def _joining(root: Path, link: str, name: str) -> AsyncIterator[tuple[Node, str]]:
    """A new home joined by `link` (what `devices join` does), running; and its code."""
    paths = resolve_paths(root / name)
    code = await asyncio.to_thread(join_home, paths, link, name)
    identity = await asyncio.to_thread(load_identity, paths)
    digits = await asyncio.to_thread(device_join_code, paths)
    assert digits is not None
    async with Node(
        paths=paths, config=LOOPBACK, identity=identity, person=bytes(code.identity)
    ) as node:
        yield node, digits


async def _requests(client: TestClient[Any, Any]) -> list[dict[str, Any]]:
    answer = await (await client.get(f"{API_PREFIX}/devices", headers=AUTH)).json()
    requests: list[dict[str, Any]] = answer["requests"]
    return requests


@pytest.mark.timeout(60)
async def test_a_device_is_linked_once_its_code_is_confirmed_and_a_copy_is_refused(
    client: TestClient[Any, Any], tmp_path: Path
) -> None:
    laptop: Node = client.app[NODE]
    made = await client.post(f"{API_PREFIX}/devices/link", headers=AUTH, json={})
    assert made.status == 201
    link = (await made.json())["link"]
    # Someone who copied the link joins first: the laptop asks, with the thief's digits.
    async with _joining(tmp_path, link, "thief") as (thief, thief_digits):
        await eventually(lambda: laptop.devices.joins.requests(), what="the thief's request")
        [asked] = await _requests(client)
        assert (asked["name"], asked["code"]) == ("thief", thief_digits)
        assert thief.me not in laptop.persons.devices_of(laptop.person)  # not linked
        # The desktop meant would show other digits: the person refuses these.
        other = join_code(
            device_link_psk(decode_device_link(link).token),
            laptop.person,
            bytes(laptop.identity.public.link_key),
            b"\x01" * 32,
            b"\x02" * 32,
        )
        assert other != thief_digits
        refused = await client.delete(f"{API_PREFIX}/devices/requests/{thief_digits}", headers=AUTH)
        assert (await refused.json()) == {"refused": "thief"}
        assert await _requests(client) == []
        await eventually(lambda: thief.me not in laptop.links.linked(), what="its link to end")
        assert laptop.persons.roster(laptop.person) is None  # no device was ever added

    # A fresh link; the desktop meant joins and is linked once its digits are confirmed.
    link = (await (await client.post(f"{API_PREFIX}/devices/link", headers=AUTH)).json())["link"]
    async with _joining(tmp_path, link, "desktop") as (desktop, digits):
        assert desktop.devices.joining_code() == digits  # what its GET /devices shows
        await eventually(lambda: laptop.devices.joins.requests(), what="the desktop's request")
        wrong = "000000" if digits != "000000" else "111111"
        missing = await client.post(f"{API_PREFIX}/devices/requests/{wrong}", headers=AUTH)
        assert missing.status == 404
        ok = await client.post(f"{API_PREFIX}/devices/requests/{digits}", headers=AUTH)
        assert ok.status == 200
        assert (await ok.json())["linked"] == "desktop"
        await eventually(
            lambda: desktop.persons.person_of(desktop.me) == laptop.person,
            what="the desktop to be Alice's",
        )
        await eventually(lambda: desktop.devices.joining_code() is None, what="joined")

        # A device of ours that asks again (it restarted, or a second link came up
        # before its roster arrived) is not dropped as a stranger: had it been, neither
        # side would link again for a minute, and the desktop would read nothing.
        consent = desktop.identity.signing_key.sign(
            consent_message(desktop.person, desktop.me, bytes(desktop.identity.public.link_key))
        )
        assert desktop.links.send(laptop.me, encode_join_message("desktop", consent))
        assert desktop.links.send(laptop.me, encode_friends_message("Alice B", []))
        await eventually(lambda: laptop.friends.my_name == "Alice B", what="the next message")
        assert desktop.me in laptop.links.linked()


async def test_a_link_made_to_link_without_asking_takes_a_bool_only(
    client: TestClient[Any, Any],
) -> None:
    for body in ({"confirm": "no"}, {"confirm": 0}, {"other": True}):
        answer = await client.post(f"{API_PREFIX}/devices/link", headers=AUTH, json=body)
        assert answer.status == 400, body
    answer = await client.post(f"{API_PREFIX}/devices/link", headers=AUTH, json={"confirm": False})
    assert answer.status == 201


def test_the_join_code_is_six_digits_from_every_key_it_names() -> None:
    keys = [bytes([n]) * 32 for n in range(5)]
    code = join_code(*keys)
    assert len(code) == 6
    assert code.isdigit()
    assert code == join_code(*keys)  # both devices compute the same
    # spec/devices.md section 10, step by step: BLAKE2b-64 of the five keys, mod 10^6.
    digest = hashlib.blake2b(b"".join(keys), digest_size=8, person=b"p2pm-join-code").digest()
    assert code == f"{int.from_bytes(digest, 'big') % 10**6:06d}" == "108321"
    for n in range(5):  # any key changed: other digits (for these keys)
        changed = list(keys)
        changed[n] = bytes([9]) * 32
        assert join_code(*changed) != code


@pytest.mark.parametrize(("answer", "asked"), [("y\n", "POST"), ("n\n", "DELETE")])
def test_devices_link_at_a_terminal_waits_for_the_device_and_asks(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    answer: str,
    asked: str,
) -> None:
    """`devices link` in a terminal: it waits for the device that uses the link, shows
    its digits and links it on "y", refuses it on anything else (spec/devices.md 10)."""
    import io
    import time

    from p2pmoments.cli import main

    request = {"name": "desktop", "device": "d" * 56, "code": "123456", "expires_at": 0}
    calls: list[tuple[str, str]] = []
    waited = []

    class Client:
        def __init__(self, paths: object) -> None:
            pass

        def call(self, method: str, path: str, body: object = None) -> object:
            calls.append((method, path))
            if path == "/devices/link":
                return {"link": "P2PD:1/ABC", "expires_at": int(time.time()) + 600, "svg": ""}
            if path.startswith("/events"):
                waited.append(path)
                return {"events": [], "last_id": 7}
            if path == "/devices":  # the device asks once the first wait is over
                return {"devices": [], "requests": [request] if len(waited) > 1 else []}
            return {"linked": "desktop", "refused": "desktop"}

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("p2pmoments.cli.devices.ApiClient", Client)
    monkeypatch.setattr("sys.stdin", Terminal(answer))
    monkeypatch.setattr("p2pmoments.cli.devices._at_a_terminal", lambda: True)
    assert main(["--home", str(tmp_path), "devices", "link"]) == 0
    out = capsys.readouterr().out
    assert "Link 'desktop'? It should show 123 456." in out
    assert calls[-1] == (asked, "/devices/requests/123456")
    assert waited[1] == "/events?after=7&timeout=25"  # it waits for events, not in a busy loop
