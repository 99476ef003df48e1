"""Recovery (spec/devices.md section 5): making a person's recovery sheet on their first
device, and on a machine recovered from one, getting the person back: friends come back
as they link (each says so), circles come back with replication, and the devices the
person lost are revoked with the recovery key R. The node wires it; the rules are
core.devices' and the sheet's bytes core.recovery's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any, Protocol

from p2pmoments.circles import Circles
from p2pmoments.core.crypto import LinkSecretKey
from p2pmoments.core.errors import P2PMomentsError
from p2pmoments.core.identity import Identity
from p2pmoments.core.recovery import (
    RecoveryError,
    RecoverySheet,
    decode_friendship_message,
    encode_friendship_message,
    encode_sheet,
    sheet_device,
    sheet_lines,
)
from p2pmoments.errors import UserInputError
from p2pmoments.events import EventBus
from p2pmoments.friends import Friends, friend_from_hello, identity_text
from p2pmoments.home import DeviceInfo, load_sheet, recovered
from p2pmoments.net.links import Hello, Links
from p2pmoments.paths import Paths
from p2pmoments.persons import SHEET_DEVICE_NAME, Persons
from p2pmoments.store import AsyncStore, FriendState, Store

__all__ = ["Recovery"]

log = logging.getLogger(__name__)

MAX_HELLOS = 256  # hellos kept while recovering, to make friends of those who say so


class Parts(Protocol):
    """What of the node this needs (the node itself, without importing it)."""

    person: bytes
    me: bytes
    identity: Identity
    paths: Paths
    persons: Persons
    store: AsyncStore
    friends: Friends
    circles: Circles
    links: Links
    events: EventBus


class Recovery:
    """The recovery sheet, and recovering from one."""

    def __init__(self, node: Parts) -> None:
        self._node = node
        self._sheet: RecoverySheet | None = None  # while recovering
        self._device_name = ""
        self._hellos: dict[bytes, Hello] = {}

    @property
    def recovering(self) -> bool:
        """This home was made from a sheet and the lost devices are not revoked yet:
        anyone who dials the sheet's device is answered (only holders of the person's
        roster know its link key: friends and co-members, spec/devices.md section 5.3)."""
        return self._sheet is not None

    async def start(self, info: DeviceInfo | None) -> None:
        """At start-up: the sheet if still recovering, the person's link secret if this
        home was ever recovered."""
        node = self._node
        if info is not None and info.recovering:
            self._sheet = await asyncio.to_thread(load_sheet, node.paths)
            self._device_name = info.name
        try:
            secret = await asyncio.to_thread(node.paths.person_link_file.read_bytes)
            node.circles.person_link = LinkSecretKey(secret)
        except FileNotFoundError:
            pass
        except ValueError as exc:
            raise P2PMomentsError(f"{node.paths.person_link_file} is damaged: {exc}") from None

    def status(self) -> dict[str, Any]:
        """What GET /recovery shows."""
        node = self._node
        roster = node.persons.roster(node.person)
        return {
            "set": roster is not None and roster.recovery is not None,
            "recovering": self.recovering,
            "can_make": node.person == node.me and (roster is None or roster.recovery is None),
            "friends": len([f for f in node.friends.all() if f.state is FriendState.FRIEND]),
            "circles": len(node.circles.all()),
            "devices": self._others(),
        }

    async def make_sheet(self) -> dict[str, Any]:
        """The person's recovery sheet, made once (spec/devices.md section 5.2): R and the
        sheet's own device go into the roster; the secret is shown here and kept nowhere."""
        node = self._node
        if node.person != node.me:
            raise UserInputError(
                "make the recovery sheet on your first device: it holds the key that "
                "opens your circles, which the sheet must carry"
            )
        secret = os.urandom(32)
        sheet = RecoverySheet(
            person=node.person,
            secret=secret,
            person_link=node.identity.link_secret.secret_bytes,
        )
        r_sign, r_link = sheet.recovery_key()
        try:
            await node.persons.set_recovery(
                node.identity,
                recovery=(bytes(r_sign.verify_key), bytes(r_link.public_key)),
                sheet=sheet_device(secret),
                now=int(time.time()),
            )
        except P2PMomentsError as exc:
            raise UserInputError(str(exc)) from None
        text = encode_sheet(sheet)
        node.events.publish("recovery.set")
        log.info("a recovery sheet was made")
        return {"sheet": text, "lines": sheet_lines(text), "person": identity_text(node.person)}

    # --- recovering (spec/devices.md section 5.3) ---------------------------------------

    def established(self, hello: Hello) -> None:
        """While recovering, a link from someone we do not know yet: kept, so that if
        they say they are our friend we have their keys."""
        self._hellos.pop(hello.key, None)
        if len(self._hellos) >= MAX_HELLOS:  # the oldest goes: a friend links again later
            del self._hellos[next(iter(self._hellos))]
        self._hellos[hello.key] = hello

    def greet(self, key: bytes) -> None:
        """A link is up with a device of a friend of ours who has several devices (as a
        recovered person has): tell it we count its person as a friend."""
        node = self._node
        person = node.persons.person_of(key)
        friend = node.friends.get(person)
        if (
            person != node.person
            and friend is not None
            and friend.state is FriendState.FRIEND
            and node.persons.roster(person) is not None
        ):
            node.links.send(key, encode_friendship_message())

    async def on_friendship(self, key: bytes, body: dict[int, Any]) -> None:
        """A peer says our person is its friend: while recovering, it is ours again (its
        own identity and link key, from its hello: a friend's first device)."""
        node = self._node
        try:
            decode_friendship_message(body)
        except RecoveryError as exc:
            node.links.drop_misbehaving(key, f"bad friendship message: {exc}")
            return
        hello = self._hellos.get(key)
        if not self.recovering or hello is None or hello.person != hello.key:
            return  # nothing to restore, or a device whose person we will hear from
        if node.friends.get(key) is not None:
            return
        direct = not hello.initiator  # it dialled us: where it listens is known
        host, port = (hello.host, hello.listen_port) if direct else (None, None)
        await node.friends.paired(friend_from_hello(hello, host, port, int(time.time())))
        log.info("a friend is back: %s", hello.name)
        friend = node.friends.get(key)
        if friend is not None:
            from p2pmoments.views import friend_json

            node.events.publish("friend.added", **friend_json(friend, connected=True))

    def _others(self) -> list[str]:
        node = self._node
        roster = node.persons.roster(node.person)
        if roster is None:
            return []
        return sorted(name for d, _, name in roster.snapshot().current if d != node.me)

    async def revoke(self, names: list[str] | None) -> list[str]:
        """On a recovered device: revoke, with R, the devices named (None: every other
        one), cut off at what this device holds of each; then the sheet leaves this
        device and this device takes its own name. Returns the names revoked."""
        node = self._node
        if self._sheet is None:
            raise UserInputError("this device is not recovering from a recovery sheet")
        roster = node.persons.roster(node.person)
        if roster is None or not roster.is_current(node.me):
            raise UserInputError(
                "your roster has not come back yet: wait until a friend or co-member has "
                "linked with this device (p2pmoments peers)"
            )
        current = {name: d for d, _, name in roster.snapshot().current if d != node.me}
        wanted = sorted(current) if names is None else names
        for name in wanted:
            if name not in current:
                raise UserInputError(f"no device of yours is {name!r} (yours: {self._others()})")
        r_sign, _ = self._sheet.recovery_key()
        for name in wanted:
            held = await node.store.run(Store.highest_seqs, current[name])
            await node.persons.revoke_by_recovery(
                r_sign, device=current[name], cutoffs=held, now=int(time.time())
            )
            log.info("revoked %s with the recovery key", name)
        if self._device_name and roster.name_of(node.me) == SHEET_DEVICE_NAME:
            await node.persons.change_device(
                node.identity, device=node.me, name=self._device_name, now=int(time.time())
            )
        self._sheet = None
        self._hellos.clear()
        await asyncio.to_thread(recovered, node.paths)
        node.events.publish("recovery.done", revoked=wanted)
        return wanted
