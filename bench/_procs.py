"""Many producer processes sending at once: spoolq ``send`` against raw SQLite, the same number of processes.

Used by ``bench/local.py`` row 11. Every producer is a spawned process (a fresh interpreter, as a web
server's worker is) that opens the spool (or a raw SQLite connection) before the start signal, then sends
one 100-byte message per call until it has sent its share or ``cap`` seconds have passed, timing each call.
The figure is all messages sent / (last producer's end - first producer's start); p50 and p99 are over
every call of every producer.
"""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import time
from pathlib import Path
from typing import Any, Literal

from _common import MASK, POOL, latency_ms, reap, tmpdir

Kind = Literal["spoolq", "raw"]
CHANNEL = "bench"
LAT_KEEP = 200_000  # latencies kept per producer (bounded memory)


def _producer(kind: Kind, path: str, n: int, cap: float, ready: Any, go: Any, out: Any) -> None:
    lats: list[float] = []
    start = end = 0.0
    count = 0
    try:
        if kind == "spoolq":
            from spoolq import Spool

            s = Spool(path, durability="full")
            s.send(POOL[0], CHANNEL)  # warm-up: the channel exists, job numbers reserved

            def send(body: bytes) -> object:
                return s.send(body, CHANNEL)

            close = s.close
        else:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)  # default 5 s busy timeout
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            stmt = "INSERT INTO t(body) VALUES (?)"

            def send(body: bytes) -> object:
                return conn.execute(stmt, (body,))

            close = conn.close
        try:
            ready.put(True)
            if not go.wait(60):
                raise RuntimeError("no start signal")
            clock = time.perf_counter
            start = clock()
            stop = start + cap
            now = start
            while count < n and now < stop:
                t0 = now
                send(POOL[count & MASK])
                now = clock()
                if count < LAT_KEEP:
                    lats.append(now - t0)
                count += 1
            end = now
        finally:
            close()
    finally:
        out.put((count, start, end, lats))


def _setup_raw(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, body BLOB)")
    finally:
        conn.close()


def many_producers(kind: Kind, procs: int, n: int, cap: float) -> tuple[float, float, float]:
    """``procs`` producer processes sending ``n`` messages in all (or for ``cap`` seconds).

    Returns (messages per second in all, p50 ms, p99 ms of one send call).
    """
    ctx = mp.get_context("spawn")
    ready, go, out = ctx.Queue(), ctx.Event(), ctx.Queue()
    with tmpdir("spoolq-bench-procs-") as base:
        if kind == "spoolq":
            path = base / "spool"
            from spoolq import Spool

            with Spool(path, durability="full") as s:
                s.send(POOL[0], CHANNEL)
        else:
            path = base / "raw.db"
            _setup_raw(path)
        per = max(1, n // procs)
        workers = [
            ctx.Process(target=_producer, args=(kind, str(path), per, cap, ready, go, out), daemon=True)
            for _ in range(procs)
        ]
        for w in workers:
            w.start()
        try:
            for _ in workers:
                ready.get(timeout=60)
            go.set()
            results = [out.get(timeout=cap + 60) for _ in workers]
        finally:
            for w in workers:
                reap(w)
    total = sum(r[0] for r in results)
    first = min(r[1] for r in results)
    last = max(r[2] for r in results)
    lats = [x for r in results for x in r[3]]
    p50, p99 = latency_ms(lats, len(lats))
    if total == 0 or last <= first:
        raise RuntimeError("nothing was sent")
    return total / (last - first), p50, p99
