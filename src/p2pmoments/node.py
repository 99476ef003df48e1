"""The node: one person's daemon minus the HTTP front door. It makes the parts, wires
them together, runs them in one TaskGroup (style.md, rule 5), and decides nothing of
its own: who may link is core.admission's, what replicates core.replication's.

    friends ─┐             ┌─ links (net/links.py) ◄─ discovery (mDNS)
    pairings ├─ node wires ┤  onions (our tor) ◄─ reach (cards: who reaches whom)
    circles ─┤             └─ replication (runner of core.replication)
    moments, posting ──────┘

Why so long: it is the one place that wires the parts and answers what the links ask
(admission, hellos, messages, pairings); split, each half would need the other's parts.
What devices add lives in ourdevices.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from p2pmoments import __version__
from p2pmoments.ahead import AHEAD_MESSAGES, ChunksAhead
from p2pmoments.blobstore import BlobStore
from p2pmoments.circleops import CircleEdits
from p2pmoments.circles import Circles
from p2pmoments.config import Config
from p2pmoments.core import admission
from p2pmoments.core.admission import Admission, Known, Verdict
from p2pmoments.core.beacon import beacon
from p2pmoments.core.crypto import VerifyKey
from p2pmoments.core.identity import Identity
from p2pmoments.core.ids import IdKind, decode_id
from p2pmoments.core.link import CloseCode, Closed
from p2pmoments.core.pairing import (
    PairingCode,
    PairingEvent,
    PairingState,
    token_psk,
)
from p2pmoments.core.pairing_addr import LinkAddress
from p2pmoments.core.reach import T_REACH
from p2pmoments.core.replication.engine import Replicator
from p2pmoments.devicepairing import DevicePairing
from p2pmoments.disk import Disk
from p2pmoments.events import EventBus
from p2pmoments.friends import Friends, identity_text
from p2pmoments.home import load_device
from p2pmoments.mesh import Mesh
from p2pmoments.moments import Moments
from p2pmoments.net.discovery import Discovery
from p2pmoments.net.interfaces import lan_address
from p2pmoments.net.links import Hello, Links
from p2pmoments.onions import Onions
from p2pmoments.ourdevices import DEVICE_MESSAGES, JOIN_ID, OurDevices
from p2pmoments.pairings import Pairings
from p2pmoments.paths import Paths
from p2pmoments.persons import Persons
from p2pmoments.pictures import PICTURE_MESSAGES, Pictures
from p2pmoments.posting import Posting
from p2pmoments.reach import Reach
from p2pmoments.recovery import Recovery
from p2pmoments.replication import Replication, known_removal, verify_manifest
from p2pmoments.store import AsyncStore, FriendRecord, FriendState, PairingRecord, Store
from p2pmoments.versions import FileVersions

__all__ = ["Node", "Profile"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    """Who we are, as the API shows it."""

    name: str
    identity: str


class Node:
    """One person's daemon: its parts, wired."""

    def __init__(
        self,
        *,
        paths: Paths,
        config: Config,
        identity: Identity,
        clock: Callable[[], float] = time.monotonic,
        person: bytes | None = None,
    ) -> None:
        self.paths = paths
        self.config = config
        self.identity = identity
        self.me = bytes(identity.public.verify_key)  # this device
        # The person this device is one of (spec/devices.md): on a first device, itself.
        self.person = person or self.me
        self.api_url: str | None = None
        self.started_at = time.time()
        self.events = EventBus()
        self.disk = Disk(paths.data_dir, self.events)  # told by every write that finds it full
        self.store = AsyncStore(paths.db_file, on_full=self.disk.noticed)
        self.blobs = BlobStore(paths.blob_dir, on_full=self.disk.noticed)
        self.friends = Friends(self.store, self.events, self.person, on_change=self._friend_changed)
        self.persons = Persons(
            self.store,
            self.events,
            me=self.person,
            device=self.me,
            on_change=lambda person: self.devices.roster_changed(person),
        )
        self.friends.person_of = self.persons.whose
        self.devices: OurDevices = OurDevices(self)
        self.recovery = Recovery(self)
        self.links = Links(
            identity,
            self,
            spawn=self.spawn,
            name=lambda: self.friends.my_name,
            pairing_psks=lambda: self.pairings.psks() + self.devices.psks(),
            clock=clock,
            person=self.person if self.person != self.me else None,
        )
        self.pairings: Pairings = Pairings(
            self.store,
            self.events,
            self.friends,
            me=PairingCode(  # a code names the person, and this device's link key
                identity=VerifyKey(self.person),
                link_key=identity.public.link_key,
                token=bytes(16),
                expires=0,
                name="",
            ),
            ttl=config.pairing_ttl,
            max_friends=config.max_friends,
            dial=self._dial_pairing,
            address=self.code_address,
            on_codes=lambda: self.reach.refresh_clients(),
        )
        self.circles = Circles(
            self.store,
            self.blobs,
            self.events,
            self.friends,
            identity,
            on_change=self._circle_changed,
            on_gone=self._circle_gone,
            on_removed=self._members_removed,
            person=self.person,
        )
        ours = self.person  # an edit counts if our roster accepts its device there
        counts = lambda d, scope, seq: self.persons.author_person(d, scope, seq) == ours  # noqa: E731
        self.circle_edits = CircleEdits(self.store, identity, person=ours, counts=counts)
        self.circles.edits = self.circle_edits
        self.circles.several_devices = lambda: self.persons.roster(self.person) is not None
        self.circles.on_ops = self.devices.send_ops
        self.moments = Moments(self.store, self.blobs, self.events, self.circles)
        self.moments.person_of = self.persons.author_person
        self.posting = Posting(
            self.store,
            self.moments,
            self.circles,
            identity,
            keep_location=config.keep_location,
            on_posted=self._posted,
            person=self.person,
        )
        self.replication = Replication(
            Replicator(
                self.me,
                verify_manifest=verify_manifest(self.circles),
                verify_removal=known_removal,
                person_of=self.persons.person_of,
                eager=lambda peer, circle: self.mesh.eager(peer, circle),
            ),
            store=self.store,
            moments=self.moments,
            circles=self.circles,
            links=self.links,
            events=self.events,
            spawn=self.spawn,
        )
        self.replication.on_full, self.disk.on_room = self.disk.noticed, self.replication.room
        self.ahead = ChunksAhead(self.replication.engine, self.links, self.blobs, self.spawn)
        self.ahead.disk_full, self.posting.ahead = self.disk.noticed_full, self.ahead.sender
        self.ahead.in_use = lambda chunks: self.store.run(Store.chunks_in_use, chunks)
        self.versions = FileVersions(self.store, self.moments, self.posting, self.circles)
        self.replication.on_stored = self.versions.stored
        self.onions = Onions(
            paths=paths, config=config, events=self.events, on_ready_change=self.links.tor_changed
        )
        self.links.use_tor(self.onions.dial, self.onions.ready)
        self.reach: Reach = Reach(
            self.store,
            identity,
            links=self.links,
            onions=self.onions,
            friends=self.friends,
            circles=self.circles,
            pairings=self.pairings,
            persons=self.persons,
            device_links=self.devices.joins.live_tokens,
        )
        self.mesh: Mesh = Mesh(self)
        whose = self.persons.person_of  # profile pictures: spec/identity.md section 5
        self.pictures = Pictures(self.store, self.events, self.links, self.person, whose)
        self.device_pairing = DevicePairing(self)  # spec/devices.md section 8.1
        self._stack: AsyncExitStack | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._background: list[asyncio.Task[None]] = []
        self._closing = False
        # Tests and benchmarks may watch every message a peer sends (after replication).
        self.on_message: Callable[[bytes, dict[int, Any]], None] | None = None

    # --- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> Node:
        async with AsyncExitStack() as stack:
            await self.store.open()
            stack.push_async_callback(self.store.close)
            stack.push_async_callback(self.moments.close)
            await self.friends.load()
            await self.persons.load()
            device = await asyncio.to_thread(load_device, self.paths)
            pending = await self.pairings.load()
            await self.circles.load()
            await self.circle_edits.load()
            await self.replication.load()
            await self.onions.load()
            await self.reach.load()
            await self.pictures.load()
            await self.device_pairing.load()
            keys = self.onions.keys
            self._tg = await stack.enter_async_context(asyncio.TaskGroup())
            stack.push_async_callback(self._shutdown)
            for server in [
                await self.links.listen(self.config.listen),
                *([await self.links.listen_onion()] if keys is not None else []),
            ]:
                stack.push_async_callback(server.wait_closed)
                stack.callback(server.close)
            self._want_everyone(pending)
            await self.recovery.start(device)
            self.devices.start(device)
            self._tg.create_task(self.links.dial_forever(), name="dialler")
            self._background.append(self._tg.create_task(self.moments.expiry_loop(), name="expiry"))
            self._background.append(self._tg.create_task(self.disk.watch(), name="disk"))
            self._background.append(self._tg.create_task(self.mesh.run(), name="mesh"))
            if keys is not None and self.links.onion_port is not None:
                # Tor starts in the background: the daemon answers on the LAN meanwhile.
                run = self.onions.run(self.links.onion_port)
                self._background.append(self._tg.create_task(run, name="tor"))
                self._background.append(
                    self._tg.create_task(self.reach.expire_codes(), name="tor-clients")
                )
            if self.config.mdns:
                self._background.append(self._tg.create_task(self._discover(), name="discovery"))
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every link, stop every task, close the store; safe to call twice."""
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    async def _shutdown(self) -> None:
        self._closing = True
        for task in self._background:  # run until cancelled
            task.cancel()
        self.links.close_all()

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run `coro` in the node's TaskGroup."""
        if self._tg is None or self._closing:
            coro.close()
            return
        self._tg.create_task(coro, name=name)

    async def _discover(self) -> None:
        assert self.links.listen_port is not None
        discovery = Discovery(
            listen_host=self.config.listen.host,
            port=self.links.listen_port,
            own_beacon=lambda window: beacon(self.me, window),
            on_sighting=self.links.sighted,
        )
        try:
            await discovery.run()
        except OSError as exc:  # no multicast here: carry on with addresses we know
            log.warning("mDNS discovery is off: %s", exc)

    # --- who is who --------------------------------------------------------------------

    @property
    def name(self) -> str:
        """Our display name."""
        return self.friends.my_name

    @property
    def listen_port(self) -> int | None:
        """The TCP port peers connect to."""
        return self.links.listen_port

    async def profile(self) -> Profile:
        """Our name and identity."""
        return Profile(name=self.friends.my_name, identity=self.identity.public.text)

    async def set_name(self, name: str) -> Profile:
        """Change our display name; returns once it is on disk."""
        await self.friends.set_my_name(name)
        return await self.profile()

    def statistics(self) -> dict[str, int]:
        """A snapshot of the node's counters (also in GET /status)."""
        return {
            **self.links.statistics(),
            "pairing_codes": self.pairings.live_codes(),
            **self.replication.statistics(),
            **self.mesh.statistics(),
        }

    async def status(self) -> dict[str, Any]:
        """What `p2pmoments status --json` and GET /api/v1/status show."""
        counts = await self.store.run(Store.counts)
        return {
            "name": self.friends.my_name,
            "identity": self.identity.public.text,
            "version": __version__,
            "pid": os.getpid(),
            "started_at": self.started_at,
            "listen": self.links.listen_addresses,
            "mdns": self.config.mdns,
            "api_url": self.api_url,
            "token_file": str(self.paths.token_file),
            "data_dir": str(self.paths.data_dir),
            "config_file": str(self.paths.config_file),
            "peers_connected": len(self.links.linked()),
            "disk": await asyncio.to_thread(self.disk.status),
            "tor": self.onions.status(),
            "friends": counts.friends,
            "circles": counts.circles,
            "moments": counts.moments,
            "statistics": self.statistics(),
        }

    # --- whom we dial: friends, co-members, codes we scanned --------------------------------

    def _want_everyone(self, pending: list[PairingRecord]) -> None:
        for friend in self.friends.all():
            self._friend_changed(friend, friend.verify_key)
        for peer in self.config.peers:
            raw = decode_id(peer.identity, IdKind.IDENTITY)
            known = self.friends.get(raw)
            if known is None:
                log.warning("static peer %s is not a friend: pair with them first", peer.identity)
                continue
            address = (peer.address.host, peer.address.port)
            self.links.want(raw, known.link_key, address=address, via="static", first=True)
        for record in pending:
            self._dial_pairing(record)
        self._want_co_members()
        self.reach.refresh_clients()

    def _friend_changed(self, friend: FriendRecord | None, key: bytes) -> None:
        if self._tg is not None:  # running: our other devices learn of it
            for device in self.devices.linked_ours():
                self.devices.send_friends(device)
        self._friend_target(friend, key)

    def _friend_target(self, friend: FriendRecord | None, key: bytes) -> None:
        if friend is None:  # removed
            self.links.forget(key, "no longer friends")
            self._want_co_members()
        elif friend.state is FriendState.BLOCKED:
            self.links.forget(key, "blocked")
        elif not self.persons.is_revoked(key):  # their first device, unless revoked
            address = (friend.host, friend.port) if friend.host and friend.port else None
            self.links.want(key, friend.link_key, address=address, onion=self.reach.onion_of(key))
        self.reach.refresh_clients()

    def _want_co_members(self) -> None:
        """Co-members we link with (the mesh's choice) become dial targets, found by mDNS,
        never friends by this; the others, and former co-members, stop being dialled."""
        self.mesh.update()

    def _dial_pairing(self, record: PairingRecord) -> None:
        assert record.identity is not None
        address = (record.host, record.port) if record.host and record.port else None
        self.links.want_pairing(
            record.identity,
            record.link_key,
            pairing_id=record.id,
            psk=token_psk(record.token),
            expires=record.expires,
            address=address,
            onion=self.reach.pairing_onion(record),
        )

    def code_address(self) -> LinkAddress:
        """Where our codes say we are: a LAN address, and our onion address with Tor on."""
        host = self.config.listen.host if self.links.listen_port is not None else None
        if host in ("0.0.0.0", "::"):  # noqa: S104 - we listen everywhere: offer a LAN address
            host = lan_address()
        port = self.links.listen_port if host else None
        return LinkAddress(host=host or None, port=port, onion=self.onions.address)

    # --- what the links ask (net/links.py, LinkHandler) -------------------------------------

    async def admit(self, link_key: bytes, pairing_psk: bytes | None) -> Admission:
        """Whether to answer an initiator (core.admission decides)."""
        if (
            self.recovery.recovering
            or (pairing_psk and pairing_psk in self.devices.psks())
            or self.persons.contesting(link_key)  # its rosters only (spec/devices.md 3.3)
        ):
            return Admission(verdict=Verdict.ACCEPT)  # a new device of ours; or we recover
        friend = self.friends.by_link_key(link_key)
        co_members = self.circles.co_members()
        if self.devices.revoked_first(link_key, friend, co_members):
            return Admission(verdict=Verdict.REFUSE, reason="revoked by its person")
        device = self.persons.by_link_key(link_key)  # (person, device) of a current device
        if friend is None and device is not None:
            friend = self.friends.get(device[0])
        ours = device is not None and device[0] == self.person and device[1] != self.me
        claim, token = (None, None)
        if pairing_psk is not None:
            claim, token = await self.pairings.claim(pairing_psk, link_key)
        verdict = admission.admit(
            Known(
                friend=friend is not None and friend.state is FriendState.FRIEND,
                blocked=friend is not None and friend.state is FriendState.BLOCKED,
                co_member=ours
                or link_key in co_members.values()
                or (device is not None and device[0] in co_members),
                cooling=self.links.cooling(link_key),
                claim=claim,
                friends=self.friends.count(),
                max_friends=self.config.max_friends,
            )
        )
        if verdict.verdict is Verdict.REFUSE_PAIRING and token is not None:
            await self.pairings.record_theirs(link_key, token, PairingState.REFUSED, verdict.reason)
        return verdict

    async def established(self, hello: Hello) -> tuple[CloseCode, str] | None:
        """A link's hellos are done: a pairing completes, or a friend or co-member is back."""
        self.device_pairing.met(hello)
        by_device_link, refusal = self.devices.established(hello)
        if by_device_link:
            return refusal
        if hello.pairing_token is not None or hello.pairing_id is not None:
            if hello.person != hello.key or self.person != self.me:  # a device's: 8.1
                return await self.device_pairing.established(hello)
            await self.device_pairing.paired(hello)
            return None
        decided, refusal = self.devices.check_hello(hello)  # spec/devices.md sections 5, 8
        if decided:
            return refusal
        person = hello.person
        friend = self.friends.get(person)
        co_members = self.circles.co_members()
        if person != hello.key:  # the roster vouched for the device's link key
            if friend is not None and friend.state is not FriendState.FRIEND:
                return CloseCode.NOT_ACCEPTED, "blocked"
            if friend is None and person not in co_members:
                return CloseCode.WRONG_IDENTITY, "neither a friend nor a co-member"
            return None
        co_member = co_members.get(hello.key) == hello.link_key
        if friend is not None and friend.state is not FriendState.FRIEND:
            return CloseCode.NOT_ACCEPTED, "blocked"
        if (friend is None or friend.link_key != hello.link_key) and not co_member:
            return CloseCode.WRONG_IDENTITY, "neither a friend nor a co-member"
        if friend is not None and not hello.initiator and hello.listen_port and hello.host:
            # Remember where they listen, to dial them next time (not over Tor: host None).
            await self.friends.seen(
                hello.key, host=hello.host, port=hello.listen_port, name=hello.name
            )
        return None

    async def linked(self, key: bytes) -> None:
        """A link is registered: names remembered, replication starts."""
        info = next((p for p in self.links.peers() if p.key == key), None)
        person = self.persons.person_of(key)
        if info is not None and person != self.person:
            await self.friends.remember_name(person, info.name)
        self.devices.linked(key)
        self.device_pairing.linked(key)  # on a pairing link, after our roster
        self.mesh.linked(key)
        self.events.publish(
            "peer.connected",
            identity=identity_text(key),
            name=info.name if info else "",
            path=info.path if info else "lan",
        )
        self.reach.link_up(key)  # small and first: where we are reachable through Tor
        self.pictures.link_up(key)
        self.ahead.link_up(key)
        await self.replication.link_up(key)

    async def message(self, key: bytes, body: dict[int, Any]) -> None:
        """An application message: reach cards, devices', else replication's."""
        if body.get(0) == T_REACH:
            await self.reach.on_message(key, body)
        elif body.get(0) in PICTURE_MESSAGES:
            await self.pictures.on_message(key, body)
        elif body.get(0) in AHEAD_MESSAGES:
            await self.ahead.on_message(key, body)
        elif body.get(0) in DEVICE_MESSAGES:
            await self.devices.on_message(key, body)
        else:
            await self.ahead.written(key)  # chunks it sent ahead are here for their moment
            await self.replication.on_message(key, body)
        if self.on_message is not None:
            self.on_message(key, body)

    async def unlinked(self, key: bytes, closed: Closed) -> None:
        """A link ended."""
        self.reach.link_down(key)
        self.pictures.link_down(key)
        self.ahead.link_down(key)
        await self.replication.link_down(key)
        self.events.publish("peer.disconnected", identity=identity_text(key), reason=closed.reason)
        if key == self.persons.person_of(key) and self.friends.get(key) is not None:
            await self.friends.seen(key)

    async def pairing_ended(self, pairing_id: int, refused: str | None) -> None:
        """A code we scanned expired, or its owner refused it."""
        if pairing_id == JOIN_ID:  # our device link expired or was refused
            why = refused or "the device link expired before the other device answered"
            log.warning("could not join: %s; ask for a fresh device link", why)
            self.events.publish("device.join_failed", reason=why)
            return
        if refused is None:
            record = await self.pairings.update(
                pairing_id, PairingEvent.EXPIRED, "the code expired before we could reach them"
            )
        else:
            record = await self.pairings.update(pairing_id, PairingEvent.REFUSED, refused)
        identity = None if record is None else record.identity
        if identity is not None and self.friends.get(identity) is None:
            self.links.forget(identity)

    # --- what the parts tell each other ---------------------------------------------------

    async def _circle_changed(self, manifest: Any) -> None:
        for device in self.devices.linked_ours():  # they get the new epoch's key
            self.devices.send_keys(device)
        self._want_co_members()
        await self.replication.circle_changed(manifest)
        await self.reach.circles_changed()  # co-members learn where the others are

    async def _circle_gone(self, circle: bytes, deleted: bool) -> None:
        if deleted:
            self.replication.circle_deleted(circle)
        self._want_co_members()

    async def _members_removed(self, members: list[bytes]) -> None:
        await self.replication.tell_removed(members)

    async def _posted(self, moments: Any) -> None:
        await self.replication.posted(moments)

    def friend_json(self, friend: FriendRecord) -> dict[str, Any]:
        """A friend as the API shows it (whether they are linked is the links')."""
        from p2pmoments.views import friend_json

        return friend_json(friend, connected=friend.verify_key in self.links.linked())
