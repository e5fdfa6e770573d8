"""The WAL's room given in advance (store/db.py ``Database._grow_wal``): zeros past the last frame, written
once a ``full`` spool object has synced enough commits, change nothing SQLite recovers."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

from spoolq import Spool
from spoolq.store.db import CREATE_CHECKPOINT_PAGES, WAL_GROW_CHECK, WAL_ROOM_FRAMES

from .conftest import PYTHON, ROOT, python_env

PAGE = 4096
ROOM = 32 + WAL_ROOM_FRAMES * (24 + PAGE)


def wal_size(spool_dir: Path) -> int:
    return (spool_dir / "spool.db-wal").stat().st_size


def drain(spool_dir: Path) -> list[bytes]:
    with Spool(spool_dir) as s:
        got = []
        while batch := s.lease_many("c", 500):
            got += [lease.body for lease in batch]
            s.ack_many(batch)
        return got


def test_a_busy_full_spool_gives_its_wal_its_room_and_a_quiet_one_does_not(tmp_path: Path) -> None:
    with Spool(tmp_path / "quiet", durability="full") as s:
        for i in range(WAL_GROW_CHECK // 2):
            s.send(b"%d" % i, "c")
        assert wal_size(tmp_path / "quiet") < ROOM  # too few commits to be worth 4 MiB of zeros
    with Spool(tmp_path / "normal", durability="normal") as s:
        for i in range(WAL_GROW_CHECK * 2):
            s.send(b"%d" % i, "c")
        assert wal_size(tmp_path / "normal") < ROOM  # no sync per commit: nothing to save
    with Spool(tmp_path / "busy", durability="full") as s:
        for i in range(WAL_GROW_CHECK * 2):
            s.send(b"%d" % i, "c")
        assert wal_size(tmp_path / "busy") >= ROOM
        for i in range(WAL_GROW_CHECK * 2, WAL_GROW_CHECK * 3):  # frames written into the zeros
            s.send(b"%d" % i, "c")
        assert wal_size(tmp_path / "busy") == ROOM  # written over, not past
    assert sorted(drain(tmp_path / "busy"), key=int) == [b"%d" % i for i in range(WAL_GROW_CHECK * 3)]


def test_a_process_killed_after_its_wal_grew_loses_nothing_it_was_told_was_stored(tmp_path: Path) -> None:
    """SIGKILL leaves the WAL as it is (no checkpoint at close): recovery reads the frames before the
    zeros, and every send that returned is there, once."""
    spool_dir = tmp_path / "spool"
    n = WAL_GROW_CHECK * 2 + 37
    code = textwrap.dedent(f"""
        import os, signal, sys
        from spoolq import Spool
        s = Spool({str(spool_dir)!r}, durability="full")
        for i in range({n}):
            s.send(b"%d" % i, "c")
            if i % 50 == 0:
                s.send_many([b"m%d-%d" % (i, k) for k in range(3)], "c")
        sys.stdout.write(str(os.path.getsize({str(spool_dir / "spool.db-wal")!r})))
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([PYTHON, "-c", code], cwd=ROOT, env=python_env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -9, proc.stderr
    assert int(proc.stdout) >= ROOM  # the zeros were there when it died
    got = drain(spool_dir)
    want = [b"%d" % i for i in range(n)] + [b"m%d-%d" % (i, k) for i in range(0, n, 50) for k in range(3)]
    assert sorted(got) == sorted(want)
    with Spool(spool_dir, durability="full") as s:  # and the spool goes on: new frames after recovery
        s.send(b"after", "c")
    assert drain(spool_dir) == [b"after"]


def test_a_normal_spools_sends_checkpoint_every_create_checkpoint_pages_not_every_1000(tmp_path: Path) -> None:
    # issue 9: a checkpoint syncs the WAL and the database; under normal the senders' connection lets the WAL
    # reach CREATE_CHECKPOINT_PAGES first (at SQLite's default of 1,000 it restarts there)
    spool_dir = tmp_path / "s"
    past = 32 + (1_000 + (CREATE_CHECKPOINT_PAGES - 1_000) // 2) * (24 + PAGE)
    sent = 0
    with Spool(spool_dir, durability="normal") as s:
        while wal_size(spool_dir) < past and sent < 4 * CREATE_CHECKPOINT_PAGES:
            for _ in range(100):
                s.send(b"x" * 200 + b"%d" % sent, "c")
                sent += 1
        assert wal_size(spool_dir) >= past, (sent, wal_size(spool_dir))
    with Spool(spool_dir, durability="full") as s:  # full keeps 1,000: the WAL's room given in advance matches it
        assert s._db.create.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1_000
        assert s._db.move.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1_000
    assert len(drain(spool_dir)) == sent
