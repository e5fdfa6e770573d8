"""HTTP routes of a node (aiohttp): peer batches, the JSON API, /healthz, /metrics.

Routes (scope needed when the node has tokens):

======  ==========================================  =======  ============================================
POST    /v1/batches                                  peer     a MessagePack batch from a peer (codec.py)
POST    /v1/hello                                    peer     a peer started: retry forwarding to it now
POST    /v1/channels/{channel}/messages              send     send one (raw body) or many (JSON)
POST    /v1/channels/{channel}/leases                consume  lease up to ``max``, long-poll ``wait``
POST    /v1/leases/{lease}/ack|nack|touch            consume  finish or extend a lease
POST    /v1/acks                                     consume  ack many leases, all or nothing
GET     /v1/stats                                    any      depths per channel and peer
GET     /v1/dead, /v1/dead/{id}                      admin    list / show dead letters
POST    /v1/dead/retry, /v1/dead/purge               admin    retry / purge dead letters (``dry_run``)
GET     /v1/peers                                    admin    peer health: URLs, failures, last errors
GET     /v1/admin/..., POST /v1/admin/...            admin    queue administration (``admin_api.py``)
GET     /healthz                                     none     liveness (peer details only without tokens)
GET     /metrics                                     admin    Prometheus text format
GET     /v1/admin/trace/{id}                         admin    one message's events here, and its next hops
GET     /v1/admin/history                            admin    the last hour of counts and rates (history.py)
GET     /ui/...                                      none     the dashboard's static files (ui/); its calls
                                                              need ``admin``
======  ==========================================  =======  ============================================

Errors are JSON ``{"error": CODE, "message": ..., "hint": ...}`` with a 4xx or
5xx status; a request that fails changes nothing.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import functools
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

import aiohttp
import msgspec
from aiohttp import web

from ..codec import (
    ACCEPTED,
    ACCEPTED_RESULT,
    DUPLICATE,
    REJECTED,
    Result,
    check_messages,
    decode_batch,
    encode_reply,
)
from ..errors import (
    CodecError,
    InvalidArgument,
    LeaseError,
    LeaseExpired,
    MessageTooLarge,
    NotFound,
    SpoolBusy,
    SpoolqError,
    StorageFull,
)
from ..lease import Lease
from ..message import MAX_SECONDS, check_seconds, seconds_too_long
from ..routing import failover_parts
from ..store.events import ACTOR
from . import admin_api, trace_api, ui
from . import history as history_api
from .gate import quiet

if TYPE_CHECKING:
    from ..spool import Spool
    from .config import NodeConfig
    from .forwarder import PeerLink
    from .history import History
    from .metrics import Metrics


class Node(Protocol):
    """What the HTTP routes need of the running node (``daemon.Node``)."""

    config: NodeConfig
    metrics: Metrics
    spool: Spool
    stomp: Any  # spoolq.stomp.server.Server, when [stomp] is configured
    links: dict[str, PeerLink]  # the forwarders, by outbox peer
    history: History | None  # the dashboard's last hour (history.py)

    async def send(self, channel: str, items: list[tuple[bytes, dict[str, Any]]]) -> list[str]: ...
    async def send_one(self, channel: str, body: bytes) -> str: ...
    async def lease_async(self, channel: str, n: int, visibility: float, wait: float,
                          gone: Callable[[], bool] | None = None) -> list[Lease]: ...
    async def release(self, leases: list[Lease]) -> None: ...
    def health(self, detail: bool = True) -> dict[str, Any]: ...
    def peer_hello(self) -> None: ...

__all__ = ["build_app", "SCOPE"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SCOPE: dict[str, str | None] = {}  # route name -> scope
HEADER_PREFIX = "spoolq-header-"
NODE: web.AppKey[Any] = web.AppKey("node")
MAX_WAIT = 60.0

log = logging.getLogger("spoolq.server")


def _error(status: int, code: str, message: str, hint: str | None = None,
           headers: dict[str, str] | None = None) -> web.Response:
    body: dict[str, Any] = {"error": code, "message": message}
    if hint:
        body["hint"] = hint
    return web.json_response(body, status=status, headers=headers)


def _reply(data: Any, status: int = 200) -> web.Response:
    """``web.json_response`` for the hot routes (the same headers), encoded by msgspec: ~4x faster."""
    return web.Response(body=_encode_json(data), status=status, content_type="application/json", charset="utf-8")


_encode_json = msgspec.json.Encoder().encode


def _spoolq_error(e: SpoolqError) -> web.Response:
    if isinstance(e, CodecError):
        return _error(413 if e.code == "too_large" else 400, e.code, e.message, e.hint)
    if isinstance(e, MessageTooLarge):
        return _error(413, "too_large", e.message, e.hint)
    if isinstance(e, TooManyItems):
        return _error(413, "too_large", e.message, e.hint)
    if isinstance(e, UnsupportedEncoding):
        return _error(415, "unsupported_encoding", e.message, e.hint)
    if isinstance(e, BodyTimeout):
        return _error(408, "timeout", e.message, e.hint, headers={"Connection": "close"})
    if isinstance(e, InvalidArgument):
        return _error(400, "invalid_argument", e.message, e.hint)
    if isinstance(e, NotFound):
        return _error(404, "not_found", e.message, e.hint)
    if isinstance(e, LeaseError):
        return _error(409, "lease_expired" if isinstance(e, LeaseExpired) else "lease_lost", e.message, e.hint)
    if isinstance(e, StorageFull):
        return _error(507, "storage_full", e.message, "the node is out of disk space; retry later",
                      headers={"Retry-After": "30"})
    if isinstance(e, SpoolBusy):
        return _error(503, "busy", e.message, e.hint, headers={"Retry-After": "1"})
    return _error(503, "storage_error", e.message, e.hint, headers={"Retry-After": "5"})


def build_app(node: Node) -> web.Application:
    """The aiohttp application serving ``node``."""
    app = web.Application(client_max_size=node.config.max_batch_bytes + 1024,
                          middlewares=[_observe(node), _errors, _auth(node)])
    app[NODE] = node
    r = app.router

    def add(method: str, path: str, handler: Handler, name: str, scope: str | None) -> None:
        r.add_route(method, path, handler, name=name)
        SCOPE[name] = scope

    add("POST", "/v1/batches", post_batch, "batches", "peer")
    add("POST", "/v1/hello", post_hello, "hello", "peer")
    add("POST", "/v1/channels/{channel}/messages", post_messages, "send", "send")
    add("POST", "/v1/channels/{channel}/leases", post_leases, "lease", "consume")
    add("POST", "/v1/leases/{lease}/ack", post_ack, "ack", "consume")
    add("POST", "/v1/leases/{lease}/nack", post_nack, "nack", "consume")
    add("POST", "/v1/leases/{lease}/touch", post_touch, "touch", "consume")
    add("POST", "/v1/acks", post_acks, "acks", "consume")
    add("GET", "/v1/stats", get_stats, "stats", "any")
    add("GET", "/v1/dead", get_dead, "dead", "admin")
    add("GET", "/v1/dead/{id}", get_dead_one, "dead_one", "admin")
    add("POST", "/v1/dead/retry", post_dead_retry, "dead_retry", "admin")
    add("POST", "/v1/dead/purge", post_dead_purge, "dead_purge", "admin")
    add("GET", "/v1/peers", get_peers, "peers", "admin")
    add("GET", "/healthz", get_healthz, "healthz", None)
    add("GET", "/stomp", get_stomp_ws, "stomp", None)  # STOMP over WebSocket: CONNECT's passcode is the token
    add("GET", "/metrics", get_metrics, "metrics", "admin")
    admin_api.install(add, node, _json)
    trace_api.install(add, node)
    history_api.install(add, lambda: node.history)
    ui.install(add)
    return app


async def get_stomp_ws(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE]
    cfg = node.config.stomp
    if node.stomp is None or cfg is None or not cfg.websocket:
        return _error(404, "not_found", "STOMP over WebSocket is not enabled", "add a [stomp] section to the config")
    from ..stomp.ws import serve_websocket

    return await serve_websocket(request, node.stomp)


# -- middlewares ----------------------------------------------------------------------------


def _observe(node: Node) -> Any:
    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.perf_counter()
        status = 500
        try:
            resp = await handler(request)
            status = resp.status
            return resp
        except web.HTTPException as e:
            status = e.status
            raise
        finally:
            route = request.match_info.route.resource
            name = route.canonical if route is not None else "unmatched"
            node.metrics.request(name, request.method, status, time.perf_counter() - start)

    return observe


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except SpoolqError as e:
        return _spoolq_error(e)
    except ClientGone:
        return _error(400, "client_gone", "the request body was cut off")
    except web.HTTPRequestEntityTooLarge as e:
        return _error(413, "too_large", f"request body over the limit: {e.text}", "send smaller batches")
    except web.HTTPNotFound:
        return _error(404, "not_found", f"no route {request.method} {request.path}")
    except web.HTTPMethodNotAllowed:
        return _error(405, "method_not_allowed", f"{request.method} is not allowed on {request.path}")
    except web.HTTPException:
        raise
    except Exception:  # a bug: still answer in the documented error format
        log.exception("%s %s failed unexpectedly", request.method, request.path)
        return _error(500, "internal", "the node failed unexpectedly", "see the node's log")


def _auth(node: Node) -> Any:
    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        name = request.match_info.route.name
        scope = SCOPE.get(name or "", None)
        tokens = node.config.tokens
        if scope is None or not tokens:
            ACTOR.set(("http", request.remote))  # who sends, for the event log (spoolq trace)
            return await handler(request)
        header = request.headers.get("Authorization", "")
        kind, _, presented = header.partition(" ")
        if kind.lower() != "bearer" or not presented:
            return _error(401, "unauthorized", "missing bearer token",
                          "send 'Authorization: Bearer <token>' with a token from the node's [tokens]",
                          headers={"WWW-Authenticate": "Bearer"})
        try:
            given = presented.strip().encode("utf-8")
        except UnicodeEncodeError:  # bytes that are not UTF-8 (aiohttp keeps them as surrogates)
            given = b""
        match = None
        for t in tokens:  # compare with every token, in constant time each
            if hmac.compare_digest(given, t.token.encode()):
                match = t
        if match is None or not given:
            return _error(401, "unauthorized", "unknown token", "check the token against the node's [tokens]",
                          headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        if scope != "any" and scope not in match.scopes:
            return _error(403, "forbidden", f"token {match.name!r} lacks the {scope!r} scope",
                          f"add {scope!r} to tokens.{match.name}.scopes")
        request["token"] = match.name
        ACTOR.set((f"token:{match.name}", request.remote))
        return await handler(request)

    return auth


# -- peers ----------------------------------------------------------------------------------


async def post_batch(request: web.Request) -> web.Response:
    node: Node = request.app[NODE]
    cfg = node.config
    if request.content_length is not None and request.content_length > cfg.max_batch_bytes:
        node.metrics.receive_batches.labels("too_large").inc()
        return _error(413, "too_large", f"batch of {request.content_length} bytes is over the limit of "
                      f"{cfg.max_batch_bytes}", "send smaller batches")
    try:
        raw = await _read(request, cfg.max_batch_bytes)
    except web.HTTPRequestEntityTooLarge:  # no Content-Length, and more than client_max_size came
        node.metrics.receive_batches.labels("too_large").inc()
        raise
    try:
        batch = decode_batch(raw, max_bytes=cfg.max_batch_bytes, max_messages=cfg.max_batch_messages)
    except CodecError as e:
        node.metrics.receive_batches.labels(e.code).inc()
        raise
    messages = batch.messages
    n = len(messages)
    results: list[Result | None] = [None] * n
    now_ms = int(time.time() * 1000)
    reasons = check_messages(messages, cfg.max_message_size, now_ms)
    if reasons.count(None) == n and len({m.id for m in messages}) == n:
        valid, where = messages, None  # the usual batch: every message valid, no id twice
    else:
        valid = []
        where = []
        ids: set[bytes] = set()
        for i, m in enumerate(messages):
            reason = reasons[i]
            if reason is not None:
                results[i] = Result(REJECTED, reason, True)
            elif m.id in ids:
                results[i] = Result(DUPLICATE)
            else:
                ids.add(m.id)
                valid.append(m)
                where.append(i)
    try:
        dups = await node.spool.areceive(valid, batch.sender)
    except SpoolqError:
        node.metrics.receive_batches.labels("storage_error").inc()
        raise
    if where is None and not dups:  # all accepted: no object per message
        final = [ACCEPTED_RESULT] * n
        if node.history is not None:
            channels = {m.channel for m in valid}
            if len(channels) == 1:
                node.history.came(channels.pop(), n)
            else:
                for channel, count in collections.Counter(m.channel for m in valid).items():
                    node.history.came(channel, count)
        node.metrics.received(n, 0, 0)
        return web.Response(body=encode_reply(final), content_type="application/x-msgpack")
    if where is None:
        where = list(range(n))
    statuses = [DUPLICATE if m.id in dups else ACCEPTED for m in valid]
    if node.history is not None:
        for m, s in zip(valid, statuses, strict=True):
            if s == ACCEPTED:
                node.history.came(m.channel)
    for i, s in zip(where, statuses, strict=True):
        results[i] = ACCEPTED_RESULT if s == ACCEPTED else Result(s)
    final = [r if r is not None else Result(REJECTED, "internal", False) for r in results]
    accepted = sum(1 for s in statuses if s == 0)
    rejected = sum(1 for r in final if r.status == REJECTED)
    node.metrics.received(accepted, len(final) - accepted - rejected, rejected)
    return web.Response(body=encode_reply(final), content_type="application/x-msgpack")


async def post_hello(request: web.Request) -> web.Response:
    """A peer that (re)started says so: forwarding to peers that gave no reply resumes at once."""
    node: Node = request.app[NODE]
    await _read(request, 4096)  # nothing in it is needed; read it so the connection can be reused
    node.peer_hello()
    return web.Response(status=204)


# -- the JSON API ------------------------------------------------------------------------------


class BodyTimeout(InvalidArgument):
    """The request body did not arrive within ``node.body_timeout``."""


class ClientGone(Exception):
    """The client disconnected mid-request: nothing to answer (logged once, rate-limited)."""


class TooManyItems(InvalidArgument):
    """More messages or lease handles in one request than ``node.max_request_messages``."""


class UnsupportedEncoding(InvalidArgument):
    """A compressed request body (refused: it could inflate far past the limits)."""


async def _read(request: web.Request, limit: int | None = None) -> bytes:
    """The request body, at most ``limit`` bytes (default ``node.max_request_bytes``), which must
    arrive within ``node.body_timeout`` (a slow sender holds a connection and a buffer: 408).

    Read in chunks with a running count, so an oversized body without Content-Length is cut off
    at the limit, not buffered whole. Compressed bodies are refused (415): aiohttp would inflate
    them before any limit applies."""
    node: Node = request.app[NODE]
    cfg = node.config
    limit = cfg.max_request_bytes if limit is None else limit
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise UnsupportedEncoding(f"Content-Encoding {encoding[:40]!r} is not accepted",
                                  hint="send the body uncompressed")
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    content = request.content
    chunks: list[bytes] = []
    total = 0
    try:
        if content.is_eof():  # the whole body came with the headers (small requests): no timer, no chunks
            body = content.read_nowait(-1)
            if len(body) > limit:
                raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(body))
            return body
        async with asyncio.timeout(cfg.body_timeout):
            async for chunk in content.iter_any():
                total += len(chunk)
                if total > limit:
                    raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=total)
                chunks.append(chunk)
    except (ConnectionError, aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as e:
        quiet.note("client-gone", f"a client left while sending its request body: {e}")
        raise ClientGone() from None
    except TimeoutError:
        raise BodyTimeout(f"the request body did not arrive within {node.config.body_timeout:g} seconds",
                          hint="send the body at once; node.body_timeout sets the limit") from None
    return b"".join(chunks)


_UTF8 = frozenset({"utf-8", "utf8"})
_decode_json = msgspec.json.Decoder().decode  # ~6x json.loads on a small send; its DecodeError is a ValueError


async def _json(request: web.Request) -> Any:
    if not request.can_read_body:
        return {}
    raw = await _read(request)
    try:
        charset = request.charset
        data: bytes | str = raw if charset is None or charset.lower() in _UTF8 else raw.decode(charset)
        if len(raw) <= _INLINE_JSON:
            return _decode_json(data)
        return await asyncio.to_thread(_decode_json, data)  # large bodies: off the event loop
    except (RecursionError, ValueError, UnicodeDecodeError, LookupError) as e:  # LookupError: an unknown charset
        raise _bad_json(e) from None


_INLINE_JSON: Final = 1 << 16  # JSON bodies up to this size are decoded on the event loop


def _bad_json(e: BaseException) -> InvalidArgument:
    if isinstance(e, RecursionError):
        return InvalidArgument("request body is nested too deeply",
                               hint="send a flat JSON object as the API describes")
    return InvalidArgument(f"request body is not valid JSON: {e}",
                           hint="send Content-Type: application/json with a JSON object")


def _small_json(request: web.Request, limit: int) -> bytes | None:
    """The body of a small JSON request when it is simple to take (issue 9: the send route's usual
    request): ``Content-Type`` exactly ``application/json`` (no charset parameter), no
    ``Content-Encoding``, and the whole body arrived with the headers, at most ``limit`` bytes and
    small enough to decode on the loop. ``None``, with nothing read, for anything else: the caller
    takes the general path (:func:`_json`), which applies every check."""
    content = request.content
    if not content.is_eof():
        return None
    headers = request.headers
    if headers.get("Content-Type") != "application/json" or "Content-Encoding" in headers:
        return None
    cl = request.content_length
    if cl is None or not 0 < cl <= min(limit, _INLINE_JSON):
        return None
    return content.read_nowait(-1)


def _count(node: Node, n: int, what: str) -> None:
    limit = node.config.max_request_messages
    if n > limit:
        raise TooManyItems(f"{what}: {n} items in one request, over the limit of {limit}",
                           hint="split the request; node.max_request_messages sets the limit")


def _body_of(item: dict[str, Any], where: str) -> bytes:
    if "body" in item and "body_base64" in item:
        raise InvalidArgument(f"{where}: give body or body_base64, not both")
    if "body_base64" in item:
        v = item["body_base64"]
        if not isinstance(v, str):
            raise InvalidArgument(f"{where}.body_base64: must be a base64 string")
        try:
            return base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidArgument(f"{where}.body_base64: not valid base64") from None
    v = item.get("body")
    if not isinstance(v, str):
        raise InvalidArgument(f"{where}: needs body (text) or body_base64 (bytes)",
                              hint='e.g. {"body": "hello"} or {"body_base64": "aGVsbG8="}')
    return v.encode("utf-8")


_SEND_KEYS = {"body", "body_base64", "priority", "delay", "ttl", "headers", "id", "to"}


def _send_options(item: dict[str, Any], where: str) -> dict[str, Any]:
    bad = set(item) - _SEND_KEYS
    if bad:
        raise InvalidArgument(f"{where}: unknown field(s) {sorted(bad)}", hint=f"known fields: {sorted(_SEND_KEYS)}")
    opts: dict[str, Any] = {}
    for k in ("priority", "delay", "ttl", "headers", "id", "to"):
        if k in item and item[k] is not None:
            opts[k] = item[k]
    for k in ("delay", "ttl"):
        if k in opts:
            _in_range(opts[k], f"{where}.{k}")
    return opts


def _check_to(node: Node, to: Any, where: str) -> None:
    """Over HTTP, ``to`` names a configured peer or a URL ``node.allow_urls`` allows: a client must
    not make the node post to any address it likes (SSRF). Other types are left to the spool."""
    targets = [to] if isinstance(to, str) else to if isinstance(to, list) else []
    for t in targets:
        if not isinstance(t, str):
            continue
        for part in failover_parts(t):
            if not node.config.allows_to(part):
                raise InvalidArgument(
                    f"{where}: {part[:200]!r} is not a configured peer or a URL allowed by node.allow_urls",
                    hint="name a peer from the node's [peers.NAME], or add a matching glob to node.allow_urls")


async def post_messages(request: web.Request) -> web.Response:
    node: Node = request.app[NODE]
    channel = request.match_info["channel"]
    raw = _small_json(request, node.config.max_request_bytes)
    if raw is not None or request.content_type == "application/json":
        if raw is None:
            data = await _json(request)
        else:
            try:
                data = _decode_json(raw)
            except (RecursionError, ValueError) as e:
                raise _bad_json(e) from None
        if type(data) is dict and len(data) == 1 and type(text := data.get("body")) is str:
            # the common request, {"body": "..."}: what the general path below would make of it
            return _reply({"id": await node.send_one(channel, text.encode("utf-8"))}, 201)
        if isinstance(data, dict) and "messages" in data:
            if len(data) > 1:
                raise InvalidArgument(f"unknown field(s) {sorted(set(data) - {'messages'})} beside messages",
                                      hint="give options per message, inside each item of messages")
            items = data["messages"]
            if not isinstance(items, list) or not items:
                raise InvalidArgument("messages: must be a non-empty list")
            _count(node, len(items), "messages")
            many = True
        elif isinstance(data, dict):
            items, many = [data], False
        else:
            raise InvalidArgument("the JSON body must be an object", hint='{"body": "..."} or {"messages": [...]}')
        prepared = []
        for i, item in enumerate(items):
            where = f"messages[{i}]" if many else "message"
            if not isinstance(item, dict):
                raise InvalidArgument(f"{where}: must be an object")
            item_opts = _send_options(item, where)
            if "to" in item_opts:
                _check_to(node, item_opts["to"], f"{where}.to")
            prepared.append((_body_of(item, where), item_opts))
        ids = await node.send(channel, prepared)
        return _reply({"ids": ids} if many else {"id": ids[0]}, 201)
    body = await _read(request)
    q = request.query
    opts: dict[str, Any] = {}
    for k in ("priority",):
        if k in q:
            try:
                opts[k] = int(q[k])
            except ValueError:
                raise InvalidArgument(f"{k}: must be an integer, not {q[k]!r}") from None
    for k in ("delay", "ttl"):
        if k in q:
            try:
                opts[k] = float(q[k])
            except ValueError:
                raise InvalidArgument(f"{k}: must be a number of seconds, not {q[k]!r}") from None
            _in_range(opts[k], k)
    if "id" in q:
        opts["id"] = q["id"]
    to = q.getall("to", [])
    if to:
        opts["to"] = to if len(to) > 1 else to[0]
        _check_to(node, to, "to")
    headers = {k[len(HEADER_PREFIX):]: v for k, v in request.headers.items() if k.lower().startswith(HEADER_PREFIX)}
    if headers:
        for k, v in headers.items():
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidArgument(f"header Spoolq-Header-{k[:60]}: the value is not UTF-8 text",
                                      hint="send header values as UTF-8 (or put bytes in the body)") from None
        opts["headers"] = {k.lower(): v for k, v in headers.items()}
    ids = await node.send(channel, [(body, opts)])
    return _reply({"id": ids[0]}, 201)


def _param(request: web.Request, data: dict[str, Any], key: str, default: Any) -> Any:
    if key in data:
        return data[key]
    if key in request.query:
        return request.query[key]
    return default


def _num(value: Any, key: str) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise InvalidArgument(f"{key}: must be a number, not {value!r}") from None
    v = check_seconds(key, value)
    assert v is not None
    _in_range(v, key)
    return v


def _in_range(value: Any, key: str) -> None:
    """Refuse a duration too long to become a timestamp (it would overflow SQLite and the peer protocol)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > MAX_SECONDS:
        raise seconds_too_long(key, value)


def _lease_json(x: Lease, encoding: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "lease": x.handle, "id": x.id, "channel": x.channel, "priority": x.priority, "attempts": x.attempts,
        "job": x.job, "headers": x.headers, "deadline": x.deadline, "created_at": x.created_at,
    }
    if encoding == "base64":
        out["body_base64"] = base64.b64encode(x.body).decode()
    else:
        try:
            out["body"] = x.body.decode("utf-8")
        except UnicodeDecodeError:
            out["body_base64"] = base64.b64encode(x.body).decode()
    return out


async def post_leases(request: web.Request) -> web.Response:
    node: Node = request.app[NODE]
    channel = request.match_info["channel"]
    data = await _json(request) if request.content_type == "application/json" else {}
    if not isinstance(data, dict):
        raise InvalidArgument("the JSON body must be an object")
    try:
        n = int(_param(request, data, "max", 1))
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(inf)
        raise InvalidArgument("max: must be a positive integer") from None
    if not 1 <= n <= 1000:
        raise InvalidArgument("max: must be 1 to 1000")
    visibility = _num(_param(request, data, "visibility", 30.0), "visibility")
    wait = min(_num(_param(request, data, "wait", 0.0), "wait"), MAX_WAIT)
    encoding = str(_param(request, data, "encoding", "auto"))
    if encoding not in ("auto", "base64"):
        raise InvalidArgument("encoding: must be 'auto' (text when it is UTF-8) or 'base64'")
    leases = await node.lease_async(channel, n, visibility, wait, gone=lambda: _client_gone(request))
    if leases and _client_gone(request):  # left while the last lease was taken: give them back
        await node.release(leases)
        leases = []
    return web.json_response({"leases": [_lease_json(x, encoding) for x in leases]})


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def post_ack(request: web.Request) -> web.Response:
    node: Node = request.app[NODE]
    lease = Lease.from_handle(node.spool, request.match_info["lease"])
    await asyncio.to_thread(lease.ack)
    if node.history is not None:
        node.history.left(lease.channel)
    return web.Response(status=204)


async def post_nack(request: web.Request) -> web.Response:
    node: Node = request.app[NODE]
    lease = Lease.from_handle(node.spool, request.match_info["lease"])
    data = await _json(request) if request.can_read_body else {}
    delay = data.get("delay") if isinstance(data, dict) else None
    if delay is None and "delay" in request.query:
        delay = request.query["delay"]
    d = _num(delay, "delay") if delay is not None else None
    reason = data.get("reason") if isinstance(data, dict) else None
    if reason is not None and (not isinstance(reason, str) or len(reason) > 1000):
        raise InvalidArgument("reason: must be a string of at most 1000 characters (why processing failed)")
    await asyncio.to_thread(functools.partial(lease.nack, d, reason=reason))
    return web.Response(status=204)


async def post_touch(request: web.Request) -> web.Response:
    node: Node = request.app[NODE]
    lease = Lease.from_handle(node.spool, request.match_info["lease"])
    data = await _json(request) if request.can_read_body else {}
    visibility = _num(_param(request, data if isinstance(data, dict) else {}, "visibility", 30.0), "visibility")
    await asyncio.to_thread(lease.touch, visibility)
    return web.json_response({"deadline": lease.deadline})


async def post_acks(request: web.Request) -> web.Response:
    node: Node = request.app[NODE]
    data = await _json(request)
    handles = data.get("leases") if isinstance(data, dict) else None
    if not isinstance(handles, list) or not all(isinstance(h, str) for h in handles):
        raise InvalidArgument("leases: must be a list of lease handles")
    _count(node, len(handles), "leases")
    leases = [Lease.from_handle(node.spool, h) for h in handles]
    await asyncio.to_thread(node.spool.ack_many, leases)
    if node.history is not None:
        for x in leases:
            node.history.left(x.channel)
    return web.Response(status=204)


async def get_stats(request: web.Request) -> web.Response:
    node: Node = request.app[NODE]
    st = await asyncio.to_thread(node.spool.stats)
    return web.json_response({"node_id": node.spool.node_id, **st.as_dict()})


def _dead_filters(data: Any, request: web.Request) -> dict[str, Any]:
    src = data if isinstance(data, dict) else {}
    out: dict[str, Any] = {}
    for k in ("channel", "reason"):
        v = src.get(k, request.query.get(k))
        if v is not None:
            out[k] = str(v)
    for k in ("older_than", "newer_than"):
        v = src.get(k, request.query.get(k))
        if v is not None:
            out[k] = _num(v, k)
    return out


async def get_dead(request: web.Request) -> web.Response:
    node: Node = request.app[NODE]
    filters = _dead_filters({}, request)
    limit = request.query.get("limit")
    if limit is not None:
        try:
            filters["limit"] = int(limit)
        except ValueError:
            raise InvalidArgument("limit: must be an integer") from None
        if not 0 <= filters["limit"] < 1 << 62:  # SQLite refuses larger ones; negative would mean no limit
            raise InvalidArgument("limit: must be a non-negative integer")
    rows = await asyncio.to_thread(lambda: node.spool.dead_letters(**filters))
    return web.json_response({"dead": [d.as_dict() for d in rows]})


async def get_dead_one(request: web.Request) -> web.Response:
    node: Node = request.app[NODE]
    d = await asyncio.to_thread(node.spool.dead_letter, request.match_info["id"])
    out = d.as_dict()
    out["headers"] = d.message.headers
    out["body_base64"] = base64.b64encode(d.message.body).decode()
    return web.json_response(out)


def _selection(data: Any, request: web.Request) -> dict[str, Any]:
    sel = _dead_filters(data, request)
    ids = data.get("ids") if isinstance(data, dict) else None
    if ids is not None:
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise InvalidArgument("ids: must be a list of message ids")
        sel["ids"] = ids
    all_ = isinstance(data, dict) and data.get("all") is True
    if not sel and not all_:
        raise InvalidArgument("no dead letters selected", hint='give ids, filters, or "all": true')
    return sel


async def post_dead_retry(request: web.Request) -> web.Response:
    node: Node = request.app[NODE]
    data = await _json(request)
    sel = _selection(data, request)
    dry = bool(isinstance(data, dict) and data.get("dry_run"))
    done = await asyncio.to_thread(lambda: node.spool.retry_dead(dry_run=dry, who=admin_api.who(request), **sel))
    return web.json_response({"retried": [d.id for d in done], "dry_run": dry})


async def post_dead_purge(request: web.Request) -> web.Response:
    node: Node = request.app[NODE]
    data = await _json(request)
    sel = _selection(data, request)
    dry = bool(isinstance(data, dict) and data.get("dry_run"))
    n = await asyncio.to_thread(lambda: node.spool.purge_dead(dry_run=dry, who=admin_api.who(request), **sel))
    return web.json_response({"purged": n, "dry_run": dry})


async def get_healthz(request: web.Request) -> web.Response:
    """Up or down. Peer URLs and their last errors (which quote what a peer answered) are only shown
    here when the node has no tokens (loopback only); with tokens they need ``admin`` (/v1/peers)."""
    node: Node = request.app[NODE]
    return web.json_response(node.health(detail=not node.config.tokens))


async def get_peers(request: web.Request) -> web.Response:
    node: Node = request.app[NODE]
    return web.json_response({"peers": node.health()["peers"]})


async def get_metrics(request: web.Request) -> web.Response:
    node: Node = request.app[NODE]
    body = await asyncio.to_thread(node.metrics.render)
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})
