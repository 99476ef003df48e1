"""spec/examples/moments.json is what the code produces from the same fixed inputs."""

from __future__ import annotations

import json
from pathlib import Path

from p2pmoments.core.manifest import decode_manifest, epoch_key
from p2pmoments.core.moment import open_moment
from tests.spec_examples import EPOCH_KEY, MEMBER_LINK, MEMBER_SEED, build, identity

EXAMPLES = Path(__file__).parent.parent / "spec" / "examples" / "moments.json"


def test_the_published_examples_are_regenerated_byte_for_byte() -> None:
    published = json.loads(EXAMPLES.read_text())
    assert build(bytes.fromhex(published["manifest"])) == published


def test_the_example_manifest_and_moment_open_for_the_member() -> None:
    published = json.loads(EXAMPLES.read_text())
    manifest = decode_manifest(bytes.fromhex(published["manifest"]))
    member = identity(MEMBER_SEED, MEMBER_LINK)
    assert epoch_key(manifest, member) == EPOCH_KEY
    moment = open_moment(
        bytes.fromhex(published["moment_envelope"]),
        lambda c, e: manifest,
        lambda m: epoch_key(m, member),
    )
    assert moment.content.text == "ice cream!"
    assert moment.id.hex() == published["moment_id"]
