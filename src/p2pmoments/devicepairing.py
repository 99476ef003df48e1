"""Pairing from any device of a person, with any device of a friend (spec/devices.md
section 8.1).

A pairing code shown by a device D of person P names P and D's link key. When either
end of a pairing link is a device other than its person's first, that device
introduces its person (message 36: P's own link key, P's signature over it, P's
roster); the other end waits for the introduction before it counts P as a friend, and
checks it (core.introduction): then the friend is the person, whichever device paired.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Coroutine
from typing import Any, Protocol

from p2pmoments.core.errors import DecodeError
from p2pmoments.core.introduction import (
    IntroductionError,
    check_introduction,
    decode_introduction,
    encode_introduction,
)
from p2pmoments.core.link import MAX_APP_MESSAGE, CloseCode
from p2pmoments.core.pairing import PairingEvent, PairingState
from p2pmoments.events import EventBus
from p2pmoments.friends import Friends, friend_from_hello
from p2pmoments.net.links import Hello, Links
from p2pmoments.ourdevices import OurDevices
from p2pmoments.pairings import Pairings
from p2pmoments.persons import Persons
from p2pmoments.reach import Reach
from p2pmoments.replication import Replication
from p2pmoments.store import AsyncStore, FriendRecord, Store

__all__ = ["INTRODUCTION_TIMEOUT", "MAX_WAITING", "DevicePairing"]

log = logging.getLogger(__name__)

INTRODUCTION_TIMEOUT = 30.0  # seconds a pairing link may wait for its introduction
MAX_WAITING = 32  # pairing links waiting at once (as many as our valid codes)
_META = "person_link"  # our first device's link key and its signature, hex


class Parts(Protocol):
    """What of the node this needs."""

    person: bytes
    me: bytes
    store: AsyncStore
    events: EventBus
    friends: Friends
    persons: Persons
    pairings: Pairings
    links: Links
    devices: OurDevices
    reach: Reach
    replication: Replication

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None: ...

    def friend_json(self, friend: FriendRecord) -> dict[str, Any]: ...


class DevicePairing:
    """Pairing links where a device other than its person's first is on either end."""

    def __init__(self, node: Parts) -> None:
        self._node = node
        self._person_link: tuple[bytes, bytes] | None = None  # P's link key, signature
        self._waiting: dict[bytes, Hello] = {}  # device -> its hello, until introduced
        self._introduce: set[bytes] = set()  # pairing links we introduce ourselves on
        node.pairings.refusal = self.refusal

    async def load(self) -> None:
        """Read what we know of our first device's link key."""
        text = await self._node.store.run(Store.get_meta, _META)
        try:
            raw = bytes.fromhex(text or "")
        except ValueError:
            raw = b""
        if len(raw) == 96:  # else: learned again at the next link with our first device
            self._person_link = (raw[:32], raw[32:])

    def refusal(self) -> str | None:
        """Why this device cannot show pairing codes now, if it cannot."""
        node = self._node
        if node.person == node.me:
            return None
        roster = node.persons.roster(node.person)
        if roster is None or not roster.is_current(node.me):
            return "this device is not yet one of yours: finish linking it first"
        if self._person_link is None:
            return (
                "this device has not met your first device yet: start both once, then "
                "show codes from here"
            )
        return None

    def met(self, hello: Hello) -> None:
        """Any hello: our first device's tells us its link key and signature, which we
        hand to those we pair with (the link verified the signature)."""
        node = self._node
        if hello.key != node.person or hello.person != node.person or node.person == node.me:
            return
        known = (hello.link_key, hello.link_signature)
        if known != self._person_link:
            self._person_link = known
            text = (known[0] + known[1]).hex()
            node.spawn(node.store.run(Store.set_meta, _META, text), "person-link")

    async def established(self, hello: Hello) -> tuple[CloseCode, str] | None:
        """A pairing link's hellos are done and a device other than a first is on one
        end: pair now (the peer is its person's first), or wait for its introduction.
        None to keep the link, else why to close it."""
        node = self._node
        if hello.person == node.person:
            return CloseCode.NOT_ACCEPTED, "that is a device of your own: link it instead"
        if node.person != node.me:
            if self._person_link is None:
                return CloseCode.NOT_ACCEPTED, "this device cannot pair yet"
            self._introduce.add(hello.key)
        if hello.person == hello.key:
            await self.paired(hello)
            return None
        if hello.key not in self._waiting and len(self._waiting) >= MAX_WAITING:
            return CloseCode.OVERLOAD, "too many pairings at once"
        self._waiting[hello.key] = hello
        # A timer, not a task: nothing to wait for at shutdown.
        asyncio.get_running_loop().call_later(INTRODUCTION_TIMEOUT, self._expire, hello)
        return None

    def linked(self, key: bytes) -> None:
        """A link is up: on a pairing link, we introduce our person (after our roster)."""
        node = self._node
        if key in self._introduce and self._person_link is not None:
            self._introduce.discard(key)
            link, signature = self._person_link
            entries = node.persons.entries_of(node.person)
            if sum(len(e) for e in entries) > MAX_APP_MESSAGE - 1024:
                log.warning("our roster is too large to introduce us: pair from the first device")
                return
            node.links.send(key, encode_introduction(link, signature, entries))

    async def on_message(self, key: bytes, body: dict[int, Any]) -> None:
        """An introduction: on a pairing link waiting for one, the pairing completes if it
        holds (else the link ends as misbehaving); anywhere else it is ignored."""
        node = self._node
        try:
            intro = decode_introduction(body)
        except DecodeError as exc:
            node.links.drop_misbehaving(key, f"bad introduction: {exc}")
            return
        hello = self._waiting.pop(key, None)
        if hello is None:
            return
        try:
            entries = check_introduction(
                intro, person=hello.person, device=hello.key, device_link=hello.link_key
            )
        except IntroductionError as exc:
            node.links.drop_misbehaving(key, f"an introduction that does not hold: {exc}")
            if hello.pairing_id is not None:
                await node.pairings.update(hello.pairing_id, PairingEvent.REFUSED, str(exc))
                node.links.answered_by_device(hello.person)  # the code's dial ends here
                known = node.friends.get(hello.person)
                if known is not None:  # a friend already: dialled as before
                    node.links.want(hello.person, known.link_key)
            return
        friend = dataclasses.replace(  # the person, by its own link key, as introduced
            friend_from_hello(hello, None, None, int(time.time())),
            verify_key=hello.person,
            link_key=intro.link_key,
            link_signature=intro.link_signature,
        )
        if hello.pairing_id is not None:  # we scanned: the code's dial is done
            onion = node.links.onion_of(hello.person)
            node.links.answered_by_device(hello.person)
            node.reach.paired(onion)
        is_new = await node.friends.paired(friend)
        await node.persons.keep(hello.person, entries)
        node.devices.want()  # the person's devices are dial targets now
        if hello.host is not None and hello.listen_port:
            node.links.want(hello.key, hello.link_key, address=(hello.host, hello.listen_port))
        await node.replication.relink(key)  # the device replicates as its person
        log.info("paired with a device of %s", hello.name)
        await self._recorded(hello, is_new)

    async def paired(self, hello: Hello) -> None:
        """A pairing is done with a person's only or first device: they are a friend."""
        node = self._node
        host = port = None
        if not hello.initiator and hello.host is not None:  # not over Tor
            host, port = hello.host, hello.listen_port
        elif node.friends.get(hello.key) is None:
            first = node.links.first_address(hello.key)
            host, port = first if first else (None, None)
        is_new = await node.friends.paired(friend_from_hello(hello, host, port, int(time.time())))
        if hello.pairing_id is not None:
            node.links.pairing_done(hello.key)
            node.reach.paired(node.links.onion_of(hello.key))
        await self._recorded(hello, is_new)

    async def _recorded(self, hello: Hello, is_new: bool) -> None:
        """The pairing's record says it is done, and a new friend is announced."""
        node = self._node
        if hello.pairing_id is not None:
            await node.pairings.update(hello.pairing_id, PairingEvent.LINKED)
        elif hello.pairing_token is not None:
            await node.pairings.record_theirs(
                hello.link_key,
                hello.pairing_token,
                PairingState.CONFIRMED,
                identity=hello.person,
                name=hello.name,
            )
        if is_new:
            added = node.friends.get(hello.person)
            assert added is not None
            node.events.publish("friend.added", **node.friend_json(added))

    def _expire(self, hello: Hello) -> None:
        if self._waiting.get(hello.key) is hello:
            del self._waiting[hello.key]
            self._node.links.drop(hello.key, "no introduction of its person came")
