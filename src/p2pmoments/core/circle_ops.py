"""The owner's edits of a circle, from any of their devices, merged as a CRDT (spec/devices.md
§6.3): a pure function from the set of ops to the circle's members, name and rule.

Pure: no I/O and no clock. The ops share the roster's discipline (core.device_entries): signed
CBOR maps, a DAG of parents, ordered by (Lamport number, ...), never by a clock.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from p2pmoments.core import wire
from p2pmoments.core.crypto import SigningKey
from p2pmoments.core.device_entries import (
    VERSION,
    RosterError,
    blake,
    bytes32,
    name_field,
    parents_field,
    signed_body,
    uint_field,
    verify_by,
)
from p2pmoments.core.profile import check_display_name

__all__ = [
    "MAX_CIRCLE_MEMBERS",
    "MAX_OP",
    "CircleState",
    "Op",
    "OpKind",
    "decode_op",
    "merge_circle",
    "sign_op",
]

OP_CONTEXT = b"p2pmoments/circle-op/1\x00"
MAX_OP = 1024
MAX_CIRCLE_MEMBERS = 150  # besides the owner, as manifests (spec/moments.md §1)


class OpKind(enum.IntEnum):
    """What an owner's edit of a circle does."""

    CREATE = 1
    ADD_MEMBER = 2
    REMOVE_MEMBER = 3
    RENAME = 4
    SET_POSTING = 5
    DELETE = 6


_OP_KEYS = {
    OpKind.CREATE: {9, 10},
    OpKind.ADD_MEMBER: {8},
    OpKind.REMOVE_MEMBER: {8},
    OpKind.RENAME: {9},
    OpKind.SET_POSTING: {10},
    OpKind.DELETE: set(),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Op:
    """A verified edit of a circle, by one of its owner's devices."""

    id: bytes
    circle: bytes
    parents: tuple[bytes, ...]
    kind: OpKind
    device: bytes
    seq: int
    time: int
    person: bytes = b""  # add-member, remove-member
    name: str = ""  # create, rename
    posting: bool = False  # create, set-posting: every member may post
    raw: bytes = field(repr=False)


def decode_op(data: bytes) -> Op:
    """A verified circle op; RosterError if malformed, oversized or forged."""
    fields, body, signature = signed_body(data, MAX_OP, "circle op")
    kind_raw = fields.get(4)
    if type(kind_raw) is not int or kind_raw not in OpKind._value2member_map_:
        raise RosterError("unknown kind of circle op")
    kind = OpKind(kind_raw)
    if set(fields) != {1, 2, 3, 4, 5, 6, 7} | _OP_KEYS[kind]:
        raise RosterError("missing or unknown fields for its kind")
    parents = parents_field(fields[3])
    if (kind is OpKind.CREATE) != (not parents):
        raise RosterError("a create, and only it, has no parents")
    extra: dict[str, Any] = {}
    if 8 in fields:
        extra["person"] = bytes32(fields[8], "person")
    if 9 in fields:
        extra["name"] = name_field(fields[9])
    if 10 in fields:
        if type(fields[10]) is not bool:
            raise RosterError("malformed posting rule")
        extra["posting"] = fields[10]
    device = bytes32(fields[5], "device")
    seq = uint_field(fields[6], "sequence")
    if seq < 1:
        raise RosterError("an op's sequence starts at 1")
    verify_by(device, OP_CONTEXT + body, signature, "circle op")
    return Op(
        id=blake(data, b"p2pm-circle-op"),
        circle=bytes32(fields[2], "circle id"),
        parents=parents,
        kind=kind,
        device=device,
        seq=seq,
        time=uint_field(fields[7], "time"),
        raw=data,
        **extra,
    )


def sign_op(
    device: SigningKey,
    *,
    circle: bytes,
    parents: Iterable[bytes],
    kind: OpKind,
    seq: int,
    time: int,
    person: bytes = b"",
    name: str = "",
    posting: bool = False,
) -> Op:
    """Sign an edit of `circle` (its fields as §6.3 lists them), and decode it back."""
    body: dict[int, Any] = {
        1: VERSION,
        2: circle,
        3: sorted(set(parents)),
        4: int(kind),
        5: bytes(device.verify_key),
        6: seq,
        7: time,
    }
    if 8 in _OP_KEYS[kind]:
        body[8] = person
    if 9 in _OP_KEYS[kind]:
        body[9] = check_display_name(name)
    if 10 in _OP_KEYS[kind]:
        body[10] = posting
    encoded = wire.encode_map(body)
    return decode_op(wire.encode_map({1: encoded, 2: device.sign(OP_CONTEXT + encoded)}))


@dataclass(frozen=True, slots=True, kw_only=True)
class CircleState:
    """A circle as its owner's edits make it: what the next manifest is derived from."""

    exists: bool
    deleted: bool = False
    name: str = ""
    members_can_post: bool = False
    members: frozenset[bytes] = frozenset()  # persons besides the owner
    over_limit: tuple[bytes, ...] = ()  # added concurrently past MAX_CIRCLE_MEMBERS


def merge_circle(
    circle: bytes,
    ops: Iterable[Op],
    *,
    owner: bytes,
    counts: Callable[[Op], bool] = lambda op: True,
) -> CircleState:
    """The state a set of ops gives (§6.3): whatever their order or repeats. `counts` says
    whether an op's device is accepted by the owner's roster (`Roster.accepts` with
    `ops_scope`); ops whose parents are not all here wait, as roster entries do."""
    held: dict[bytes, Op] = {op.id: op for op in ops if op.circle == circle}
    lamport: dict[bytes, int] = {}
    anc: dict[bytes, frozenset[bytes]] = {}
    progress = True
    while progress:  # keep the ops whose ancestry is all here
        progress = False
        for op in held.values():
            if op.id not in lamport and all(p in lamport for p in op.parents):
                lamport[op.id] = 1 + max((lamport[p] for p in op.parents), default=-1)
                anc[op.id] = frozenset(op.parents).union(*(anc[p] for p in op.parents))
                progress = True
    order = sorted((held[i] for i in lamport), key=lambda o: (lamport[o.id], o.device, o.id))
    creates = [o for o in order if o.kind is OpKind.CREATE and counts(o)]
    if not creates:
        return CircleState(exists=False)
    root = creates[0]  # a second create of the same circle is ignored
    valid = [o for o in order if (o is root or root.id in anc[o.id]) and counts(o)]
    name, posting = root.name, root.posting
    for o in valid:  # last writer in op order wins
        if o.kind is OpKind.RENAME:
            name = o.name
        elif o.kind is OpKind.SET_POSTING:
            posting = o.posting
    deleted = any(o.kind is OpKind.DELETE for o in valid)
    removes: dict[bytes, list[Op]] = {}
    for o in valid:
        if o.kind is OpKind.REMOVE_MEMBER:
            removes.setdefault(o.person, []).append(o)
    members: dict[bytes, tuple[int, bytes]] = {}  # person -> its deciding add's place
    for o in valid:
        if o.kind is not OpKind.ADD_MEMBER or o.person == owner or o.person in members:
            continue
        # remove wins: an add counts only if it saw every remove of that person
        if all(r.id in anc[o.id] for r in removes.get(o.person, ())):
            members[o.person] = (lamport[o.id], o.person)
    ranked = sorted(members, key=lambda p: members[p])
    return CircleState(
        exists=True,
        deleted=deleted,
        name=name,
        members_can_post=posting,
        members=frozenset(ranked[:MAX_CIRCLE_MEMBERS]),
        over_limit=tuple(ranked[MAX_CIRCLE_MEMBERS:]),
    )
