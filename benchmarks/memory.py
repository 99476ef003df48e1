"""The daemon's memory ceiling under the heaviest posts the API takes (issue 10, item 3).

    .venv/bin/python benchmarks/memory.py [--json FILE]

A daemon process is started and its resident memory read once it answers; then eleven
posts are sent at once: three PNGs of 12,600 x 12,600 pixels of one colour (under 1 MB
each, refused from their header), three of 8,944 x 8,944 RGBA pixels (just under the
80-megapixel limit: 320 MB each once decoded), two of those pixels with the first
third noise (about 95 MB each: the largest photo decoded from the largest upload) and
three files of 99 MiB (streamed since issue 13: they cost little). The figure is the daemon's peak
resident memory (VmHWM), beside its resident memory at rest: README.md states the
ceiling from it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import zlib
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import daemon_info, p2pm, report, rss_kib, start, stop, wait


def one_colour_png(width: int, height: int, channels: int, noisy_rows: int = 0) -> bytes:
    """A valid PNG of one colour, a few hundred KB however many pixels it has; its first
    `noisy_rows` rows are noise (incompressible)."""
    colour = {3: 2, 4: 6}[channels]  # PNG colour types: RGB, RGBA
    row = b"\x00" + b"\x7f" * (width * channels)
    packer = zlib.compressobj(1 if noisy_rows else 9)
    rows = (
        b"\x00" + os.urandom(width * channels) if y < noisy_rows else row for y in range(height)
    )
    data = b"".join(packer.compress(r) for r in rows) + packer.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body).to_bytes(4, "big")
        return len(body).to_bytes(4, "big") + kind + body + crc

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, colour, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


def peak_kib(pid: int) -> int:
    """The most resident memory a process has had (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


async def post_all(api: str, token: str, uploads: list[tuple[str, bytes]]) -> list[int]:
    headers = {"Authorization": f"Bearer {token}"}
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:

        async def post(kind: str, data: bytes) -> int:
            form = aiohttp.FormData()
            form.add_field("circle", "bench")
            form.add_field("text", "heavy")
            form.add_field(kind, data, filename="x", content_type="application/octet-stream")
            async with session.post(f"{api}/moments", data=form) as r:
                await r.read()
                return r.status

        return list(await asyncio.gather(*(post(kind, data) for kind, data in uploads)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    bomb = one_colour_png(12_600, 12_600, 3)
    largest = one_colour_png(8_944, 8_944, 4)
    heaviest = one_colour_png(8_944, 8_944, 4, noisy_rows=2_750)
    big_file = os.urandom(99 << 20)
    uploads = [("photo", bomb)] * 3 + [("photo", largest)] * 3 + [("photo", heaviest)] * 2
    uploads += [("file", big_file)] * 3
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "bench"
        p2pm(home, "init", "--name", "Bench")
        proc = start(home)
        try:
            wait(lambda: daemon_info(home, proc.pid))
            api = json.loads((home / "data" / "daemon.json").read_text())["api_url"]
            token = (home / "data" / "api.token").read_text().strip()
            p2pm(home, "circle", "create", "bench")
            at_rest = rss_kib(proc.pid)
            statuses = asyncio.run(post_all(api, token, uploads))
            peak = peak_kib(proc.pid)
        finally:
            stop(proc)
    sizes = ", ".join(f"{len(d) / 1e6:.1f}" for d in (bomb, largest, heaviest, big_file))
    print(f"answers: {statuses} (posts of {sizes} MB)")
    report(
        [("peak resident MB, 11 heavy posts at once", peak / 1024, "at rest", at_rest / 1024)],
        args.json,
    )


if __name__ == "__main__":
    main()
