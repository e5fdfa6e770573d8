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
    s.close()
    f = Spool(spool_dir)
    assert f._db.create.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL for writes that create messages
    assert f._db.move.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL for moves and removals
    f.close()
    with pytest.raises(spoolq.InvalidArgument):
        Spool(spool_dir, durability="sometimes")  # type: ignore[arg-type]


