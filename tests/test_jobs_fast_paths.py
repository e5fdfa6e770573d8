"""The job-number paths the beanstalkd front-end takes for a lone put and a reserve (issue 9): one
statement each, with the same results as the general transactions (numbers unique and dense in an
owned spool, each job's own TTR)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from spoolq import Spool
from spoolq.beanstalk.jobs import DEFAULT_TTR, NOT_EARLY, TTR_HEADER, JobStore, ttr_of
from spoolq.testing import FakeClock


@contextmanager
def statements(conn: sqlite3.Connection) -> Iterator[list[str]]:
    """The statements ``conn`` runs meanwhile. sqlite3 reports a statement again for each trigger it
    fires (and for RETURNING): a repeat of the one before is not counted."""
    seen: list[str] = []

    def note(s: str) -> None:
        if not s.startswith("--") and (not seen or seen[-1] != s):
            seen.append(s)

    conn.set_trace_callback(note)
    try:
        yield seen
    finally:
        conn.set_trace_callback(None)


def put(s: Spool, body: bytes = b"x", headers: dict[str, str] | None = None) -> int:
    (job,) = s.jobs.put([(body, "tube", 1024, 0.0, headers)])
    assert isinstance(job, int)
    return job


def test_an_owned_spool_writes_lone_puts_in_one_statement_and_never_shows_a_number_twice(spool_dir: Path) -> None:
    owner = Spool(spool_dir, max_attempts=1 << 62)
    owner.jobs.own()
    other = Spool(spool_dir)  # another process's view
    try:
        assert put(owner) == 1  # makes the tube, and reserves a block of numbers (a transaction)
        with statements(owner._db.create) as seen:
            assert [put(owner), put(owner)] == [2, 3]
        assert len(seen) == 2  # one INSERT each: no BEGIN, counter UPDATE, COMMIT
        other.send(b"from elsewhere", "tube")  # reserves a block after the owner's
        mine = [put(owner), *owner.jobs.put([(b"a", "tube", 1024, 0.0, None), (b"b", "tube", 1024, 0.0, None)])]
        assert mine == [4, 5, 6]  # from the owner's block
        shown = [x.job for x in owner.lease_many("tube", 100)]
        assert len(shown) == len(set(shown)) == 7 and max(shown) > 16  # the other's number is its own
    finally:
        other.close()
        owner.close()
    again = Spool(spool_dir, max_attempts=1 << 62)
    try:
        again.jobs.own()
        assert put(again) > max(shown)  # someone reserved after the owner: its numbers are not taken back
    finally:
        again.close()


def test_put_plain_is_one_insert_or_nothing_written(spool_dir: Path) -> None:
    owner = Spool(spool_dir, max_attempts=1 << 62)
    owner.jobs.own()
    try:
        assert put(owner) == 1  # makes the tube, reserves a block
        with statements(owner._db.create) as seen:
            assert owner.jobs.put_plain(b"plain", "tube", 7) == 2
        assert len(seen) == 1  # the INSERT alone
        # not for it (nothing written; the caller takes jobs.put): a channel that does not exist yet, a
        # priority out of range, a body over the size limit
        assert owner.jobs.put_plain(b"x", "other", 7) is None
        assert owner.jobs.put_plain(b"x", "tube", 1 << 32) is None
        assert owner.jobs.put_plain(b"x" * (owner.max_message_size + 1), "tube", 7) is None
        assert owner.stats().channels["tube"].ready == 2 and "other" not in owner.stats().channels
        store = JobStore(owner)
        assert store.put_plain(b"general", "other", 7) == 3  # the general path, same numbering
        assert owner.stats().channels["other"].ready == 1
        job = owner.jobs.find(2)
        assert job is not None and (job.body, job.priority, job.channel) == (b"plain", 7, "tube")
    finally:
        owner.close()


def restart(spool_dir: Path) -> Spool:
    s = Spool(spool_dir, max_attempts=1 << 62)
    s.jobs.own()
    return s


def test_after_a_restart_numbers_go_on_at_the_last_one_shown_plus_one(spool_dir: Path) -> None:
    s = restart(spool_dir)
    assert [put(s) for _ in range(3)] == [1, 2, 3]
    s.close()
    s = restart(spool_dir)
    assert put(s) == 4  # not 17: the rest of the block is taken back
    lease, _ = s.jobs.lease_any(["tube"], visibility=60)
    assert lease is not None and lease.job == 1
    s.close()  # the lease ends with its owner
    s = restart(spool_dir)
    assert put(s) == 5
    lease, _ = s.jobs.lease_any(["tube"], visibility=60)
    assert lease is not None and lease.job == 1
    s.close()


def test_the_last_number_deleted_is_not_shown_again_after_a_restart(spool_dir: Path) -> None:
    s = restart(spool_dir)
    assert [put(s) for _ in range(4)] == [1, 2, 3, 4]
    assert s.jobs.delete(4)  # the last one shown, gone from the tables
    s.close()
    s = restart(spool_dir)
    assert put(s) == 5
    leases = s.lease_many("tube", 10)
    assert [x.job for x in leases] == [1, 2, 3, 5]
    for x in leases[1:]:
        x.ack()  # 5, the last one shown, acked; 2 and 3 too
    s.close()
    s = restart(spool_dir)
    assert put(s) == 6
    (delayed,) = s.jobs.put([(b"later", "tube", 1024, 30.0, {"beanstalk-delay": "30"})])
    assert delayed == 7 and s.jobs.delete(delayed)  # a delayed one deleted
    s.close()
    s = restart(spool_dir)
    assert put(s) == 8
    s.close()


def test_a_spool_not_owned_writes_a_lone_put_with_a_reserved_number(spool_dir: Path) -> None:
    s = Spool(spool_dir)
    try:
        first = put(s)  # reserves a block (a transaction)
        with statements(s._db.create) as seen:
            second = put(s)
        assert second == first + 1 and len(seen) == 1
    finally:
        s.close()


def lease_length(s: Spool, ttr: int | None) -> tuple[float, int, float | None]:
    """Put a job (with ``ttr`` in its headers unless None) and reserve it as the front-end does: the
    lease's length, the statements it took, and the stored lease's end."""
    headers = {TTR_HEADER: str(ttr)} if ttr is not None else None
    job = put(s, headers=headers)
    before = time.time()
    with statements(s._db.move) as seen:
        lease, _ = s.jobs.lease_any(["tube"], visibility=DEFAULT_TTR + NOT_EARLY, visibility_for=ttr_of)
    assert lease is not None and lease.job == job
    found = s.jobs.find(job)
    assert found is not None and found.state == "reserved"
    assert found.due is not None and abs(found.due - lease.deadline) < 0.002  # what is stored is what it says
    return lease.deadline - before, len(seen), found.due


def test_a_reserve_is_one_statement_and_keeps_each_jobs_ttr(spool_dir: Path) -> None:
    s = Spool(spool_dir, max_attempts=1 << 62)
    try:
        s.jobs.own()
        length, n, _ = lease_length(s, None)
        assert DEFAULT_TTR - 1 < length <= DEFAULT_TTR + 1 and n == 1
        length, n, _ = lease_length(s, 5)  # its own TTR: set by a second statement
        assert 4 < length <= 6 and n == 2
        length, n, _ = lease_length(s, 600)  # longer than the default too
        assert 599 < length <= 601 and n == 2
    finally:
        s.close()


def test_due_delayed_jobs_and_several_tubes_take_the_general_path(spool_dir: Path, clock: FakeClock) -> None:
    s = Spool(spool_dir, max_attempts=1 << 62, clock=clock)
    try:
        s.jobs.own()
        (delayed,) = s.jobs.put([(b"soon", "tube", 0, 5.0, {"beanstalk-delay": "5"})])
        ready = put(s)
        clock.advance(6)  # the delayed job is due, more urgent (priority 0) than the ready one
        with statements(s._db.move) as seen:
            lease, _ = s.jobs.lease_any(["tube"], visibility=60)
        assert lease is not None and lease.job == delayed  # not the front row of the ready ones
        assert len(seen) > 1  # the one statement declined, the transaction decided
        other, _ = s.jobs.lease_any(["tube", "else"], visibility=60)
        assert other is not None and other.job == ready
    finally:
        s.close()


def test_a_delete_by_job_number_after_a_look_up_writes_by_key(tmp_path: Path) -> None:
    """beanstalkd's `delete <id>` of a job nobody holds: after `find` (a read, off the server's loop), the
    delete writes its table by the message's key (ready, delayed) or the dead letters' job index (buried),
    never a scan of the inbox under the write lock; a job that moved meanwhile still goes."""
    with Spool(tmp_path / "s", durability="normal") as s:
        ready, delayed, buried, moved = put(s), s.jobs.put([(b"d", "tube", 5, 60.0, None)])[0], put(s), put(s)
        assert isinstance(delayed, int)
        lease = s.jobs.lease(buried, visibility=30.0)
        assert lease is not None
        lease.dead(reason="buried")
        move = s._inbox.db.move
        for job, state in ((ready, "ready"), (delayed, "delayed"), (buried, "buried")):
            found = s.jobs.find(job)
            assert found is not None and found.state == state
            with statements(move) as ran:
                assert s.jobs.delete(job, found)
            deletes = [x for x in ran if x.startswith("DELETE")]
            assert len(deletes) == 1, ran
            assert "channel=" in deletes[0] or "FROM dead" in deletes[0], deletes
            assert s.jobs.find(job) is None
        stale = s.jobs.find(moved)
        assert stale is not None and stale.state == "ready"
        lease = s.jobs.lease(moved, visibility=30.0)
        assert lease is not None
        lease.dead(reason="buried")  # buried after the look-up: its key finds nothing, the general path does
        assert s.jobs.delete(moved, stale)
        assert s.jobs.find(moved) is None
        assert not s.jobs.delete(moved, stale)
