"""A small synchronous client of the control API, for the CLI.

The CLI never opens the database: every command but init, run and service goes
through the running daemon's API, found through daemon.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from p2pmoments.core.errors import P2PMomentsError
from p2pmoments.paths import Paths
from p2pmoments.runinfo import read_daemon_info

__all__ = ["ApiCallError", "ApiClient", "DaemonNotRunningError"]

TIMEOUT = 30.0
UPLOAD_TIMEOUT = 600.0  # a big file is synced to disk before the post is answered
UPLOAD_PIECE = 1 << 20
DOWNLOAD_PIECE = 1 << 20


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
        request = self._request("GET", path, None, None)
        tmp = output.with_name(f".{output.name}.{secrets.token_hex(4)}.tmp")
        try:
            with self._open(request, TIMEOUT) as response, open(tmp, "xb") as out:
                os.chmod(tmp, 0o600)
                size = 0
                while piece := response.read(DOWNLOAD_PIECE):
                    out.write(piece)
                    size += len(piece)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, output)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return size

    def _request(
        self,
        method: str,
        path: str,
        data: bytes | Iterator[bytes] | None,
        content_type: str | None,
        length: int | None = None,
    ) -> urllib.request.Request:
        request = urllib.request.Request(  # noqa: S310 - the URL is our own loopback API
            self.base_url + path, data=data, method=method
        )
        request.add_header("Authorization", f"Bearer {self._token}")
        if content_type is not None:
            request.add_header("Content-Type", content_type)
        if length is not None:
            request.add_header("Content-Length", str(length))
        return request

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
        request = self._request(method, path, data, content_type, length)
        with self._open(request, timeout) as response:
            return bytes(response.read())

    @contextlib.contextmanager
    def _open(self, request: urllib.request.Request, timeout: float) -> Iterator[Any]:
        """The response to `request`; ApiCallError for an error answer."""
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                yield response
        except urllib.error.HTTPError as exc:
            try:
                error = json.loads(exc.read())["error"]
                code, message = str(error["code"]), str(error["message"])
            except (ValueError, KeyError, TypeError):
                code, message = "http", f"HTTP {exc.code}"
            raise ApiCallError(exc.code, code, message) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            raise DaemonNotRunningError(
                f"the daemon (pid {self.pid}) does not answer at {self.base_url}: "
                f"{getattr(exc, 'reason', exc)}; is it still running?"
            ) from None


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
