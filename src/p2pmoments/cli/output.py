"""What the CLI prints, and how: exit codes, times, sizes and names for people, a
stream that shows what peers chose as text, never as commands to the terminal, and a
code written as images."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from p2pmoments.core.errors import P2PMomentsError
from p2pmoments.paths import Paths

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


Command = Callable[[argparse.Namespace, Paths], int]


def _home_flag(paths: Paths) -> str:
    return f" --home {paths.home}" if paths.home is not None else ""


# What a terminal would obey rather than show: C0 and C1 controls but for tab and line
# feed (an escape sequence in a friend's name could retitle the window, rewrite the
# screen or, in some terminals, write files), and the bidirectional overrides and
# isolates (they make a file "gpj.exe" read as "exe.jpg").
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


class _Plain:
    """A text stream that shows what peers chose (names, texts, file names) as text:
    every character a terminal would obey is replaced by U+FFFD. The CLI's own escape
    sequences (the QR code's colours) go to the stream underneath, `raw`."""

    def __init__(self, raw: TextIO) -> None:
        self.raw = raw

    def write(self, text: str) -> int:
        return self.raw.write(_UNSAFE.sub("\ufffd", text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


def _print_raw(text: str) -> None:
    """Print the CLI's own text, escape sequences included (not a peer's)."""
    out = sys.stdout
    print(text, file=out.raw if isinstance(out, _Plain) else out)


def _print_json(value: Any) -> None:
    """JSON as the API gave it; the characters a terminal would obey escaped as \\uXXXX
    (JSON escapes C0 itself), so the data stays exact and the terminal safe."""
    text = json.dumps(value, indent=2, ensure_ascii=False)
    print(_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text))


def _when(seconds: float | None) -> str:
    if not seconds:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds))


def _q(ref: str, what: str = "") -> str:
    """A friend, circle or moment reference for a URL path; an empty one is refused here
    (the API would only see a path that names nothing)."""
    if not ref.strip():
        raise P2PMomentsError(f"name the {what or 'thing'}: an empty name matches nothing")
    return urllib.parse.quote(ref, safe="")


def _who(person: dict[str, Any]) -> str:
    """A person's name, marked if they are not our friend (a co-member we never paired with)."""
    return person["name"] if person.get("friend", True) else f"{person['name']} (not a friend)"


def _size(n: int) -> str:
    """A byte count for people: 950 B, 3.2 MB."""
    if n < 1000:
        return f"{n} B"
    value = n / 1000
    for unit in ("kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            break
        value /= 1000
    return f"{value:.1f} {unit}"


def _write_images(args: argparse.Namespace, link: str, *, mode: int) -> list[str]:
    """Write a code as the images asked for (--png FILE, --svg FILE); the files written."""
    from p2pmoments import qr
    from p2pmoments.files import write_file_atomically

    wrote = []
    for name, render in ((args.png, qr.render_png), (args.svg, qr.render_svg)):
        if name:
            write_file_atomically(Path(name), render(link), mode=mode)
            wrote.append(name)
    return wrote
