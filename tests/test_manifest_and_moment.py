"""Circles and moments in the pure core: round trips, tampering, membership, epochs."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pmoments.core import wire
from p2pmoments.core.blobs import BIG_CHUNK_SIZE, MAX_BLOB, BlobKind, encrypt_blob
from p2pmoments.core.errors import RejectedError
from p2pmoments.core.identity import Identity
from p2pmoments.core.manifest import (
    Manifest,
    Member,
    create_manifest,
    decode_manifest,
    epoch_key,
    new_circle_id,
    new_epoch_key,
)
from p2pmoments.core.moment import (
    MOMENT_CONTEXT,
    Content,
    Kind,
    moment_id,
    open_moment,
    seal_moment,
)

ALICE, BOB, CAROL, EVE = (Identity.generate() for _ in range(4))
CIRCLE = bytes(range(32))


def member(identity: Identity) -> Member:
    return Member(verify_key=identity.public.verify_key, link_key=identity.public.link_key)


def manifest(
    *members: Identity, epoch: int = 0, can_post: bool = True, key: bytes | None = None
) -> tuple[Manifest, bytes]:
    key = key or new_epoch_key()
    return create_manifest(
        ALICE,
        circle_id=CIRCLE,
        epoch=epoch,
        name="family",
        members=[member(m) for m in members],
        members_can_post=can_post,
        created=1_800_000_000,
        key=key,
    ), key


def reader(*manifests: Manifest):  # type: ignore[no-untyped-def]
    table = {(m.circle_id, m.epoch): m for m in manifests}
    return lambda circle, epoch: table.get((circle, epoch))


def opener(identity: Identity):  # type: ignore[no-untyped-def]
    return lambda m: epoch_key(m, identity)


def post(author: Identity, m: Manifest, key: bytes, text: str = "ice cream!", seq: int = 1):  # type: ignore[no-untyped-def]
    return seal_moment(
        author, m, key, seq=seq, time=1_800_000_100, content=Content(kind=Kind.POST, text=text)
    )


@given(text=st.text(max_size=300), seq=st.integers(0, 2**40))
@settings(max_examples=50)
def test_every_member_opens_what_a_member_posts(text: str, seq: int) -> None:
    m, key = manifest(BOB, CAROL)
    moment = post(BOB, m, key, text, seq)
    for who in (ALICE, BOB, CAROL):
        opened = open_moment(moment.envelope, reader(m), opener(who))
        assert opened.content.text == text
        assert opened.author == BOB.public.verify_key
        assert opened.seq == seq
        assert opened.id == moment.id == moment_id(moment.envelope)


def test_a_manifest_survives_encoding_and_lists_the_owner() -> None:
    m, key = manifest(BOB)
    again = decode_manifest(m.raw)
    assert again == m
    assert again.is_member(ALICE.public.verify_key)
    assert epoch_key(again, BOB) == key


def test_non_members_cannot_open_the_key_or_the_moment() -> None:
    m, key = manifest(BOB)
    with pytest.raises(RejectedError, match="not a member"):
        epoch_key(m, EVE)
    moment = post(BOB, m, key)
    with pytest.raises(RejectedError):
        open_moment(moment.envelope, reader(m), opener(EVE))


def test_a_removed_member_cannot_open_anything_of_the_new_epoch() -> None:
    old, old_key = manifest(BOB, CAROL, epoch=0)
    new, new_key = manifest(BOB, epoch=1)  # Carol removed
    assert new_key != old_key
    with pytest.raises(RejectedError):
        epoch_key(new, CAROL)
    moment = post(BOB, new, new_key)
    with pytest.raises(RejectedError):
        open_moment(moment.envelope, reader(old, new), opener(CAROL))
    # What Carol already had stays readable to her.
    assert open_moment(post(BOB, old, old_key).envelope, reader(old, new), opener(CAROL))


@settings(max_examples=200)
@given(data=st.data())
def test_any_flipped_byte_of_an_envelope_is_rejected(data: st.DataObject) -> None:
    m, key = manifest(BOB)
    envelope = bytearray(post(BOB, m, key).envelope)
    pos = data.draw(st.integers(0, len(envelope) - 1))
    envelope[pos] ^= data.draw(st.integers(1, 255))
    with pytest.raises(RejectedError):
        open_moment(bytes(envelope), reader(m), opener(ALICE))


@settings(max_examples=100)
@given(data=st.data())
def test_any_flipped_byte_of_a_manifest_is_rejected(data: st.DataObject) -> None:
    m, _ = manifest(BOB)
    raw = bytearray(m.raw)
    pos = data.draw(st.integers(0, len(raw) - 1))
    raw[pos] ^= data.draw(st.integers(1, 255))
    with pytest.raises(RejectedError):
        decode_manifest(bytes(raw))


@given(garbage=st.binary(max_size=500))
def test_hostile_bytes_are_rejected_never_crash(garbage: bytes) -> None:
    m, _ = manifest(BOB)
    with pytest.raises(RejectedError):
        open_moment(garbage, reader(m), opener(ALICE))
    with pytest.raises(RejectedError):
        decode_manifest(garbage)


def test_a_non_member_author_is_rejected_even_with_a_valid_signature() -> None:
    m, key = manifest(BOB)
    eve_view, _ = manifest(BOB, EVE, key=key)  # Eve forges membership in her own copy
    forged = post(EVE, eve_view, key)
    with pytest.raises(RejectedError, match="not a member"):
        open_moment(forged.envelope, reader(m), opener(ALICE))


def test_a_manifest_not_signed_by_its_owner_is_rejected() -> None:
    m, _key = manifest(BOB)
    outer = wire.decode_map(m.raw, max_size=1 << 16)
    forged = wire.encode_map({1: outer[1], 2: EVE.signing_key.sign(b"x")})
    with pytest.raises(RejectedError, match="not signed by its owner"):
        decode_manifest(forged)


def test_an_unknown_epoch_is_rejected() -> None:
    m, key = manifest(BOB, epoch=3)
    moment = post(BOB, m, key)
    with pytest.raises(RejectedError, match="unknown circle or epoch"):
        open_moment(moment.envelope, reader(), opener(ALICE))


def test_members_cannot_post_in_an_owner_only_circle_but_may_comment() -> None:
    m, key = manifest(BOB, can_post=False)
    with pytest.raises(RejectedError, match="only the owner"):
        post(BOB, m, key)
    original = post(ALICE, m, key)
    comment = seal_moment(
        BOB,
        m,
        key,
        seq=1,
        time=1,
        content=Content(kind=Kind.COMMENT, text="lovely", reply_to=original.id),
    )
    assert open_moment(comment.envelope, reader(m), opener(ALICE)).content.reply_to == original.id


@pytest.mark.parametrize("kind", [Kind.COMMENT, Kind.REACTION, Kind.RETRACTION])
def test_only_a_post_carries_a_file_not_a_members_comment_in_an_owner_only_circle(
    kind: Kind, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 22: a plain member's comment naming a file of 1 TiB made every member follow
    its index. Sealed as a hostile daemon would (our own refuses to), it is refused."""
    m, key = manifest(BOB, can_post=False)
    original = post(ALICE, m, key)
    huge, _ = encrypt_blob(b"x" * 10, kind=BlobKind.FILE, media_type="", name="f")
    huge = replace(huge, size=MAX_BLOB)  # the claim: its index is never checked here
    huge = replace(huge, chunk_size=BIG_CHUNK_SIZE, chunks=(), index=(bytes(32),) * 128)
    content = Content(
        kind=kind,
        text="look" if kind is Kind.COMMENT else "",
        emoji="👍" if kind is Kind.REACTION else "",
        reply_to=None if kind is Kind.RETRACTION else original.id,
        target=original.id if kind is Kind.RETRACTION else None,
        blobs=(huge,),
    )
    with pytest.raises(RejectedError, match="only a post carries photos and files"):
        seal_moment(BOB, m, key, seq=1, time=1, content=content)
    monkeypatch.setattr("p2pmoments.core.moment._check_content", lambda content: None)
    sealed = seal_moment(BOB, m, key, seq=1, time=1, content=content)
    monkeypatch.undo()
    with pytest.raises(RejectedError, match="only a post carries photos and files"):
        open_moment(sealed.envelope, reader(m), opener(ALICE))


def test_a_plaintext_author_different_from_the_signer_is_rejected() -> None:
    """Bob re-signs Carol's content as his own: the repeated author gives him away."""
    m, key = manifest(BOB, CAROL)
    carol_moment = post(CAROL, m, key, "mine")
    outer = wire.decode_map(carol_moment.envelope, max_size=1 << 16)
    fields = wire.decode_map(outer[1], max_size=1 << 16)
    from p2pmoments.core.crypto import xaead_decrypt, xaead_encrypt

    header = {k: fields[k] for k in range(1, 8)}
    plaintext = xaead_decrypt(key, fields[7], wire.encode_map(header), fields[8])
    header[4] = bytes(BOB.public.verify_key)
    ciphertext = xaead_encrypt(key, fields[7], wire.encode_map(header), plaintext)
    body = wire.encode_map({**header, 8: ciphertext})
    stolen = wire.encode_map({1: body, 2: BOB.signing_key.sign(MOMENT_CONTEXT + body)})
    with pytest.raises(RejectedError, match="another author"):
        open_moment(stolen, reader(m), opener(ALICE))


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (Content(kind=Kind.POST, text="x" * 20_000), "text over"),
        (Content(kind=Kind.COMMENT, text="no target"), "answer a moment"),
        (Content(kind=Kind.REACTION, reply_to=bytes(32)), "one short emoji"),
        (Content(kind=Kind.RETRACTION), "names its target"),
        (Content(kind=Kind.POST, reply_to=bytes(32)), "answer a moment"),
    ],
)
def test_malformed_content_is_refused_when_sealing(content: Content, reason: str) -> None:
    m, key = manifest(BOB)
    with pytest.raises(RejectedError, match=reason):
        seal_moment(BOB, m, key, seq=1, time=1, content=content)


def test_ids_are_unique_per_envelope() -> None:
    m, key = manifest(BOB)
    ids = {post(BOB, m, key, "same").id for _ in range(20)}
    assert len(ids) == 20  # fresh nonces: the same text twice is two moments
    assert len(new_circle_id()) == 32
