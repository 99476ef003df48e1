"""Profile pictures (issue 20, item 10; spec/identity.md section 5): the checks of a
peer's picture and of the picture messages, fuzzed; the picture we make of what the
person chose; and two daemons: Alice sets a picture, Bob's API serves it, and after
she removes it, her letter again."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from p2pmoments.api import API_PREFIX, create_app
from p2pmoments.core.picture import (
    MAX_PICTURE,
    BadPictureMessage,
    Head,
    decode_picture_message,
    digest_of,
    newer,
)
from p2pmoments.errors import UserInputError
from p2pmoments.friends import identity_text
from p2pmoments.node import Node
from p2pmoments.pictures import SIDE, BadPicture, check_picture, make_picture
from tests.multinode import befriend, eventually, make_home, random_png, running, until
from tests.test_api import AUTH, TOKEN, spec_check
from tests.test_devices import second_device, sighted

Client = TestClient[Any, Any]


def image(format: str, size: tuple[int, int], **save: Any) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 80, 40)).save(out, format=format, **save)
    return out.getvalue()


def noise_jpeg() -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(random_png(256))).save(out, format="JPEG", quality=90)
    return out.getvalue()


# --- a peer's picture ------------------------------------------------------------------


def test_a_small_jpeg_or_webp_is_a_picture() -> None:
    assert check_picture(image("JPEG", (256, 256))) == "image/jpeg"
    assert check_picture(image("WEBP", (256, 256))) == "image/webp"


@pytest.mark.parametrize(
    "data",
    [
        b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
        image("PNG", (64, 64)),  # a type a picture never is
        image("GIF", (64, 64)),
        image("JPEG", (4000, 300), quality=5),  # too wide, though small in bytes
        noise_jpeg()[:3000],  # cut short: the header reads, the pixels do not
        b"",
        image("JPEG", (256, 256)) + bytes(MAX_PICTURE),  # too many bytes
    ],
    ids=["svg", "png", "gif", "huge-dimensions", "truncated", "empty", "too-long"],
)
def test_a_hostile_picture_is_refused(data: bytes) -> None:
    with pytest.raises(BadPicture):
        check_picture(data)


def test_an_animated_webp_is_refused() -> None:
    out = io.BytesIO()
    frames = [Image.new("RGB", (32, 32), c) for c in ("red", "blue")]
    frames[0].save(out, format="WEBP", save_all=True, append_images=frames[1:])
    with pytest.raises(BadPicture):
        check_picture(out.getvalue())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.binary(max_size=2048)
    | st.builds(
        lambda b, n: image("WEBP", (8, 8))[:n] + b, st.binary(max_size=64), st.integers(0, 60)
    )
)
def test_fuzz_check_picture_raises_only_its_own_error(data: bytes) -> None:
    with contextlib.suppress(BadPicture):
        check_picture(data)


values = st.one_of(
    st.integers(-(2**64), 2**64), st.binary(max_size=40), st.text(max_size=4), st.none()
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([31, 32, 33, 0]), st.dictionaries(st.integers(1, 3), values, max_size=3))
def test_fuzz_picture_messages_raise_only_their_own_error(kind: int, rest: dict[int, Any]) -> None:
    with contextlib.suppress(BadPictureMessage):
        decode_picture_message({0: kind, **rest})


def test_the_later_head_wins_and_devices_agree_on_a_tie() -> None:
    a, b = digest_of(b"a"), digest_of(b"b")
    assert newer(None, Head(1, a))
    assert newer(Head(1, a), Head(2, None))  # a later removal wins
    assert not newer(Head(2, None), Head(1, a))  # an older picture heard later does not
    assert newer(Head(1, min(a, b)), Head(1, max(a, b)))
    assert not newer(Head(1, max(a, b)), Head(1, min(a, b)))


# --- the picture we make ----------------------------------------------------------------


def test_our_picture_is_a_small_square_webp_with_no_metadata() -> None:
    exif = Image.Exif()
    exif[0x010F] = "a camera maker"
    out = io.BytesIO()
    Image.new("RGB", (1200, 800), "green").save(out, format="JPEG", exif=exif.tobytes())
    for chosen in (out.getvalue(), random_png(1000)):
        media_type, data = make_picture(chosen)
        assert media_type == "image/webp"
        assert len(data) <= MAX_PICTURE
        made = Image.open(io.BytesIO(data))
        assert made.size == (SIDE, SIDE)
        assert not made.getexif()
        assert "icc_profile" not in made.info
        assert check_picture(data) == "image/webp"  # a peer would take it


def test_what_is_not_an_image_is_not_made_a_picture() -> None:
    with pytest.raises(UserInputError, match="not a picture"):
        make_picture(b"hello, this is text")


# --- two daemons ------------------------------------------------------------------------


@pytest.fixture
async def clients(
    pair_of_nodes: tuple[Node, Node], aiohttp_client: Callable[..., Awaitable[Client]]
) -> tuple[Client, Client]:
    out = []
    for node in pair_of_nodes:
        app = create_app(node, TOKEN)
        app.middlewares.insert(0, spec_check)
        out.append(await aiohttp_client(app))
    return out[0], out[1]


async def test_a_friend_sees_alices_picture_and_her_letter_once_she_removes_it(
    clients: tuple[Client, Client], pair_of_nodes: tuple[Node, Node]
) -> None:
    alice, bob = pair_of_nodes
    alice_api, bob_api = clients
    await befriend(alice, bob)
    await eventually(lambda: alice.person in bob.links.linked(), what="Bob linked to Alice")
    alice_id = identity_text(alice.person)

    answer = await alice_api.put(
        f"{API_PREFIX}/profile/picture",
        data=random_png(600),
        headers=AUTH | {"Content-Type": "image/png"},
    )
    assert answer.status == 200, await answer.text()
    digest = (await answer.json())["digest"]

    async def bobs_pictures() -> dict[str, str]:
        response = await bob_api.get(f"{API_PREFIX}/pictures", headers=AUTH)
        pictures: dict[str, str] = (await response.json())["pictures"]
        return pictures

    async def held() -> bool:
        return (await bobs_pictures()).get(alice_id) == digest

    await until(bob, held, what="Bob to hold Alice's picture")
    served = await bob_api.get(f"{API_PREFIX}/people/{alice_id}/picture", headers=AUTH)
    assert served.status == 200
    assert served.headers["Content-Type"] == "image/webp"
    assert served.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in served.headers["Content-Security-Policy"]
    assert digest_of(await served.read()).hex() == digest

    removed = await alice_api.delete(f"{API_PREFIX}/profile/picture", headers=AUTH)
    assert removed.status == 200

    async def gone() -> bool:
        return alice_id not in await bobs_pictures()

    await until(bob, gone, what="Bob to drop Alice's picture")
    served = await bob_api.get(f"{API_PREFIX}/people/{alice_id}/picture", headers=AUTH)
    assert served.status == 404


async def test_a_hostile_picture_from_a_friend_is_not_kept(
    pair_of_nodes: tuple[Node, Node],
) -> None:
    alice, bob = pair_of_nodes
    await befriend(alice, bob)
    await eventually(
        lambda: alice.person in bob.links.linked() and bob.person in alice.links.linked(),
        what="Alice and Bob linked",
    )
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'

    # Alice's daemon claims a picture, and sends an SVG's bytes under its digest when asked.
    def answer(key: bytes, body: dict[int, Any]) -> None:
        if body.get(0) == 32 and key == bob.person:
            alice.links.send(key, {0: 33, 1: svg})

    alice.on_message = answer
    assert alice.links.send(bob.person, {0: 31, 1: 2**31, 2: digest_of(svg)})
    await eventually(lambda: alice.person not in bob.links.linked(), what="Bob to drop Alice")
    assert alice.person not in bob.pictures.digests()
    assert await bob.pictures.picture(alice.person) is None


async def test_the_api_refuses_what_is_not_a_picture_with_a_clean_error(
    node: Node, aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    app = create_app(node, TOKEN)
    app.middlewares.insert(0, spec_check)
    api = await aiohttp_client(app)
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"/>'
    for body in (svg, b"just text", b""):
        answer = await api.put(
            f"{API_PREFIX}/profile/picture", data=body, headers=AUTH | {"Content-Type": "image/png"}
        )
        assert answer.status == 400
        assert (await answer.json())["error"]["code"] == "invalid"
    mine = identity_text(node.person)
    assert (await api.get(f"{API_PREFIX}/people/{mine}/picture", headers=AUTH)).status == 404
    assert (await api.get(f"{API_PREFIX}/people/nobody/picture", headers=AUTH)).status == 400
    assert (await (await api.get(f"{API_PREFIX}/pictures", headers=AUTH)).json()) == {
        "pictures": {}
    }


@pytest.mark.timeout(120)
async def test_a_picture_chosen_on_one_device_is_the_persons_on_every_device_and_at_friends(
    tmp_path: Path,
) -> None:
    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob")]
    async with running(homes[0]) as laptop, running(homes[1]) as bob:
        await befriend(laptop, bob)
        async with second_device(tmp_path, laptop, "desktop") as desktop:
            sighted(laptop, desktop)
            await eventually(lambda: desktop.me in laptop.links.linked(), what="devices linked")
            head = await desktop.pictures.set(random_png(300))
            # The laptop takes it as its person's own, and passes it on to Bob.
            await eventually(
                lambda: laptop.pictures.digests().get(laptop.person) == head.digest,
                what="the laptop to hold the desktop's picture as Alice's",
            )
            await eventually(
                lambda: bob.pictures.digests().get(laptop.person) == head.digest,
                what="Bob to hold Alice's picture",
            )
            held = await bob.pictures.picture(laptop.person)
            assert held is not None
            assert digest_of(held[1]) == head.digest
