"""What one person's devices tell each other, and no one else (spec/devices.md section 9):
the epoch keys each can open, and the friends the person has. Sent only on a link
between two current devices of the same person (the shell checks); decoded here as
hostile input like any peer's (a stolen device is revoked, not trusted for ever). Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from p2pmoments.core.device_entries import RosterError, bytes32, uint_field
from p2pmoments.core.errors import DecodeError
from p2pmoments.core.profile import check_display_name

__all__ = [
    "MAX_FRIENDS",
    "MAX_KEYS",
    "T_FRIENDS",
    "T_JOIN",
    "T_KEYS",
    "SharedFriend",
    "decode_friends_message",
    "decode_join_message",
    "decode_keys_message",
    "encode_friends_message",
    "encode_join_message",
    "encode_keys_message",
]

T_KEYS = 27  # {0: 27, 1: [[circle id, epoch, key], ...]}
T_FRIENDS = 28  # {0: 28, 1: our name, 2: [friend, ...]}
MAX_KEYS = 4096
MAX_FRIENDS = 1024  # a person's friends (150 by default, configurable): bounded well past


def encode_keys_message(keys: list[tuple[bytes, int, bytes]]) -> dict[int, Any]:
    """Epoch keys for another device of the same person."""
    return {0: T_KEYS, 1: [[c, e, k] for c, e, k in keys]}


def decode_keys_message(body: dict[int, Any]) -> list[tuple[bytes, int, bytes]]:
    """The (circle, epoch, key) a keys message carries; RosterError if it is malformed."""
    if set(body) != {0, 1} or body[0] != T_KEYS or type(body[1]) is not list:
        raise RosterError("malformed keys message")
    if len(body[1]) > MAX_KEYS:
        raise RosterError("too many keys in one message")
    out = []
    for item in body[1]:
        if type(item) is not list or len(item) != 3:
            raise RosterError("malformed epoch key")
        circle, epoch, key = item
        out.append((bytes32(circle, "circle id"), uint_field(epoch, "epoch"), bytes32(key, "key")))
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class SharedFriend:
    """A friend of the person, as one of their devices tells another."""

    identity: bytes
    link_key: bytes
    link_signature: bytes
    name: str  # what the person calls them
    their_name: str  # what they call themselves
    blocked: bool
    since: int


def encode_friends_message(
    my_name: str, friends: list[SharedFriend], removed: dict[bytes, int] | None = None
) -> dict[int, Any]:
    """The person's name and friends, for another of their devices; and the friends
    the person removed, with when (key 3, only if any)."""
    body: dict[int, Any] = {
        0: T_FRIENDS,
        1: my_name,
        2: [
            [f.identity, f.link_key, f.link_signature, f.name, f.their_name, f.blocked, f.since]
            for f in friends
        ],
    }
    if removed:
        body[3] = [[k, t] for k, t in sorted(removed.items())][:MAX_FRIENDS]
    return body


def decode_removals(body: dict[int, Any]) -> dict[bytes, int]:
    """Key 3 of a friends message: identity -> when the person removed that friend;
    RosterError if it is malformed."""
    items = body.get(3, [])
    if type(items) is not list or len(items) > MAX_FRIENDS:
        raise RosterError("malformed friend removals")
    out = {}
    for item in items:
        if type(item) is not list or len(item) != 2:
            raise RosterError("malformed friend removal")
        out[bytes32(item[0], "identity")] = uint_field(item[1], "time")
    return out


def _name(value: object) -> str:
    if type(value) is not str:
        raise RosterError("malformed name")
    try:
        return check_display_name(value)
    except DecodeError as exc:
        raise RosterError(f"bad name: {exc}") from None


def decode_friends_message(body: dict[int, Any]) -> tuple[str, list[SharedFriend]]:
    """(our name, our friends) of a friends message; RosterError if it is malformed."""
    if not {0, 1, 2} <= set(body) <= {0, 1, 2, 3} or body[0] != T_FRIENDS:
        raise RosterError("malformed friends message")
    if type(body[2]) is not list:
        raise RosterError("malformed friends message")
    if len(body[2]) > MAX_FRIENDS:
        raise RosterError("too many friends in one message")
    friends = []
    for item in body[2]:
        if type(item) is not list or len(item) != 7:
            raise RosterError("malformed friend")
        identity, link, signature, name, theirs, blocked, since = item
        if type(signature) is not bytes or len(signature) != 64 or type(blocked) is not bool:
            raise RosterError("malformed friend")
        friends.append(
            SharedFriend(
                identity=bytes32(identity, "identity"),
                link_key=bytes32(link, "link key"),
                link_signature=signature,
                name=_name(name),
                their_name=_name(theirs),
                blocked=blocked,
                since=uint_field(since, "time"),
            )
        )
    return _name(body[1]), friends


# --- joining: a new device asks to be certified (spec/devices.md section 10) ------------

T_JOIN = 25  # {0: 25, 1: the device's name, 2: its consent}: on a link made with a device link


def encode_join_message(name: str, consent: bytes) -> dict[int, Any]:
    """A new device's request: its name, and its consent to be the person's."""
    return {0: T_JOIN, 1: name, 2: consent}


def decode_join_message(body: dict[int, Any]) -> tuple[str, bytes]:
    """(name, consent) of a join message; RosterError if it is malformed."""
    if set(body) != {0, 1, 2} or body[0] != T_JOIN:
        raise RosterError("malformed join message")
    consent = body[2]
    if type(consent) is not bytes or len(consent) != 64:
        raise RosterError("malformed consent")
    return _name(body[1]), consent
