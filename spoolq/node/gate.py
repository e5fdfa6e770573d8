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

__all__ = ["Gate", "effective_cap"]

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
        handler = self.server()
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
