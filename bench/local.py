"""Local benchmark: spoolq against raw SQLite, persist-queue and beanstalkd, on this machine, in one run.

Run it by hand from the repository root, in an environment where spoolq is installed::

    python bench/local.py                  # full run: 3 interleaved rounds and the 1M rows (~5 min here)
    python bench/local.py --quick          # 1 round, smaller counts, no 1M rows (under a minute)
    python bench/local.py --only 1,6,8     # selected rows only (numbers below)
    python bench/local.py --skip-peers     # no persist-queue and no beanstalkd (raw SQLite still runs)
    python bench/local.py --deep 200000    # a smaller "1M" backlog for rows 9 and 10 (to try them out)
    python bench/local.py --trace          # spoolq with its event log on (rows 1-7 and 9), as a node's spool has it

Progress goes to stderr. The result goes to stdout: a Markdown table with the columns
``workload | spoolq | peer figures | ratio | target | met?``, then every round's figure, the machine
(nproc, Python, SQLite) and the total run time. Ratios are spoolq / peer, measured in the same run.

Peers, installed when missing: persist-queue and greenstalk with ``python -m pip`` (into this interpreter),
beanstalkd with ``apt-get install -y beanstalkd`` (as root). A peer that cannot be installed is reported
as unavailable and left out. Each beanstalkd is started for one measurement on 127.0.0.1 and a free port,
with ``-b <tmpdir> -f 0`` (fsync after every write) or in memory (no ``-b``), and stopped by its PID.
Raw SQLite (stdlib sqlite3, WAL, ``isolation_level=None``, table ``t(id INTEGER PRIMARY KEY, body BLOB)``,
``BEGIN IMMEDIATE``/``INSERT``/``COMMIT``) is "the limit" of what SQLite from Python can do here.

Rows (100-byte random bodies; every spoolq measurement uses a fresh spool directory under /tmp, removed
afterwards):

 1. ``send``, 1 thread, 1 message per call, durability full; peers: raw SQLite FULL 1 row/txn (target
    >= 0.95x of it), beanstalkd -f0 put, persist-queue ``SQLiteAckQueue.put``.
 2. ``send``, 8 threads, durability full (group commit); target >= 3.5x raw SQLite FULL 1 row/txn from one
    thread. Also shows the average group size (messages per commit) from ``Spool.commit_stats()``.
 3. ``send``, 1 thread, durability normal; target >= 0.8x raw SQLite NORMAL 1 row/txn; peers: that and
    in-memory beanstalkd put.
 4. ``send_many`` in batches of 1,000, durability full; target >= 250,000 msg/s; peer: raw SQLite FULL
    10,000 rows/txn.
 5. ``lease_many(100)`` + ``ack_many``, 1 consumer, durability full; target >= 100,000 msg/s. The queue
    is prefilled with ``send_many`` outside the timer (as in rows 6, 7 and the consume peers).
 6. ``lease`` + ``ack`` one at a time, durability full; target >= beanstalkd -f0 reserve+delete; peers:
    beanstalkd -f0 reserve+delete, persist-queue get+ack.
 7. ``lease`` + ``ack`` one at a time, durability normal; target >= 0.7x raw SQLite NORMAL (one
    autocommitted ``UPDATE … RETURNING`` taking the first untaken row and one ``DELETE`` per message);
    peers: that and in-memory beanstalkd reserve+delete.
 8. Latency at 1,000 msg/s for 5 s: ``send()`` paced in this process (the body starts with
    ``time.time()`` as text), ``lease(wait=...)`` + ``ack`` in another process (multiprocessing, spawn);
    latency = time the lease returned - time in the body. p50 and p99 in ms; target p50 < 1 ms and
    p99 < 5 ms. The same with beanstalkd -f0 (greenstalk put / reserve + delete) for comparison.
 9. Rows 1, 3, 4, 5, 6 and 7 again with 1,000,000 messages already queued; target: within 20% of the
    empty spool (>= 0.8x). Every round measures the empty and the deep variant back to back. The backlog
    is built once (durability normal, ``send_many``) into a template directory and copied for each
    measurement. The send rows send to another channel than the backlog's; the consume rows prefill
    their messages at priority 0 into the backlog's channel, so every lease takes the front of a
    1M-deep queue (the empty variant uses the same channel and priority on an empty spool).
10. RSS of a consumer process with 1,000,000 queued: a spawned process opens a copy of the template,
    leases + acks 10,000 messages one at a time and reports its peak RSS; target < 60 MB. The figure is
    VmHWM from /proc/self/status; ``ru_maxrss`` is shown too, but on Linux it keeps the parent's peak across
    fork + exec, so in a child of this (large) benchmark process it overstates the consumer.
11. ``send`` from 1, 2, 4 and 8 producer processes at once (spawned, as web server workers are), durability
    full; peer: raw SQLite FULL 1 row/txn (autocommitted INSERT, default busy timeout) from the same number
    of processes. Rate = all messages / (last end - first start); p50/p99 of one call over every producer.
    Target: >= 1.0x raw (>= 0.95x with 1 process) and p99 <= 25 ms.

Method: the machine is shared and noisy. Rows 1-9 are measured in 3 rounds (row 10 once); a round runs every
variant of the row (spoolq and its peers) once, in an order rotated every round, and the table shows the
median of the rounds. A throughput measurement runs its message count or stops after ``CAP`` seconds,
whichever comes first, and reports messages / elapsed seconds. ``--quick``: 1 round, a fifth of the
counts, 2 s of latency, and rows 9 and 10 skipped unless named with ``--only``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import multiprocessing as mp
import os
import resource
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from _common import (
    BODY_SIZE,
    MASK,
    POOL,
    ROUNDS,
    TMP,
    Details,
    Installer,
    Report,
    TableRow,
    Variant,
    arg_parser,
    fmt_met,
    fmt_rate,
    fmt_ratio,
    free_port,
    interleave,
    latency_ms,
    latency_row,
    log,
    machine_facts,
    median,
    paced,
    proc_status_kib,
    reap,
    rows_option,
    run_rows,
    run_suite,
    serving,
    spoolq_commit,
    tmpdir,
    tool_version,
    values,
    version,
)
from _procs import many_producers_rows

from spoolq import Spool

Durability = Literal["full", "normal"]
T = TypeVar("T")

_BATCH = 1_000
_BATCHES: list[list[bytes]] = [[POOL[(b * _BATCH + k) & MASK] for k in range(_BATCH)] for b in range(4)]

CAP = 6.0  # seconds: a throughput measurement stops after this long, done or not
HARD_CAP = 60.0  # seconds: no loop of one measurement (prefills included) runs longer
CHANNEL = "bench"  # where the send rows send
DEEP_CHANNEL = "deep"  # the backlog's channel; the consume rows read it
THREADS = 8
LATENCY_RATE = 1_000
RSS_ACKS = 10_000
ALL_ROWS = tuple(range(1, 12))
PROCS = (1, 2, 4, 8)
DEEP_ROWS = (9, 10)
TRACE: bool | None = None  # Spool(trace=...) of rows 1-7 and 9: --trace sets True


# -- counts -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Counts:
    """Messages per measurement (sized for roughly 2-4 s each on a 2-core VM)."""

    send_full: int = 20_000
    send_threads: int = 60_000
    send_normal: int = 120_000
    send_many: int = 800_000
    lease_many: int = 400_000
    lease_full: int = 60_000
    lease_normal: int = 60_000
    raw_full: int = 20_000
    raw_normal: int = 150_000
    raw_batch: int = 1_000_000
    pq_put: int = 15_000
    pq_get: int = 8_000
    bs_f0_put: int = 15_000
    bs_f0_get: int = 10_000
    bs_mem: int = 60_000
    procs_send: int = 30_000
    latency_seconds: float = 5.0

    def quick(self) -> Counts:
        small = {
            f.name: max(_BATCH, getattr(self, f.name) // 5 // _BATCH * _BATCH)
            for f in dataclasses.fields(self)
            if f.name != "latency_seconds"
        }
        return dataclasses.replace(self, latency_seconds=2.0, **small)


# -- helpers ------------------------------------------------------------------------------------------------


def _timed(n: int, op: Callable[[int], int], cap: float = CAP) -> float:
    """Call ``op(done)`` until ``n`` items are done or ``cap`` seconds have passed; return items per second.

    ``op`` returns how many items it handled (0: nothing left, stop).
    """
    start = time.perf_counter()
    end = start + min(cap, HARD_CAP)
    done = 0
    now = start
    while done < n:
        k = op(done)
        if k <= 0:
            break
        done += k
        now = time.perf_counter()
        if now >= end:
            break
    if done == 0:
        raise RuntimeError("nothing was processed")
    return done / (now - start)


def _until(n: int, step: int = 1, seconds: float = HARD_CAP) -> Iterator[int]:
    """``range(0, n, step)``, cut short after ``seconds`` (bounds prefill and producer loops)."""
    end = time.monotonic() + seconds
    for i in range(0, n, step):
        if time.monotonic() > end:
            log(f"    warning: loop stopped by its {seconds:.0f} s cap at {i:,} of {n:,}")
            return
        yield i


@contextlib.contextmanager
def _fresh_dir(template: Path | None = None) -> Iterator[Path]:
    """A path ``<tmp>/spool`` that does not exist yet (or is a copy of ``template``); removed afterwards."""
    with tmpdir("spoolq-bench-") as base:
        path = base / "spool"
        if template is not None:
            shutil.copytree(template, path)
        yield path


@contextlib.contextmanager
def _open_spool(durability: Durability, template: Path | None = None) -> Iterator[Spool]:
    with _fresh_dir(template) as path:
        s = Spool(path, durability=durability, trace=TRACE)
        try:
            yield s
        finally:
            s.close()


def _prefill(s: Spool, n: int, channel: str, priority: int) -> None:
    for i in _until(n, _BATCH):
        s.send_many(_BATCHES[(i // _BATCH) & 3][: min(_BATCH, n - i)], channel, priority=priority)


# -- spoolq measurements ------------------------------------------------------------------------------------


def spool_send(durability: Durability, n: int, template: Path | None = None) -> float:
    """``send`` one message per call, one thread."""
    with _open_spool(durability, template) as s:
        send = s.send
        for i in range(10):  # warm-up: creates the channel, reserves job numbers
            send(POOL[i], CHANNEL)

        def op(i: int) -> int:
            send(POOL[i & MASK], CHANNEL)
            return 1

        return _timed(n, op)


def spool_send_threads(n: int, threads: int, groups: list[tuple[float, float]]) -> float:
    """``send`` from ``threads`` threads at once, durability full; appends (avg group, share grouped)."""
    with _open_spool("full") as s:
        for i in range(10):
            s.send(POOL[i], CHANNEL)
        commits0, msgs0 = s.commit_stats()
        per = n // threads
        sent = [0] * threads
        barrier = threading.Barrier(threads + 1)

        def worker(k: int) -> None:
            barrier.wait(timeout=30)
            end = time.perf_counter() + CAP
            count = 0
            for i in range(per):
                s.send(POOL[(k * per + i) & MASK], CHANNEL)
                count += 1
                if time.perf_counter() >= end:
                    break
            sent[k] = count

        pool = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(threads)]
        for t in pool:
            t.start()
        barrier.wait(timeout=30)
        start = time.perf_counter()
        for t in pool:
            t.join(HARD_CAP)
        elapsed = time.perf_counter() - start
        commits1, msgs1 = s.commit_stats()
        total = sum(sent)
        grouped = msgs1 - msgs0
        groups.append((grouped / max(1, commits1 - commits0), grouped / max(1, total)))
        return total / elapsed


def spool_send_many(durability: Durability, n: int, template: Path | None = None) -> float:
    """``send_many`` in batches of 1,000."""
    with _open_spool(durability, template) as s:
        s.send_many(_BATCHES[3][:10], CHANNEL)

        def op(i: int) -> int:
            s.send_many(_BATCHES[(i // _BATCH) & 3], CHANNEL)
            return _BATCH

        return _timed(n, op)


def spool_consume(durability: Durability, n: int, batch: int, template: Path | None = None) -> float:
    """``lease`` + ``ack`` (batch 1) or ``lease_many(batch)`` + ``ack_many``, of ``n`` messages prefilled at
    priority 0 into DEEP_CHANNEL (in front of the backlog, if ``template`` holds one)."""
    with _open_spool(durability, template) as s:
        _prefill(s, n, DEEP_CHANNEL, priority=0)
        if batch == 1:
            lease = s.lease

            def op(i: int) -> int:
                x = lease(DEEP_CHANNEL)
                if x is None:
                    return 0
                x.ack()
                return 1

        else:

            def op(i: int) -> int:
                xs = s.lease_many(DEEP_CHANNEL, batch)
                if xs:
                    s.ack_many(xs)
                return len(xs)

        return _timed(n, op)


def build_template(n: int) -> tuple[Path, Path]:
    """A spool with ``n`` messages queued in DEEP_CHANNEL; returns (base dir to remove, spool dir)."""
    base = Path(tempfile.mkdtemp(prefix="spoolq-bench-template-", dir=TMP))
    path = base / "spool"
    log(f"building the backlog template: {n:,} messages into {path} (durability normal, send_many)")
    started = time.monotonic()
    batch = [POOL[k & MASK] for k in range(10_000)]
    s = Spool(path, durability="normal")
    try:
        for i in _until(n, len(batch), seconds=5 * HARD_CAP):
            s.send_many(batch[: min(len(batch), n - i)], DEEP_CHANNEL)
    finally:
        s.close()
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    log(f"  template built in {time.monotonic() - started:.1f} s, {size / 1e6:,.0f} MB on disk")
    return base, path


# -- raw SQLite ---------------------------------------------------------------------------------------------


def raw_sqlite(synchronous: str, rows_per_txn: int, n: int) -> float:
    """The limit: stdlib sqlite3, WAL, BEGIN IMMEDIATE / INSERT x rows_per_txn / COMMIT."""
    with _fresh_dir() as d:
        d.mkdir()
        conn = sqlite3.connect(d / "raw.db", isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={synchronous}")
            conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, body BLOB)")
            ex = conn.execute
            sql = "INSERT INTO t(body) VALUES (?)"
            if rows_per_txn == 1:

                def op(i: int) -> int:
                    ex("BEGIN IMMEDIATE")
                    ex(sql, (POOL[i & MASK],))
                    ex("COMMIT")
                    return 1

            else:
                rows = [(POOL[k & MASK],) for k in range(rows_per_txn)]

                def op(i: int) -> int:
                    ex("BEGIN IMMEDIATE")
                    conn.executemany(sql, rows)
                    ex("COMMIT")
                    return rows_per_txn

            op(0)  # warm-up
            return _timed(n, op)
        finally:
            conn.close()


def raw_consume(synchronous: str, n: int) -> float:
    """The consume limit: one autocommitted UPDATE (take the first row not taken, RETURNING it) and one
    autocommitted DELETE per message, of ``n`` rows prefilled in one transaction."""
    with _fresh_dir() as d:
        d.mkdir()
        conn = sqlite3.connect(d / "raw.db", isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={synchronous}")
            conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, taken INTEGER NOT NULL DEFAULT 0, body BLOB)")
            conn.execute("CREATE INDEX t_ready ON t(taken, id)")
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO t(body) VALUES (?)", ((POOL[i & MASK],) for i in _until(n)))
            conn.execute("COMMIT")
            ex = conn.execute
            take = "UPDATE t SET taken=1 WHERE id=(SELECT id FROM t WHERE taken=0 ORDER BY id LIMIT 1) RETURNING id"
            delete = "DELETE FROM t WHERE id=?"

            def op(i: int) -> int:
                row = ex(take).fetchone()
                if row is None:
                    return 0
                ex(delete, (row[0],))
                return 1

            return _timed(n, op)
        finally:
            conn.close()


# -- persist-queue ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _persist_queue() -> Iterator[Any]:
    """A fresh persist-queue ``SQLiteAckQueue`` (its defaults: WAL, default synchronous, pickled items)."""
    import persistqueue

    with _fresh_dir() as d:
        q = persistqueue.SQLiteAckQueue(str(d), auto_commit=True)
        try:
            yield q
        finally:
            q.close()


def pq_put(n: int) -> float:
    """persist-queue ``SQLiteAckQueue.put``."""
    with _persist_queue() as q:
        q.put(POOL[0])

        def op(i: int) -> int:
            q.put(POOL[i & MASK])
            return 1

        return _timed(n, op)


def pq_get_ack(n: int) -> float:
    """persist-queue ``get`` + ``ack`` one at a time (prefilled with synchronous=OFF, then back to default)."""
    from persistqueue.exceptions import Empty

    with _persist_queue() as q:
        conn = q._putter  # one connection (multithreading=False): prefill it without syncs
        assert conn is not None
        default_sync = conn.execute("PRAGMA synchronous").fetchone()[0]
        conn.execute("PRAGMA synchronous=OFF")
        for i in _until(n):
            q.put(POOL[i & MASK])
        conn.execute(f"PRAGMA synchronous={int(default_sync)}")

        def op(i: int) -> int:
            try:
                item = q.get(block=False, raw=True)
            except Empty:
                return 0
            q.ack(id=item["pqid"])
            return 1

        return _timed(n, op)


# -- beanstalkd ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def beanstalkd(exe: str, fsync: bool) -> Iterator[int]:
    """Run one beanstalkd on 127.0.0.1 (binlog with fsync after every write, or in memory); yields its port."""
    with contextlib.ExitStack() as stack:
        port = free_port()
        cmd = [exe, "-l", "127.0.0.1", "-p", str(port)]
        if fsync:
            binlog = stack.enter_context(_fresh_dir())
            binlog.mkdir()
            cmd += ["-b", str(binlog), "-f", "0"]
        stack.enter_context(serving(cmd, port, "beanstalkd", stop_cap=5.0))
        yield port


def bs_put(exe: str, fsync: bool, n: int) -> float:
    import greenstalk

    with beanstalkd(exe, fsync) as port, greenstalk.Client(("127.0.0.1", port), encoding=None, use=CHANNEL) as c:
        c.put(POOL[0])

        def op(i: int) -> int:
            c.put(POOL[i & MASK])
            return 1

        return _timed(n, op)


def bs_consume(exe: str, fsync: bool, n: int) -> float:
    """reserve + delete one at a time, of ``n`` jobs put beforehand."""
    import greenstalk

    with (
        beanstalkd(exe, fsync) as port,
        greenstalk.Client(("127.0.0.1", port), encoding=None, use=CHANNEL, watch=CHANNEL) as c,
    ):
        for i in _until(n):
            c.put(POOL[i & MASK])

        def op(i: int) -> int:
            try:
                job = c.reserve(timeout=1)
            except greenstalk.TimedOutError:
                return 0
            c.delete(job)
            return 1

        return _timed(n, op)


# -- latency (the consumer runs in a spawned process) ---------------------------------------------------------


def _latency_child_spool(path: str, timeout: float, ready: Any, out: Any) -> None:
    lats: list[float] = []
    s = Spool(path, durability="full")
    try:
        ready.set()
        end = time.monotonic() + timeout
        while time.monotonic() < end and len(lats) < 1_000_000:
            x = s.lease(CHANNEL, wait=0.5)
            if x is None:
                continue
            got = time.time()
            x.ack()
            if x.body == b"stop":
                break
            lats.append(got - float(x.body.split(b" ", 1)[0]))
    finally:
        s.close()
        out.put(lats)


def _latency_child_bs(port: int, timeout: float, ready: Any, out: Any) -> None:
    import greenstalk

    lats: list[float] = []
    with greenstalk.Client(("127.0.0.1", port), encoding=None, watch=CHANNEL) as c:
        try:
            ready.set()
            end = time.monotonic() + timeout
            while time.monotonic() < end and len(lats) < 1_000_000:
                try:
                    job = c.reserve(timeout=1)
                except greenstalk.TimedOutError:
                    continue
                got = time.time()
                c.delete(job)
                if job.body == b"stop":
                    break
                lats.append(got - float(job.body.split(b" ", 1)[0]))
        finally:
            out.put(lats)


def latency(kind: Literal["spoolq", "beanstalkd"], seconds: float, exe: str | None = None) -> tuple[float, float]:
    """Send at LATENCY_RATE msg/s for ``seconds`` here; another process receives. Returns (p50, p99) in ms."""
    import greenstalk

    total = int(LATENCY_RATE * seconds)
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    out = ctx.Queue()
    timeout = seconds + HARD_CAP
    with contextlib.ExitStack() as stack:
        send: Callable[[bytes], object]
        if kind == "spoolq":
            path = stack.enter_context(_fresh_dir())
            with Spool(path, durability="full") as s0:  # create the spool and the channel, then close it
                s0.send(b"warm-up", CHANNEL)
                first = s0.lease(CHANNEL)
                assert first is not None
                first.ack()
            proc = ctx.Process(target=_latency_child_spool, args=(str(path), timeout, ready, out), daemon=True)
        else:
            assert exe is not None
            port = stack.enter_context(beanstalkd(exe, fsync=True))
            proc = ctx.Process(target=_latency_child_bs, args=(port, timeout, ready, out), daemon=True)
        proc.start()
        try:
            if not ready.wait(60):
                raise RuntimeError("the consumer process did not start")
            if kind == "spoolq":
                s = stack.enter_context(Spool(path, durability="full"))
                send = functools.partial(s.send, channel=CHANNEL)
            else:
                client = stack.enter_context(greenstalk.Client(("127.0.0.1", port), encoding=None, use=CHANNEL))
                send = client.put
            time.sleep(0.3)  # let the consumer block in lease / reserve
            paced(send, total, LATENCY_RATE, seconds + HARD_CAP)
            send(b"stop")
            lats: list[float] = out.get(timeout=timeout + 30)
        finally:
            reap(proc)
    return latency_ms(lats, total)


# -- RSS of a consumer with the backlog queued ---------------------------------------------------------------


def _peak_rss_kib() -> tuple[int, int]:
    """(VmHWM of this process in KiB, or -1 where /proc is missing; ru_maxrss in KiB).

    On Linux, ru_maxrss survives fork + exec: a spawned child starts with its parent's peak, so VmHWM (the
    peak of this process image only) is the figure that describes the consumer itself.
    """
    hwm = proc_status_kib("self", "VmHWM")
    return -1 if hwm is None else hwm, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _rss_child(path: str, n: int, out: Any) -> None:
    at_start = _peak_rss_kib()
    s = Spool(path, durability="full")
    try:
        after_open = _peak_rss_kib()
        done = 0
        start = time.monotonic()
        for _ in range(n):
            x = s.lease(DEEP_CHANNEL)
            if x is None or time.monotonic() - start > HARD_CAP:
                break
            x.ack()
            done += 1
        out.put((at_start, after_open, _peak_rss_kib(), done, time.monotonic() - start))
    finally:
        s.close()


RssResult = tuple[tuple[int, int], tuple[int, int], tuple[int, int], int, float]


def consumer_rss(template: Path, n: int) -> RssResult:
    """Peak RSS (VmHWM, ru_maxrss) in KiB at start, after opening and at the end; acks done; seconds."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    with _fresh_dir(template) as path:
        proc = ctx.Process(target=_rss_child, args=(str(path), n, out), daemon=True)
        proc.start()
        try:
            result: RssResult = out.get(timeout=HARD_CAP + 60)
        finally:
            reap(proc)
    return result


# -- the rows ---------------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.quick: bool = args.quick
        self.rounds = 1 if args.quick else ROUNDS
        self.counts = Counts().quick() if args.quick else Counts()
        self.deep: int = args.deep
        self.skip_peers: bool = args.skip_peers
        self.rows: list[int] = args.only
        self.pq = False
        self.gs = False
        self.bs_exe: str | None = None
        self.template: Path | None = None
        self._template_base: Path | None = None
        self.details: Details = []
        self.load_at_start = os.getloadavg()

    # running ------------------------------------------------------------------------------------------------

    def setup(self) -> None:
        if self.skip_peers:
            log("--skip-peers: persist-queue and beanstalkd are left out")
            return
        installer = Installer()
        self.pq = installer.pip("persistqueue", "persist-queue")
        self.gs = installer.pip("greenstalk", "greenstalk")
        self.bs_exe = installer.apt("beanstalkd", "beanstalkd")
        if self.bs_exe and not self.gs:
            log("peer unavailable: beanstalkd (no greenstalk client)")
            self.bs_exe = None

    def teardown(self) -> None:
        if self._template_base is not None:
            shutil.rmtree(self._template_base, ignore_errors=True)
            self._template_base = self.template = None

    @property
    def deep_label(self) -> str:
        return f"{self.deep:,}" if self.deep != 1_000_000 else "1M"

    def need_template(self) -> Path:
        if self.template is None:
            self._template_base, self.template = build_template(self.deep)
        return self.template

    def interleave(self, row: str, variants: list[Variant[T]]) -> dict[str, list[T]]:
        """Run every variant once per round (order rotated each round); returns the values per label."""
        runs = interleave(row, variants, self.rounds, show=lambda value, _load: _show(value))
        got = {label: values(rs) for label, rs in runs.items()}
        self.details += [(row, label, [_show(v) for v in vals]) for label, vals in got.items()]
        return got

    def run(self) -> list[TableRow]:
        rows: dict[int, Callable[[], list[TableRow]]] = {
            1: self.row1,
            2: self.row2,
            3: self.row3,
            4: self.row4,
            5: self.row5,
            6: self.row6,
            7: self.row7,
            8: self.row8,
            9: self.row9,
            10: self.row10,
            11: self.row11,
        }
        return run_rows(self.rows, rows)

    def _bs(self, label: str, run: Callable[[str], T]) -> list[Variant[T]]:
        """The beanstalkd variant of a row (``run(exe)``), or none when beanstalkd is unavailable."""
        return [Variant(label, functools.partial(run, self.bs_exe))] if self.bs_exe else []

    def _vs_peers(
        self,
        num: int,
        workload: str,
        variants: list[Variant[float]],
        target: str,
        goal: float | tuple[str, float],
        unavailable: list[str],
    ) -> list[TableRow]:
        """A throughput row: spoolq (the first variant) and its peers (the others), medians of the rounds.

        ``goal``: the rate spoolq must reach, or (peer label, factor): at least ``factor`` times that peer's rate.
        """
        med = {k: median(v) for k, v in self.interleave(str(num), variants).items()}
        mine = med.pop(variants[0].label)
        if isinstance(goal, tuple):
            peer = med.get(goal[0])
            floor = None if peer is None else goal[1] * peer
        else:
            floor = goal
        ok = None if mine is None or floor is None else mine >= floor
        peers, ratios = _peers(med, unavailable), _ratios(mine, med)
        return [TableRow(f"{num}. {workload}", fmt_rate(mine), peers, ratios, target, fmt_met(ok))]

    # rows ---------------------------------------------------------------------------------------------------

    def row1(self) -> list[TableRow]:
        c = self.counts
        raw = "raw SQLite FULL 1 row/txn"
        vs = [
            Variant("spoolq send full", lambda: spool_send("full", c.send_full)),
            Variant(raw, lambda: raw_sqlite("FULL", 1, c.raw_full)),
            *self._bs("beanstalkd -f0 put", lambda exe: bs_put(exe, True, c.bs_f0_put)),
        ]
        if self.pq:
            vs.append(Variant("persist-queue put", lambda: pq_put(c.pq_put)))
        unavailable = self._unavailable(bs=True, pq=True)
        return self._vs_peers(1, "send, 1 thread, full", vs, f">= 0.95x {raw}", (raw, 0.95), unavailable)

    def row2(self) -> list[TableRow]:
        c = self.counts
        groups: list[tuple[float, float]] = []
        raw = "raw SQLite FULL 1 row/txn, 1 thread"
        vs = [
            Variant(f"spoolq send full {THREADS} threads", lambda: spool_send_threads(c.send_threads, THREADS, groups)),
            Variant(raw, lambda: raw_sqlite("FULL", 1, c.raw_full)),
        ]
        got = self.interleave("2", vs)
        mine, ref = median(got[vs[0].label]), median(got[raw])
        avg = median([g for g, _ in groups])
        share = median([s for _, s in groups])
        info = (
            "n/a"
            if avg is None or share is None
            else (f"avg group {avg:.1f} msgs/commit ({share:.0%} of sends group-committed)")
        )
        self.details.append(("2", "group size (msgs/commit, share)", [f"{g:.1f}, {s:.0%}" for g, s in groups]))
        ok = None if mine is None or ref is None else mine >= 3.5 * ref
        return [
            TableRow(
                f"2. send, {THREADS} threads, full (group commit)",
                fmt_rate(mine),
                f"{raw}: {fmt_rate(ref)}; {info}",
                f"{fmt_ratio(mine, ref)} {raw}",
                f">= 3.5x {raw}",
                fmt_met(ok),
            )
        ]

    def row3(self) -> list[TableRow]:
        c = self.counts
        vs = [
            Variant("spoolq send normal", lambda: spool_send("normal", c.send_normal)),
            Variant("raw SQLite NORMAL 1 row/txn", lambda: raw_sqlite("NORMAL", 1, c.raw_normal)),
            *self._bs("beanstalkd in-memory put", lambda exe: bs_put(exe, False, c.bs_mem)),
        ]
        raw = "raw SQLite NORMAL 1 row/txn"
        return self._vs_peers(3, "send, 1 thread, normal", vs, f">= 0.8x {raw}", (raw, 0.8), self._unavailable(bs=True))

    def row4(self) -> list[TableRow]:
        c = self.counts
        vs = [
            Variant("spoolq send_many(1000) full", lambda: spool_send_many("full", c.send_many)),
            Variant("raw SQLite FULL 10,000 rows/txn", lambda: raw_sqlite("FULL", 10_000, c.raw_batch)),
        ]
        return self._vs_peers(4, "send_many, batches of 1,000, full", vs, ">= 250,000/s", 250_000, [])

    def row5(self) -> list[TableRow]:
        c = self.counts
        vs = [Variant("spoolq lease_many(100)+ack_many full", lambda: spool_consume("full", c.lease_many, 100))]
        workload = "lease_many(100) + ack_many, 1 consumer, full"
        return self._vs_peers(5, workload, vs, ">= 100,000/s", 100_000, [])

    def row6(self) -> list[TableRow]:
        c = self.counts
        peer = "beanstalkd -f0 reserve+delete"
        vs = [
            Variant("spoolq lease+ack full", lambda: spool_consume("full", c.lease_full, 1)),
            *self._bs(peer, lambda exe: bs_consume(exe, True, c.bs_f0_get)),
        ]
        if self.pq:
            vs.append(Variant("persist-queue get+ack", lambda: pq_get_ack(c.pq_get)))
        unavailable = self._unavailable(bs=True, pq=True)
        return self._vs_peers(6, "lease + ack, one at a time, full", vs, f">= {peer}", (peer, 1.0), unavailable)

    def row7(self) -> list[TableRow]:
        c = self.counts
        raw = "raw SQLite NORMAL UPDATE+DELETE"
        vs = [
            Variant("spoolq lease+ack normal", lambda: spool_consume("normal", c.lease_normal, 1)),
            Variant(raw, lambda: raw_consume("NORMAL", c.lease_normal)),
            *self._bs("beanstalkd in-memory reserve+delete", lambda exe: bs_consume(exe, False, c.bs_mem)),
        ]
        workload = "lease + ack, one at a time, normal"
        return self._vs_peers(7, workload, vs, f">= 0.7x {raw}", (raw, 0.7), self._unavailable(bs=True))

    def row8(self) -> list[TableRow]:
        secs = self.counts.latency_seconds
        vs = [
            Variant("spoolq send -> lease (full)", lambda: latency("spoolq", secs)),
            *self._bs("beanstalkd -f0 put -> reserve", lambda exe: latency("beanstalkd", secs, exe)),
        ]
        got = self.interleave("8", vs)
        mine = got.pop("spoolq send -> lease (full)")
        workload = f"8. latency send -> lease at {LATENCY_RATE:,} msg/s for {secs:g} s, full, 2 processes"
        unavailable = self._unavailable(bs=True)
        return [latency_row(workload, mine, got, (1.0, 5.0), versus=lambda _: "vs beanstalkd", unavailable=unavailable)]

    def row9(self) -> list[TableRow]:
        template = self.need_template()
        c = self.counts
        deep = self.deep_label
        cases: list[tuple[str, Callable[[Path | None], float]]] = [
            ("send, 1 thread, full", lambda t: spool_send("full", c.send_full, t)),
            ("send, 1 thread, normal", lambda t: spool_send("normal", c.send_normal, t)),
            ("send_many(1000), full", lambda t: spool_send_many("full", c.send_many, t)),
            ("lease_many(100) + ack_many, full", lambda t: spool_consume("full", c.lease_many, 100, t)),
            ("lease + ack, full", lambda t: spool_consume("full", c.lease_full, 1, t)),
            ("lease + ack, normal", lambda t: spool_consume("normal", c.lease_normal, 1, t)),
        ]
        out: list[TableRow] = []
        for k, (name, fn) in enumerate(cases, start=1):
            vs = [
                Variant(f"{name}, empty spool", functools.partial(fn, None)),
                Variant(f"{name}, {deep} queued", functools.partial(fn, template)),
            ]
            got = self.interleave(f"9.{k}", vs)
            empty, full = median(got[vs[0].label]), median(got[vs[1].label])
            ok = None if empty is None or full is None else full >= 0.8 * empty
            out.append(
                TableRow(
                    f"9.{k} {name}, {deep} queued",
                    fmt_rate(full),
                    f"empty spool: {fmt_rate(empty)}",
                    f"{fmt_ratio(full, empty)} of empty",
                    ">= 0.8x empty",
                    fmt_met(ok),
                )
            )
        return out

    def row10(self) -> list[TableRow]:
        template = self.need_template()
        deep = self.deep_label
        log(f"[row 10] spawned consumer: lease + ack {RSS_ACKS:,} with {deep} queued")
        at_start, after_open, peak, done, secs = consumer_rss(template, RSS_ACKS)
        points = {"start": at_start, "after open": after_open, "peak": peak}
        shown = "; ".join(f"{k}: VmHWM {h:,}, ru_maxrss {m:,}" for k, (h, m) in points.items())
        log(f"[row 10] KiB {shown}; {done:,} acks in {secs:.1f} s")
        self.details.append(("10", "KiB (VmHWM, ru_maxrss)", [shown]))
        hwm, maxrss = peak
        mb = (hwm if hwm > 0 else maxrss) / 1024
        what = "VmHWM" if hwm > 0 else "ru_maxrss"
        return [
            TableRow(
                f"10. consumer RSS, {deep} queued, {done:,} lease+ack",
                f"{mb:.1f} MB ({what})",
                f"same process: {at_start[0] / 1024:.1f} MB at start, {after_open[0] / 1024:.1f} MB after opening"
                f" (VmHWM); ru_maxrss {maxrss / 1024:.1f} MB (includes the parent's peak, kept across fork+exec)",
                "-",
                "< 60 MB",
                fmt_met(mb < 60 and done == RSS_ACKS),
            )
        ]

    def row11(self) -> list[TableRow]:
        return many_producers_rows(PROCS, self.counts.procs_send, CAP, self.interleave)

    # the report -------------------------------------------------------------------------------------------

    def intro(self) -> list[str]:
        trace = "on (--trace)" if TRACE else "the spool's setting (off in a new spool)"
        return [f"Rounds: {self.rounds} (median shown); a throughput measurement stops after its count or {CAP:g} s.",
                f"spoolq's event log (trace): {trace}."]

    def machine(self) -> list[str]:
        bs = tool_version([self.bs_exe, "-v"], missing=self.bs_exe) if self.bs_exe else "unavailable"
        return [
            *machine_facts(self.load_at_start),
            f"- spoolq {version('spoolq')}; persist-queue {version('persist-queue')}; "
            f"greenstalk {version('greenstalk')}; beanstalkd: {bs}",
            f"- spoolq imported from {spoolq_commit()}",
            f"- temporary directories under {TMP}; bodies of {BODY_SIZE} random bytes",
        ]

    def _unavailable(self, *, bs: bool = False, pq: bool = False) -> list[str]:
        gone: list[str] = []
        reason = "skipped" if self.skip_peers else "unavailable"
        if bs and not self.bs_exe:
            gone.append(f"beanstalkd ({reason})")
        if pq and not self.pq:
            gone.append(f"persist-queue ({reason})")
        return gone


def _show(value: object) -> str:
    """A figure as logged and listed under "Every round": a rate, or (p50, p99) in ms."""
    if isinstance(value, float):
        return fmt_rate(value)
    if isinstance(value, tuple) and len(value) == 2:
        return f"p50 {value[0]:.3f} ms, p99 {value[1]:.3f} ms"
    if isinstance(value, tuple) and len(value) == 3:
        return f"{fmt_rate(value[0])}, p50 {value[1]:.3f} ms, p99 {value[2]:.3f} ms"
    return str(value)


def _peers(med: dict[str, float | None], unavailable: list[str]) -> str:
    parts = [f"{label}: {fmt_rate(x)}" for label, x in med.items()] + unavailable
    return "; ".join(parts) or "-"


def _ratios(mine: float | None, med: dict[str, float | None]) -> str:
    return "; ".join(f"{fmt_ratio(mine, x)} {label}" for label, x in med.items()) or "-"


# -- output -----------------------------------------------------------------------------------------------------

REPORT = Report(title="spoolq local benchmark", script="bench/local.py", separator=", ")


# -- main -------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = arg_parser(__doc__)
    parser.add_argument("--quick", action="store_true", help="1 round, smaller counts, skip the 1M rows (9, 10)")
    parser.add_argument("--skip-peers", action="store_true", help="leave out persist-queue and beanstalkd")
    only = rows_option(ALL_ROWS, "1,3,9")
    parser.add_argument("--only", type=only, default=None, metavar="ROW,ROW", help="run these rows (1-11)")
    parser.add_argument("--deep", type=int, default=1_000_000, metavar="N", help="backlog size of rows 9 and 10")
    parser.add_argument("--trace", action="store_true",
                        help="spoolq with the per-message event log on (rows 1-7, 9); default: off, as in a new spool")
    args = parser.parse_args(argv)
    global TRACE
    TRACE = True if args.trace else None
    if args.only is None:
        args.only = [r for r in ALL_ROWS if not (args.quick and r in DEEP_ROWS)]
        if args.quick:
            log("--quick: rows 9 and 10 (1M queued) are skipped; name them with --only to run them")
    if args.deep < 1:
        parser.error("--deep must be positive")
    started = time.monotonic()
    return run_suite(Bench(args), REPORT, started, argv)


if __name__ == "__main__":
    sys.exit(main())
