"""After kill -9, a standalone spoolq-beanstalkd on the same -b directory goes on as beanstalkd does:
job ids continue at the last one plus one, and jobs that were reserved are ready at once (issue 10 item 4;
delays and per-job counters are compared with real beanstalkd in test_beanstalk_differential.py)."""

from __future__ import annotations

import shutil

from .test_beanstalk_protocol import Beanstalkd, Wire, short_tmpdir


def _stats(w: Wire, key: bytes) -> int:
    w.send(b"stats\r\n")
    line = w.line()
    assert line.startswith(b"OK ")
    body = w.chunk(int(line.split()[1]))
    for row in body.splitlines():
        if row.startswith(key + b":"):
            return int(row.split(b":")[1])
    raise AssertionError(f"no {key!r} in stats")


def test_ids_continue_and_reservations_die_with_the_server() -> None:
    d = short_tmpdir()
    started: list[Beanstalkd] = []
    try:
        a = Beanstalkd("-b", str(d), "-f", "0")
        started.append(a)
        w = a.connect()
        assert [w.put(b"one"), w.put(b"two")] == [1, 2]
        w.send(b"reserve\r\n")
        job, body = w.job_reply()
        assert (job, body) == (1, b"one")
        a.kill()
        b = Beanstalkd("-b", str(d), "-f", "0")
        started.append(b)
        w2 = b.connect()
        assert w2.put(b"three") == 3  # not 17: numbers are not reserved in blocks by a server that owns -b
        assert _stats(w2, b"current-jobs-reserved") == 0
        assert _stats(w2, b"current-jobs-ready") == 3  # the job reserved when the server died is ready again
        w2.send(b"reserve-with-timeout 0\r\n")
        assert w2.job_reply() == (1, b"one")
    finally:
        for srv in started:  # also when an assertion failed: no server outlives its test
            srv.stop()
        shutil.rmtree(d, ignore_errors=True)


def test_after_kill_a_deleted_last_job_keeps_its_id_and_the_rest_of_a_block_is_taken_back() -> None:
    d = short_tmpdir()
    started: list[Beanstalkd] = []
    try:
        a = Beanstalkd("-b", str(d), "-f", "0")
        started.append(a)
        w = a.connect()
        assert [w.put(b"one"), w.put(b"two"), w.put(b"three")] == [1, 2, 3]
        w.send(b"delete 3\r\n")  # the last id shown: gone from the spool before the crash
        assert w.line() == b"DELETED"
        a.kill()
        b = Beanstalkd("-b", str(d), "-f", "0")
        started.append(b)
        w2 = b.connect()
        assert w2.put(b"four") == 4  # neither 3 again nor the end of a reserved block
        b.kill()
        c = Beanstalkd("-b", str(d), "-f", "0")
        started.append(c)
        assert c.connect().put(b"five") == 5
    finally:
        for srv in started:  # also when an assertion failed: no server outlives its test
            srv.stop()
        shutil.rmtree(d, ignore_errors=True)
