"""``GET /v1/admin/trace/{id}`` (scope ``admin``): one message's events on this node, and its next hops.

Answer::

    {"node": "<node id>", "url": "<this node's URL>",
     "events": [{"at": 1733150000.123, "node": "<node id>", "kind": "created", "detail": {...}}, ...],
     "next": [{"peer": "dc2", "url": "http://dc2:7070", "forwarded": true}, ...]}

``next`` names the peers the message went to (or is waiting for: ``forwarded``
false when every attempt so far failed), by the name and URL the forwarder
used, so ``spoolq trace`` can ask them in turn with the tokens of its config.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ..errors import InvalidArgument
from ..message import id_bytes, id_text_from_bytes

__all__ = ["install", "next_hops"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Add = Callable[[str, str, Handler, str, "str | None"], None]
MAX_ID_TEXT = 64


def install(add: Add, node: Any) -> None:
    """Add the trace route through ``build_app``'s ``add`` (method, path, handler, name, scope)."""

    async def get_trace(request: web.Request) -> web.Response:
        text = request.match_info["id"]
        if len(text) > MAX_ID_TEXT:
            raise InvalidArgument(f"a message id is a UUID of 36 characters, not {len(text)} characters",
                                  hint="pass the id that send() or the API returned")
        idb = id_bytes(text)
        events = await asyncio.to_thread(node.spool.trace_events, idb)
        me = node.spool.node_id
        return web.json_response({
            "id": id_text_from_bytes(idb),
            "node": me,
            "url": node.url,
            "trace": node.spool.trace,
            "events": [{"at": e["at"], "node": me, "kind": e["kind"], "detail": e["detail"]} for e in events],
            "next": next_hops(events, node.config),
        })

    add("GET", "/v1/admin/trace/{id}", get_trace, "admin_trace", "admin")


def next_hops(events: list[dict[str, Any]], config: Any) -> list[dict[str, Any]]:
    """The peers a message was forwarded to, or is waiting for, from its ``forwarded`` and
    ``forward_failed`` events (in the order they first appear)."""
    hops: dict[str, dict[str, Any]] = {}
    for e in events:
        if e["kind"] not in ("forwarded", "forward_failed"):
            continue
        d = e["detail"]
        name = str(d.get("target") or d.get("peer") or "")
        if not name:
            continue
        url = d.get("url")
        peer = config.peer(name) if not name.startswith(("http://", "https://")) else None
        if url is None:
            url = peer.url if peer is not None else (name if name.startswith(("http://", "https://")) else None)
        hop = hops.setdefault(name, {"peer": name, "url": url, "forwarded": False})
        if e["kind"] == "forwarded":
            hop["forwarded"] = True
    return list(hops.values())
