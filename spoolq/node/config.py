"""Node configuration: a TOML file, frozen dataclasses, one ``validate()``.

Example ``spoolq.toml``::

    [node]
    spool = "/var/spool/spoolq"        # default: $SPOOLQ_SPOOL or ~/.local/share/spoolq
    listen = "127.0.0.1:7070"
    durability = "full"                # or "normal"
    # trace = true                     # keep the per-message event log behind `spoolq trace` (stored in the
    #                                  # spool at start: library processes using the spool log too)
    # trace_retention = 86400          # seconds an event is kept (default 24 h)
    # trace_max_rows = 1000000         # and at most this many events (about 100 bytes each)
    # tls_cert = "/etc/spoolq/cert.pem"
    # tls_key = "/etc/spoolq/key.pem"
    # ca_file = "/etc/spoolq/ca.pem"   # trust for https:// peers (default: the system store)
    # beanstalk = "127.0.0.1:11300"    # also speak the beanstalkd protocol (loopback or unix:PATH)
    # [stomp]                           # also speak STOMP 1.2 (passcode = a token when [tokens] exist)
    # listen = "127.0.0.1:61613"        # tls_cert/tls_key for TLS; websocket = true: /stomp on node.listen
    # allow_urls = ["https://dc*.example.com:7070/*"]  # URLs an HTTP client may name in to= (globs)

    [peers.dc2]                        # a peer this node forwards to
    url = "https://dc2.example.com:7070"
    token = "s3cret-we-send-to-dc2"    # or token_file = "/etc/spoolq/dc2.token"

    [peers.dc3]
    url = "https://dc3.example.com:7070"

    [peers.central]                    # a bridge: RabbitMQ (amqp/amqps), NATS JetStream (nats),
    url = "amqp://guest:guest@mq:5672/" # Redis Streams (redis/rediss); see spoolq.bridges
    exchange = "events"                # rabbitmq: exchange, routing_key; nats: subject;
    routing_key = "{channel}"          # redis: stream, maxlen. Default address: the channel.

    [[sources]]                        # consume from a broker into a local channel
    name = "from-central"
    url = "redis://127.0.0.1:6379/0"
    channel = "orders"
    stream = "orders"                  # redis: stream, group; nats: stream, durable; rabbitmq: queue

    [[routes]]                         # send(channel) without to= forwards matching channels
    channels = "orders.*"              # a glob
    to = ["dc2", "dc3"]
    mode = "failover"                  # or "fanout" (each peer gets a copy; the default)

    [tokens.from-dc2]                  # tokens this node accepts, with scopes
    token = "s3cret-dc2-sends-us"
    scopes = ["peer"]                  # peer, send, consume, admin

Command-line flags override the file; the file overrides the defaults.
"""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..codec import BATCH_BYTES, BATCH_MESSAGES, MAX_IN_FLIGHT
from ..errors import InvalidArgument, SpoolqError
from ..message import CHANNEL_RE
from ..routing import Route

__all__ = ["NodeConfig", "PeerConfig", "SourceConfig", "StompConfig", "TokenConfig", "ConfigError", "load_config",
           "SCOPES", "parse_listen"]

SCOPES = frozenset({"peer", "send", "consume", "admin"})


class ConfigError(InvalidArgument):
    """The configuration is wrong; the message names the key."""


@dataclass(frozen=True)
class PeerConfig:
    """A node this one forwards to."""

    name: str
    url: str
    token: str | None = None
    ca_file: str | None = None
    max_in_flight: int = MAX_IN_FLIGHT
    batch_messages: int = BATCH_MESSAGES
    batch_bytes: int = BATCH_BYTES
    options: dict[str, Any] = field(default_factory=dict)  # bridge peers: exchange, subject, stream, ...


# keys of a [[sources]] entry per broker, besides name, url, channel, batch
SOURCE_KEYS: dict[str, frozenset[str]] = {
    "rabbitmq": frozenset({"queue", "prefetch"}),
    "nats": frozenset({"stream", "durable", "subject"}),
    "redis": frozenset({"stream", "group", "consumer"}),
}


@dataclass(frozen=True)
class SourceConfig:
    """A broker queue/stream this node consumes into a local channel (see ``spoolq.bridges``)."""

    name: str
    url: str
    channel: str
    batch: int = 500
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TokenConfig:
    """A bearer token this node accepts, and what it may do."""

    name: str
    token: str
    scopes: frozenset[str]


@dataclass(frozen=True)
class StompConfig:
    """The ``[stomp]`` section: the STOMP front-end of the node (see spoolq/stomp/)."""

    listen: str = "127.0.0.1:61613"
    tls_cert: str | None = None
    tls_key: str | None = None
    websocket: bool = True  # also STOMP over WebSocket at /stomp on the node's HTTP port


@dataclass(frozen=True)
class NodeConfig:
    spool: str | None = None
    listen: str = "127.0.0.1:7070"
    durability: str = "full"
    tls_cert: str | None = None
    tls_key: str | None = None
    ca_file: str | None = None
    max_message_size: int = 1 << 20
    max_batch_bytes: int = 64 << 20
    max_batch_messages: int = 10_000
    sweep_interval: float = 5.0
    scan_interval: float = 5.0
    history_interval: float = 2.0  # the dashboard's samples of the spool's counts (history.py)
    backoff_base: float = 0.5
    backoff_cap: float = 60.0
    log_json: bool = False
    trace: bool = True  # the per-message event log (spoolq trace)
    trace_retention: float = 86400.0  # seconds an event is kept
    trace_max_rows: int = 1_000_000  # events kept at most (the oldest go first)
    beanstalk: str | None = None  # HOST:PORT or unix:PATH for the beanstalkd protocol front-end
    beanstalk_max_job_size: int = (1 << 16) - 1
    keepalive_timeout: float = 15.0  # close a connection without a complete request this long
    body_timeout: float = 60.0  # a request body must arrive within this
    max_connections: int = 900  # open HTTP connections (lowered to fit the process's fd limit)
    max_request_bytes: int = 8 << 20  # a JSON API request body (peer batches: max_batch_bytes)
    max_request_messages: int = 1000  # messages, or lease handles, in one JSON API request
    allow_urls: tuple[str, ...] = ()  # globs of URLs an HTTP client may name in to= (besides peers)
    peers: tuple[PeerConfig, ...] = ()
    routes: tuple[Route, ...] = ()
    tokens: tuple[TokenConfig, ...] = ()
    stomp: StompConfig | None = None
    sources: tuple[SourceConfig, ...] = ()
    source: str | None = field(default=None, compare=False)

    def peer(self, name: str) -> PeerConfig | None:
        for p in self.peers:
            if p.name == name:
                return p
        return None

    def allows_to(self, target: str) -> bool:
        """May an HTTP client name ``target`` in ``to=``? A configured peer's name or URL, or a URL
        matching one of ``allow_urls`` (a library caller of ``Spool.send`` is not asked)."""
        if not target.startswith(("http://", "https://")):
            return self.peer(target) is not None
        url = target.rstrip("/")
        if any(p.url == url for p in self.peers):
            return True
        # the forwarder posts to the URL without its trailing slashes
        return any(url_matches(pattern, target) or url_matches(pattern, url) for pattern in self.allow_urls)

    def with_overrides(self, **changes: Any) -> NodeConfig:
        """A copy with the given fields replaced (``None`` values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def validate(self) -> NodeConfig:
        """Check every field; raises :class:`ConfigError` naming the bad key. Returns ``self``."""
        host, port = parse_listen(self.listen, key="node.listen")
        for key, text in (("node.spool", self.spool), ("node.tls_cert", self.tls_cert),
                          ("node.tls_key", self.tls_key), ("node.ca_file", self.ca_file)):
            if text is not None and not isinstance(text, str):
                raise ConfigError(f"{key}: must be a string, not {text!r}")
        if not isinstance(self.log_json, bool):
            raise ConfigError(f"node.log_json: must be true or false, not {self.log_json!r}")
        if not isinstance(self.trace, bool):
            raise ConfigError(f"node.trace: must be true or false, not {self.trace!r}")
        if (isinstance(self.trace_retention, bool) or not isinstance(self.trace_retention, (int, float))
                or not 0 < self.trace_retention <= 10 * 365 * 86400):
            raise ConfigError(f"node.trace_retention: must be a positive number of seconds (at most ten years), "
                              f"not {self.trace_retention!r}", hint="e.g. trace_retention = 86400 (24 hours)")
        if type(self.trace_max_rows) is not int or not 1 <= self.trace_max_rows <= 1 << 40:
            raise ConfigError(f"node.trace_max_rows: must be a positive integer, not {self.trace_max_rows!r}",
                              hint="e.g. trace_max_rows = 1000000 (about 100 MB)")
        if self.beanstalk is not None:
            if not isinstance(self.beanstalk, str) or not self.beanstalk:
                raise ConfigError("node.beanstalk: must be HOST:PORT or unix:PATH")
            if not self.beanstalk.startswith("unix:"):
                bhost, _ = parse_listen(self.beanstalk, key="node.beanstalk")
                if not is_loopback(bhost):
                    log_hint = "the beanstalkd protocol has no authentication"
                    raise ConfigError(
                        f"node.beanstalk: refusing to serve the beanstalkd protocol on {bhost}: {log_hint}",
                        hint="listen on 127.0.0.1 or a unix socket, and put a TLS/auth proxy in front if needed",
                    )
        if self.stomp is not None:
            shost, _ = parse_listen(self.stomp.listen, key="stomp.listen")
            if not self.tokens and not is_loopback(shost):
                raise ConfigError(f"stomp.listen: refusing to serve STOMP on {shost} without any [tokens]",
                                  hint="add [tokens.NAME] entries (a STOMP passcode is a token), or use 127.0.0.1")
            if bool(self.stomp.tls_cert) != bool(self.stomp.tls_key):
                raise ConfigError("stomp.tls_cert and stomp.tls_key: give both or neither")
            if not isinstance(self.stomp.websocket, bool):
                raise ConfigError("stomp.websocket: must be true or false")
        if not isinstance(self.allow_urls, tuple):
            raise ConfigError("node.allow_urls: must be a list of URL globs such as 'https://dc*.example.com:7070/*'")
        for i, pattern in enumerate(self.allow_urls):
            reason = _bad_url_glob(pattern)
            if reason:
                raise ConfigError(f"node.allow_urls[{i}]: {reason}, not {pattern!r}",
                                  hint="e.g. allow_urls = [\"https://dc*.example.com:7070/*\"]")
        if type(self.beanstalk_max_job_size) is not int or not 0 < self.beanstalk_max_job_size <= 1 << 30:
            raise ConfigError("node.beanstalk_max_job_size: must be 1 to 1073741824 bytes")
        if self.durability not in ("full", "normal"):
            raise ConfigError(f"node.durability: must be 'full' or 'normal', not {self.durability!r}")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("node.tls_cert and node.tls_key: give both or neither")
        for key, path in (("node.tls_cert", self.tls_cert), ("node.tls_key", self.tls_key),
                          ("node.ca_file", self.ca_file)):
            if path and not os.path.isfile(path):
                raise ConfigError(f"{key}: no such file {path!r}")
        if self.tls_cert and self.tls_key:
            _check_tls(self.tls_cert, self.tls_key)
        for key, value in (("node.max_request_bytes", self.max_request_bytes),
                           ("node.max_request_messages", self.max_request_messages),
                           ("node.max_message_size", self.max_message_size),
                           ("node.max_batch_bytes", self.max_batch_bytes),
                           ("node.max_batch_messages", self.max_batch_messages)):
            if type(value) is not int or value < 1:
                raise ConfigError(f"{key}: must be a positive integer, not {value!r}")
        if type(self.max_connections) is not int or self.max_connections < 1:
            raise ConfigError(f"node.max_connections: must be a positive integer, not {self.max_connections!r}")
        for key, num in (("node.keepalive_timeout", self.keepalive_timeout), ("node.body_timeout", self.body_timeout),
                         ("node.sweep_interval", self.sweep_interval), ("node.scan_interval", self.scan_interval),
                         ("node.history_interval", self.history_interval),
                         ("node.backoff_base", self.backoff_base), ("node.backoff_cap", self.backoff_cap)):
            if isinstance(num, bool) or not isinstance(num, (int, float)) or num <= 0:
                raise ConfigError(f"{key}: must be a positive number of seconds, not {num!r}")
        if not 0.1 <= self.history_interval <= 60:
            raise ConfigError(f"node.history_interval: must be 0.1 to 60 seconds, not {self.history_interval!r}")
        if self.max_message_size + 1024 > self.max_batch_bytes:
            raise ConfigError(
                "node.max_batch_bytes: must leave room for a message of node.max_message_size "
                f"({self.max_message_size} bytes) plus 1 KiB of framing",
                hint="raise max_batch_bytes or lower max_message_size",
            )
        names = set()
        for p in self.peers:
            key = f"peers.{p.name}"
            if CHANNEL_RE.fullmatch(p.name) is None:
                raise ConfigError(f"{key}: peer names use A-Z a-z 0-9 . _ - (1 to 200 characters)")
            _check_url(f"{key}.url", p.url, bridges_only=False)
            _check_options(key, p.url, p.options, _bridge_peer_keys())
            if p.ca_file is not None and not isinstance(p.ca_file, str):
                raise ConfigError(f"{key}.ca_file: must be a string, not {p.ca_file!r}")
            if p.ca_file and not os.path.isfile(p.ca_file):
                raise ConfigError(f"{key}.ca_file: no such file {p.ca_file!r}")
            for k in ("max_in_flight", "batch_messages", "batch_bytes"):
                v = getattr(p, k)
                if type(v) is not int or v < 1:
                    raise ConfigError(f"{key}.{k}: must be a positive integer, not {v!r}")
            names.add(p.name)
        for i, route in enumerate(self.routes):
            key = f"routes[{i}]"
            if not route.channels:
                raise ConfigError(f"{key}.channels: give a channel name or glob such as 'orders.*'")
            if not route.to:
                raise ConfigError(f"{key}.to: give at least one peer")
            for target in route.to:
                if target not in names and not target.startswith(("http://", "https://")):
                    raise ConfigError(f"{key}.to: unknown peer {target!r}; define it under [peers.{target}]")
            if route.mode not in ("fanout", "failover"):
                raise ConfigError(f"{key}.mode: must be 'fanout' or 'failover', not {route.mode!r}")
        source_names: set[str] = set()
        for i, src in enumerate(self.sources):
            key = f"sources[{i}]"
            if not isinstance(src.name, str) or CHANNEL_RE.fullmatch(src.name) is None:
                raise ConfigError(f"{key}.name: give a name of A-Z a-z 0-9 . _ - (1 to 200 characters)")
            if src.name in source_names:
                raise ConfigError(f"{key}.name: {src.name!r} is used twice")
            source_names.add(src.name)
            _check_url(f"{key}.url", src.url, bridges_only=True)
            if not isinstance(src.channel, str) or CHANNEL_RE.fullmatch(src.channel) is None:
                raise ConfigError(f"{key}.channel: must be a channel name, not {src.channel!r}")
            if type(src.batch) is not int or src.batch < 1:
                raise ConfigError(f"{key}.batch: must be a positive integer, not {src.batch!r}")
            _check_options(key, src.url, src.options, SOURCE_KEYS)
        seen_tokens = set()
        for t in self.tokens:
            key = f"tokens.{t.name}"
            if len(t.token) < 16:
                raise ConfigError(f"{key}.token: use at least 16 characters (e.g. `openssl rand -hex 32`)")
            bad = set(t.scopes) - SCOPES
            if bad or not t.scopes:
                raise ConfigError(f"{key}.scopes: must be a non-empty list of {sorted(SCOPES)}, got {sorted(t.scopes)}")
            if t.token in seen_tokens:
                raise ConfigError(f"{key}.token: the same token is configured twice")
            seen_tokens.add(t.token)
        if not self.tokens and not is_loopback(host):
            raise ConfigError(
                f"node.listen: refusing to listen on {host}:{port} without any [tokens]: "
                "anyone on the network could read and write messages",
                hint="add [tokens.NAME] entries with scopes, or listen on 127.0.0.1",
            )
        return self


def _bridge_peer_keys() -> dict[str, frozenset[str]]:
    from ..bridges import PEER_KEYS

    return PEER_KEYS


def _check_url(key: str, url: Any, *, bridges_only: bool) -> None:
    """An http(s) peer URL, or a broker URL whose client library is installed (else a clear error)."""
    from ..bridges import SCHEMES, require

    try:
        u = urlsplit(url) if isinstance(url, str) else None
        scheme = u.scheme if u else ""
        ok = u is not None and bool(u.hostname) and u.port != 0
    except ValueError:  # a bad IPv6 address, or a port that is not a number from 0 to 65535
        ok, scheme = False, ""
    allowed = sorted(SCHEMES) if bridges_only else ["http", "https", *sorted(SCHEMES)]
    if not ok or scheme not in allowed:
        raise ConfigError(f"{key}: must be a URL with scheme {', '.join(allowed)} and a host, not {url!r}")
    if scheme in SCHEMES:
        try:
            require(SCHEMES[scheme])
        except SpoolqError as e:
            raise ConfigError(f"{key}: {e}", hint=e.hint) from e


def _check_options(key: str, url: str, options: dict[str, Any], allowed: dict[str, frozenset[str]]) -> None:
    from ..bridges import SCHEMES, scheme_of

    extra = SCHEMES.get(scheme_of(url))
    known = allowed.get(extra, frozenset()) if extra else frozenset()
    for k, v in options.items():
        if k not in known:
            what = f"{extra} URLs" if extra else "http(s) peers"
            raise ConfigError(f"{key}.{k}: not a key for {what}", hint=f"known keys there: {sorted(known)}")
        if k in ("maxlen", "prefetch"):
            if type(v) is not int or v < 1:
                raise ConfigError(f"{key}.{k}: must be a positive integer, not {v!r}")
        elif not isinstance(v, str) or not v:
            raise ConfigError(f"{key}.{k}: must be a non-empty string, not {v!r}")


# A URL an HTTP client names must not smuggle anything past a glob: no user info, query, fragment,
# backslash or space. In a glob, ``*`` in the host or port matches within one label (no ``.``, ``/``
# or ``:``, so ``dc*.example.com`` cannot match ``dc1.evil.com/x.example.com``); in the path it
# matches anything.
_URL_FORBIDDEN = re.compile(r"[@?#\\\s]")


def _bad_url_glob(pattern: object) -> str | None:
    if not isinstance(pattern, str):
        return "must be a string"
    if not pattern.startswith(("http://", "https://")):
        return "must start with http:// or https://"
    if _URL_FORBIDDEN.search(pattern):
        return "must not hold '@', '?', '#', '\\' or spaces"
    if not pattern.split("://", 1)[1].split("/", 1)[0]:
        return "needs a host"
    return None


def _glob_regex(pattern: str) -> re.Pattern[str]:
    scheme, rest = pattern.split("://", 1)
    authority, slash, path = rest.partition("/")
    out = re.escape(scheme) + "://"
    out += "".join("[^/:.]*" if c == "*" else re.escape(c) for c in authority)
    if slash:
        out += "/" + "".join(".*" if c == "*" else re.escape(c) for c in path)
    return re.compile(out)


def url_matches(pattern: str, url: str) -> bool:
    """Does ``url`` match the ``allow_urls`` glob ``pattern``? (a URL without a path also as ``url/``)."""
    if _URL_FORBIDDEN.search(url) or not url.startswith(("http://", "https://")):
        return False
    rx = _glob_regex(pattern)
    if rx.fullmatch(url):
        return True
    return "/" not in url.split("://", 1)[1] and rx.fullmatch(url + "/") is not None


def _check_tls(cert: str, key: str) -> None:
    """Load the certificate and key once, so a bad one is a config error naming the key, not a
    traceback at start."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as e:
        what = getattr(e, "reason", None) or getattr(e, "strerror", None) or str(e)
        which = "node.tls_key" if "KEY" in str(what).upper() and "CERT" not in str(what).upper() else "node.tls_cert"
        raise ConfigError(f"{which}: cannot load the certificate {cert!r} with the key {key!r}: {what}",
                          hint="give a PEM certificate (chain) in node.tls_cert and its private key in "
                               "node.tls_key") from None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_listen(value: str, *, key: str = "listen") -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port). Port 0 picks a free port."""
    if not isinstance(value, str):
        raise ConfigError(f"{key}: must be a string HOST:PORT, not {value!r}")
    host, sep, port_s = value.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"{key}: must be HOST:PORT, not {value!r}")
    host = host.strip("[]")
    if not (port_s.isascii() and port_s.isdigit()):  # int() would also take " 80", "+80" and "8_0"
        raise ConfigError(f"{key}: port must be a number, not {port_s!r}")
    port = int(port_s)
    if not 0 <= port <= 65535:
        raise ConfigError(f"{key}: port {port} out of range")
    return host, port


_NODE_KEYS = {f for f in NodeConfig.__dataclass_fields__} - {"peers", "routes", "tokens", "source", "stomp", "sources"}
_PEER_KEYS = {"url", "token", "token_file", "ca_file", "max_in_flight", "batch_messages", "batch_bytes"}


def _secret(table: dict[str, Any], key: str, base: Path) -> str | None:
    tok = table.get("token")
    tfile = table.get("token_file")
    if tok is not None and tfile is not None:
        raise ConfigError(f"{key}: give token or token_file, not both")
    if tfile is not None:
        path = (base / str(tfile)).resolve()
        try:
            secret = path.read_text().strip()
        except OSError as e:
            raise ConfigError(f"{key}.token_file: cannot read {path}: {e.strerror}") from e
        except UnicodeDecodeError as e:
            raise ConfigError(f"{key}.token_file: {path} is not UTF-8 text") from e
        if not secret:
            raise ConfigError(f"{key}.token_file: {path} is empty")
        return secret
    if tok is not None and not isinstance(tok, str):
        raise ConfigError(f"{key}.token: must be a string")
    return tok


def load_config(path: str | os.PathLike[str] | None, **overrides: Any) -> NodeConfig:
    """Read a node config file (``None``: all defaults), apply ``overrides``
    (command-line flags; ``None`` values are ignored), then validate.

    Relative paths in the file (``spool``, ``tls_cert``, ``tls_key``,
    ``ca_file``, ``token_file``) are relative to the file's directory.

    Raises:
        ConfigError: unreadable file, bad TOML, unknown or bad keys (named).
    """
    if path is None:
        return NodeConfig().with_overrides(**overrides).validate()
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read config {p}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text: {e}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from e
    base = p.parent
    unknown = set(data) - {"node", "peers", "routes", "tokens", "stomp", "sources"}
    if unknown:
        raise ConfigError(f"{p}: unknown section(s) {sorted(unknown)}", hint="use [node], [peers.NAME], "
                          "[[routes]], [[sources]] and [tokens.NAME]")
    node = data.get("node", {})
    if not isinstance(node, dict):
        raise ConfigError("node: must be a table")
    bad = set(node) - _NODE_KEYS
    if bad:
        raise ConfigError(f"node: unknown key(s) {sorted(bad)}", hint=f"known keys: {sorted(_NODE_KEYS)}")
    for section in ("peers", "tokens"):
        if not isinstance(data.get(section, {}), dict):
            raise ConfigError(f"{section}: use [{section}.NAME] tables")
    peers = []
    for name, t in data.get("peers", {}).items():
        if not isinstance(t, dict):
            raise ConfigError(f"peers.{name}: must be a table with url = ...")
        bridge_keys: set[str] = set().union(*_bridge_peer_keys().values())
        bad = set(t) - _PEER_KEYS - bridge_keys
        if bad:
            raise ConfigError(f"peers.{name}: unknown key(s) {sorted(bad)}", hint=f"known keys: {sorted(_PEER_KEYS)}")
        if "url" not in t:
            raise ConfigError(f"peers.{name}.url: missing")
        peers.append(PeerConfig(
            name=name, url=str(t["url"]).rstrip("/"), token=_secret(t, f"peers.{name}", base),
            ca_file=_relative(t.get("ca_file"), base), max_in_flight=t.get("max_in_flight", MAX_IN_FLIGHT),
            batch_messages=t.get("batch_messages", BATCH_MESSAGES), batch_bytes=t.get("batch_bytes", BATCH_BYTES),
            options={k: v for k, v in t.items() if k in bridge_keys}))
    sources = []
    raw_sources = data.get("sources") or []
    if not isinstance(raw_sources, list):
        raise ConfigError("sources: use [[sources]] entries")
    all_source_keys: set[str] = set().union(*SOURCE_KEYS.values())
    for i, t in enumerate(raw_sources):
        if not isinstance(t, dict):
            raise ConfigError("sources: use [[sources]] entries")
        bad = set(t) - {"name", "url", "channel", "batch"} - all_source_keys
        if bad:
            raise ConfigError(f"sources[{i}]: unknown key(s) {sorted(bad)}",
                              hint=f"known keys: {sorted({'name', 'url', 'channel', 'batch'} | all_source_keys)}")
        for k in ("name", "url", "channel"):
            if k not in t:
                raise ConfigError(f"sources[{i}].{k}: missing")
        sources.append(SourceConfig(name=t["name"], url=t["url"], channel=t["channel"], batch=t.get("batch", 500),
                                    options={k: v for k, v in t.items() if k in all_source_keys}))
    routes = []
    raw_routes = data.get("routes") or []
    if not isinstance(raw_routes, list):
        raise ConfigError("routes: use [[routes]] entries")
    for i, r in enumerate(raw_routes):
        if not isinstance(r, dict):
            raise ConfigError("routes: use [[routes]] entries")
        bad = set(r) - {"channels", "to", "mode"}
        if bad:
            raise ConfigError(f"routes[{i}]: unknown key(s) {sorted(bad)}")
        if not isinstance(r.get("channels", ""), str):
            raise ConfigError(f"routes[{i}].channels: must be one channel name or glob such as 'orders.*'")
        to = r.get("to", [])
        if isinstance(to, str):
            to = [to]
        if not isinstance(to, list):
            raise ConfigError(f"routes[{i}].to: must be a peer name or a list of them")
        routes.append(Route(str(r.get("channels", "")), tuple(str(x) for x in to), str(r.get("mode", "fanout"))))
    tokens = []
    for name, t in data.get("tokens", {}).items():
        if not isinstance(t, dict):
            raise ConfigError(f"tokens.{name}: must be a table with token and scopes")
        bad = set(t) - {"token", "token_file", "scopes"}
        if bad:
            raise ConfigError(f"tokens.{name}: unknown key(s) {sorted(bad)}")
        secret = _secret(t, f"tokens.{name}", base)
        if not secret:
            raise ConfigError(f"tokens.{name}.token: missing")
        scopes = t.get("scopes", [])
        if not isinstance(scopes, list):
            raise ConfigError(f"tokens.{name}.scopes: must be a list such as ['peer']")
        tokens.append(TokenConfig(name, secret, frozenset(str(s) for s in scopes)))
    if "allow_urls" in node:
        if not isinstance(node["allow_urls"], list):
            raise ConfigError("node.allow_urls: must be a list of URL globs such as 'https://dc*.example.com:7070/*'")
        node["allow_urls"] = tuple(node["allow_urls"])
    for key in ("spool", "tls_cert", "tls_key", "ca_file"):
        if key in node:
            node[key] = _relative(node[key], base)
    stomp = None
    if "stomp" in data:
        st = data["stomp"]
        if not isinstance(st, dict) or set(st) - {"listen", "tls_cert", "tls_key", "websocket"}:
            raise ConfigError("stomp: a table with listen, tls_cert, tls_key, websocket")
        stomp = StompConfig(**{k: _relative(v, base) if k.startswith("tls_") else v for k, v in st.items()})
    try:
        cfg = NodeConfig(**node, peers=tuple(peers), routes=tuple(routes), tokens=tuple(tokens), stomp=stomp,
                         sources=tuple(sources), source=str(p))
    except TypeError as e:
        raise ConfigError(f"{p}: {e}") from e
    return cfg.with_overrides(**overrides).validate()


def _relative(value: Any, base: Path) -> Any:
    """A path from the config file, relative to the file's directory (other values unchanged)."""
    if isinstance(value, str) and value and not os.path.isabs(value):
        return str(base / value)
    return value
