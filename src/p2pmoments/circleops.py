"""Edits of the circles a person owns, from any of their devices (spec/devices.md section
6.3): each edit is a signed op; the person's devices hand their ops to each other
(message 29); a circle is what core.circle_ops.merge_circle makes of its ops, whatever
order they came in. The person's first device issues the manifest that the merge gives
(section 14: an issuer rule for this version), so two devices editing apart converge
as soon as each has met the first device.

A person with one device writes no ops: circles change as they always did.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from p2pmoments.core.circle_ops import CircleState, Op, OpKind, decode_op, merge_circle, sign_op
from p2pmoments.core.device_entries import RosterError, bytes32, ops_scope
from p2pmoments.core.identity import Identity
from p2pmoments.core.manifest import Manifest
from p2pmoments.store import AsyncStore, Store

__all__ = ["MAX_OPS_MESSAGE", "T_OPS", "CircleEdits", "decode_ops_message", "encode_ops_message"]

log = logging.getLogger(__name__)

T_OPS = 29  # {0: 29, 1: [signed op, ...]}: between one person's devices only
MAX_OPS_MESSAGE = 4096
MAX_OPS_PER_CIRCLE = 4096


def encode_ops_message(ops: Iterable[bytes]) -> dict[int, Any]:
    """Circle ops for another device of the same person."""
    return {0: T_OPS, 1: list(ops)}


def decode_ops_message(body: dict[int, Any]) -> list[Op]:
    """The verified ops of an ops message; RosterError if anything is off."""
    if set(body) != {0, 1} or body[0] != T_OPS or type(body[1]) is not list:
        raise RosterError("malformed ops message")
    if len(body[1]) > MAX_OPS_MESSAGE:
        raise RosterError("too many ops in one message")
    return [decode_op(raw) if type(raw) is bytes else _bad() for raw in body[1]]


def _bad() -> Op:
    raise RosterError("malformed op")


class CircleEdits:
    """The op logs of the circles we own."""

    def __init__(
        self,
        store: AsyncStore,
        identity: Identity,
        *,
        person: bytes,
        counts: Callable[[bytes, bytes, int], bool],
    ) -> None:
        self._store = store
        self._identity = identity
        self._device = bytes(identity.public.verify_key)
        self._person = person
        self._counts = counts  # (device, scope, seq): the person's roster accepts it
        self._ops: dict[bytes, dict[bytes, Op]] = {}  # circle -> op id -> op

    async def load(self) -> None:
        """Read every op kept, checked again."""
        for circle, raw in await self._store.run(Store.circle_ops):
            try:
                op = decode_op(raw)
            except RosterError as exc:
                log.warning("a kept circle op no longer decodes: %s", exc)
                continue
            self._ops.setdefault(circle, {})[op.id] = op

    def has_log(self, circle: bytes) -> bool:
        """Whether the circle is edited through ops (it has a root)."""
        return any(op.kind is OpKind.CREATE for op in self._ops.get(circle, {}).values())

    def all_raw(self) -> list[bytes]:
        """Every op we hold, to hand to another device of ours."""
        return [op.raw for ops in self._ops.values() for op in ops.values()]

    def state(self, circle: bytes) -> CircleState:
        """What the ops of `circle` make of it (spec/devices.md section 6.3)."""
        return merge_circle(
            circle,
            self._ops.get(circle, {}).values(),
            owner=self._person,
            counts=lambda op: self._counts(op.device, ops_scope(op.circle), op.seq),
        )

    async def bootstrap(self, manifest: Manifest) -> list[Op]:
        """Start the op log of a circle we own from its manifest: a create and an add
        for each member (on our first device, before another device may edit it)."""
        if self.has_log(manifest.circle_id):
            return []
        made = [
            self._sign(
                manifest.circle_id,
                OpKind.CREATE,
                name=manifest.name,
                posting=manifest.members_can_post,
            )
        ]
        await self._keep(made)
        for member in manifest.members:
            if bytes(member.verify_key) != self._person:
                made.append(
                    self._sign(
                        manifest.circle_id, OpKind.ADD_MEMBER, person=bytes(member.verify_key)
                    )
                )
                await self._keep(made[-1:])
        return made

    async def edit(
        self,
        circle: bytes,
        *,
        add: Iterable[bytes] = (),
        remove: Iterable[bytes] = (),
        name: str | None = None,
        posting: bool | None = None,
    ) -> list[Op]:
        """Record our edits of a circle as ops (each on the heads before it)."""
        made: list[Op] = []
        for person in remove:
            made.append(self._sign(circle, OpKind.REMOVE_MEMBER, person=person))
            await self._keep(made[-1:])
        for person in add:
            made.append(self._sign(circle, OpKind.ADD_MEMBER, person=person))
            await self._keep(made[-1:])
        if name is not None:
            made.append(self._sign(circle, OpKind.RENAME, name=name))
            await self._keep(made[-1:])
        if posting is not None:
            made.append(self._sign(circle, OpKind.SET_POSTING, posting=posting))
            await self._keep(made[-1:])
        return made

    async def received(self, ops: Iterable[Op]) -> list[Op]:
        """Ops from another device of ours: those of our devices are kept and returned
        (the new ones)."""
        fresh = [
            op
            for op in ops
            if op.id not in self._ops.get(op.circle, {})
            and self._counts(op.device, ops_scope(op.circle), op.seq)
            and len(self._ops.get(op.circle, {})) < MAX_OPS_PER_CIRCLE
        ]
        await self._keep(fresh)
        return fresh

    def _sign(
        self,
        circle: bytes,
        kind: OpKind,
        *,
        person: bytes = b"",
        name: str = "",
        posting: bool = False,
    ) -> Op:
        ops = self._ops.get(circle, {})
        named = {p for op in ops.values() for p in op.parents}
        heads = [] if kind is OpKind.CREATE else sorted(i for i in ops if i not in named)
        seq = 1 + max((op.seq for op in ops.values() if op.device == self._device), default=0)
        return sign_op(
            self._identity.signing_key,
            circle=bytes32(circle, "circle id"),
            parents=heads,
            kind=kind,
            seq=seq,
            time=int(time.time()),
            person=person,
            name=name,
            posting=posting,
        )

    async def _keep(self, ops: list[Op]) -> None:
        if not ops:
            return
        for op in ops:
            self._ops.setdefault(op.circle, {})[op.id] = op
        await self._store.run(Store.save_circle_ops, [(op.circle, op.id, op.raw) for op in ops])
