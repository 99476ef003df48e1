"""One person, several devices: the roster's state (spec/devices.md §3, §4).

Pure: no I/O and no clock. A roster's state is a function of the *set* of entries held,
never of their order of arrival: that is what makes every replica converge
(spec/devices.md §3.1). Entries' bytes are core.device_entries (re-exported here); the
owner's circle edits are core.circle_ops.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from p2pmoments.core.device_entries import (
    MAX_CUTOFFS,
    MAX_ENTRY,
    MAX_PARENTS,
    ROSTER_CONTEXT,
    Entry,
    EntryKind,
    RosterError,
    bytes32,
    consent_message,
    decode_entry,
    manifests_scope,
    ops_scope,
    recovery_keys,
    scope_tag,
    sign_entry,
)

__all__ = [
    "MAX_CUTOFFS",
    "MAX_DEVICES",
    "MAX_DEVICES_EVER",
    "MAX_ENTRIES",
    "MAX_ENTRY",
    "MAX_PARENTS",
    "ROSTER_CONTEXT",
    "Entry",
    "EntryKind",
    "Roster",
    "RosterError",
    "RosterState",
    "Verdict",
    "consent_message",
    "decode_entry",
    "manifests_scope",
    "ops_scope",
    "recovery_keys",
    "scope_tag",
    "sign_entry",
]

MAX_DEVICES = 10  # current devices of one person (spec/devices.md §3.4 says why)
MAX_DEVICES_EVER = 128
MAX_ENTRIES = 1024


# --- the roster's state (§3) -------------------------------------------------------------


class Verdict(enum.Enum):
    """What `Roster.apply` did with an entry (its standing may change as others arrive)."""

    APPLIED = "applied"
    NOT_APPLIED = "not applied"  # held, but void, unauthorized or past a bound (§3.2)
    PENDING = "pending"  # a parent is missing: applied when it comes
    DUPLICATE = "duplicate"


@dataclass(frozen=True, slots=True, kw_only=True)
class RosterState:
    """A roster's state: what two replicas holding the same entries agree on."""

    current: frozenset[tuple[bytes, bytes, str]]  # (device, link key, name)
    revoked: frozenset[tuple[bytes, tuple[tuple[bytes, int], ...]]]  # (device, cut-offs)
    recovery: bytes | None
    box: bytes | None
    applied: frozenset[bytes]


@dataclass(slots=True)
class _Replay:
    applied: int = 0  # bitmask of entry indexes
    adds: dict[bytes, Entry] = field(default_factory=dict)
    revokes: dict[bytes, list[Entry]] = field(default_factory=dict)
    names: dict[bytes, str] = field(default_factory=dict)
    recoveries: list[Entry] = field(default_factory=list)
    box: bytes | None = None
    genesis: Entry | None = None


class Roster:
    """One person's roster: the entries held, and the state they give."""

    def __init__(self, person: bytes) -> None:
        self.person = bytes32(person, "person")
        self._held: dict[bytes, Entry] = {}
        self._pending: dict[bytes, Entry] = {}
        self._waiting: dict[bytes, list[Entry]] = {}  # parent id -> pending entries naming it
        self._index: dict[bytes, int] = {}
        self._lamport: dict[bytes, int] = {}
        self._anc: dict[bytes, int] = {}  # bitmask of ancestors, by index
        self._state = _Replay()

    def apply(self, entry: Entry) -> Verdict:
        """Hold `entry` (decoded: its signatures are checked) and recompute the state."""
        return self.apply_all([entry])[0]

    def apply_all(self, entries: Sequence[Entry]) -> list[Verdict]:
        """`apply` for each entry, recomputing the state once (a roster message carries up
        to 1,024 entries: one by one, a full roster would take a second to replay)."""
        taken: list[Verdict | None] = []
        try:
            for entry in entries:
                taken.append(self._take(entry))
        finally:  # past a bound, what came before is still held
            self._promote()
            if any(t is None for t in taken):
                self._recompute()
        verdicts = []
        for entry, verdict in zip(entries, taken, strict=True):
            if verdict is None and entry.id in self._pending:
                verdict = Verdict.PENDING
            elif verdict is None:
                bit = 1 << self._index[entry.id]
                verdict = Verdict.APPLIED if self._state.applied & bit else Verdict.NOT_APPLIED
            verdicts.append(verdict)
        return verdicts

    def _take(self, entry: Entry) -> Verdict | None:
        """Put `entry` with the waiting ones; DUPLICATE if held already (None otherwise)."""
        if entry.person != self.person:
            raise RosterError("an entry of another person's roster")
        if entry.id in self._held or entry.id in self._pending:
            return Verdict.DUPLICATE
        if len(self._held) + len(self._pending) >= MAX_ENTRIES:
            raise RosterError(f"a roster holds at most {MAX_ENTRIES} entries")
        self._pending[entry.id] = entry
        for parent in entry.parents:
            self._waiting.setdefault(parent, []).append(entry)
        return None

    def _promote(self) -> None:
        """Hold every waiting entry whose parents are all held, parents first."""
        ready = [e for e in self._pending.values() if all(p in self._held for p in e.parents)]
        while ready:
            entry = ready.pop()
            if entry.id not in self._pending:
                continue
            self._hold(self._pending.pop(entry.id))
            for child in self._waiting.pop(entry.id, ()):
                if child.id in self._pending and all(p in self._held for p in child.parents):
                    ready.append(child)

    def _hold(self, entry: Entry) -> None:
        index = len(self._index)
        self._index[entry.id] = index
        self._lamport[entry.id] = 1 + max((self._lamport[p] for p in entry.parents), default=-1)
        anc = 0
        for p in entry.parents:
            anc |= self._anc[p] | 1 << self._index[p]
        self._anc[entry.id] = anc
        self._held[entry.id] = entry

    # The state, from the set alone (§3.2): replay in roster order, void what strong
    # removal voids, and replay again until nothing more is void.
    def _recompute(self) -> None:
        order = sorted(self._held.values(), key=lambda e: (self._lamport[e.id], e.id))
        void: set[bytes] = set()
        while True:
            state = self._replay(order, void)
            newly = self._strong_removal(order, state, void)
            if not newly:
                break
            void |= newly
        self._state = state

    def _rank(self, state: _Replay, signer: bytes) -> tuple[int, int, bytes]:
        """Lower is more senior: R, then the genesis device, then by (Lamport, key)."""
        add = state.adds.get(signer)
        if add is None:
            return (0, 0, b"")  # a recovery key: only R signs without an add
        if add is state.genesis:
            return (1, 0, b"")
        return (2, self._lamport[add.id], signer)

    def _recovery_in(self, state: _Replay, anc: int) -> Entry | None:
        """The latest applied set-recovery among the ancestors `anc`."""
        for entry in reversed(state.recoveries):
            if anc >> self._index[entry.id] & 1:
                return entry
        return None

    def _authorized(self, state: _Replay, entry: Entry, anc: int) -> bool:
        recovery = self._recovery_in(state, anc)
        if recovery is not None and entry.signer == recovery.key:
            return True
        add = state.adds.get(entry.signer)
        if add is None or not anc >> self._index[add.id] & 1:
            return False
        return not any(anc >> self._index[r.id] & 1 for r in state.revokes.get(entry.signer, ()))

    def _replay(self, order: Sequence[Entry], void: set[bytes]) -> _Replay:
        state = _Replay()
        for entry in order:
            if entry.id in void:
                continue
            anc = self._anc[entry.id]
            if not entry.parents:  # a root: only the genesis, P adding itself, counts
                ok = state.genesis is None and (
                    entry.kind is EntryKind.ADD and entry.signer == entry.device == self.person
                )
                if ok:
                    state.genesis = entry
                    state.adds[entry.device] = entry
                    state.names[entry.device] = entry.name
                    state.applied |= 1 << self._index[entry.id]
                continue
            if not self._authorized(state, entry, anc) or not self._kind_rule(state, entry, anc):
                continue
            state.applied |= 1 << self._index[entry.id]
        return state

    def _kind_rule(self, state: _Replay, entry: Entry, anc: int) -> bool:
        """Whether `entry`'s own rule holds in the state replayed so far; if so, apply it."""
        kind, device = entry.kind, entry.device
        if kind is EntryKind.ADD:
            current = sum(1 for d in state.adds if d not in state.revokes)
            recovery_keys = {r.key for r in state.recoveries}
            if (
                device in state.adds
                or device in (self.person, *recovery_keys)
                or current >= MAX_DEVICES
                or len(state.adds) >= MAX_DEVICES_EVER
            ):
                return False
            state.adds[device] = entry
            state.names[device] = entry.name
        elif kind is EntryKind.REVOKE:
            if device not in state.adds:
                return False
            state.revokes.setdefault(device, []).append(entry)
        elif kind is EntryKind.RENAME:
            if device not in state.adds or device in state.revokes:
                return False
            state.names[device] = entry.name
        elif kind is EntryKind.SET_RECOVERY:
            set_before = self._recovery_in(state, anc)
            if set_before is not None and entry.signer != set_before.key:
                return False  # only R replaces R
            state.recoveries.append(entry)
        else:
            state.box = entry.key
        return True

    def _strong_removal(
        self, order: Sequence[Entry], state: _Replay, void: set[bytes]
    ) -> set[bytes]:
        """Applied entries of revoked devices that their revokers had not seen (§3.2, 2)."""
        newly = set()
        for entry in order:
            index = self._index[entry.id]
            revocations = state.revokes.get(entry.signer)
            if not state.applied >> index & 1 or not revocations or entry.id in void:
                continue
            unseen = [
                r for r in revocations if r.id != entry.id and not self._anc[r.id] >> index & 1
            ]
            if len(unseen) < len(revocations):
                continue  # some revoker saw it: it stands
            if entry.kind is not EntryKind.REVOKE or any(
                self._rank(state, r.signer) < self._rank(state, entry.signer) for r in unseen
            ):
                newly.add(entry.id)
        return newly

    # --- what the state says --------------------------------------------------------

    def is_current(self, device: bytes) -> bool:
        """Whether `device` is one of the person's devices now (P, with no roster, is)."""
        state = self._state
        if state.genesis is None:
            return device == self.person
        return device in state.adds and device not in state.revokes

    def accepts(self, device: bytes, scope: bytes, seq: int) -> bool:
        """Whether something `device` signed at `seq` in `scope` counts as the person's (§4)."""
        if self.is_current(device):
            return True
        revocations = self._state.revokes.get(device)
        if not revocations:
            return False
        tag = scope_tag(device, scope)
        cut = max((s for r in revocations for t, s in r.cutoffs if t == tag), default=0)
        return seq <= cut

    def name_of(self, device: bytes) -> str | None:
        """A device's name, if it was ever added."""
        return self._state.names.get(device)

    def link_key(self, device: bytes) -> bytes | None:
        """A current device's link key (None for the genesis device without a roster)."""
        add = self._state.adds.get(device)
        return add.link if add is not None and self.is_current(device) else None

    def contesting(self) -> dict[bytes, bytes]:
        """Revoked devices that may still win their race (§3.3): every applied revocation
        of them is signed by a device they outrank, so a revocation of their own, made
        concurrently, may void it. Their rosters must still be heard: device -> link key."""
        state = self._state
        out = {}
        for device, revocations in state.revokes.items():
            rank = self._rank(state, device)
            if all(self._rank(state, r.signer) > rank for r in revocations):
                out[device] = state.adds[device].link
        return out

    @property
    def recovery(self) -> bytes | None:
        """R's Ed25519 key, if set."""
        recoveries = self._state.recoveries
        return recoveries[-1].key if recoveries else None

    @property
    def box(self) -> bytes | None:
        """The box key B, if set."""
        return self._state.box

    def heads(self) -> list[bytes]:
        """The ids of held entries no other held entry names: the parents of the next one."""
        named = {p for e in self._held.values() for p in e.parents}
        return sorted(i for i in self._held if i not in named)

    def missing_for(self, their_heads: Iterable[bytes]) -> list[bytes]:
        """The entries a holder of `their_heads` lacks, in roster order (spec/devices.md §8)."""
        seen = 0
        for head in their_heads:
            if head in self._index:
                seen |= self._anc[head] | 1 << self._index[head]
        lacking = [e for e in self._held.values() if not seen >> self._index[e.id] & 1]
        lacking.sort(key=lambda e: (self._lamport[e.id], e.id))
        return [e.raw for e in lacking]

    def snapshot(self) -> RosterState:
        """The state, as a value two replicas can compare."""
        state = self._state
        current = frozenset(
            (d, add.link, state.names[d]) for d, add in state.adds.items() if self.is_current(d)
        )
        revoked = frozenset(
            (d, tuple(sorted({c for r in revs for c in r.cutoffs})))
            for d, revs in state.revokes.items()
        )
        applied = frozenset(i for i, n in self._index.items() if state.applied >> n & 1)
        return RosterState(
            current=current, revoked=revoked, recovery=self.recovery, box=self.box, applied=applied
        )
