"""Circles and moments: create and change circles, post, read the feed, comment,
react, retract, and save photos and files."""

from __future__ import annotations

import argparse
import shlex
import sys
import urllib.parse
from pathlib import Path
from typing import Any

from p2pmoments.cli.output import EXIT_OK, Command, _home_flag, _print_json, _q, _size, _when, _who
from p2pmoments.client import ApiClient
from p2pmoments.core.errors import P2PMomentsError
from p2pmoments.paths import Paths


def _print_circle(c: dict[str, Any]) -> None:
    owner = "yours" if c["mine"] else f"owned by {_who(c['owner'])}"
    posting = "everyone posts" if c["members_can_post"] else "only the owner posts"
    if c.get("kind") == "conversation":  # spec/moments.md section 1.1
        posting = "a conversation"
    names = ", ".join(_who(m) for m in c["members"])
    if c.get("removed"):
        print(
            f"{c['name']}  ({owner}; you were removed on {_when(c['removed']['at'])}: "
            "you keep what you had and get nothing new)"
        )
        return
    count = len(c["members"])
    print(f"{c['name']}  ({owner}; {posting}; {count} member{'' if count == 1 else 's'}: {names})")


def cmd_circles(args: argparse.Namespace, paths: Paths) -> int:
    circles = ApiClient(paths).call("GET", "/circles")["circles"]
    if args.json:
        _print_json(circles)
    elif not circles:
        print("No circles yet: p2pmoments circle create family --member Bob")
    for c in [] if args.json else circles:
        _print_circle(c)
    return EXIT_OK


def cmd_circle_create(args: argparse.Namespace, paths: Paths) -> int:
    circle = ApiClient(paths).call(
        "POST",
        "/circles",
        {
            "name": args.name,
            "members": args.member or [],
            "members_can_post": args.members_can_post,
        },
    )
    _print_circle(circle)
    return EXIT_OK


def _circle_change(field: str) -> Command:
    def run(args: argparse.Namespace, paths: Paths) -> int:
        value: Any = args.friends if field in ("add", "remove") else args.new_name
        circle = ApiClient(paths).call(
            "PATCH", f"/circles/{_q(args.circle, 'circle')}", {field: value}
        )
        _print_circle(circle)
        return EXIT_OK

    return run


def cmd_circle_delete(args: argparse.Namespace, paths: Paths) -> int:
    gone = ApiClient(paths).call("DELETE", f"/circles/{_q(args.circle, 'circle')}")["deleted"]
    print(f"deleted the circle {gone['name']} and its moments from this device")
    return EXIT_OK


def _arrival(blob: dict[str, Any]) -> str:
    """How much of a photo or file is here, while it is still arriving."""
    if blob["chunks_held"] >= blob["chunks"]:
        return ""
    return f"  (arriving: {100 * blob['chunks_held'] // blob['chunks']} %)"


def _print_moment(m: dict[str, Any], *, indent: str = "") -> None:
    when = _when(m["time"])
    if m["retracted"]:
        print(
            f"{indent}[retracted]  {_who(m['author'])} in {m['circle']['name']}, {when}  "
            f"{m['id'][:10]}"
        )
        return
    expires = f", expires {_when(m['expires'])}" if m["expires"] else ""
    print(f"{indent}{_who(m['author'])} in {m['circle']['name']}, {when}{expires}  {m['id'][:10]}")
    for line in m["text"].splitlines() or [""]:
        print(f"{indent}  {line}")
    for photo in m["photos"]:
        print(
            f"{indent}  photo {photo['n']}: {photo['width']}×{photo['height']}, "
            f"{_size(photo['size'])}{_arrival(photo)}"
        )
    for file in m["files"]:
        print(f"{indent}  file {file['n']}: {file['name']}, {_size(file['size'])}{_arrival(file)}")
    if "versions" in m:  # a file with versions: the newest, and any siblings
        v = m["versions"]
        newest = v["newest"]
        print(
            f"{indent}  newest: version {newest['n']} of {v['count']}, {newest['name']}, "
            f"{_size(newest['size'])} by {_who(newest['author'])}"
        )
        if v["siblings"]:
            names = " and ".join(f"{_who(s['author'])}'s" for s in v["siblings"])
            print(f"{indent}  {names} versions were made at once: `file versions` to pick or merge")
    if m["reactions"]:
        print(indent + "  " + "  ".join(f"{e} {len(who)}" for e, who in m["reactions"].items()))
    for c in m["comments"]:
        print(f"{indent}  ↳ {_who(c['author'])}: {c['text']}")


def _readable(path: str) -> Path:
    """A file to upload, checked readable now (it is read as it is sent)."""
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise P2PMomentsError(f"cannot read {path}: {exc.strerror}") from None
    if Path(path).is_dir():
        raise P2PMomentsError(f"cannot read {path}: it is a folder")
    return Path(path)


MAX_TEXT = 16 * 1024  # bytes of UTF-8 in a moment or comment (spec/moments.md)


def _text_of(args: argparse.Namespace) -> str:
    """The text argument, or standard input for `-`, or the --text-file; checked for size."""
    text_file = getattr(args, "text_file", None)
    if text_file is not None and args.text:
        raise P2PMomentsError("give the text as an argument or with --text-file, not both")
    if text_file is not None or args.text == "-":
        from_stdin = text_file in (None, "-")
        source = "standard input" if from_stdin else str(text_file)
        try:
            if from_stdin:
                raw = sys.stdin.buffer.read(MAX_TEXT + 1)
            else:
                with open(source, "rb") as f:
                    raw = f.read(MAX_TEXT + 1)
        except OSError as exc:
            raise P2PMomentsError(f"cannot read {source}: {exc.strerror}") from None
        if len(raw) > MAX_TEXT:
            raise P2PMomentsError(_too_long())
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise P2PMomentsError(f"the text from {source} is not UTF-8") from None
    else:
        text = args.text or ""
    if len(text.encode("utf-8")) > MAX_TEXT:
        raise P2PMomentsError(_too_long())
    return text


def _too_long() -> str:
    return (
        f"the text is too long: at most {MAX_TEXT // 1024} KiB ({MAX_TEXT} bytes of UTF-8); "
        "put a long text in a file and post it with --file"
    )


def cmd_post(args: argparse.Namespace, paths: Paths) -> int:
    import mimetypes

    text = _text_of(args)
    client = ApiClient(paths)
    if not args.photo and not args.file:
        body: dict[str, Any] = {"circle": args.circle, "text": text}
        if args.expires:
            body["expires_in"] = args.expires
        moment = client.call("POST", "/moments", body)
    else:
        fields = {"circle": args.circle, "text": text}
        if args.expires:
            fields["expires_in"] = str(args.expires)
        # Photos and files are streamed from disk as they are sent, never read whole.
        uploads: list[tuple[str, str, bytes | Path, str]] = [
            ("photo", Path(p).name, _readable(p), "application/octet-stream")
            for p in args.photo or []
        ]
        uploads += [
            (
                "file",
                Path(f).name,
                _readable(f),
                mimetypes.guess_type(f)[0] or "application/octet-stream",
            )
            for f in args.file or []
        ]
        moment = client.post_multipart("/moments", fields, uploads)
    print(moment["id"])
    return EXIT_OK


def _download(kind: str) -> Command:
    def run(args: argparse.Namespace, paths: Paths) -> int:
        suffix = "/thumbnail" if getattr(args, "thumbnail", False) else ""
        output = Path(args.output)
        if output.is_dir():
            raise P2PMomentsError(
                f"{output} is a folder: give the file to write, e.g. -o {output / 'photo.jpg'}"
            )
        if not output.parent.is_dir():
            raise P2PMomentsError(
                f"cannot write {output}: the folder {output.parent} does not exist"
            )
        try:  # a piece at a time, written whole or not at all
            size = ApiClient(paths).download_to(
                f"/moments/{_q(args.id, 'moment')}/{kind}/{args.n}{suffix}", output
            )
        except OSError as exc:
            raise P2PMomentsError(f"cannot write {output}: {exc.strerror}") from None
        print(f"wrote {output} ({_size(size)})")
        return EXIT_OK

    return run


def cmd_feed(args: argparse.Namespace, paths: Paths) -> int:
    client = ApiClient(paths)
    query = {"limit": str(args.limit)} | ({"circle": args.circle} if args.circle else {})
    cursor: str | None = args.cursor
    moments: list[dict[str, Any]] = []
    while True:  # one page, or with --all every page: each starts past the last
        page_query = query | ({"cursor": cursor} if cursor else {})
        page = client.call("GET", "/moments?" + urllib.parse.urlencode(page_query))
        moments += page["moments"]
        cursor, before = page["next_cursor"], page["next_before"]
        if not args.all or cursor is None or not page["moments"]:
            break
    if args.json:  # the API's shape: a page, here of every moment read
        _print_json({"moments": moments, "next_cursor": cursor, "next_before": before})
        return EXIT_OK
    if not moments:
        print("Nothing here yet." if args.cursor is None else "Nothing older.")
    for m in moments:
        _print_moment(m)
        print()
    if cursor is not None:
        circle = f" --circle {shlex.quote(args.circle)}" if args.circle else ""
        print(f"More: p2pmoments{_home_flag(paths)} feed{circle} --cursor {cursor}  (or --all)")
    return EXIT_OK


def cmd_moment(args: argparse.Namespace, paths: Paths) -> int:
    moment = ApiClient(paths).call("GET", f"/moments/{_q(args.id, 'moment')}")
    if args.json:
        _print_json(moment)
    else:
        _print_moment(moment)
    return EXIT_OK


def cmd_comment(args: argparse.Namespace, paths: Paths) -> int:
    text = _text_of(args)
    _print_moment(
        ApiClient(paths).call("POST", f"/moments/{_q(args.id, 'moment')}/comments", {"text": text})
    )
    return EXIT_OK


def cmd_react(args: argparse.Namespace, paths: Paths) -> int:
    _print_moment(
        ApiClient(paths).call(
            "POST", f"/moments/{_q(args.id, 'moment')}/reactions", {"emoji": args.emoji}
        )
    )
    return EXIT_OK


def cmd_retract(args: argparse.Namespace, paths: Paths) -> int:
    gone = ApiClient(paths).call("DELETE", f"/moments/{_q(args.id, 'moment')}")["retracted"]
    print(f"retracted {gone}")
    return EXIT_OK
