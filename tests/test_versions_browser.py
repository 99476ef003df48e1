"""Files with versions in the web app, in a real Chromium against a real daemon: a new
version uploaded from the card, siblings side by side, one kept (spec/moments.md
section 9). Skipped, saying why, where Chromium or Playwright is missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.browser import DESKTOP, launch, open_app, playwright, skip_reason
from tests.daemons import Daemon, cli

pytestmark = [
    pytest.mark.process,
    pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""),
]


def test_a_new_version_from_the_card_then_siblings_side_by_side_and_one_kept(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    home = tmp_path / "alice"
    assert cli(home, "init", "--name", "Alice").returncode == 0
    daemons.append(Daemon(home))
    daemons[-1].wait_ready()
    assert cli(home, "circle", "create", "work").returncode == 0
    budget = tmp_path / "budget.xlsx"
    budget.write_bytes(b"v1")
    posted = cli(home, "post", "--circle", "work", "--file", str(budget), "the budget")
    moment = posted.stdout.strip()
    with playwright() as p:
        browser = launch(p)
        page = open_app(browser, home, viewport=DESKTOP)
        card = page.locator("li.moment", has_text="the budget")
        card.get_by_text("Versions").click()
        second = tmp_path / "second" / "budget.xlsx"
        second.parent.mkdir()
        second.write_bytes(b"v2, with the Q3 figures")
        card.get_by_label("The new version").set_input_files(str(second))
        card.get_by_label("What changed").fill("Q3 figures")
        card.get_by_role("button", name="Upload a new version").click()
        card.get_by_text("budget.xlsx, version 2").wait_for()
        # Two versions of version 2 at once (as two members would make them), through
        # the API as the page itself calls it.
        page.evaluate(
            """async (moment) => {
                const session = await (await fetch('/api/v1/session')).json();
                for (const text of ['v3 by one', 'v3 by another']) {
                    const form = new FormData();
                    form.append('parent', '2');
                    form.append('file', new Blob([text]), 'budget.xlsx');
                    const answer = await fetch(`/api/v1/moments/${moment}/versions`, {
                        method: 'POST', body: form,
                        headers: {'X-CSRF-Token': session.csrf_token},
                    });
                    if (answer.status !== 201) throw new Error(await answer.text());
                }
            }""",
            moment,
        )
        siblings = card.get_by_role("group", name="versions of budget.xlsx")
        siblings.wait_for()
        assert siblings.get_by_role("button", name="Keep version").count() == 2
        siblings.get_by_role("button", name="Keep version 3").click()
        card.get_by_text("budget.xlsx, version 5").wait_for()
        assert card.get_by_role("group", name="versions of budget.xlsx").count() == 0
        browser.close()
    listed = json.loads(cli(home, "file", "versions", moment, "--json").stdout)
    assert listed["siblings"] == []
    assert listed["versions"][4]["size"] == listed["versions"][2]["size"]
