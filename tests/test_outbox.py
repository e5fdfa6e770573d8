"""Transactional outbox: real PostgreSQL (private cluster) and SQLite; rollbacks, crashes, concurrency."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spoolq import InvalidArgument, InvalidChannel, MessageTooLarge, Spool
from tests.conftest import PYTHON, python_env, wait_for

psycopg = pytest.importorskip("psycopg")

from spoolq.outbox import PostgresOutbox, SQLiteOutbox  # noqa: E402
from spoolq.outbox.relay import PAUSE_ENV  # noqa: E402
from spoolq.showcase.servers import PgCluster  # noqa: E402


@pytest.fixture(scope="session")
def pg() -> Iterator[PgCluster]:
    cluster = PgCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
def pgdb(pg: PgCluster) -> Iterator[str]:
    """A fresh database per test (so tests never see each other's outbox rows)."""
    name = "t" + os.urandom(6).hex()
    with psycopg.connect(pg.dsn, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    yield pg.dsn.replace("dbname=postgres", f"dbname={name}")
    with psycopg.connect(pg.dsn, autocommit=True) as c:
        c.execute(f"DROP DATABASE {name} WITH (FORCE)")


class Backend:
    """One contract, two databases: connect(), an app table, the outbox, the CLI's database flag."""

    def __init__(self, kind: str, where: str, spool: Spool) -> None:
        self.kind = kind
        self.where = where
        self.spool = spool
        c = self.connect()
        c.execute("CREATE TABLE orders (id text PRIMARY KEY, item text)")
        c.commit()
        c.close()
        self.outbox: Any = (PostgresOutbox(where, spool=spool) if kind == "pg" else SQLiteOutbox(where, spool=spool))

    def connect(self) -> Any:
        if self.kind == "pg":
            return psycopg.connect(self.where)
        return sqlite3.connect(self.where, timeout=30)

    @property
    def ph(self) -> str:
        return "%s" if self.kind == "pg" else "?"

    def cli_db(self) -> list[str]:
        return ["--dsn", self.where] if self.kind == "pg" else ["--sqlite", self.where]


@pytest.fixture(params=["pg", "sqlite"])
def db(request: pytest.FixtureRequest, tmp_path: Path, real_spool: Spool) -> Backend:
    if request.param == "pg":
        return Backend("pg", request.getfixturevalue("pgdb"), real_spool)
    return Backend("sqlite", str(tmp_path / "app.db"), real_spool)


def drain(spool: Spool, channel: str) -> list[str]:
    ids = []
    while (lease := spool.lease(channel)) is not None:
        ids.append(lease.id)
        lease.ack()
    return ids


def test_commit_sends_rollback_does_not(db: Backend) -> None:
    c = db.connect()
    cur = c.cursor()
    cur.execute(f"INSERT INTO orders VALUES ({db.ph}, {db.ph})", ("o1", "tea"))
    kept = db.outbox.send(cur, b"order o1", "orders", headers={"k": "v"}, priority=5)
    c.commit()
    cur.execute(f"INSERT INTO orders VALUES ({db.ph}, {db.ph})", ("o2", "cake"))
    db.outbox.send(cur, b"order o2", "orders")
    c.rollback()
    c.close()
    relay = db.outbox.relay()
    try:
        assert relay.step() == 1
        assert relay.step() == 0
    finally:
        relay.close()
    lease = db.spool.lease("orders")
    assert lease is not None and lease.id == kept and lease.body == b"order o1"
    assert lease.headers == {"k": "v"} and lease.priority == 5
    lease.ack()
    assert db.spool.lease("orders") is None
    assert db.outbox.pending() == 0


def test_bad_input_raises_like_spool_send_and_inserts_nothing(db: Backend) -> None:
    c = db.connect()
    cur = c.cursor()
    for args, kwargs, err in [
        ((b"x", "bad channel!"), {}, InvalidChannel),
        (("text", "ch"), {}, InvalidArgument),
        ((b"x", "ch"), {"priority": -1}, InvalidArgument),
        ((b"x", "ch"), {"delay": -1}, InvalidArgument),
        ((b"x", "ch"), {"ttl": 0}, InvalidArgument),
        ((b"x", "ch"), {"headers": {"a": 1}}, InvalidArgument),
        ((b"x", "ch"), {"id": "not an id"}, InvalidArgument),
        ((b"x", "ch"), {"to": []}, InvalidArgument),
        ((b"x" * ((1 << 20) + 1), "ch"), {}, MessageTooLarge),
    ]:
        with pytest.raises(err):
            db.outbox.send(cur, *args, **kwargs)
        with pytest.raises(err):  # the same error class from the spool itself
            db.spool.send(*args, **kwargs)
    c.commit()
    c.close()
    assert db.outbox.pending() == 0


def test_own_id_delay_and_forwarding(db: Backend) -> None:
    from spoolq import new_id

    mine = new_id()
    c = db.connect()
    cur = c.cursor()
    assert db.outbox.send(cur, b"a", "later", id=mine, delay=3600) == mine
    fwd = db.outbox.send(cur, b"b", "remote", to="dbnode")
    c.commit()
    c.close()
    relay = db.outbox.relay()
    try:
        assert relay.step() == 2
    finally:
        relay.close()
    assert db.spool.lease("later") is None  # delayed
    stats = db.spool.stats()
    assert stats.peers["dbnode"].outbox == 1
    assert fwd  # id returned at once
    c = db.connect()
    db.outbox.send(c.cursor(), b"c", "plain")
    c.commit()
    c.close()
    relay = db.outbox.relay(to="other")  # relay-level to=: rows without their own go to that peer
    try:
        assert relay.step() == 1
    finally:
        relay.close()
    assert db.spool.lease("plain") is None
    assert db.spool.stats().peers["other"].outbox == 1


def test_sigkill_between_spool_and_delete_gives_exactly_once(db: Backend, spool_dir: Path, tmp_path: Path) -> None:
    c = db.connect()
    cur = c.cursor()
    sent = [db.outbox.send(cur, f"m{i}".encode(), "crash") for i in range(50)]
    c.commit()
    c.close()
    pause = tmp_path / "paused"
    env = python_env() | {PAUSE_ENV: str(pause)}
    cmd = [PYTHON, "-m", "spoolq", "outbox", "relay", *db.cli_db(), "--spool", str(spool_dir), "--batch", "20"]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(pause.exists, timeout=30)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert db.outbox.pending() == 50  # handed to the spool, not yet deleted
    p = subprocess.Popen(cmd, env=python_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: db.outbox.pending() == 0, timeout=30)
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=10) == 0
    got = drain(db.spool, "crash")
    assert sorted(got) == sorted(sent)


def test_many_concurrent_transactions(db: Backend) -> None:
    relays = [db.outbox.relay(poll_interval=0.05) for _ in range(2)]  # two relays race for the same rows
    runners = [threading.Thread(target=r.run) for r in relays]
    for t in runners:
        t.start()
    committed: list[str] = []
    lock = threading.Lock()

    def writer(w: int) -> None:
        c = db.connect()
        cur = c.cursor()
        for i in range(25):
            cur.execute(f"INSERT INTO orders VALUES ({db.ph}, {db.ph})", (f"w{w}-{i}", "x"))
            mid = db.outbox.send(cur, f"{w}-{i}".encode(), "busy")
            if i % 5 == 4:
                c.rollback()
            else:
                c.commit()
                with lock:
                    committed.append(mid)
        c.close()

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    try:
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=120)
        wait_for(lambda: db.outbox.pending() == 0, timeout=60)
    finally:
        for r in relays:
            r.stop()
        for t in runners:
            t.join(timeout=30)
        for r in relays:
            r.close()
    got = drain(db.spool, "busy")
    assert len(got) == len(set(got)) == len(committed) == 160
    assert set(got) == set(committed)


def test_listen_notify_wakes_the_relay(pgdb: str, real_spool: Spool) -> None:
    ob = PostgresOutbox(pgdb, spool=real_spool)
    relay = ob.relay(poll_interval=600)  # only NOTIFY can wake it in time
    t = threading.Thread(target=relay.run)
    t.start()
    try:
        wait_for(lambda: relay._backend._lconn is not None, timeout=10)  # type: ignore[attr-defined]
        with psycopg.connect(pgdb) as c:
            mid = ob.send(c, b"ping", "wake")
        wait_for(lambda: relay.relayed == 1, timeout=20)
    finally:
        relay.stop()
        t.join(timeout=30)
        relay.close()
    assert drain(real_spool, "wake") == [mid]


def test_cli_outbox_group_help() -> None:
    r = subprocess.run([PYTHON, "-m", "spoolq", "outbox", "--help"], env=python_env(), capture_output=True,
                       text=True)
    assert r.returncode == 0 and "relay" in r.stdout
