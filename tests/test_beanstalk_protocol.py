"""The beanstalkd protocol byte for byte: a real `spoolq-beanstalkd` spoken to over raw sockets.

Every test starts its own ``spoolq-beanstalkd`` the way a beanstalkd client
suite starts the real one (``-l 127.0.0.1 -p PORT``, or ``-l unix:PATH``) and
talks to it with the exact bytes of ``doc/protocol.txt``: every command and
its replies, every error, TTR and its one-second safety margin, partial reads,
pipelining, bodies split across segments, bad input of every kind, stats with
the very keys of beanstalkd's formats and with real counts.

Waits on conditions have timeouts; the only sleeps are where time is the
scenario (a delay, a TTR, a pause) or where bytes must go out in separate
segments. A server that logs a traceback fails the test that used it.

The ``Beanstalkd`` process helper and the ``Wire`` client are also used by
``test_beanstalk_clients.py``.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from spoolq import Spool

from .conftest import PYTHON, python_env, wait_for
from .nodes import ServerProc, free_port

CRLF = b"\r\n"


def beanstalkd_command() -> list[str]:
    """The `spoolq-beanstalkd` executable (what a client suite's BEANSTALKD_PATH would name)."""
    here = Path(sys.executable).parent / "spoolq-beanstalkd"
    if here.exists():
        return [str(here)]
    found = shutil.which("spoolq-beanstalkd")
    if found:
        return [found]
    return [PYTHON, "-m", "spoolq", "beanstalkd"]


def short_tmpdir() -> Path:
    """A directory with a short path (a unix socket path must fit in 108 bytes)."""
    return Path(tempfile.mkdtemp(prefix="bs-", dir="/tmp"))


class Beanstalkd(ServerProc):
    """A `spoolq-beanstalkd` process: ``-l 127.0.0.1 -p PORT`` (or ``-l unix:PATH``) plus ``args``."""

    def __init__(self, *args: str, unix: str | None = None, port: int | None = None,
                 log_dir: Path | None = None, loop: str = "default") -> None:
        self.args = list(args)
        self.loop = loop
        self.unix = unix
        self.port = port if port is not None else (0 if unix else free_port())
        self._own_dir = log_dir is None
        self.dir = log_dir if log_dir is not None else short_tmpdir()
        self.log_path = self.dir / f"beanstalkd-{self.port or 'unix'}-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "ab")
        addr = ["-l", f"unix:{unix}"] if unix else ["-l", "127.0.0.1", "-p", str(self.port)]
        env = python_env()
        env.pop("SPOOLQ_LOOP", None)
        if loop == "asyncio":  # asyncio's own loop: the buffered read path (uvloop's is a plain Protocol)
            env["SPOOLQ_LOOP"] = "asyncio"
        self.proc = subprocess.Popen([*beanstalkd_command(), *addr, *self.args], env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def address(self) -> str | tuple[str, int]:
        return self.unix if self.unix else ("127.0.0.1", self.port)

    def raw_socket(self, timeout: float = 10.0) -> socket.socket:
        """A connected socket; retries while the server is still binding (fails after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"spoolq-beanstalkd exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.unix:
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    try:
                        s.connect(self.unix)
                    except OSError:
                        s.close()
                        raise
                    return s
                return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.005)

    def connect(self) -> Wire:
        return Wire(self.raw_socket())

    def stop(self, timeout: float = 10.0) -> int:
        return super().stop(timeout)

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


class Wire:
    """A raw beanstalkd connection: bytes out, lines and chunks in (every read has a timeout)."""

    def __init__(self, sock: socket.socket, timeout: float = 10.0) -> None:
        self.sock = sock
        self.sock.settimeout(timeout)
        self.buf = bytearray()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        data = self.sock.recv(1 << 16)
        if not data:
            raise EOFError(f"connection closed; unread: {bytes(self.buf)!r}")
        self.buf += data

    def line(self) -> bytes:
        while (i := self.buf.find(CRLF)) < 0:
            self._fill()
        out = bytes(self.buf[:i])
        del self.buf[:i + 2]
        return out

    def exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def chunk(self, n: int) -> bytes:
        data = self.exact(n + 2)
        assert data[-2:] == CRLF, data[-20:]
        return data[:-2]

    def cmd(self, line: bytes | str) -> bytes:
        """Send one command line; return the first reply line (without CRLF)."""
        self.send((line.encode() if isinstance(line, str) else line) + CRLF)
        return self.line()

    def job_reply(self, kind: bytes = b"RESERVED") -> tuple[int, bytes]:
        """Read a ``KIND <id> <bytes>`` reply and its body."""
        reply = self.line()
        parts = reply.split(b" ")
        assert parts[0] == kind and len(parts) == 3, reply
        return int(parts[1]), self.chunk(int(parts[2]))

    def job(self, line: str, kind: bytes = b"RESERVED") -> tuple[int, bytes]:
        self.send(line.encode() + CRLF)
        return self.job_reply(kind)

    def put(self, body: bytes, pri: int = 0, delay: int = 0, ttr: int = 60) -> int:
        reply = self.cmd(b"put %d %d %d %d\r\n%s" % (pri, delay, ttr, len(body), body))
        assert reply.startswith(b"INSERTED "), reply
        return int(reply.split()[1])

    def ok_reply(self) -> Any:
        reply = self.line()
        assert reply.startswith(b"OK "), reply
        return parse_yaml(self.chunk(int(reply[3:])))

    def yaml(self, line: str) -> Any:
        self.send(line.encode() + CRLF)
        return self.ok_reply()

    def stats(self) -> dict[str, Any]:
        return self.yaml("stats")  # type: ignore[no-any-return]

    def wait_closed(self, timeout: float = 5.0) -> bytes:
        """Read until the server closes; return what came before."""
        self.sock.settimeout(timeout)
        out = bytes(self.buf)
        self.buf.clear()
        while True:
            data = self.sock.recv(1 << 16)
            if not data:
                return out
            out += data

    def quiet(self, wait: float = 0.2) -> None:
        """Assert that nothing arrives within ``wait`` seconds."""
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(1 << 16)
        except TimeoutError:
            data = None
        finally:
            self.sock.settimeout(10.0)
        assert data is None and not self.buf, (bytes(self.buf), data)

    def close(self) -> None:
        self.sock.close()


def parse_yaml(data: bytes) -> Any:
    """beanstalkd's YAML: a list of names, or a flat dict of scalars (ints made ints, quotes removed)."""
    text = data.decode()
    assert text.startswith("---\n"), text
    lines = text[4:].splitlines()
    if lines and lines[0].startswith("- "):
        return [x[2:] for x in lines]
    out: dict[str, Any] = {}
    for x in lines:
        k, _, v = x.partition(": ")
        if v.startswith('"') and v.endswith('"'):
            out[k] = v[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        elif re.fullmatch(r"\d+", v):
            out[k] = int(v)
        else:
            out[k] = v
    return out


# The keys of beanstalkd's stats formats, in their order (prot.c: STATS_FMT, STATS_TUBE_FMT, STATS_JOB_FMT).
STATS_KEYS = [
    "current-jobs-urgent", "current-jobs-ready", "current-jobs-reserved", "current-jobs-delayed",
    "current-jobs-buried", "cmd-put", "cmd-peek", "cmd-peek-ready", "cmd-peek-delayed", "cmd-peek-buried",
    "cmd-reserve", "cmd-reserve-with-timeout", "cmd-delete", "cmd-release", "cmd-use", "cmd-watch",
    "cmd-ignore", "cmd-bury", "cmd-kick", "cmd-touch", "cmd-stats", "cmd-stats-job", "cmd-stats-tube",
    "cmd-list-tubes", "cmd-list-tube-used", "cmd-list-tubes-watched", "cmd-pause-tube", "job-timeouts",
    "total-jobs", "max-job-size", "current-tubes", "current-connections", "current-producers",
    "current-workers", "current-waiting", "total-connections", "pid", "version", "rusage-utime",
    "rusage-stime", "uptime", "binlog-oldest-index", "binlog-current-index", "binlog-records-migrated",
    "binlog-records-written", "binlog-max-size", "draining", "id", "hostname", "os", "platform",
]
STATS_TUBE_KEYS = [
    "name", "current-jobs-urgent", "current-jobs-ready", "current-jobs-reserved", "current-jobs-delayed",
    "current-jobs-buried", "total-jobs", "current-using", "current-watching", "current-waiting",
    "cmd-delete", "cmd-pause-tube", "pause", "pause-time-left",
]
STATS_JOB_KEYS = [
    "id", "tube", "state", "pri", "age", "delay", "ttr", "time-left", "file", "reserves", "timeouts",
    "releases", "buries", "kicks",
]


# -- fixtures --------------------------------------------------------------------------------


def _expected_loop(loop: str) -> str:
    """The loop module a server started with ``loop`` names in its start-up line."""
    if loop == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


@pytest.fixture(params=["default", "asyncio"])
def start(request: pytest.FixtureRequest) -> Iterator[Callable[..., Beanstalkd]]:
    """Start `spoolq-beanstalkd` processes; all are stopped at the end, and none may have logged a traceback.

    Every test using it runs twice: on the default event loop (uvloop, whose reads come to a plain
    ``Protocol``) and on asyncio's own (``SPOOLQ_LOOP=asyncio``: the buffered read path). Each server's
    start-up line must name the loop it was meant to run on."""
    procs: list[Beanstalkd] = []
    loop: str = request.param

    def run(*args: str, unix: bool = False) -> Beanstalkd:
        path = str(short_tmpdir() / "bs.sock") if unix else None
        b = Beanstalkd("-V", *args, unix=path, loop=loop)  # -V: the start-up line names the loop
        procs.append(b)
        return b

    yield run
    logs = []
    for b in procs:
        # a server stopped while still starting (a test that only connects) has not logged its loop yet
        with contextlib.suppress(AssertionError):  # (checked below, once every server is stopped)
            wait_for(lambda b=b: "serving the beanstalkd protocol" in b.log() or b.proc.poll() is not None, 30)
        b.stop()
        logs.append(b.log())
        shutil.rmtree(b.dir, ignore_errors=True)
        if b.unix:
            shutil.rmtree(Path(b.unix).parent, ignore_errors=True)
    for text in logs:
        assert "Traceback" not in text, text
        assert f"event loop {_expected_loop(loop)}" in text, text


@pytest.fixture
def bs(start: Callable[..., Beanstalkd]) -> Beanstalkd:
    return start()


@pytest.fixture
def w(bs: Beanstalkd) -> Iterator[Wire]:
    """A connection to ``bs``, once the server answers (tests of timing must not time its start-up)."""
    c = bs.connect()
    assert c.cmd("list-tube-used") == b"USING default"
    yield c
    c.close()


def elapsed(since: float) -> float:
    return time.monotonic() - since


# -- every command ---------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_put_reserve_delete_over_tcp_and_unix(start: Callable[..., Beanstalkd], transport: str) -> None:
    bs = start(unix=transport == "unix")
    w = bs.connect()
    assert w.cmd(b"put 0 0 60 5\r\nhello") == b"INSERTED 1"  # a fresh server numbers jobs from 1
    assert w.cmd(b"put 0 0 60 0\r\n") == b"INSERTED 2"  # an empty body
    assert w.job("reserve") == (1, b"hello")
    assert w.job("reserve") == (2, b"")
    assert w.cmd("delete 1") == b"DELETED"
    assert w.cmd("delete 1") == b"NOT_FOUND"
    assert w.cmd("delete 2") == b"DELETED"
    assert w.cmd("reserve-with-timeout 0") == b"TIMED_OUT"
    w.close()
    if transport == "unix":
        assert bs.stop() == 0
        assert not os.path.exists(bs.unix or ""), "the unix socket is removed at exit"


def test_use_watch_ignore_and_the_lists(bs: Beanstalkd, w: Wire) -> None:
    assert w.cmd("list-tube-used") == b"USING default"
    assert w.yaml("list-tubes-watched") == ["default"]
    assert w.yaml("list-tubes") == ["default"]
    assert w.cmd("use jobs") == b"USING jobs"
    assert w.cmd("list-tube-used") == b"USING jobs"
    assert w.cmd("watch jobs") == b"WATCHING 2"
    assert w.cmd("watch jobs") == b"WATCHING 2"  # already watched
    assert w.cmd("watch more") == b"WATCHING 3"
    assert w.yaml("list-tubes-watched") == ["default", "jobs", "more"]
    assert w.cmd("ignore default") == b"WATCHING 2"
    assert w.cmd("ignore nothing-here") == b"WATCHING 2"  # not watched: nothing to do
    assert w.cmd("ignore more") == b"WATCHING 1"
    assert w.cmd("ignore jobs") == b"NOT_IGNORED"  # the last one stays
    assert w.yaml("list-tubes-watched") == ["jobs"]
    assert sorted(w.yaml("list-tubes")) == ["default", "jobs"]

    # jobs go to the used tube; reserve takes from the watched ones only
    jid = w.put(b"in jobs")
    assert w.cmd("use other") == b"USING other"
    other = w.put(b"in other")
    assert sorted(w.yaml("list-tubes")) == ["default", "jobs", "other"]
    assert w.job("reserve-with-timeout 0") == (jid, b"in jobs")
    assert w.cmd("reserve-with-timeout 0") == b"TIMED_OUT"
    assert w.cmd("watch other") == b"WATCHING 2"
    assert w.job("reserve-with-timeout 0") == (other, b"in other")

    # a tube nobody uses, watches, or fills is gone
    assert w.cmd(f"delete {jid}") == b"DELETED"
    assert w.cmd("use default") == b"USING default"
    assert w.cmd("ignore jobs") == b"WATCHING 1"
    assert sorted(w.yaml("list-tubes")) == ["default", "other"]
    assert w.cmd("stats-tube jobs") == b"NOT_FOUND"
    w.send(b"quit\r\n")
    assert w.wait_closed() == b""
    assert sorted(bs.connect().yaml("list-tubes")) == ["default", "other"]  # 'other' still holds a job


def test_peek_commands(w: Wire) -> None:
    assert w.cmd("peek 1") == b"NOT_FOUND"
    assert w.cmd("peek-ready") == b"NOT_FOUND"
    assert w.cmd("peek-delayed") == b"NOT_FOUND"
    assert w.cmd("peek-buried") == b"NOT_FOUND"
    a = w.put(b"ready one", pri=10)
    b = w.put(b"more urgent", pri=5)
    d1 = w.put(b"delayed long", delay=200)
    d2 = w.put(b"delayed short", delay=100)
    assert w.job(f"peek {a}", b"FOUND") == (a, b"ready one")
    assert w.job(f"peek {d1}", b"FOUND") == (d1, b"delayed long")
    assert w.job("peek-ready", b"FOUND") == (b, b"more urgent")
    assert w.job("peek-delayed", b"FOUND") == (d2, b"delayed short")
    assert w.job("reserve") == (b, b"more urgent")
    assert w.job(f"peek {b}", b"FOUND") == (b, b"more urgent")  # a reserved job can be peeked too
    assert w.cmd(f"bury {b} 3") == b"BURIED"
    assert w.job("peek-buried", b"FOUND") == (b, b"more urgent")
    assert w.job("peek-ready", b"FOUND") == (a, b"ready one")
    # peek-ready/-delayed/-buried look at the used tube only
    assert w.cmd("use elsewhere") == b"USING elsewhere"
    for cmd in ("peek-ready", "peek-delayed", "peek-buried"):
        assert w.cmd(cmd) == b"NOT_FOUND"
    assert w.job(f"peek {a}", b"FOUND") == (a, b"ready one")  # peek <id> looks everywhere


def test_priorities_and_fifo_within_a_priority(w: Wire) -> None:
    ids = {}
    for body, pri in [(b"c1", 3), (b"a1", 1), (b"c2", 3), (b"z", 4294967295), (b"a2", 1), (b"zero", 0)]:
        ids[body] = w.put(body, pri=pri)
    got = [w.job("reserve-with-timeout 0")[1] for _ in range(6)]
    assert got == [b"zero", b"a1", b"a2", b"c1", b"c2", b"z"]
    assert w.yaml(f"stats-job {ids[b'z']}")["pri"] == 4294967295


def test_release_bury_kick_and_touch(w: Wire) -> None:
    j = w.put(b"job", pri=100)
    assert w.cmd(f"release {j} 1 0") == b"NOT_FOUND"  # not reserved
    assert w.cmd(f"bury {j} 1") == b"NOT_FOUND"
    assert w.cmd(f"touch {j}") == b"NOT_FOUND"
    assert w.job("reserve") == (j, b"job")
    assert w.cmd(f"touch {j}") == b"TOUCHED"
    assert w.cmd(f"release {j} 7 0") == b"RELEASED"
    st = w.yaml(f"stats-job {j}")
    assert (st["state"], st["pri"], st["releases"], st["reserves"]) == ("ready", 7, 1, 1)
    assert w.job("reserve") == (j, b"job")
    assert w.cmd(f"release {j} 8 100") == b"RELEASED"  # with a delay: delayed
    st = w.yaml(f"stats-job {j}")
    assert (st["state"], st["pri"], st["delay"], st["releases"]) == ("delayed", 8, 100, 2)
    assert 98 <= st["time-left"] <= 100
    assert w.cmd(f"kick-job {j}") == b"KICKED"  # a delayed job can be kicked
    assert w.yaml(f"stats-job {j}")["state"] == "ready"
    assert w.job("reserve") == (j, b"job")
    assert w.cmd(f"bury {j} 9") == b"BURIED"
    st = w.yaml(f"stats-job {j}")
    assert (st["state"], st["pri"], st["buries"]) == ("buried", 9, 1)
    assert w.cmd(f"release {j} 1 0") == b"NOT_FOUND"  # buried: not reserved any more
    assert w.cmd(f"kick-job {j}") == b"KICKED"  # so can a buried one
    assert w.cmd(f"kick-job {j}") == b"NOT_FOUND"  # ready: not kickable
    st = w.yaml(f"stats-job {j}")
    assert (st["state"], st["pri"], st["kicks"]) == ("ready", 9, 2)

    # kick takes the buried jobs first, oldest first, up to the bound; delayed ones only when none is buried
    d = w.put(b"delayed", delay=100)
    buried = []
    for i in range(3):
        x = w.put(b"b%d" % i, pri=0)
        assert w.job("reserve") == (x, b"b%d" % i)
        assert w.cmd(f"bury {x} 0") == b"BURIED"
        buried.append(x)
    assert w.cmd("kick 2") == b"KICKED 2"
    assert [w.yaml(f"stats-job {x}")["state"] for x in buried] == ["ready", "ready", "buried"]
    assert w.cmd("kick 0") == b"KICKED 0"
    assert w.cmd("kick 5") == b"KICKED 1"
    assert w.yaml(f"stats-job {d}")["state"] == "delayed"
    assert w.cmd("kick 5") == b"KICKED 1"  # no buried job left: delayed ones
    assert w.yaml(f"stats-job {d}")["state"] == "ready"
    assert w.cmd("kick 5") == b"KICKED 0"
    assert w.yaml("stats-tube default")["current-jobs-ready"] == 5
    assert [w.yaml(f"stats-job {x}")["kicks"] for x in buried] == [1, 1, 1]
    st = w.stats()
    assert (st["cmd-kick"], st["current-jobs-buried"], st["current-jobs-delayed"]) == (5, 0, 0)  # kick-job: not a kick


def test_kick_counts_kicked_delayed_jobs(w: Wire) -> None:
    d = w.put(b"d", delay=100)
    assert w.cmd("kick 1") == b"KICKED 1"
    assert w.yaml(f"stats-job {d}")["kicks"] == 1


def test_delete_ready_delayed_buried_and_reserved_jobs(bs: Beanstalkd, w: Wire) -> None:
    ready = w.put(b"r")
    delayed = w.put(b"d", delay=100)
    held = w.put(b"h")
    buried = w.put(b"b")
    assert w.job(f"reserve-job {held}") == (held, b"h")
    assert w.job(f"reserve-job {buried}") == (buried, b"b")
    assert w.cmd(f"bury {buried} 0") == b"BURIED"
    other = bs.connect()
    assert other.cmd(f"delete {held}") == b"NOT_FOUND"  # reserved by another connection
    assert other.cmd(f"delete {ready}") == b"DELETED"
    assert other.cmd(f"delete {delayed}") == b"DELETED"
    assert other.cmd(f"delete {buried}") == b"DELETED"
    assert w.cmd(f"delete {held}") == b"DELETED"
    for j in (ready, delayed, held, buried):
        assert w.cmd(f"peek {j}") == b"NOT_FOUND"
        assert w.cmd(f"stats-job {j}") == b"NOT_FOUND"
    st = w.stats()
    assert st["cmd-delete"] == 5 and st["total-jobs"] == 4
    assert sum(st[f"current-jobs-{k}"] for k in ("ready", "reserved", "delayed", "buried")) == 0
    assert w.yaml("stats-tube default")["cmd-delete"] == 4  # only the deletes that deleted something


def test_reserve_job(bs: Beanstalkd, w: Wire) -> None:
    a = w.put(b"a")
    d = w.put(b"d", delay=100)
    b = w.put(b"b")
    assert w.job(f"reserve-job {b}") == (b, b"b")
    assert w.cmd(f"reserve-job {b}") == b"NOT_FOUND"  # already reserved (by us)
    assert w.job(f"reserve-job {d}") == (d, b"d")  # a delayed job can be reserved by id
    assert w.cmd(f"bury {d} 0") == b"BURIED"
    assert w.job(f"reserve-job {d}") == (d, b"d")  # so can a buried one
    other = bs.connect()
    assert other.cmd(f"reserve-job {d}") == b"NOT_FOUND"  # reserved by someone else
    assert other.cmd("reserve-job 999") == b"NOT_FOUND"
    assert other.job("reserve-with-timeout 0") == (a, b"a")
    assert other.cmd("reserve-with-timeout 0") == b"TIMED_OUT"
    st = w.stats()
    assert (st["current-jobs-reserved"], st["current-workers"]) == (3, 2)
    assert w.yaml(f"stats-job {d}")["state"] == "reserved"


def test_reserve_waits_for_a_put_from_another_connection(bs: Beanstalkd, w: Wire) -> None:
    w.send(b"reserve\r\n")
    w.quiet(0.2)
    assert bs.connect().yaml("stats")["current-waiting"] == 1
    producer = bs.connect()
    t0 = time.monotonic()
    j = producer.put(b"wake up")
    assert w.job_reply() == (j, b"wake up")
    assert elapsed(t0) < 0.5
    assert producer.stats()["current-waiting"] == 0


def test_reserve_with_timeout(w: Wire) -> None:
    # Lower bounds are the protocol (never early); upper bounds only tell a different behaviour apart
    # (a wait where none is due, a whole extra second, a wake-up at the timeout instead of when the job
    # is ready) with room for a busy machine's scheduling delays.
    t0 = time.monotonic()
    assert w.cmd("reserve-with-timeout 0") == b"TIMED_OUT"
    assert elapsed(t0) < 1.0  # no wait: 1 s is the shortest real one
    t0 = time.monotonic()
    assert w.cmd("reserve-with-timeout 1") == b"TIMED_OUT"
    assert 1.0 <= elapsed(t0) < 2.0  # not early, and not a second late
    d = w.put(b"soon", delay=1)
    t0 = time.monotonic()
    # a delayed job becomes ready while we wait: answered then, not at the timeout
    assert w.job("reserve-with-timeout 5") == (d, b"soon")
    assert 0.9 <= elapsed(t0) < 4.0
    assert w.stats()["cmd-reserve-with-timeout"] == 3


def test_ttr_safety_margin_expiry_and_the_old_holder(bs: Beanstalkd, w: Wire) -> None:
    j = w.put(b"slow work", ttr=2)
    t0 = time.monotonic()
    assert w.job("reserve") == (j, b"slow work")
    st = w.yaml(f"stats-job {j}")
    assert (st["state"], st["ttr"], st["reserves"]) == ("reserved", 2, 1)
    assert st["time-left"] in (1, 2)
    # waiting for another job: DEADLINE_SOON when the last second of the TTR begins
    assert w.cmd("reserve-with-timeout 10") == b"DEADLINE_SOON"
    assert 0.95 <= elapsed(t0) < 1.9  # at the margin: not early, and not when the TTR runs out
    assert w.cmd("reserve-with-timeout 0") == b"DEADLINE_SOON"  # inside the margin: at once
    t1 = time.monotonic()
    assert w.cmd(f"touch {j}") == b"TOUCHED"  # two more seconds
    assert w.cmd("reserve") == b"DEADLINE_SOON"
    assert 0.95 <= elapsed(t1) < 1.9
    # nobody touches it: after the TTR it is ready again and another connection gets it
    other = bs.connect()
    assert other.job("reserve-with-timeout 5") == (j, b"slow work")
    assert 1.9 <= elapsed(t1) <= 2.3
    st = other.yaml(f"stats-job {j}")
    assert (st["state"], st["reserves"], st["timeouts"]) == ("reserved", 2, 1)
    assert other.stats()["job-timeouts"] == 1
    # the old holder has lost it
    for cmd in (f"delete {j}", f"touch {j}", f"release {j} 0 0", f"bury {j} 0"):
        assert w.cmd(cmd) == b"NOT_FOUND", cmd
    assert w.cmd("reserve-with-timeout 0") == b"TIMED_OUT"  # no reservation left: no DEADLINE_SOON
    assert other.cmd(f"delete {j}") == b"DELETED"


def test_deadline_soon_only_when_nothing_is_ready(w: Wire) -> None:
    a = w.put(b"a", ttr=0)  # ttr 0 is raised to 1 second: all of it is the safety margin
    b = w.put(b"b")
    assert w.yaml(f"stats-job {a}")["ttr"] == 1
    assert w.job("reserve") == (a, b"a")
    assert w.job("reserve") == (b, b"b")  # a job is ready: no DEADLINE_SOON
    assert w.cmd("reserve") == b"DEADLINE_SOON"
    assert w.cmd(f"delete {a}") in (b"DELETED", b"NOT_FOUND")  # may have timed out meanwhile
    assert w.cmd(f"release {b} 0 0") == b"RELEASED"


def test_disconnect_releases_reservations_at_once(bs: Beanstalkd, w: Wire) -> None:
    ids = [w.put(b"job %d" % i) for i in range(3)]
    holder = bs.connect()
    got = [holder.job("reserve")[0] for _ in range(3)]
    assert got == ids
    assert w.cmd("reserve-with-timeout 0") == b"TIMED_OUT"
    w.send(b"reserve-with-timeout 30\r\n")
    t0 = time.monotonic()
    holder.close()
    assert w.job_reply()[0] == ids[0]
    assert elapsed(t0) < 0.5  # not after the 60 s TTR
    assert w.job("reserve-with-timeout 0")[0] == ids[1]
    st = w.stats()
    assert (st["current-jobs-ready"], st["current-jobs-reserved"], st["current-connections"]) == (1, 2, 1)


def test_disconnect_mid_body_creates_no_job_and_others_are_served(bs: Beanstalkd, w: Wire) -> None:
    waiting = bs.connect()
    waiting.send(b"reserve\r\n")
    bad = bs.connect()
    bad.send(b"put 0 0 60 100\r\n" + b"x" * 50)
    wait_for(lambda: w.stats()["cmd-put"] == 1)
    bad.close()
    wait_for(lambda: w.stats()["current-connections"] == 2)
    st = w.stats()
    assert (st["total-jobs"], st["current-jobs-ready"], st["current-jobs-reserved"]) == (0, 0, 0)
    waiting.quiet(0.1)
    j = w.put(b"real")
    assert waiting.job_reply() == (j, b"real")
    assert j == 1  # the half-sent job took no id


def test_half_closed_connection_gets_every_reply(bs: Beanstalkd, w: Wire) -> None:
    c = bs.connect()
    c.send(b"put 0 0 60 1\r\na\r\nput 0 0 60 1\r\nb\r\nput 0 0 60 1\r\nc\r\nlist-tube-used\r\n")
    c.sock.shutdown(socket.SHUT_WR)
    assert c.wait_closed() == b"INSERTED 1\r\nINSERTED 2\r\nINSERTED 3\r\nUSING default\r\n"
    # a reserve on a half-closed connection times out at once (protocol.txt), instead of waiting
    assert w.job("reserve") == (1, b"a")
    assert w.job("reserve") == (2, b"b")
    assert w.job("reserve") == (3, b"c")
    c = bs.connect()
    t0 = time.monotonic()
    c.send(b"reserve\r\n")
    c.sock.shutdown(socket.SHUT_WR)
    assert c.wait_closed() == b"TIMED_OUT\r\n"
    assert elapsed(t0) < 0.5


def test_quit(bs: Beanstalkd, w: Wire) -> None:
    w.send(b"put 0 0 60 1\r\nq\r\nquit\r\nstats\r\n")
    assert w.wait_closed() == b"INSERTED 1\r\n"  # commands after quit are not run
    c = bs.connect()
    assert c.stats()["cmd-stats"] == 1


# -- bytes on the wire -------------------------------------------------------------------------


def test_commands_sent_one_byte_at_a_time(w: Wire) -> None:
    w.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    data = b"use slow\r\nput 5 0 60 7\r\nby\r\nte!\r\nwatch slow\r\nreserve\r\n"
    for i in range(len(data)):
        w.send(data[i:i + 1])
        if i % 7 == 0:
            time.sleep(0.001)  # separate segments
    assert w.line() == b"USING slow"
    assert w.line() == b"INSERTED 1"
    assert w.line() == b"WATCHING 2"
    assert w.job_reply() == (1, b"by\r\nte!")


def test_pipelined_commands_answer_in_order(bs: Beanstalkd, w: Wire) -> None:
    out = bytearray()
    expect: list[bytes] = []
    for i in range(40):
        out += b"put %d 0 60 %d\r\n%s\r\n" % (i % 3, len(b"body %d" % i), b"body %d" % i)
        expect.append(b"INSERTED %d" % (i + 1))
        if i % 10 == 9:
            out += b"use t%d\r\nlist-tube-used\r\npeek %d\r\nbogus\r\n" % (i, i + 1)
            expect += [b"USING t%d" % i, b"USING t%d" % i, b"FOUND %d %d" % (i + 1, len(b"body %d" % i)),
                       b"UNKNOWN_COMMAND"]
    out += b"watch t9\r\nwatch t19\r\nreserve\r\nreserve-with-timeout 0\r\nstats-tube t9\r\n"
    w.send(bytes(out))
    for i, line in enumerate(expect):
        got = w.line()
        assert got == line, (i, got, line)
        if line.startswith(b"FOUND"):
            assert w.chunk(int(line.split()[2])) == b"body %d" % (int(line.split()[1]) - 1)
    assert w.line() == b"WATCHING 2"
    assert w.line() == b"WATCHING 3"
    assert w.job_reply() == (1, b"body 0")  # default, priority 0, first in
    assert w.job_reply() == (4, b"body 3")
    st = w.ok_reply()
    assert (st["name"], st["current-jobs-ready"], st["total-jobs"]) == ("t9", 10, 10)


def test_puts_pipelined_from_many_connections_at_once(bs: Beanstalkd) -> None:
    conns = [bs.connect() for _ in range(8)]
    for n, c in enumerate(conns):
        c.send(b"".join(b"put 0 0 60 %d\r\n%s\r\nlist-tube-used\r\n" % (len(b"c%d-%d" % (n, i)), b"c%d-%d" % (n, i))
                        for i in range(25)))
    ids: list[int] = []
    for c in conns:
        mine = []
        for _ in range(25):
            reply = c.line()
            assert reply.startswith(b"INSERTED "), reply
            mine.append(int(reply.split()[1]))
            assert c.line() == b"USING default"
        assert mine == sorted(mine)
        ids += mine
    assert sorted(ids) == list(range(1, 201))
    bodies = {conns[0].job(f"peek {j}", b"FOUND")[1] for j in ids}
    assert len(bodies) == 200


def test_body_split_across_many_segments(w: Wire) -> None:
    w.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    body = os.urandom(60000)
    data = b"put 0 0 60 %d\r\n" % len(body) + body + CRLF + b"reserve\r\n"
    for i in range(0, len(data), 1000):
        w.send(data[i:i + 1000])
        time.sleep(0.0005)  # separate segments
    assert w.line() == b"INSERTED 1"
    assert w.job_reply() == (1, body)


@pytest.mark.parametrize("body", [b"a\r\nb", b"\r\n", b"\r\n\r\n" * 10, bytes(range(256)), b"\0" * 100,
                                  b"put 0 0 60 1\r\nx\r\n", "τεστ ✓".encode()])
def test_bodies_are_opaque_bytes(w: Wire, body: bytes) -> None:
    j = w.put(body)
    assert w.job(f"peek {j}", b"FOUND") == (j, body)
    assert w.job("reserve") == (j, body)
    assert w.cmd("list-tube-used") == b"USING default"  # nothing of the body was taken as a command


def test_job_too_big_boundary_and_the_connection_goes_on(start: Callable[..., Beanstalkd]) -> None:
    bs = start()
    w = bs.connect()
    assert w.stats()["max-job-size"] == 65535
    j = w.put(b"m" * 65535)
    assert w.cmd(b"put 0 0 60 65536\r\n" + b"x" * 65536) == b"JOB_TOO_BIG"
    assert w.cmd("list-tube-used") == b"USING default"  # the body was skipped, not read as commands
    w.send(b"put 0 0 60 70000\r\n" + b"y" * 30000)  # the answer comes once the whole body is thrown away
    w.quiet(0.1)
    w.send(b"y" * 40000 + CRLF)
    assert w.line() == b"JOB_TOO_BIG"
    assert w.job(f"peek {j}", b"FOUND") == (j, b"m" * 65535)
    st = w.stats()
    assert (st["cmd-put"], st["total-jobs"], st["current-jobs-ready"], st["current-producers"]) == (3, 1, 1, 1)
    assert w.cmd(b"put 0 0 60 4294967296") == b"BAD_FORMAT"  # beyond u32: not even a size

    big = start("-z", "100000")
    w = big.connect()
    assert w.stats()["max-job-size"] == 100000
    body = os.urandom(100000)
    j = w.put(body)
    assert w.cmd(b"put 0 0 60 100001\r\n" + b"x" * 100001) == b"JOB_TOO_BIG"
    assert w.job("reserve") == (j, body)


def test_expected_crlf(w: Wire) -> None:
    w.send(b"put 0 0 60 3\r\nabcXY")
    assert w.line() == b"EXPECTED_CRLF"
    w.send(b"put 0 0 60 3\r\nabc\n\r")
    assert w.line() == b"EXPECTED_CRLF"
    assert w.cmd("list-tube-used") == b"USING default"
    st = w.stats()
    assert (st["cmd-put"], st["total-jobs"], st["current-jobs-ready"]) == (2, 0, 0)


def test_drain_mode_after_sigusr1(bs: Beanstalkd, w: Wire) -> None:
    j = w.put(b"before")
    assert w.stats()["draining"] == "false"
    bs.signal(signal.SIGUSR1)
    wait_for(lambda: w.stats()["draining"] == "true")
    assert w.cmd(b"put 0 0 60 5\r\nafter") == b"DRAINING"
    w.send(b"put 0 0 60 3\r\nabcXY")
    assert w.line() == b"EXPECTED_CRLF"  # the body is still checked first
    assert w.job("reserve") == (j, b"before")  # everything else still works
    assert w.cmd(f"delete {j}") == b"DELETED"
    st = w.stats()
    assert (st["total-jobs"], st["cmd-put"]) == (1, 3)
    assert bs.stop() == 0


# -- bad input -----------------------------------------------------------------------------------


BAD_FORMAT_LINES = [
    # numbers: missing, negative, not decimal, beyond their range, trailing garbage
    "put 0 0 60", "put -1 0 60 1", "put 0 -1 60 1", "put 0 0 -1 1", "put x 0 60 1", "put 0 0 60 x",
    "put 4294967296 0 60 1", "put 0 4294967296 60 1", "put 0 0 4294967296 1", "put 0 0 60 1 x", "put 0 0 60 1 ",
    "put 0 0 60 99999999999999999999999", "put 0x1 0 60 1", "put 1e3 0 60 1", "put +1 0 60 1",
    "reserve ", "reserve x", "reserve-jobs 1", "reserve-with-timeout", "reserve-with-timeout x",
    "reserve-job", "reserve-job x",
    "delete x", "delete -1", "delete 1 2", "delete 1x", "delete 18446744073709551616", "delete ",
    "release 1", "release 1 2", "release 1 2 x", "release 1 4294967296 0", "bury 1", "bury 1 x", "touch x",
    "kick x", "kick ", "kick-job x", "peek x", "peek-ready x", "peek-delayed x", "peek-buried x",
    "stats x", "stats-job", "stats-job x", "stats-tube", "list-tubes x", "list-tube-used x",
    "list-tubes-watched x",
    # names: empty, too long, bad characters, a leading '-', anything around them
    "use ", "use -x", "use a b", "use a*b", "use a!", "use  x", "use x ", "use \xf1",
    "watch -x", "watch a:b", "ignore a,b", "stats-tube -x", "stats-tube a b",
    "use " + "a" * 201, "watch " + "a" * 201, "ignore " + "a" * 201, "stats-tube " + "a" * 201,
    "pause-tube", "pause-tube x", "pause-tube x y", "pause-tube x -1", "pause-tube -x 1",
    "pause-tube x 4294967296", "pause-tube x 1 ",
    # kick and reserve-with-timeout read their number as strtoul/strtol do: only no digits is bad
    "kick 18446744073709551616", "reserve-with-timeout ",
]


def test_kick_and_reserve_timeout_read_numbers_like_strtoul(w: Wire) -> None:
    # issue 10 item 6: beanstalkd answers these (checked against beanstalkd 1.12 in
    # test_beanstalk_differential.py); spoolq said BAD_FORMAT
    for line in ("kick 1.5", "kick 1 ", "kick 99999999999", "kick -1", "kick +1", "kick 1x", "kick 4294967296"):
        assert w.cmd(line) == b"KICKED 0", line
    j = w.put(b"a")
    assert w.job("reserve-with-timeout 1.5") == (j, b"a")
    assert w.cmd(f"release {j} 0 0") == b"RELEASED"
    assert w.job("reserve-with-timeout 0 ") == (j, b"a")
    assert w.cmd(f"bury {j} 0") == b"BURIED"
    assert w.cmd("kick -1") == b"KICKED 1"  # -1 is the largest bound, as strtoul makes it



def test_bad_format(w: Wire) -> None:
    w.send(b"".join(x.encode() + CRLF for x in BAD_FORMAT_LINES))
    for line in BAD_FORMAT_LINES:
        assert w.line() == b"BAD_FORMAT", line
    assert w.cmd("list-tube-used") == b"USING default"  # nothing changed, the connection goes on
    st = w.stats()
    # a put line whose numbers read well counts, even with garbage after them (as in beanstalkd)
    assert (st["total-jobs"], st["cmd-use"], st["cmd-put"], st["current-producers"]) == (0, 0, 2, 0)
    # a put whose line is bad leaves its "body" to be read as the next command
    assert w.cmd(b"put 0 0 60 1 x\r\nstats-tube default") == b"BAD_FORMAT"
    assert w.ok_reply()["name"] == "default"


def test_unknown_commands(w: Wire) -> None:
    # a command is its name and a space: "delete" alone is no command (but "stats-tube" alone reads as
    # a malformed "stats", and "reserve-jobs" as a malformed "reserve": BAD_FORMAT, as in beanstalkd)
    lines = [b"", b"foo", b"PUT 0 0 60 1", b"Stats", b" stats", b"puts 0 0 60 1", b"put", b"delete", b"bury",
             b"kick", b"kick-job", b"touch", b"release", b"use", b"watch", b"ignore", b"peek", b"\xff\xfe",
             b"list", b"peek-"]
    w.send(b"".join(x + CRLF for x in lines))
    for x in lines:
        assert w.line() == b"UNKNOWN_COMMAND", x
    assert w.cmd("list-tube-used") == b"USING default"
    assert w.stats()["total-jobs"] == 0


def test_garbage_lines(bs: Beanstalkd, w: Wire) -> None:
    rng = random.Random(1234)
    junk = bytes(b for b in range(256) if b not in b"\r\n")
    lines = [bytes(rng.choice(junk) for _ in range(rng.randrange(1, 200))) for _ in range(200)]
    lines = [x for x in lines if not x.startswith((b"quit", b"put ", b"reserve"))]
    w.send(b"".join(x + CRLF for x in lines))
    for x in lines:
        assert w.line() in (b"UNKNOWN_COMMAND", b"BAD_FORMAT"), x
    assert w.cmd("list-tube-used") == b"USING default"
    other = bs.connect()  # and everybody else is still served
    assert other.put(b"fine") == 1


def test_nul_bytes_in_a_command_line(w: Wire) -> None:
    for line in (b"stats\0", b"use a\0b", b"\0", b"delete 1\0", b"put 0 0 60 1\0"):
        assert w.cmd(line) == b"BAD_FORMAT", line
    j = w.put(b"\0a\0")  # in a body they are just bytes
    assert w.job("reserve") == (j, b"\0a\0")


def test_overlong_lines(w: Wire) -> None:
    # 224 bytes with the CRLF is the longest line; one byte more is BAD_FORMAT
    assert len(b"delete " + b"0" * 214 + b"9" + CRLF) == 224
    assert w.cmd(b"delete " + b"0" * 214 + b"9") == b"NOT_FOUND"
    assert w.cmd(b"delete " + b"0" * 215 + b"9") == b"BAD_FORMAT"
    assert w.cmd(b"use " + b"a" * 300) == b"BAD_FORMAT"
    # a huge line without any CRLF is thrown away as it comes, then answered once
    w.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for _ in range(50):
        w.send(b"z" * 2000)
    w.send(b"\r")
    w.quiet(0.1)
    w.send(b"\nlist-tube-used\r\n")  # the CRLF split across two segments still ends the line
    assert w.line() == b"BAD_FORMAT"
    assert w.line() == b"USING default"
    w.quiet(0.1)


def test_tube_names(bs: Beanstalkd, w: Wire) -> None:
    longest = "a" * 200
    assert w.cmd(f"use {longest}") == f"USING {longest}".encode()
    assert w.cmd(f"watch {longest}") == b"WATCHING 2"
    for name in ("a-", "A.b_c", "9", "_x", "$", "+plus", "(x)", "a/b;c"):
        assert w.cmd(f"use {name}") == f"USING {name}".encode(), name
    # a name of almost nothing but escaped characters is longer than a channel name may be
    assert w.cmd("use " + "+" * 65) == b"USING " + b"+" * 65
    assert w.cmd("use " + "+" * 66) == b"BAD_FORMAT"


def test_tube_names_with_special_characters(start: Callable[..., Beanstalkd], tmp_path: Path) -> None:
    (tmp_path / "spool").mkdir()  # beanstalkd needs its -b directory to exist
    bs = start("-b", str(tmp_path / "spool"))
    w = bs.connect()
    tubes = ["a+b", "x/y;z", "$money", "f(x)", "q_u.e-ue", "bt_x", "mix+/;$()_.-9"]
    ids = {}
    for t in tubes:
        assert w.cmd(f"use {t}") == f"USING {t}".encode()
        ids[t] = w.put(t.encode())
        assert w.job("peek-ready", b"FOUND") == (ids[t], t.encode())
    assert w.cmd("use default") == b"USING default"
    assert sorted(w.yaml("list-tubes")) == sorted(["default", *tubes])
    for t in tubes:
        st = w.yaml(f"stats-tube {t}")
        assert (st["name"], st["current-jobs-ready"], st["total-jobs"]) == (t, 1, 1), t
        assert w.yaml(f"stats-job {ids[t]}")["tube"] == t
    assert w.cmd("stats-tube a+c") == b"NOT_FOUND"
    # a fresh connection watching only one of them gets only its job
    c = bs.connect()
    assert c.cmd("watch x/y;z") == b"WATCHING 2"
    assert c.cmd("ignore default") == b"WATCHING 1"
    assert c.job("reserve-with-timeout 0") == (ids["x/y;z"], b"x/y;z")
    assert c.cmd("reserve-with-timeout 0") == b"TIMED_OUT"
    assert c.cmd("pause-tube f(x) 100") == b"PAUSED"
    assert w.yaml("stats-tube f(x)")["pause"] == 100
    # in the spool they are channels with escaped names (a channel name has only [A-Za-z0-9._-])
    with Spool(tmp_path / "spool") as spool:
        names = set(spool.stats().channels)
    assert {"bt_a_2bb", "bt_x_2fy_3bz", "bt__24money", "bt_f_28x_29", "q_u.e-ue", "bt_x"} <= names
    assert not any(set(n) - set(string.ascii_letters + string.digits + "._-") for n in names)


def test_ids_beyond_any_job(w: Wire) -> None:
    top = 2**64 - 1  # a valid id (u64) that no job has: NOT_FOUND, never a dropped connection
    for cmd in (f"delete {top}", f"peek {top}", f"stats-job {top}", f"kick-job {top}", f"reserve-job {top}",
                f"touch {top}", f"release {top} 0 0", f"bury {top} 0", f"delete {2**63}", f"peek {2**63 - 1}"):
        assert w.cmd(cmd) == b"NOT_FOUND", cmd
    assert w.cmd("list-tube-used") == b"USING default"


def test_largest_numbers(w: Wire) -> None:
    top = 2**32 - 1  # priority, delay and TTR are u32: the largest are valid
    j = w.put(b"far", pri=top, delay=top, ttr=top)
    st = w.yaml(f"stats-job {j}")
    assert (st["pri"], st["delay"], st["ttr"], st["state"]) == (top, top, top, "delayed")
    assert w.job(f"reserve-job {j}") == (j, b"far")
    assert w.cmd(f"touch {j}") == b"TOUCHED"
    assert w.cmd(f"release {j} {top} {top}") == b"RELEASED"
    assert w.yaml(f"stats-job {j}")["state"] == "delayed"
    assert w.cmd("pause-tube default 4294967295") == b"PAUSED"
    assert w.cmd("reserve-with-timeout 0") == b"TIMED_OUT"
    assert w.cmd(f"kick-job {j}") == b"KICKED"
    assert w.cmd("pause-tube default 0") == b"PAUSED"  # 0: not paused any more
    assert w.job("reserve-with-timeout 2147483647") == (j, b"far")


def test_tubes_have_no_attempt_limit_by_default(w: Wire) -> None:
    # issue 10 item 1: beanstalkd releases a job forever (spoolq buried it at the 20th release)
    j = w.put(b"again")
    for _ in range(25):
        assert w.job("reserve-with-timeout 0") == (j, b"again")
        assert w.cmd(f"release {j} 0 0") == b"RELEASED"
    st = w.yaml(f"stats-job {j}")
    assert (st["state"], st["releases"], st["reserves"], st["buries"]) == ("ready", 25, 25, 0)


def test_a_job_reserved_max_attempts_times_is_buried(start: Callable[..., Beanstalkd]) -> None:
    # with --max-attempts N a job that used up its attempts is a dead letter, and dead letters are
    # buried jobs; the automatic bury is counted like a bury
    w = start("--max-attempts", "20").connect()
    j = w.put(b"poison")
    for _ in range(19):
        assert w.job("reserve-with-timeout 0") == (j, b"poison")
        assert w.cmd(f"release {j} 0 0") == b"RELEASED"
    assert w.job("reserve-with-timeout 0") == (j, b"poison")
    assert w.cmd(f"release {j} 0 0") == b"BURIED"
    st = w.yaml(f"stats-job {j}")
    assert (st["state"], st["releases"], st["buries"]) == ("buried", 20, 1)
    assert w.cmd("kick 1") == b"KICKED 1"
    assert w.job("reserve-with-timeout 0") == (j, b"poison")


def test_pause_tube(bs: Beanstalkd, w: Wire) -> None:
    assert w.cmd("pause-tube nosuchtube 1") == b"NOT_FOUND"
    j = w.put(b"paused")
    t0 = time.monotonic()  # before the pause begins: the reserve below can't return before t0 + 1
    assert w.cmd("pause-tube default 1") == b"PAUSED"
    st = bs.connect().yaml("stats-tube default")
    assert (st["pause"], st["cmd-pause-tube"], st["current-jobs-ready"]) == (1, 1, 1)
    assert st["pause-time-left"] in (0, 1)
    assert w.cmd("reserve-with-timeout 0") == b"TIMED_OUT"
    assert w.job("reserve") == (j, b"paused")
    assert 0.95 <= elapsed(t0) < 2.0  # when the pause ends, not a second later
    st = w.yaml("stats-tube default")
    assert (st["pause"], st["pause-time-left"]) == (0, 0)
    assert w.stats()["cmd-pause-tube"] == 2  # the NOT_FOUND one counts too, as in beanstalkd


def test_due_delayed_jobs_show_as_ready(w: Wire) -> None:
    j = w.put(b"later", delay=1)
    assert w.yaml(f"stats-job {j}")["state"] == "delayed"
    assert w.yaml("stats-tube default")["current-jobs-delayed"] == 1
    time.sleep(1.1)  # the delay is the scenario
    st = w.yaml(f"stats-job {j}")
    assert (st["state"], st["time-left"], st["delay"]) == ("ready", 0, 1)
    assert w.job("peek-ready", b"FOUND") == (j, b"later")
    assert w.cmd("peek-delayed") == b"NOT_FOUND"
    st = w.yaml("stats-tube default")
    assert (st["current-jobs-ready"], st["current-jobs-delayed"], st["current-jobs-urgent"]) == (1, 0, 1)
    st = w.stats()
    assert (st["current-jobs-ready"], st["current-jobs-delayed"]) == (1, 0)
    assert w.cmd("kick 10") == b"KICKED 0"  # it is ready, not delayed: nothing to kick


# -- stats ---------------------------------------------------------------------------------------


def test_stats_keys_are_beanstalkds(w: Wire) -> None:
    j = w.put(b"x")
    for cmd, keys in (("stats", STATS_KEYS), ("stats-tube default", STATS_TUBE_KEYS),
                      (f"stats-job {j}", STATS_JOB_KEYS)):
        w.send(cmd.encode() + CRLF)
        head = w.line()
        data = w.chunk(int(head.split()[1]))
        assert data.startswith(b"---\n") and data.endswith(b"\n")
        assert [x.split(":")[0] for x in data.decode().splitlines()[1:]] == keys, cmd


def test_stats_count_a_scenario(bs: Beanstalkd) -> None:
    a, b, c, d = (bs.connect() for _ in range(4))
    # A produces: 3 jobs in t1 (two urgent), one delayed in t1, one in t2, one in t2 deleted at once
    assert a.cmd("use t1") == b"USING t1"
    j1, j2, j3 = a.put(b"1", pri=0), a.put(b"2", pri=1023), a.put(b"3", pri=1024)
    j4 = a.put(b"4", delay=100)
    assert a.cmd("use t2") == b"USING t2"
    j5 = a.put(b"5", pri=7, ttr=30)
    j6 = a.put(b"6")
    assert a.cmd(f"delete {j6}") == b"DELETED"
    # B works on t1: holds j1, buries j2
    assert b.cmd("watch t1") == b"WATCHING 2"
    assert b.cmd("ignore default") == b"WATCHING 1"
    assert b.job("reserve") == (j1, b"1")
    assert b.job("reserve-with-timeout 0") == (j2, b"2")
    assert b.cmd(f"bury {j2} 5") == b"BURIED"
    assert b.cmd(f"touch {j1}") == b"TOUCHED"
    # C waits on t3, which stays empty
    assert c.cmd("watch t3") == b"WATCHING 2"
    c.send(b"reserve\r\n")
    wait_for(lambda: d.stats()["current-waiting"] == 1)

    st = d.stats()
    expect = {
        "current-jobs-urgent": 1, "current-jobs-ready": 2, "current-jobs-reserved": 1, "current-jobs-delayed": 1,
        "current-jobs-buried": 1, "cmd-put": 6, "cmd-peek": 0, "cmd-reserve": 2, "cmd-reserve-with-timeout": 1,
        "cmd-delete": 1, "cmd-release": 0, "cmd-use": 2, "cmd-watch": 2, "cmd-ignore": 1, "cmd-bury": 1,
        "cmd-kick": 0, "cmd-touch": 1, "job-timeouts": 0, "total-jobs": 6, "max-job-size": 65535,
        "current-tubes": 4, "current-connections": 4, "current-producers": 1, "current-workers": 2,
        "current-waiting": 1, "total-connections": 4, "pid": bs.proc.pid, "draining": "false",
        "binlog-oldest-index": 0, "binlog-current-index": 0,
    }
    assert {k: st[k] for k in expect} == expect
    assert d.stats()["cmd-stats"] == st["cmd-stats"] + 1  # counted before the answer
    assert st["uptime"] <= 5 and isinstance(st["rusage-utime"], str) and float(st["rusage-utime"]) > 0
    assert re.fullmatch(r"[0-9a-f]{16}", st["id"]) and st["version"]

    t1 = d.yaml("stats-tube t1")
    assert t1 == {"name": "t1", "current-jobs-urgent": 0, "current-jobs-ready": 1, "current-jobs-reserved": 1,
                  "current-jobs-delayed": 1, "current-jobs-buried": 1, "total-jobs": 4, "current-using": 0,
                  "current-watching": 1, "current-waiting": 0, "cmd-delete": 0, "cmd-pause-tube": 0,
                  "pause": 0, "pause-time-left": 0}
    t2 = d.yaml("stats-tube t2")
    assert (t2["current-jobs-urgent"], t2["current-jobs-ready"], t2["total-jobs"], t2["current-using"],
            t2["cmd-delete"], t2["current-watching"]) == (1, 1, 2, 1, 1, 0)
    t3 = d.yaml("stats-tube t3")
    assert (t3["current-watching"], t3["current-waiting"], t3["total-jobs"]) == (1, 1, 0)
    dflt = d.yaml("stats-tube default")
    assert (dflt["current-using"], dflt["current-watching"], dflt["current-waiting"]) == (3, 3, 1)

    s1 = d.yaml(f"stats-job {j1}")
    assert {k: s1[k] for k in ("id", "tube", "state", "pri", "delay", "ttr", "file", "reserves", "timeouts",
                               "releases", "buries", "kicks")} == {
        "id": j1, "tube": "t1", "state": "reserved", "pri": 0, "delay": 0, "ttr": 60, "file": 0, "reserves": 1,
        "timeouts": 0, "releases": 0, "buries": 0, "kicks": 0}
    assert 58 <= s1["time-left"] <= 60 and s1["age"] <= 2
    s2 = d.yaml(f"stats-job {j2}")
    assert (s2["state"], s2["pri"], s2["buries"], s2["reserves"], s2["time-left"]) == ("buried", 5, 1, 1, 0)
    s3 = d.yaml(f"stats-job {j3}")
    assert (s3["state"], s3["pri"], s3["reserves"]) == ("ready", 1024, 0)
    s4 = d.yaml(f"stats-job {j4}")
    assert (s4["state"], s4["delay"]) == ("delayed", 100) and 98 <= s4["time-left"] <= 100
    s5 = d.yaml(f"stats-job {j5}")
    assert (s5["tube"], s5["ttr"], s5["pri"]) == ("t2", 30, 7)
    assert d.cmd(f"stats-job {j6}") == b"NOT_FOUND"

    # connections going away are counted out; their reservations come back
    b.close()
    c.close()
    wait_for(lambda: d.stats()["current-connections"] == 2)
    st = d.stats()
    assert (st["current-workers"], st["current-waiting"], st["current-jobs-reserved"], st["current-jobs-ready"],
            st["total-connections"], st["current-tubes"]) == (0, 0, 0, 3, 4, 3)


@pytest.mark.parametrize("kind", ["counts", "look-ups"])
def test_counting_a_deep_spool_does_not_stall_other_connections(start: Callable[..., Beanstalkd],
                                                                 tmp_path: Path, kind: str) -> None:
    """stats, stats-tube, list-tubes and pause-tube count the spool's jobs, and peek and stats-job of a job
    number look through it: their time grows with the queue. Done in a worker thread, the asking connection
    waits and the others are served. (On the event loop, 30 pipelined ones held every other connection
    until the last one.)"""
    d = tmp_path / "spool"
    s = Spool(d, durability="normal")
    for _ in range(10):
        s.send_many([b"x" * 50] * 10_000, "deep")
    s.close()
    bs = start("-b", str(d), "-F")
    asker, other = bs.connect(), bs.connect()
    assert other.cmd("list-tube-used") == b"USING default"
    asks = 30
    lines = [b"stats", b"stats-tube deep", b"list-tubes"] if kind == "counts" else \
        [b"peek 99999999", b"stats-job 99999999", b"peek 100000"]
    asker.send(b"".join(x + CRLF for x in lines * (asks // 3)))
    for _ in range(3):  # (counted on the loop, even the first waited for all 30)
        assert other.put(b"meanwhile") > 0
    asker.sock.settimeout(0.0)  # what has come so far, without waiting
    try:
        while True:
            data = asker.sock.recv(1 << 20)
            if not data:
                break
            asker.buf += data
    except BlockingIOError:
        pass
    asker.sock.settimeout(30)
    answered = asker.buf.count(b"OK ") + asker.buf.count(b"NOT_FOUND") + asker.buf.count(b"FOUND ")
    assert answered < asks, "the other connection waited for every one"
    if kind == "counts":
        got = [asker.ok_reply() for _ in range(asks)]
        assert got[0]["current-jobs-ready"] >= 100_000 and got[1]["current-jobs-ready"] == 100_000
        assert "deep" in got[2]
    else:
        for _ in range(asks // 3):
            assert asker.line() == b"NOT_FOUND"
            assert asker.line() == b"NOT_FOUND"
            assert asker.job_reply(b"FOUND") == (100_000, b"x" * 50)


@pytest.mark.parametrize("durable", [False, True], ids=["memory", "durable"])
def test_a_long_pipeline_of_stats_and_look_ups(start: Callable[..., Beanstalkd], tmp_path: Path,
                                               durable: bool) -> None:
    """Thousands of stats commands and look-ups in one pipeline are answered in order (in memory, an
    answer given at once must not nest a call per command: 3,000 of them overflowed the stack)."""
    bs = start(*(("-b", str(tmp_path)) if durable else ()))
    w = bs.connect()
    j = w.put(b"x")
    n = 750
    w.send(b"list-tubes\r\nstats\r\nstats-job %d\r\npeek 99999\r\n" % j * n)
    for _ in range(n):
        assert w.ok_reply() == ["default"]
        assert w.ok_reply()["current-jobs-ready"] == 1
        assert w.ok_reply()["id"] == j
        assert w.line() == b"NOT_FOUND"
