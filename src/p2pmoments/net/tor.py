"""The daemon's Tor: its own tor process or a system tor, an onion service for the
peer port, and streams to friends' onion services (spec/tor.md).

    tor = await Tor.launch(paths.tor_dir, extra_lines=...)   # or Tor.attach("127.0.0.1:9051")
    await tor.wait_bootstrapped(timeout=120)
    address = await tor.publish(keys.onion, peer_port, authorized=...)   # the same every start
    reader, writer = await tor.dial(friend_onion)                        # retries 0xF0 etc.
    await tor.close()

stem speaks the control protocol; it is synchronous, so every call runs in a
thread and its event callbacks only hand events to the loop (style.md, rule 5).
Decisions (addresses, SOCKS replies, backoff) live in core/onion.py. Secrets
(the onion key, client-auth keys, the control cookie) never reach a log: stem's
own logger, which can trace every command it sends, is kept at WARNING.

Why so long: launching or attaching to tor, publishing the onion service with client
authorisation, and SOCKS streams are each short, but all hold the one control
connection, whose thread and events they share.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import stem.util.log  # noqa: F401  (imported first: it sets stem's logger to TRACE)

from p2pmoments.core.errors import DecodeError, P2PMomentsError
from p2pmoments.core.onion import (
    ONION_PORT,
    ClientAuthKey,
    ClientAuthPublicKey,
    OnionAddress,
    OnionKey,
    SocksError,
    SocksReply,
    TorKeys,
    backoff_delay,
    decode_tor_key_file,
    encode_tor_key_file,
    parse_bootstrap_phase,
    socks_check_method,
    socks_check_reply,
    socks_connect_request,
    socks_greeting,
    socks_reply_length,
    stalled_rend_circuits,
)
from p2pmoments.files import write_file_atomically

__all__ = [
    "BOOTSTRAP_TIMEOUT",
    "CONNECT_TIMEOUT",
    "START_TIMEOUT",
    "Tor",
    "TorError",
    "TorNotFoundError",
    "TorStatus",
    "find_tor",
    "load_or_create_tor_keys",
]

log = logging.getLogger(__name__)
# stem logs every command it sends at TRACE when one of its handlers traces,
# ADD_ONION's key and ONION_CLIENT_AUTH_ADD's secret included, and at INFO the
# raw reply it failed to read: let only its warnings through.
logging.getLogger("stem").setLevel(logging.WARNING)

START_TIMEOUT = 30.0  # from launch to tor's control port answering
BOOTSTRAP_TIMEOUT = 300.0
# One SOCKS connect. Tor itself waits up to 120 s (SocksTimeout), but an
# introduction that reached a service instance as it stopped waits all of it;
# onion connects take seconds, so stop earlier and try again.
CONNECT_TIMEOUT = 40.0
DIAL_TIMEOUT = 300.0  # dial(): all attempts together
STOP_TIMEOUT = 10.0
REFETCH_TIMEOUT = 15.0
AUTH_REFETCHES = 3
_POLL = 0.05

INSTALL_HINT = (
    "install it with `apt install tor` (Debian, Ubuntu), `dnf install tor` (Fedora) "
    "or `brew install tor` (macOS), or give its path in network.tor_path"
)


class TorError(P2PMomentsError):
    """Tor failed to start, bootstrap or do what we asked; the message says what tor said."""


class TorNotFoundError(TorError, FileNotFoundError):
    """No tor program to run; the message says how to install it."""


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


def load_or_create_tor_keys(path: Path) -> TorKeys:
    """The home's onion and client-auth keys, created (mode 0600) on first use, so the
    onion address stays the same across restarts. Blocking: call it in a thread."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        keys = TorKeys(onion=OnionKey.generate(), client_auth=ClientAuthKey.generate())
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            write_file_atomically(path, encode_tor_key_file(keys), mode=0o600, replace=False)
        except FileExistsError:  # another process made it first: use theirs
            return load_or_create_tor_keys(path)
        return keys
    if path.stat().st_mode & 0o077:
        log.warning("%s was readable by others; made it private (0600)", path)
        path.chmod(0o600)
    try:
        return decode_tor_key_file(data)
    except DecodeError as exc:
        raise TorError(f"{path}: {exc}") from None


def find_tor(tor_path: str | os.PathLike[str] | None = None) -> str:
    """The tor program to run: `tor_path` if given, else `tor` on PATH. Blocking."""
    if tor_path is not None:
        path = Path(tor_path)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise TorNotFoundError(f"no tor program at {path}: {INSTALL_HINT}")
        return str(path)
    found = shutil.which("tor")
    if found is None:
        raise TorNotFoundError(f"tor is not installed: {INSTALL_HINT}")
    return found


class Tor:
    """One tor we control: our own child process or a system tor."""

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
    ) -> Tor:
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
    ) -> Tor:
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

    # -- our onion service --------------------------------------------------

    async def publish(
        self,
        key: OnionKey,
        target_port: int,
        *,
        virtual_port: int = ONION_PORT,
        authorized: Iterable[ClientAuthPublicKey] | None = None,
    ) -> OnionAddress:
        """Offer 127.0.0.1:`target_port` as `key`'s onion service on `virtual_port`.
        With `authorized` (possibly empty), only those clients can even find it
        (Tor v3 client authorisation). The service goes when tor or our control
        connection does (never Detach), and its key stays ours (DiscardPK)."""
        clients = None if authorized is None else frozenset(authorized)
        if self._service is not None:
            raise TorError("this tor already publishes our onion service")
        service = _Service(key=key, target=target_port, virtual=virtual_port, clients=clients)
        await self._add_onion(service)
        self._service = service
        self._onion = key.address
        log.info(
            "published onion service %r for port %d%s",
            key.address,
            target_port,
            f" for {len(clients)} authorised clients" if clients is not None else "",
        )
        return key.address

    async def set_authorized_clients(self, authorized: Iterable[ClientAuthPublicKey]) -> None:
        """Change who may reach our service: tor learns a new list only with the service
        re-added, which drops its open onion streams (their links redial)."""
        if self._service is None:
            raise TorError("no onion service is published")
        clients = frozenset(authorized)
        if clients == self._service.clients:
            return
        service = dataclasses.replace(self._service, clients=clients)
        await self._msg(f"DEL_ONION {service.key.address.service_id}")
        self._published.clear()
        self._uploads.clear()
        self._service = None
        await self._add_onion(service)
        self._service = service
        log.info("onion service now admits %d authorised clients", len(clients))

    async def _add_onion(self, service: _Service) -> None:
        from stem.response import convert

        key, clients = service.key, service.clients
        flags = "DiscardPK"
        auth = ""
        if clients is not None:
            flags += ",V3Auth"
            # Tor wants at least one client; a key nobody holds admits nobody (tor pads
            # the list to 16 with fake entries anyway, so it is not visible).
            listed = clients or {ClientAuthKey.generate().public_key}
            auth = "".join(f" ClientAuthV3={c.tor_text()}" for c in sorted(listed, key=bytes))
        response = await self._msg(
            f"ADD_ONION {key.tor_blob()} Flags={flags} "
            f"Port={service.virtual},127.0.0.1:{service.target}{auth}"
        )
        convert("ADD_ONION", response)
        if response.service_id != key.address.service_id:
            raise TorError("tor published our onion key under another address")

    # -- reaching others ----------------------------------------------------

    async def add_client_auth(self, onion: OnionAddress, key: ClientAuthKey) -> None:
        """Let our tor use `key` to reach `onion`'s authorised-only service. Kept in
        tor's memory only (no Flags=Permanent): the daemon adds them again at start."""
        await self._msg(f"ONION_CLIENT_AUTH_ADD {onion.service_id} {key.tor_blob()}")

    async def remove_client_auth(self, onion: OnionAddress) -> None:
        """Forget the client-auth key for `onion`."""
        await self._msg(f"ONION_CLIENT_AUTH_REMOVE {onion.service_id}", ok=("250", "251"))

    async def open_connection(
        self, onion: OnionAddress, port: int = ONION_PORT, *, timeout: float = CONNECT_TIMEOUT
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """One stream to `onion:port` through tor's SOCKS port; SocksError says why not
        (`.retry`: whether trying again later can help)."""
        socks = await self.socks_port()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", socks), timeout
            )
        except (OSError, TimeoutError) as exc:
            raise TorError(f"tor's SOCKS port 127.0.0.1:{socks} does not answer: {exc}") from None
        try:
            async with asyncio.timeout(timeout):
                writer.write(socks_greeting())
                socks_check_method(await reader.readexactly(2))
                writer.write(socks_connect_request(str(onion), port))
                head = await reader.readexactly(5)
                rest = await reader.readexactly(socks_reply_length(head) - 5)
                socks_check_reply(head + rest)
        except BaseException as exc:
            writer.close()
            if isinstance(exc, TimeoutError):
                raise SocksError(
                    f"no answer from the onion service in {timeout:.0f}s", retry=True
                ) from None
            if isinstance(exc, asyncio.IncompleteReadError):
                raise SocksError("tor closed the SOCKS connection", retry=True) from None
            raise
        return reader, writer

    async def dial(
        self,
        onion: OnionAddress,
        port: int = ONION_PORT,
        *,
        timeout: float = DIAL_TIMEOUT,
        jitter: Callable[[], float] = random.random,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """open_connection, tried again with backoff (core/onion.py) while tor says it may
        help (a service just published answers 0xF0 for a second or two) and `timeout`
        lasts; the last SocksError otherwise."""
        deadline = time.monotonic() + timeout
        attempt = 0
        refetches = 0
        while True:
            left = deadline - time.monotonic()
            try:
                return await self.open_connection(
                    onion, port, timeout=max(min(left, CONNECT_TIMEOUT), 0.1)
                )
            except SocksError as exc:
                if exc.reply is None and exc.retry:  # no answer in time
                    await self._close_stalled(onion)
                delay = backoff_delay(attempt, jitter())
                if time.monotonic() + delay > deadline:
                    raise
                if exc.reply in _AUTH_REPLIES and refetches < AUTH_REFETCHES:
                    # Tor answers from its cached descriptor, which may predate the
                    # service listing us (it re-publishes to change its list): wait,
                    # then fetch it anew, a few times.
                    refetches += 1
                    await asyncio.sleep(delay)
                    await self._refetch(onion, timeout=min(REFETCH_TIMEOUT, max(left, 0.1)))
                    delay = 0.0
                elif not exc.retry:
                    raise
                log.debug("onion %r: %s; again in %.1fs", onion, exc, delay)
            attempt += 1
            await asyncio.sleep(delay)

    async def _close_stalled(self, onion: OnionAddress) -> None:
        """Close our rendezvous circuits to `onion` that still wait for it: tor would
        hang the next stream on them too."""
        try:
            status = await self._get_info("circuit-status")
            for circuit in stalled_rend_circuits(status, onion.service_id):
                await self._msg(f"CLOSECIRCUIT {circuit}")
        except TorError as exc:
            log.debug("could not close stalled circuits: %s", exc)

    async def _refetch(self, onion: OnionAddress, timeout: float) -> None:
        """HSFETCH `onion`'s descriptor and wait (at most `timeout`) until one arrives."""
        done = self._fetches.setdefault(onion.service_id, asyncio.Event())
        done.clear()
        try:
            await self._msg(f"HSFETCH {onion.service_id}")
            async with asyncio.timeout(timeout):
                await done.wait()
        except (TorError, TimeoutError):
            pass  # the next attempt says what is wrong
        finally:
            self._fetches.pop(onion.service_id, None)

    async def socks_port(self) -> int:
        """Tor's SOCKS port on loopback."""
        if self._socks_port is None:
            listeners = await asyncio.to_thread(self._controller.get_listeners, _socks_type())
            tcp = [p for host, p in listeners if host in ("127.0.0.1", "::1", "localhost")]
            if not tcp:
                raise TorError("tor has no SOCKS port on loopback (set SocksPort 127.0.0.1:9050)")
            self._socks_port = int(tcp[0])
        return self._socks_port

    # -- stop ---------------------------------------------------------------

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

    async def __aenter__(self) -> Tor:
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


_AUTH_REPLIES = (SocksReply.ONION_MISSING_CLIENT_AUTH, SocksReply.ONION_BAD_CLIENT_AUTH)


def _socks_type() -> Any:
    from stem.control import Listener

    return Listener.SOCKS


def _prepare_data_dir(data_dir: Path, extra: Sequence[str]) -> tuple[Path, int]:
    """Write our tor's torrc; return it and the fd of its output log. Blocking."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    data_dir.chmod(0o700)  # tor refuses a DataDirectory others can read
    (data_dir / "onion-auth").mkdir(exist_ok=True, mode=0o700)
    for stale in ("control-port", "notice.log"):  # this run's only: tor would append
        with contextlib.suppress(FileNotFoundError):
            (data_dir / stale).unlink()
    lines = [
        f"DataDirectory {data_dir}",
        "RunAsDaemon 0",
        "ControlPort 127.0.0.1:auto",
        f"ControlPortWriteToFile {data_dir / 'control-port'}",
        "CookieAuthentication 1",
        f"CookieAuthFile {data_dir / 'control_auth_cookie'}",
        "SocksPort 127.0.0.1:auto ExtendedErrors",
        f"ClientOnionAuthDir {data_dir / 'onion-auth'}",
        f"Log notice file {data_dir / 'notice.log'}",
        # If we die without closing our control connection, tor still goes.
        f"__OwningControllerProcess {os.getpid()}",
        *extra,
    ]
    torrc = data_dir / "torrc"
    write_file_atomically(torrc, ("\n".join(lines) + "\n").encode(), mode=0o600)
    out = os.open(data_dir / "tor.out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    return torrc, out


async def _wait_control_port(
    proc: asyncio.subprocess.Process, data_dir: Path, timeout: float
) -> int:
    """Poll for the file tor writes its control port to, failing fast if tor exits."""
    path = data_dir / "control-port"
    try:
        async with asyncio.timeout(timeout):
            while True:
                if proc.returncode is not None:
                    raise TorError(
                        f"tor exited with status {proc.returncode}: "
                        f"{await asyncio.to_thread(_tail, data_dir)}"
                    )
                text = await asyncio.to_thread(_read_text, path)
                # PORT=127.0.0.1:PORT, written whole once the port listens.
                if text.startswith("PORT=") and text.endswith("\n"):
                    return int(text.strip().rpartition(":")[2])
                await asyncio.sleep(_POLL)
    except TimeoutError:
        raise TorError(
            f"tor's control port did not open in {timeout:.0f}s: "
            f"{await asyncio.to_thread(_tail, data_dir)}"
        ) from None


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def _tail(data_dir: Path, lines: int = 5) -> str:
    """The last lines tor wrote, for an error message (tor's notices carry no secrets)."""
    text = _read_text(data_dir / "tor.out") or _read_text(data_dir / "notice.log")
    return " | ".join(text.strip().splitlines()[-lines:]) or "it said nothing"


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


async def _stop_process(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM by pid, then SIGKILL if it lingers."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
