"""A small synchronous client of the control API, for the CLI.

The CLI never opens the database: every command but init, run and service goes
through the running daemon's API, found through daemon.json.

It speaks HTTP/1.1 to our own loopback API itself rather than through urllib.request
or http.client: those import the email package (and ssl) to parse headers, half of a
CLI command's start-up. Uploads and downloads stream, a piece at a time.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from p2pmoments.core.errors import P2PMomentsError
from p2pmoments.paths import Paths
from p2pmoments.runinfo import read_daemon_info

__all__ = ["ApiCallError", "ApiClient", "DaemonNotRunningError"]

TIMEOUT = 30.0
UPLOAD_TIMEOUT = 600.0  # a big file is synced to disk before the post is answered
UPLOAD_PIECE = 1 << 20
DOWNLOAD_PIECE = 1 << 20
MAX_HEAD = 64 * 1024  # the answer's status line and header fields


class DaemonNotRunningError(P2PMomentsError):
    """No daemon answers for this home."""


class ApiCallError(P2PMomentsError):
    """The API answered with an error."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class ApiClient:
    """Calls the API of the daemon running on one home."""

    def __init__(self, paths: Paths) -> None:
        info = read_daemon_info(paths)
        if info is None:
            home = f" --home {paths.home}" if paths.home is not None else ""
            raise DaemonNotRunningError(
                f"no daemon is running on {paths.data_dir}; start one with `p2pmoments{home} run`"
            )
        self.base_url = info.api_url
        self.pid = info.pid
        try:
            self._token = paths.token_file.read_text(encoding="ascii").strip()
        except OSError as exc:
            raise P2PMomentsError(f"cannot read the API token {paths.token_file}: {exc}") from None

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Make one request and return the decoded JSON answer."""
        data = None if body is None else json.dumps(body).encode()
        content_type = None if data is None else "application/json"
        return json.loads(self._send(method, path, data, content_type) or b"null")

    def post_multipart(
        self,
        path: str,
        fields: dict[str, str],
        files: list[tuple[str, str, bytes | Path, str]],
    ) -> Any:
        """POST multipart/form-data: fields first, then files as (part name, filename, data
        or a path to read, type). A file given by its path is streamed, a piece at a
        time, never read whole."""
        boundary = secrets.token_hex(16)
        pieces: list[bytes | tuple[Path, int]] = []
        for name, value in fields.items():
            head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
            pieces.append(f"{head}{value}\r\n".encode())
        for name, filename, data, media_type in files:
            safe = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
            size = len(data) if isinstance(data, bytes) else _size_of(data)
            pieces.append(
                (
                    f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                    f'filename="{safe}"\r\nContent-Type: {media_type}\r\n'
                    f"Content-Length: {size}\r\n\r\n"
                ).encode()
            )
            pieces.append(data if isinstance(data, bytes) else (data, size))
            pieces.append(b"\r\n")
        pieces.append(f"--{boundary}--\r\n".encode())
        length = sum(len(p) if isinstance(p, bytes) else p[1] for p in pieces)
        answer = self._send(
            "POST",
            path,
            _stream(pieces),
            f"multipart/form-data; boundary={boundary}",
            length=length,
            timeout=UPLOAD_TIMEOUT,
        )
        return json.loads(answer)

    def download(self, path: str) -> bytes:
        """GET raw bytes (a photo or a file)."""
        return self._send("GET", path, None, None)

    def download_to(self, path: str, output: Path) -> int:
        """GET a photo or file into `output`, a piece at a time, written whole or not at
        all (a temporary file, synced, then renamed); returns its size."""
        tmp = output.with_name(f".{output.name}.{secrets.token_hex(4)}.tmp")
        try:
            with (
                self._open("GET", path, None, None, None, TIMEOUT) as answer,
                open(tmp, "xb") as out,
            ):
                os.chmod(tmp, 0o600)
                size = 0
                for piece in answer.pieces():
                    out.write(piece)
                    size += len(piece)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, output)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return size

    def _send(
        self,
        method: str,
        path: str,
        data: bytes | Iterator[bytes] | None,
        content_type: str | None,
        *,
        length: int | None = None,
        timeout: float = TIMEOUT,
    ) -> bytes:
        with self._open(method, path, data, content_type, length, timeout) as answer:
            return b"".join(answer.pieces())

    @contextlib.contextmanager
    def _open(
        self,
        method: str,
        path: str,
        data: bytes | Iterator[bytes] | None,
        content_type: str | None,
        length: int | None,
        timeout: float,
    ) -> Iterator[_Answer]:
        """The answer to one request, its body still to read; ApiCallError for an error
        answer, DaemonNotRunningError when no daemon answers (or it stops half-way)."""
        with contextlib.ExitStack() as stack:
            try:
                answer = stack.enter_context(
                    _exchange(
                        self.base_url + path, method, data, content_type, length, self._token,
                        timeout,
                    )
                )  # fmt: skip
            except (OSError, _NotHttpError) as exc:
                raise DaemonNotRunningError(
                    f"the daemon (pid {self.pid}) does not answer at {self.base_url}: "
                    f"{exc}; is it still running?"
                ) from None
            if answer.status >= 400:
                body = b"".join(answer.pieces())
                try:
                    error = json.loads(body)["error"]
                    code, message = str(error["code"]), str(error["message"])
                except (ValueError, KeyError, TypeError):
                    code, message = "http", f"HTTP {answer.status}"
                raise ApiCallError(answer.status, code, message)
            yield answer


class _NotHttpError(DaemonNotRunningError):
    """What answered is not our daemon speaking HTTP/1.1, or it stopped half-way."""


class _Answer:
    """An HTTP/1.1 answer on a socket: status and header fields, then the body read a
    piece at a time (Content-Length, chunked, or to the end of the connection)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = bytearray()
        head = self._until(b"\r\n\r\n", MAX_HEAD).decode("latin-1")
        lines = head.split("\r\n")
        version, _, rest = lines[0].partition(" ")
        if not version.startswith("HTTP/1.") or not rest[:3].isdigit():
            raise _NotHttpError("the answer is not HTTP")
        self.status = int(rest[:3])
        self.fields = {
            k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])
        }

    def pieces(self) -> Iterator[bytes]:
        if self.fields.get("transfer-encoding", "").lower() == "chunked":
            while True:
                line = self._until(b"\r\n", 1024)
                try:
                    size = int(line.split(b";")[0], 16)
                except ValueError:
                    raise _NotHttpError("a malformed chunk in the answer") from None
                if size == 0:
                    return
                yield from self._take(size)
                self._until(b"\r\n", 2)
        elif "content-length" in self.fields:
            try:
                size = int(self.fields["content-length"])
            except ValueError:
                raise _NotHttpError("a malformed Content-Length in the answer") from None
            yield from self._take(size)
        else:
            if self._buf:
                yield bytes(self._buf)
                self._buf.clear()
            while data := self._recv():
                yield data

    def _recv(self) -> bytes:
        try:
            return self._sock.recv(DOWNLOAD_PIECE)
        except OSError as exc:  # reset, timed out
            raise _NotHttpError(f"the daemon stopped answering: {exc}") from None

    def _fill(self) -> None:
        data = self._recv()
        if not data:
            raise _NotHttpError("the answer was cut short")
        self._buf += data

    def _until(self, separator: bytes, limit: int) -> bytes:
        """What comes before `separator` (which is consumed too)."""
        while (end := self._buf.find(separator)) < 0:
            if len(self._buf) > limit:
                raise _NotHttpError("the answer's head is too long")
            self._fill()
        out = bytes(self._buf[:end])
        del self._buf[: end + len(separator)]
        return out

    def _take(self, size: int) -> Iterator[bytes]:
        while size > 0:
            if not self._buf:
                self._fill()
            piece = bytes(self._buf[:size])
            del self._buf[: len(piece)]
            size -= len(piece)
            yield piece


@contextlib.contextmanager
def _exchange(
    url: str,
    method: str,
    data: bytes | Iterable[bytes] | None,
    content_type: str | None,
    length: int | None,
    token: str,
    timeout: float,
) -> Iterator[_Answer]:
    """One HTTP/1.1 request to our own loopback API, and its answer (the daemon closes
    the connection after it)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None or parts.port is None:
        raise _NotHttpError(f"{url!r} is not the daemon's loopback address")
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    if isinstance(data, bytes):
        length = len(data)
    head = [
        f"{method} {target} HTTP/1.1",
        f"Host: {parts.netloc}",
        f"Authorization: Bearer {token}",
        "Accept: application/json",
        "Connection: close",
        f"Content-Length: {length or 0}",
    ]
    if content_type is not None:
        head.append(f"Content-Type: {content_type}")
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            if isinstance(data, bytes):
                sock.sendall(data)
            elif data is not None:
                for piece in data:
                    sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            # The daemon may refuse a post before reading all of it (413, 400): its
            # answer is what matters. If there is none, the reset is the error.
            pass
        yield _Answer(sock)


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as exc:
        raise P2PMomentsError(f"cannot read {path}: {exc.strerror}") from None


def _stream(pieces: list[bytes | tuple[Path, int]]) -> Iterator[bytes]:
    """The body: bytes as they are, files read a piece at a time (exactly the size said
    in their part's header)."""
    for piece in pieces:
        if isinstance(piece, bytes):
            yield piece
            continue
        path, size = piece
        try:
            with path.open("rb") as f:
                left = size
                while left:
                    data = f.read(min(UPLOAD_PIECE, left))
                    if not data:
                        break
                    left -= len(data)
                    yield data
        except OSError as exc:
            raise P2PMomentsError(f"cannot read {path}: {exc.strerror}") from None
        if left:
            raise P2PMomentsError(f"{path} changed while it was being sent")
