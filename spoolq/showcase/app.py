"""The showcase site: an order form that keeps taking writes while PostgreSQL is down.

- ``POST /orders`` ``{"user": ..., "item": ...}`` answers 202 with the message id.
  PostgreSQL up: the order row and its message commit together (transactional
  outbox). PostgreSQL down: the message goes straight into the local spool.
  Either way memcached gets the order at once, so the user sees their own write.
- ``GET /orders/{id}``: memcached first, then PostgreSQL.
- :class:`OrderWorker` leases ``orders`` messages and applies them to PostgreSQL
  idempotently (the message id is the order's unique key: a redelivery changes
  nothing); while PostgreSQL is down its batches fail and are nacked with backoff.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import psycopg
from aiohttp import web
from pymemcache.client.base import Client as Memcache

from ..lease import Lease
from ..message import new_id
from ..outbox.postgres import PostgresOutbox
from ..retry import backoff
from ..spool import Spool

CHANNEL = "orders"
SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    seq    bigserial PRIMARY KEY,
    msg_id text NOT NULL UNIQUE,
    usr    text NOT NULL,
    item   text NOT NULL
)"""
_APPLY = "INSERT INTO orders (msg_id, usr, item) VALUES (%s, %s, %s) ON CONFLICT (msg_id) DO NOTHING"


class Site:
    """The web app's state: a spool, an outbox, a few PostgreSQL connections, memcached."""

    def __init__(self, dsn: str, spool: Spool, memcached_port: int, *, to: str | None = None, pool: int = 8) -> None:
        self.dsn = dsn
        self.spool = spool
        self.to = to
        self.outbox = PostgresOutbox(dsn, spool=spool, create=False)
        self.cache = Memcache(("127.0.0.1", memcached_port), connect_timeout=1, timeout=1, no_delay=True)
        self._cache_lock = threading.Lock()
        self._free: asyncio.Queue[psycopg.AsyncConnection[Any] | None] = asyncio.Queue()
        for _ in range(pool):
            self._free.put_nowait(None)
        self._down_until = 0.0
        self.via = {"outbox": 0, "spool": 0}

    def cache_set(self, key: str, value: dict[str, Any]) -> None:
        with self._cache_lock:
            self.cache.set(key, json.dumps(value).encode())

    def cache_get(self, key: str) -> dict[str, Any] | None:
        with self._cache_lock:
            raw = self.cache.get(key)
        return None if raw is None else dict(json.loads(raw))

    async def _write_through_outbox(self, mid: str, body: bytes, order: dict[str, str]) -> bool:
        """The order row and its message in one PostgreSQL transaction; False when PostgreSQL is down."""
        if time.monotonic() < self._down_until:
            return False
        conn = await self._free.get()
        try:
            if conn is None or conn.closed or conn.broken:
                conn = await psycopg.AsyncConnection.connect(self.dsn, connect_timeout=1)
            async with conn.transaction():
                await conn.execute(_APPLY, (mid, order["user"], order["item"]))
                opts: dict[str, Any] = {"id": mid}
                if self.to:
                    opts["to"] = self.to
                await self.outbox.asend(conn, body, CHANNEL, **opts)
            return True
        except (psycopg.Error, OSError):
            if conn is not None:
                await conn.close()
            conn = None
            self._down_until = time.monotonic() + 0.2  # don't knock on a closed door for every request
            return False
        finally:
            self._free.put_nowait(conn)

    async def post_order(self, request: web.Request) -> web.Response:
        order = await request.json()
        if not isinstance(order, dict) or not isinstance(order.get("user"), str) or not isinstance(
                order.get("item"), str):
            return web.json_response({"error": "need user and item"}, status=400)
        mid = new_id()
        body = json.dumps({"user": order["user"], "item": order["item"]}).encode()
        if await self._write_through_outbox(mid, body, order):
            via = "outbox"
        else:
            await self.spool.asend(body, CHANNEL, id=mid, to=self.to)
            via = "spool"
        self.via[via] += 1
        await asyncio.to_thread(self.cache_set, f"order:{mid}", {**order, "id": mid, "state": "accepted"})
        return web.json_response({"id": mid, "via": via}, status=202)

    async def get_order(self, request: web.Request) -> web.Response:
        mid = request.match_info["id"]
        hit = await asyncio.to_thread(self.cache_get, f"order:{mid}")
        if hit is not None:
            return web.json_response(hit)
        try:
            async with await psycopg.AsyncConnection.connect(self.dsn, connect_timeout=1) as conn:
                cur = await conn.execute("SELECT usr, item FROM orders WHERE msg_id = %s", (mid,))
                row = await cur.fetchone()
        except psycopg.Error:
            return web.json_response({"error": "not cached and the database is down"}, status=503)
        if row is None:
            return web.json_response({"error": "no such order"}, status=404)
        return web.json_response({"id": mid, "user": row[0], "item": row[1], "state": "stored"})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/orders", self.post_order)
        app.router.add_get("/orders/{id}", self.get_order)
        return app

    async def close(self) -> None:
        while not self._free.empty():
            conn = self._free.get_nowait()
            if conn is not None:
                await conn.close()
        self.cache.close()


class OrderWorker:
    """Applies ``orders`` messages to PostgreSQL, idempotently by message id; steppable."""

    def __init__(self, dsn: str, spool: Spool, memcached_port: int) -> None:
        self.dsn = dsn
        self.spool = spool
        self.cache = Memcache(("127.0.0.1", memcached_port), connect_timeout=1, timeout=1)
        self._conn: psycopg.Connection[Any] | None = None
        self._stop = threading.Event()
        self.applied = 0
        self.failures = 0

    def step(self) -> int:
        leases = self.spool.lease_many(CHANNEL, 200, visibility=30, wait=0.2)
        if not leases:
            return 0
        try:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = psycopg.connect(self.dsn, connect_timeout=1)
            with self._conn.transaction():
                with self._conn.cursor() as cur:
                    cur.executemany(_APPLY, [_row(lease) for lease in leases])
        except (psycopg.Error, OSError):
            self.failures += 1
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            for lease in leases:  # back off: the database comes back on its own time
                lease.nack(delay=backoff(lease.attempts, base=0.2, cap=2.0))
            return 0
        for lease in leases:
            lease.ack()
            try:
                self.cache.set(f"order:{lease.id}", json.dumps({**json.loads(lease.body), "id": lease.id,
                                                                "state": "stored"}).encode())
            except OSError:
                pass
        self.applied += len(leases)
        return len(leases)

    def run(self) -> None:
        while not self._stop.is_set():
            self.step()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self.cache.close()


def _row(lease: Lease) -> tuple[str, str, str]:
    order = json.loads(lease.body)
    return (lease.id, order["user"], order["item"])


def create_schema(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(SCHEMA)
    PostgresOutbox(dsn)
