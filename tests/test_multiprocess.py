"""Many real processes on one spool: 4 producers, 3 consumers, 20,000 messages."""

from __future__ import annotations

import itertools
import signal
import subprocess
import time
from collections import defaultdict
from pathlib import Path

from spoolq import Spool

from .conftest import PYTHON, ROOT, python_env, wait_for


def start(*args: str, stdout: int | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([PYTHON, "-m", "tests.procs", *args], cwd=ROOT, env=python_env(),
                            stdout=stdout, text=True)


def read_log(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def test_four_producers_three_consumers_20000_messages(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    Spool(spool_dir).close()
    n_producers, per_producer = 4, 5000
    logs = [tmp_path / f"consumer-{c}.log" for c in range(3)]
    # consumer 2 holds its leases for a while: the others must not get those messages meanwhile
    consumers = [start("consumer", str(spool_dir), "mp", str(logs[c]), "60", "10", "0.02" if c == 2 else "0")
                 for c in range(3)]
    producers = [start("producer", str(spool_dir), "mp", f"p{p}", str(per_producer), "2", stdout=subprocess.PIPE)
                 for p in range(n_producers)]
    sent: dict[str, str] = {}
    try:
        for p in producers:
            out, _ = p.communicate(timeout=300)
            assert p.returncode == 0
            for line in out.splitlines():
                mid, body = line.split()
                sent[mid] = body
        assert len(sent) == n_producers * per_producer

        def all_acked() -> bool:
            return sum(1 for log in logs for rec in read_log(log) if rec[0] == "A") >= len(sent)

        wait_for(all_acked, timeout=300, interval=0.2)
    finally:
        for c in consumers:
            c.send_signal(signal.SIGTERM)
        for c in consumers:
            try:
                c.wait(30)
            except subprocess.TimeoutExpired:
                c.kill()
        for p in producers:
            p.kill()

    leased: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
    acked: dict[str, list[int]] = defaultdict(list)
    for c, log in enumerate(logs):
        for rec in read_log(log):
            if rec[0] == "L":
                _, mid, _attempts, t, deadline, body = rec
                assert sent[mid] == body  # the right body came with the id
                leased[mid].append((c, float(t), float(deadline)))
            else:
                acked[rec[1]].append(c)
    assert set(acked) == set(sent)  # every message acked ...
    assert all(len(v) == 1 for v in acked.values())  # ... exactly once
    # while a lease was held (60 s visibility, never expired here) no other consumer got the message
    assert all(len(v) == 1 for v in leased.values()), [k for k, v in leased.items() if len(v) > 1][:5]
    assert sum(1 for v in leased.values() if v[0][0] == 2) > 0  # the slow consumer took part
    with Spool(spool_dir) as s:
        st = s.stats().channels["mp"]
        assert (st.ready, st.leased, st.delayed, st.dead) == (0, 0, 0, 0)


def test_expired_leases_go_to_another_consumer_never_to_two_at_once(tmp_path: Path) -> None:
    """Short leases that a slow consumer overruns: the message is re-leased, but lease intervals never overlap."""
    spool_dir = tmp_path / "spool"
    with Spool(spool_dir) as s:
        s.send_many([f"m:{i}".encode() for i in range(300)], "short")
    logs = [tmp_path / f"c{c}.log" for c in range(3)]
    # consumer 0 overruns its 0.2 s leases (holds 0.3 s); 1 and 2 are quick and start once 0 holds some
    consumers = [start("consumer", str(spool_dir), "short", str(logs[0]), "0.2", "5", "0.3")]
    try:
        wait_for(lambda: read_log(logs[0]), timeout=30)
        consumers += [start("consumer", str(spool_dir), "short", str(logs[c]), "0.2", "5", "0.01")
                      for c in (1, 2)]
        def drained() -> bool:
            with Spool(spool_dir) as s:
                st = s.stats().channels["short"]
                return st.ready + st.leased == 0

        wait_for(drained, timeout=120, interval=0.2)
        time.sleep(0.5)  # let the last ack lines reach the logs
    finally:
        for c in consumers:
            c.send_signal(signal.SIGTERM)
        for c in consumers:
            c.wait(30)
    intervals: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
    for log in logs:
        for rec in read_log(log):
            if rec[0] == "L":
                intervals[rec[1]].append((float(rec[3]), float(rec[4]), int(rec[2])))
    assert len(intervals) == 300
    overlapped = 0
    for mid, spans in intervals.items():
        spans.sort()
        attempts = [a for _, _, a in spans]
        assert attempts == list(range(1, len(spans) + 1)), (mid, spans)  # each re-lease is a new attempt
        for (_, d1, _), (s2, _, _) in itertools.pairwise(spans):
            assert s2 >= d1 - 0.005, (mid, spans)  # the next lease starts only after the previous one ended
            overlapped += 1
    assert overlapped > 0  # consumer 0 really did lose some leases
