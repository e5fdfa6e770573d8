"""The node config file (config.py): a full example, the defaults, and each bad input named by its key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import trustme

import spoolq.node.config
from spoolq.errors import InvalidArgument
from spoolq.node.config import ConfigError, NodeConfig, PeerConfig, TokenConfig, load_config, parse_listen
from spoolq.routing import Route

TOKEN_A = "a" * 16
TOKEN_B = "b" * 32


def write(tmp_path: Path, text: str, name: str = "spoolq.toml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_full_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "dc3.token").write_text("  dc3-secret-token\n")
    (tmp_path / "ca.pem").write_text("-----BEGIN-----\n")
    cert = trustme.CA().issue_cert("127.0.0.1")  # the config loads the node's certificate and key
    (tmp_path / "cert.pem").write_bytes(b"".join(b.bytes() for b in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    p = write(tmp_path, f"""
        [node]
        spool = "{tmp_path / 'spool'}"
        listen = "0.0.0.0:7071"
        durability = "normal"
        tls_cert = "{tmp_path / 'cert.pem'}"
        tls_key = "{tmp_path / 'key.pem'}"
        ca_file = "{tmp_path / 'ca.pem'}"
        max_message_size = 2048
        max_batch_bytes = 65536
        max_batch_messages = 50
        sweep_interval = 1
        scan_interval = 2.5
        backoff_base = 0.25
        backoff_cap = 30
        log_json = true

        [peers.dc2]
        url = "https://dc2.example.com:7070/"
        token = "s3cret-we-send-to-dc2"
        ca_file = "{tmp_path / 'ca.pem'}"
        max_in_flight = 2
        batch_messages = 100
        batch_bytes = 1024

        [peers.dc3]
        url = "http://10.0.0.3:7070"
        token_file = "secrets/dc3.token"   # relative to this file

        [[routes]]
        channels = "orders.*"
        to = ["dc2", "dc3"]

        [[routes]]
        channels = "audit"
        to = "dc3"
        mode = "failover"

        [[routes]]
        channels = "logs.*"
        to = ["dc2", "https://archive.example.com"]
        mode = "fanout"

        [tokens.from-dc2]
        token = "{TOKEN_A}"
        scopes = ["peer"]

        [tokens.ops]
        token_file = "secrets/dc3.token"
        scopes = ["send", "consume", "admin", "peer"]
        """)
    monkeypatch.chdir(tmp_path / "secrets")  # token_file is read relative to the config file, not the cwd
    cfg = load_config(p)
    assert cfg == NodeConfig(
        spool=str(tmp_path / "spool"),
        listen="0.0.0.0:7071",
        durability="normal",
        tls_cert=str(tmp_path / "cert.pem"),
        tls_key=str(tmp_path / "key.pem"),
        ca_file=str(tmp_path / "ca.pem"),
        max_message_size=2048,
        max_batch_bytes=65536,
        max_batch_messages=50,
        sweep_interval=1,
        scan_interval=2.5,
        backoff_base=0.25,
        backoff_cap=30,
        log_json=True,
        peers=(
            PeerConfig("dc2", "https://dc2.example.com:7070", "s3cret-we-send-to-dc2", str(tmp_path / "ca.pem"),
                       max_in_flight=2, batch_messages=100, batch_bytes=1024),
            PeerConfig("dc3", "http://10.0.0.3:7070", "dc3-secret-token"),
        ),
        routes=(
            Route("orders.*", ("dc2", "dc3"), "fanout"),
            Route("audit", ("dc3",), "failover"),
            Route("logs.*", ("dc2", "https://archive.example.com"), "fanout"),
        ),
        tokens=(
            TokenConfig("from-dc2", TOKEN_A, frozenset({"peer"})),
            TokenConfig("ops", "dc3-secret-token", frozenset({"send", "consume", "admin", "peer"})),
        ),
    )
    assert cfg.source == str(p)
    assert cfg.peer("dc3") == cfg.peers[1]
    assert cfg.peer("nope") is None


def test_docstring_example_loads(tmp_path: Path) -> None:
    doc = spoolq.node.config.__doc__
    assert doc is not None
    example = doc.split("Example ``spoolq.toml``::")[1].split("Command-line flags")[0]
    cfg = load_config(write(tmp_path, example))
    assert [p.name for p in cfg.peers] == ["dc2", "dc3", "central"]
    assert cfg.peer("central").options == {"exchange": "events", "routing_key": "{channel}"}  # type: ignore[union-attr]
    assert [(s.name, s.channel, s.options) for s in cfg.sources] == [("from-central", "orders", {"stream": "orders"})]
    assert cfg.routes == (Route("orders.*", ("dc2", "dc3"), "failover"),)
    assert cfg.tokens[0].scopes == {"peer"}


def test_defaults() -> None:
    cfg = load_config(None)
    assert cfg == NodeConfig()
    assert (cfg.listen, cfg.durability, cfg.spool, cfg.source) == ("127.0.0.1:7070", "full", None, None)
    assert (cfg.peers, cfg.routes, cfg.tokens) == ((), (), ())


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    p = write(tmp_path, "")
    cfg = load_config(p)
    assert cfg == NodeConfig()
    assert cfg.source == str(p)


# (case id, file text, fragments the error message must contain: the bad key first)
BAD: list[tuple[str, str, tuple[str, ...]]] = [
    ("unknown section", "[nodes]\nlisten = '127.0.0.1:1'\n", ("nodes",)),
    ("unknown key in node", "[node]\ncolour = 'red'\n", ("node", "colour")),
    ("node not a table", "node = 1\n", ("node",)),
    ("unknown key in a peer", "[peers.a]\nurl = 'http://a'\ncolour = 1\n", ("peers.a", "colour")),
    ("unknown key in a route", "[[routes]]\nchannels = 'x'\nto = 'http://a'\ncolour = 1\n", ("routes[0]", "colour")),
    ("unknown key in a token", f"[tokens.a]\ntoken = '{TOKEN_A}'\nscopes = ['peer']\ncolour = 1\n",
     ("tokens.a", "colour")),
    ("peers not tables", "peers = 'a'\n", ("peers",)),
    ("a peer not a table", "[peers]\na = 'http://a'\n", ("peers.a",)),
    ("missing peer url", "[peers.a]\ntoken = 'x'\n", ("peers.a.url", "missing")),
    ("ftp url", "[peers.a]\nurl = 'ftp://a:21'\n", ("peers.a.url", "ftp://a:21")),
    ("url without scheme", "[peers.a]\nurl = 'a.example.com:7070'\n", ("peers.a.url",)),
    ("url without host", "[peers.a]\nurl = 'http://'\n", ("peers.a.url",)),
    ("url port out of range", "[peers.a]\nurl = 'http://a:99999'\n", ("peers.a.url",)),
    ("url port not a number", "[peers.a]\nurl = 'http://a:http'\n", ("peers.a.url",)),
    ("url bad IPv6", "[peers.a]\nurl = 'http://[::1'\n", ("peers.a.url",)),
    ("url not a string", "[peers.a]\nurl = 7070\n", ("peers.a.url",)),
    ("bad peer name", "[peers.'a b']\nurl = 'http://a'\n", ("peers.a b",)),
    ("peer max_in_flight 0", "[peers.a]\nurl = 'http://a'\nmax_in_flight = 0\n", ("peers.a.max_in_flight",)),
    ("peer token not a string", "[peers.a]\nurl = 'http://a'\ntoken = 5\n", ("peers.a.token",)),
    ("peer ca_file missing", "[peers.a]\nurl = 'https://a'\nca_file = '/nonexistent/ca.pem'\n", ("peers.a.ca_file",)),
    ("route to an unknown peer", "[[routes]]\nchannels = 'x'\nto = ['nope']\n", ("routes[0].to", "nope")),
    ("second route to an unknown peer",
     "[peers.a]\nurl = 'http://a'\n[[routes]]\nchannels = 'x'\nto = 'a'\n[[routes]]\nchannels = 'y'\nto = ['a', 'b']\n",
     ("routes[1].to", "'b'")),
    ("bad route mode", "[[routes]]\nchannels = 'x'\nto = 'http://a'\nmode = 'roundrobin'\n",
     ("routes[0].mode", "roundrobin")),
    ("route without channels", "[[routes]]\nto = 'http://a'\n", ("routes[0].channels",)),
    ("route channels a list", "[[routes]]\nchannels = ['x']\nto = 'http://a'\n", ("routes[0].channels",)),
    ("route without to", "[[routes]]\nchannels = 'x'\n", ("routes[0].to",)),
    ("route to a number", "[[routes]]\nchannels = 'x'\nto = 5\n", ("routes[0].to",)),
    ("routes a table", "[routes]\nchannels = 'x'\n", ("routes",)),
    ("routes not tables", "routes = [1, 2]\n", ("routes",)),
    ("tokens not tables", "tokens = ['x']\n", ("tokens",)),
    ("token of 15 chars", "[tokens.a]\ntoken = '0123456789abcde'\nscopes = ['peer']\n", ("tokens.a.token", "16")),
    ("token missing", "[tokens.a]\nscopes = ['peer']\n", ("tokens.a.token", "missing")),
    ("unknown scope", f"[tokens.a]\ntoken = '{TOKEN_A}'\nscopes = ['peer', 'root']\n", ("tokens.a.scopes", "root")),
    ("empty scopes", f"[tokens.a]\ntoken = '{TOKEN_A}'\nscopes = []\n", ("tokens.a.scopes",)),
    ("no scopes", f"[tokens.a]\ntoken = '{TOKEN_A}'\n", ("tokens.a.scopes",)),
    ("scopes a string", f"[tokens.a]\ntoken = '{TOKEN_A}'\nscopes = 'peer'\n", ("tokens.a.scopes",)),
    ("duplicate token",
     f"[tokens.a]\ntoken = '{TOKEN_A}'\nscopes = ['peer']\n[tokens.b]\ntoken = '{TOKEN_A}'\nscopes = ['send']\n",
     ("tokens.b.token", "twice")),
    ("peer token and token_file", "[peers.a]\nurl = 'http://a'\ntoken = 'x'\ntoken_file = 'x.token'\n",
     ("peers.a", "not both")),
    ("token and token_file", f"[tokens.a]\ntoken = '{TOKEN_A}'\ntoken_file = 'x.token'\nscopes = ['peer']\n",
     ("tokens.a", "not both")),
    ("unreadable peer token_file", "[peers.a]\nurl = 'http://a'\ntoken_file = 'missing.token'\n",
     ("peers.a.token_file", "missing.token")),
    ("unreadable token_file", "[tokens.a]\ntoken_file = 'missing.token'\nscopes = ['peer']\n",
     ("tokens.a.token_file", "missing.token")),
    ("token_file a directory", "[peers.a]\nurl = 'http://a'\ntoken_file = '.'\n", ("peers.a.token_file",)),
    ("empty token_file", "[peers.a]\nurl = 'http://a'\ntoken_file = 'empty.token'\n", ("peers.a.token_file", "empty")),
    ("token_file not UTF-8", "[peers.a]\nurl = 'http://a'\ntoken_file = 'binary.token'\n", ("peers.a.token_file",)),
    ("listen without port", "[node]\nlisten = '127.0.0.1'\n", ("node.listen",)),
    ("listen without host", "[node]\nlisten = ':7070'\n", ("node.listen",)),
    ("listen empty port", "[node]\nlisten = '127.0.0.1:'\n", ("node.listen",)),
    ("listen port out of range", "[node]\nlisten = '127.0.0.1:65536'\n", ("node.listen", "out of range")),
    ("listen port negative", "[node]\nlisten = '127.0.0.1:-1'\n", ("node.listen",)),
    ("listen port not numeric", "[node]\nlisten = '127.0.0.1:http'\n", ("node.listen", "number")),
    ("listen port with underscore", "[node]\nlisten = '127.0.0.1:70_70'\n", ("node.listen", "number")),
    ("listen port with a space", "[node]\nlisten = '127.0.0.1: 7070'\n", ("node.listen", "number")),
    ("listen a number", "[node]\nlisten = 7070\n", ("node.listen",)),
    ("tls_cert without tls_key", "[node]\ntls_cert = 'cert.pem'\n", ("node.tls_cert", "node.tls_key")),
    ("tls_key without tls_cert", "[node]\ntls_key = 'key.pem'\n", ("node.tls_cert", "node.tls_key")),
    ("tls_cert missing", "[node]\ntls_cert = '/nonexistent/cert.pem'\ntls_key = '{dir}/key.pem'\n",
     ("node.tls_cert", "/nonexistent/cert.pem")),
    ("tls_key missing", "[node]\ntls_cert = '{dir}/cert.pem'\ntls_key = '/nonexistent/key.pem'\n",
     ("node.tls_key", "/nonexistent/key.pem")),
    ("ca_file missing", "[node]\nca_file = '/nonexistent/ca.pem'\n", ("node.ca_file",)),
    ("tls_cert a number", "[node]\ntls_cert = 1\ntls_key = 2\n", ("node.tls_cert",)),
    ("spool a number", "[node]\nspool = 5\n", ("node.spool",)),
    ("listen on all IPv4 without tokens", "[node]\nlisten = '0.0.0.0:7070'\n", ("node.listen", "0.0.0.0", "[tokens]")),
    ("listen on all IPv6 without tokens", "[node]\nlisten = '[::]:7070'\n", ("node.listen", "[tokens]")),
    ("listen on a name without tokens", "[node]\nlisten = 'node1.example.com:7070'\n", ("node.listen", "[tokens]")),
    ("bad durability", "[node]\ndurability = 'fast'\n", ("node.durability", "fast")),
    ("max_message_size 0", "[node]\nmax_message_size = 0\n", ("node.max_message_size",)),
    ("max_batch_bytes a float", "[node]\nmax_batch_bytes = 1.5\n", ("node.max_batch_bytes",)),
    ("max_batch_messages a bool", "[node]\nmax_batch_messages = true\n", ("node.max_batch_messages",)),
    ("sweep_interval negative", "[node]\nsweep_interval = -1\n", ("node.sweep_interval",)),
    ("scan_interval a bool", "[node]\nscan_interval = true\n", ("node.scan_interval",)),
    ("backoff_cap a string", "[node]\nbackoff_cap = '60'\n", ("node.backoff_cap",)),
    ("log_json a string", "[node]\nlog_json = 'yes'\n", ("node.log_json",)),
    ("invalid TOML", "[node\nlisten = '127.0.0.1:7070'\n", ("not valid TOML",)),
    ("duplicate key", "[node]\nlisten = '127.0.0.1:1'\nlisten = '127.0.0.1:2'\n", ("not valid TOML",)),
]


@pytest.mark.parametrize(("text", "fragments"), [(t, f) for _, t, f in BAD], ids=[i for i, _, _ in BAD])
def test_bad_config(tmp_path: Path, text: str, fragments: tuple[str, ...]) -> None:
    for name in ("cert.pem", "key.pem"):
        (tmp_path / name).write_text("-----BEGIN-----\n")
    (tmp_path / "x.token").write_text("x-token-from-a-file\n")
    (tmp_path / "empty.token").write_text("\n")
    (tmp_path / "binary.token").write_bytes(b"\xff\xfe\x00")
    p = tmp_path / "spoolq.toml"
    p.write_text(text.replace("{dir}", str(tmp_path)))
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    for fragment in fragments:
        assert fragment in ei.value.message
    assert isinstance(ei.value, InvalidArgument) and isinstance(ei.value, ValueError)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read config .*nope\.toml"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path)  # a directory


def test_file_not_utf8(tmp_path: Path) -> None:
    p = tmp_path / "spoolq.toml"
    p.write_bytes(b"[node]\nspool = '\xff'\n")
    with pytest.raises(ConfigError, match=r"spoolq\.toml: not UTF-8"):
        load_config(p)


@pytest.mark.parametrize("listen", ["0.0.0.0:7070", "[::]:7070", "192.0.2.1:7070", "node1.example.com:7070"])
def test_non_loopback_listen_with_tokens_is_accepted(tmp_path: Path, listen: str) -> None:
    p = write(tmp_path, f"""
        [node]
        listen = "{listen}"

        [tokens.peers]
        token = "{TOKEN_B}"
        scopes = ["peer"]
        """)
    cfg = load_config(p)
    assert cfg.listen == listen
    assert cfg.tokens == (TokenConfig("peers", TOKEN_B, frozenset({"peer"})),)


@pytest.mark.parametrize("listen", ["127.0.0.1:7070", "127.0.0.2:0", "localhost:7070", "[::1]:7070"])
def test_loopback_listen_without_tokens_is_accepted(tmp_path: Path, listen: str) -> None:
    assert load_config(write(tmp_path, f'[node]\nlisten = "{listen}"\n')).listen == listen


def test_token_of_16_chars_is_enough(tmp_path: Path) -> None:
    p = write(tmp_path, "[tokens.a]\ntoken = '0123456789abcdef'\nscopes = ['admin']\n")
    assert load_config(p).tokens == (TokenConfig("a", "0123456789abcdef", frozenset({"admin"})),)


def test_token_file_is_stripped(tmp_path: Path) -> None:
    (tmp_path / "t").write_text(f"\n  {TOKEN_B}  \n")
    p = write(tmp_path, "[tokens.a]\ntoken_file = 't'\nscopes = ['send']\n")
    assert load_config(p).tokens[0].token == TOKEN_B


def test_with_overrides_ignores_none(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "[node]\nlisten = '127.0.0.1:7071'\ndurability = 'normal'\n"))
    assert cfg.with_overrides(listen=None, durability=None, spool=None) == cfg
    new = cfg.with_overrides(listen="127.0.0.1:9000", durability=None, log_json=True)
    assert (new.listen, new.durability, new.log_json) == ("127.0.0.1:9000", "normal", True)
    assert (cfg.listen, cfg.log_json) == ("127.0.0.1:7071", False)  # the original is left alone
    assert new.source == cfg.source
    with pytest.raises(TypeError):
        cfg.with_overrides(no_such_field=1)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("[::1]:7070", ("::1", 7070)),
        ("[::]:0", ("::", 0)),
        ("127.0.0.1:7070", ("127.0.0.1", 7070)),
        ("localhost:65535", ("localhost", 65535)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
    ],
)
def test_parse_listen(value: str, expected: tuple[str, int]) -> None:
    assert parse_listen(value) == expected


@pytest.mark.parametrize(
    "value", ["7070", "[::1]", ":7070", "host:", "host:65536", "host:x", "host:+80", "host:\u0667\u0660", "host: 80"]
)
def test_parse_listen_refuses(value: str) -> None:
    with pytest.raises(ConfigError, match=r"^cli\.listen: "):
        parse_listen(value, key="cli.listen")
