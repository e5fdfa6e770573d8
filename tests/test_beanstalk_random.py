"""Random command sequences, the same for real beanstalkd and `spoolq-beanstalkd`: every reply must match.

A seeded generator (the runs are repeatable) mixes puts, reserves, deletes, releases, buries, kicks,
peeks, touches, tube changes and malformed lines, from two connections per server, one command at a
time or pipelined in one write split at random points. Replies are compared line by line, with their
bodies; ``stats``, ``stats-tube`` and ``stats-job`` every 25 commands, without the fields that
depend on the process or the clock. This found the watch-list order after ``ignore`` and ``quit``
followed by anything.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .test_beanstalk_differential import BEANSTALKD, RealBeanstalkd
from .test_beanstalk_protocol import Beanstalkd, Wire, parse_yaml

TUBES = ["default", "a", "b", "c-1", "x_y"]
# fields that differ by process, clock or build, not by behaviour (`file` and `binlog-*`: spoolq has no
# binlog files; see docs/design.md)
VOLATILE = frozenset({
    "age", "time-left", "file", "id", "pid", "version", "rusage-utime", "rusage-stime", "uptime", "hostname", "os",
    "platform", "draining", "max-job-size", "binlog-oldest-index", "binlog-current-index", "binlog-max-size",
    "binlog-records-written", "binlog-records-migrated", "current-connections", "total-connections",
    "current-producers", "current-workers", "current-waiting", "job-timeouts", "pause-time-left",
    "cmd-stats", "cmd-stats-tube", "cmd-stats-job", "cmd-list-tubes-watched", "cmd-list-tube-used",
})
MALFORMED = ["", " ", "put", "put 1 2", "put a b c d", "put 0 0 0 -1", f"use {'x' * 201}", "use -a", "use a b",
             "delete", "delete  1", "delete 1x", "reserve-with-timeout", "watch", "ignore", "peek", "bury 1",
             "release 1", "kick", "stats-tube", "stats-tube nosuch", "pause-tube nosuch 0", "use $(a)",
             "watch a+b;c/d.e", "touch", "list-tubes x", "stats x", "reserve-job", "kick-job", "peek-ready x",
             "XYZ", "use \x01"]


def command(rnd: random.Random, jobs: list[int]) -> bytes:
    """One random command (each gets exactly one reply, and none blocks)."""
    tube = rnd.choice(TUBES)
    job = rnd.choice([*jobs, rnd.randint(0, 50)])
    pri = rnd.choice([0, 1, 5, 1024, 4294967295])
    if rnd.random() < 0.3:
        body = bytes(rnd.choice(b"abc\r\n") for _ in range(rnd.randint(0, 10)))
        delay = rnd.choice([0, 0, 0, 500])  # long enough never to end during a test: no timing in the replies
        return b"put %d %d %d %d\r\n%s\r\n" % (pri, delay, rnd.choice([0, 1, 60, 120]), len(body), body)
    line = rnd.choice([
        f"use {tube}", f"watch {tube}", f"ignore {tube}", "reserve-with-timeout 0", f"delete {job}",
        f"release {job} {pri} {rnd.choice([0, 500])}", f"bury {job} {pri}", f"pause-tube {tube} {rnd.choice([0, 500])}",
        f"kick {rnd.randint(0, 3)}", f"kick-job {job}",
        f"peek {job}", "peek-ready", "peek-buried", "peek-delayed", f"touch {job}", "list-tube-used",
        "list-tubes-watched", f"reserve-job {job}", f"stats-job {job}", rnd.choice(MALFORMED),
    ])
    return line.encode("latin-1") + b"\r\n"


def ready(w: Wire) -> Wire:
    """``w`` once its server answers: what a client sends while the server is still starting is read
    early and timed from its arrival (delays too), which is not what these runs compare."""
    assert w.cmd("list-tube-used") == b"USING default"
    return w


def reply(w: Wire) -> tuple[bytes, Any]:
    """One reply: its line and body (YAML bodies parsed, without the volatile fields)."""
    line = w.line()
    parts = line.split()
    if not parts or parts[0] not in (b"RESERVED", b"FOUND", b"OK"):
        return line, None
    body = w.chunk(int(parts[-1]))
    if parts[0] != b"OK":
        return line, body
    data = parse_yaml(body)
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k not in VOLATILE}
    return b"OK", data  # (the byte count differs where beanstalkd 1.12 leaves a tube name unquoted)


@pytest.fixture(params=["memory", "durable"])
def servers(request: pytest.FixtureRequest) -> Iterator[tuple[RealBeanstalkd, Beanstalkd]]:
    if not Path(BEANSTALKD).exists():
        pytest.fail("beanstalkd is not installed (apt-get install beanstalkd; .ci/run does)")
    if request.param == "durable":
        real = RealBeanstalkd("-b", tempfile.mkdtemp(prefix="real-bs-wal-"))
        ours = Beanstalkd("-b", tempfile.mkdtemp(prefix="bs-wal-"), "-f", "0")
    else:
        real, ours = RealBeanstalkd(), Beanstalkd()
    try:
        yield real, ours
    finally:
        real.stop()
        ours.cleanup()
    assert "Traceback" not in ours.log(), ours.log()


@pytest.mark.parametrize("seed", range(3))
def test_random_commands_get_beanstalkds_replies(servers: tuple[RealBeanstalkd, Beanstalkd], seed: int) -> None:
    real, ours = servers
    rnd = random.Random(seed)
    pairs = [(ready(real.connect()), ready(ours.connect())), (ready(real.connect()), ready(ours.connect()))]
    jobs: list[int] = [0]
    history: list[tuple[bytes, Any]] = []
    for step in range(250):
        pair = pairs[rnd.random() < 0.3]
        cmd = command(rnd, jobs)
        for w in pair:
            w.send(cmd)
        got = [reply(w) for w in pair]
        history.append((cmd, got))
        assert got[0] == got[1], f"step {step}, {cmd!r}: beanstalkd {got[0]!r}, spoolq {got[1]!r}; " \
                                 f"before: {history[-8:-1]!r}"
        if got[0][0].startswith(b"INSERTED"):
            jobs.append(int(got[0][0].split()[1]))
        if step % 25 == 24:
            for what in ["stats", *(f"stats-tube {t}" for t in TUBES), "list-tubes-watched",
                         *(f"stats-job {j}" for j in sorted(set(jobs))[-12:])]:
                for w in pairs[0]:
                    w.send(what.encode() + b"\r\n")
                a, b = (reply(w) for w in pairs[0])
                assert a == b, f"step {step}, {what}: beanstalkd {a!r}, spoolq {b!r}"


@pytest.mark.parametrize("seed", range(4))
def test_random_pipelines_split_anywhere_get_beanstalkds_replies(seed: int) -> None:
    """Seeds alternate the event loop (uvloop, asyncio's) and the storage (memory, -b)."""
    if not Path(BEANSTALKD).exists():
        pytest.fail("beanstalkd is not installed (apt-get install beanstalkd; .ci/run does)")
    rnd = random.Random(1000 + seed)
    loop = "asyncio" if seed % 2 else "default"
    if seed % 4 >= 2:
        real = RealBeanstalkd("-b", tempfile.mkdtemp(prefix="real-bs-wal-"))
        ours = Beanstalkd("-b", tempfile.mkdtemp(prefix="bs-wal-"), "-f", "0", loop=loop)
    else:
        real, ours = RealBeanstalkd(), Beanstalkd(loop=loop)
    try:
        ws = [ready(real.connect()), ready(ours.connect())]
        jobs: list[int] = [0]
        for batch_no in range(30):
            batch = [command(rnd, jobs) for _ in range(rnd.randint(1, 25))]
            data = b"".join(batch)
            cuts = sorted(rnd.sample(range(1, len(data)), min(len(data) - 1, rnd.randint(0, 6))))
            pieces = [data[i:j] for i, j in zip([0, *cuts], [*cuts, len(data)], strict=True)]
            for w in ws:
                for piece in pieces:
                    w.send(piece)
            a = [reply(ws[0]) for _ in batch]
            b = [reply(ws[1]) for _ in batch]
            for cmd, x, y in zip(batch, a, b, strict=True):
                assert x == y, f"batch {batch_no}, {cmd!r}: beanstalkd {x!r}, spoolq {y!r}"
                if x[0].startswith(b"INSERTED"):
                    jobs.append(int(x[0].split()[1]))
    finally:
        real.stop()
        ours.cleanup()
    assert "Traceback" not in ours.log(), ours.log()
