"""Device links we show, and the devices that ask to join by them (spec/devices.md
section 10): a device that used one of our links is linked only once the person
confirms, on this device, the 6 digits it shows, unless the link was made to link
whoever uses it first (`devices link --yes`)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Protocol

from p2pmoments.core.identity import Identity
from p2pmoments.core.pairing import (
    PairingCode,
    decode_device_link,
    device_link_psk,
    encode_device_link,
    join_code,
)
from p2pmoments.core.pairing_addr import LinkAddress
from p2pmoments.errors import NotFoundError, UserInputError
from p2pmoments.events import EventBus
from p2pmoments.friends import Friends, identity_text

__all__ = ["DEVICE_LINK_TTL", "MAX_DEVICE_CODES", "JoinRequest", "Joins", "own_code"]

DEVICE_LINK_TTL = 600  # seconds a device link works, once
MAX_DEVICE_CODES = 4  # device links valid at once, and requests waiting at once


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinRequest:
    """A device that used one of our links and waits for the person to confirm it."""

    device: bytes
    link: bytes
    name: str
    consent: bytes
    code: str  # the 6 digits it shows too
    expires: int  # the link's expiry: unconfirmed by then, the request is dropped


class Parts(Protocol):
    """What of the node this needs."""

    person: bytes
    me: bytes
    identity: Identity
    friends: Friends
    events: EventBus

    def code_address(self) -> LinkAddress: ...


class Joins:
    """Our device links and the join requests made with them."""

    def __init__(self, node: Parts) -> None:
        self._node = node
        self._codes: dict[bytes, tuple[int, bool]] = {}  # PSK -> (expiry, ask first)
        self._tokens: dict[bytes, bytes] = {}  # PSK -> token (its client-auth key, for Tor)
        self._requests: dict[str, JoinRequest] = {}  # by code

    def psks(self) -> list[bytes]:
        """The PSKs of our device links still valid."""
        now = int(time.time())
        for psk in [p for p, (expires, _) in self._codes.items() if expires < now]:
            del self._codes[psk]
        for psk in [p for p in self._tokens if p not in self._codes]:
            del self._tokens[psk]
        return list(self._codes)

    def live_tokens(self, now: float) -> list[tuple[bytes, int]]:
        """The tokens of our device links still unused and valid at `now`, and when each
        expires: our onion service admits the client-auth key each stands for
        (spec/tor.md section 4), so a new device with only the link reaches us."""
        self.psks()
        return [(t, self._codes[p][0]) for p, t in self._tokens.items() if self._codes[p][0] > now]

    def new_link(self, *, confirm: bool = True) -> tuple[str, int]:
        """A single-use link (and QR) for a new device of ours: (text, expiry). With
        `confirm`, the device that uses it is linked once the person confirms its code."""
        node = self._node
        if node.person != node.me:
            raise UserInputError("for now, link new devices from your first device")
        self.psks()
        if len(self._codes) >= MAX_DEVICE_CODES:
            oldest = min(self._codes, key=lambda p: self._codes[p][0])
            del self._codes[oldest]
            self._tokens.pop(oldest, None)
        token = os.urandom(16)
        expires = int(time.time()) + DEVICE_LINK_TTL
        where = node.code_address()
        code = PairingCode(
            identity=node.identity.public.verify_key,
            link_key=node.identity.public.link_key,
            token=token,
            expires=expires,
            name=node.friends.my_name,
            host=where.host,
            port=where.port,
            onion=where.onion,
        )
        self._codes[device_link_psk(token)] = (expires, confirm)
        self._tokens[device_link_psk(token)] = token
        return encode_device_link(code), expires

    def take(self, psk: bytes) -> tuple[bool, int] | None:
        """A device linked with the link behind `psk`, which works once: (whether to ask
        the person first, its expiry), None if it is not one of our links."""
        entry = self._codes.pop(psk, None)
        self._tokens.pop(psk, None)
        return None if entry is None else (entry[1], entry[0])

    def code(self, psk: bytes, device: bytes, link: bytes) -> str:
        """The 6 digits a device joining by our link shows (core.pairing.join_code)."""
        mine = self._node.identity.public
        return join_code(psk, self._node.person, bytes(mine.link_key), device, link)

    def ask(self, request: JoinRequest) -> None:
        """A device asks to join: it waits for the person (event device.join_requested)."""
        self._expire()
        if len(self._requests) >= MAX_DEVICE_CODES:
            oldest = min(self._requests, key=lambda c: self._requests[c].expires)
            del self._requests[oldest]
        self._requests[request.code] = request
        self._node.events.publish("device.join_requested", **_request_json(request))

    def requests(self) -> list[dict[str, Any]]:
        """The devices waiting to be confirmed, as the API shows them."""
        self._expire()
        return [_request_json(r) for r in sorted(self._requests.values(), key=lambda r: r.expires)]

    def pop(self, code: str) -> JoinRequest:
        """The request with these digits (spaces ignored), taken out; NotFoundError."""
        self._expire()
        request = self._requests.pop("".join(code.split()), None)
        if request is None:
            raise NotFoundError(f"no device is waiting with the code {code[:16]!r}")
        return request

    def _expire(self) -> None:
        now = int(time.time())
        for code in [c for c, r in self._requests.items() if r.expires < now]:
            del self._requests[code]


def own_code(join_link: str | None, identity: Identity) -> str | None:
    """On a device still joining by `join_link`: the 6 digits it shows, which its
    person's device asks the person to confirm."""
    if join_link is None:
        return None
    code = decode_device_link(join_link)
    me = identity.public
    return join_code(
        device_link_psk(code.token),
        bytes(code.identity),
        bytes(code.link_key),
        bytes(me.verify_key),
        bytes(me.link_key),
    )


def _request_json(request: JoinRequest) -> dict[str, Any]:
    return {
        "name": request.name,
        "device": identity_text(request.device),
        "code": request.code,
        "expires_at": request.expires,
    }
