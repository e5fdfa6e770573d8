"""The loop of a ``[[sources]]`` entry: broker -> local channel, ack after the spool commit.

Each round fetches up to ``batch`` messages from the broker, writes them to
the spool in **one transaction** (``Spool.send_items``,
each message with its own id, headers and priority), and only then
acknowledges them to the broker. A crash or a cut connection between the
commit and the ack makes the broker redeliver; the redelivered messages get
the same spoolq ids (:func:`spoolq.bridges.source_id`) and the spool's
``seen`` table drops them, so the channel gets each message once (within the
spool's dedup retention). A failure backs off exponentially (``retry.backoff``)
and reconnects.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import SpoolqError
from ..retry import backoff
from . import SCHEMES, require, scheme_of, source_id

if TYPE_CHECKING:
    from ..node.config import SourceConfig
    from ..spool import Spool

__all__ = ["Incoming", "SourceClient", "SourceLoop", "make_source"]

log = logging.getLogger("spoolq.bridges")


@dataclass
class Incoming:
    """One message fetched from a broker, not yet acknowledged there."""

    broker_id: str | None  # None: the broker gave no id (a fresh spoolq id; no dedup on redelivery)
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    priority: int | None = None
    token: Any = None  # what the client needs to ack it


class SourceClient(Protocol):
    async def connect(self) -> None: ...

    async def fetch(self, n: int, wait: float) -> list[Incoming]: ...

    async def ack(self, items: list[Incoming]) -> None: ...

    async def close(self) -> None: ...


def make_source(cfg: SourceConfig) -> SourceClient:
    extra = SCHEMES[scheme_of(cfg.url)]
    require(extra)
    mod = importlib.import_module(f"spoolq.bridges.{extra}")
    client: SourceClient = mod.make_source(cfg)
    return client


class SourceLoop:
    """Runs one source until :meth:`stop`. ``stored``/``acked`` count messages for metrics and tests."""

    def __init__(self, cfg: SourceConfig, spool: Spool, *, backoff_base: float = 0.5, backoff_cap: float = 60.0,
                 wait: float = 1.0) -> None:
        self.cfg = cfg
        self.spool = spool
        self.client = make_source(cfg)
        self.backoff_base, self.backoff_cap, self.wait = backoff_base, backoff_cap, wait
        self.failures = 0
        self.stored = 0
        self.last_error: str | None = None
        self._stopping = False
        self._rng = random.Random()

    def _store(self, items: list[Incoming]) -> None:
        """One transaction for the batch (in a thread)."""
        entries = []
        for it in items:
            opts: dict[str, Any] = {}
            if it.broker_id is not None:
                opts["id"] = source_id(self.cfg.name, it.broker_id)
            if it.headers:
                opts["headers"] = it.headers
            if it.priority is not None:
                opts["priority"] = it.priority
            entries.append((it.body, opts))
        self.spool.send_items(self.cfg.channel, entries)

    async def step(self) -> int:
        """Fetch, store, ack one batch. Returns how many messages it stored."""
        items = await self.client.fetch(self.cfg.batch, self.wait)
        if not items:
            return 0
        await asyncio.to_thread(self._store, items)
        await self.client.ack(items)
        self.stored += len(items)
        return len(items)

    async def run(self) -> None:
        connected = False
        while not self._stopping:
            try:
                if not connected:
                    await self.client.connect()
                    connected = True
                    if self.failures:
                        log.info("source %s: consuming again after %d failures", self.cfg.name, self.failures)
                    self.failures = 0
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # broker gone, spool full, ...: back off, reconnect
                self.failures += 1
                self.last_error = f"{type(e).__name__}: {e}"
                delay = backoff(self.failures, base=self.backoff_base, cap=self.backoff_cap, rng=self._rng)
                if self.failures == 1 or self.failures % 20 == 0:
                    level = logging.ERROR if isinstance(e, SpoolqError) else logging.WARNING
                    log.log(level, "source %s: %s; retrying in %.1fs", self.cfg.name, self.last_error, delay)
                connected = False
                await self.client.close()
                await asyncio.sleep(delay)
        await self.client.close()

    def stop(self) -> None:
        self._stopping = True
