"""How the daemon's state looks in JSON, for the API and the events (spec/openapi.yaml).

Plain functions of plain data: the parts hand over what they hold, and these turn
it into the shapes the API documents. Nothing here reads the store or the disk.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from p2pmoments.config import Address
from p2pmoments.core.blobs import BlobKind, BlobRef
from p2pmoments.core.ids import IdKind, encode_id
from p2pmoments.core.manifest import Manifest
from p2pmoments.core.moment import Kind, Moment
from p2pmoments.friends import Person, identity_text
from p2pmoments.net.links import PeerInfo
from p2pmoments.store import FriendRecord, PairingRecord, StoredMoment

__all__ = [
    "CircleUnread",
    "MomentView",
    "circle_json",
    "circle_text",
    "feed_order",
    "friend_json",
    "moment_json",
    "moment_text",
    "pairing_json",
    "peer_json",
    "person_json",
    "place_order",
    "unread_json",
]

People = Callable[[bytes], Person]


@functools.lru_cache(maxsize=1024)
def circle_text(circle_id: bytes) -> str:
    """A circle id's text form (circles are few: remembered)."""
    return encode_id(circle_id, IdKind.CIRCLE)


def moment_text(moment_id: bytes) -> str:
    """A moment id's text form."""
    return encode_id(moment_id, IdKind.MOMENT)


def person_json(person: Person) -> dict[str, Any]:
    """Someone, as every person in the API is shown."""
    return {
        "identity": identity_text(person.identity),
        "name": person.name,
        "friend": person.friend,
    }


def friend_json(friend: FriendRecord, *, connected: bool) -> dict[str, Any]:
    """A friend as the API shows it."""
    return {
        "identity": identity_text(friend.verify_key),
        "name": friend.name,
        "their_name": friend.their_name,
        "state": friend.state.value,
        "since": friend.since,
        "last_seen": friend.last_seen,
        "connected": connected,
        "address": None
        if friend.host is None
        else str(Address(host=friend.host, port=friend.port or 0)),
    }


def peer_json(peer: PeerInfo, people: People) -> dict[str, Any]:
    """A linked peer as `peers` shows it: named as a friend is, else as it names itself."""
    known = people(peer.key)
    return {
        "identity": identity_text(peer.key),
        "name": known.name if known.friend else peer.name,
        "since": peer.since,
        "found_via": peer.found_via,
        "path": peer.path,
        "direction": "out" if peer.initiator else "in",
        "address": None if peer.host is None else str(Address(host=peer.host, port=peer.port or 0)),
        "bytes_in": peer.bytes_in,
        "bytes_out": peer.bytes_out,
    }


def pairing_json(p: PairingRecord) -> dict[str, Any]:
    """A pairing attempt as the API (and its events) show it."""
    return {
        "id": p.id,
        "direction": p.direction.value,
        "identity": None if p.identity is None else identity_text(p.identity),
        "name": p.name,
        "state": p.state.value,
        "reason": p.reason,
        "expires_at": p.expires,
        "created": p.created,
        "updated": p.updated,
    }


def circle_json(
    m: Manifest, *, me: bytes, people: People, removed: tuple[int, int] | None
) -> dict[str, Any]:
    """A circle as the API shows it."""
    return {
        "id": circle_text(m.circle_id),
        "name": m.name,
        "epoch": m.epoch,
        "owner": person_json(people(bytes(m.owner))),
        "mine": bytes(m.owner) == me,
        "removed": None if removed is None else {"epoch": removed[0], "at": removed[1]},
        "members_can_post": m.members_can_post,
        "members": [person_json(people(bytes(x.verify_key))) for x in m.members],
        "kind": "conversation" if m.conversation else "album",
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class CircleUnread:
    """A circle's unread posts, and its read mark: the position (created, place, seq) of
    the newest post seen there (None: nothing read there yet)."""

    circle_id: bytes
    unread: int
    read_to: tuple[int, int, int] | None


@dataclass(frozen=True, slots=True)
class MomentView:
    """A post with what the feed shows of it: opened (unless retracted), its comments and
    reactions, and how many chunks of each photo and file are here."""

    row: StoredMoment
    moment: Moment | None  # None once retracted
    circle_name: str
    replies: Sequence[Moment]
    held: Sequence[int]  # per blob, chunks here (its thumbnail's included)
    edited: Moment | None = None  # its author's newest edit (spec/moments.md section 10)
    # Our own post in a conversation: the members whose daemon holds it, who read it.
    delivered_to: Sequence[bytes] = ()
    read_by: Sequence[bytes] = ()


def feed_order(row: StoredMoment) -> str:
    """A key that sorts posts as the feed does (oldest first), for a page to place one
    that arrives live: (created, place, seq) (store/moments.py FEED_ORDER), fixed-width
    so that strings compare as the values do."""
    return place_order((row.created, row.place, row.seq))


def place_order(position: tuple[int, int, int]) -> str:
    """feed_order of a post at `position` (created, place, seq)."""
    created, place, seq = position
    return f"{created + 2**63:020d}.{place:020d}.{seq:020d}"


def unread_json(counts: Sequence[CircleUnread]) -> dict[str, Any]:
    """Unread counts as the API shows them."""
    return {
        "total": sum(c.unread for c in counts),
        "circles": [
            {
                "id": circle_text(c.circle_id),
                "unread": c.unread,
                "read_to": None if c.read_to is None else place_order(c.read_to),
            }
            for c in counts
        ],
    }


def moment_json(view: MomentView, people: People) -> dict[str, Any]:
    """A post with its comments and reactions, as the API shows it."""
    row = view.row
    base: dict[str, Any] = {
        "id": moment_text(row.moment_id),
        "order": feed_order(row),
        "circle": {"id": circle_text(row.circle_id), "name": view.circle_name},
        "author": person_json(people(row.author)),
        "time": row.created,
        "expires": row.expires,
        "retracted": row.retracted,
        "text": "",
        "comments": [],
        "reactions": {},
        "reactions_by": {},
        "photos": [],
        "files": [],
        "edited": None,
        "delivered_to": [person_json(people(p)) for p in view.delivered_to],
        "read_by": [person_json(people(p)) for p in view.read_by],
    }
    if view.moment is None:
        return base
    content = view.moment.content
    base["text"] = content.text
    if view.edited is not None:
        base["text"] = view.edited.content.text
        base["edited"] = view.edited.time
    _add_blobs(base, content.blobs, view.held)
    for answer in view.replies:
        who = person_json(people(bytes(answer.author)))
        if answer.content.kind is Kind.COMMENT:
            base["comments"].append(
                {
                    "id": moment_text(answer.id),
                    "author": who,
                    "time": answer.time,
                    "text": answer.content.text,
                }
            )
        elif answer.content.kind is Kind.REACTION:
            emoji = answer.content.emoji
            base["reactions"].setdefault(emoji, []).append(who["name"])
            base["reactions_by"].setdefault(emoji, []).append(who)
    return base


def _add_blobs(base: dict[str, Any], refs: Sequence[BlobRef], held: Sequence[int]) -> None:
    for ref, here in zip(refs, held, strict=True):
        # Transfer progress: how many of its chunks (thumbnail's included) are here.
        progress = {"chunks": ref.total(), "chunks_held": here}
        if ref.kind is BlobKind.PHOTO:
            base["photos"].append(
                {
                    "n": len(base["photos"]) + 1,
                    "type": ref.media_type,
                    "width": ref.width,
                    "height": ref.height,
                    "size": ref.size,
                    "caption": ref.caption,
                    **progress,
                }
            )
        else:
            base["files"].append(
                {
                    "n": len(base["files"]) + 1,
                    "name": ref.name,
                    "type": ref.media_type,
                    "size": ref.size,
                    **progress,
                }
            )


_WINDOWS_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL"] + [f"{p}{n}" for p in ("COM", "LPT") for n in range(1, 10)]
)
MAX_DOWNLOAD_NAME = 200  # bytes of UTF-8


def download_name(name: str) -> str:
    """A file name chosen by a peer, made safe to save under: no folder separators,
    control or format characters (a right-to-left override makes "gpj.exe" read as
    "exe.jpg"), no leading dots (hidden files) or trailing dots and spaces, no name
    Windows reserves, at most MAX_DOWNLOAD_NAME bytes; "file" if nothing is left."""
    kept = "".join(
        "_" if c in '/\\:*?"<>|' or unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c
        for c in name
    )
    kept = kept.strip().lstrip(".").rstrip(". ")
    if kept.partition(".")[0].upper() in _WINDOWS_RESERVED:
        kept = "_" + kept
    clipped = kept.encode("utf-8")[:MAX_DOWNLOAD_NAME].decode("utf-8", errors="ignore")
    return clipped.rstrip(". ") or "file"
