"""Chats and what is new, in a real Chromium against real daemon processes (issue 20,
items 2-4): the order messages were sent in, unread counts kept by the daemon.
Skipped, saying why, where Chromium or Playwright is missing.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.browser import PHONE, launch, open_app, playwright, skip_reason
from tests.daemons import Daemon, cli, start_daemon, wait_for

pytestmark = [
    pytest.mark.process,
    pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""),
]


def person(daemons: list[Daemon], home: Path, name: str) -> Daemon:
    assert cli(home, "init", "--name", name).returncode == 0
    return start_daemon(daemons, home)


def friends(alice: Daemon, bob: Daemon) -> str:
    """Pair Bob with Alice; returns Bob's identity."""
    link = cli(alice.home, "qr", "--link").stdout.strip()
    assert cli(bob.home, "pair", link).returncode == 0, "pairing"
    # Bob's pairing ends when he is told; Alice records him a moment later.
    known = wait_for(
        lambda: alice.api("GET", "/friends")["friends"], timeout=10, what="Alice to know Bob"
    )
    return str(known[0]["identity"])


def chat(alice: Daemon, bob: Daemon, bob_id: str) -> str:
    """A conversation Alice starts with Bob, once it has reached Bob; returns its id."""
    circle = alice.api(
        "POST", "/circles", {"name": "Alice & Bob", "members": [bob_id], "kind": "conversation"}
    )
    wait_for(
        lambda: any(c["id"] == circle["id"] for c in bob.api("GET", "/circles")["circles"]),
        timeout=20,
        what="the conversation to reach Bob",
    )
    return str(circle["id"])


def at(page: Any, hash_: str) -> None:
    page.goto(page.url.split("#")[0] + hash_)


def start_of_a_second() -> None:
    """Wait until a second has just begun, so that what follows shares one."""
    wait_for(lambda: time.time() % 1 < 0.1, timeout=2, what="a new second")


WORDS = ["one", "two", "three", "four"]


@pytest.mark.timeout(200)
def test_four_messages_and_comments_sent_in_one_second_show_in_the_order_sent(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    alice = person(daemons, tmp_path / "alice", "Alice")
    bob = person(daemons, tmp_path / "bob", "Bob")
    circle = chat(alice, bob, friends(alice, bob))
    start_of_a_second()
    sent = [alice.api("POST", "/moments", {"circle": circle, "text": w}) for w in WORDS]
    first = sent[0]["id"]
    said = [alice.api("POST", f"/moments/{first}/comments", {"text": f"re {w}"}) for w in WORDS]
    assert len({m["time"] for m in sent + said}) == 1, "all in one second"
    wait_for(
        lambda: len(bob.api("GET", f"/moments/{first}")["comments"]) == 4,
        timeout=20,
        what="the comments to reach Bob",
    )
    with playwright() as p:
        browser = launch(p)
        for daemon in (alice, bob):
            page = open_app(browser, daemon.home)
            for _ in range(2):  # and again after a reload
                at(page, f"#/chat/{circle}")
                page.locator(".message", has_text="four").wait_for()
                assert page.locator(".thread .message .text").all_inner_texts() == WORDS
                at(page, f"#/feed/{circle}")
                comments = page.locator(".moment", has_text="re one").locator(".comment-text")
                comments.first.wait_for()
                assert comments.all_inner_texts() == [f"re {w}" for w in WORDS]
                texts = page.locator(".moment > article > .text").all_inner_texts()
                assert texts == WORDS[::-1]  # the feed: newest first
                page.reload()
                page.wait_for_selector("main .view-title")
            assert page.errors == []
        browser.close()


def badge(page: Any, name: str) -> Any:
    return page.locator(f"[data-unread={name}]")


@pytest.mark.timeout(240)
def test_unread_counts_agree_in_two_tabs_rise_live_and_clear_when_seen(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    alice = person(daemons, tmp_path / "alice", "Alice")
    bob = person(daemons, tmp_path / "bob", "Bob")
    bob_id = friends(alice, bob)
    conversation = chat(alice, bob, bob_id)
    family = alice.api("POST", "/circles", {"name": "family", "members": [bob_id]})["id"]
    wait_for(
        lambda: len(bob.api("GET", "/circles")["circles"]) == 2,
        timeout=20,
        what="the family circle to reach Bob",
    )
    with playwright() as p:
        browser = launch(p)
        chats, circles = open_app(browser, bob.home), open_app(browser, bob.home)
        at(chats, "#/chats")
        at(circles, "#/circles")
        chat_row = chats.locator(".row-link", has_text="Alice")
        family_row = circles.locator(".row-link", has_text="family")
        family_row.wait_for()
        assert badge(circles, "chats").is_hidden()
        assert badge(circles, "feed").is_hidden()

        # Alice writes to Bob and posts twice to the family: both tabs count, live.
        alice.api("POST", "/moments", {"circle": conversation, "text": "Dinner on Friday?"})
        alice.api("POST", "/moments", {"circle": family, "text": "The lake at dawn"})
        alice.api("POST", "/moments", {"circle": family, "text": "And at dusk"})
        chat_row.locator(".count", has_text="1").wait_for()
        family_row.locator(".count", has_text="2").wait_for()
        for page in (chats, circles):
            for name, said in (("chats", "1 unread"), ("feed", "2 unread")):
                wait_for(
                    lambda p=page, n=name, s=said: badge(p, n).text_content() == s,
                    timeout=10,
                    what=f"{said} on {name}",
                )
        # Bob's own post is never unread.
        bob.api("POST", "/moments", {"circle": conversation, "text": "Bob's own words"})
        assert {c["id"]: c["unread"] for c in bob.api("GET", "/unread")["circles"]} == {
            conversation: 1,
            family: 2,
        }

        # Bob reads the chat in one tab: the other tab's count clears too.
        chat_row.click()
        chats.locator(".message", has_text="Dinner on Friday?").wait_for()
        badge(circles, "chats").wait_for(state="hidden")
        badge(chats, "chats").wait_for(state="hidden")
        assert family_row.locator(".count").text_content() == "2 unread"

        # The feed says what is new since his last visit, and seeing it clears the rest.
        at(chats, "#/feed")
        chats.get_by_text("2 new since your last visit").wait_for()
        fresh = chats.locator(".moment.new .text").all_inner_texts()
        assert sorted(fresh) == ["And at dusk", "The lake at dawn"]
        assert chats.locator(".moment", has_text="Bob's own words").locator(".new-tag").count() == 0
        family_row.locator(".count").wait_for(state="detached")
        badge(circles, "feed").wait_for(state="hidden")

        # A later visit agrees: nothing is unread, nothing new.
        assert bob.api("GET", "/unread")["total"] == 0
        later = open_app(browser, bob.home)
        later.locator(".moment", has_text="And at dusk").wait_for()
        assert badge(later, "feed").is_hidden()
        assert badge(later, "chats").is_hidden()
        assert later.locator(".new-tag").count() == 0
        for page in (chats, circles, later):
            assert page.errors == []
        browser.close()


@pytest.mark.timeout(240)
def test_the_chat_list_and_a_conversation_read_as_a_messenger_does(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    alice = person(daemons, tmp_path / "alice", "Alice")
    bob = person(daemons, tmp_path / "bob", "Bob")
    conversation = chat(alice, bob, friends(alice, bob))
    alice.api("POST", "/circles", {"name": "family", "members": []})  # not a chat
    for n in range(1, 41):
        alice.api("POST", "/moments", {"circle": conversation, "text": f"message {n}"})
    wait_for(
        lambda: bob.api("GET", "/unread")["total"] == 40,
        timeout=20,
        what="Alice's forty messages at Bob's",
    )
    with playwright() as p:
        browser = launch(p)
        page = open_app(browser, bob.home, PHONE)
        at(page, "#/chats")
        # The list: who, the last message, its time, how many are unread.
        row = page.locator(".chat-row", has_text="Alice")
        row.locator(".last-message", has_text="message 40").wait_for()
        assert row.locator(".count").text_content() == "40 unread"
        assert row.locator("time").inner_text() == page.evaluate(
            "t => new Intl.DateTimeFormat(undefined, {hour: 'numeric', minute: '2-digit'})"
            ".format(new Date(t * 1000))",
            bob.api("GET", f"/moments?circle={conversation}&limit=1")["moments"][0]["time"],
        )

        # The conversation opens at its newest message, under a day separator, with no
        # name above each of Alice's bubbles (it is a chat of two).
        row.click()
        newest = page.locator(".message", has_text="message 40")
        newest.wait_for()
        wait_for(lambda: newest.evaluate(_IN_VIEW), timeout=10, what="the newest in view")
        assert not page.locator(".thread .message").first.evaluate(_IN_VIEW)  # the oldest shown
        assert page.locator(".thread .day").all_inner_texts() == ["Today"]
        assert page.locator(".thread .message .author").count() == 0

        # Bob answers; back in the list his answer is the last message, nothing unread.
        page.get_by_label("Message", exact=True).fill("On my way")
        page.get_by_label("Message", exact=True).press("Enter")
        page.locator(".message.mine", has_text="On my way").wait_for()
        at(page, "#/chats")
        row.locator(".last-message", has_text="You: On my way").wait_for()
        assert row.locator(".count").count() == 0

        # Days as a messenger names them.
        labels = page.evaluate("""async () => {
          const src = document.querySelector('script[type=module]').src;
          const dom = await import(new URL('dom.js', src));
          const now = new Date(2026, 11, 7, 15, 0).getTime() / 1000;
          return [0, 1, 3].map((d) => dom.dayLabel(now - d * 86400, now))
            .concat([dom.shortTime(now - 86400, now)]);
        }""")
        assert labels[:2] == ["Today", "Yesterday"]
        assert "4" in labels[2]  # Friday 4 December, in the browser's language
        assert labels[3] == "Yesterday"
        assert page.errors == []
        browser.close()


# Whether an element lies within its scrolling box and the window.
_IN_VIEW = """el => {
  const box = el.getBoundingClientRect();
  const port = el.closest('.thread-scroll').getBoundingClientRect();
  return box.bottom <= Math.min(port.bottom, innerHeight) + 1 && box.top >= port.top - 1;
}"""


@pytest.mark.timeout(240)
def test_a_member_of_an_owner_only_circle_is_told_who_posts_there(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    alice = person(daemons, tmp_path / "alice", "Alice")
    bob = person(daemons, tmp_path / "bob", "Bob")
    bob_id = friends(alice, bob)
    work = alice.api("POST", "/circles", {"name": "work", "members": [bob_id]})["id"]
    wait_for(lambda: bob.api("GET", "/circles")["circles"], timeout=20, what="work at Bob's")
    with playwright() as p:
        browser = launch(p)
        page = open_app(browser, bob.home)
        page.get_by_text("Only Alice posts in work.").wait_for()
        assert page.get_by_text("Make a circle to share in").count() == 0
        assert page.get_by_role("form", name="Share a moment").count() == 0

        # Bob makes a circle of his own: the app ticks "everyone may post" for him,
        # and it is an album, not a chat.
        at(page, "#/circles")
        assert page.get_by_role("checkbox", name="Everyone in it may post").is_checked()
        page.get_by_label("Name").fill("pub")
        page.get_by_role("checkbox", name="Alice").check()
        page.get_by_role("button", name="Make the circle").click()
        page.get_by_text("Members (2)").wait_for()
        pub = [c for c in bob.api("GET", "/circles")["circles"] if c["name"] == "pub"]
        assert pub[0]["members_can_post"] is True
        at(page, "#/chats")
        page.get_by_role("heading", name="Start a chat").wait_for()
        assert page.locator(".chat-row").count() == 0

        # Now he can share in pub, but work's own feed still says who posts there
        # rather than offer a composer aimed at another circle.
        at(page, "#/feed")
        page.get_by_role("form", name="Share a moment").wait_for()
        at(page, f"#/feed/{work}")
        page.get_by_text("Only Alice posts in work.").wait_for()
        assert page.get_by_role("form", name="Share a moment").count() == 0
        assert page.errors == []
        browser.close()


@pytest.mark.timeout(240)
def test_the_feed_counts_all_that_is_new_not_only_what_it_loaded(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    alice = person(daemons, tmp_path / "alice", "Alice")
    bob = person(daemons, tmp_path / "bob", "Bob")
    family = alice.api("POST", "/circles", {"name": "family", "members": [friends(alice, bob)]})
    for n in range(45):
        alice.api("POST", "/moments", {"circle": family["id"], "text": f"photo of the day {n}"})
    wait_for(lambda: bob.api("GET", "/unread")["total"] == 45, timeout=30, what="45 at Bob's")
    with playwright() as p:
        browser = launch(p)
        page = open_app(browser, bob.home)
        page.get_by_text("45 new since your last visit").wait_for()
        assert page.locator(".moment").count() < 45  # a page at a time, not all of them
        assert page.errors == []
        browser.close()
