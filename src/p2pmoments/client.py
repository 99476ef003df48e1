"""A small synchronous client of the control API, for the CLI.

The CLI never opens the database: every command but init, run and service goes
through the running daemon's API, found through daemon.json.
"""

from __future__ import annotations

import json
import socket
from typing import Any
from urllib.parse import urlsplit

from p2pmoments.core.errors import P2PMomentsError
from p2pmoments.paths import Paths
from p2pmoments.runinfo import read_daemon_info

__all__ = ["ApiCallError", "ApiClient", "DaemonNotRunningError"]

TIMEOUT = 30.0


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
        self, path: str, fields: dict[str, str], files: list[tuple[str, str, bytes, str]]
    ) -> Any:
        """POST multipart/form-data: fields, and files as (part name, filename, data, type)."""
        import secrets

        boundary = secrets.token_hex(16)
        out = bytearray()
        for name, value in fields.items():
            out += (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
            ).encode()
        for name, filename, data, media_type in files:
            safe = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
            out += (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                f'filename="{safe}"\r\nContent-Type: {media_type}\r\n\r\n'
            ).encode()
            out += data + b"\r\n"
        out += f"--{boundary}--\r\n".encode()
        answer = self._send("POST", path, bytes(out), f"multipart/form-data; boundary={boundary}")
        return json.loads(answer)

    def download(self, path: str) -> bytes:
        """GET raw bytes (a photo or a file)."""
        return self._send("GET", path, None, None)

    def _send(self, method: str, path: str, data: bytes | None, content_type: str | None) -> bytes:
        try:
            status, body = _exchange(
                self.base_url + path, method, data, content_type, self._token, TIMEOUT
            )
        except (OSError, ValueError) as exc:  # refused, reset, timed out, not HTTP
            raise DaemonNotRunningError(
                f"the daemon (pid {self.pid}) does not answer at {self.base_url}: "
                f"{exc}; is it still running?"
            ) from None
        if status >= 400:
            try:
                error = json.loads(body)["error"]
                code, message = str(error["code"]), str(error["message"])
            except (ValueError, KeyError, TypeError):
                code, message = "http", f"HTTP {status}"
            raise ApiCallError(status, code, message)
        return body


def _exchange(
    url: str,
    method: str,
    data: bytes | None,
    content_type: str | None,
    token: str,
    timeout: float,
) -> tuple[int, bytes]:
    """One HTTP/1.1 request to our own loopback API, and (status, body) of its answer.

    Written out rather than through urllib.request or http.client: those import the
    email package (and ssl) to parse headers, half of a CLI command's start-up; the
    daemon's answers are plain (Content-Length or chunked, then the connection closes)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None or parts.port is None:
        raise ValueError(f"{url!r} is not the daemon's loopback address")
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    head = [
        f"{method} {target} HTTP/1.1",
        f"Host: {parts.netloc}",
        f"Authorization: Bearer {token}",
        "Accept: application/json",
        "Connection: close",
        f"Content-Length: {len(data or b'')}",
    ]
    if content_type is not None:
        head.append(f"Content-Type: {content_type}")
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (data or b""))
        answer = bytearray()
        while chunk := sock.recv(1 << 16):
            answer += chunk
    header, sep, body = bytes(answer).partition(b"\r\n\r\n")
    lines = header.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    if not sep or not version.startswith("HTTP/1.") or not rest[:3].isdigit():
        raise ValueError("the answer is not HTTP")
    fields = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    if fields.get("transfer-encoding", "").lower() == "chunked":
        body = _unchunk(body)
    elif "content-length" in fields:
        size = int(fields["content-length"])
        if len(body) < size:
            raise ValueError("the answer was cut short")
        body = body[:size]
    return int(rest[:3]), body


def _unchunk(data: bytes) -> bytes:
    """A chunked transfer-encoded body, decoded (RFC 9112 section 7.1)."""
    out, pos = bytearray(), 0
    while True:
        end = data.index(b"\r\n", pos)
        size = int(data[pos:end].split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += data[end + 2 : end + 2 + size]
        pos = end + 2 + size + 2
