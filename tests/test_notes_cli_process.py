"""The notes' commands against a real daemon process: new, write, show, edit (with
$EDITOR), history and notes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.daemons import Daemon, cli, start_daemon

pytestmark = pytest.mark.process


def run(home: Path, *args: str, stdin: str = "", editor: str = "") -> str:
    env = {**os.environ, "P2PMOMENTS_HOME": "", "EDITOR": editor, "VISUAL": ""}
    done = subprocess.run(
        [sys.executable, "-m", "p2pmoments", "--home", str(home), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.timeout(120)
def test_new_write_show_edit_history_and_list(tmp_path: Path, daemons: list[Daemon]) -> None:
    home = tmp_path / "alice"
    assert cli(home, "init", "--name", "Alice").returncode == 0
    alice = start_daemon(daemons, home)
    alice.api("POST", "/circles", {"name": "work", "members": []})
    note = run(home, "note", "new", "--circle", "work", "Plan", "--text-file", "-", stdin="one\n")
    note = note.strip()
    assert json.loads(run(home, "note", "show", note, "--json"))["text"] == "one\n"
    text = tmp_path / "new.md"
    text.write_text("one\ntwo\n", encoding="utf-8")
    run(home, "note", "write", note[:10], "--text-file", str(text))
    # $EDITOR changes the file it is given; the change is saved as an edit.
    editor = tmp_path / "editor.py"
    editor.write_text(
        "import sys, pathlib\np = pathlib.Path(sys.argv[1])\n"
        "p.write_text(p.read_text().replace('two', 'TWO'))\n"
    )
    assert "TWO" not in run(home, "note", "show", note)
    run(home, "note", "edit", note, editor=f"{sys.executable} {editor}")
    shown = run(home, "note", "show", note)
    assert shown == "# Plan\n\none\nTWO\n"
    assert "Alice" in run(home, "note", "history", note)
    assert "Plan" in run(home, "notes", "--circle", "work")
    listed = json.loads(run(home, "notes", "--circle", "work", "--json"))
    assert [n["id"] for n in listed] == [note]
