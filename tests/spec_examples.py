"""The worked examples of spec/moments.md, from fixed inputs.

    .venv/bin/python -m tests.spec_examples > spec/examples/moments.json

tests/test_spec_examples.py regenerates them and compares byte for byte.
"""

from __future__ import annotations

import json
from typing import Any

from p2pmoments.core.blobs import BlobKind, encrypt_blob
from p2pmoments.core.crypto import LinkSecretKey, SigningKey
from p2pmoments.core.identity import Identity, link_key_message
from p2pmoments.core.manifest import Member, create_manifest
from p2pmoments.core.moment import Content, Kind, seal_moment

OWNER_SEED, OWNER_LINK = bytes([1]) * 32, bytes([2]) * 32
MEMBER_SEED, MEMBER_LINK = bytes([3]) * 32, bytes([4]) * 32
CIRCLE_ID, EPOCH_KEY = bytes([5]) * 32, bytes([6]) * 32
NONCE, BLOB_KEY = bytes([7]) * 24, bytes([8]) * 32
TIME = 1_800_000_000


def identity(seed: bytes, link: bytes) -> Identity:
    signing, secret = SigningKey(seed), LinkSecretKey(link)
    signature = signing.sign(link_key_message(signing.verify_key, secret.public_key))
    return Identity(signing_key=signing, link_secret=secret, link_signature=signature)


def build(manifest_raw: bytes | None = None) -> dict[str, Any]:
    """The examples; pass the stored manifest to reuse its (randomly) sealed keys."""
    from p2pmoments.core.manifest import decode_manifest

    owner, member = identity(OWNER_SEED, OWNER_LINK), identity(MEMBER_SEED, MEMBER_LINK)
    manifest = (
        decode_manifest(manifest_raw)
        if manifest_raw
        else create_manifest(
            owner,
            circle_id=CIRCLE_ID,
            epoch=0,
            name="family",
            members=[Member(verify_key=member.public.verify_key, link_key=member.public.link_key)],
            members_can_post=True,
            created=TIME,
            key=EPOCH_KEY,
        )
    )
    blob, chunks = encrypt_blob(
        b"sunscreen\n", key=BLOB_KEY, kind=BlobKind.FILE, media_type="text/plain", name="notes.txt"
    )
    moment = seal_moment(
        member,
        manifest,
        EPOCH_KEY,
        seq=1,
        time=TIME + 60,
        nonce=NONCE,
        content=Content(kind=Kind.POST, text="ice cream!", blobs=(blob,)),
    )
    return {
        "inputs": {
            "owner_ed25519_seed": OWNER_SEED.hex(),
            "owner_x25519_secret": OWNER_LINK.hex(),
            "member_ed25519_seed": MEMBER_SEED.hex(),
            "member_x25519_secret": MEMBER_LINK.hex(),
            "circle_id": CIRCLE_ID.hex(),
            "epoch_key": EPOCH_KEY.hex(),
            "moment_nonce": NONCE.hex(),
            "blob_key": BLOB_KEY.hex(),
            "time": TIME,
        },
        "manifest": manifest.raw.hex(),
        "moment_envelope": moment.envelope.hex(),
        "moment_id": moment.id.hex(),
        "blob_chunk_address": chunks[0][0].hex(),
        "blob_chunk": chunks[0][1].hex(),
    }


if __name__ == "__main__":
    print(json.dumps(build(), indent=2))
