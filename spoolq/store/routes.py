"""``routes.json``: the routing table shared by every process using the spool.

The daemon writes it (temp file, fsync, rename); senders re-read it at most
once a second when its stamp (mtime, inode, size) changed.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

import msgspec

from ..routing import Route, route_peers

__all__ = ["RoutesFile", "ROUTES_FILE"]

log = logging.getLogger("spoolq.spool")

ROUTES_FILE: Final = "routes.json"
_MISS: Final = object()


class RoutesFile:
    """The routing table of a spool directory, cached."""

    def __init__(self, spool_path: Path, sync_dir: Callable[[], None]) -> None:
        self.path = spool_path / ROUTES_FILE
        self._sync_dir = sync_dir
        self._routes: list[Route] = []
        self._stamp: tuple[int, ...] = ()
        self._checked = 0.0
        self._cache: dict[str, object] = {}

    def save(self, routes: list[Route]) -> None:
        data = msgspec.json.encode([{"channels": r.channels, "to": list(r.to), "mode": r.mode} for r in routes])
        tmp = self.path.with_name(f".{ROUTES_FILE}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._sync_dir()
        self._checked = 0.0

    def routes(self) -> list[Route]:
        self._load(force=True)
        return list(self._routes)

    def _load(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < 1.0:
            return
        self._checked = now
        try:
            st = os.stat(self.path)
            stamp: tuple[int, ...] = (st.st_mtime_ns, st.st_ino, st.st_size)
        except FileNotFoundError:
            stamp = ()
        if stamp == self._stamp:
            return
        routes: list[Route] = []
        if stamp:
            try:
                raw = msgspec.json.decode(self.path.read_bytes())
                routes = [Route(str(r["channels"]), tuple(str(p) for p in r["to"]), str(r.get("mode", "fanout")))
                          for r in raw]
            except (OSError, msgspec.DecodeError, KeyError, TypeError) as e:
                log.error("ignoring unreadable %s: %s", self.path, e)
                routes = []
        self._routes = routes
        self._stamp = stamp
        self._cache = {}

    def route(self, channel: str) -> list[str] | None:
        """Peers a message of ``channel`` goes to by the routing table (None: local delivery)."""
        if time.monotonic() - self._checked >= 1.0:  # _load's own test, without its call on every send
            self._load()
        if not self._routes:
            return None
        hit = self._cache.get(channel, _MISS)
        if hit is _MISS:
            hit = self._cache[channel] = route_peers(self._routes, channel)
        return hit  # type: ignore[return-value]

    def matched(self, channel: str) -> str | None:
        """The channel glob of the route that ``channel`` matches (first match), for the event log."""
        self._load()
        return next((r.channels for r in self._routes if fnmatch.fnmatchcase(channel, r.channels)), None)
