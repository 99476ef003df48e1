"""Accessibility (issue 20, item 19): axe-core (tests/vendor/axe-core, MPL-2.0, test only)
run in Chromium on every view of the web app, light and dark, phone and desktop, finds
no violation. Skipped, saying why, where Chromium or Playwright is missing.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from p2pmoments.client import ApiClient
from p2pmoments.paths import resolve_paths
from tests.browser import DESKTOP, PHONE, launch, login_url, playwright, skip_reason
from tests.daemons import Daemon, cli, start_daemon, wait_for

pytestmark = [
    pytest.mark.process,
    pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""),
]

AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"


def picture() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (640, 480), (200, 140, 90)).save(out, format="JPEG")
    return out.getvalue()


def a_week_of_moments(daemons: list[Daemon], tmp_path: Path) -> tuple[Daemon, dict[str, str]]:
    """Alice and Bob, friends, with an album, a chat and reactions: every view has
    something to show. Returns Alice and the addresses of the views."""
    homes = {name: tmp_path / name.lower() for name in ("Alice", "Bob")}
    for name, home in homes.items():
        assert cli(home, "init", "--name", name).returncode == 0
    alice, bob = (start_daemon(daemons, home) for home in homes.values())
    link = cli(alice.home, "qr", "--link").stdout.strip()
    assert cli(bob.home, "pair", link).returncode == 0
    bob_id = wait_for(
        lambda: (alice.api("GET", "/friends")["friends"] or [None])[0],
        timeout=20,
        what="Alice to know Bob",
    )["identity"]
    family = alice.api(
        "POST", "/circles", {"name": "family", "members": [bob_id], "members_can_post": True}
    )["id"]
    chat = alice.api(
        "POST", "/circles", {"name": "Alice & Bob", "members": [bob_id], "members_can_post": True}
    )["id"]
    wait_for(
        lambda: len(bob.api("GET", "/circles")["circles"]) == 2,
        timeout=20,
        what="the circles to reach Bob",
    )
    client = ApiClient(resolve_paths(alice.home))
    post = client.post_multipart(
        "/moments",
        {"circle": family, "text": "the lake"},
        [("photo", "p.jpg", picture(), "image/jpeg")],
    )
    alice.api("POST", f"/moments/{post['id']}/reactions", {"emoji": "🎉"})
    alice.api("POST", f"/moments/{post['id']}/comments", {"text": "what a day"})
    bob.api("POST", "/moments", {"circle": family, "text": "lovely"})
    alice.api("POST", "/moments", {"circle": chat, "text": "see you at six"})
    bob.api("POST", "/moments", {"circle": chat, "text": "yes!"})
    wait_for(
        lambda: len(alice.api("GET", f"/moments?circle={chat}")["moments"]) == 2,
        timeout=20,
        what="Bob's message to reach Alice",
    )
    views = {
        "feed": "#/feed",
        "circle feed": f"#/feed/{family}",
        "chats": "#/chats",
        "chat": f"#/chat/{chat}",
        "circles": "#/circles",
        "circle": f"#/circle/{family}",
        "gallery": f"#/gallery/{family}",
        "friends": "#/friends",
        "add a friend": "#/pair",
        "me": "#/me",
    }
    return alice, views


# A view is drawn: its own content in main, nothing still loading.
SHOWN = """view => document.body.dataset.view !== undefined
  && document.querySelector('main > :not(.loading)') !== null
  && ![...document.querySelectorAll('main [role=status]')]
    .some(s => s.textContent.includes('Loading'))"""


def violations(page: Any) -> list[dict[str, Any]]:
    found = page.evaluate(
        # Every rule of axe's default set, and the experimental one for names that do not
        # contain the visible label ("Chat with Bob, online" on a link that reads "Bob").
        """async () => (await axe.run(document, {resultTypes: ['violations'],
              rules: {'label-content-name-mismatch': {enabled: true}}})).violations
          .map(v => ({id: v.id, impact: v.impact, help: v.help,
                      nodes: v.nodes.slice(0, 3)
                        .map(n => n.target.join(' ') + ': ' + n.failureSummary)}))"""
    )
    return list(found)


@pytest.mark.timeout(300)
def test_every_view_light_and_dark_phone_and_desktop_has_no_axe_violation(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    alice, views = a_week_of_moments(daemons, tmp_path)
    script = AXE.read_text()
    found: dict[str, list[dict[str, Any]]] = {}
    with playwright() as p:
        browser = launch(p)
        for scheme in ("light", "dark"):
            for label, size in (("phone", PHONE), ("desktop", DESKTOP)):
                # The page's policy allows no inline script: axe comes in past it.
                context = browser.new_context(viewport=size, color_scheme=scheme, bypass_csp=True)
                page = context.new_page()
                page.goto(login_url(alice.home))
                page.wait_for_selector("main .view-title")
                page.add_script_tag(content=script)
                for view, address in views.items():
                    page.goto(page.url.split("#")[0] + address)
                    page.wait_for_function(SHOWN, arg=view)
                    if not page.evaluate("typeof axe !== 'undefined'"):
                        page.add_script_tag(content=script)
                    if bad := violations(page):
                        found[f"{view}, {scheme}, {label}"] = bad
                context.close()
        browser.close()
    assert found == {}, json.dumps(found, indent=1, ensure_ascii=False)
