"""A small synchronous client of the control API, for the CLI.

The CLI never opens the database: every command but init, run and service goes
through the running daemon's API, found through daemon.json.
"""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from typing import Any

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
        request = urllib.request.Request(  # noqa: S310 - the URL is our own loopback API
            self.base_url + path, data=data, method=method
        )
        request.add_header("Authorization", f"Bearer {self._token}")
        if content_type is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310
                return bytes(response.read())
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
