"""People and circles in a real Chromium against real daemon processes (issue 20, items
12 and 13): both sides of a pairing are told, the camera stops looking once it has a
code, and a removed member sees that she is no longer one. Skipped, saying why, where
Chromium or Playwright is missing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser import DESKTOP, PHONE, launch, open_app, playwright, qr_video, skip_reason
from tests.daemons import Daemon, cli, wait_for
from tests.test_chats_browser import at, friends, person

pytestmark = [
    pytest.mark.process,
    pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""),
]


@pytest.mark.timeout(240)
def test_showing_a_code_tells_who_just_became_a_friend_and_the_camera_stops_looking(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    alice = person(daemons, tmp_path / "alice", "Alice")
    person(daemons, tmp_path / "bob", "Bob")
    person(daemons, tmp_path / "carol", "Carol")
    with playwright() as p:
        browser = launch(p)
        page = open_app(browser, alice.home)
        at(page, "#/pair")
        link_box = page.locator("[data-pairing-link]")
        wait_for(lambda: link_box.input_value().startswith("P2PM:"), timeout=10, what="a code")
        first = link_box.input_value()

        # Bob scans Alice's code (here, with his command line): Alice is told, not only Bob.
        assert cli(tmp_path / "bob", "pair", first).returncode == 0
        page.get_by_text("You and Bob are now friends").wait_for()
        page.get_by_role("button", name="Chat with Bob").wait_for()

        # Carol scans the fresh code with her camera: she is told, and the scanner no
        # longer says it is looking; Alice is told again.
        wait_for(lambda: link_box.input_value() not in ("", first), timeout=10, what="a new code")
        video = qr_video(link_box.input_value(), tmp_path / "code.y4m")
        camera = launch(
            p,
            "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-video-capture={video}",
        )
        carol = open_app(camera, tmp_path / "carol", permissions=["camera"])
        at(carol, "#/pair")
        carol.get_by_role("button", name="Scan with the camera").click()
        carol.get_by_text("You and Alice are now friends").wait_for(timeout=30_000)
        assert carol.locator(".scan-status").inner_text() == "Got their code."
        page.get_by_text("You and Carol are now friends").wait_for()
        for each in (page, carol):
            assert each.errors == []
        camera.close()
        browser.close()


@pytest.mark.timeout(240)
def test_a_removed_member_sees_she_is_no_longer_one_and_her_feed_says_so_once(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    alice = person(daemons, tmp_path / "alice", "Alice")
    bob = person(daemons, tmp_path / "bob", "Bob")
    bob_id = friends(alice, bob)
    work = alice.api("POST", "/circles", {"name": "work", "members": [bob_id]})["id"]
    alice.api("POST", "/moments", {"circle": work, "text": "The plan for Monday"})
    wait_for(lambda: bob.api("GET", "/moments")["moments"], timeout=20, what="work's post at Bob's")
    with playwright() as p:
        browser = launch(p)
        page = open_app(browser, bob.home)
        at(page, f"#/circle/{work}")
        page.get_by_text("Members (2)").wait_for()
        alice.api("PATCH", f"/circles/{work}", {"remove": [bob_id]})

        # His circle page, live: no longer a member, not listed as one, nothing to delete.
        page.get_by_role("heading", name="You are no longer a member of work").wait_for()
        assert page.get_by_text("Bob (you)").count() == 0
        assert page.get_by_text("Members (2)").count() == 0
        page.get_by_text("Its members when you were removed (1)").wait_for()
        assert page.get_by_role("button", name="Delete this circle").count() == 0
        page.get_by_role("button", name="Forget this circle and what you received").wait_for()
        assert page.get_by_role("checkbox", name="Everyone in it may post").count() == 0

        # His feed says so once, above what he keeps; dismissed, it stays gone.
        at(page, "#/feed")
        page.locator(".moment", has_text="The plan for Monday").wait_for()
        said = page.get_by_text("Alice removed you from work.")
        said.wait_for()
        assert said.count() == 1
        page.locator(".removal").get_by_role("button", name="OK").click()
        said.wait_for(state="detached")
        page.reload()
        page.locator(".moment", has_text="The plan for Monday").wait_for()
        assert said.count() == 0
        assert page.errors == []
        browser.close()


@pytest.mark.timeout(120)
def test_on_a_phone_my_code_and_scan_are_two_tabs(tmp_path: Path, daemons: list[Daemon]) -> None:
    alice = person(daemons, tmp_path / "alice", "Alice")
    with playwright() as p:
        browser = launch(p)
        page = open_app(browser, alice.home, PHONE)
        at(page, "#/pair")
        code = page.get_by_role("heading", name="Show your code")
        scan = page.get_by_role("heading", name="Scan their code")
        my_tab = page.get_by_role("button", name="My code", exact=True)
        scan_tab = page.get_by_role("button", name="Scan", exact=True)
        code.wait_for()
        assert scan.is_hidden()
        assert my_tab.get_attribute("aria-pressed") == "true"
        scan_tab.click()
        scan.wait_for()
        assert code.is_hidden()
        assert scan_tab.get_attribute("aria-pressed") == "true"
        page.get_by_role("button", name="Scan with the camera").wait_for()

        # On a wide screen both are there, side by side, and no tabs.
        page.set_viewport_size(DESKTOP)
        code.wait_for()
        assert scan.is_visible()
        assert scan_tab.is_hidden()
        assert page.errors == []
        browser.close()
