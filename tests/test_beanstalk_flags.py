"""spoolq-beanstalkd's flags and resource bounds, as beanstalkd behaves (issue 10 items 8 and 9)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from .conftest import python_env, wait_for
from .nodes import free_port
from .test_beanstalk_protocol import Beanstalkd, beanstalkd_command, short_tmpdir, start  # noqa: F401


def run_briefly(*args: str, exe: list[str] | None = None) -> int | None:
    """Start spoolq-beanstalkd (or ``exe``) with ``args``; its exit status within 3 s, or None if it keeps
    running (then it is stopped)."""
    p = subprocess.Popen([*(exe or beanstalkd_command()), "-l", "127.0.0.1", "-p", str(free_port()), *args],
                         env=python_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return p.wait(3)
    except subprocess.TimeoutExpired:
        p.terminate()
        p.wait(10)
        return None


def test_missing_b_directory_is_refused() -> None:
    d = short_tmpdir()
    try:
        assert run_briefly("-b", str(d / "missing")) == 10  # beanstalkd: 10, "failed to lock wal dir"
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_second_server_on_the_same_directory_is_refused(start: Callable[..., Beanstalkd]) -> None:  # noqa: F811
    d = short_tmpdir()
    try:
        first = start("-b", str(d))
        first.connect()
        assert run_briefly("-b", str(d)) == 10
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_size_and_port_flags() -> None:
    assert run_briefly("-z", "0") is None  # beanstalkd runs
    assert run_briefly("-z", "2000000000") is None  # capped at 1 GiB with a warning
    assert run_briefly("-p", "99999") not in (None, 0)  # beanstalkd wraps it; refused here


def test_data_sent_behind_a_waiting_reserve_is_not_buffered_without_bound(
        start: Callable[..., Beanstalkd]) -> None:  # noqa: F811
    bs = start()
    s = bs.raw_socket()
    s.sendall(b"reserve\r\n")
    s.settimeout(1.0)
    chunk = b"x" * 65536
    sent = 0
    deadline = time.monotonic() + 20
    try:
        while sent < (256 << 20) and time.monotonic() < deadline:
            sent += s.send(chunk)
    except TimeoutError:
        pass
    s.close()
    assert sent < (64 << 20), f"the server read {sent} bytes behind a pending reserve"


def test_flags_exit_as_beanstalkd_does() -> None:
    """The same flags given to real beanstalkd and to spoolq-beanstalkd: the same exit code, or both keep
    running. The one difference kept on purpose: -p 99999 (beanstalkd wraps it to port 34463)."""
    real = shutil.which("beanstalkd") or "/usr/bin/beanstalkd"
    d = short_tmpdir()

    def real_briefly(*args: str) -> int | None:
        return run_briefly(*args, exe=[real])

    try:
        (d / "held").mkdir()
        holder = subprocess.Popen([real, "-l", "127.0.0.1", "-p", str(free_port()), "-b", str(d / "held")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            cases = [("-b", str(d / "missing")), ("-z", "0"), ("-z", "2000000000"), ("-V",)]
            for args in cases:
                assert real_briefly(*args) == run_briefly(*args), args
            wait_for(lambda: holder.poll() is None and any(  # the holder has locked its directory
                line.split()[4] == str(holder.pid) for line in Path("/proc/locks").read_text().splitlines()))
            assert real_briefly("-b", str(d / "held")) == 10
        finally:
            holder.terminate()
            holder.wait(10)
        ours = Beanstalkd("-b", str(d / "held"))
        try:
            ours.connect()
            assert run_briefly("-b", str(d / "held")) == 10
        finally:
            ours.cleanup()
        # beanstalkd takes -p 99999 as port 34463 (which may be in use here); spoolq-beanstalkd refuses it
        assert run_briefly("-p", "99999") not in (None, 0)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_many_distinct_tube_names_do_not_stay_in_memory(start: Callable[..., Beanstalkd]) -> None:  # noqa: F811
    """300k `use <distinct name>` (issue 10 item 9: 500k grew RSS by 130 MB that stayed): the caches are
    bounded, so the server ends within a few MB of where it started (unbounded: +26 MiB here)."""
    bs = start()
    w = bs.connect()
    assert w.cmd("use warmup") == b"USING warmup"
    before = _rss_kib(bs.proc.pid)
    n, step = 300_000, 10_000
    for base in range(0, n, step):
        w.send(b"".join(b"use t%d\r\n" % i for i in range(base, base + step)))
        for i in range(base, base + step):
            assert w.line() == b"USING t%d" % i
    grown_mib = (_rss_kib(bs.proc.pid) - before) / 1024
    assert grown_mib < 10, f"RSS grew by {grown_mib:.0f} MiB after {n:,} distinct tube names"
    assert w.cmd("list-tubes-watched").startswith(b"OK ")
