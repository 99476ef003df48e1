"""The control connection to a tor (spec/tor.md): `TorControl` starts our own tor or
attaches to a system one, follows its bootstrap and our service's publication through
its events, sends it commands, and lets go of it.

stem speaks the control protocol; it is synchronous, so every call runs in a thread
and its event callbacks only hand events to the loop (style.md, rule 5). Secrets (the
onion key, client-auth keys, the control cookie) never reach a log: stem's own logger,
which can trace every command it sends, is kept at WARNING.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import stem.util.log  # noqa: F401  (imported first: it sets stem's logger to TRACE)

from p2pmoments.core.onion import ClientAuthPublicKey, OnionAddress, OnionKey, parse_bootstrap_phase
from p2pmoments.net.torprocess import (
    START_TIMEOUT,
    TorError,
    _prepare_data_dir,
    _stop_process,
    _wait_control_port,
    find_tor,
)

__all__ = ["BOOTSTRAP_TIMEOUT", "TorControl", "TorStatus"]

log = logging.getLogger(__name__)
# stem logs every command it sends at TRACE when one of its handlers traces,
# ADD_ONION's key and ONION_CLIENT_AUTH_ADD's secret included, and at INFO the
# raw reply it failed to read: let only its warnings through.
logging.getLogger("stem").setLevel(logging.WARNING)

BOOTSTRAP_TIMEOUT = 300.0


@dataclass(frozen=True, slots=True, kw_only=True)
class TorStatus:
    """A snapshot of our tor, for `status` and events."""

    own: bool  # we run this tor (else a system tor's control port)
    version: str
    bootstrap: int  # percent
    summary: str  # tor's words for the bootstrap phase
    socks_port: int | None
    onion: OnionAddress | None  # published by us, if any
    published: bool  # its descriptor reached at least one directory
    client_auth: bool  # the service admits authorised clients only
    running: bool  # our control connection is up (and our own tor has not exited)

    @property
    def bootstrapped(self) -> bool:
        return self.bootstrap >= 100


class TorControl:
    """One tor we control, through its control port: our own child process or a system
    tor. `Tor` (net/tor.py) adds our onion service and streams to others'."""

    def __init__(
        self,
        controller: Any,
        *,
        proc: asyncio.subprocess.Process | None,
        on_change: Callable[[TorStatus], None] | None = None,
    ) -> None:
        # Use Tor.launch or Tor.attach.
        self._controller = controller
        self._proc = proc
        self._on_change = on_change
        self._loop = asyncio.get_running_loop()
        self._version = "unknown"
        self._bootstrap = (0, "")
        self._bootstrapped = asyncio.Event()
        self._socks_port: int | None = None
        self._onion: OnionAddress | None = None
        self._service: _Service | None = None
        self._uploads: set[str] = set()
        self._published = asyncio.Event()
        self._fetches: dict[str, asyncio.Event] = {}
        self._gone = asyncio.Event()  # our control connection closed, or our tor exited
        self._closed = False

    # -- start --------------------------------------------------------------

    @classmethod
    async def launch(
        cls,
        data_dir: Path,
        *,
        tor_path: str | os.PathLike[str] | None = None,
        extra_lines: Sequence[str] = (),
        timeout: float = START_TIMEOUT,
        on_change: Callable[[TorStatus], None] | None = None,
    ) -> Self:
        """Start our own tor with its DataDirectory in `data_dir` (inside the home, so
        each home runs its own). It belongs to this process: it exits when our control
        connection closes, or when this process dies (__OwningControllerProcess).
        `on_change` is called on the loop with a new status when bootstrap progress
        or publication changes (for the daemon's events)."""
        for line in extra_lines:
            if "\n" in line or "\r" in line:
                raise ValueError("a torrc line cannot hold a line break")
        tor = await asyncio.to_thread(find_tor, tor_path)
        torrc, out = await asyncio.to_thread(_prepare_data_dir, data_dir, extra_lines)
        try:
            proc = await asyncio.create_subprocess_exec(
                tor,
                "-f",
                str(torrc),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                cwd=data_dir,
            )
        finally:
            os.close(out)
        try:
            port = await _wait_control_port(proc, data_dir, timeout)
            controller = await asyncio.to_thread(_connect, ("127.0.0.1", port), None)
        except BaseException:
            await _stop_process(proc)
            raise
        self = cls(controller, proc=proc, on_change=on_change)
        try:
            await self._watch()
        except BaseException:
            await self.close()
            raise
        log.info("started tor %s (pid %d) in %s", self._version, proc.pid, data_dir)
        return self

    @classmethod
    async def attach(
        cls,
        control: str,
        *,
        password: str | None = None,
        on_change: Callable[[TorStatus], None] | None = None,
    ) -> Self:
        """Use a running tor through its control port (`HOST:PORT`, or the path of a
        control socket); cookie authentication needs read access to its cookie file.
        (stem takes ownership of a tor that names this process in
        __OwningControllerProcess, so closing would stop it; a system tor never does.)"""
        if control.startswith("/"):
            target: tuple[str, int] | str = control
        else:
            host, _, port = control.rpartition(":")
            if not port.isdigit():
                raise ValueError(f"tor's control port is HOST:PORT or a socket path, not {control}")
            target = (host.strip("[]") or "127.0.0.1", int(port))
        controller = await asyncio.to_thread(_connect, target, password)
        self = cls(controller, proc=None, on_change=on_change)
        try:
            await self._watch()
        except BaseException:
            await self.close()
            raise
        log.info("using the running tor %s at %s", self._version, control)
        return self

    async def _watch(self) -> None:
        from stem.control import EventType, State

        def listener(event: Any) -> None:  # stem's thread: hand over to the loop only
            with contextlib.suppress(RuntimeError):  # the loop has closed
                self._loop.call_soon_threadsafe(self._on_event, event)

        def on_state(controller: Any, state: Any, timestamp: float) -> None:  # stem's thread
            if state == State.CLOSED:
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(self._gone.set)

        await asyncio.to_thread(
            self._controller.add_event_listener,
            listener,
            EventType.STATUS_CLIENT,
            EventType.HS_DESC,
        )
        await asyncio.to_thread(self._controller.add_status_listener, on_state)
        self._version = (await self._get_info("version")).split(" ")[0]
        phase = await self._get_info("status/bootstrap-phase")
        self._set_bootstrap(*parse_bootstrap_phase(phase))

    # -- state --------------------------------------------------------------

    def status(self) -> TorStatus:
        """What our tor is doing now."""
        return TorStatus(
            own=self._proc is not None,
            version=self._version,
            bootstrap=self._bootstrap[0],
            summary=self._bootstrap[1],
            socks_port=self._socks_port,
            onion=self._onion,
            published=self._published.is_set(),
            client_auth=self._service is not None and self._service.clients is not None,
            running=not self._closed
            and bool(self._controller.is_alive())
            and (self._proc is None or self._proc.returncode is None),
        )

    @property
    def pid(self) -> int | None:
        """Our own tor's process id (None for a system tor)."""
        return self._proc.pid if self._proc is not None else None

    async def wait_bootstrapped(self, timeout: float = BOOTSTRAP_TIMEOUT) -> None:
        """Return once tor has a consensus and can build circuits; TorError on timeout."""
        try:
            async with asyncio.timeout(timeout):
                await self._bootstrapped.wait()
        except TimeoutError:
            raise TorError(
                f"tor did not bootstrap in {timeout:.0f}s: at {self._bootstrap[0]}% "
                f"({self._bootstrap[1] or 'no progress'})"
            ) from None

    async def wait_gone(self) -> None:
        """Return once this tor can no longer serve us: our own tor exited, or the control
        connection to it closed (a system tor stopped or restarted)."""
        if self._proc is None:
            await self._gone.wait()
            return
        exited = asyncio.ensure_future(self._proc.wait())
        closed = asyncio.ensure_future(self._gone.wait())
        try:
            await asyncio.wait({exited, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (exited, closed):
                waiter.cancel()

    async def wait_published(self, timeout: float = BOOTSTRAP_TIMEOUT) -> None:
        """Return once our onion service's descriptor reached a directory."""
        try:
            async with asyncio.timeout(timeout):
                await self._published.wait()
        except TimeoutError:
            raise TorError(f"our onion service was not published in {timeout:.0f}s") from None

    async def close(self) -> None:
        """Remove our service, let go of tor, and stop our own tor by its pid. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._proc is None and self._service is not None:
                with contextlib.suppress(Exception):
                    await self._msg(f"DEL_ONION {self._service.key.address.service_id}")
        finally:
            self._bootstrapped.clear()
            await asyncio.to_thread(self._controller.close)
            if self._proc is not None:
                await _stop_process(self._proc)
                log.info("stopped tor (pid %d)", self._proc.pid)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- inside -------------------------------------------------------------

    def _on_event(self, event: Any) -> None:
        """One event from tor, on the loop."""
        if self._closed:
            return
        kind = type(event).__name__
        if kind == "StatusEvent" and event.action == "BOOTSTRAP":
            args = event.arguments or {}
            progress = str(args.get("PROGRESS", "0"))
            self._set_bootstrap(
                min(int(progress), 100) if progress.isdigit() else 0,
                str(args.get("SUMMARY", ""))[:200],
            )
        elif kind == "HSDescEvent":
            action = str(event.action)
            fetch = self._fetches.get(str(event.address))
            if fetch is not None and action == "RECEIVED":
                fetch.set()  # FAILED ones (a directory without it) are waited out
            if self._onion is None:
                return
            ours = event.address == self._onion.service_id
            if action == "UPLOAD" and ours:
                self._uploads.add(str(event.directory_fingerprint))
            elif (
                action == "UPLOADED"
                and (ours or event.directory_fingerprint in self._uploads)
                and not self._published.is_set()
            ):
                log.info("onion service %r published", self._onion)
                self._published.set()
                self._notify()

    def _set_bootstrap(self, progress: int, summary: str) -> None:
        if progress < self._bootstrap[0] and self._bootstrapped.is_set():
            return  # a late event from before
        changed = (progress, summary) != self._bootstrap
        self._bootstrap = (progress, summary)
        if progress >= 100:
            self._bootstrapped.set()
        if changed:
            self._notify()

    def _notify(self) -> None:
        if self._on_change is None:
            return
        try:
            self._on_change(self.status())
        except Exception:
            log.exception("a tor status listener failed")

    async def _get_info(self, key: str) -> str:
        import stem

        try:
            return str(await asyncio.to_thread(self._controller.get_info, key))
        except stem.ControllerError as exc:
            raise TorError(f"tor did not answer GETINFO {key}: {exc}") from None

    async def _msg(self, command: str, ok: tuple[str, ...] = ("250", "251", "252")) -> Any:
        """Send one control command; TorError with tor's words unless it says OK. The
        command may hold secrets: it is never logged or put in the error."""
        import stem

        verb = command.split(" ", 1)[0]
        try:
            response = await asyncio.to_thread(self._controller.msg, command)
        except stem.ControllerError as exc:
            raise TorError(f"tor refused {verb}: {exc}") from None
        code = response.content()[0][0]
        if code not in ok:
            raise TorError(f"tor refused {verb}: {code} {response}")
        return response


@dataclass(frozen=True, slots=True, kw_only=True)
class _Service:
    """What we asked tor to publish."""

    key: OnionKey
    target: int
    virtual: int
    clients: frozenset[ClientAuthPublicKey] | None


def _connect(target: tuple[str, int] | str, password: str | None) -> Any:
    """A stem Controller, authenticated (cookie, or `password`). Blocking."""
    import stem
    import stem.connection
    from stem.control import Controller

    try:
        if isinstance(target, str):
            controller = Controller.from_socket_file(target)
        else:
            controller = Controller.from_port(target[0], target[1])
    except stem.SocketError as exc:
        raise TorError(f"cannot reach tor's control port {target}: {exc}") from None
    try:
        # Cookie auth reads the cookie file tor names; a system tor's is readable by
        # its group only (debian-tor on Debian).
        controller.authenticate(password=password)
    except stem.connection.AuthenticationFailure as exc:
        controller.close()
        raise TorError(f"tor's control port refused us: {exc}") from None
    return controller
