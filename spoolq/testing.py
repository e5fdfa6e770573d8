"""Fakes for testing code that uses spoolq, without a daemon.

* :class:`FakeClock` — pass it as ``Spool(clock=...)`` and move time with
  :meth:`FakeClock.advance`; leases expire and delayed messages come due
  without sleeping.
* :func:`memory_spool` — a throw-away spool kept in memory (``/dev/shm`` when
  there is one), durability ``normal``, removed on exit.
* :class:`StubPeer` — a fake peer node on ``127.0.0.1`` that accepts batches
  over real HTTP, keeps them in memory, and fails, stalls or rejects on demand.

Example::

    from spoolq.testing import FakeClock, memory_spool

    def test_retry_after_expiry():
        clock = FakeClock()
        with memory_spool(clock=clock) as spool:
            spool.send(b"x", "jobs")
            lease = spool.lease("jobs", visibility=10)
            clock.advance(11)
            assert spool.lease("jobs").attempts == 2
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .spool import Spool

__all__ = ["FakeClock", "memory_spool", "StubPeer"]


class FakeClock:
    """A clock that moves only when told to. Thread-safe."""

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        """Move the clock forward; returns the new time."""
        if seconds < 0:
            raise ValueError("a FakeClock only moves forward")
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, when: float) -> None:
        with self._lock:
            self._now = float(when)


@contextmanager
def memory_spool(**options: Any) -> Iterator[Spool]:
    """A temporary spool in memory-backed storage, deleted afterwards.

    Keyword arguments go to :class:`Spool` (durability defaults to ``normal``).
    """
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    path = tempfile.mkdtemp(prefix="spoolq-test-", dir=base)
    options.setdefault("durability", "normal")
    spool = Spool(path, **options)
    try:
        yield spool
    finally:
        spool.close()
        shutil.rmtree(path, ignore_errors=True)


class StubPeer:
    """A fake peer node for tests: accepts batches over real HTTP and keeps them in memory.

    It speaks the peer protocol (``POST /v1/batches``) on ``127.0.0.1`` in a
    background thread. Make it misbehave to test retries::

        with StubPeer() as peer:
            spool.send(b"x", "c", to=peer.url)
            peer.fail(3, status=500)      # the next 3 batches get a 500
            peer.delay = 2.0              # answer slowly
            peer.reject("bad.channel")    # reject that channel for good
            ...
            assert [m.body for m in peer.messages] == [b"x"]

    Attributes:
        messages: every message accepted, in arrival order (``codec.WireMessage``).
        batches: number of batches answered (any status).
        token: when set, requests must carry ``Authorization: Bearer <token>``.
    """

    def __init__(self, *, token: str | None = None) -> None:
        self.token = token
        self.messages: list[Any] = []
        self.batches = 0
        self.delay = 0.0
        self._failures: list[int] = []
        self._rejected: set[str] = set()
        self._seen: set[bytes] = set()
        self._lock = threading.Lock()
        self._loop: Any = None
        self._runner: Any = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def fail(self, times: int, *, status: int = 500) -> None:
        """Answer the next ``times`` batches with ``status``."""
        with self._lock:
            self._failures += [status] * times

    def recover(self) -> None:
        """Forget pending :meth:`fail` answers."""
        with self._lock:
            self._failures.clear()

    def reject(self, channel: str) -> None:
        """Reject messages of ``channel`` permanently."""
        with self._lock:
            self._rejected.add(channel)

    async def _handle(self, request: Any) -> Any:
        import asyncio

        from aiohttp import web

        from . import codec
        from .errors import CodecError

        body = await request.read()
        if self.delay:
            await asyncio.sleep(self.delay)
        with self._lock:
            self.batches += 1
            if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
                return web.json_response({"error": "unauthorized", "message": "bad token"}, status=401)
            if self._failures:
                status = self._failures.pop(0)
                return web.json_response({"error": "stub_failure", "message": "told to fail"}, status=status)
            try:
                batch = codec.decode_batch(body)
            except CodecError as e:
                return web.json_response({"error": e.code, "message": e.message}, status=400)
            results = []
            for m in batch.messages:
                if m.channel in self._rejected:
                    results.append(codec.Result(codec.REJECTED, "rejected by the stub", True))
                elif m.id in self._seen:
                    results.append(codec.Result(codec.DUPLICATE))
                else:
                    self._seen.add(m.id)
                    self.messages.append(m)
                    results.append(codec.Result(codec.ACCEPTED))
        return web.Response(body=codec.encode_reply(results), content_type="application/x-msgpack")

    def start(self) -> StubPeer:
        import asyncio

        from aiohttp import web

        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application(client_max_size=256 << 20)
            app.router.add_post("/v1/batches", self._handle)
            runner = web.AppRunner(app, access_log=None)
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            port = runner.addresses[0][1]
            self.url = f"http://127.0.0.1:{port}"
            self._runner = runner
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="spoolq-stub-peer", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    def __enter__(self) -> StubPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
