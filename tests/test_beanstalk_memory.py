"""The in-memory job store of spoolq-beanstalkd without -b (spoolq/beanstalk/memory.py): what the protocol
tests do not reach directly (its bounded heaps, attempts used up)."""

from __future__ import annotations

from spoolq.beanstalk.jobs import NOT_EARLY
from spoolq.beanstalk.memory import MemoryStore


def test_heaps_stay_bounded_however_often_jobs_change_state() -> None:
    store = MemoryStore(max_attempts=1 << 62)
    jobs = store.send_jobs([(b"x", "t", 1024, 0.0, None) for _ in range(100)])
    assert jobs == list(range(1, 101))
    for _ in range(50):  # every job reserved and released 50 times: 10,000 stale heap entries made
        leases = [store.lease_any(["t"])[0] for _ in range(100)]
        assert all(lease is not None for lease in leases)
        for lease in leases:
            assert lease is not None and lease.nack(0.0, priority=7)
    tube = store.tubes["t"]
    assert tube.n_ready == 100
    assert len(tube.ready) <= 2 * 100 + 64 and len(tube.reserved) <= 2 * 0 + 64 + 100
    assert store.stats().channels["t"].ready == 100


def test_a_job_that_used_up_its_attempts_is_buried_and_a_kick_starts_them_again() -> None:
    store = MemoryStore(max_attempts=2)
    (job,) = store.send_jobs([(b"x", "t", 5, 0.0, None)])
    first, _ = store.lease_any(["t"])
    assert first is not None and first.attempts == 1 and first.nack(0.0)
    second, _ = store.lease_any(["t"])
    assert second is not None and second.attempts == 2
    assert second.nack(0.0) is False  # used up: a dead letter (a buried job)
    found = store.find_job(job)
    assert found is not None and found.state == "buried"
    assert store.lease_any(["t"]) == (None, None)
    assert store.kick_jobs("t", 10) == [job]
    again, _ = store.lease_any(["t"])
    assert again is not None and again.job == job and again.attempts == 1


def test_ready_order_is_priority_then_job_number_and_delays_report_when() -> None:
    store = MemoryStore(max_attempts=1 << 62)
    a, b, c = store.send_jobs([(b"a", "t", 9, 0.0, None), (b"b", "t", 3, 0.0, None), (b"c", "t", 9, 0.0, None)])
    (d,) = store.send_jobs([(b"d", "t", 0, 100 + NOT_EARLY, None)])
    order = []
    for _ in range(3):
        lease, _ = store.lease_any(["t"])
        assert lease is not None
        order.append(lease.job)
        lease.ack()
    assert order == [b, a, c]
    none, when = store.lease_any(["t"])
    found = store.find_job(d)
    assert none is None and found is not None and found.state == "delayed" and found.due is not None
    assert when is not None and abs(when - (found.due - NOT_EARLY)) < 1e-6  # the exact end, no slack


def test_counters_and_pauses_of_gone_tubes_are_forgotten() -> None:
    """A client can name any number of tubes: the per-tube counters and pauses of a tube that no longer
    exists (no job, nobody using or watching it) go with it, and an ended pause is forgotten, so that
    reserves take their fast path again (the server's memory stays bounded)."""
    import time

    from spoolq.beanstalk.server import Server
    from spoolq.beanstalk.tubes import ORDER_PRUNE

    srv = Server(None, memory=MemoryStore(max_attempts=10))
    n = ORDER_PRUNE + 500
    for i in range(n):  # what "use t<i>", "pause-tube t<i> 0", a put + delete and "use default" leave behind
        tube = f"t{i}"
        srv.tube.ref(tube)
        srv.tube.unref(tube)
        srv.paused[tube] = (time.monotonic() + 3600, 3600)
        srv.tube_pauses[tube] = srv.tube_jobs[tube] = srv.tube_deletes[tube] = 1
    assert srv.tubes() == ["default"]  # nobody uses them, and they hold no job
    assert not (srv.paused or srv.tube_pauses or srv.tube_jobs or srv.tube_deletes)

    srv.tube.ref("live")
    srv.paused["live"] = (time.monotonic() - 1, 5)  # a pause that has ended
    srv.paused["default"] = (time.monotonic() + 3600, 3600)
    srv.tick()
    assert list(srv.paused) == ["default"]
