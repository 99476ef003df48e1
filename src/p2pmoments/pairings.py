"""Pairing: our codes (one-time tokens) and the codes we scanned (spec/pairing.md).

Every change of a pairing attempt's state goes through core.pairing's transition
table. Completing a pairing is the links' business (the handshake proves the code);
this module records what happened and asks for dials through `dial`.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import replace

from p2pmoments.core.admission import Claim
from p2pmoments.core.pairing import (
    Direction,
    PairingCode,
    PairingEvent,
    PairingState,
    check_not_self,
    decode_code,
    encode_code,
    next_state,
    token_psk,
)
from p2pmoments.core.pairing_addr import LinkAddress
from p2pmoments.errors import FriendLimitError, UserInputError, user_input
from p2pmoments.events import EventBus
from p2pmoments.friends import Friends
from p2pmoments.store import AsyncStore, PairingRecord, Store
from p2pmoments.views import pairing_json

__all__ = ["MAX_LIVE_CODES", "Pairings"]

log = logging.getLogger(__name__)

MAX_LIVE_CODES = 32  # unused pairing codes valid at once (each showing makes one)

Dial = Callable[[PairingRecord], None]  # dial the owner of a code we scanned
Address = Callable[[], LinkAddress]  # where we can be reached, for our codes


def _now() -> int:
    return int(time.time())


class Pairings:
    """Pairing codes we show, and pairing attempts either way."""

    def __init__(
        self,
        store: AsyncStore,
        events: EventBus,
        friends: Friends,
        *,
        me: PairingCode,
        ttl: int,
        max_friends: int,
        dial: Dial,
        address: Address,
        on_codes: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._events = events
        self._friends = friends
        self._me = me  # our keys; token, expiry, name and address are filled per code
        self._ttl = ttl
        self._max_friends = max_friends
        self._dial = dial
        self._address = address
        self._on_codes = on_codes  # our set of valid codes changed
        self._tokens: dict[bytes, bytes] = {}  # psk -> token
        self._expiry: dict[bytes, int] = {}  # token -> when it expires
        # Why this device cannot show codes now, if it cannot (devicepairing.py).
        self.refusal: Callable[[], str | None] = lambda: None

    async def load(self) -> list[PairingRecord]:
        """Read the codes still valid; returns our pending attempts, to dial again."""
        await self._load_tokens()
        return [
            p
            for p in await self._store.run(Store.pairings)
            if p.direction is Direction.OUT and p.state is PairingState.PENDING and p.identity
        ]

    async def _load_tokens(self) -> None:
        tokens = await self._store.run(Store.tokens, _now())
        self._tokens = {token_psk(t.token): t.token for t in tokens}
        self._expiry = {t.token: t.expires for t in tokens}

    # --- our codes -----------------------------------------------------------------

    async def new_code(self) -> tuple[str, int]:
        """A fresh pairing link and its expiry: each showing is a code of its own, so a
        code shown to two friends in turn works for both (spec/pairing.md section 2).
        At most MAX_LIVE_CODES unused codes stay valid; older ones stop working."""
        why = self.refusal()
        if why is not None:
            raise UserInputError(why)
        now = _now()
        token, expires = secrets.token_bytes(16), now + self._ttl
        await self._store.run(Store.add_token, token, now, expires, keep=MAX_LIVE_CODES)
        await self._load_tokens()
        self._on_codes()
        where = self._address()
        code = replace(
            self._me,
            token=token,
            expires=expires,
            name=self._friends.my_name,
            host=where.host,
            port=where.port,
            onion=where.onion,
        )
        return encode_code(code), expires

    def psks(self) -> list[bytes]:
        """The PSKs of our valid codes (a responder tries each on message 1)."""
        return list(self._tokens)

    def live_codes(self) -> int:
        """How many of our codes are valid now."""
        return len(self._tokens)

    def live_tokens(self, now: float) -> list[tuple[bytes, int]]:
        """The tokens of our codes still valid at `now`, and when each expires."""
        return [(t, e) for t, e in self._expiry.items() if e > now]

    async def claim(self, psk: bytes, link_key: bytes) -> tuple[Claim, bytes | None]:
        """Claim the code behind `psk` for a device's link key (the same device may claim
        it again); returns what the store says, and the token."""
        token = self._tokens.get(psk)
        if token is None:
            return Claim.EXPIRED, None
        return await self._store.run(Store.claim_token, token, link_key, _now()), token

    async def record_theirs(
        self,
        link_key: bytes,
        token: bytes,
        state: PairingState,
        reason: str = "",
        identity: bytes | None = None,
        name: str = "",
    ) -> None:
        """Someone used one of our codes: confirmed, or refused (and why). A refused
        device retries until its code expires: one record per device and code."""
        now = _now()
        if state is PairingState.REFUSED:
            for old in await self._store.run(Store.pairings):
                if (old.direction, old.link_key, old.token) == (Direction.IN, link_key, token) and (
                    old.state is PairingState.REFUSED
                ):
                    state = next_state(old.state, PairingEvent.REFUSED)
                    await self._store.run(Store.set_pairing_state, old.id, state, reason, now)
                    return
        record = await self._store.run(
            Store.add_pairing,
            PairingRecord(
                id=0,
                direction=Direction.IN,
                identity=identity,
                link_key=link_key,
                name=name,
                token=token,
                expires=now,
                host=None,
                port=None,
                state=state,
                reason=reason,
                created=now,
                updated=now,
            ),
        )
        self._publish(record)

    # --- codes we scanned ----------------------------------------------------------------

    async def pair(self, text: str) -> PairingRecord:
        """Start pairing with the owner of a scanned link; completes when we reach them."""
        with user_input():
            code = decode_code(text)
            check_not_self(code, self._me.identity)
        why = self.refusal()
        if why is not None:
            raise UserInputError(why)
        owner = bytes(code.identity)
        if self._friends.get(owner) is None and self._friends.count() >= self._max_friends:
            raise FriendLimitError(
                f"you already have {self._max_friends} friends, the most allowed "
                "(friends.max in the config); remove one first"
            )
        if code.expires <= _now():
            raise UserInputError("this pairing code has expired: ask for a fresh one")
        now = _now()
        record = await self._store.run(
            Store.add_pairing,
            PairingRecord(
                id=0,
                direction=Direction.OUT,
                identity=owner,
                link_key=bytes(code.link_key),
                name=code.name,
                token=code.token,
                expires=code.expires,
                host=code.host,
                port=code.port,
                onion=None if code.onion is None else bytes(code.onion),
                state=PairingState.PENDING,
                reason="",
                created=now,
                updated=now,
            ),
        )
        self._publish(record)
        self._dial(record)
        return record

    async def update(
        self, pairing_id: int, event: PairingEvent, reason: str = ""
    ) -> PairingRecord | None:
        """Something happened to one of our attempts (linked, expired, refused)."""
        current = await self._store.run(Store.pairing, pairing_id)
        if current is None:
            return None
        state = next_state(current.state, event)
        record = await self._store.run(Store.set_pairing_state, pairing_id, state, reason, _now())
        if record is not None:
            self._publish(record)
        return record

    async def records(self) -> list[PairingRecord]:
        """Recent pairing attempts, newest first."""
        return await self._store.run(Store.pairings)

    async def wait(self, pairing_id: int, timeout: float) -> PairingRecord | None:
        """The attempt once it is no longer pending, or as it is after `timeout`."""
        deadline = time.monotonic() + timeout
        last = self._events.last_id
        while True:
            record = await self._store.run(Store.pairing, pairing_id)
            remaining = deadline - time.monotonic()
            if record is None or record.state is not PairingState.PENDING or remaining <= 0:
                return record
            await self._events.wait_after(last, remaining)
            last = self._events.last_id

    def _publish(self, record: PairingRecord) -> None:
        self._events.publish(f"pairing.{record.state.value}", **pairing_json(record))
