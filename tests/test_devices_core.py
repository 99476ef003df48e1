"""The pure core of several devices per person (spec/devices.md): roster entries refused
when hostile, the roster's rules, racing revocations, cut-offs, the owner's circle edits;
and, with Hypothesis, that any set of entries or ops gives the same state at every
replica, whatever the order, repeats or partial deliveries."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pmoments.core import devices, wire
from p2pmoments.core.circle_ops import (
    MAX_CIRCLE_MEMBERS,
    CircleState,
    Op,
    OpKind,
    decode_op,
    merge_circle,
    sign_op,
)
from p2pmoments.core.crypto import LinkSecretKey, SigningKey
from p2pmoments.core.devices import (
    MAX_DEVICES,
    Entry,
    EntryKind,
    Roster,
    RosterError,
    Verdict,
    consent_message,
    decode_entry,
    ops_scope,
    recovery_keys,
    scope_tag,
    sign_entry,
)
from p2pmoments.core.errors import DecodeError

CIRCLE = b"\xc1" * 32


def key(n: int) -> SigningKey:
    """A fixed key per number, so Hypothesis shrinks and replays exactly."""
    return SigningKey(n.to_bytes(2, "big") * 16)


def link(n: int) -> bytes:
    return bytes(LinkSecretKey((n + 1000).to_bytes(2, "big") * 16).public_key)


P = key(0)
PERSON = bytes(P.verify_key)
R, R_LINK, _ = recovery_keys(b"\x07" * 32)


def raw(k: SigningKey) -> bytes:
    return bytes(k.verify_key)


def add(signer: SigningKey, device: SigningKey, parents: Iterable[bytes], name: str = "d") -> Entry:
    d, lk = raw(device), link(raw(device)[0])
    return sign_entry(
        signer,
        person=PERSON,
        parents=parents,
        kind=EntryKind.ADD,
        time=1,
        device=d,
        link=lk,
        name=name,
        consent=device.sign(consent_message(PERSON, d, lk)),
    )


def revoke(
    signer: SigningKey,
    device: bytes,
    parents: Iterable[bytes],
    cutoffs: Iterable[tuple[bytes, int]] = (),
) -> Entry:
    return sign_entry(
        signer,
        person=PERSON,
        parents=parents,
        kind=EntryKind.REVOKE,
        time=2,
        device=device,
        cutoffs=cutoffs,
    )


def set_recovery(signer: SigningKey, parents: Iterable[bytes]) -> Entry:
    return sign_entry(
        signer,
        person=PERSON,
        parents=parents,
        kind=EntryKind.SET_RECOVERY,
        time=3,
        key=raw(R),
        recovery_link=bytes(R_LINK.public_key),
    )


def roster(*entries: Entry) -> Roster:
    r = Roster(PERSON)
    for e in entries:
        r.apply(e)
    return r


GENESIS = add(P, P, [], "desktop")
LAPTOP = key(1)
ADD_LAPTOP = add(P, LAPTOP, [GENESIS.id], "laptop")


# --- entries: formats and hostile input ----------------------------------------------------


def test_a_person_without_a_roster_is_their_one_device() -> None:
    r = Roster(PERSON)
    assert r.is_current(PERSON)
    assert not r.is_current(raw(LAPTOP))
    assert r.accepts(PERSON, CIRCLE, 10**9)
    assert not r.accepts(raw(LAPTOP), CIRCLE, 1)


def test_linking_a_device_makes_it_current_with_its_keys_and_name() -> None:
    r = roster(GENESIS, ADD_LAPTOP)
    assert r.is_current(PERSON)
    assert r.is_current(raw(LAPTOP))
    assert r.name_of(raw(LAPTOP)) == "laptop"
    assert r.link_key(raw(LAPTOP)) == ADD_LAPTOP.link
    assert r.heads() == [ADD_LAPTOP.id]
    assert decode_entry(ADD_LAPTOP.raw) == ADD_LAPTOP


def test_entry_sizes_are_those_the_spec_gives() -> None:
    # spec/devices.md §12, with a time of today's size: an add with one parent and a
    # 6-byte name, a set-box-key, a revocation with 10 cut-offs, a set-recovery.
    t = 1_797_000_000
    d, lk = raw(LAPTOP), ADD_LAPTOP.link
    consent = LAPTOP.sign(consent_message(PERSON, d, lk))
    one = [GENESIS.id]
    added = sign_entry(P, person=PERSON, parents=one, kind=EntryKind.ADD, time=t, device=d,
                       link=lk, name="laptop", consent=consent)  # fmt: skip
    assert len(added.raw) == 334
    box = sign_entry(P, person=PERSON, parents=one, kind=EntryKind.SET_BOX, time=t, key=link(9))
    assert len(box.raw) == 223
    cut = [(scope_tag(d, bytes([i]) * 32), 100 + i) for i in range(10)]
    gone = sign_entry(P, person=PERSON, parents=one, kind=EntryKind.REVOKE, time=t, device=d,
                      cutoffs=cut)  # fmt: skip
    assert len(gone.raw) == 426
    rec = sign_entry(P, person=PERSON, parents=one, kind=EntryKind.SET_RECOVERY, time=t,
                     key=raw(R), recovery_link=bytes(R_LINK.public_key))  # fmt: skip
    assert len(rec.raw) == 258


def _resign(body: dict[int, object], signer: SigningKey = P) -> bytes:
    encoded = wire.encode_map(body)  # type: ignore[arg-type]
    return wire.encode_map({1: encoded, 2: signer.sign(devices.ROSTER_CONTEXT + encoded)})


def _body(entry: Entry) -> dict[int, object]:
    return dict(wire.decode_map(wire.decode_map(entry.raw, max_size=1 << 20)[1], max_size=1 << 20))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: b.update({1: 2}), "version"),
        (lambda b: b.update({4: 9}), "kind"),
        (lambda b: b.update({15: 1}), "fields"),
        (lambda b: b.pop(10), "fields"),
        (lambda b: b.update({2: b"x" * 31}), "person"),
        (lambda b: b.update({6: -1}), "time"),
        (lambda b: b.update({3: [b"b" * 32, b"a" * 32]}), "parents"),
        (lambda b: b.update({3: [b"a" * 32] * 2}), "parents"),
        (lambda b: b.update({3: [bytes([i]) * 32 for i in range(17)]}), "parents"),
        (lambda b: b.update({9: " laptop"}), "normal form"),
        (lambda b: b.update({9: "a\u200bb"}), "name"),
        (lambda b: b.update({9: b"laptop"}), "name"),
        (lambda b: b.update({7: b"\x01" * 32}), "consent"),  # consent was for another key
        (lambda b: b.update({2: b"\x02" * 32}), "consent"),  # ... or another person
    ],
)
def test_malformed_entries_are_refused(change: object, message: str) -> None:
    body = _body(ADD_LAPTOP)
    change(body)  # type: ignore[operator]
    with pytest.raises(RosterError, match=message) as info:
        decode_entry(_resign(body))
    assert isinstance(info.value, DecodeError)


def test_a_forged_or_altered_signature_is_refused() -> None:
    outer = wire.decode_map(ADD_LAPTOP.raw, max_size=1 << 20)
    forged = wire.encode_map({1: outer[1], 2: bytes(64)})
    with pytest.raises(RosterError, match="not signed"):
        decode_entry(forged)
    body = _body(ADD_LAPTOP)
    body[9] = "evil"  # a field changed after signing
    altered = wire.encode_map({1: wire.encode_map(body), 2: outer[2]})  # type: ignore[arg-type]
    with pytest.raises(RosterError, match="not signed"):
        decode_entry(altered)
    with pytest.raises(RosterError, match="not signed"):  # signed by another than field 5
        decode_entry(_resign(_body(ADD_LAPTOP), signer=LAPTOP))


def test_oversized_and_non_canonical_entries_are_refused() -> None:
    body = _body(revoke(P, raw(LAPTOP), [ADD_LAPTOP.id]))
    body[11] = [[i.to_bytes(16, "big"), 1] for i in range(devices.MAX_CUTOFFS + 1)]
    with pytest.raises(RosterError, match="cut-offs"):
        decode_entry(_resign(body))
    body[11] = [[i.to_bytes(16, "big"), 1] for i in range(900)]  # over 16 KiB
    with pytest.raises(RosterError, match="over the limit"):
        decode_entry(_resign(body))
    body[11] = [[b"b" * 16, 1], [b"a" * 16, 1]]
    with pytest.raises(RosterError, match="sorted"):
        decode_entry(_resign(body))
    with pytest.raises(RosterError):
        decode_entry(ADD_LAPTOP.raw + b"\x00")
    with pytest.raises(RosterError):
        decode_entry(b"\xa0")


def test_an_entry_of_another_persons_roster_is_refused() -> None:
    with pytest.raises(RosterError, match="another person"):
        Roster(bytes(key(50).verify_key)).apply(ADD_LAPTOP)


def test_a_co_member_cannot_claim_another_persons_device() -> None:
    mallory = key(60)
    m_person = raw(mallory)
    d, lk = raw(LAPTOP), ADD_LAPTOP.link
    # Alice's laptop consented to Alice, not to Mallory: the consent does not verify.
    with pytest.raises(RosterError, match="consent"):
        sign_entry(
            mallory,
            person=m_person,
            parents=[bytes(32)],
            kind=EntryKind.ADD,
            time=1,
            device=d,
            link=lk,
            name="laptop",
            consent=LAPTOP.sign(consent_message(PERSON, d, lk)),
        )
    # Nor can Mallory consent for it herself.
    with pytest.raises(RosterError, match="consent"):
        sign_entry(
            mallory,
            person=m_person,
            parents=[bytes(32)],
            kind=EntryKind.ADD,
            time=1,
            device=d,
            link=lk,
            name="laptop",
            consent=mallory.sign(consent_message(m_person, d, lk)),
        )


# --- the roster's rules -------------------------------------------------------------------


def test_an_entry_waits_for_its_parents_then_applies() -> None:
    r = Roster(PERSON)
    assert r.apply(ADD_LAPTOP) is Verdict.PENDING
    assert not r.is_current(raw(LAPTOP))
    assert r.apply(GENESIS) is Verdict.APPLIED
    assert r.is_current(raw(LAPTOP))
    assert r.apply(ADD_LAPTOP) is Verdict.DUPLICATE


def test_a_device_that_was_never_added_signs_nothing() -> None:
    stranger = key(70)
    rogue = add(stranger, key(71), [GENESIS.id])
    r = roster(GENESIS)
    assert r.apply(rogue) is Verdict.NOT_APPLIED
    assert not r.is_current(raw(key(71)))


def test_only_the_genesis_root_counts() -> None:
    other_root = add(LAPTOP, LAPTOP, [])  # a root not by P
    r = Roster(PERSON)
    assert r.apply(other_root) is Verdict.NOT_APPLIED
    assert not r.is_current(raw(LAPTOP))
    assert r.is_current(PERSON)
    assert r.apply(GENESIS) is Verdict.APPLIED
    assert r.snapshot().current == {(PERSON, GENESIS.link, "desktop")}


def test_at_most_ten_current_devices() -> None:
    entries, parent = [GENESIS], GENESIS.id
    for n in range(1, MAX_DEVICES + 1):
        entries.append(add(P, key(n), [parent]))
        parent = entries[-1].id
    r = roster(*entries[:-1])
    assert len(r.snapshot().current) == MAX_DEVICES
    assert r.apply(entries[-1]) is Verdict.NOT_APPLIED
    assert not r.is_current(raw(key(MAX_DEVICES)))


def test_concurrent_adds_past_the_limit_keep_the_first_in_roster_order() -> None:
    entries, parent = [GENESIS], GENESIS.id
    for n in range(1, MAX_DEVICES - 1):
        entries.append(add(P, key(n), [parent]))
        parent = entries[-1].id
    a, b = add(P, key(40), [parent]), add(P, key(41), [parent])  # 9 current: both fit alone
    r1, r2 = roster(*entries, a, b), roster(*entries, b, a)
    assert len(r1.snapshot().current) == MAX_DEVICES
    assert r1.snapshot() == r2.snapshot()


def test_a_roster_holds_a_bounded_number_of_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "MAX_ENTRIES", 2)
    r = roster(GENESIS, ADD_LAPTOP)
    with pytest.raises(RosterError, match="at most 2"):
        r.apply(revoke(P, raw(LAPTOP), [ADD_LAPTOP.id]))
    batch = Roster(PERSON)  # in one message: what fits is kept, and counts
    with pytest.raises(RosterError, match="at most 2"):
        batch.apply_all([GENESIS, ADD_LAPTOP, revoke(P, raw(LAPTOP), [ADD_LAPTOP.id])])
    assert batch.is_current(raw(LAPTOP))


def test_a_revoked_key_cannot_come_back() -> None:
    gone = revoke(P, raw(LAPTOP), [ADD_LAPTOP.id])
    again = add(P, LAPTOP, [gone.id])
    r = roster(GENESIS, ADD_LAPTOP, gone)
    assert r.apply(again) is Verdict.NOT_APPLIED
    assert not r.is_current(raw(LAPTOP))


def test_cut_offs_accept_what_the_revoker_held_and_refuse_the_rest() -> None:
    d = raw(LAPTOP)
    gone = revoke(P, d, [ADD_LAPTOP.id], [(scope_tag(d, CIRCLE), 7)])
    r = roster(GENESIS, ADD_LAPTOP, gone)
    assert not r.is_current(d)
    assert r.accepts(d, CIRCLE, 7)
    assert not r.accepts(d, CIRCLE, 8)  # signed after: refused everywhere
    assert not r.accepts(d, b"\xc2" * 32, 1)  # a circle it had nothing in
    # a tag is bound to its device: another revoked device's tag does not carry over
    assert scope_tag(d, CIRCLE) != scope_tag(PERSON, CIRCLE)


def test_a_revoked_devices_later_entries_are_refused() -> None:
    gone = revoke(P, raw(LAPTOP), [ADD_LAPTOP.id])
    after = add(LAPTOP, key(5), [gone.id])  # it saw its revocation and signs anyway
    unseen = add(LAPTOP, key(6), [ADD_LAPTOP.id])  # concurrent: the revoker did not see it
    r = roster(GENESIS, ADD_LAPTOP, gone)
    assert r.apply(after) is Verdict.NOT_APPLIED
    assert r.apply(unseen) is Verdict.NOT_APPLIED  # strong removal
    assert not r.is_current(raw(key(6)))
    child = revoke(key(6), PERSON, [unseen.id])  # and the device it added counts for nothing
    assert r.apply(child) is Verdict.NOT_APPLIED
    assert r.is_current(PERSON)


def test_what_the_revoker_saw_stays() -> None:
    tablet = key(7)
    by_laptop = add(LAPTOP, tablet, [ADD_LAPTOP.id])
    gone = revoke(P, raw(LAPTOP), [by_laptop.id])
    r = roster(GENESIS, ADD_LAPTOP, by_laptop, gone)
    assert r.is_current(raw(tablet))


@pytest.mark.parametrize("order", [0, 1])
def test_racing_revocations_the_senior_device_wins(order: int) -> None:
    mine = revoke(P, raw(LAPTOP), [ADD_LAPTOP.id])  # the desktop (senior) revokes the laptop
    thief = revoke(LAPTOP, PERSON, [ADD_LAPTOP.id])  # while the laptop revokes the desktop
    pair = [mine, thief] if order == 0 else [thief, mine]
    r = roster(GENESIS, ADD_LAPTOP, *pair)
    assert r.is_current(PERSON)
    assert not r.is_current(raw(LAPTOP))
    assert thief.id not in r.snapshot().applied


def test_a_device_revoked_only_by_juniors_is_still_heard_and_no_other() -> None:
    """Roster.contesting (spec/devices.md §3.3): the daemon keeps a rosters-only link
    with a revoked device whose revocation its own, not yet arrived, could void."""
    thief = revoke(LAPTOP, PERSON, [ADD_LAPTOP.id])  # the junior laptop revokes the desktop
    r = roster(GENESIS, ADD_LAPTOP, thief)
    assert r.contesting() == {PERSON: link(PERSON[0])}
    mine = revoke(P, raw(LAPTOP), [ADD_LAPTOP.id])  # the desktop's own, concurrent: it wins
    r.apply(mine)
    assert r.contesting() == {}  # the laptop was revoked by a senior: silence
    rec = set_recovery(P, [ADD_LAPTOP.id])
    by_r = revoke(R, PERSON, [rec.id])
    assert roster(GENESIS, ADD_LAPTOP, rec, by_r).contesting() == {}  # R: final


def test_a_junior_device_may_revoke_a_senior_one_it_outlives() -> None:
    lost = revoke(LAPTOP, PERSON, [ADD_LAPTOP.id])  # the desktop is lost; the laptop revokes it
    r = roster(GENESIS, ADD_LAPTOP, lost)
    assert not r.is_current(PERSON)
    assert r.is_current(raw(LAPTOP))


def test_a_device_that_saw_its_own_revocation_can_no_longer_revoke() -> None:
    lost = revoke(LAPTOP, PERSON, [ADD_LAPTOP.id])  # the laptop revokes the desktop
    late = revoke(P, raw(LAPTOP), [lost.id])  # the desktop, having seen it, strikes back
    r = roster(GENESIS, ADD_LAPTOP, lost, late)
    assert late.id not in r.snapshot().applied
    assert r.is_current(raw(LAPTOP))
    assert not r.is_current(PERSON)


def test_voiding_is_monotone_as_the_spec_says() -> None:
    """spec/devices.md §3.2: B revokes C while A (senior) revokes B, and C adds X: B's
    revocation is void, C stays, and X's add stays void (it errs towards refusing)."""
    b, c, x = key(21), key(22), key(23)
    add_b = add(P, b, [GENESIS.id])
    add_c = add(P, c, [add_b.id])
    by_a = revoke(P, raw(b), [add_c.id])
    by_b = revoke(b, raw(c), [add_c.id])
    by_c = add(c, x, [add_c.id])
    r = roster(GENESIS, add_b, add_c, by_c, by_b, by_a)
    assert not r.is_current(raw(b))
    assert r.is_current(raw(c))
    assert not r.is_current(raw(x))
    again = add(c, x, r.heads())  # the remedy: link X again
    assert r.apply(again) is Verdict.APPLIED
    assert r.is_current(raw(x))


def test_the_recovery_key_beats_the_most_senior_device() -> None:
    rec = set_recovery(P, [ADD_LAPTOP.id])
    thief = revoke(P, raw(LAPTOP), [rec.id])  # the thief holds the senior desktop
    mine = revoke(R, PERSON, [rec.id])  # the person restores R and revokes it
    for pair in ([thief, mine], [mine, thief]):
        r = roster(GENESIS, ADD_LAPTOP, rec, *pair)
        assert not r.is_current(PERSON)
        assert r.is_current(raw(LAPTOP))
        assert r.recovery == raw(R)


def test_recovery_certifies_a_new_device_when_all_are_lost() -> None:
    rec = set_recovery(P, [ADD_LAPTOP.id])
    a = revoke(R, PERSON, [rec.id])
    b = revoke(R, raw(LAPTOP), [a.id])
    fresh = key(9)
    c = add(R, fresh, [b.id], "new")
    r = roster(GENESIS, ADD_LAPTOP, rec, a, b, c)
    assert [d for d, _, _ in r.snapshot().current] == [raw(fresh)]


def test_only_r_replaces_r() -> None:
    rec = set_recovery(P, [ADD_LAPTOP.id])
    other = recovery_keys(b"\x08" * 32)[0]
    steal = sign_entry(
        LAPTOP, person=PERSON, parents=[rec.id], kind=EntryKind.SET_RECOVERY, time=4,
        key=raw(other), recovery_link=link(8),
    )  # fmt: skip
    rotate = sign_entry(
        R, person=PERSON, parents=[rec.id], kind=EntryKind.SET_RECOVERY, time=4,
        key=raw(other), recovery_link=link(8),
    )  # fmt: skip
    assert roster(GENESIS, ADD_LAPTOP, rec).apply(steal) is Verdict.NOT_APPLIED
    assert roster(GENESIS, ADD_LAPTOP, rec).apply(rotate) is Verdict.APPLIED


def test_missing_for_gives_what_the_other_side_lacks() -> None:
    gone = revoke(P, raw(LAPTOP), [ADD_LAPTOP.id])
    full = roster(GENESIS, ADD_LAPTOP, gone)
    assert full.missing_for([ADD_LAPTOP.id]) == [gone.raw]
    behind = Roster(PERSON)
    for data in full.missing_for([]):
        behind.apply(decode_entry(data))
    assert behind.snapshot() == full.snapshot()


# --- convergence of the roster (Hypothesis) -------------------------------------------------


@dataclass
class _World:
    """Devices each with their own view of the roster, making entries and syncing."""

    keys: list[SigningKey] = field(default_factory=lambda: [P])
    views: list[set[bytes]] = field(default_factory=list)
    entries: dict[bytes, Entry] = field(default_factory=dict)
    made: list[Entry] = field(default_factory=list)

    def heads(self, view: set[bytes]) -> list[bytes]:
        named = {p for i in view for p in self.entries[i].parents}
        return [i for i in view if i not in named]

    def record(self, entry: Entry, view: set[bytes]) -> None:
        self.entries[entry.id] = entry
        self.made.append(entry)
        view.add(entry.id)


@st.composite
def histories(draw: st.DrawFn) -> list[Entry]:
    """Entries written by devices (honest or not) with partial views of each other's."""
    w = _World()
    w.views.append(set())
    w.record(GENESIS, w.views[0])
    steps = draw(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 30)), max_size=24))
    for action, n in steps:
        who = n % len(w.keys)
        view, signer = w.views[who], w.keys[who]
        target = raw(w.keys[n // 3 % len(w.keys)])
        parents = w.heads(view)
        if action == 0 and len(w.keys) < 14:
            fresh = key(len(w.keys))
            e = add(signer, fresh, parents, f"d{len(w.keys)}")
            w.keys.append(fresh)
            w.views.append(set())
            w.record(e, view)
            w.views[-1] |= view
        elif action == 1:
            cut = [(scope_tag(target, CIRCLE), n % 4)]
            w.record(revoke(signer, target, parents, cut), view)
        elif action == 2:
            w.views[n // 3 % len(w.keys)] |= view  # a one-way sync
            view |= w.views[n // 3 % len(w.keys)]
        elif action == 3:
            e = sign_entry(signer, person=PERSON, parents=parents, kind=EntryKind.RENAME,
                           time=n, device=target, name=f"n{n}")  # fmt: skip
            w.record(e, view)
        elif action == 4:
            e = sign_entry(signer, person=PERSON, parents=parents, kind=EntryKind.SET_BOX,
                           time=n, key=link(n))  # fmt: skip
            w.record(e, view)
        elif action == 5:
            w.record(set_recovery(signer, parents), view)
        else:  # the recovery key acts from this device's view
            w.record(revoke(R, target, parents), view)
    return w.made


@settings(max_examples=150)
@given(histories(), st.randoms(use_true_random=False))
def test_any_order_with_repeats_gives_the_same_roster(
    made: list[Entry], rnd: random.Random
) -> None:
    reference = roster(*made).snapshot()
    shuffled = made + rnd.sample(made, k=min(3, len(made)))
    rnd.shuffle(shuffled)
    assert roster(*shuffled).snapshot() == reference
    assert len(reference.current) <= MAX_DEVICES
    batch = Roster(PERSON)  # a whole roster message at once
    verdicts = batch.apply_all(shuffled)
    assert batch.snapshot() == reference
    # A history may make one entry twice (the same body, signed alike): count ids.
    assert verdicts.count(Verdict.DUPLICATE) == len(shuffled) - len({e.id for e in made})
    assert Verdict.PENDING not in verdicts


@settings(max_examples=100)
@given(histories(), st.randoms(use_true_random=False))
def test_partial_delivery_then_the_rest_gives_the_same_roster(
    made: list[Entry], rnd: random.Random
) -> None:
    first = [e for e in made if rnd.random() < 0.5]
    r = roster(*first)
    rest = [e for e in made if e not in first]
    rnd.shuffle(rest)
    for e in rest:
        r.apply(e)
    assert r.snapshot() == roster(*made).snapshot()


def _ancestors(entries: Sequence[Entry]) -> dict[bytes, set[bytes]]:
    by_id = {e.id: e for e in entries}
    memo: dict[bytes, set[bytes]] = {}

    def of(i: bytes) -> set[bytes]:
        if i not in memo:
            memo[i] = set()
            for p in by_id[i].parents:
                memo[i] |= {p} | of(p)
        return memo[i]

    return {e.id: of(e.id) for e in entries}


@settings(max_examples=150)
@given(histories())
def test_nothing_a_revoked_device_signed_unseen_by_its_revokers_counts(made: list[Entry]) -> None:
    state = roster(*made).snapshot()
    anc = _ancestors(made)
    applied = [e for e in made if e.id in state.applied]
    revocations: dict[bytes, list[Entry]] = {}
    for e in applied:
        if e.kind is EntryKind.REVOKE:
            revocations.setdefault(e.device, []).append(e)
    for e in applied:
        if e.kind is EntryKind.REVOKE or e.signer not in revocations or e is GENESIS:
            continue
        assert any(e.id in anc[r.id] for r in revocations[e.signer]), e
    # R's revocations never lose: one that descends from R's setting and from the add of
    # the device it names is applied, whatever devices did concurrently.
    adds = {e.device: e for e in applied if e.kind is EntryKind.ADD}
    set_r = [e for e in applied if e.kind is EntryKind.SET_RECOVERY]
    for e in made:
        if e.signer != raw(R) or e.kind is not EntryKind.REVOKE or e.device not in adds:
            continue
        if adds[e.device].id in anc[e.id] and any(x.id in anc[e.id] for x in set_r):
            assert e.id in state.applied


# --- the owner's circle edits -------------------------------------------------------------

OWNER = PERSON
BOB, CAROL, DAVE = b"\xb0" * 32, b"\xca" * 32, b"\xda" * 32


def op(device: SigningKey, kind: OpKind, parents: Iterable[bytes], seq: int, **kw: object) -> Op:
    return sign_op(device, circle=CIRCLE, parents=parents, kind=kind, seq=seq, time=0, **kw)  # type: ignore[arg-type]


CREATE = op(P, OpKind.CREATE, [], 1, name="family", posting=True)


def merge(*ops: Op, counts: object = None) -> CircleState:
    if counts is None:
        return merge_circle(CIRCLE, ops, owner=OWNER)
    return merge_circle(CIRCLE, ops, owner=OWNER, counts=counts)  # type: ignore[arg-type]


def test_two_devices_add_two_people_offline_and_both_are_members() -> None:
    bob = op(P, OpKind.ADD_MEMBER, [CREATE.id], 2, person=BOB)  # on the desktop
    carol = op(LAPTOP, OpKind.ADD_MEMBER, [CREATE.id], 1, person=CAROL)  # on the laptop
    state = merge(CREATE, bob, carol)
    assert state.members == {BOB, CAROL}
    assert state.name == "family"
    assert state.members_can_post


def test_a_concurrent_add_and_remove_of_one_person_removes() -> None:
    bob = op(P, OpKind.ADD_MEMBER, [CREATE.id], 2, person=BOB)
    gone = op(P, OpKind.REMOVE_MEMBER, [bob.id], 3, person=BOB)  # the desktop removes Bob
    again = op(LAPTOP, OpKind.ADD_MEMBER, [bob.id], 1, person=BOB)  # the laptop re-adds him
    assert merge(CREATE, bob, gone, again).members == frozenset()
    later = op(P, OpKind.ADD_MEMBER, [gone.id, again.id], 4, person=BOB)  # added after seeing
    assert merge(CREATE, bob, gone, again, later).members == {BOB}


def test_concurrent_renames_and_rules_take_the_last_writer_everywhere() -> None:
    a = op(P, OpKind.RENAME, [CREATE.id], 2, name="fam")
    b = op(LAPTOP, OpKind.RENAME, [CREATE.id], 1, name="family!")
    c = op(LAPTOP, OpKind.SET_POSTING, [b.id], 2, posting=False)
    state = merge(CREATE, a, b, c)
    assert state == merge(c, b, a, CREATE)
    assert state.name == max([(1, raw(P), a.id, a.name), (1, raw(LAPTOP), b.id, b.name)])[3]
    assert not state.members_can_post
    d = op(P, OpKind.RENAME, [a.id, b.id], 3, name="kin")  # causally after both
    assert merge(CREATE, a, b, d).name == "kin"


def test_delete_wins_over_concurrent_and_later_edits() -> None:
    gone = op(P, OpKind.DELETE, [CREATE.id], 2)
    edit = op(LAPTOP, OpKind.ADD_MEMBER, [CREATE.id], 1, person=BOB)
    after = op(LAPTOP, OpKind.RENAME, [gone.id, edit.id], 2, name="back")
    assert merge(CREATE, gone, edit, after).deleted


def test_the_owner_is_never_added_nor_removed_and_a_second_create_is_ignored() -> None:
    me = op(LAPTOP, OpKind.REMOVE_MEMBER, [CREATE.id], 1, person=OWNER)
    me2 = op(LAPTOP, OpKind.ADD_MEMBER, [me.id], 2, person=OWNER)
    twin = op(LAPTOP, OpKind.CREATE, [], 3, name="other", posting=False)
    state = merge(CREATE, me, me2, twin)
    assert state.members == frozenset()
    first = min([(raw(P), CREATE.id, "family"), (raw(LAPTOP), twin.id, "other")])
    assert state.name == first[2]  # the first create in op order: (Lamport, device, id)
    assert merge().exists is False


def test_ops_of_a_revoked_device_past_its_cut_off_count_for_nothing() -> None:
    scope = ops_scope(CIRCLE)
    gone = revoke(P, raw(LAPTOP), [ADD_LAPTOP.id], [(scope_tag(raw(LAPTOP), scope), 1)])
    r = roster(GENESIS, ADD_LAPTOP, gone)
    early = op(LAPTOP, OpKind.ADD_MEMBER, [CREATE.id], 1, person=BOB)
    late = op(LAPTOP, OpKind.ADD_MEMBER, [early.id], 2, person=CAROL)
    state = merge(CREATE, early, late, counts=lambda o: r.accepts(o.device, scope, o.seq))
    assert state.members == {BOB}


def test_concurrent_adds_past_the_member_limit_are_cut_the_same_way() -> None:
    ops = [CREATE]
    for n in range(MAX_CIRCLE_MEMBERS + 2):
        ops.append(op(P if n % 2 else LAPTOP, OpKind.ADD_MEMBER, [CREATE.id], n + 1,
                      person=n.to_bytes(32, "big")))  # fmt: skip
    state = merge(*ops)
    assert len(state.members) == MAX_CIRCLE_MEMBERS
    assert len(state.over_limit) == 2
    assert state == merge(*reversed(ops))


def test_malformed_ops_are_refused() -> None:
    body = dict(wire.decode_map(wire.decode_map(CREATE.raw, max_size=4096)[1], max_size=4096))
    body[3] = [b"a" * 32]  # a create with parents
    encoded = wire.encode_map(body)  # type: ignore[arg-type]
    from p2pmoments.core import circle_ops

    data = wire.encode_map({1: encoded, 2: P.sign(circle_ops.OP_CONTEXT + encoded)})
    with pytest.raises(RosterError, match="create"):
        decode_op(data)
    outer = wire.decode_map(CREATE.raw, max_size=4096)
    with pytest.raises(RosterError, match="not signed"):
        decode_op(wire.encode_map({1: outer[1], 2: bytes(64)}))


@st.composite
def op_histories(draw: st.DrawFn) -> list[Op]:
    """Edits on three devices, each from its own view, with syncs between them."""
    keys = [P, LAPTOP, key(2)]
    views: list[set[bytes]] = [{CREATE.id} for _ in keys]
    by_id = {CREATE.id: CREATE}
    made, seqs = [CREATE], [1, 0, 0]
    people = [BOB, CAROL, DAVE, OWNER]
    steps = draw(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 2), st.integers(0, 11)),
                          max_size=30))  # fmt: skip
    for action, who, n in steps:
        view = views[who]
        named = {p for i in view for p in by_id[i].parents}
        parents = [i for i in view if i not in named]
        seqs[who] += 1
        kw: dict[str, object] = {}
        if action <= 2:
            kind, kw = OpKind.ADD_MEMBER, {"person": people[n % 4]}
        elif action <= 4:
            kind, kw = OpKind.REMOVE_MEMBER, {"person": people[n % 4]}
        elif action == 5:
            kind, kw = OpKind.RENAME, {"name": f"c{n}"}
        elif action == 6:
            kind, kw = OpKind.SET_POSTING, {"posting": n % 2 == 0}
        elif action == 7 and n == 0:
            kind = OpKind.DELETE
        else:
            views[n % 3] |= view
            view |= views[n % 3]
            seqs[who] -= 1
            continue
        o = op(keys[who], kind, parents, seqs[who], **kw)
        by_id[o.id] = o
        made.append(o)
        view.add(o.id)
    return made


@settings(max_examples=200)
@given(op_histories(), st.randoms(use_true_random=False))
def test_any_order_repeats_or_split_of_ops_merge_the_same(
    made: list[Op], rnd: random.Random
) -> None:
    reference = merge(*made)
    shuffled = made + rnd.sample(made, k=min(3, len(made)))
    rnd.shuffle(shuffled)
    assert merge(*shuffled) == reference
    first = [o for o in made if rnd.random() < 0.5]  # what one replica has so far
    merge(*first)  # (ops whose parents are missing wait)
    assert merge(*first, *made) == reference


@settings(max_examples=200)
@given(op_histories())
def test_ops_from_one_device_in_sequence_merge_as_a_plain_replay(made: list[Op]) -> None:
    """An independent model: one device's ops, each after the one before, are applied in turn."""
    chain: list[Op] = [CREATE]
    for o in made[1:]:  # re-sign each op on one device, as a sequence
        chain.append(op(P, o.kind, [chain[-1].id], len(chain) + 1, **_fields(o)))
    members: set[bytes] = set()
    name, posting, deleted = "family", True, False
    for o in chain[1:]:
        if o.kind is OpKind.ADD_MEMBER and o.person != OWNER:
            members.add(o.person)
        elif o.kind is OpKind.REMOVE_MEMBER:
            members.discard(o.person)
        elif o.kind is OpKind.RENAME:
            name = o.name
        elif o.kind is OpKind.SET_POSTING:
            posting = o.posting
        elif o.kind is OpKind.DELETE:
            deleted = True
    state = merge(*chain)
    assert (state.members, state.name, state.members_can_post, state.deleted) == (
        members,
        name,
        posting,
        deleted,
    )


def _fields(o: Op) -> dict[str, object]:
    if o.kind in (OpKind.ADD_MEMBER, OpKind.REMOVE_MEMBER):
        return {"person": o.person}
    if o.kind is OpKind.RENAME:
        return {"name": o.name}
    if o.kind is OpKind.SET_POSTING:
        return {"posting": o.posting}
    return {}
