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


def run_briefly(*args: str) -> int | None:
    """Start spoolq-beanstalkd with ``args``; its exit status within 10 s, or None if it keeps running."""
    p = subprocess.Popen([*beanstalkd_command(), "-l", "127.0.0.1", "-p", str(free_port()), *args],
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
    running. The one difference kept on purpose: -p 99999 (beanstalkd wraps it to another port)."""
    real = shutil.which("beanstalkd") or "/usr/bin/beanstalkd"
    d = short_tmpdir()

    def real_briefly(*args: str) -> int | None:
        p = subprocess.Popen([real, "-l", "127.0.0.1", "-p", str(free_port()), *args],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            return p.wait(3)
        except subprocess.TimeoutExpired:
            p.terminate()
            p.wait(10)
            return None

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
        assert real_briefly("-p", "99999") is None and run_briefly("-p", "99999") not in (None, 0)
    finally:
        shutil.rmtree(d, ignore_errors=True)
