"""A reaction is exactly one emoji (issue 10, item 21), through the API too."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from p2pmoments.api import API_PREFIX, create_app
from p2pmoments.errors import UserInputError
from p2pmoments.node import Node
from p2pmoments.reactions import check_emoji
from p2pmoments.views import moment_text
from tests.test_api import AUTH, TOKEN, error_of, spec_check

ONE = [
    "🎉",
    "❤️",
    "❤",  # text-style heart, as some keyboards type it
    "👍🏽",
    "👨\u200d👩\u200d👧",
    "👩🏽\u200d💻",
    "🏳️\u200d🌈",
    "🇫🇷",
    "1️⃣",
    "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",
]
NOT_ONE = ["great", "a", "🎉🎉", "❤️❤️", "👍 x", "#", "1", "⌘", "🇫", "\u200d", "🎉\u200b", "", " "]


@pytest.mark.parametrize("emoji", ONE)
def test_one_emoji_is_a_reaction(emoji: str) -> None:
    assert check_emoji(f" {emoji} ") == emoji


@pytest.mark.parametrize("text", NOT_ONE)
def test_words_and_several_emoji_are_not(text: str) -> None:
    with pytest.raises(UserInputError, match="one emoji"):
        check_emoji(text)


async def test_the_api_takes_one_emoji_and_refuses_the_rest(
    node: Node, aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]]
) -> None:
    await node.circles.create("family", [], members_can_post=False)
    post = moment_text((await node.posting.post("family", "hi")).id)
    app = create_app(node, TOKEN)
    app.middlewares.insert(0, spec_check)
    client = await aiohttp_client(app)
    url = f"{API_PREFIX}/moments/{post}/reactions"
    for text in ("great", "🎉🎉", "👍 👍"):
        refused = await client.post(url, json={"emoji": text}, headers=AUTH)
        assert refused.status == 400
        assert "one emoji" in (await error_of(refused))["message"]
    taken = await client.post(url, json={"emoji": "👍🏽"}, headers=AUTH)
    assert taken.status == 201
    assert (await taken.json())["reactions"] == {"👍🏽": ["Alice"]}
