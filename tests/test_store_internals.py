"""Tests that look inside the store (its connections): internals, as the file name says."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import spoolq
from spoolq import Spool
from spoolq.store import db as db_module


def test_disk_full_surfaces_and_leaves_no_partial_message(real_spool: Spool) -> None:
    # SQLite reports SQLITE_FULL exactly as for a full disk when the database reaches max_page_count
    real_spool.send(b"first", "c")
    db = real_spool._db
    pages = db.create.execute("PRAGMA page_count").fetchone()[0]
    db.create.execute(f"PRAGMA max_page_count={pages + 2}")
    sent = 1
    with pytest.raises(spoolq.StorageFull) as ei:
        for _ in range(1000):
            real_spool.send(os.urandom(3000), "c")
            sent += 1
    assert "free disk space" in (ei.value.hint or "")
    with pytest.raises(spoolq.StorageFull):
        real_spool.send_many([os.urandom(3000)] * 10, "c")
    assert real_spool.stats().channels["c"].ready == sent
    db.create.execute("PRAGMA max_page_count=1073741823")
    real_spool.send(b"after", "c")
    bodies = [x.body for x in real_spool.lease_many("c", 10000)]
    assert len(bodies) == sent + 1 and bodies[0] == b"first" and bodies[-1] == b"after"


def test_bytes_are_bound_as_they_are_without_the_adapter_search(real_spool: Spool) -> None:
    adapt = sqlite3.adapters[(bytes, sqlite3.PrepareProtocol)]  # registered by spoolq.store.db (issue 9)
    body = os.urandom(100)
    assert adapt(body) is body
    assert real_spool._db.read_conn.execute("SELECT ?, typeof(?)", (body, body)).fetchone() == (body, "blob")

    class Sub(bytes):
        def __conform__(self, protocol: object) -> bytes:
            return b"conformed"

    # a subclass is not exactly bytes: sqlite3 still searches (here: finds its __conform__)
    assert real_spool._db.read_conn.execute("SELECT ?", (Sub(b"x"),)).fetchone() == (b"conformed",)
    real_spool.send(body, "c")
    assert [m.body for m in real_spool.lease_many("c", 10)] == [body]


def test_an_adapter_for_bytes_registered_before_is_left_alone() -> None:
    code = ("import sqlite3\n"
            "mine = lambda b: b'mine'\n"
            "sqlite3.register_adapter(bytes, mine)\n"
            "import spoolq.store.db\n"
            "assert sqlite3.adapters[(bytes, sqlite3.PrepareProtocol)] is mine\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_normal_durability_setting(spool_dir: Path) -> None:
    s = Spool(spool_dir, durability="normal")
    assert s._db.create.execute("PRAGMA synchronous").fetchone()[0] == 1
    s.close()
    assert not s._db.sync_creates
    f = Spool(spool_dir)
    # writes that create messages commit with NORMAL and are then synced outside the write gate (issue 15)
    assert f._db.create.execute("PRAGMA synchronous").fetchone()[0] == 1
    assert f._db.sync_creates
    assert f._db.move.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL for moves and removals
    f.close()
    with pytest.raises(spoolq.InvalidArgument):
        Spool(spool_dir, durability="sometimes")  # type: ignore[arg-type]




class _Syncs:
    """Records the fdatasync calls of the store (and makes them): which file, and whether the gate was held."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self.calls: list[tuple[int, bool]] = []
        self.real = db_module._datasync

    def __call__(self, fd: int) -> None:
        self.calls.append((os.fstat(fd).st_ino, self.spool._db.gate.owned()))
        self.real(fd)


def test_full_durability_syncs_the_wal_outside_the_gate(spool_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Spool(spool_dir)
    syncs = _Syncs(s)
    monkeypatch.setattr(db_module, "_datasync", syncs)
    s.send(b"one", "c")
    s.send_many([b"a", b"b"], "c")
    wal = os.stat(spool_dir / "spool.db-wal").st_ino
    assert syncs.calls == [(wal, False), (wal, False)]  # one sync per commit, of the WAL, without the gate
    lease = s.lease("c")
    assert lease is not None
    lease.ack()  # moves and removals are not synced
    assert len(syncs.calls) == 2
    s.close()
    n = Spool(spool_dir, durability="normal")
    syncs_n = _Syncs(n)
    monkeypatch.setattr(db_module, "_datasync", syncs_n)
    n.send(b"x", "c")
    assert syncs_n.calls == []
    n.close()


def test_concurrent_creators_share_syncs(spool_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Spool(spool_dir)
    syncs = _Syncs(s)
    monkeypatch.setattr(db_module, "_datasync", syncs)
    per_thread, threads = 50, 8

    def send() -> None:
        for _ in range(per_thread):
            s.send(b"x", "c")

    ts = [threading.Thread(target=send) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert s.stats().channels["c"].ready == per_thread * threads
    assert 0 < len(syncs.calls) < per_thread * threads
    s.close()


@pytest.mark.parametrize("proc", [True, False], ids=["proc-fd-link", "fstat"])
def test_a_send_after_the_wal_was_removed_raises_under_full(spool_dir: Path, proc: bool) -> None:
    """The sync holds the WAL open, and SQLite goes on writing into its old file once it is removed (the
    spool directory deleted under an open spool): a send must then fail, not report a durable message."""
    s = Spool(spool_dir)
    try:
        s.send(b"before", "c")
        if not proc:  # where /proc is missing, the check falls back to fstat
            s._db._wal_link = None
        os.unlink(spool_dir / "spool.db-wal")
        with pytest.raises(spoolq.StorageError, match="cannot sync"):
            s.send(b"after", "c")
    finally:
        s.close()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="Linux /proc: elsewhere the check is fstat")
def test_syncing_reads_no_attributes_of_the_wal(spool_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stat of the WAL per sync made every fdatasync 50-100 µs slower (Linux >= 6.13: a file whose times
    were read gets fine-grained times on its next write, and the sync commits its inode too); issue 9."""
    s = Spool(spool_dir)
    try:
        s.send(b"first", "c")
        wal_fd = s._db._wal_fd
        assert wal_fd >= 0
        seen: list[int] = []
        real = os.fstat

        def fstat(fd: int) -> os.stat_result:
            seen.append(fd)
            return real(fd)

        monkeypatch.setattr(os, "fstat", fstat)
        for _ in range(5):
            s.send(b"x", "c")
        s.send_many([b"a", b"b"], "c")
        assert s._db._wal_fd == wal_fd and wal_fd not in seen
    finally:
        s.close()


def test_a_lone_full_send_is_synced_in_its_commit_unless_other_processes_write(
        spool_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Alone and with no other process writing, a send under full lets SQLite sync the WAL inside the commit
    (synchronous=FULL, measured faster than a sync after it); once other processes were found writing, the
    sync runs after the commit, outside the write gate, so that they do not queue behind it (issue 15)."""
    s = Spool(spool_dir)
    try:
        syncs = _Syncs(s)
        monkeypatch.setattr(db_module, "_datasync", syncs)
        create = s._db.create
        s.send(b"first", "c")  # reserves job numbers in a transaction, synced after its commit
        s.send(b"second", "c")
        assert create.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: SQLite synced the commit
        before = len(syncs.calls)
        for _ in range(5):
            s.send(b"x", "c")
        assert len(syncs.calls) == before
        s.send_many([b"a", b"b"], "c")  # a transaction on `create`: back to NORMAL, synced after the commit
        assert create.execute("PRAGMA synchronous").fetchone()[0] == 1
        assert len(syncs.calls) == before + 1 and not syncs.calls[-1][1]
        s._db.gate._queue_until = time.monotonic() + 60  # as after SQLite said busy: other processes write
        for _ in range(3):
            s.send(b"y", "c")
        assert create.execute("PRAGMA synchronous").fetchone()[0] == 1
        assert len(syncs.calls) == before + 4 and not any(held for _, held in syncs.calls)
        assert s.stats().channels["c"].ready == 12
    finally:
        s.close()


def test_senders_queued_behind_a_send_in_progress_are_logged_with_trace_on(spool_dir: Path) -> None:
    """A send that finds another in progress queues for the group commit directly; with the event log on,
    its rows and their events still go in one transaction."""
    s = Spool(spool_dir, trace=True)
    try:
        ids: list[list[str]] = [[] for _ in range(4)]

        def go(i: int) -> None:
            for k in range(25):
                ids[i].append(s.send(f"{i}:{k}".encode(), "t"))

        threads = [threading.Thread(target=go, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        sent = [m for r in ids for m in r]
        assert len(set(sent)) == 100 and s.stats().channels["t"].ready == 100
        assert all([e["kind"] for e in s.trace_events(m)] == ["created"] for m in sent)
    finally:
        s.close()


def test_a_woken_sender_wakes_the_next_sender_of_its_group() -> None:
    """The leader wakes only the first sender of a group; each wakes the next (issue 9: thread wake-ups)."""
    from spoolq.store.commit import WriteRequest, _wait_turn

    w = WriteRequest()
    own, nxt = threading.Lock(), threading.Lock()
    own.acquire()
    nxt.acquire()
    w.chain = nxt
    own.release()  # the leader (or the sender before) woke this one
    _wait_turn(w, own)
    assert nxt.acquire(blocking=False)  # ... and it woke the next


def test_an_interrupted_sender_still_wakes_the_next_one() -> None:
    """A signal's handler raising in a waiting sender must not leave the rest of its group asleep."""
    from spoolq.store.commit import WriteRequest, _wait_turn

    class Interrupted:
        def __init__(self) -> None:
            self.calls = 0

        def acquire(self) -> bool:
            self.calls += 1
            if self.calls == 1:
                raise KeyboardInterrupt
            return True

    w = WriteRequest()
    nxt = threading.Lock()
    nxt.acquire()
    w.chain = nxt
    lk = Interrupted()
    with pytest.raises(KeyboardInterrupt):
        _wait_turn(w, lk)  # type: ignore[arg-type]
    assert lk.calls == 2  # it waited for its turn after the interrupt
    assert nxt.acquire(blocking=False)


def test_every_sender_of_a_group_is_woken(real_spool: Spool) -> None:
    """8 threads sending at once: groups of several senders, and every send returns (none left asleep)."""
    n, per = 8, 200
    done = [0] * n
    start = threading.Barrier(n)

    def go(i: int) -> None:
        start.wait(timeout=30)
        for _ in range(per):
            real_spool.send(b"x", "wake")
            done[i] += 1

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert done == [per] * n
    commits, requests = real_spool.commit_stats()
    assert requests > commits  # some groups had more than one sender
    assert real_spool.stats().channels["wake"].ready == n * per
