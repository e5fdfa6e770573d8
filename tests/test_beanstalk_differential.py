"""The same command sequences sent to real beanstalkd and to spoolq-beanstalkd; replies compared.

Real beanstalkd (Debian's package, installed by .ci/run) runs on a free port in a temporary
directory. Volatile fields (pid, uptime, ids, rusage, hostname) are left out of the comparison.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .nodes import free_port
from .test_beanstalk_protocol import Beanstalkd, Wire, short_tmpdir, start  # noqa: F401 (the fixture below uses it)

BEANSTALKD = shutil.which("beanstalkd") or "/usr/bin/beanstalkd"


class RealBeanstalkd:
    def __init__(self, *args: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="real-bs-"))
        self.port = free_port()
        self.proc = subprocess.Popen([BEANSTALKD, "-l", "127.0.0.1", "-p", str(self.port), *args],
                                     cwd=self.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def connect(self) -> Wire:
        # the socket helper needs only an address and a process to poll (see test_beanstalk_protocol)
        return Wire(self.raw_socket())

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    unix = None

    def raw_socket(self, timeout: float = 10.0):  # type: ignore[no-untyped-def]
        return Beanstalkd.raw_socket(self, timeout)  # type: ignore[arg-type]

    def log(self) -> str:
        return ""

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def pair(start: Callable[..., Beanstalkd]) -> Iterator[tuple[Wire, Wire]]:  # noqa: F811
    if not Path(BEANSTALKD).exists():
        pytest.fail("beanstalkd is not installed (apt-get install beanstalkd; .ci/run does)")
    real = RealBeanstalkd()
    try:
        ours = start()
        yield real.connect(), ours.connect()
    finally:
        real.stop()


def both(pair: tuple[Wire, Wire], line: str | bytes) -> bytes:
    """Send ``line`` to both servers; their first reply lines must be equal; returns it."""
    real, ours = pair
    a, b = real.cmd(line), ours.cmd(line)
    assert a == b, f"{line!r}: beanstalkd {a!r}, spoolq {b!r}"
    return a


def test_number_parsing_matches(pair: tuple[Wire, Wire]) -> None:  # item 6
    for line in ("kick 1.5", "kick 1 ", "kick 99999999999", "kick -1", "kick +1", "kick 1x", "kick 4294967296",
                 "kick 18446744073709551616", "delete 1x", "delete -5", "touch 99 ", "peek 1 ", "stats-job 1.5",
                 "pause-tube default 1x", "pause-tube default -1"):
        both(pair, line)
    for w in pair:
        w.put(b"a")
    for line in ("reserve-with-timeout 1.5", "release 1 0 0", "reserve-with-timeout 0 ", "bury 1 0", "kick -1"):
        real, ours = pair
        a, b = real.cmd(line), ours.cmd(line)
        assert a.split()[0] == b.split()[0], line
        if a.startswith(b"RESERVED"):
            real.line(), ours.line()


def test_list_tubes_in_creation_order(pair: tuple[Wire, Wire]) -> None:  # item 7
    for w in pair:
        assert w.cmd("watch zz") == b"WATCHING 2"
        assert w.cmd("watch aa") == b"WATCHING 3"
        assert w.cmd("use mm") == b"USING mm"
    real, ours = pair
    assert real.yaml("list-tubes") == ours.yaml("list-tubes") == ["default", "zz", "aa", "mm"]


def test_watch_list_order_after_ignore(pair: tuple[Wire, Wire]) -> None:
    """beanstalkd moves the last tube watched into the place of the one ignored."""
    for w in pair:
        for t in ("a", "b", "c", "d"):
            w.cmd(f"watch {t}")
        assert w.cmd("ignore default") == b"WATCHING 4"
        assert w.cmd("ignore b") == b"WATCHING 3"
        w.cmd("watch e")
    real, ours = pair
    assert real.yaml("list-tubes-watched") == ours.yaml("list-tubes-watched") == ["d", "a", "c", "e"]


def test_quit_with_anything_after_it_closes(pair: tuple[Wire, Wire]) -> None:
    for w in pair:
        w.send(b"quit now\r\nstats\r\n")
        assert w.wait_closed() == b""


def test_a_freed_tube_starts_again_from_zero(pair: tuple[Wire, Wire]) -> None:
    """A tube nothing refers to any more (no job, no connection using or watching it) is freed with
    its counters and pause; made again, it starts from zero and comes last in list-tubes."""
    for w in pair:
        assert w.cmd("use t") == b"USING t"
        j = w.put(b"x")
        assert w.cmd("pause-tube t 500") == b"PAUSED"
        assert w.cmd("watch t") == b"WATCHING 2"
        assert w.cmd("use u") == b"USING u"
        assert w.cmd(f"delete {j}") == b"DELETED"
        assert w.cmd("ignore t") == b"WATCHING 1"  # the last reference: t is freed
        assert w.cmd("watch t") == b"WATCHING 2"  # and made again
        assert w.cmd("watch t") == b"WATCHING 2"
    real, ours = pair
    a, b = real.yaml("stats-tube t"), ours.yaml("stats-tube t")
    keys = ("total-jobs", "cmd-delete", "cmd-pause-tube", "pause", "current-watching")
    assert [a[k] for k in keys] == [b[k] for k in keys] == [0, 0, 0, 0, 1]
    assert real.yaml("list-tubes") == ours.yaml("list-tubes") == ["default", "u", "t"]
    for w in pair:  # not paused any more: a job of t is reserved at once
        assert w.cmd("use t") == b"USING t"
        j = w.put(b"y")
        assert w.job("reserve-with-timeout 0") == (j, b"y")


def test_delayed_jobs_put_together_come_in_put_order(pair: tuple[Wire, Wire]) -> None:
    for w in pair:
        assert w.cmd("list-tube-used") == b"USING default"  # started: bytes read early are timed from arrival
        w.send(b"".join(b"put 0 500 60 1\r\n%d\r\n" % i for i in range(6)))  # one pipeline, one read
        assert [w.line() for _ in range(6)] == [b"INSERTED %d" % j for j in range(1, 7)]
    real, ours = pair
    assert real.job("peek-delayed", b"FOUND") == ours.job("peek-delayed", b"FOUND") == (1, b"0")


@pytest.mark.parametrize("durable", [False, True], ids=["memory", "durable"])
def test_deadline_soon_at_once_for_a_ttr_of_one_second(start: Callable[..., Beanstalkd], durable: bool,  # noqa: F811
                                                        tmp_path: Path) -> None:
    """TTR 1 is all safety margin: the next reserve answers DEADLINE_SOON at once (a spool's lease runs a
    little past the deadline the client was given; the margin counts from the client's)."""
    if not Path(BEANSTALKD).exists():
        pytest.fail("beanstalkd is not installed (apt-get install beanstalkd; .ci/run does)")
    for d in ("real", "ours"):
        (tmp_path / d).mkdir()
    real = RealBeanstalkd(*(("-b", str(tmp_path / "real")) if durable else ()))
    try:
        ours = start(*(("-b", str(tmp_path / "ours"), "-f", "0") if durable else ()))
        for w in (real.connect(), ours.connect()):
            assert w.cmd("list-tube-used") == b"USING default"
            j = w.put(b"x", ttr=1)
            w.send(b"reserve\r\nreserve-with-timeout 0\r\n")  # the second within a millisecond of the first
            assert w.job_reply() == (j, b"x")
            assert w.line() == b"DEADLINE_SOON"
    finally:
        real.stop()


def test_version_and_os(pair: tuple[Wire, Wire]) -> None:  # item 3
    real, ours = pair
    a, b = real.yaml("stats"), ours.yaml("stats")
    assert str(b["version"]) == "1.13"
    assert str(a["os"]) == str(b["os"])
    assert set(a) <= set(b)


def test_no_attempt_limit(pair: tuple[Wire, Wire]) -> None:  # item 1
    for w in pair:
        j = w.put(b"x")
        for _ in range(22):
            assert w.job("reserve-with-timeout 0") == (j, b"x")
            assert w.cmd(f"release {j} 0 0") == b"RELEASED"
    real, ours = pair
    keys = ("state", "reserves", "releases", "buries")
    a, b = real.yaml("stats-job 1"), ours.yaml("stats-job 1")
    assert [a[k] for k in keys] == [b[k] for k in keys]


def test_kick_keeps_reserves(pair: tuple[Wire, Wire]) -> None:  # item 5
    for w in pair:
        j = w.put(b"x")
        w.job("reserve")
        assert w.cmd(f"bury {j} 0") == b"BURIED"
        assert w.cmd("kick 1") == b"KICKED 1"
        w.job("reserve")
        assert w.cmd(f"bury {j} 0") == b"BURIED"
        assert w.cmd(f"kick-job {j}") == b"KICKED"
    real, ours = pair
    keys = ("state", "reserves", "buries", "kicks")
    a, b = real.yaml("stats-job 1"), ours.yaml("stats-job 1")
    assert [a[k] for k in keys] == [b[k] for k in keys]


def test_restart_after_kill_keeps_what_beanstalkd_keeps() -> None:  # item 4
    """Both servers on a -b directory, the same history, kill -9, a restart on the same directory: ids,
    states, delays and every per-job counter read back the same."""
    if not Path(BEANSTALKD).exists():
        pytest.fail("beanstalkd is not installed (apt-get install beanstalkd; .ci/run does)")
    real_dir, our_dir = Path(tempfile.mkdtemp(prefix="real-bs-b-")), short_tmpdir()

    def real_server() -> tuple[subprocess.Popen[bytes], Wire]:
        r = RealBeanstalkd("-b", str(real_dir), "-f", "0")
        return r.proc, r.connect()

    def history(w: Wire) -> None:
        assert [w.put(b"delayed", delay=100), w.put(b"busy"), w.put(b"held")] == [1, 2, 3]
        assert w.job("reserve") == (2, b"busy")
        assert w.cmd("release 2 0 0") == b"RELEASED"
        assert w.job("reserve") == (2, b"busy")
        assert w.cmd("bury 2 7") == b"BURIED"
        assert w.cmd("kick 1") == b"KICKED 1"
        assert w.job("reserve") == (3, b"held")  # reserved when the server dies

    keys = ("id", "state", "pri", "delay", "ttr", "reserves", "timeouts", "releases", "buries", "kicks")
    try:
        proc, real = real_server()
        ours_srv = Beanstalkd("-b", str(our_dir), "-f", "0")
        ours = ours_srv.connect()
        for w in (real, ours):
            history(w)
        proc.kill()
        proc.wait(10)
        ours_srv.kill()
        proc, real = real_server()
        ours_srv2 = Beanstalkd("-b", str(our_dir), "-f", "0")
        ours = ours_srv2.connect()
        for j in (1, 2, 3):
            a, b = real.yaml(f"stats-job {j}"), ours.yaml(f"stats-job {j}")
            if j == 3:  # deliberately kept: beanstalkd's binlog forgets a reserve it never wrote (shows 0)
                assert (a["reserves"], b["reserves"]) == (0, 1)
                a["reserves"] = b["reserves"]
            assert [a[k] for k in keys] == [b[k] for k in keys], (j, a, b)
        for k in ("current-jobs-reserved", "current-jobs-ready", "current-jobs-delayed"):
            assert real.stats()[k] == ours.stats()[k], k
        assert real.put(b"next") == ours.put(b"next") == 4
        ours_srv2.cleanup()
    finally:
        proc.kill()
        proc.wait(10)
        shutil.rmtree(real_dir, ignore_errors=True)
        shutil.rmtree(our_dir, ignore_errors=True)
