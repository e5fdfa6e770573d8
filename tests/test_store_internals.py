"""Tests that look inside the store (its connections): internals, as the file name says."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import spoolq
from spoolq import Spool


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


def test_normal_durability_setting(spool_dir: Path) -> None:
    s = Spool(spool_dir, durability="normal")
    assert s._db.create.execute("PRAGMA synchronous").fetchone()[0] == 1
    assert not s._db.durable
    s.close()
    f = Spool(spool_dir)
    # NORMAL commits everywhere; under full the writer syncs the WAL itself (see the next test)
    assert f._db.create.execute("PRAGMA synchronous").fetchone()[0] == 1
    assert f._db.move.execute("PRAGMA synchronous").fetchone()[0] == 1
    assert f._db.durable
    f.close()
    with pytest.raises(spoolq.InvalidArgument):
        Spool(spool_dir, durability="sometimes")  # type: ignore[arg-type]


@pytest.mark.parametrize("threads", [1, 4])
def test_full_syncs_the_wal_after_each_create_outside_the_gate(
    spool_dir: Path, monkeypatch: pytest.MonkeyPatch, threads: int
) -> None:
    """Under full, every send returns only after an fdatasync of spool.db-wal that began after its
    commit; the sync runs without the write gate, so other writers are not held up by the disk."""
    import threading

    s = Spool(spool_dir)
    s.send(b"warm", "c")
    wal = os.stat(spool_dir / "spool.db-wal")
    syncs: list[tuple[int, bool, bool]] = []  # (rows committed when the sync began, gate owned, flock held)
    real = os.fdatasync

    def spy(fd: int) -> None:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) == (wal.st_dev, wal.st_ino):
            rows = s._db.read_conn.execute("SELECT count(*) FROM inbox").fetchone()[0]
            syncs.append((rows, s._db.gate.owned(), s._db.gate.held))
        real(fd)

    monkeypatch.setattr(os, "fdatasync", spy)
    returned: list[int] = []
    lock = threading.Lock()

    def sender() -> None:
        for _ in range(20):
            s.send(b"x", "c")
            n = len(syncs)
            with lock:
                returned.append(n)

    pool = [threading.Thread(target=sender) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(60)
    monkeypatch.setattr(os, "fdatasync", real)
    assert len(returned) == 20 * threads
    assert all(n >= 1 for n in returned)  # no send returned before a sync of the WAL
    assert 1 <= len(syncs) <= 20 * threads
    assert all(not owned and not held for _, owned, held in syncs)
    assert syncs[-1][0] == 1 + 20 * threads  # the last sync began after the last commit
    s.close()

    n = Spool(spool_dir, durability="normal")
    monkeypatch.setattr(os, "fdatasync", spy)
    before = len(syncs)
    n.send(b"y", "c")
    assert len(syncs) == before  # normal: no sync per send
    n.close()


