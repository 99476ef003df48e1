"""Ranges sent whole (spec/sync.md section 3, type 18 field 3; section 4, point 11).

A moments message that carries a range names it, a span: (author, epoch, first, last),
the envelopes in it being all the sender holds of that range. A receiver takes a range
only if it continues what it holds: one that starts further on means a range sent
before never reached it (or it could not take it), and it asks for it again instead of
storing past the hole. Holdings so stay gap-free, and the maximum exact, whatever
is lost on the way.
"""

from __future__ import annotations

from collections.abc import Sequence

from p2pmoments.core.replication.messages import Moments, Span
from p2pmoments.core.replication.vectors import Send, SendRange

__all__ = ["covered", "range_batches"]


def range_batches(
    action: SendRange, epoch: int, items: Sequence[tuple[int, bytes]], max_batch: int
) -> list[Send]:
    """Moments messages for the (seq, envelope) `items` of `action`'s range in `epoch`, at
    most `max_batch` bytes of envelopes each, each naming the part of the range it covers
    (the last one up to the range's end; a range with nothing in it is one empty message)."""
    out: list[Send] = []
    batch: list[bytes] = []
    size, start, prev = 0, action.first, action.first - 1
    for seq, envelope in items:
        if size + len(envelope) > max_batch and batch:
            span = (action.author, epoch, start, prev)
            out.append(
                Send(action.peer, Moments(circle=action.circle, envelopes=tuple(batch), span=span))
            )
            batch, size, start = [], 0, prev + 1
        batch.append(envelope)
        size += len(envelope)
        prev = seq
    span = (action.author, epoch, start, max(action.last, prev))
    out.append(Send(action.peer, Moments(circle=action.circle, envelopes=tuple(batch), span=span)))
    return out


def covered(span: Span, source: bytes) -> tuple[bytes, int, int] | None:
    """(author, last, epoch) held once a span's envelopes are stored, beyond the envelopes
    themselves: only its author may say that nothing else exists up to its end (a relay's
    word would let it hide others' moments); None if it says nothing more."""
    author, epoch, _, last = span
    return (author, last, epoch) if source == author else None
