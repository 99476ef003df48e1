"""What a daemon keeps of the moments a peer sends: one table (spec/moments.md §5, sync.md §1).

The envelope's own checks (structure, signature, membership of its epoch, who
may post, the content) happen when it is opened (core.moment.open_moment);
this table holds the rules that need more than the envelope: the message it
came in, who sent it, and the moments it answers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from p2pmoments.core.moment import Kind, Moment
from p2pmoments.core.replication.vectors import Membership
from p2pmoments.core.versions import refusal

__all__ = ["RULES", "Entry", "Rule", "Verdicts", "judge"]


@dataclass(frozen=True, slots=True)
class Entry:
    """What replication needs to know of a verified moment."""

    id: bytes
    circle: bytes
    author: bytes
    seq: int
    epoch: int
    kind: Kind
    reply_to: bytes | None
    target: bytes | None
    chunks: tuple[bytes, ...]  # every chunk its photos and files use (thumbnails too)
    size: int  # of the envelope
    parents: tuple[bytes, ...] = ()  # versions: those it follows (spec/moments.md §9)

    @classmethod
    def of(cls, moment: Moment) -> Entry:
        """The entry of an opened moment."""
        content = moment.content
        return cls(
            moment.id,
            moment.circle_id,
            bytes(moment.author),
            moment.seq,
            moment.epoch,
            content.kind,
            content.reply_to,
            content.target,
            tuple(a for ref in content.blobs for a in ref.addresses()) if content.blobs else (),
            len(moment.envelope),
            content.parents,
        )


@dataclass(frozen=True, slots=True)
class Context:
    """Where a batch of moments came from."""

    sender: bytes | None  # None: not from a peer (imported by the daemon itself)
    circle: bytes  # the circle its message names
    membership: Membership | None
    owners: Mapping[
        bytes, tuple[bytes, bytes]
    ]  # moment id -> (circle, author), held or in the batch
    # Versions (spec/moments.md §9): held moment id -> the post whose file it is a
    # version of (itself for a post, b"" for none); and versions held, by post.
    files: Mapping[bytes, bytes] = field(default_factory=dict)
    versions: Mapping[bytes, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Rule:
    """A rule a received moment must pass; `reason` is recorded when it does not."""

    name: str
    holds: Callable[[Entry, Context], bool]
    reason: str


def _answered(entry: Entry, ctx: Context) -> list[tuple[bytes, bytes] | None]:
    return [ctx.owners.get(r) for r in (entry.reply_to, entry.target) if r is not None]


RULES: tuple[Rule, ...] = (
    Rule(
        "scope",
        lambda e, ctx: (
            ctx.membership is not None
            and (ctx.sender is None or ctx.membership.in_latest(ctx.sender))
        ),
        "its sender is not in the circle's latest manifest",
    ),
    Rule(
        "one circle per message",
        lambda e, ctx: e.circle == ctx.circle,
        "a moment of another circle than its message",
    ),
    Rule(
        "answers its own circle",
        lambda e, ctx: all(o is None or o[0] == e.circle for o in _answered(e, ctx)),
        "it answers a moment of another circle",
    ),
    Rule(
        "only the author retracts",
        lambda e, ctx: (
            e.kind is not Kind.RETRACTION
            or e.target is None
            or e.target not in ctx.owners
            or ctx.owners[e.target][1] == e.author
        ),
        "only its author can retract a moment",
    ),
    Rule(
        "a version follows versions of its own file",
        lambda e, ctx: (
            e.kind is not Kind.VERSION
            or e.reply_to is None
            or refusal(e.reply_to, e.parents, ctx.files, ctx.versions.get(e.reply_to, 0)) is None
        ),
        "a version of a file that follows another file's, answers no post, or is one too many",
    ),
    Rule(
        "only the author edits",
        lambda e, ctx: (
            e.kind is not Kind.EDIT
            or e.target is None
            or e.target not in ctx.owners
            or ctx.owners[e.target][1] == e.author
        ),
        "only its author can edit a moment",
    ),
)


@dataclass(frozen=True, slots=True)
class Verdicts:
    """A batch judged: what to keep, and why the rest was refused (reason, size)."""

    accepted: list[Entry]
    rejected: list[tuple[str, int]]


def _file_of(entry: Entry) -> bytes:
    if entry.kind is Kind.POST:
        return entry.id
    if entry.kind is Kind.VERSION and entry.reply_to is not None:
        return entry.reply_to
    return b""


def judge(entries: Sequence[Entry], ctx: Context) -> Verdicts:
    """Apply RULES to each entry, in order; the first rule broken is the reason."""
    owners = {**ctx.owners, **{e.id: (e.circle, e.author) for e in entries}}
    files = {**ctx.files, **{e.id: _file_of(e) for e in entries}}
    ctx = Context(
        sender=ctx.sender,
        circle=ctx.circle,
        membership=ctx.membership,
        owners=owners,
        files=files,
        versions=ctx.versions,
    )
    accepted, rejected = [], []
    for entry in entries:
        broken = next((r for r in RULES if not r.holds(entry, ctx)), None)
        if broken is None:
            accepted.append(entry)
        else:
            rejected.append((broken.reason, entry.size))
    return Verdicts(accepted, rejected)
