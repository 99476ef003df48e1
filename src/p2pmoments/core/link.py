"""A link between two daemons, sans-I/O (spec/transport.md).

Feed it bytes with `receive_data(data, now)`, collect events, send what
`data_to_send()` returns, and call `tick(now)` by `next_deadline`. It never
touches a socket or a clock.

Life of a link, all transitions in `_TRANSITIONS`:
HANDSHAKE -> (responder: AWAIT_ACCEPT ->) HELLO -> OPEN -> CLOSED.
Any error moves it to CLOSED with a close code; the shell then drops the socket.

Why so long: the handshake, the frames and the stream of messages of one link are one
state machine; frames are read and written without copying what they carry (a chunk
travels at hundreds of MB/s), which takes a few more lines than slicing.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from p2pmoments.core import wire
from p2pmoments.core.crypto import BadSignatureError, LinkPublicKey, VerifyKey
from p2pmoments.core.errors import DecodeError, LocalProtocolError
from p2pmoments.core.identity import Identity, PublicIdentity
from p2pmoments.core.noise import CipherState, HandshakeState, NoiseError, Pattern
from p2pmoments.core.profile import check_display_name

__all__ = [
    "DEAD_AFTER",
    "FIRST_MESSAGE_TIMEOUT",
    "HANDSHAKE_TIMEOUT",
    "KEEPALIVE_INTERVAL",
    "MAX_APP_MESSAGE",
    "PROLOGUE",
    "AcceptRequest",
    "CloseCode",
    "Closed",
    "Established",
    "Link",
    "LinkState",
    "MessageReceived",
]

PROLOGUE = b"p2pmoments/1"
PROTOCOL_VERSION = 1
MAX_FRAME = 65535
MAX_APP_MESSAGE = 1 << 20  # 1 MiB, bounds the receive buffer
MAX_PLAINTEXT = MAX_FRAME - 16
HANDSHAKE_TIMEOUT = 10.0
# A responder waits this long for message 1: a friend's daemon sends it the moment its
# connection opens, so only a connection holding a handshake slot idle waits longer
# (spec/transport.md section 9).
FIRST_MESSAGE_TIMEOUT = 3.0
KEEPALIVE_INTERVAL = 15.0
DEAD_AFTER = 45.0

MODE_IK = 1
MODE_IKPSK1 = 2
_MODES = {MODE_IK: Pattern.IK, MODE_IKPSK1: Pattern.IKpsk1}

# Application message types (key 0 of every message).
T_HELLO, T_PING, T_PONG, T_CLOSE = 1, 2, 3, 4
FIRST_APP_TYPE = 16  # types below this belong to the link itself


class CloseCode(enum.IntEnum):
    """Why a link ended (spec/transport.md section 6)."""

    NORMAL = 0
    PROTOCOL_ERROR = 1
    NOT_ACCEPTED = 2
    TIMEOUT = 3
    REPLACED = 4
    SHUTDOWN = 5
    TOO_LARGE = 6
    OVERLOAD = 7
    WRONG_IDENTITY = 8
    PAIRING_REFUSED = 9
    UPGRADE_REQUIRED = 10  # spec/devices.md section 8: the peer knows no devices


class LinkState(enum.Enum):
    """Where a link is in its life."""

    HANDSHAKE = "handshake"
    AWAIT_ACCEPT = "await_accept"
    HELLO = "hello"
    OPEN = "open"
    CLOSED = "closed"


_TRANSITIONS = {
    (LinkState.HANDSHAKE, "handshake_done"): LinkState.HELLO,
    (LinkState.HANDSHAKE, "need_accept"): LinkState.AWAIT_ACCEPT,
    (LinkState.AWAIT_ACCEPT, "accept"): LinkState.HELLO,
    (LinkState.HELLO, "hello"): LinkState.OPEN,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class AcceptRequest:
    """Responder only: an initiator proved it holds `link_key`; call accept() or refuse()."""

    link_key: bytes
    pairing_token: bytes | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Established:
    """Both hellos verified: the peer is `peer`, who calls itself `name`."""

    peer: PublicIdentity  # the device: its key signs the link key (a person's first: P)
    name: str
    handshake_hash: bytes
    listen_port: int | None
    person: bytes = b""  # the person the device says it is (hello key 2); checked by the shell
    knows_devices: bool = False  # the hello carried key 6 (spec/devices.md section 8)


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageReceived:
    """An application message (key 0 is its type, at least FIRST_APP_TYPE)."""

    body: dict[int, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class Closed:
    """The link is over; `by_peer` if the other side closed it."""

    code: CloseCode
    reason: str
    by_peer: bool


Event = AcceptRequest | Established | MessageReceived | Closed


def _frames(parts: Sequence[bytes], size: int) -> Iterator[bytes | memoryview]:
    """The concatenation of `parts`, `size` bytes at a time: views where a piece lies in
    one part, joined where it spans parts."""
    pending: list[bytes | memoryview] = []
    have = 0
    for part in parts:
        view = memoryview(part)
        pos = 0
        while pos < len(view):
            take = min(size - have, len(view) - pos)
            piece = view[pos : pos + take]
            pos += take
            if not pending and take == size:
                yield piece
                continue
            pending.append(piece)
            have += take
            if have == size:
                yield b"".join(pending)
                pending, have = [], 0
    if pending:
        yield b"".join(pending)


class _Close(Exception):
    def __init__(self, code: CloseCode, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


class Link:
    """One side of one link."""

    def __init__(
        self,
        *,
        identity: Identity,
        name: str,
        initiator: bool,
        now: float,
        remote_link_key: bytes | None = None,
        expected_peer: VerifyKey | None = None,
        pairing_token: bytes | None = None,
        pairing_tokens: Sequence[bytes] = (),
        listen_port: int | None = None,
        person: bytes | None = None,
    ) -> None:
        """An initiator needs `remote_link_key` (and `pairing_token` for a first contact);
        a responder may be given the pairing tokens it currently honours."""
        self.initiator = initiator
        self.state = LinkState.HANDSHAKE
        self._identity = identity
        # The person we are a device of (spec/devices.md): our identity's key if None.
        self._person = person
        self._name = name
        self._expected_peer = expected_peer
        # A pairing code names the person; any current device of theirs may answer it
        # (spec/devices.md section 8.1): the shell checks the device against the roster.
        self._pairing_dial = initiator and pairing_token is not None
        self._pairing_tokens = list(pairing_tokens)
        self._listen_port = listen_port
        self._out: list[bytes] = []  # frames to send, in order
        self._in = bytearray()  # the start of a frame not all here yet
        # Plaintext of a message not all here yet: its pieces, how many bytes they hold,
        # and its length once its 4 bytes of length are here.
        self._pieces: list[bytes | memoryview] = []
        self._have = 0
        self._need: int | None = None
        self._events: list[Event] = []
        self._hs: HandshakeState | None = None
        self._send: CipherState | None = None
        self._recv: CipherState | None = None
        self._started = now
        self._last_received = now
        self._last_sent = now
        self.peer: PublicIdentity | None = None
        self.peer_name: str | None = None
        self.used_token: bytes | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        if initiator:
            if remote_link_key is None:
                raise LocalProtocolError("an initiator must know the responder's link key")
            mode = MODE_IKPSK1 if pairing_token is not None else MODE_IK
            self._hs = HandshakeState(
                _MODES[mode],
                initiator=True,
                prologue=PROLOGUE + bytes([mode]),
                static=identity.link_secret,
                remote_static=remote_link_key,
                psks=[pairing_token] if pairing_token is not None else [],
            )
            self._write_frame(bytes([mode]) + self._hs.write_message(b""))

    # --- public API -----------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Feed bytes from the peer; b"" means the peer closed the connection."""
        if self.state is LinkState.CLOSED:
            return self._take_events()
        self.bytes_in += len(data)
        if data:
            self._last_received = now
        try:
            if not data:
                raise _Close(CloseCode.NORMAL, "the peer closed the connection")
            if self._in:
                self._in += data
                self._process_frames(self._in)
            else:  # frames wholly in `data` are read where they are, the rest kept
                self._process_frames(data)
        except _Close as exc:
            self._fail(exc.code, exc.reason, by_peer=not data)
        return self._take_events()

    def accept(self) -> None:
        """Responder: let the initiator in (after AcceptRequest); answers message 2."""
        self._transition("accept")
        assert self._hs is not None
        self._write_frame(self._hs.write_message(b""))
        self._after_handshake()

    def refuse(self) -> None:
        """Responder: turn the initiator away without sending anything."""
        self._fail(CloseCode.NOT_ACCEPTED, "not accepted", by_peer=False, notify=False)

    def refuse_pairing(self, reason: str) -> None:
        """Responder: tell a scanner who proved it holds one of our codes (IKpsk1 with a
        matching token) that the code cannot be used, and end the link: message 2, then
        a close with PAIRING_REFUSED instead of a hello (spec/pairing.md section 2). It
        saw the code, so the answer tells it nothing it did not know."""
        if self.used_token is None:
            raise LocalProtocolError("only a scanner holding a valid code is told why")
        self._transition("accept")
        assert self._hs is not None
        self._write_frame(self._hs.write_message(b""))
        self._send, self._recv = self._hs.split()
        self._fail(CloseCode.PAIRING_REFUSED, reason, by_peer=False, notify=False)

    def send(self, body: dict[int, Any]) -> None:
        """Queue an application message (key 0: its type, FIRST_APP_TYPE or above)."""
        if self.state is not LinkState.OPEN:
            raise LocalProtocolError(f"cannot send in state {self.state.value}")
        if not isinstance(body.get(0), int) or body[0] < FIRST_APP_TYPE:
            raise LocalProtocolError("application messages need a type >= FIRST_APP_TYPE")
        self._send_message(body)

    def close(self, code: CloseCode = CloseCode.NORMAL, reason: str = "") -> None:
        """Say goodbye (once the handshake is done) and end the link."""
        self._fail(code, reason or code.name.lower(), by_peer=False)

    @property
    def awaiting_first_message(self) -> bool:
        """A responder that has not yet read a whole message 1: it holds a handshake slot
        and has proved nothing (the first to be evicted under a flood)."""
        return not self.initiator and self.state is LinkState.HANDSHAKE

    def data_to_send(self) -> bytes:
        """Bytes for the socket, in order."""
        out = b"".join(self._out)
        self._out.clear()
        self.bytes_out += len(out)
        return out

    def tick(self, now: float) -> list[Event]:
        """Enforce the handshake timeout, keepalive and dead-link detection."""
        if self.awaiting_first_message and now - self._started >= FIRST_MESSAGE_TIMEOUT:
            self._fail(CloseCode.TIMEOUT, "no handshake", by_peer=False)
        elif self.state in (LinkState.HANDSHAKE, LinkState.AWAIT_ACCEPT, LinkState.HELLO):
            if now - self._started >= HANDSHAKE_TIMEOUT:
                self._fail(CloseCode.TIMEOUT, "handshake timed out", by_peer=False)
        elif self.state is LinkState.OPEN:
            if now - self._last_received >= DEAD_AFTER:
                self._fail(CloseCode.TIMEOUT, "no sign of life from the peer", by_peer=False)
            elif now - self._last_sent >= KEEPALIVE_INTERVAL:
                self._send_message({0: T_PING})
                self._last_sent = now
        return self._take_events()

    def next_deadline(self) -> float | None:
        """When tick() must next be called, or None once closed."""
        if self.state is LinkState.CLOSED:
            return None
        if self.awaiting_first_message:
            return self._started + min(FIRST_MESSAGE_TIMEOUT, HANDSHAKE_TIMEOUT)
        if self.state is not LinkState.OPEN:
            return self._started + HANDSHAKE_TIMEOUT
        return min(self._last_received + DEAD_AFTER, self._last_sent + KEEPALIVE_INTERVAL)

    def mark_sent(self, now: float) -> None:
        """The shell tells us it wrote data (for keepalive timing)."""
        self._last_sent = now

    # --- internals --------------------------------------------------------

    def _transition(self, trigger: str) -> None:
        target = _TRANSITIONS.get((self.state, trigger))
        if target is None:
            raise LocalProtocolError(f"{trigger} is not allowed in state {self.state.value}")
        self.state = target

    def _take_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def _fail(self, code: CloseCode, reason: str, *, by_peer: bool, notify: bool = True) -> None:
        if self.state is LinkState.CLOSED:
            return
        if not by_peer and self._send is not None:
            # Once the handshake is done every end is said, with its code (spec/transport.md
            # section 6); before it, nothing is sent: a stranger learns nothing.
            with contextlib.suppress(LocalProtocolError):
                self._send_message({0: T_CLOSE, 1: int(code), 2: reason[:200]})
        self.state = LinkState.CLOSED
        self._in = bytearray()
        self._pieces.clear()
        self._have, self._need = 0, None
        if notify:
            self._events.append(Closed(code=code, reason=reason, by_peer=by_peer))

    def _write_frame(self, body: bytes) -> None:
        self._out.append(len(body).to_bytes(2, "big"))
        self._out.append(body)

    def _process_frames(self, buf: bytes | bytearray) -> None:
        # Walk the buffer with an offset; frames are decrypted where they lie (no copy),
        # and only an unfinished frame's start is kept for the next read.
        pos = 0
        try:
            while self.state not in (LinkState.CLOSED, LinkState.AWAIT_ACCEPT):
                if len(buf) - pos < 2:
                    break
                size = (buf[pos] << 8) | buf[pos + 1]
                if len(buf) - pos < 2 + size:
                    break
                start, pos = pos + 2, pos + 2 + size
                if self.state is LinkState.HANDSHAKE or self._recv is None:
                    self._on_frame(bytes(buf[start:pos]))
                    continue
                with memoryview(buf) as view, view[start:pos] as body:
                    try:
                        plain = self._recv.decrypt_with_ad(b"", body)
                    except NoiseError as exc:
                        raise _Close(CloseCode.PROTOCOL_ERROR, str(exc)) from None
                self._on_plaintext(plain)
        finally:
            if self.state is not LinkState.CLOSED:
                if buf is self._in:
                    del buf[:pos]
                else:
                    self._in += buf[pos:]
        if self.state is LinkState.AWAIT_ACCEPT and self._in:
            raise _Close(CloseCode.PROTOCOL_ERROR, "data before the handshake finished")

    def _on_frame(self, body: bytes) -> None:
        if self.state is LinkState.HANDSHAKE:
            self._on_handshake_frame(body)
        else:  # pragma: no cover - unreachable by construction of the states
            raise _Close(CloseCode.PROTOCOL_ERROR, "unexpected frame")

    def _on_handshake_frame(self, body: bytes) -> None:
        try:
            if self.initiator:
                assert self._hs is not None
                if self._hs.read_message(body):
                    raise _Close(CloseCode.PROTOCOL_ERROR, "message 2 must have no payload")
                self._after_handshake()
                self._transition("handshake_done")
                return
            if not body or body[0] not in _MODES:
                raise _Close(CloseCode.PROTOCOL_ERROR, "unknown handshake mode")
            mode = body[0]
            if mode == MODE_IKPSK1 and not self._pairing_tokens:
                raise _Close(CloseCode.NOT_ACCEPTED, "no pairing token is outstanding")
            self._hs = HandshakeState(
                _MODES[mode],
                initiator=False,
                prologue=PROLOGUE + bytes([mode]),
                static=self._identity.link_secret,
            )
            if self._hs.read_message(body[1:], psk_candidates=self._pairing_tokens):
                # Empty by spec: IK's message-1 payload has no forward secrecy and can be
                # replayed (spec/transport.md section 1).
                raise _Close(CloseCode.PROTOCOL_ERROR, "message 1 must have no payload")
        except NoiseError as exc:
            raise _Close(CloseCode.PROTOCOL_ERROR, f"handshake failed: {exc}") from None
        self.used_token = self._hs.used_psk
        self._transition("need_accept")
        assert self._hs.remote_static is not None
        self._events.append(
            AcceptRequest(link_key=self._hs.remote_static, pairing_token=self.used_token)
        )

    def _after_handshake(self) -> None:
        assert self._hs is not None
        self._send, self._recv = self._hs.split()
        me = self._identity.public
        hello: dict[int, Any] = {
            0: T_HELLO,
            1: PROTOCOL_VERSION,
            2: self._person or bytes(me.verify_key),
            3: me.link_signature,  # made by the device's key (6: 2), P's for the first
            4: self._name,
            6: {1: 1, 2: bytes(me.verify_key)},  # we know devices (spec/devices.md 8)
        }
        if self._listen_port:
            hello[5] = self._listen_port
        self._send_message(hello)

    def _send_message(self, body: dict[int, Any]) -> None:
        assert self._send is not None
        # A long byte string at the end (a chunk) stays where it is: each frame's
        # plaintext is a view of it, not a copy (wire.encode_map_parts).
        parts = wire.encode_map_parts(body)
        size = sum(len(p) for p in parts)
        if size > MAX_APP_MESSAGE:
            raise LocalProtocolError("message over the size limit")
        parts[0] = size.to_bytes(4, "big") + parts[0]
        for plain in _frames(parts, MAX_PLAINTEXT):
            self._write_frame(self._send.encrypt_with_ad(b"", plain))

    def _on_plaintext(self, plain: bytes) -> None:
        """The stream of messages goes on with `plain` (spec/transport.md section 3)."""
        pos, end = 0, len(plain)
        while self.state is not LinkState.CLOSED and pos < end:
            if self._need is None:  # a message's 4 bytes of length
                take = min(4 - self._have, end - pos)
                self._pieces.append(plain[pos : pos + take])
                self._have += take
                pos += take
                if self._have < 4:
                    break
                size = int.from_bytes(b"".join(self._pieces), "big")
                self._pieces.clear()
                self._have = 0
                if size > MAX_APP_MESSAGE:
                    raise _Close(
                        CloseCode.TOO_LARGE, f"a message of {size} bytes is over the limit"
                    )
                self._need = size
            take = min(self._need - self._have, end - pos)
            if not self._pieces and take == self._need:  # all in this frame
                data = plain[pos : pos + take]
            else:
                self._pieces.append(memoryview(plain)[pos : pos + take])
                self._have += take
                if self._have < self._need:
                    break
                data = b"".join(self._pieces)  # the one copy of a message over frames
                self._pieces.clear()
                self._have = 0
            pos += take
            self._need = None
            self._on_message_bytes(data)

    def _on_message_bytes(self, data: bytes) -> None:
        try:
            body = wire.decode_map(data, max_size=MAX_APP_MESSAGE)
        except DecodeError as exc:
            raise _Close(CloseCode.PROTOCOL_ERROR, f"bad message: {exc}") from None
        self._on_message(body)

    def _on_message(self, body: dict[int, Any]) -> None:
        kind = body.get(0)
        if self.state is LinkState.HELLO and kind != T_CLOSE:
            if kind != T_HELLO:
                raise _Close(CloseCode.PROTOCOL_ERROR, "the first message must be a hello")
            self._on_hello(body)
            return
        if kind == T_PING:
            self._send_message({0: T_PONG})
        elif kind == T_PONG:
            pass
        elif kind == T_CLOSE:
            code, reason = body.get(1), body.get(2)
            if not isinstance(code, int) or code not in CloseCode._value2member_map_:
                code = CloseCode.NORMAL
            self._fail(
                CloseCode(code),
                reason if isinstance(reason, str) else "",
                by_peer=True,
            )
        elif isinstance(kind, int) and kind >= FIRST_APP_TYPE:
            self._events.append(MessageReceived(body=body))
        else:
            raise _Close(CloseCode.PROTOCOL_ERROR, f"unknown message type {kind!r}")

    def _on_hello(self, body: dict[int, Any]) -> None:
        version, person, signature, name = body.get(1), body.get(2), body.get(3), body.get(4)
        port = body.get(5)
        device = _hello_device(body.get(6), person)
        if port is not None and (type(port) is not int or not 0 < port < 65536):
            raise _Close(CloseCode.PROTOCOL_ERROR, "malformed hello port")
        if version != PROTOCOL_VERSION:
            raise _Close(CloseCode.PROTOCOL_ERROR, f"unsupported protocol version {version!r}")
        if not (
            isinstance(person, bytes)
            and len(person) == 32
            and isinstance(signature, bytes)
            and isinstance(name, str)
        ):
            raise _Close(CloseCode.PROTOCOL_ERROR, "malformed hello")
        try:
            name = check_display_name(name)
        except DecodeError as exc:
            raise _Close(CloseCode.PROTOCOL_ERROR, f"bad name in hello: {exc}") from None
        assert self._hs is not None
        assert self._hs.remote_static is not None
        peer = PublicIdentity(
            verify_key=VerifyKey(device),
            link_key=LinkPublicKey(self._hs.remote_static),
            link_signature=signature,
        )
        try:
            peer.verify()  # the device vouches for the key used in the handshake
        except (BadSignatureError, ValueError):
            raise _Close(
                CloseCode.WRONG_IDENTITY, "the identity does not vouch for this link key"
            ) from None
        if (
            self._expected_peer is not None
            and peer.verify_key != self._expected_peer
            and not (self._pairing_dial and person == bytes(self._expected_peer))
        ):
            raise _Close(CloseCode.WRONG_IDENTITY, "the peer is not who we dialled")
        self.peer, self.peer_name = peer, name
        self._transition("hello")
        self._events.append(
            Established(
                peer=peer,
                name=name,
                handshake_hash=self._hs.handshake_hash,
                listen_port=port,
                person=person,
                knows_devices=6 in body,
            )
        )


def _hello_device(value: object, person: object) -> bytes:
    """The device a hello speaks for: key 6's device key, else the person's own key (an
    older daemon, or a person's first device). spec/devices.md section 8."""
    if value is None:
        return person if isinstance(person, bytes) else b""
    if (
        type(value) is not dict
        or value.get(1) != 1
        or not set(value) <= {1, 2, 3}
        or type(value.get(2)) is not bytes
        or len(value[2]) != 32
    ):
        raise _Close(CloseCode.PROTOCOL_ERROR, "malformed hello device")
    device: bytes = value[2]
    return device
