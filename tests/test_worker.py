"""The worker helper: handler outcomes, stepping, and graceful stop of `spoolq worker`."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

import spoolq
from spoolq import Spool
from spoolq.testing import FakeClock

from .conftest import PYTHON, python_env, wait_for


def test_handler_return_acks(spool: Spool) -> None:
    seen: list[bytes] = []
    spool.send(b"a", "w")
    spool.send(b"b", "w")
    w = spool.worker("w", lambda lease: seen.append(lease.body))
    assert w.step() and w.step() and not w.step()
    assert seen == [b"a", b"b"] and w.processed == 2
    assert spool.stats().channels["w"].ready == 0


def test_handler_exception_nacks_with_backoff(spool: Spool, clock: FakeClock) -> None:
    def boom(lease: spoolq.Lease) -> None:
        raise RuntimeError("downstream is down")

    spool.send(b"a", "w")
    w = spool.worker("w", boom)
    assert w.step()
    assert w.failed == 1
    st = spool.stats().channels["w"]
    assert st.delayed == 1 and st.ready == 0  # backing off, not lost
    clock.advance(1.0)  # the first backoff is at most 1 s
    assert w.step() and w.failed == 2


def test_reject_dead_letters_at_once(spool: Spool) -> None:
    def reject(lease: spoolq.Lease) -> None:
        raise spoolq.Reject("malformed payload")

    mid = spool.send(b"a", "w")
    w = spool.worker("w", reject)
    assert w.step()
    d = spool.dead_letter(mid)
    assert d.reason == "rejected" and d.detail == "malformed payload" and w.rejected == 1


def test_worker_gives_up_after_max_attempts(spool: Spool, clock: FakeClock) -> None:
    spool.configure_channel("w", max_attempts=3)
    spool.send(b"a", "w")

    def boom(lease: spoolq.Lease) -> None:
        raise ValueError("always")

    w = spool.worker("w", boom)
    for _ in range(3):
        while not w.step():
            clock.advance(0.5)
    assert spool.dead_letters()[0].reason == "max_attempts"


def test_run_with_threads_until_stop(real_spool: Spool) -> None:
    real_spool.send_many([b"%d" % i for i in range(200)], "w")
    done: list[bytes] = []
    lock = threading.Lock()

    def handle(lease: spoolq.Lease) -> None:
        with lock:
            done.append(lease.body)

    w = real_spool.worker("w", handle, concurrency=4)
    t = threading.Thread(target=w.run, kwargs={"install_signal_handlers": False})
    t.start()
    wait_for(lambda: len(done) == 200)
    w.stop()
    t.join(10)
    assert not t.is_alive()
    assert sorted(done) == sorted(b"%d" % i for i in range(200)) and w.processed == 200


HANDLERS = '''
import time, os
def slow(lease):
    with open(os.environ["WORK_LOG"], "a") as f:
        f.write("start " + lease.body.decode() + "\\n")
    time.sleep(float(os.environ.get("WORK_SECONDS", "1")))
    with open(os.environ["WORK_LOG"], "a") as f:
        f.write("end " + lease.body.decode() + "\\n")
'''


def start_worker(tmp_path: Path, spool_dir: Path, seconds: float, grace: float) -> subprocess.Popen[str]:
    (tmp_path / "myhandlers.py").write_text(HANDLERS)
    env = python_env()
    env["WORK_LOG"] = str(tmp_path / "work.log")
    env["WORK_SECONDS"] = str(seconds)
    return subprocess.Popen([PYTHON, "-m", "spoolq", "worker", "myhandlers:slow", "--channel", "w",
                             "--concurrency", "2", "--grace", str(grace), "--spool", str(spool_dir)],
                            cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)


def test_sigterm_lets_running_handlers_finish_and_acks_them(tmp_path: Path, spool_dir: Path) -> None:
    with Spool(spool_dir) as s:
        s.send_many([b"m%d" % i for i in range(10)], "w")
    proc = start_worker(tmp_path, spool_dir, seconds=1.0, grace=30)
    log = tmp_path / "work.log"
    wait_for(lambda: log.exists() and log.read_text().count("start") >= 2, timeout=30)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    lines = log.read_text().splitlines()
    started = [x.split()[1] for x in lines if x.startswith("start")]
    ended = [x.split()[1] for x in lines if x.startswith("end")]
    assert sorted(started) == sorted(ended)  # every handler that started was allowed to finish
    with Spool(spool_dir) as s:
        st = s.stats().channels["w"]
        assert st.leased == 0
        assert st.ready == 10 - len(ended)  # finished ones were acked; the rest are untouched
    assert "worker stopped" in stderr


def test_sigterm_after_grace_releases_the_leases(tmp_path: Path, spool_dir: Path) -> None:
    with Spool(spool_dir) as s:
        s.send_many([b"m%d" % i for i in range(4)], "w")
    proc = start_worker(tmp_path, spool_dir, seconds=30, grace=0.5)
    log = tmp_path / "work.log"
    wait_for(lambda: log.exists() and log.read_text().count("start") >= 2, timeout=30)
    t = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert time.monotonic() - t < 10
    with Spool(spool_dir) as s:
        st = s.stats().channels["w"]
        assert st.leased == 0 and st.ready == 4  # released at once, not left to expire in 30 s


def test_worker_cli_bad_handler(tmp_path: Path, spool_dir: Path) -> None:
    r = subprocess.run([PYTHON, "-m", "spoolq", "worker", "nosuchmodule:fn", "-c", "w", "--spool", str(spool_dir)],
                       cwd=tmp_path, env=python_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "cannot import" in r.stderr
    r = subprocess.run([PYTHON, "-m", "spoolq", "worker", "nocolon", "-c", "w", "--spool", str(spool_dir)],
                       cwd=tmp_path, env=python_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "MODULE:FUNCTION" in r.stderr


def test_concurrency_must_be_positive(spool: Spool) -> None:
    with pytest.raises(spoolq.SpoolqError):
        spool.worker("w", print, concurrency=0)
