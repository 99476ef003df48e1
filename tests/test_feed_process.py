"""`feed` through the CLI of a real daemon: pages with the cursor, --all, and --json in the
API's own shape (issue 10, items 5 and 22)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.daemons import Daemon, cli

pytestmark = pytest.mark.process


def test_feed_pages_with_the_cursor_and_prints_the_apis_shape(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    home = tmp_path / "alice"
    assert cli(home, "init", "--name", "Alice").returncode == 0
    daemons.append(Daemon(home))
    daemons[-1].wait_ready()
    assert cli(home, "circle", "create", "family").returncode == 0
    for i in range(5):
        daemons[-1].api("POST", "/moments", {"circle": "family", "text": f"moment {i}"})

    first = json.loads(cli(home, "feed", "--limit", "2", "--json").stdout)
    assert set(first) == {"moments", "next_cursor", "next_before"}
    assert len(first["moments"]) == 2
    assert first["next_cursor"]
    rest = json.loads(
        cli(
            home, "feed", "--limit", "2", "--cursor", first["next_cursor"], "--all", "--json"
        ).stdout
    )
    assert rest["next_cursor"] is None
    every = json.loads(cli(home, "feed", "--limit", "2", "--all", "--json").stdout)
    ids = [m["id"] for m in every["moments"]]
    assert len(ids) == len(set(ids)) == 5
    assert [m["id"] for m in first["moments"] + rest["moments"]] == ids
    assert every["moments"][0]["author"] == {
        "identity": every["moments"][0]["author"]["identity"],
        "name": "Alice",
        "friend": True,
    }

    text = cli(home, "feed", "--limit", "2")
    assert text.returncode == 0, text.stderr
    assert f"feed --cursor {first['next_cursor']}" in text.stdout
    last = cli(home, "feed", "--limit", "2", "--cursor", every["moments"][-1]["id"])
    assert last.returncode == 1  # not a cursor the feed gave
    assert "cursor" in last.stderr
