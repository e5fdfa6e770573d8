"""Following one message across nodes: the client side of ``spoolq trace``.

Start at one node (its HTTP API, ``GET /v1/admin/trace/{id}``, or a spool
directory read directly), then ask every next hop it names, breadth first,
with the token configured for that URL (a ``[peers.NAME]`` of the config
whose url is the hop's, or ``--hop-token``); the starting token goes to the
starting node only. The events of every node reached are merged into one
timeline sorted by time; every hop that could not be asked is kept with the
reason (refused, timed out, 401/403, not a spoolq node, ...).

Bounded: at most ``MAX_NODES`` nodes, ``timeout`` seconds per request, and
replies of at most ``MAX_REPLY`` bytes.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp

from .message import id_bytes, id_text_from_bytes

__all__ = ["Hop", "Timeline", "follow"]

MAX_NODES: Final = 32
MAX_REPLY: Final = 16 << 20


@dataclass
class Hop:
    """A node asked (or that could not be asked) about the message."""

    peer: str  # the name its upstream gave it ("start" for the first)
    url: str | None
    via: str | None = None  # the node id that named this hop
    node: str | None = None  # its node id, once reached
    error: str | None = None
    events: int = 0


@dataclass
class Timeline:
    id: str
    events: list[dict[str, Any]] = field(default_factory=list)  # at, node, peer, kind, detail
    hops: list[Hop] = field(default_factory=list)

    @property
    def unreachable(self) -> list[Hop]:
        return [h for h in self.hops if h.error is not None]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "events": self.events,
            "nodes": [{"peer": h.peer, "url": h.url, "node": h.node, "events": h.events, "via": h.via}
                      for h in self.hops if h.error is None],
            "unreachable": [{"peer": h.peer, "url": h.url, "via": h.via, "error": h.error}
                            for h in self.unreachable],
        }


def _token_for(url: str, peers: list[Any]) -> str | None:
    """The token configured for the peer at ``url``. By URL only: a hop's name comes from another
    node's config, and a name-matched token could be sent to whatever URL that node reports."""
    for p in peers:
        if p.url.rstrip("/") == url and p.token:
            return str(p.token)
    return None


async def _ask(session: aiohttp.ClientSession, url: str, message_id: str, token: str | None,
               ssl_ctx: ssl.SSLContext | None) -> dict[str, Any]:
    """One node's answer; raises ``LookupError`` with a reason a person can act on."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with session.get(f"{url.rstrip('/')}/v1/admin/trace/{message_id}", headers=headers,
                               ssl=ssl_ctx if ssl_ctx is not None else True) as resp:
            body = await resp.content.read(MAX_REPLY + 1)
            status = resp.status
    except TimeoutError:
        raise LookupError("no answer within the timeout") from None
    except (aiohttp.ClientError, OSError) as e:
        raise LookupError(f"cannot connect: {type(e).__name__}: {e}") from None
    if len(body) > MAX_REPLY:
        raise LookupError(f"the answer is larger than {MAX_REPLY} bytes")
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if status != 200:
        msg = data.get("message") if isinstance(data, dict) else body[:200].decode("utf-8", "replace")
        hint = ""
        if status == 401:
            hint = " (give its token: [peers.NAME] token in --config, or --hop-token NAME=TOKEN)"
        elif status == 403:
            hint = " (the token needs the 'admin' scope on that node)"
        elif status == 404:
            hint = " (not a spoolq node with the trace API?)"
        raise LookupError(f"answered {status}: {msg}{hint}")
    if not isinstance(data, dict) or not isinstance(data.get("events"), list) or not isinstance(data.get("node"), str):
        raise LookupError("the answer is not a spoolq trace")
    return data


def _clean_events(data: dict[str, Any], peer: str) -> list[dict[str, Any]]:
    out = []
    for e in data["events"]:
        if not isinstance(e, dict) or not isinstance(e.get("at"), (int, float)) or not isinstance(e.get("kind"), str):
            continue
        d = e.get("detail")
        out.append({"at": float(e["at"]), "node": str(e.get("node", data["node"])), "peer": peer,
                    "kind": e["kind"], "detail": d if isinstance(d, dict) else {}})
    return out


def _hops_of(data: dict[str, Any]) -> list[tuple[str, str | None]]:
    out = []
    for h in data.get("next") or []:
        if isinstance(h, dict) and isinstance(h.get("peer"), str):
            url = h.get("url")
            out.append((h["peer"], url if isinstance(url, str) and url.startswith(("http://", "https://")) else None))
    return out


async def follow(
    message_id: str,
    *,
    start_url: str | None = None,
    start_token: str | None = None,
    local: dict[str, Any] | None = None,
    peers: list[Any] | None = None,
    extra_tokens: dict[str, str] | None = None,
    timeout: float = 5.0,
    ssl_ctx: ssl.SSLContext | None = None,
) -> Timeline:
    """Follow ``message_id`` from ``start_url`` (or from ``local``, an answer built from a spool
    directory) through the next hops each node names. ``peers``: configured peers (name, url,
    token); ``extra_tokens``: name or URL -> token, tried first."""
    mid = id_text_from_bytes(id_bytes(message_id))
    tl = Timeline(mid)
    peers = peers or []
    extra = extra_tokens or {}
    seen_urls: set[str] = set()
    seen_nodes: set[str] = set()
    queue: list[Hop] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        if local is not None:
            first = Hop("local", local.get("url"), node=local["node"])
            tl.hops.append(first)
            _take(tl, first, local, queue, seen_nodes)
        else:
            assert start_url is not None
            queue.append(Hop("start", start_url.rstrip("/")))
        while queue and len(tl.hops) < MAX_NODES:
            hop = queue.pop(0)
            if hop.url is None:
                hop.error = "no URL known for this peer (a bridge, or not in the config)"
                tl.hops.append(hop)
                continue
            if hop.url in seen_urls:
                continue
            seen_urls.add(hop.url)
            tl.hops.append(hop)
            token = (start_token if hop.peer == "start" else
                     extra.get(hop.url) or extra.get(hop.peer) or _token_for(hop.url, peers))
            try:
                data = await _ask(session, hop.url, mid, token, ssl_ctx)
            except LookupError as e:
                hop.error = str(e)
                continue
            hop.node = data["node"]
            if hop.node in seen_nodes:  # the same node under another URL
                continue
            _take(tl, hop, data, queue, seen_nodes)
    tl.events.sort(key=lambda e: e["at"])
    return tl


def _take(tl: Timeline, hop: Hop, data: dict[str, Any], queue: list[Hop], seen_nodes: set[str]) -> None:
    seen_nodes.add(str(data["node"]))
    events = _clean_events(data, hop.peer)
    hop.events = len(events)
    tl.events.extend(events)
    for name, url in _hops_of(data):
        queue.append(Hop(name, url.rstrip("/") if url else None, via=str(data["node"])))
