"""The configuration file (TOML): every option, its default and its check.

config.example.toml documents each option; tests/test_config.py checks that
the example and this module agree.
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from p2pmoments.errors import ConfigError

__all__ = [
    "DEFAULT_API_PORT",
    "DEFAULT_PEER_PORT",
    "TOR_MODES",
    "Address",
    "Config",
    "ConfigError",
    "StaticPeer",
    "load_config",
    "parse_address",
    "parse_static_peer",
]

DEFAULT_PEER_PORT = 47470
DEFAULT_API_PORT = 47471
LOG_LEVELS = ("debug", "info", "warning", "error")
# network.tor: "auto" runs Tor when a tor program is found (README, "Friends beyond the
# LAN", says why this is the default), "on" always tries, "off" never.
TOR_MODES = ("auto", "on", "off")
# network.mesh: "partial" links with a few co-members a circle (spec/sync.md section 7),
# "full" with every one (as before version 3 of the sync spec).
MESH_MODES = ("partial", "full")
MAX_TORRC_LINES = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class Address:
    """A host and a TCP port; port 0 means any free port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        """True for localhost, 127.0.0.0/8 and ::1."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def parse_address(text: str) -> Address:
    """`HOST:PORT` or `[IPV6]:PORT`; raises ValueError with a readable reason."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"{text!r} is not [IPV6]:PORT")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(f"{text!r} is not HOST:PORT (write IPv6 as [ADDR]:PORT)")
    if not host:
        raise ValueError(f"{text!r} has no host")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r} has no port between 0 and 65535")
    if host != "localhost":
        try:
            host = str(ipaddress.ip_address(host))
        except ValueError:
            raise ValueError(f"{host!r} is not an IP address or localhost") from None
    return Address(host=host, port=int(port_text))


@dataclass(frozen=True, slots=True, kw_only=True)
class StaticPeer:
    """A friend reachable at a fixed address beyond the LAN: IDENTITY@HOST:PORT."""

    identity: str
    address: Address

    def __str__(self) -> str:
        return f"{self.identity}@{self.address}"


def parse_static_peer(text: str) -> StaticPeer:
    """`IDENTITY@HOST:PORT`; raises ValueError with a readable reason."""
    from p2pmoments.core.ids import IdKind, decode_id, encode_id

    identity, sep, address = text.strip().partition("@")
    if not sep:
        raise ValueError(f"{text!r} is not IDENTITY@HOST:PORT")
    try:
        raw = decode_id(identity, IdKind.IDENTITY)
    except ValueError as exc:
        raise ValueError(f"{text!r}: {exc}") from None
    parsed = parse_address(address)
    if parsed.port == 0:
        raise ValueError(f"{text!r}: a peer's port cannot be 0")
    return StaticPeer(identity=encode_id(raw, IdKind.IDENTITY), address=parsed)


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Everything the daemon can be told; the defaults are the documented ones."""

    listen: Address = Address(host="0.0.0.0", port=DEFAULT_PEER_PORT)  # noqa: S104 - peers on the LAN
    mdns: bool = True
    api_listen: Address = Address(host="127.0.0.1", port=DEFAULT_API_PORT)
    log_level: str = "info"
    max_friends: int = 150
    pairing_ttl: int = 600
    keep_location: bool = False
    peers: tuple[StaticPeer, ...] = ()
    tor: str = "auto"
    tor_path: str | None = None  # the tor program; None: `tor` on PATH
    tor_control: str | None = None  # a running tor's control port or socket: use it
    tor_torrc: tuple[str, ...] = ()  # extra torrc lines for our own tor (private networks)
    mesh: str = "partial"

    @property
    def tor_wanted(self) -> bool:
        """Whether to run Tor at all ("auto" or "on")."""
        return self.tor != "off"

    def with_overrides(self, **changes: Any) -> Config:
        """A copy with the given fields replaced (None means keep); values are checked."""
        updated = replace(self, **{k: v for k, v in changes.items() if v is not None})
        _check_semantics(updated, "the command line")
        return updated


def _check_semantics(config: Config, where: str) -> None:
    if not config.api_listen.is_loopback:
        raise ConfigError(
            f"{where}: api.listen must be a loopback address (127.0.0.1, ::1 or localhost), "
            f"not {config.api_listen.host}: the control API never leaves this device"
        )
    if config.log_level not in LOG_LEVELS:
        raise ConfigError(f"{where}: log.level must be one of {', '.join(LOG_LEVELS)}")
    if not 1 <= config.max_friends <= 10000:
        raise ConfigError(f"{where}: friends.max must be between 1 and 10000")
    if not 60 <= config.pairing_ttl <= 86400:
        raise ConfigError(f"{where}: pairing.ttl must be between 60 and 86400 seconds")
    if config.tor not in TOR_MODES:
        raise ConfigError(f'{where}: network.tor must be true, false or "auto"')
    if config.mesh not in MESH_MODES:
        raise ConfigError(f'{where}: network.mesh must be "partial" or "full"')


def _address(value: object, key: str, path: Path) -> Address:
    if not isinstance(value, str):
        raise ConfigError(f'{path}: {key} must be a string like "HOST:PORT"')
    try:
        return parse_address(value)
    except ValueError as exc:
        raise ConfigError(f"{path}: {key}: {exc}") from None


def _bool(value: object, key: str, path: Path) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{path}: {key} must be true or false")
    return value


def _log_level(value: object, key: str, path: Path) -> str:
    if not isinstance(value, str) or value.lower() not in LOG_LEVELS:
        raise ConfigError(f"{path}: {key} must be one of {', '.join(LOG_LEVELS)}")
    return value.lower()


def _int(value: object, key: str, path: Path) -> int:
    if type(value) is not int:
        raise ConfigError(f"{path}: {key} must be a whole number")
    return value


def _peers(value: object, key: str, path: Path) -> tuple[StaticPeer, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f'{path}: {key} must be a list of "IDENTITY@HOST:PORT" strings')
    try:
        return tuple(parse_static_peer(v) for v in value)
    except ValueError as exc:
        raise ConfigError(f"{path}: {key}: {exc}") from None


def _tor_mode(value: object, key: str, path: Path) -> str:
    if value is True:
        return "on"
    if value is False:
        return "off"
    if value == "auto":
        return "auto"
    raise ConfigError(f'{path}: {key} must be true, false or "auto"')


def _mesh(value: object, key: str, path: Path) -> str:
    if value not in MESH_MODES:
        raise ConfigError(f'{path}: {key} must be "partial" or "full"')
    assert isinstance(value, str)
    return value


def _optional_text(value: object, key: str, path: Path) -> str | None:
    if not isinstance(value, str) or "\0" in value:
        raise ConfigError(f"{path}: {key} must be a string")
    return value.strip() or None


def _tor_control(value: object, key: str, path: Path) -> str | None:
    text = _optional_text(value, key, path)
    if text is None or text.startswith("/"):
        return text  # a control socket's path
    try:
        address = parse_address(text)
    except ValueError as exc:
        raise ConfigError(f"{path}: {key}: {exc} (or give a control socket's path)") from None
    if not address.is_loopback or address.port == 0:
        raise ConfigError(
            f"{path}: {key} must be tor's control port on this device (127.0.0.1:PORT) "
            "or the path of its control socket"
        )
    return str(address)


def _torrc_lines(value: object, key: str, path: Path) -> tuple[str, ...]:
    if (
        not isinstance(value, list)
        or len(value) > MAX_TORRC_LINES
        or not all(isinstance(v, str) for v in value)
    ):
        raise ConfigError(f"{path}: {key} must be a list of at most {MAX_TORRC_LINES} strings")
    if any(c in line for line in value for c in "\r\n\0"):
        raise ConfigError(f"{path}: {key}: a torrc line cannot hold a line break")
    return tuple(line.strip() for line in value if line.strip())


# Every key: (section, name) -> (Config field, parser).
_KEYS = {
    ("network", "listen"): ("listen", _address),
    ("network", "mdns"): ("mdns", _bool),
    ("network", "peers"): ("peers", _peers),
    ("network", "tor"): ("tor", _tor_mode),
    ("network", "tor_path"): ("tor_path", _optional_text),
    ("network", "tor_control"): ("tor_control", _tor_control),
    ("network", "tor_torrc"): ("tor_torrc", _torrc_lines),
    ("network", "mesh"): ("mesh", _mesh),
    ("friends", "max"): ("max_friends", _int),
    ("pairing", "ttl"): ("pairing_ttl", _int),
    ("photos", "keep_location"): ("keep_location", _bool),
    ("api", "listen"): ("api_listen", _address),
    ("log", "level"): ("log_level", _log_level),
}
_SECTIONS = {section for section, _ in _KEYS}


def load_config(path: Path) -> Config:
    """The configuration in `path`, or the defaults if it does not exist."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Config()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return parse_config(text, path)


def parse_config(text: str, path: Path) -> Config:
    """The configuration in TOML `text`; `path` names the file in errors."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    changes: dict[str, Any] = {}
    for section, table in data.items():
        if section not in _SECTIONS:
            raise ConfigError(f"{path}: unknown section [{section}]")
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {section} must be a table ([{section}])")
        for name, value in table.items():
            key = f"{section}.{name}"
            if (section, name) not in _KEYS:
                raise ConfigError(f"{path}: unknown key {key}")
            field, parse = _KEYS[(section, name)]
            changes[field] = parse(value, key, path)
    config = replace(Config(), **changes)
    _check_semantics(config, str(path))
    return config


def default_config_text() -> str:
    """What `init` writes: every option commented out at its default."""
    return (
        "# p2pmoments configuration. Every option is shown at its default;\n"
        "# config.example.toml in the source explains each one.\n\n"
        "[network]\n"
        f'# listen = "0.0.0.0:{DEFAULT_PEER_PORT}"\n'
        "# mdns = true\n"
        "# peers = []\n"
        '# tor = "auto"\n'
        '# tor_path = ""\n'
        '# tor_control = ""\n'
        "# tor_torrc = []\n"
        '# mesh = "partial"\n\n'
        "[friends]\n"
        "# max = 150\n\n"
        "[pairing]\n"
        "# ttl = 600\n\n"
        "[photos]\n"
        "# keep_location = false\n\n"
        "[api]\n"
        f'# listen = "127.0.0.1:{DEFAULT_API_PORT}"\n\n'
        "[log]\n"
        '# level = "info"\n'
    )
