"""Transactional outbox: messages/s through the relay, and latency from commit to message ready in the spool.

Run by hand: ``python bench/outbox.py [--messages 20000] [--samples 100]``. Starts a private PostgreSQL
cluster (initdb/pg_ctl, fsync off) in a temp dir. Figures:

- relay throughput: committed rows (already in ``spoolq_outbox``) moved into the spool per second, by one
  relay, vs ``Spool.send_many(ids=...)`` of the same bodies in the same batch size (the named peer: the
  spool's idempotent hand-off alone, which the relay adds a database read and delete to);
  PostgreSQL and SQLite outboxes;
- latency: commit of a one-row transaction -> message leased from the spool, with LISTEN/NOTIFY and with
  polling (poll interval 0.1 s and 1 s), p50/p99.
"""

from __future__ import annotations

import argparse
import sqlite3
import threading
import time
from pathlib import Path

import psycopg
from _common import log, percentile, tmpdir

from spoolq import Spool
from spoolq.outbox import PostgresOutbox, SQLiteOutbox
from spoolq.showcase.servers import PgCluster


def fill_pg(dsn: str, ob: PostgresOutbox, n: int) -> None:
    with psycopg.connect(dsn) as c, c.cursor() as cur:
        for i in range(n):
            ob.send(cur, b"x" * 100, "bench")
            if i % 1000 == 999:
                c.commit()


def fill_sqlite(path: Path, ob: SQLiteOutbox, n: int) -> None:
    c = sqlite3.connect(path)
    for i in range(n):
        ob.send(c, b"x" * 100, "bench")
        if i % 1000 == 999:
            c.commit()
    c.commit()
    c.close()


def drain_rate(relay: object, n: int) -> float:
    t0 = time.perf_counter()
    moved = 0
    while moved < n:
        moved += relay.step()  # type: ignore[attr-defined]
    return n / (time.perf_counter() - t0)


def spool_rate(spool: Spool, n: int, batch: int, with_ids: bool) -> float:
    from spoolq import new_id

    t0 = time.perf_counter()
    for _ in range(0, n, batch):
        ids = [new_id() for _ in range(batch)] if with_ids else None
        spool.send_many([b"x" * 100] * batch, "peer", ids=ids)
    return n / (time.perf_counter() - t0)


def latency(dsn: str, spool: Spool, ob: PostgresOutbox, samples: int, listen: bool, poll: float) -> list[float]:
    relay = ob.relay(spool, listen=listen, poll_interval=poll)
    t = threading.Thread(target=relay.run)
    t.start()
    lats = []
    try:
        time.sleep(0.3)  # the relay connects and LISTENs
        with psycopg.connect(dsn) as c:
            for _ in range(samples):
                ob.send(c, b"ping", "lat")
                t0 = time.perf_counter()
                c.commit()
                lease = spool.lease("lat", wait=10)
                lats.append(time.perf_counter() - t0)
                assert lease is not None
                lease.ack()
    finally:
        relay.stop()
        t.join()
        relay.close()
    return sorted(lats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--batch", type=int, default=500)
    a = ap.parse_args()
    cluster = PgCluster()
    try:
        cluster.start()
        with tmpdir("spoolq-bench-outbox-") as tmp:
            spool = Spool(tmp / "spool")
            ob = PostgresOutbox(cluster.dsn, spool=spool)
            log(f"filling the PostgreSQL outbox with {a.messages} rows")
            fill_pg(cluster.dsn, ob, a.messages)
            relay = ob.relay(batch=a.batch)
            pg_rate = drain_rate(relay, a.messages)
            relay.close()
            sob = SQLiteOutbox(tmp / "app.db", spool=spool)
            log(f"filling the SQLite outbox with {a.messages} rows")
            fill_sqlite(tmp / "app.db", sob, a.messages)
            relay = sob.relay(batch=a.batch)
            sq_rate = drain_rate(relay, a.messages)
            relay.close()
            base = spool_rate(spool, a.messages, a.batch, with_ids=True)
            plain = spool_rate(spool, a.messages, a.batch, with_ids=False)
            print(f"relay throughput, batch {a.batch}, durability full:")
            print(f"  PostgreSQL outbox -> spool : {pg_rate:9.0f} msg/s ({pg_rate / base:.2f}x send_many(ids=) alone)")
            print(f"  SQLite outbox -> spool     : {sq_rate:9.0f} msg/s ({sq_rate / base:.2f}x send_many(ids=) alone)")
            print(f"  Spool.send_many(ids=...)   : {base:9.0f} msg/s (the relay's hand-off, dedup by id)")
            print(f"  Spool.send_many, new ids   : {plain:9.0f} msg/s")
            print(f"latency commit -> message leased from the spool ({a.samples} samples):")
            for name, listen, poll in [("LISTEN/NOTIFY", True, 5.0), ("polling 0.1 s", False, 0.1),
                                       ("polling 1 s", False, 1.0)]:
                n = a.samples if poll < 1 else max(10, a.samples // 5)
                lats = latency(cluster.dsn, spool, ob, n, listen, poll)
                print(f"  {name:14}: p50 {percentile(lats, 0.5) * 1000:7.1f} ms, "
                      f"p99 {percentile(lats, 0.99) * 1000:7.1f} ms")
            spool.close()
    finally:
        cluster.cleanup()


if __name__ == "__main__":
    main()
