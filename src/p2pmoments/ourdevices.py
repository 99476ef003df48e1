"""One person's devices, and the devices of the people we know (spec/devices.md sections
8-10): which devices to dial, the rosters handed to whom, what our own devices tell each
other (epoch keys, friends, circle edits), linking, renaming and revoking a device. The
node wires it; the rules are core.devices' and the rosters persons.Persons'.

Why so long: everything devices add to a running daemon is here, so that node.py stays
the wiring diagram it is; each part is short and on its own (dialling, rosters on
links, our devices' sync, linking, revoking).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any, Protocol

from p2pmoments.circleops import (
    MAX_OPS_MESSAGE,
    T_OPS,
    CircleEdits,
    decode_ops_message,
    encode_ops_message,
)
from p2pmoments.circles import Circles
from p2pmoments.core.circle_ops import Op
from p2pmoments.core.crypto import BadSignatureError, VerifyKey
from p2pmoments.core.device_entries import (
    T_ROSTER,
    RosterError,
    consent_message,
    decode_roster_message,
    encode_roster_message,
)
from p2pmoments.core.errors import DecodeError, P2PMomentsError
from p2pmoments.core.identity import Identity
from p2pmoments.core.introduction import T_INTRODUCTION
from p2pmoments.core.link import CloseCode
from p2pmoments.core.pairing import (
    decode_device_link,
    device_link_psk,
)
from p2pmoments.core.pairing_addr import LinkAddress
from p2pmoments.core.profile import check_display_name
from p2pmoments.core.recovery import T_FRIENDSHIP
from p2pmoments.core.self_sync import (
    T_FRIENDS,
    T_JOIN,
    T_KEYS,
    decode_friends_message,
    decode_join_message,
    decode_keys_message,
    decode_removals,
    encode_friends_message,
    encode_join_message,
    encode_keys_message,
)
from p2pmoments.errors import UserInputError
from p2pmoments.events import EventBus
from p2pmoments.friends import Friends, identity_text
from p2pmoments.home import DeviceInfo, joined
from p2pmoments.joins import DEVICE_LINK_TTL, JoinRequest, Joins, own_code
from p2pmoments.net.links import Hello, Links
from p2pmoments.paths import Paths
from p2pmoments.persons import Persons
from p2pmoments.recovery import Recovery
from p2pmoments.replication import Replication
from p2pmoments.store import AsyncStore, FriendRecord, FriendState, Store

__all__ = ["DEVICE_LINK_TTL", "DEVICE_MESSAGES", "JOIN_ID", "OurDevices"]

log = logging.getLogger(__name__)

JOIN_ID = 0  # the pairing id of the dial that joins this device to its person (none is 0)
DEVICE_MESSAGES = frozenset(
    {T_ROSTER, T_JOIN, T_KEYS, T_FRIENDS, T_OPS, T_FRIENDSHIP, T_INTRODUCTION}
)


class Parts(Protocol):
    """What of the node this needs (the node itself, without importing it)."""

    person: bytes
    me: bytes
    identity: Identity
    paths: Paths
    persons: Persons
    recovery: Recovery
    circle_edits: CircleEdits
    store: AsyncStore
    friends: Friends
    circles: Circles
    links: Links
    replication: Replication
    events: EventBus
    device_pairing: Any  # devicepairing.DevicePairing (which imports this module)
    reach: Any  # reach.Reach

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None: ...

    def code_address(self) -> LinkAddress: ...


class OurDevices:
    """Devices: ours and others'."""

    def __init__(self, node: Parts) -> None:
        self._node = node
        self._device_targets: set[bytes] = set()
        # Device links we showed (spec/devices.md section 10): PSK -> expiry; the devices
        # that linked with one and have yet to ask (device -> link key); and, on a new
        # device, the link it joins by.
        self.joins = Joins(node)
        self._joining: dict[bytes, tuple[bytes, bytes, bool, int]] = {}  # link, psk, ask, expiry
        self._join: DeviceInfo | None = None
        self._revoked: set[bytes] = set()  # revoked devices we have acted on
        self._ours_now = False  # whether this device is a current device of its person

    async def on_message(self, key: bytes, body: dict[int, Any]) -> None:
        """One of DEVICE_MESSAGES from a linked peer."""
        kind = body.get(0)
        if kind == T_ROSTER:
            await self.on_roster(key, body)
        elif kind == T_KEYS:
            await self.on_keys(key, body)
        elif kind == T_FRIENDS:
            await self.on_friends(key, body)
        elif kind == T_JOIN:
            await self.on_join(key, body)
        elif kind == T_OPS:
            await self.on_ops(key, body)
        elif kind == T_FRIENDSHIP:
            await self._node.recovery.on_friendship(key, body)
        elif kind == T_INTRODUCTION:  # pairing with a device (spec/devices.md 8.1)
            await self._node.device_pairing.on_message(key, body)

    @property
    def targets(self) -> set[bytes]:
        """The devices we dial as devices (not as friends or co-members)."""
        return self._device_targets

    def established(self, hello: Hello) -> tuple[bool, tuple[CloseCode, str] | None]:
        """Whether the link was made with a device link (ours to a new device, or this
        new device's to our first), and then None to keep it, or why to close it."""
        node = self._node
        psk = hello.pairing_token
        taken = None if psk is None else self.joins.take(psk)  # a device link works once
        if psk is not None and taken is not None:
            if hello.person != node.person:
                return True, (CloseCode.NOT_ACCEPTED, "this device link is another person's")
            self._joining[hello.key] = (hello.link_key, psk, *taken)
            return True, None
        if hello.pairing_id == JOIN_ID:  # we are the new device; the roster comes next
            if hello.key != node.person:
                return True, (CloseCode.WRONG_IDENTITY, "not the device whose link we have")
            node.links.pairing_done(hello.key)
            return True, None
        return False, None

    def check_hello(self, hello: Hello) -> tuple[bool, tuple[CloseCode, str] | None]:
        """The device rules of a hello (spec/devices.md sections 5.3, 8): whether they
        decide (then None to keep the link, or why to close it), else the friend and
        co-member rules do."""
        node = self._node
        if hello.person != hello.key:  # a device of a person: their roster must say so
            roster = node.persons.roster(hello.person)
            if node.persons.contesting(hello.link_key) == (hello.person, hello.key):
                return True, None  # revoked, but may win its race: rosters only (3.3)
            if roster is None or roster.link_key(hello.key) != hello.link_key:
                return True, (CloseCode.WRONG_IDENTITY, "not a current device of that person")
        if hello.person == node.person:
            return True, None if hello.key != node.me else (CloseCode.WRONG_IDENTITY, "ourselves")
        if node.recovery.recovering:  # anyone who knew where to find us (section 5.3)
            node.recovery.established(hello)
            return True, None
        if node.persons.is_revoked(hello.key):
            return True, (CloseCode.NOT_ACCEPTED, "this device was revoked by its person")
        if node.person != node.me and not hello.knows_devices:
            return True, (
                CloseCode.UPGRADE_REQUIRED,
                f"{node.friends.my_name} uses several devices: update p2pmoments to keep "
                "receiving from them",
            )
        return False, None

    def revoked_first(
        self, link_key: bytes, friend: FriendRecord | None, co_members: dict[bytes, bytes]
    ) -> bool:
        """Whether this link key is a friend's or co-member's first device (their
        identity key), which their roster revokes: silence (spec/devices.md section 3)."""
        key = friend.verify_key if friend is not None else None
        if key is None:
            key = next((k for k, v in co_members.items() if v == link_key), None)
        return key is not None and self._node.persons.is_revoked(key)

    def linked(self, key: bytes) -> None:
        """A link is up: the rosters it should hold; if it is a device of ours, what we
        know that it may lack; if we are joining, our request."""
        node = self._node
        person = node.persons.person_of(key)
        for whose in self.rosters_for(person):
            node.links.send(key, encode_roster_message(whose, node.persons.entries_of(whose)))
        if self._join is not None and key == node.person:  # we join: ask to be certified
            self._ask_to_join(key)  # (once our roster names us, _join is None)
        elif person == node.person and node.persons.person_of(node.me) == node.person:
            self.send_friends(key)  # another device of ours: our friends, the keys it lacks,
            self.send_keys(key)  # the edits of circles we own
            self._send_all_ops(key)
        else:
            node.recovery.greet(key)  # a friend with several devices may be recovering

    def start(self, join: DeviceInfo | None) -> None:
        """At start-up: dial our first device if this one is still joining."""
        self._join = join if join is not None and join.join else None
        self._revoked = self._node.persons.revoked()
        self._ours_now = self._node.persons.person_of(self._node.me) == self._node.person
        if self._join is not None and self._ours_now:  # linked, then stopped before it
            self._join = None  # had written so: it is one of its person's devices
            self._node.spawn(self._joined(), "joined")
        self._dial_join()

    def roster_changed(self, person: bytes) -> None:
        """A roster changed: its devices are dialled, revoked ones let go, and those
        linked to us who should hold it get it now (a friend learns of a device of ours
        the moment it is linked, not at their next link-up); a device that became
        someone's starts replicating as them."""
        self.want()
        self._node.spawn(self._node.reach.rosters_changed(), "reach")  # devices' onions
        entries = self._node.persons.entries_of(person)
        for key in self._node.links.linked():
            if person in self.rosters_for(self._node.persons.person_of(key)):
                self._node.links.send(key, encode_roster_message(person, entries))
        changed = [
            k for k in self._node.links.linked() if self._node.persons.person_of(k) == person
        ]
        ours = self._node.persons.person_of(self._node.me) == self._node.person
        if person == self._node.person and ours != self._ours_now:
            self._ours_now = ours  # this device became (or stopped being) its person's:
            changed = self._node.links.linked()  # every link replicates as that person
        self._node.spawn(self._relink(changed), "relink")
        if person == self._node.person and self._join is not None:
            roster = self._node.persons.roster(person)
            if roster is not None and roster.is_current(self._node.me):
                # At once, not in the task: a link to our first device that comes up
                # meanwhile must not ask to join again (its first device would drop it).
                self._join = None
                self._node.spawn(self._joined(), "joined")
        if person == self._node.me:
            self._node.spawn(self._start_logs(), "edit logs")
        revoked = self._node.persons.revoked() - self._revoked
        if revoked:
            self._revoked |= revoked
            self._node.spawn(self._after_revocation(person, revoked), "revoked")

    async def _after_revocation(self, person: bytes, devices: set[bytes]) -> None:
        """Devices of `person` were revoked (spec/devices.md sections 3, 6): their links
        end and are refused from now on; every circle we own that the person is in gets
        a new epoch, whose key those devices never get."""
        node = self._node
        for device in devices:
            node.links.forget(device, "this device was revoked by its person")
            node.events.publish("device.revoked", device=identity_text(device))
        if node.person != node.me:
            return  # the first device issues manifests (section 14)
        for manifest in node.circles.all():
            owned = bytes(manifest.owner) == node.me and node.circles.member_of(manifest.circle_id)
            if owned and any(bytes(m.verify_key) == person for m in manifest.members):
                try:
                    await node.circles.rekey(manifest.circle_id)
                except P2PMomentsError as exc:
                    log.warning("could not start a new epoch after a revocation: %s", exc)

    def _ours(self, ref: str) -> bytes:
        """One of our current devices, by name (any case) or key prefix."""
        roster = self._node.persons.roster(self._node.person)
        current = roster.snapshot().current if roster is not None else frozenset()
        ref = ref.strip()
        found = [d for d, _, name in current if name.lower() == ref.lower()]
        if not found and len(ref) >= 6:
            found = [d for d, _, _ in current if identity_text(d).startswith(ref.lower())]
        if len(found) != 1:
            names = ", ".join(sorted(name for _, _, name in current)) or "none linked yet"
            raise UserInputError(f"no single device of yours is {ref!r} (yours: {names})")
        return found[0]

    async def rename(self, ref: str, name: str) -> None:
        """Rename one of our devices, on every device of ours and at our friends'."""
        device = self._ours(ref)
        try:
            check_display_name(name)
        except DecodeError as exc:
            raise UserInputError(str(exc)) from None
        node = self._node
        await node.persons.change_device(node.identity, device=device, name=name, now=_now())

    async def revoke(self, ref: str) -> str:
        """Revoke one of our devices (a lost or stolen one): from now on it gets nothing
        new from anyone who learns of it, and nothing it signs past what we hold of it
        counts as ours. What it already has, it keeps. Returns its name."""
        node = self._node
        device = self._ours(ref)
        if device == node.me:
            raise UserInputError("revoke this device from another of your devices")
        if device == node.person:
            raise UserInputError(
                "this is your first device, which holds your identity key: revoke it from a "
                "device restored from your recovery sheet (p2pmoments --home NEW recover; "
                "spec/devices.md section 5)"
            )
        roster = node.persons.roster(node.person)
        assert roster is not None
        name = roster.name_of(device) or "device"
        held = await node.store.run(Store.highest_seqs, device)
        await node.persons.change_device(node.identity, device=device, now=_now(), cutoffs=held)
        log.info("revoked our device %s", name)
        return name

    async def _relink(self, keys: list[bytes]) -> None:
        for key in keys:
            await self._node.replication.relink(key)

    def want(self) -> None:
        """The current devices of our friends, co-members and ourselves are dial targets
        (found by their beacons, spec/devices.md section 8); a device no longer current,
        or of someone we no longer know, is let go."""
        co_members = self._node.circles.co_members()
        wanted: dict[bytes, bytes] = {}
        for person in self._node.persons.persons():
            friend = self._node.friends.get(person)
            if person == self._node.person or (
                friend.state is FriendState.FRIEND if friend is not None else person in co_members
            ):
                wanted |= self._node.persons.devices_of(person)
        if self._node.person != self._node.me:  # our first device is one of ours to link with
            roster = self._node.persons.roster(self._node.person)
            link = roster.link_key(self._node.person) if roster is not None else None
            if link is not None:
                wanted[self._node.person] = link
        wanted.pop(self._node.me, None)
        for key in self._device_targets - set(wanted):
            self._node.links.forget(key, "no longer a current device of anyone we know")
        for key, link in wanted.items():
            if key not in self._node.links.targets():
                self._node.links.want(key, link, onion=self._node.reach.onion_of(key))
        self._device_targets = set(wanted)

    # --- our devices and others' (spec/devices.md sections 8, 9) ---------------------------

    def rosters_for(self, person: bytes) -> list[bytes]:
        """The rosters to hand a device of `person` at link-up: ours, and those of the
        people we share a circle with them (so that co-members learn each other's
        devices); never in mDNS, only over links (spec/devices.md section 8)."""
        shared = set()
        for manifest in self._node.circles.all():
            members = {bytes(m.verify_key) for m in manifest.members}
            if person == self._node.person or person in members:
                shared |= members
        whose = [
            p
            for p in self._node.persons.persons()
            if p in (self._node.person, person) or p in shared
        ]
        return [p for p in whose if self._node.persons.entries_of(p)]

    async def on_roster(self, key: bytes, body: dict[int, Any]) -> None:
        try:
            person, raws = decode_roster_message(body)
        except RosterError as exc:
            self._node.links.drop_misbehaving(key, f"bad roster message: {exc}")
            return
        sender = self._node.persons.person_of(key)
        friend = self._node.friends.get(person)
        known = (
            person in (sender, self._node.person)
            or (friend is not None and friend.state is FriendState.FRIEND)
            or person in self._node.circles.co_members()
        )
        if not known:
            return  # a stranger's roster is not ours to keep
        _, junk = await self._node.persons.receive(person, raws)
        if junk:
            self._node.links.drop_misbehaving(key, f"{junk} roster entries that do not verify")

    # --- linking a device (spec/devices.md section 10) -------------------------------------

    def psks(self) -> list[bytes]:
        return self.joins.psks()

    def new_device_link(self, *, confirm: bool = True) -> tuple[str, int]:
        """A single-use link (and QR) for a new device of ours: (text, expiry); with
        `confirm`, the device is linked once the person confirms its code here."""
        link = self.joins.new_link(confirm=confirm)
        self._node.reach.refresh_clients()  # its token's key may reach our onion service
        return link

    def _dial_join(self) -> None:
        if self._join is None or self._join.join is None:
            return
        code = decode_device_link(self._join.join)
        self._node.links.want_pairing(
            self._node.person,
            bytes(code.link_key),
            pairing_id=JOIN_ID,
            psk=device_link_psk(code.token),
            expires=code.expires,
            address=(code.host, code.port) if code.host and code.port else None,
            onion=self._node.reach.link_onion(code.onion, code.token),
        )

    def _ask_to_join(self, key: bytes) -> None:
        assert self._join is not None
        consent = self._node.identity.signing_key.sign(
            consent_message(
                self._node.person, self._node.me, bytes(self._node.identity.public.link_key)
            )
        )
        name = self._join.name or "device"
        self._node.links.send(key, encode_join_message(name, consent))

    async def on_join(self, key: bytes, body: dict[int, Any]) -> None:
        joining = self._joining.pop(key, None)
        if joining is None and key in self.linked_ours():
            # A device of ours already linked, which asked again before its roster
            # reached it (it restarted, or a second link came up first): nothing to do.
            log.debug("a device of ours asked to join again")
            return
        if joining is None:
            self._node.links.drop_misbehaving(key, "a join without a device link")
            return
        link, psk, ask, expires = joining
        try:
            name, consent = decode_join_message(body)
            VerifyKey(key).verify(consent_message(self._node.person, key, link), consent)
        except (RosterError, BadSignatureError, ValueError) as exc:
            self._node.links.drop_misbehaving(key, f"a join that does not verify: {exc}")
            return
        if ask:  # the person confirms the code it shows (spec/devices.md section 10)
            code = self.joins.code(psk, key, link)
            log.info("a device asks to be linked: %s, code %s", name, code)
            self.joins.ask(
                JoinRequest(
                    device=key, link=link, name=name, consent=consent, code=code, expires=expires
                )
            )
            return
        await self.certify(key, link, name, consent)

    async def confirm(self, code: str) -> str:
        """The person confirmed the code a device waiting to join shows: it is linked.
        Returns its name."""
        request = self.joins.pop(code)
        await self.certify(request.device, request.link, request.name, request.consent)
        return request.name

    async def certify(self, key: bytes, link: bytes, name: str, consent: bytes) -> None:
        """Add a device to our roster, and hand it what it needs (spec/devices.md 10)."""
        try:
            await self._node.persons.add_device(
                self._node.identity,
                device=key,
                link=link,
                name=name,
                consent=consent,
                now=int(time.time()),
            )
        except RosterError as exc:
            self._node.links.drop_misbehaving(key, f"a join that does not verify: {exc}")
            raise UserInputError(f"{name} could not be linked: {exc}") from None
        except P2PMomentsError as exc:  # ten devices already
            log.warning("a device could not be linked: %s", exc)
            self._node.events.publish("device.link_failed", reason=str(exc))
            raise UserInputError(str(exc)) from None
        log.info("linked a new device of ours: %s", name)
        self._node.events.publish("device.linked", name=name, device=identity_text(key))
        # Before anything that awaits: its keys go ahead of the moments that the link's
        # relink (spawned by the roster change) sends, which it could not open without.
        self.send_friends(key)
        self.send_keys(key)
        self._send_all_ops(key)
        await self._start_logs()

    async def _start_logs(self) -> None:
        """On our first device, once we have other devices: the circles we own get their
        edit logs (spec/devices.md section 6.3), before another device may edit them."""
        node = self._node
        if node.person != node.me or node.persons.roster(node.me) is None:
            return
        made = []
        for manifest in node.circles.all():
            if bytes(manifest.owner) == node.me:
                made += await node.circle_edits.bootstrap(manifest)
        await self.send_ops(made)

    def _send_all_ops(self, key: bytes) -> None:
        ops = self._node.circle_edits.all_raw()
        for start in range(0, len(ops), MAX_OPS_MESSAGE):
            self._node.links.send(key, encode_ops_message(ops[start : start + MAX_OPS_MESSAGE]))

    async def send_ops(self, ops: list[Op], *, but: bytes | None = None) -> None:
        """New circle ops of ours (made here or relayed) to our other devices linked."""
        if ops:
            for key in self.linked_ours():
                if key != but:
                    self._node.links.send(key, encode_ops_message([op.raw for op in ops]))

    async def on_ops(self, key: bytes, body: dict[int, Any]) -> None:
        """Circle ops from another device of ours: kept, passed on, and on our first
        device, turned into the manifests they make (spec/devices.md section 6.3)."""
        node = self._node
        if key not in self.linked_ours():
            node.links.drop_misbehaving(key, "circle edits from someone not one of our devices")
            return
        try:
            ops = decode_ops_message(body)
        except RosterError as exc:
            node.links.drop_misbehaving(key, f"bad circle edits: {exc}")
            return
        fresh = await node.circle_edits.received(ops)
        await self.send_ops(fresh, but=key)
        if node.person == node.me:
            for circle in {op.circle for op in fresh}:
                current = node.circles.current(circle)
                if current is not None and bytes(current.owner) == node.me:
                    await node.circles.apply_ops(circle)

    async def _joined(self) -> None:
        self._node.reach.paired(self._node.links.onion_of(self._node.person))  # our own key
        await asyncio.to_thread(joined, self._node.paths)
        log.info("this device is now one of its person's")
        self._node.events.publish("device.joined", person=identity_text(self._node.person))

    def devices(self) -> list[dict[str, Any]]:
        """Our devices, as the API shows them: which is this one, their names."""
        roster = self._node.persons.roster(self._node.person)
        if roster is None:
            return [{"device": identity_text(self._node.me), "name": "first device", "this": True}]
        state = roster.snapshot()
        out = [
            {
                "device": identity_text(device),
                "name": name,
                "this": device == self._node.me,
                "linked": device in self._node.links.linked(),
            }
            for device, _, name in sorted(state.current)
        ]
        return sorted(out, key=lambda d: (not d["this"], d["name"]))

    def joining_code(self) -> str | None:
        """While this device waits to be linked: the code its person confirms."""
        return own_code(self._join.join if self._join is not None else None, self._node.identity)

    def linked_ours(self) -> list[bytes]:
        return [
            k
            for k in self._node.links.linked()
            if k != self._node.me and self._node.persons.person_of(k) == self._node.person
        ]

    def send_friends(self, key: bytes) -> None:
        self._node.links.send(
            key,
            encode_friends_message(
                self._node.friends.my_name, self._node.friends.shared(), self._node.friends.removed
            ),
        )

    async def on_friends(self, key: bytes, body: dict[int, Any]) -> None:
        if key not in self.linked_ours():
            self._node.links.drop_misbehaving(key, "friends from someone not one of our devices")
            return
        try:
            name, friends = decode_friends_message(body)
            removed = decode_removals(body)
        except RosterError as exc:
            self._node.links.drop_misbehaving(key, f"bad friends message: {exc}")
            return
        await self._node.friends.from_our_device(name, friends, removed)

    def send_keys(self, key: bytes) -> None:
        keys = self._node.circles.keys_held()
        if keys:
            self._node.links.send(key, encode_keys_message(keys))

    async def on_keys(self, key: bytes, body: dict[int, Any]) -> None:
        if key not in self.linked_ours():
            self._node.links.drop_misbehaving(key, "epoch keys from someone not one of our devices")
            return
        try:
            keys = decode_keys_message(body)
        except RosterError as exc:
            self._node.links.drop_misbehaving(key, f"bad keys message: {exc}")
            return
        if await self._node.circles.given(keys):
            await self._node.replication.keys_arrived()


def _now() -> int:
    return int(time.time())
