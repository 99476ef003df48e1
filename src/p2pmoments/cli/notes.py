"""Notes written together (spec/notes.md): list, make, show, edit, write, history."""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from p2pmoments.cli.arguments import JSON, Cmd, _needs_action, arg
from p2pmoments.cli.output import EXIT_OK, _print_json, _q, _when, _who
from p2pmoments.client import ApiClient
from p2pmoments.core.errors import P2PMomentsError
from p2pmoments.paths import Paths

__all__ = [
    "NOTE_COMMANDS",
    "cmd_note_edit",
    "cmd_note_history",
    "cmd_note_new",
    "cmd_note_show",
    "cmd_note_write",
    "cmd_notes",
]


def _read_text(source: str | None) -> str:
    if source is None:
        return ""
    if source == "-":
        return sys.stdin.read()
    try:
        return Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise P2PMomentsError(f"cannot read {source}: {exc}") from None


def cmd_notes(args: argparse.Namespace, paths: Paths) -> int:
    notes = ApiClient(paths).call("GET", f"/circles/{_q(args.circle, 'circle')}/notes")["notes"]
    if args.json:
        _print_json(notes)
        return EXIT_OK
    if not notes:
        print(f"No notes in {args.circle} yet: p2pmoments note new --circle {args.circle} TITLE")
    for n in notes:
        editing = ", ".join(_who(p) for p in n["editing"])
        now = f"  (editing now: {editing})" if editing else ""
        print(f"{n['id'][:12]}  {n['title']}  ({n['chars']} characters){now}")
    return EXIT_OK


def cmd_note_new(args: argparse.Namespace, paths: Paths) -> int:
    note = ApiClient(paths).call(
        "POST",
        f"/circles/{_q(args.circle, 'circle')}/notes",
        {"title": args.title, "text": _read_text(args.text_file)},
    )
    print(note["id"])
    return EXIT_OK


def _note(paths: Paths, ref: str) -> dict[str, Any]:
    result: dict[str, Any] = ApiClient(paths).call("GET", f"/notes/{_q(ref, 'note')}")
    return result


def cmd_note_show(args: argparse.Namespace, paths: Paths) -> int:
    note = _note(paths, args.id)
    if args.json:
        _print_json(note)
        return EXIT_OK
    print(f"# {note['title']}")
    print()
    sys.stdout.write(
        note["text"] if note["text"].endswith("\n") or not note["text"] else note["text"] + "\n"
    )
    return EXIT_OK


def _write(paths: Paths, ref: str, base: str | None, text: str) -> dict[str, Any]:
    body: dict[str, Any] = {"text": text}
    if base is not None:
        body["base"] = base
    result: dict[str, Any] = ApiClient(paths).call("POST", f"/notes/{_q(ref, 'note')}/edits", body)
    return result


def cmd_note_write(args: argparse.Namespace, paths: Paths) -> int:
    note = _write(paths, args.id, None, _read_text(args.text_file))
    print(f"{note['id'][:12]}  {note['title']}  ({note['chars']} characters)")
    return EXIT_OK


def cmd_note_edit(args: argparse.Namespace, paths: Paths) -> int:
    note = _note(paths, args.id)
    editor = shlex.split(os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi")
    with tempfile.TemporaryDirectory(prefix="p2pm-note-") as folder:
        path = Path(folder) / "note.md"
        path.write_text(note["text"], encoding="utf-8")
        done = subprocess.run([*editor, str(path)], check=False)
        if done.returncode != 0:
            raise P2PMomentsError(f"the editor ended with status {done.returncode}: nothing saved")
        text = path.read_text(encoding="utf-8")
    if text == note["text"]:
        print("unchanged")
        return EXIT_OK
    # Written from the version the editor opened: what others wrote meanwhile stays.
    saved = _write(paths, args.id, note["version"], text)
    print(f"{saved['id'][:12]}  {saved['title']}  ({saved['chars']} characters)")
    return EXIT_OK


def cmd_note_history(args: argparse.Namespace, paths: Paths) -> int:
    versions = ApiClient(paths).call("GET", f"/notes/{_q(args.id, 'note')}/history")["versions"]
    if args.json:
        _print_json(versions)
        return EXIT_OK
    for v in versions:
        edits = f"{v['edits']} edit{'' if v['edits'] == 1 else 's'}"
        print(
            f"{v['version']:>5}  {_when(v['first'])} to {_when(v['last'])}  "
            f"{_who(v['author'])}  {edits}  ({v['chars']} characters)"
        )
    return EXIT_OK


_NOTE_ID = arg("id", metavar="ID", help="the note's id, or its first 6 or more characters")

# The notes' commands, in commands.COMMANDS.
NOTE_COMMANDS = (
    Cmd(
        name="notes",
        run=cmd_notes,
        summary="List a circle's notes, written together by its members.",
        example="p2pmoments notes --circle work",
        args=(arg("--circle", required=True, help="the circle"), JSON),
    ),
    Cmd(
        name="note",
        run=_needs_action,
        summary="Write notes together: new, show, edit, write, history.",
        example="p2pmoments note new --circle work 'Plan'",
        action_required=True,
        actions=(
            Cmd(
                name="new",
                run=cmd_note_new,
                summary="Start a note in a circle; prints its id.",
                example="p2pmoments note new --circle work Plan --text-file plan.md",
                args=(
                    arg("--circle", required=True, help="the circle"),
                    arg("title", help="its title, one line of at most 200 bytes"),
                    arg(
                        "--text-file",
                        metavar="F",
                        help="its first text, from a file; - reads stdin",
                    ),
                ),
            ),
            Cmd(
                name="show",
                run=cmd_note_show,
                summary="Show a note's title and text as merged so far.",
                example="p2pmoments note show 3fq2k7",
                args=(_NOTE_ID, JSON),
            ),
            Cmd(
                name="edit",
                run=cmd_note_edit,
                summary="Edit a note's text in $EDITOR; what others write meanwhile stays.",
                example="p2pmoments note edit 3fq2k7",
                args=(_NOTE_ID,),
            ),
            Cmd(
                name="write",
                run=cmd_note_write,
                summary="Replace a note's text; the change merges with others' edits.",
                example="p2pmoments note write 3fq2k7 --text-file plan.md",
                args=(
                    _NOTE_ID,
                    arg(
                        "--text-file",
                        metavar="F",
                        required=True,
                        help="the new text; - reads stdin",
                    ),
                ),
            ),
            Cmd(
                name="history",
                run=cmd_note_history,
                summary="Who changed a note and when, in versions.",
                example="p2pmoments note history 3fq2k7",
                args=(_NOTE_ID, JSON),
            ),
        ),
    ),
)
