"""The scripted showcase run (``spoolq showcase``): writes keep flowing while PostgreSQL is down.

Start PostgreSQL (a private cluster, unless ``$DATABASE_URL`` is given) and memcached,
the site, its order worker and its outbox relay; drive concurrent writers over HTTP;
stop PostgreSQL with ``pg_ctl stop -m immediate`` a third of the way in, keep writing,
start it again at two thirds, and check every accepted write is in PostgreSQL exactly once.

``two_hosts``: the site's node forwards ``orders`` to a second node (two ``spoolq node``
daemons), where the worker runs; that DB node's daemon is also killed with SIGKILL
while PostgreSQL is down, and started again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
from aiohttp import web

from ..spool import Spool
from .app import CHANNEL, OrderWorker, Site, create_schema
from .servers import Memcached, PgCluster, free_port


@dataclass
class Phase:
    name: str
    latencies: list[float] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)


def _pct(xs: list[float], p: float) -> float:
    if not xs:
        return 0.0
    s = sorted(xs)
    return s[min(len(s) - 1, int(p * len(s)))]


class _Node:
    """A ``spoolq node`` daemon subprocess, stopped by PID."""

    def __init__(self, spool_dir: Path, port: int, config: Path | None) -> None:
        self.args = [sys.executable, "-m", "spoolq", "node", "--spool", str(spool_dir), "--listen", f"127.0.0.1:{port}"]
        if config is not None:
            self.args += ["--config", str(config)]
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("spoolq node did not start")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait()


async def _drive(url: str, phases: list[Phase], writers: int, per_phase: int,
                 between: Callable[[int], Any], say: Callable[[str], None]) -> None:
    async with aiohttp.ClientSession() as http:
        for i, phase in enumerate(phases):
            left = [per_phase]

            async def writer(w: int, phase: Phase = phase, left: list[int] = left) -> None:
                while left[0] > 0:
                    left[0] -= 1
                    t0 = time.perf_counter()
                    async with http.post(f"{url}/orders", json={"user": f"u{w}", "item": f"item-{left[0]}"}) as r:
                        reply = await r.json()
                        if r.status != 202:
                            raise RuntimeError(f"write refused: {r.status} {reply}")
                    phase.latencies.append(time.perf_counter() - t0)
                    phase.ids.append(reply["id"])
                    if w == 0:  # read-your-write: this user sees the order at once (memcached)
                        async with http.get(f"{url}/orders/{reply['id']}") as g:
                            if g.status != 200:
                                raise RuntimeError(f"own write not visible: {g.status}")

            await asyncio.gather(*(writer(w) for w in range(writers)))
            say(f"  {phase.name}: {len(phase.ids)} writes accepted")
            await between(i)


def run(*, writes: int = 600, writers: int = 16, two_hosts: bool = False, say: Callable[[str], None] = print,
        timeout: float = 120.0) -> bool:
    """Run the showcase; True when every accepted write is in PostgreSQL exactly once."""
    tmp = Path(tempfile.mkdtemp(prefix="spoolq-showcase-"))
    cluster: PgCluster | None = None
    dsn = os.environ.get("DATABASE_URL")
    stoppers: list[Callable[[], None]] = []
    try:
        if dsn is None:
            cluster = PgCluster()
            stoppers.append(cluster.cleanup)
            cluster.start()
            dsn = cluster.dsn
            say(f"PostgreSQL: private cluster in {cluster.root}, port {cluster.port}")
        else:
            say("PostgreSQL: $DATABASE_URL (the outage part needs a private cluster: it is skipped)")
        mc = Memcached()
        stoppers.append(mc.stop)
        say(f"memcached: 127.0.0.1:{mc.port}")
        create_schema(dsn)
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("TRUNCATE orders")

        web_spool = Spool(tmp / "web")
        stoppers.append(web_spool.close)
        db_spool = web_spool
        to: str | None = None
        db_node: _Node | None = None
        if two_hosts:
            db_port, web_port = free_port(), free_port()
            db_node = _Node(tmp / "db", db_port, None)
            db_node.start()
            stoppers.append(db_node.kill)
            cfg = tmp / "web.toml"
            cfg.write_text(f'[peers.db]\nurl = "http://127.0.0.1:{db_port}"\n')
            web_node = _Node(tmp / "web", web_port, cfg)
            web_node.start()
            stoppers.append(web_node.kill)
            db_spool = Spool(tmp / "db")
            stoppers.append(db_spool.close)
            to = "db"
            say(f"two hosts: web node :{web_port} forwards '{CHANNEL}' to DB node :{db_port}")

        worker = OrderWorker(dsn, db_spool, mc.port)
        relay = _outbox_relay(dsn, web_spool)  # rows carry their own to= (the site sends with it)
        threads = [threading.Thread(target=worker.run, daemon=True), threading.Thread(target=relay.run, daemon=True)]
        for t in threads:
            t.start()

        def stop_threads() -> None:
            worker.stop()
            relay.stop()
            for t in threads:
                t.join(timeout=30)
            worker.close()
            relay.close()

        stoppers.append(stop_threads)
        phases = [Phase("before"), Phase("PostgreSQL down"), Phase("after restart")]
        restarted = [0.0]

        async def between(i: int) -> None:
            if cluster is None:
                return
            if i == 0:
                await asyncio.to_thread(cluster.stop, "immediate")
                say("  pg_ctl stop -m immediate: PostgreSQL is down")
                if db_node is not None:
                    db_node.kill()
                    say("  kill -9 the DB node's daemon")
            elif i == 1:
                if db_node is not None:
                    await asyncio.to_thread(db_node.start)
                    say("  DB node's daemon started again")
                await asyncio.to_thread(cluster.start)
                restarted[0] = time.monotonic()
                say("  PostgreSQL started again")

        async def serve_and_drive() -> None:
            site = Site(dsn, web_spool, mc.port, to=to)
            runner = web.AppRunner(site.app(), access_log=None)
            await runner.setup()
            # bound here on port 0 and handed over: a port found free and bound later can be taken meanwhile
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            await web.SockSite(runner, sock).start()
            say(f"site: http://127.0.0.1:{port} ({writers} concurrent writers, {writes} writes)")
            try:
                await _drive(f"http://127.0.0.1:{port}", phases, writers, writes // 3, between, say)
            finally:
                say(f"  written via outbox: {site.via['outbox']}, via spool: {site.via['spool']}")
                await runner.cleanup()
                await site.close()

        asyncio.run(serve_and_drive())
        accepted = [i for p in phases for i in p.ids]
        down = len(phases[1].ids) if cluster is not None else 0
        deadline = time.monotonic() + timeout
        counts: Counter[str] = Counter()
        while time.monotonic() < deadline:
            with psycopg.connect(dsn) as c:
                counts = Counter(r[0] for r in c.execute("SELECT msg_id FROM orders"))
            if all(counts[i] >= 1 for i in accepted):
                break
            time.sleep(0.1)
        caught_up = time.monotonic() - (restarted[0] or time.monotonic())
        missing = [i for i in accepted if counts[i] == 0]
        doubled = [i for i in accepted if counts[i] > 1]
        for p in phases:
            say(f"  write latency {p.name:>16}: p50 {_pct(p.latencies, 0.5) * 1000:6.1f} ms, "
                f"p99 {_pct(p.latencies, 0.99) * 1000:6.1f} ms")
        if restarted[0]:
            say(f"  backlog applied {caught_up:.1f} s after PostgreSQL restarted "
                f"(worker batches failed and backed off {worker.failures} times)")
        if missing or doubled or len(set(accepted)) != len(accepted):
            say(f"FAILED: {len(missing)} missing, {len(doubled)} doubled")
            say(f"showcase: {len(accepted)} writes accepted ({down} while PostgreSQL was down), "
                f"{len(accepted) - len(missing) - len(doubled)} in PostgreSQL exactly once")
            return False
        say(f"showcase: {len(accepted)} writes accepted ({down} while PostgreSQL was down), "
            f"{len(accepted)} in PostgreSQL exactly once")
        return True
    finally:
        for stop in reversed(stoppers):
            try:
                stop()
            except Exception as e:  # teardown goes on
                say(f"  (teardown: {e})")
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def _outbox_relay(dsn: str, spool: Spool) -> Any:
    from ..outbox.postgres import PostgresOutbox

    return PostgresOutbox(dsn, spool=spool, create=False).relay(poll_interval=0.5)
