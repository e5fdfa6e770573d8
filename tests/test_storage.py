"""The spool on disk: opening, permissions, schema versions, a full disk, durability settings."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import spoolq
from spoolq import Spool
from spoolq.spool import SCHEMA_VERSION, default_spool_path

from .conftest import small_tmpfs


def test_creates_directory_and_keeps_node_id(spool_dir: Path) -> None:
    s = Spool(spool_dir)
    node = s.node_id
    assert uuid.UUID(node)
    assert (spool_dir / "spool.db").exists()
    s.close()
    s2 = Spool(spool_dir)
    assert s2.node_id == node
    s2.close()


def test_wal_mode_and_schema_version(real_spool: Spool) -> None:
    c = sqlite3.connect(real_spool.db_path)
    assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"inbox", "outbox", "dead", "seen", "delayed"} <= tables
    c.close()


def test_default_path_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SPOOLQ_SPOOL", str(tmp_path / "envspool"))
    assert default_spool_path() == tmp_path / "envspool"
    s = Spool()
    assert s.path == tmp_path / "envspool"
    s.close()
    monkeypatch.delenv("SPOOLQ_SPOOL")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_spool_path() == tmp_path / "xdg" / "spoolq"


def test_newer_schema_is_refused_untouched(spool_dir: Path) -> None:
    Spool(spool_dir).close()
    c = sqlite3.connect(spool_dir / "spool.db")
    c.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    c.close()
    before = (spool_dir / "spool.db").read_bytes()
    with pytest.raises(spoolq.SpoolVersionError) as ei:
        Spool(spool_dir)
    assert "newer" in str(ei.value) and "upgrade" in (ei.value.hint or "")
    c = sqlite3.connect(spool_dir / "spool.db")
    assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    c.close()
    assert (spool_dir / "spool.db").read_bytes()[:100] == before[:100]


def test_a_version_1_spool_is_upgraded_in_place_keeping_its_messages(spool_dir: Path) -> None:
    s = Spool(spool_dir)
    node = s.node_id
    s.send(b"kept", "jobs")
    s.close()
    c = sqlite3.connect(spool_dir / "spool.db")  # make it what spoolq 0.1 wrote: no v2 tables
    for table in ("held", "audit", "events", "job_stats", "event_runs"):
        c.execute(f"DROP TABLE {table}")
    c.execute("PRAGMA user_version=1")
    c.commit()
    c.close()
    s = Spool(spool_dir)
    assert s.node_id == node
    lease = s.lease("jobs")
    assert lease is not None and lease.body == b"kept"
    s.close()
    c = sqlite3.connect(spool_dir / "spool.db")
    assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"held", "audit", "events", "job_stats", "event_runs"} <= tables
    c.close()


def test_a_version_2_spool_is_upgraded_keeping_its_events(spool_dir: Path) -> None:
    s = Spool(spool_dir, trace=True)
    mid = s.send(b"kept", "jobs")
    s.close()
    c = sqlite3.connect(spool_dir / "spool.db")  # what spoolq wrote before issue 15's event runs
    c.execute("DROP TABLE event_runs")
    c.execute("PRAGMA user_version=2")
    c.commit()
    c.close()
    with Spool(spool_dir, trace=True) as s:
        assert [e["kind"] for e in s.trace_events(mid)] == ["created"]
    c = sqlite3.connect(spool_dir / "spool.db")
    assert c.execute("PRAGMA user_version").fetchone()[0] == 3
    assert c.execute("SELECT count(*) FROM event_runs").fetchone()[0] == 0
    c.close()


def test_foreign_sqlite_database_is_refused(spool_dir: Path) -> None:
    spool_dir.mkdir()
    c = sqlite3.connect(spool_dir / "spool.db")
    c.execute("CREATE TABLE mine(x)")
    c.commit()
    c.close()
    with pytest.raises(spoolq.SpoolUnavailable, match="not a spoolq spool"):
        Spool(spool_dir)


def test_garbage_file_is_refused(spool_dir: Path) -> None:
    spool_dir.mkdir()
    (spool_dir / "spool.db").write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(spoolq.SpoolUnavailable, match=r"not a spoolq database|damaged"):
        Spool(spool_dir)


def test_path_that_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(spoolq.SpoolUnavailable, match="not a directory"):
        Spool(f)
    with pytest.raises(spoolq.SpoolUnavailable, match="cannot create"):
        Spool(f / "below")


UNWRITABLE = """
import os, sys
import spoolq, spoolq.spool, sqlite3, logging  # import while we can still read the interpreter's files
os.setgid(65534); os.setuid(65534)
try:
    spoolq.Spool(sys.argv[1])
except spoolq.SpoolUnavailable as e:
    print("refused:", e)
    sys.exit(0)
print("opened")
sys.exit(1)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="switches to user nobody")
def test_unwritable_directory_refused_for_an_ordinary_user(tmp_path: Path) -> None:
    import shutil
    import tempfile

    from .conftest import PYTHON, python_env

    base = Path(tempfile.mkdtemp(prefix="spoolq-perm-"))  # directly under /tmp: nobody may enter it
    try:
        d = base / "locked"
        d.mkdir()
        os.chmod(base, 0o755)
        os.chmod(d, 0o755)  # owned by root: nobody may not write
        r = subprocess.run([PYTHON, "-c", UNWRITABLE, str(d)], env=python_env(), capture_output=True, text=True,
                           timeout=60)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "not writable" in r.stdout and "permissions" in r.stdout


def test_unwritable_directory_refused_for_the_current_user(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root ignores permission bits; covered by the test above")
    d = tmp_path / "ro"
    d.mkdir()
    os.chmod(d, 0o555)
    with pytest.raises(spoolq.SpoolUnavailable, match="not writable"):
        Spool(d)


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "tiny", "1m") as mnt:
        yield mnt


def test_real_full_filesystem(tiny_fs: Path) -> None:
    filler = tiny_fs / "filler"
    filler.write_bytes(b"\0" * 256 * 1024)  # freed later, as an operator would free space
    s = Spool(tiny_fs / "spool")
    ids = []
    with pytest.raises(spoolq.StorageFull) as ei:
        for _ in range(10000):
            ids.append(s.send(os.urandom(2000), "c"))
    assert "free disk space" in (ei.value.hint or "")
    n = len(ids)
    assert n > 10
    filler.unlink()
    st = s.stats().channels["c"]
    assert st.ready == n  # every send that returned is there, the failing one is not
    got = []
    while leases := s.lease_many("c", 100):
        got += [x.id for x in leases]
        s.ack_many(leases)
    assert got == ids
    s.send(b"after", "c")  # and it works again
    s.close()


def test_closed_spool_refuses_work(spool_dir: Path) -> None:
    s = Spool(spool_dir)
    s.close()
    s.close()  # idempotent
    with pytest.raises(spoolq.SpoolUnavailable, match="closed"):
        s.send(b"x", "c")


def test_busy_timeout_when_another_process_holds_the_lock(spool_dir: Path) -> None:
    s = Spool(spool_dir, busy_timeout=0.3)
    s.send(b"x", "c")
    other = sqlite3.connect(spool_dir / "spool.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(spoolq.SpoolBusy):
            s.send(b"y", "c")
    finally:
        other.execute("ROLLBACK")
        other.close()
    s.send(b"z", "c")
    assert [x.body for x in s.lease_many("c", 5)] == [b"x", b"z"]
    s.close()


def test_a_new_or_upgraded_schema_is_synced_and_a_current_one_untouched(spool_dir: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The schema is written on a connection that does not sync its commits: creating (or upgrading) a spool
    syncs it at once, for either durability, so a crash cannot leave marks around an empty database."""
    from spoolq.store.db import Database

    synced: list[Path] = []
    real_sync = Database.sync
    monkeypatch.setattr(Database, "sync", lambda self: (synced.append(self.path), real_sync(self))[1])
    Spool(spool_dir, durability="normal").close()
    assert synced == [spool_dir]
    Spool(spool_dir, durability="normal").close()
    assert synced == [spool_dir]  # a current spool: nothing written, nothing synced
    c = sqlite3.connect(spool_dir / "spool.db")
    for table in ("held", "audit", "events", "job_stats", "event_runs"):
        c.execute(f"DROP TABLE {table}")
    c.execute("PRAGMA user_version=1")
    c.commit()
    c.close()
    Spool(spool_dir, durability="normal").close()
    assert synced == [spool_dir, spool_dir]


def test_syncing_keeps_sqlites_locks_so_another_process_cannot_delete_the_wal(spool_dir: Path) -> None:
    """SQLite's locks are POSIX locks, owned by the process: closing any descriptor of spool.db drops them.
    A sync that did so let another process, closing its last connection, take the spool for unused and
    delete the WAL under this one's writers (seen as 'database disk image is malformed')."""
    s = Spool(spool_dir, durability="normal")
    try:
        s.send(b"before", "c")
        s.sync()
        code = "import sys; from spoolq import Spool; Spool(sys.argv[1]).close()"
        subprocess.run([sys.executable, "-c", code, str(spool_dir)], check=True, timeout=60)
        assert (spool_dir / "spool.db-wal").exists()  # still ours: the other process saw us
        s.send(b"after", "c")
        assert [m.body for m in s.peek("c", limit=10)] == [b"before", b"after"]
    finally:
        s.close()
