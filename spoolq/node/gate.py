"""Connection admission for the node's HTTP port: a cap on open connections.

aiohttp closes a connection that sends no complete request within ``keepalive_timeout`` (from the
moment it opens, and between requests), which covers idle and slowloris clients over time. This
gate covers them *now*: in front of aiohttp's protocol factory, it keeps at most ``cap``
connections. At the cap, a new connection closes the longest-idle one (no request in progress);
if every connection is busy, the new one gets a 503 and is closed. So a flood of idle sockets can
neither exhaust the process's file descriptors (asyncio would then log an "accept out of system
resource" traceback per attempt and stop accepting) nor lock out a real client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from aiohttp import web

__all__ = ["Gate", "effective_cap", "Quiet", "quiet"]

log = logging.getLogger("spoolq.node")

LOG_EVERY = 60.0  # seconds between two log lines about the cap
HANDSHAKE_GRACE = 75.0  # a handler without a transport this long failed its TLS handshake
BACKLOG = 64  # asyncio accepts up to this many connections per wake-up, before any eviction takes effect
FD_RESERVE = 96 + BACKLOG  # descriptors kept for one accept burst, the spool, bells, peers and logs


def effective_cap(configured: int, nofile_soft: int | None) -> int:
    """``configured``, lowered to leave ``FD_RESERVE`` descriptors under the process's fd limit."""
    if nofile_soft is None or nofile_soft <= 0:
        return configured
    return max(16, min(configured, nofile_soft - FD_RESERVE))


_BODY = json.dumps({"error": "busy", "message": "the node has too many open connections",
                    "hint": "retry in a moment"}).encode()
_REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
            b"Connection: close\r\nContent-Length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY)


class _Refuse(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(_REFUSAL)
        transport.close()


def _closing(handler: Any) -> bool:
    return bool(getattr(handler, "_force_close", False))


def _idle(handler: Any) -> bool:
    # private attributes of aiohttp's RequestHandler (3.9+): no request running, none queued
    return not getattr(handler, "_request_in_progress", True) and not getattr(handler, "_messages", True)


class Quiet:
    """Log one line per kind of client misbehaviour, then at most one per ``every`` seconds
    (with how many were not logged): a flood of bad clients must not flood the log."""

    def __init__(self, every: float = LOG_EVERY, clock: Any = time.monotonic) -> None:
        self.every = every
        self._clock = clock
        self._last: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def note(self, kind: str, text: str) -> None:
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self.every:
            self._unlogged[kind] = self._unlogged.get(kind, 0) + 1
            return
        n = self._unlogged.pop(kind, 0)
        more = f" ({n} more since the last report)" if n else ""
        log.warning("%s%s", text, more)
        self._last[kind] = now


quiet = Quiet()

_CODES = {400: "bad_request", 413: "too_large", 431: "headers_too_large"}


class _Handler(web.RequestHandler):
    """aiohttp's handler, answering its own errors (a malformed request, a header too long) in the
    documented JSON shape, with one rate-limited log line instead of a traceback per request."""

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        reason = str(message or exc or "")[:200]
        quiet.note(f"http-{status}", f"refused a malformed HTTP request ({status}): {reason}")
        if request.writer.output_size > 0:
            raise ConnectionError("response already started, cannot send another with the error")
        body = {"error": _CODES.get(status, "bad_request"), "message": f"malformed HTTP request: {reason}",
                "hint": "send a well-formed HTTP/1.1 request (headers at most 8 KiB)"}
        resp = web.json_response(body, status=status)
        resp.force_close()
        return resp


class Gate:
    """A protocol factory for ``loop.create_server`` in front of ``server`` (aiohttp's)."""

    def __init__(self, server: web.Server, cap: int, clock: Any = time.monotonic) -> None:
        self.server = server
        self.cap = cap
        self.evicted = 0
        self.refused = 0
        self._clock = clock
        self._opening: list[tuple[Any, float]] = []  # made, not yet connected (TLS handshake)
        self._last_log = -LOG_EVERY
        self._unlogged = 0

    def open_count(self) -> int:
        """Connections made and not closing (a closed one leaves aiohttp's list a loop turn later)."""
        now = self._clock()
        self._opening = [(h, t) for h, t in self._opening
                         if h.transport is None and not _closing(h) and now - t < HANDSHAKE_GRACE]
        return sum(1 for h in self.server.connections if h.transport is not None) + len(self._opening)

    def __call__(self) -> asyncio.BaseProtocol:
        if self.open_count() >= self.cap:
            victim = next((h for h in self.server.connections if h.transport is not None and _idle(h)), None)
            if victim is None:
                self.refused += 1
                self._note("refusing new connections (503)")
                return _Refuse()
            victim.force_close()
            self.evicted += 1
            self._note("closing the longest-idle connections to admit new ones")
        server: Any = self.server  # aiohttp's Server keeps its loop and handler options privately
        handler = _Handler(self.server, loop=server._loop, **server._kwargs)
        self._opening.append((handler, self._clock()))
        return handler

    def _note(self, what: str) -> None:
        now = self._clock()
        if now - self._last_log < LOG_EVERY:
            self._unlogged += 1
            return
        more = f" ({self._unlogged} more times since the last report)" if self._unlogged else ""
        log.warning("connection cap reached: %d connections open (node.max_connections); %s%s",
                    self.cap, what, more)
        self._last_log = now
        self._unlogged = 0
