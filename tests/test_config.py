"""The config file: defaults, the documented example, and errors that name key and file."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pmoments.config import Address, Config, ConfigError, load_config, parse_address, parse_config

EXAMPLE = Path(__file__).parent.parent / "config.example.toml"


def test_missing_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load_config(tmp_path / "none.toml") == Config()


def test_the_example_documents_every_option_at_its_default() -> None:
    assert load_config(EXAMPLE) == Config()
    text = EXAMPLE.read_text()
    for key in ("listen", "mdns", "level"):
        assert f"\n{key} = " in text


def test_values_are_read(tmp_path: Path) -> None:
    config = parse_config(
        '[network]\nlisten = "[::]:9000"\nmdns = false\n[api]\nlisten = "[::1]:0"\n'
        '[log]\nlevel = "DEBUG"\n',
        tmp_path / "c.toml",
    )
    assert config.listen == Address(host="::", port=9000)
    assert config.mdns is False
    assert config.api_listen == Address(host="::1", port=0)
    assert config.log_level == "debug"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[network]\nlisen = "1.2.3.4:5"\n', "unknown key network.lisen"),
        ("[netwrk]\n", r"unknown section \[netwrk\]"),
        ('[network]\nlisten = "nowhere"\n', "network.listen"),
        ('[network]\nlisten = "1.2.3.4:70000"\n', "network.listen.*port"),
        ("[network]\nlisten = 5\n", "network.listen must be a string"),
        ('[network]\nmdns = "yes"\n', "network.mdns must be true or false"),
        ('[api]\nlisten = "0.0.0.0:47471"\n', "api.listen must be a loopback address"),
        ('[api]\nlisten = "192.168.1.5:1"\n', "api.listen must be a loopback address"),
        ('[log]\nlevel = "loud"\n', "log.level must be one of"),
        ("network = 3\n", "network must be a table"),
        ("[network\n", "not valid TOML"),
        ('[network]\ntor = "yes"\n', 'network.tor must be true, false or "auto"'),
        ("[network]\ntor = 1\n", "network.tor must be"),
        ('[network]\ntor_control = "10.0.0.2:9051"\n', "network.tor_control must be tor's"),
        ('[network]\ntor_control = "9051"\n', "network.tor_control"),
        ('[network]\ntor_torrc = ["a\\nb"]\n', "line break"),
        ('[network]\ntor_torrc = "DirAuthority x"\n', "network.tor_torrc must be a list"),
        ("[network]\ntor_path = 3\n", "network.tor_path must be a string"),
    ],
)
def test_bad_config_names_the_key_and_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[network]\nlisten = "127.0.0.1:1000"\nmdns = true\n')
    config = load_config(path).with_overrides(
        listen=Address(host="127.0.0.1", port=2000), mdns=False, api_listen=None
    )
    assert config.listen.port == 2000
    assert config.mdns is False
    assert config.api_listen == Config().api_listen


def test_a_non_loopback_api_flag_is_refused() -> None:
    with pytest.raises(ConfigError, match="loopback"):
        Config().with_overrides(api_listen=Address(host="10.0.0.1", port=1))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:0", Address(host="127.0.0.1", port=0)),
        ("localhost:80", Address(host="localhost", port=80)),
        ("[::1]:8080", Address(host="::1", port=8080)),
    ],
)
def test_addresses(text: str, expected: Address) -> None:
    assert parse_address(text) == expected
    assert parse_address(str(expected)) == expected


@pytest.mark.parametrize("text", ["", ":80", "host", "::1:80", "[::1]80", "a.b:1", "1.2.3.4:-1"])
def test_bad_addresses(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each has its own message
        parse_address(text)


def test_tor_options_are_read(tmp_path: Path) -> None:
    assert Config().tor == "auto"
    config = parse_config("[network]\ntor = false\n", tmp_path / "c.toml")
    assert config.tor == "off"
    assert not config.tor_wanted
    config = parse_config(
        '[network]\ntor = true\ntor_path = "/opt/tor/bin/tor"\n'
        'tor_control = "127.0.0.1:9051"\ntor_torrc = ["TestingTorNetwork 1", " "]\n',
        tmp_path / "c.toml",
    )
    assert config.tor == "on"
    assert config.tor_path == "/opt/tor/bin/tor"
    assert config.tor_control == "127.0.0.1:9051"
    assert config.tor_torrc == ("TestingTorNetwork 1",)
    sock = parse_config('[network]\ntor_control = "/run/tor/control"\n', tmp_path / "c.toml")
    assert sock.tor_control == "/run/tor/control"


def test_the_tor_flags_override_the_file(tmp_path: Path) -> None:
    from p2pmoments.cli import _parser

    path = tmp_path / "config.toml"
    path.write_text("[network]\ntor = false\n")
    args = _parser().parse_args(["run", "--tor"])
    assert load_config(path).with_overrides(tor=args.tor).tor == "on"
    args = _parser().parse_args(["run", "--no-tor"])
    assert Config().with_overrides(tor=args.tor).tor == "off"
    args = _parser().parse_args(["run"])
    assert load_config(path).with_overrides(tor=args.tor).tor == "off"
    with pytest.raises(SystemExit):
        _parser().parse_args(["run", "--tor", "--no-tor"])
