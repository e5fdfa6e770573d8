"""Many producer processes sending at once: spoolq ``send`` against raw SQLite, the same number of processes.

Used by ``bench/local.py`` row 11. Every producer is a spawned process (a fresh interpreter, as a web
server's worker is) that opens the spool (or a raw SQLite connection) before the start signal, then sends
one 100-byte message per call until it has sent its share or ``cap`` seconds have passed, timing each call.
The figure is all messages sent / (last producer's end - first producer's start); p50 and p99 are over
every call of every producer.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from _common import (
    MASK,
    POOL,
    TableRow,
    Variant,
    fmt_met,
    fmt_ms,
    fmt_rate,
    fmt_ratio,
    latency_ms,
    median,
    reap,
    tmpdir,
)

Kind = Literal["spoolq", "raw"]
Figures = tuple[float, float, float]  # (messages per second in all, p50 ms, p99 ms)
Interleave = Callable[[str, list[Variant[Figures]]], dict[str, list[Figures]]]
CHANNEL = "bench"
LAT_KEEP = 200_000  # latencies kept per producer (bounded memory)


def _producer(kind: Kind, path: str, n: int, cap: float, ready: Any, go: Any, out: Any) -> None:
    lats: list[float] = []
    start = end = 0.0
    count = 0
    timeouts = [0]  # raw SQLite's busy timeouts (retried)
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
                # SQLite's own busy handler gives up after its 5 s timeout under heavy contention:
                # a producer would retry, so the reference does too (the wait counts in its latency)
                for _ in range(100):
                    try:
                        return conn.execute(stmt, (body,))
                    except sqlite3.OperationalError as e:
                        if "locked" not in str(e):
                            raise
                        timeouts[0] += 1
                raise RuntimeError("database locked 100 times in a row")

            close = conn.close
        try:
            ready.put(True)
            if not go.wait(60):
                raise RuntimeError("no start signal")
            clock = time.perf_counter
            start = clock()
            stop = start + cap
            now = start
            try:
                while count < n and now < stop:
                    t0 = now
                    send(POOL[count & MASK])
                    now = clock()
                    if count < LAT_KEEP:
                        lats.append(now - t0)
                    count += 1
            finally:
                end = now
        finally:
            close()
    finally:
        if timeouts[0]:
            print(f"    {kind} producer: {timeouts[0]} busy timeouts of 5 s, retried", file=sys.stderr, flush=True)
        out.put((count, start, end, lats))


def _setup_raw(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, body BLOB)")
    finally:
        conn.close()


def many_producers(kind: Kind, procs: int, n: int, cap: float) -> Figures:
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
            deadline = time.monotonic() + 60
            waiting = len(workers)
            while waiting:
                try:
                    ready.get(timeout=0.5)
                    waiting -= 1
                except queue.Empty:
                    dead = [w.exitcode for w in workers if w.exitcode is not None]
                    if dead or time.monotonic() > deadline:
                        raise RuntimeError(f"a producer did not start (exit codes {dead})") from None
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


def many_producers_rows(procs_list: Sequence[int], n: int, cap: float, interleave: Interleave) -> list[TableRow]:
    """Row 11 of bench/local.py: for each number of processes, spoolq and raw SQLite in the same rounds."""
    out: list[TableRow] = []
    for procs in procs_list:
        mine, raw = f"spoolq send full, {procs} processes", f"raw SQLite FULL 1 row/txn, {procs} processes"
        vs: list[Variant[Figures]] = [
            Variant(mine, lambda p=procs: many_producers("spoolq", p, n, cap)),  # type: ignore[misc]
            Variant(raw, lambda p=procs: many_producers("raw", p, n, cap)),  # type: ignore[misc]
        ]
        got = interleave(f"11.{procs}", vs)
        m = [median([v[i] for v in got[mine]]) for i in range(3)]
        r = [median([v[i] for v in got[raw]]) for i in range(3)]
        factor = 0.95 if procs == 1 else 1.0
        ok = None if m[0] is None or r[0] is None or m[2] is None else m[0] >= factor * r[0] and m[2] <= 25
        out.append(
            TableRow(
                f"11. send, {procs} process{'es' if procs > 1 else ''}, full",
                f"{fmt_rate(m[0])} (p50 {fmt_ms(m[1])}, p99 {fmt_ms(m[2])})",
                f"raw SQLite FULL, {procs} proc.: {fmt_rate(r[0])} (p50 {fmt_ms(r[1])}, p99 {fmt_ms(r[2])})",
                fmt_ratio(m[0], r[0]),
                f">= {factor:g}x raw, p99 <= 25 ms",
                fmt_met(ok),
            )
        )
    return out
