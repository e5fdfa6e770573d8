"""Regression tests for the spool's side of the hardening work: damaged spools are refused untouched,
`spoolq check`, bounded bell fds, no SQLite writes on the event loop, no fd leak on a failed open."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest

import spoolq
from spoolq import Spool

from .conftest import PYTHON, python_env


def _snapshot(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}


def _check(d: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "spoolq", "check", "--spool", str(d)], env=python_env(),
                          capture_output=True, text=True, timeout=60)


def test_truncated_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with Spool(d) as s:
        s.send(b"precious", "c")
        node = s.node_id
    (d / "spool.db").write_bytes(b"")
    before = _snapshot(d)
    with pytest.raises(spoolq.SpoolCorrupt) as ei:
        Spool(d)
    assert "spoolq check" in (ei.value.hint or "")
    assert _snapshot(d) == before
    r = subprocess.run([PYTHON, "-m", "spoolq", "stats", "--spool", str(d)], env=python_env(), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1 and "holds no spool" in r.stderr
    assert _snapshot(d) == before
    assert _check(d).returncode == 1
    assert node  # the old identity is not replaced by a new spool


def test_garbage_wal_is_refused_and_left_untouched(tmp_path: Path) -> None:
    live = tmp_path / "live"
    s = Spool(live)
    s.send(b"in the wal", "c")
    for name in ("good", "bad"):  # copies taken while it runs: the WAL is not checkpointed, as after a crash
        shutil.copytree(live, tmp_path / name)
    s.close()
    with Spool(tmp_path / "good") as ok:  # a valid WAL beside the database opens fine
        assert ok.lease("c").body == b"in the wal"  # type: ignore[union-attr]
    wal = tmp_path / "bad" / "spool.db-wal"
    assert wal.stat().st_size > 0
    wal.write_bytes(os.urandom(wal.stat().st_size))
    before = _snapshot(tmp_path / "bad")
    with pytest.raises(spoolq.SpoolCorrupt):
        Spool(tmp_path / "bad")
    assert _snapshot(tmp_path / "bad") == before
    r = _check(tmp_path / "bad")
    assert r.returncode == 1 and "damaged" in r.stderr.replace("\n", " ")


def test_check_says_ok_on_a_healthy_spool(tmp_path: Path) -> None:
    with Spool(tmp_path / "s") as s:
        s.send_many([b"a", b"b"], "c")
    r = _check(tmp_path / "s")
    assert r.returncode == 0 and "ok" in r.stdout


def test_a_new_directory_still_becomes_a_spool(tmp_path: Path) -> None:
    Spool(tmp_path / "new").close()
    with Spool(tmp_path / "new") as s:
        s.send(b"x", "c")


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_bell_fds_are_bounded(tmp_path: Path) -> None:
    with Spool(tmp_path / "s", durability="normal") as s:
        before = _open_fds()
        for i in range(600):
            s.send(b"x", f"ch{i}")
        assert _open_fds() - before <= s.bells.MAX_OPEN + 8  # not one per channel
        assert s.bells.open_count() <= s.bells.MAX_OPEN


def test_failed_opens_leak_no_fds(tmp_path: Path) -> None:
    d = tmp_path / "newer"
    Spool(d).close()
    conn = sqlite3.connect(d / "spool.db")
    conn.execute("PRAGMA user_version=99")
    conn.close()
    before = _open_fds()
    for _ in range(50):
        with pytest.raises(spoolq.SpoolVersionError):
            Spool(d)
    assert _open_fds() - before < 5


def test_async_send_to_a_new_channel_does_not_block_the_loop_on_a_held_lock(tmp_path: Path) -> None:
    s = Spool(tmp_path / "s")
    s.send(b"x", "known")
    locked = threading.Event()
    release = threading.Event()

    def hold_the_write_lock() -> None:  # as another process would
        c = sqlite3.connect(tmp_path / "s" / "spool.db", isolation_level=None)
        c.execute("BEGIN IMMEDIATE")
        locked.set()
        release.wait(30)
        c.execute("ROLLBACK")
        c.close()

    t = threading.Thread(target=hold_the_write_lock)
    t.start()
    assert locked.wait(10)

    async def main() -> tuple[int, int, list[str]]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        send = asyncio.create_task(s.asend_items("brand.new", [(b"y", {})]))
        while ticks < 20:  # the loop keeps running while the send waits for the lock
            await asyncio.sleep(0.01)
            assert not send.done()
        seen = ticks
        release.set()
        ids = await asyncio.wait_for(send, 30)
        ticker.cancel()
        return seen, ticks, ids

    seen, _ticks, ids = asyncio.run(main())
    t.join()
    assert seen >= 20 and len(ids) == 1
    assert s.lease("brand.new").body == b"y"  # type: ignore[union-attr]
    s.close()


def test_consumers_can_drain_a_full_disk(tmp_path: Path) -> None:
    from .conftest import small_tmpfs

    with small_tmpfs(tmp_path / "fs", "80m") as mnt:
        s = Spool(mnt / "s")
        assert (mnt / "s" / "reserve").exists()  # room kept for acks
        ids = []
        with pytest.raises(spoolq.StorageFull):
            for _ in range(40000):
                ids.append(s.send(os.urandom(4000), "c"))
        assert len(ids) > 100
        got = []
        while leases := s.lease_many("c", 500):  # leases and acks still work: the reserve was released
            got += [x.id for x in leases]
            s.ack_many(leases)
        assert got == ids
        s.close()


def test_a_spool_on_a_read_only_mount_can_be_inspected(tmp_path: Path) -> None:
    from .conftest import small_tmpfs

    with small_tmpfs(tmp_path / "fs", "16m") as mnt:
        with Spool(mnt / "s") as s:
            s.send_many([b"a", b"b"], "c")
            node = s.node_id
        r = subprocess.run(["mount", "-o", "remount,ro", str(mnt)], capture_output=True)
        if r.returncode != 0:
            pytest.skip("cannot remount read-only here: " + r.stderr.decode(errors="replace"))
        with pytest.raises(spoolq.SpoolUnavailable):
            Spool(mnt / "s")  # a normal open needs to write
        with Spool(mnt / "s", read_only=True) as ro:
            assert ro.node_id == node
            assert ro.stats().channels["c"].ready == 2
            assert [m.body for m in ro.peek("c")] == [b"a", b"b"]
            with pytest.raises(spoolq.SpoolUnavailable):
                ro.send(b"x", "c")
        r2 = subprocess.run([PYTHON, "-m", "spoolq", "stats", "--read-only", "--json", "--spool", str(mnt / "s")],
                            env=python_env(), capture_output=True, text=True, timeout=60)
        assert r2.returncode == 0, r2.stderr
        assert '"ready": 2' in r2.stdout


def test_a_held_write_lock_does_not_stall_a_node_serving_beanstalkd(tmp_path: Path) -> None:
    import json
    import socket
    import urllib.request

    from .nodes import NodeProc

    d = tmp_path / "n"
    node = NodeProc(d, extra=["--beanstalk", "127.0.0.1:0"])
    try:
        host, port = json.loads((d / "node.json").read_text())["beanstalk"].rsplit(":", 1)
        lock = sqlite3.connect(d / "spool.db", isolation_level=None, timeout=30)
        lock.execute("BEGIN IMMEDIATE")  # as another process would hold it
        put_reply: list[bytes] = []

        def put() -> None:
            with socket.create_connection((host, int(port)), timeout=60) as s:
                s.sendall(b"use brand-new\r\nput 0 0 60 2\r\nhi\r\n")
                data = b""
                while data.count(b"\r\n") < 2:
                    data += s.recv(100)
                put_reply.append(data)

        t = threading.Thread(target=put)
        t.start()
        with urllib.request.urlopen(node.url + "/healthz", timeout=10) as r:  # answered while the put waits
            assert r.status == 200
        assert not put_reply and t.is_alive()
        lock.execute("ROLLBACK")
        lock.close()
        t.join(60)
        assert put_reply and b"INSERTED" in put_reply[0]
    finally:
        node.stop()


def test_waiting_on_an_unwritable_bells_directory_is_a_clear_error(tmp_path: Path) -> None:
    from .conftest import small_tmpfs

    with Spool(tmp_path / "s") as s:
        s.send(b"a", "c")
    shutil.rmtree(tmp_path / "s" / "bells")
    # A read-only file system over bells/: unwritable even for root, which ignores permission bits.
    with small_tmpfs(tmp_path / "s" / "bells", "1m") as bells:
        r = subprocess.run(["mount", "-o", "remount,ro", str(bells)], capture_output=True)
        if r.returncode != 0:
            pytest.skip("cannot remount read-only here: " + r.stderr.decode(errors="replace"))
        with Spool(tmp_path / "s") as s:
            with pytest.raises(spoolq.SpoolUnavailable) as e:
                s.lease("other", wait=0.2)
            assert "bells" in (e.value.hint or "")
            lease = s.lease("c", wait=0.2)  # a message that is there needs no wait: still served
            assert lease is not None and lease.body == b"a"
            lease.ack()
