"""Creating and reading a p2pmoments home: identity, token, config, database.

Secret files are written whole (temporary file, fsync, rename) with mode 0600
inside a 0700 directory, so a crash never leaves half a key behind.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from p2pmoments import store
from p2pmoments.config import default_config_text
from p2pmoments.core.errors import DecodeError, P2PMomentsError
from p2pmoments.core.identity import Identity, decode_key_file, encode_key_file
from p2pmoments.core.ids import IdKind, decode_id, encode_id
from p2pmoments.core.pairing import (
    PairingCode,
    decode_device_link,
    device_link_psk,
    encode_device_link,
    join_code,
)
from p2pmoments.core.profile import check_display_name
from p2pmoments.core.recovery import RecoverySheet, decode_sheet, encode_sheet, sheet_device
from p2pmoments.files import write_file_atomically
from p2pmoments.paths import Paths

__all__ = [
    "AlreadyInitialisedError",
    "DeviceInfo",
    "NotInitialisedError",
    "init_home",
    "is_initialised",
    "join_home",
    "joined",
    "load_device",
    "load_identity",
    "load_or_create_token",
    "load_sheet",
    "recover_home",
    "recovered",
]


class NotInitialisedError(P2PMomentsError):
    """The home has no identity yet."""


class AlreadyInitialisedError(P2PMomentsError):
    """The home already has an identity, which is never overwritten."""


def _make_private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)


def is_initialised(paths: Paths) -> bool:
    """True when the home has an identity."""
    return paths.key_file.exists()


def init_home(paths: Paths, name: str, identity: Identity | None = None) -> Identity:
    """Create identity (or keep `identity`), token, config and database;
    AlreadyInitialisedError if there is one.

    The key file is written last: it marks a finished init, so an interrupted one
    can simply be run again.
    """
    name = check_display_name(name)
    if is_initialised(paths):
        raise AlreadyInitialisedError(f"{paths.key_file} already holds an identity")
    _make_private_dir(paths.config_dir)
    _make_private_dir(paths.data_dir)
    if not paths.config_file.exists():
        write_file_atomically(
            paths.config_file, default_config_text().encode("utf-8"), mode=0o644, replace=False
        )
    load_or_create_token(paths)
    store.initialise(paths.db_file, name)
    identity = identity or Identity.generate()
    try:
        write_file_atomically(paths.key_file, encode_key_file(identity), mode=0o600, replace=False)
    except FileExistsError:
        raise AlreadyInitialisedError(f"{paths.key_file} already holds an identity") from None
    return identity


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceInfo:
    """What device.json says: the person this device is one of, and while it joins, the
    device link it joins by and the name it asks for."""

    person: bytes
    join: str | None = None
    name: str = ""
    recovering: bool = False  # made from a recovery sheet; the lost devices not revoked yet


def join_home(paths: Paths, link: str, device_name: str) -> PairingCode:
    """Make a new home a device of the person whose device link this is (spec/devices.md
    section 10): its own keys, never another device's; the link kept until the daemon,
    once running, has been certified by that device. Returns the link, decoded."""
    try:
        code = decode_device_link(link)
        device_name = check_display_name(device_name)
    except DecodeError as exc:
        raise P2PMomentsError(str(exc)) from None
    init_home(paths, code.name)
    info = {
        "person": encode_id(bytes(code.identity), IdKind.IDENTITY),
        "join": encode_device_link(code),
        "name": device_name,
    }
    write_file_atomically(paths.device_file, json.dumps(info).encode(), mode=0o600)
    return code


def load_device(paths: Paths) -> DeviceInfo | None:
    """device.json, if this is not a person's first device."""
    try:
        info = json.loads(paths.device_file.read_text(encoding="utf-8"))
        return DeviceInfo(
            person=decode_id(info["person"], IdKind.IDENTITY),
            join=info.get("join") or None,
            name=info.get("name", ""),
            recovering=info.get("recovering") is True,
        )
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError, DecodeError) as exc:
        raise P2PMomentsError(f"{paths.device_file} is damaged: {exc}") from None


def device_join_code(paths: Paths) -> str | None:
    """The 6 digits this joining device shows, which its person's device shows too
    (spec/devices.md section 10); None once it has joined."""
    info = load_device(paths)
    if info is None or info.join is None:
        return None
    code = decode_device_link(info.join)
    me = load_identity(paths).public
    return join_code(
        device_link_psk(code.token),
        bytes(code.identity),
        bytes(code.link_key),
        bytes(me.verify_key),
        bytes(me.link_key),
    )


def joined(paths: Paths) -> None:
    """The join is done: device.json keeps only whose device this is."""
    info = load_device(paths)
    if info is not None and info.join is not None:
        data = {"person": encode_id(info.person, IdKind.IDENTITY), "name": info.name}
        write_file_atomically(paths.device_file, json.dumps(data).encode(), mode=0o600)


def recover_home(paths: Paths, text: str, name: str, device_name: str) -> RecoverySheet:
    """Make a new home the device of a recovery sheet (spec/devices.md section 5.3): its
    keys are the sheet's own device's; the sheet is kept (0600) until the lost devices
    are revoked, the person's link secret for good (it opens the epoch keys sealed to
    the person). Returns the sheet, decoded."""
    try:
        sheet = decode_sheet(text)
        device_name = check_display_name(device_name)
    except DecodeError as exc:
        raise P2PMomentsError(str(exc)) from None
    init_home(paths, name, sheet_device(sheet.secret))
    write_file_atomically(paths.sheet_file, encode_sheet(sheet).encode(), mode=0o600)
    write_file_atomically(paths.person_link_file, sheet.person_link, mode=0o600)
    info = {
        "person": encode_id(sheet.person, IdKind.IDENTITY),
        "name": device_name,
        "recovering": True,
    }
    write_file_atomically(paths.device_file, json.dumps(info).encode(), mode=0o600)
    return sheet


def recovered(paths: Paths) -> None:
    """The lost devices are revoked: the sheet leaves this device (its R must be on no
    device, spec/devices.md section 5.2); device.json keeps whose device this is."""
    info = load_device(paths)
    if info is not None:
        data = {"person": encode_id(info.person, IdKind.IDENTITY), "name": info.name}
        write_file_atomically(paths.device_file, json.dumps(data).encode(), mode=0o600)
    paths.sheet_file.unlink(missing_ok=True)


def load_sheet(paths: Paths) -> RecoverySheet | None:
    """The recovery sheet a recovering home keeps, if any."""
    try:
        return decode_sheet(paths.sheet_file.read_text(encoding="ascii"))
    except FileNotFoundError:
        return None
    except (ValueError, DecodeError) as exc:
        raise P2PMomentsError(f"{paths.sheet_file} is damaged: {exc}") from None


def load_identity(paths: Paths) -> Identity:
    """Our identity from the key file."""
    try:
        data = paths.key_file.read_bytes()
    except FileNotFoundError:
        raise NotInitialisedError(
            f"no identity in {paths.data_dir}; create one with `p2pmoments init --name NAME`"
        ) from None
    try:
        return decode_key_file(data)
    except DecodeError as exc:
        raise P2PMomentsError(f"{paths.key_file}: {exc}") from None


def load_or_create_token(paths: Paths) -> str:
    """The control API's bearer token, created (mode 0600) if missing."""
    try:
        token = paths.token_file.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        token = ""
    if len(token) >= 32:
        return token
    _make_private_dir(paths.data_dir)
    token = secrets.token_urlsafe(32)
    write_file_atomically(paths.token_file, token.encode("ascii"), mode=0o600)
    return token
