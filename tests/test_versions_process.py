"""Files with versions through the CLI of a real daemon: `file update`, `file versions`,
`file ID -o OUT --version N` (spec/moments.md section 9)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.daemons import Daemon, cli

pytestmark = pytest.mark.process


def test_update_list_and_save_any_version_through_the_cli(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    home = tmp_path / "alice"
    assert cli(home, "init", "--name", "Alice").returncode == 0
    daemons.append(Daemon(home))
    daemons[-1].wait_ready()
    assert cli(home, "circle", "create", "work").returncode == 0
    budget = tmp_path / "budget.xlsx"
    first = os.urandom(5 << 20)  # past 4 MiB: the chunk index form, whose chunks are lent
    budget.write_bytes(first)
    posted = cli(home, "post", "--circle", "work", "--file", str(budget), "the budget")
    assert posted.returncode == 0, posted.stderr
    moment = posted.stdout.strip()

    second = first[:1000] + b"Q3" + first[1002:]
    budget.write_bytes(second)
    updated = cli(home, "file", "update", moment[:10], str(budget), "--note", "Q3 figures")
    assert updated.returncode == 0, updated.stderr
    assert "version 2 of budget.xlsx" in updated.stdout

    listed = json.loads(cli(home, "file", "versions", moment[:10], "--json").stdout)
    assert [v["n"] for v in listed["versions"]] == [1, 2]
    assert listed["newest"] == 2
    assert listed["versions"][1]["note"] == "Q3 figures"
    assert listed["versions"][1]["parents"] == [1]
    shown = cli(home, "file", "versions", moment[:10]).stdout
    assert "Q3 figures [newest]" in shown

    old, new, plain = tmp_path / "v1.xlsx", tmp_path / "v2.xlsx", tmp_path / "now.xlsx"
    assert cli(home, "file", moment[:10], "-o", str(old), "--version", "1").returncode == 0
    assert cli(home, "file", moment[:10], "-o", str(new), "--version", "2").returncode == 0
    assert cli(home, "file", moment[:10], "-o", str(plain)).returncode == 0
    assert old.read_bytes() == first
    assert new.read_bytes() == second
    assert plain.read_bytes() == second  # without --version: the newest, as the feed shows
    feed = json.loads(cli(home, "moment", moment, "--json").stdout)
    assert feed["versions"]["newest"]["n"] == 2
    assert "newest: version 2 of 2, budget.xlsx" in cli(home, "moment", moment).stdout
    version_id = listed["versions"][1]["id"]
    kept = cli(home, "retract", version_id)
    assert kept.returncode == 1
    assert "retract the post" in kept.stderr

    missing = cli(home, "file", moment[:10], "-o", str(old), "--version", "7")
    assert missing.returncode == 1
    assert "no 7" in missing.stderr
    nothing = cli(home, "file", "pick", moment[:10], "1")
    assert nothing.returncode == 1
    assert "nothing to pick" in nothing.stderr
    no_output = cli(home, "file", moment[:10])
    assert no_output.returncode == 2
    assert "-o FILE" in no_output.stderr
