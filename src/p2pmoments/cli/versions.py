"""`p2pmoments file`: save a moment's file (any version of it), add a new version, list
the versions, pick one of two siblings (spec/moments.md section 9)."""

from __future__ import annotations

import argparse
import mimetypes
import sys
from pathlib import Path
from typing import Any

from p2pmoments.cli.arguments import arg
from p2pmoments.cli.moments import _download, _readable
from p2pmoments.cli.output import EXIT_OK, EXIT_USAGE, _print_json, _q, _size, _who
from p2pmoments.client import ApiClient
from p2pmoments.core.errors import P2PMomentsError
from p2pmoments.paths import Paths

__all__ = ["ACTIONS", "FILE_ARGS", "cmd_file"]

ACTIONS = ("update", "versions", "pick")
_save = _download("files")
FILE_ARGS = (
    arg(
        "id",
        metavar="ID",
        help="the moment's id (or its first characters); or an action: update ID PATH, "
        "versions ID, pick ID N",
    ),
    arg(
        "more",
        nargs="*",
        metavar="N|PATH",
        help="which file, from 1 (default 1); or the action's arguments",
    ),
    arg("-o", "--output", metavar="FILE", help="where to save it"),
    arg(
        "--version",
        type=int,
        metavar="N",
        help="save version N of the file (1: as posted; default: the newest)",
    ),
    arg("--note", metavar="TEXT", help="update, pick: a note saying what changed"),
    arg("--json", action="store_true", help="versions: print the API's JSON"),
)


def _usage(message: str) -> int:
    print(f"p2pmoments file: {message}", file=sys.stderr)
    return EXIT_USAGE


def cmd_file(args: argparse.Namespace, paths: Paths) -> int:
    """file ID [N] -o OUT [--version N] | file update ID PATH [--note TEXT] |
    file versions ID [--json] | file pick ID N [--note TEXT]."""
    action, rest = (args.id, args.more) if args.id in ACTIONS else (None, [args.id, *args.more])
    if action is None:
        if args.output is None:
            return _usage("give where to save it: -o FILE")
        if len(rest) > 2 or (len(rest) == 2 and not rest[1].isdigit()):
            return _usage("file ID [N] -o FILE (N: which file of the moment, from 1)")
        if args.version is not None:
            if len(rest) == 2:
                return _usage("versions are of a moment's first file: leave out N")
            return _save_version(args, paths, rest[0], args.version)
        if len(rest) == 1:  # a file with versions: its newest, as the feed shows it
            shown = ApiClient(paths).call("GET", f"/moments/{_q(rest[0], 'moment')}")
            if "versions" in shown:
                return _save_version(args, paths, rest[0], shown["versions"]["newest"]["n"])
        return _save(
            argparse.Namespace(id=rest[0], n=int(rest[1]) if len(rest) == 2 else 1, **_out(args)),
            paths,
        )
    if action == "update":
        if len(rest) != 2:
            return _usage("file update ID PATH [--note TEXT]")
        return _update(paths, rest[0], rest[1], args.note or "")
    if action == "versions":
        if len(rest) != 1:
            return _usage("file versions ID [--json]")
        return _versions(paths, rest[0], args.json)
    if len(rest) != 2 or not rest[1].isdigit():
        return _usage("file pick ID N [--note TEXT]")
    listing = ApiClient(paths).call(
        "POST",
        f"/moments/{_q(rest[0], 'moment')}/versions/{int(rest[1])}/pick",
        {"note": args.note} if args.note else {},
    )
    print(f"picked version {rest[1]}: it is now version {listing['version']}, the newest")
    return EXIT_OK


def _out(args: argparse.Namespace) -> dict[str, Any]:
    return {"output": args.output, "thumbnail": False}


def _save_version(args: argparse.Namespace, paths: Paths, moment: str, n: int) -> int:
    output = Path(args.output)
    if output.is_dir() or not output.parent.is_dir():
        raise P2PMomentsError(f"cannot write {output}: give a file in an existing folder")
    try:
        size = ApiClient(paths).download_to(
            f"/moments/{_q(moment, 'moment')}/versions/{n}/file", output
        )
    except OSError as exc:
        raise P2PMomentsError(f"cannot write {output}: {exc.strerror}") from None
    print(f"wrote {output} ({_size(size)}), version {n}")
    return EXIT_OK


def _update(paths: Paths, moment: str, path: str, note: str) -> int:
    source = _readable(path)
    fields = {"note": note} if note else {}
    media_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    listing = ApiClient(paths).post_multipart(
        f"/moments/{_q(moment, 'moment')}/versions",
        fields,
        [("file", source.name, source, media_type)],
    )
    print(f"version {listing['version']} of {listing['name']}")
    return EXIT_OK


def _versions(paths: Paths, moment: str, as_json: bool) -> int:
    listing = ApiClient(paths).call("GET", f"/moments/{_q(moment, 'moment')}/versions")
    if as_json:
        _print_json(listing)
        return EXIT_OK
    by_n = {v["n"]: v for v in listing["versions"]}
    for v in listing["versions"]:
        marks = [
            *(["newest"] if v["n"] == listing["newest"] else []),
            *(["sibling"] if v["n"] in listing["siblings"] else []),
            *(["dropped"] if v["dropped"] else []),
        ]
        after = f" after {', '.join(str(p) for p in v['parents'])}" if v["parents"] else ""
        note = f": {v['note']}" if v["note"] else ""
        flags = f" [{', '.join(marks)}]" if marks else ""
        print(
            f"{v['n']:>3}  {_who(v['author'])}, {_size(v['size'])}, {v['name']}{after}{note}{flags}"
        )
    if listing["siblings"]:
        names = " and ".join(f"{_who(by_n[n]['author'])}'s" for n in listing["siblings"])
        print(
            f"\n{names} versions of {listing['name']} were made at once. Pick one "
            f"(p2pmoments file pick {moment} N) or upload a merge "
            f"(p2pmoments file update {moment} PATH: it follows them all)."
        )
    return EXIT_OK
