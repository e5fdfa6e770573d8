"""The HTTP admin API of a node (issue 11): browse, hold, release, requeue, delete, outbox, flush, audit.

Every route needs the ``admin`` scope when the node has tokens. Installed by
``api.build_app`` through one call, :func:`install`; the handlers are
closures over the node, so this module imports nothing above it.

======  ==============================  =========================================================
GET     /v1/admin/messages?FILTERS      a page of messages, not leased: ``{"messages", "next"}``
GET     /v1/admin/messages/{id}         every stored copy of one message, with headers and body
POST    /v1/admin/hold|release|         ``{"ids": [...]}`` or ``{"filter": {...}}``, ``"dry_run"``
        requeue|delete                  -> ``{"matched", "changed", "dry_run"}``; audited
GET     /v1/admin/outbox                per peer: state, waiting, in flight, held, last error...
POST    /v1/admin/flush                 ``{"peer": optional}``: retry now -> ``{"flushed": [...]}``
GET     /v1/admin/audit?limit=          the newest audit entries
======  ==============================  =========================================================

FILTERS (query string, or the ``filter`` object of a POST): ``channel``,
``peer``, ``state``, ``older_than``, ``newer_than``, ``min_priority``,
``max_priority``, ``header`` (``Name=value``); GET adds ``limit`` (1-1000,
default 100) and ``after`` (the previous page's ``next``). Bad input is a 400
``invalid_argument`` whose message starts with the field's name; nothing is
changed. The audit's ``who`` is the token's name, ``local`` on a node without
tokens.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

from aiohttp import web

from ..admin import FILTER_KEYS, MAX_LIMIT, AdminMessage, parse_filter
from ..errors import InvalidArgument, NotFound
from ..routing import failover_parts
from ..store.inbox import PeerStats
from .forwarder import PeerLink

if TYPE_CHECKING:
    from ..spool import Spool
    from .config import NodeConfig

__all__ = ["install", "who"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Add = Callable[[str, str, Handler, str, str | None], None]
ReadJson = Callable[[web.Request], Awaitable[Any]]
ACTION_KEYS: Final = frozenset(("ids", "filter", "dry_run"))
MAX_JSON_BODY: Final = 1 << 20  # body_json is parsed for bodies up to this size


class AdminNode(Protocol):
    """What the admin routes need of the running node (``daemon.Node``)."""

    spool: Spool
    links: dict[str, PeerLink]

    @property
    def config(self) -> NodeConfig: ...


def who(request: web.Request) -> str:
    """The audit's ``who``: the name of the request's token, ``local`` on a node without tokens."""
    return str(request.get("token") or "local")


def install(add: Add, node: AdminNode, read_json: ReadJson) -> None:
    """Add the admin routes (``add(method, path, handler, name, scope)`` is ``build_app``'s)."""

    async def get_messages(request: web.Request) -> web.Response:
        q = request.query
        for k in q:
            if k not in FILTER_KEYS and k not in ("limit", "after"):
                raise InvalidArgument(f"{k[:50]}: unknown parameter",
                                      hint=f"filters: {', '.join(FILTER_KEYS)}; paging: limit, after")
            if len(q.getall(k)) > 1:
                raise InvalidArgument(f"{k[:50]}: given more than once")
        f = parse_filter({k: v for k, v in q.items() if k in FILTER_KEYS}, strings=True)
        limit = _limit(q.get("limit"), 100, MAX_LIMIT)
        msgs, nxt = await asyncio.to_thread(node.spool.admin.browse, f, q.get("after"), limit)
        return web.json_response({"messages": [m.as_dict() for m in msgs], "next": nxt})

    async def get_message(request: web.Request) -> web.Response:
        mid = request.match_info["id"]
        try:
            found = await asyncio.to_thread(node.spool.admin.find, mid)
        except NotFound as e:
            raise NotFound(e.message, hint=f"acked, forwarded or never here; a dead letter is at /v1/dead/{mid}") \
                from None
        return web.json_response({"messages": [_detail(m) for m in found]})

    def action(name: str) -> Handler:
        async def act(request: web.Request) -> web.Response:
            data = await read_json(request)
            if not isinstance(data, dict):
                raise InvalidArgument("the JSON body must be an object",
                                      hint='{"ids": [...]} or {"filter": {...}}, and optionally "dry_run": true')
            bad = sorted(set(data) - ACTION_KEYS)
            if bad:
                raise InvalidArgument(f"{str(bad[0])[:50]}: unknown field", hint="use ids, filter and dry_run")
            dry = data.get("dry_run", False)
            if type(dry) is not bool:
                raise InvalidArgument("dry_run: must be true or false")
            ids, filt = data.get("ids"), data.get("filter")
            if filt is not None and not isinstance(filt, dict):
                raise InvalidArgument("filter: must be an object", hint='e.g. {"channel": "jobs", "state": "held"}')
            method = getattr(node.spool.admin, name)
            matched, changed = await asyncio.to_thread(
                lambda: method(ids, filter=filt, dry_run=dry, who=who(request)))
            return web.json_response({"matched": matched, "changed": changed, "dry_run": dry})

        return act

    async def get_outbox(request: web.Request) -> web.Response:
        st = await asyncio.to_thread(node.spool.stats)
        names = sorted(set(st.peers) | set(node.links))
        return web.json_response({"peers": [_peer(node, n, st.peers.get(n) or PeerStats()) for n in names]})

    async def post_flush(request: web.Request) -> web.Response:
        data = await read_json(request)
        if not isinstance(data, dict) or set(data) - {"peer"}:
            raise InvalidArgument('the JSON body must be {} or {"peer": NAME}')
        peer = data.get("peer")
        if peer is not None and (type(peer) is not str or not 1 <= len(peer) <= 1000):
            raise InvalidArgument("peer: must be a peer name or URL")
        links = [(n, link) for n, link in node.links.items()
                 if peer is None or n == peer or peer in failover_parts(n)]
        if peer is not None and not links and node.config.peer(peer) is None:
            raise NotFound(f"peer: no peer {peer[:200]!r} is configured or has messages waiting",
                           hint="GET /v1/admin/outbox lists the peers")
        for _, link in links:
            link.flush()
        return web.json_response({"flushed": [n for n, _ in links]})

    async def get_audit(request: web.Request) -> web.Response:
        for k in request.query:
            if k != "limit":
                raise InvalidArgument(f"{k[:50]}: unknown parameter", hint="only limit")
        limit = _limit(request.query.get("limit"), 100, 10_000)
        entries = await asyncio.to_thread(node.spool.admin.audit_log, limit)
        return web.json_response({"entries": [e.as_dict() for e in entries]})

    add("GET", "/v1/admin/messages", get_messages, "admin_messages", "admin")
    add("GET", "/v1/admin/messages/{id}", get_message, "admin_message", "admin")
    for name in ("hold", "release", "requeue", "delete"):
        add("POST", f"/v1/admin/{name}", action(name), f"admin_{name}", "admin")
    add("GET", "/v1/admin/outbox", get_outbox, "admin_outbox", "admin")
    add("POST", "/v1/admin/flush", post_flush, "admin_flush", "admin")
    add("GET", "/v1/admin/audit", get_audit, "admin_audit", "admin")


def _limit(value: str | None, default: int, most: int) -> int:
    if value is None:
        return default
    try:
        n = int(value) if len(value) <= 20 else -1
    except ValueError:
        raise InvalidArgument(f"limit: must be an integer, not {value[:50]!r}") from None
    if not 1 <= n <= most:
        raise InvalidArgument(f"limit: must be 1 to {most}")
    return n


def _detail(m: AdminMessage) -> dict[str, Any]:
    body = m.body or b""
    out = m.as_dict()
    out["headers"] = m.headers or {}
    out["body_b64"] = base64.b64encode(body).decode()
    out["job"] = m.job
    out["expires_at"] = m.expires_at
    out["origin"] = m.origin
    try:
        text: str | None = body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    out["body_text"] = text
    parsed: Any = None
    if text is not None and len(body) <= MAX_JSON_BODY:
        try:
            parsed = json.loads(text)
        except (ValueError, RecursionError):
            parsed = None
    out["body_json"] = parsed
    return out


def _peer(node: AdminNode, name: str, ps: PeerStats) -> dict[str, Any]:
    """One peer of ``GET /v1/admin/outbox``: the spool's counts and the forwarder's live state."""
    link = node.links.get(name)
    out: dict[str, Any] = {"peer": name, "waiting": ps.outbox, "held": ps.held, "oldest_age": ps.oldest_age,
                           "dead": ps.dead, "in_flight": 0, "last_success": None, "last_error": None,
                           "last_error_at": None, "next_retry": None, "batch_size": None, "rate": 0.0,
                           "failures": 0}
    if link is None:
        out["state"] = "idle" if ps.outbox == 0 else "backing_off"  # the node picks it up at its next scan
        return out
    targets = link.targets
    now = link.clock()
    out.update(in_flight=link.in_flight_messages, batch_size=link.batch_messages, rate=round(link.rate(), 3))
    oks = [t.last_ok_at for t in targets if t.last_ok_at is not None]
    out["last_success"] = max(oks) if oks else None
    errs = [t for t in targets if t.last_error_at is not None]
    if errs:
        last = max(errs, key=lambda t: t.last_error_at or 0.0)
        out["last_error"], out["last_error_at"] = last.last_error, last.last_error_at
    out["failures"] = min((t.failures for t in targets), default=0)
    if not targets:
        out["state"] = "unreachable"
        out["last_error"] = f"no peer {name!r} is configured: messages wait until [peers.{name}] is added"
    elif all(t.failures > 0 for t in targets):
        out["state"] = "unreachable" if all(t.unreachable for t in targets) else "backing_off"
        out["next_retry"] = round(time.time() + max(0.0, min(t.retry_at for t in targets) - now), 3)
    else:
        out["state"] = "idle" if ps.outbox == 0 and link.in_flight == 0 else "up"
    return out
