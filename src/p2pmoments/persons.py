"""Persons and their devices (spec/devices.md): the rosters we hold, ours and those of the
friends and co-members who have several devices, and what follows from them: whose a
device key is, which link keys to admit, which devices to dial.

The rules are core.devices' (a roster's state is a function of its entries); this part
keeps the entries (store, table roster_entries) and answers questions about them. A
person with one device has no roster: their device key is their identity key, as
before devices existed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

from p2pmoments.core.crypto import SigningKey
from p2pmoments.core.device_entries import (
    MAX_CUTOFFS,
    Entry,
    EntryKind,
    RosterError,
    consent_message,
    decode_entry,
    scope_tag,
    sign_entry,
)
from p2pmoments.core.devices import MAX_DEVICES, Roster, Verdict
from p2pmoments.core.errors import P2PMomentsError
from p2pmoments.core.identity import Identity
from p2pmoments.events import EventBus
from p2pmoments.store import AsyncStore, Store

__all__ = ["MAX_ROSTER_MESSAGE", "SHEET_DEVICE_NAME", "Persons"]

log = logging.getLogger(__name__)

MAX_ROSTER_MESSAGE = 1024  # entries in one roster message (a roster's own bound)
SHEET_DEVICE_NAME = "recovery sheet"  # the sheet's own device, until a machine becomes it
MAX_ROSTERS = 1024  # persons whose rosters we keep: friends and co-members, bounded


class Persons:
    """Which device keys are whose."""

    def __init__(
        self,
        store: AsyncStore,
        events: EventBus,
        *,
        me: bytes,
        device: bytes,
        on_change: Callable[[bytes], None] = lambda person: None,
    ) -> None:
        self._store = store
        self._events = events
        self.me = me  # our person
        self.device = device  # this device's key (me, on a person's first device)
        self.on_change = on_change
        self._rosters: dict[bytes, Roster] = {}
        self._owner: dict[bytes, bytes | None] = {}  # device -> person (None: claimed twice)
        self._links: dict[bytes, tuple[bytes, bytes]] = {}  # link key -> (person, device)
        self.first_device_name = "first device"  # what our first device is called

    async def load(self) -> None:
        """Read every roster entry kept, checked again as it is applied."""
        by_person: dict[bytes, list[Entry]] = {}
        for person, raw in await self._store.run(Store.roster_entries):
            try:
                by_person.setdefault(person, []).append(decode_entry(raw))
            except RosterError as exc:  # kept by a daemon with other rules: dropped
                log.warning("a kept roster entry no longer decodes: %s", exc)
        for person, entries in by_person.items():
            roster = self._rosters.setdefault(person, Roster(person))
            roster.apply_all(entries)
        self._index()

    # --- questions ---------------------------------------------------------------------

    def roster(self, person: bytes) -> Roster | None:
        """A person's roster, if they have several devices and we hold it."""
        return self._rosters.get(person)

    def person_of(self, device: bytes) -> bytes:
        """Whose current device `device` is: its person, or itself (a person's only
        device, or a key no roster claims). A revoked device is itself: a member no
        more (it receives nothing new, spec/devices.md section 3)."""
        person = self._owner.get(device)
        if person is None:
            return device
        roster = self._rosters[person]
        return person if roster.is_current(device) else device

    def whose(self, device: bytes) -> bytes:
        """Whose device `device` is or was, to show it (a revoked device's old posts are
        still its person's): its person, or itself."""
        return self._owner.get(device) or device

    def author_person(self, author: bytes, scope: bytes, seq: int) -> bytes | None:
        """Whose a moment signed by `author` at `seq` in `scope` (a circle) is: its
        person if their roster accepts it there (current, or revoked and within its
        cut-off), None if it must count as no one's (spec/devices.md sections 4, 7)."""
        if author in self._owner:
            person = self._owner[author]
            if person is None:  # in two rosters: in neither (spec/devices.md 11)
                return None
            return person if self._rosters[person].accepts(author, scope, seq) else None
        roster = self._rosters.get(author)
        if roster is not None and not roster.accepts(author, scope, seq):
            return None  # a person's first key, revoked (its later signatures are void)
        return author

    def devices_of(self, person: bytes) -> dict[bytes, bytes]:
        """A person's current devices other than their first key: device -> link key."""
        roster = self._rosters.get(person)
        if roster is None:
            return {}
        out = {}
        for device, link, _ in roster.snapshot().current:
            if device != person:
                out[device] = link
        return out

    def by_link_key(self, link_key: bytes) -> tuple[bytes, bytes] | None:
        """(person, device) of a current device with this link key, if any."""
        return self._links.get(link_key)

    def device_name(self, device: bytes) -> str | None:
        """The name a device was given in its person's roster."""
        person = self._owner.get(device)
        if person is None:
            return None
        return self._rosters[person].name_of(device)

    def entries_of(self, person: bytes) -> list[bytes]:
        """A person's roster as signed entries, in roster order (to hand to a peer)."""
        roster = self._rosters.get(person)
        return roster.missing_for(()) if roster is not None else []

    def persons(self) -> list[bytes]:
        """Every person whose roster we hold."""
        return list(self._rosters)

    # --- changes ------------------------------------------------------------------------

    async def receive(self, person: bytes, raws: Sequence[object]) -> tuple[int, int]:
        """A peer handed us entries of `person`'s roster: (kept, junk). An entry that
        does not decode or verify is junk; the others are kept whatever their standing
        (a lost race, a bound) so that every holder computes the same state."""
        if len(raws) > MAX_ROSTER_MESSAGE:
            return 0, len(raws)
        if person not in self._rosters and len(self._rosters) >= MAX_ROSTERS:
            return 0, 0
        entries, junk = [], 0
        for raw in raws:
            try:
                entry = decode_entry(raw) if type(raw) is bytes else None
            except RosterError as exc:
                log.info("a roster entry of %s refused: %s", person.hex()[:12], exc)
                entry = None
            if entry is None or entry.person != person:
                junk += 1
            else:
                entries.append(entry)
        kept = await self.keep(person, entries)
        return kept, junk

    async def add_device(
        self, signer: Identity, *, device: bytes, link: bytes, name: str, consent: bytes, now: int
    ) -> list[Entry]:
        """Certify another device of ours (spec/devices.md section 10): the roster's
        genesis first if it has none (our first device adding itself), then the device.
        `signer` is this device; `consent` the new device's signature over
        consent_message(our person, its key, its link key). Returns the new entries."""
        roster = self._rosters.get(self.me)
        made: list[Entry] = []
        if roster is None:
            if bytes(signer.public.verify_key) != self.me:
                raise P2PMomentsError("only a person's first device starts their roster")
            me_link = bytes(signer.public.link_key)
            made.append(
                sign_entry(
                    signer.signing_key,
                    person=self.me,
                    parents=(),
                    kind=EntryKind.ADD,
                    time=now,
                    device=self.me,
                    link=me_link,
                    name=self.first_device_name,
                    consent=signer.signing_key.sign(consent_message(self.me, self.me, me_link)),
                )
            )
            parents = [made[0].id]
        else:
            parents = roster.heads()
        made.append(
            sign_entry(
                signer.signing_key,
                person=self.me,
                parents=parents,
                kind=EntryKind.ADD,
                time=now,
                device=device,
                link=link,
                name=name,
                consent=consent,
            )
        )
        await self.keep(self.me, made)
        roster = self._rosters[self.me]
        if not roster.is_current(device):
            raise P2PMomentsError(
                f"a person has at most {MAX_DEVICES} devices: revoke one to link another"
            )
        return made

    async def set_recovery(
        self, signer: Identity, *, recovery: tuple[bytes, bytes], sheet: Identity, now: int
    ) -> list[Entry]:
        """Set up recovery (spec/devices.md section 5.2), signed by this device: the
        roster's genesis if there is none, set-recovery with R's two public keys, and
        the add-device of the sheet's own device. Returns the new entries."""
        roster = self._rosters.get(self.me)
        if roster is not None and roster.recovery is not None:
            raise P2PMomentsError("you already have a recovery sheet: keep the one you made")
        sheet_key = bytes(sheet.public.verify_key)
        sheet_link = bytes(sheet.public.link_key)
        made = []
        if roster is None:
            made = await self.add_device(
                signer,
                device=sheet_key,
                link=sheet_link,
                name=SHEET_DEVICE_NAME,
                consent=sheet.signing_key.sign(consent_message(self.me, sheet_key, sheet_link)),
                now=now,
            )
            roster = self._rosters[self.me]
            parents = roster.heads()
        else:
            parents = roster.heads()
        entries = [
            sign_entry(
                signer.signing_key,
                person=self.me,
                parents=parents,
                kind=EntryKind.SET_RECOVERY,
                time=now,
                key=recovery[0],
                recovery_link=recovery[1],
            )
        ]
        if not made:
            entries.append(
                sign_entry(
                    signer.signing_key,
                    person=self.me,
                    parents=[entries[0].id],
                    kind=EntryKind.ADD,
                    time=now,
                    device=sheet_key,
                    link=sheet_link,
                    name=SHEET_DEVICE_NAME,
                    consent=sheet.signing_key.sign(consent_message(self.me, sheet_key, sheet_link)),
                )
            )
        await self.keep(self.me, entries)
        if self._rosters[self.me].recovery != recovery[0]:
            raise P2PMomentsError("the recovery key was not taken (another was set first)")
        return made + entries

    async def revoke_by_recovery(
        self, recovery: SigningKey, *, device: bytes, cutoffs: Sequence[tuple[bytes, int]], now: int
    ) -> Entry:
        """Revoke one of our devices with the recovery key R, which outranks every device
        (spec/devices.md sections 3.3, 5.3): the person's first device too."""
        roster = self._rosters.get(self.me)
        if roster is None or roster.recovery != bytes(recovery.verify_key):
            raise P2PMomentsError("this recovery sheet is not the one your roster names")
        cut = sorted({scope_tag(device, scope): seq for scope, seq in cutoffs}.items())
        entry = sign_entry(
            recovery,
            person=self.me,
            parents=roster.heads(),
            kind=EntryKind.REVOKE,
            time=now,
            device=device,
            cutoffs=cut[:MAX_CUTOFFS],
        )
        await self.keep(self.me, [entry])
        return entry

    def contesting(self, link_key: bytes) -> tuple[bytes, bytes] | None:
        """(person, device) of a revoked device with this link key that may still win a
        race of revocations (core.devices.Roster.contesting): its links carry rosters
        only (it is a member of nothing), so that its own revocation can reach us."""
        for person, roster in self._rosters.items():
            for device, link in roster.contesting().items():
                if link == link_key:
                    return person, device
        return None

    def is_revoked(self, device: bytes) -> bool:
        """Whether a roster we hold revokes this device key (a person's first key too)."""
        roster = self._rosters.get(self._owner.get(device) or device)
        return roster is not None and any(d == device for d, _ in roster.snapshot().revoked)

    async def change_device(
        self,
        signer: Identity,
        *,
        device: bytes,
        now: int,
        name: str | None = None,
        cutoffs: Sequence[tuple[bytes, int]] = (),
    ) -> Entry:
        """Rename (`name`) or revoke (with `cutoffs`: scope id and highest sequence to
        keep, spec/devices.md section 4) one of our devices; the signed entry."""
        roster = self._rosters.get(self.me)
        if roster is None or not roster.is_current(device):
            raise P2PMomentsError("that is not one of your devices now")
        if name is not None:
            kind, cut = EntryKind.RENAME, []
        else:
            kind, name = EntryKind.REVOKE, ""
            cut = sorted({scope_tag(device, scope): seq for scope, seq in cutoffs}.items())
        entry = sign_entry(
            signer.signing_key,
            person=self.me,
            parents=roster.heads(),
            kind=kind,
            time=now,
            device=device,
            name=name,
            cutoffs=cut[:MAX_CUTOFFS],
        )
        await self.keep(self.me, [entry])
        return entry

    def revoked(self) -> set[bytes]:
        """Every device revoked in a roster we hold."""
        return {d for r in self._rosters.values() for d, _ in r.snapshot().revoked}

    async def keep(self, person: bytes, entries: Iterable[Entry]) -> int:
        """Hold verified entries of `person`'s roster; how many were new."""
        entries = list(entries)
        if not entries:
            return 0
        roster = self._rosters.get(person) or Roster(person)
        before = roster.snapshot()
        verdicts = roster.apply_all(entries)
        new = [e for e, v in zip(entries, verdicts, strict=True) if v is not Verdict.DUPLICATE]
        if not new:
            return 0
        self._rosters[person] = roster
        await self._store.run(Store.save_roster_entries, person, [(e.id, e.raw) for e in new])
        self._index()
        if roster.snapshot() != before:
            self._events.publish("devices.changed", person=person.hex())
            self.on_change(person)
        return len(new)

    def _index(self) -> None:
        owner: dict[bytes, bytes | None] = {}
        links: dict[bytes, tuple[bytes, bytes]] = {}
        for person, roster in self._rosters.items():
            state = roster.snapshot()
            ever = {d for d, _, _ in state.current} | {d for d, _ in state.revoked}
            for device in ever:
                if device == person:
                    continue  # a person's first key is theirs anyway
                owner[device] = None if device in owner else person
            for device, link, _ in state.current:
                links[link] = (person, device)
        self._owner = owner
        self._links = links
