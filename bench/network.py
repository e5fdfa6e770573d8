"""Network benchmark: two spoolq nodes (A forwards to B) on loopback, with local peers, in one run.

Run it by hand from the repository root, in an environment where spoolq is installed::

    python bench/network.py                # full run: 3 interleaved rounds for rows 1 and 3, row 4 once (~2 min)
    python bench/network.py --quick        # 1 round, smaller sizes, no row 4 (under 30 s)
    python bench/network.py --only 1,3     # selected rows only (numbers below)

Progress goes to stderr. The result goes to stdout: a Markdown table with the columns
``workload | spoolq | peer figures | ratio | target | met?``, then every round's figures, the machine (nproc,
Python, SQLite, aiohttp, the spoolq commit), the load average before and after, and the total run time.

Every node is a real daemon started for one measurement with a fresh spool under /tmp: ``python -m spoolq node
--config <toml>`` listening on 127.0.0.1 port 0 (its URL is read from ``<spool>/node.json``), durability
``full``, stopped with SIGTERM by its PID. Bodies are 100 random bytes (100 random letters and digits where they
travel as JSON text).

Rows:

 1. Forwarding throughput of a backlog A -> B (200,000 messages; 40,000 with ``--quick``). A's outbox is filled
    while no daemon runs on A (``send_many`` in batches of 1,000 with ``to="b"``, durability full) once, into a
    template spool that is copied for every measurement. B's daemon starts, then A's, with ``[peers.b]`` pointing
    at B. The clock starts when A's daemon writes its ``node.json`` (its mtime: A has started and begins to
    forward) and stops at the first poll (every 20 ms, ``GET /healthz`` on A: the ``forwarded`` count of peer b,
    which counts messages B acknowledged after committing them) that shows all of them forwarded. B's inbox
    is counted afterwards and must hold them all. Measured with the default ``max_in_flight`` (4) and with
    ``max_in_flight = 1``. Reference in the same run: raw SQLite FULL 10,000 rows/txn as ``bench/local.py``
    measures it (stdlib sqlite3, WAL, ``synchronous=FULL``, ``t(id INTEGER PRIMARY KEY, body BLOB)``,
    ``executemany`` of 10,000 100-byte bodies per transaction), as many rows; target (issue 15) >= 0.25x of it.
    Peer figures are the ones quoted in the issue (dropr, RabbitMQ), not measured here.
 2. End-to-end latency at 100, 1,000 and 10,000 msg/s, 5 s each (2 s with ``--quick``): a producer process sends
    on A (``send(body, "lat", to="b")``, the body starts with ``time.time()`` as text), A's daemon forwards, a
    consumer process on B does ``lease(wait=...)`` + ``ack`` one at a time and records ``time.time() - sent
    time`` when the lease returns (before the ack; likewise before beanstalkd's delete); p50, p99 and min in ms,
    target (issue 15) p50 <= 1.5 ms, p99 <= 5 ms at 1,000 msg/s (the same limits are shown for every rate). At
    1,000 msg/s, in the same run, the same producer -> consumer latency through beanstalkd ``-f 0`` (greenstalk
    put / reserve + delete) and redis-server ``--appendonly yes --appendfsync always --save ''`` (LPUSH /
    BRPOP), each started on a free port for the measurement. Both producers and consumers are spawned
    processes; 20 warm-up messages precede the timed ones and are not counted.
 3. HTTP API: single-message JSON sends (``POST /v1/channels/bench/messages``, ``{"body": "<100 chars>"}``) from
    32 connections (``wrk -t1 -c32 -d5s``, 2 s with ``--quick``; an aiohttp client in a separate process with
    32 tasks when wrk is missing, or with ``--http-client aiohttp``) against a real node B, and against the same
    server whose ``Node.send`` stores nothing (this file run with ``--serve-empty-node``: it builds
    ``spoolq.node.daemon.Node``, replaces that method by one that returns made-up ids after
    ``await asyncio.sleep(0)``, and serves until SIGTERM). Target: real >= 60% of the empty handler's rate.
    Also counts the messages that landed in the real node's spool: they must equal the client's successful
    requests; wrk abandons the requests still in flight when its time is up (up to one per connection), which
    the server may still store, so with wrk up to 32 more may land than it counted.
 4. Daemon RSS while A forwards a 1,000,000-message backlog (200,000 with ``--quick --only 4``): the outbox is
    filled with ``send_many`` (durability normal for the fill, to save time; both daemons then run with full);
    while A forwards, A's VmRSS is sampled from ``/proc/<pid>/status`` every 100 ms; the peak is shown with A's
    VmHWM read at the end, and the forwarding rate of the run. Target < 120 MB.

 5. Draining while receiving: the row 1 backlog forwarded A -> B while a consumer process on B (started before
    A's daemon) does ``lease_many(1000, wait=0.5)`` + ``ack_many`` until it has acked them all, against the same
    forwarding with no consumer, in the same run. The forwarding rate is timed as in row 1; the consumer's rate
    runs from A's start to its last ack. Target (issue 15): >= 0.7x of forwarding alone.

Method: rows 1, 3 and 5 are measured in 3 rounds; a round runs every variant of the row once, in an order rotated
every round, and the table shows the median. Row 2 and row 4 run once. "Every round" lists each figure with the
1-minute load average when it started: the machine may be shared, and 2 cores are easily saturated. Rows 1, 3
and 4 also show the CPU seconds the daemons used and how busy the whole machine was (from /proc) meanwhile;
row 2 shows, from the nodes' /metrics, how many batches A posted and their mean times on A and on B.
``--quick``: 1 round, smaller sizes, row 4 skipped unless named with ``--only``. Every wait is bounded in time.

Installed when missing: wrk, beanstalkd and redis-server with ``apt-get install -y`` (as root; ``apt-get
update`` once if that fails), greenstalk and redis (the client) with ``python -m pip install``. A peer or tool
that cannot be installed is reported as unavailable and left out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import itertools
import json
import multiprocessing as mp
import os
import random
import re
import shutil
import signal
import sqlite3
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from _common import (
    BODY_SIZE,
    MASK,
    POOL,
    ROUNDS,
    TICK,
    TMP,
    Details,
    Installer,
    Report,
    SourceWatch,
    TableRow,
    Variant,
    arg_parser,
    fmt_mb,
    fmt_met,
    fmt_ms,
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
    proc_cpu_seconds,
    proc_status_kib,
    reap,
    rows_option,
    run_rows,
    run_suite,
    serving,
    spoolq_source,
    stop_proc,
    tmpdir,
    tool_version,
    values,
    version,
)

from spoolq import Spool

T = TypeVar("T")

FILL_BATCH = 1_000
CHANNEL = "bench"
LAT_CHANNEL = "lat"
PEER = "b"
ALL_ROWS = (1, 2, 3, 4, 5)
SLOW_ROWS = (4,)

FORWARD_POLL = 0.02  # seconds between two looks at A's /healthz while it forwards
RSS_INTERVAL = 0.1  # seconds between two VmRSS samples (row 4)
NODE_START_CAP = 30.0  # seconds a daemon may take to write its node.json
STOP_CAP = 30.0  # seconds a daemon may take to exit after SIGTERM
LATENCY_RATE = 1_000  # the rate compared with beanstalkd and redis
LATENCY_RATES = (100, 1_000, 10_000)
RAW_ROWS_PER_TXN = 10_000
DRAIN_BATCH = 1_000  # row 5's consumer: lease_many(1000) + ack_many
WARMUP = 20  # untimed messages before the latency run (start the link, create channels, open connections)
HTTP_CONNS = 32
HTTP_PATH = f"/v1/channels/{CHANNEL}/messages"
HTTP_TEXT = "".join(random.choices(string.ascii_letters + string.digits, k=BODY_SIZE))
HTTP_JSON = json.dumps({"body": HTTP_TEXT})

# figures quoted by the issue (not measured here)
QUOTED_FORWARD = {"dropr": 5_500, "RabbitMQ persistent, confirms batched": 18_000}
QUOTED_LATENCY = {"beanstalkd -f0": "0.45/10 ms", "redis appendfsync always": "0.7/30 ms"}


# -- sizes --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    backlog: int = 200_000  # row 1
    latency_seconds: float = 5.0  # row 2
    http_seconds: int = 5  # row 3
    deep: int = 1_000_000  # row 4

    def quick(self) -> Sizes:
        return Sizes(backlog=40_000, latency_seconds=2.0, http_seconds=2, deep=200_000)

    def forward_cap(self, n: int) -> float:
        """Seconds a forwarding run may take before it is cut short (at 10,000 msg/s, plus startup)."""
        return 30.0 + n / 10_000


# -- helpers ------------------------------------------------------------------------------------------------


def _inbox_count(spool_dir: Path, channel: str) -> int:
    """Ready + leased messages of ``channel`` in a spool (open it, count, close it)."""
    with Spool(spool_dir) as s:
        st = s.stats().channels.get(channel)
    return 0 if st is None else st.ready + st.leased


def _outbox_count(spool_dir: Path, peer: str) -> int:
    with Spool(spool_dir) as s:
        st = s.stats().peers.get(peer)
    return 0 if st is None else st.outbox


def _machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    total = sum(ticks[:8])  # user nice system idle iowait irq softirq steal (guest time is inside user)
    return (total - ticks[3] - ticks[4]) / TICK, total / TICK


@dataclass
class Cpu:
    """CPU used during a measurement: by our processes, and by the whole machine (everything else included)."""

    wall: float
    procs: dict[str, float]
    machine_busy: float
    cores: int

    def __str__(self) -> str:
        ours = ", ".join(f"{k} {v:.2f} s" for k, v in self.procs.items())
        capacity = self.wall * self.cores
        share = f"{self.machine_busy / capacity:.0%}" if capacity > 0 else "n/a"
        busy = f"{self.machine_busy:.2f} s ({share} of {self.cores} cores)"
        return f"CPU {ours} in {self.wall:.2f} s wall; whole machine busy {busy}"


class CpuMeter:
    """CPU seconds used by some processes and by the machine between its creation and ``stop()``."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start = {k: proc_cpu_seconds(p) for k, p in pids.items()}
        self.machine = _machine_cpu()
        self.wall = time.monotonic()

    def stop(self) -> Cpu:
        procs = {}
        for k, p in self.pids.items():
            before, after = self.start[k], proc_cpu_seconds(p)
            if before is not None and after is not None:
                procs[k] = after - before
        busy, _total = _machine_cpu()
        return Cpu(time.monotonic() - self.wall, procs, busy - self.machine[0], os.cpu_count() or 1)


# -- nodes --------------------------------------------------------------------------------------------------


def _node_toml(spool_dir: Path, peer_url: str | None = None, max_in_flight: int | None = None) -> str:
    text = f'[node]\nspool = "{spool_dir}"\nlisten = "127.0.0.1:0"\ndurability = "full"\n'
    if peer_url is not None:
        text += f'\n[peers.{PEER}]\nurl = "{peer_url}"\n'
        if max_in_flight is not None:
            text += f"max_in_flight = {max_in_flight}\n"
    return text


class NodeProc:
    """A node daemon subprocess (``spoolq node``, or this file's ``--serve-empty-node``) on 127.0.0.1:0.

    ``url`` is read from ``<spool>/node.json`` (written by the daemon with its pid); ``ready_at`` is that
    file's mtime (Unix time): the moment the daemon started serving and forwarding.
    """

    def __init__(self, name: str, spool_dir: Path, toml: str, *, empty_handler: bool = False) -> None:
        self.name = name
        self.spool_dir = spool_dir
        spool_dir.mkdir(parents=True, exist_ok=True)
        self.config = spool_dir.parent / f"{spool_dir.name}.toml"
        self.config.write_text(toml)
        self.log_path = spool_dir.parent / f"{spool_dir.name}.log"
        if empty_handler:
            args = [sys.executable, str(Path(__file__).resolve()), "--serve-empty-node", str(self.config)]
        else:
            args = [sys.executable, "-m", "spoolq", "node", "--config", str(self.config)]
        info = spool_dir / "node.json"
        with contextlib.suppress(FileNotFoundError):
            info.unlink()
        self._log = open(self.log_path, "ab")  # closed in stop()
        self.spawned_at = time.time()
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        self.url = ""
        self.ready_at = 0.0
        try:
            self._wait_ready(info)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, info: Path) -> None:
        end = time.monotonic() + NODE_START_CAP
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node {self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                data = json.loads(info.read_text())
                if data.get("pid") == self.pid:
                    self.url = str(data["url"])
                    self.ready_at = info.stat().st_mtime_ns / 1e9
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.005)
        raise RuntimeError(f"node {self.name} did not start within {NODE_START_CAP:g} s:\n{self.log_tail()}")

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> int | None:
        code = stop_proc(self.proc, STOP_CAP)
        self._log.close()
        if code not in (0, None):
            log(f"    warning: node {self.name} exited with {code}:\n{self.log_tail()}")
        return code

    def __enter__(self) -> NodeProc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Health:
    """``GET /healthz`` on one keep-alive connection."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.conn: http.client.HTTPConnection | None = None

    def get(self) -> dict[str, Any]:
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
            try:
                self.conn.request("GET", "/healthz")
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"/healthz answered {resp.status}")
                return dict(json.loads(data))
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def forwarded(self, peer: str) -> int:
        return int(self.get().get("peers", {}).get(peer, {}).get("forwarded", 0))

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


# -- rows 1 and 4: forwarding a backlog ---------------------------------------------------------------------------


def fill_outbox(spool_dir: Path, n: int, durability: Literal["full", "normal"]) -> float:
    """Queue ``n`` messages for peer b with ``send_many`` in batches of 1,000 (no daemon runs); returns seconds."""
    batches = [[POOL[(b * FILL_BATCH + k) & MASK] for k in range(FILL_BATCH)] for b in range(4)]
    started = time.monotonic()
    end = started + 300
    with Spool(spool_dir, durability=durability) as s:
        for i in range(0, n, FILL_BATCH):
            s.send_many(batches[(i // FILL_BATCH) & 3][: min(FILL_BATCH, n - i)], CHANNEL, to=PEER)
            if time.monotonic() > end:
                raise RuntimeError(f"filling the outbox took over 300 s (at {i:,} of {n:,})")
    return time.monotonic() - started


@dataclass
class ForwardResult:
    n: int
    forwarded: int
    seconds: float
    b_inbox: int
    a_outbox_left: int
    startup: float  # seconds from spawning A's daemon to its node.json
    rss_ready_kib: int | None = None
    rss_peak_kib: int | None = None
    hwm_kib: int | None = None
    samples: int = 0
    cpu: Cpu | None = None
    drained: int | None = None  # row 5: messages the consumer on B acked
    drain_seconds: float | None = None  # from A's start to the consumer's last ack

    @property
    def rate(self) -> float:
        return self.forwarded / self.seconds

    @property
    def complete(self) -> bool:
        return self.forwarded >= self.n and self.b_inbox + (self.drained or 0) == self.n

    def __str__(self) -> str:
        s = f"{fmt_rate(self.rate)} ({self.forwarded:,} in {self.seconds:.2f} s; B inbox {self.b_inbox:,}"
        if self.a_outbox_left:
            s += f", {self.a_outbox_left:,} left in A's outbox"
        if self.drained is not None:
            s += f", consumer on B acked {self.drained:,}"
            if self.drain_seconds:
                s += f" in {self.drain_seconds:.2f} s ({fmt_rate(self.drained / self.drain_seconds)})"
        s += f"; A started in {self.startup:.2f} s)"
        if self.cpu is not None:
            s += f"; {self.cpu}"
        if self.rss_peak_kib is not None:
            s += (
                f"; A VmRSS peak {fmt_mb(self.rss_peak_kib)} ({self.samples} samples), VmHWM {fmt_mb(self.hwm_kib)},"
                f" VmRSS at start {fmt_mb(self.rss_ready_kib)}"
            )
        return s


def forward_backlog(
    a_template: Path | None,
    a_dir: Path,
    n: int,
    cap: float,
    *,
    max_in_flight: int | None = None,
    sample_rss: bool = False,
    drain: bool = False,
) -> ForwardResult:
    """Start B, then A (whose outbox holds ``n`` messages for b, copied from ``a_template`` or already in
    ``a_dir``); time A's daemon until it has forwarded them all. With ``drain``, a consumer process on B
    (``lease_many(1000)`` + ``ack_many``) runs meanwhile, started before A."""
    base = a_dir.parent
    if a_template is not None:
        shutil.copytree(a_template, a_dir)
    b_dir = base / "node-b"
    drainer = Drainer(b_dir, n, cap) if drain else None
    with NodeProc("B", b_dir, _node_toml(b_dir)) as b, drainer or contextlib.nullcontext():
        a = NodeProc("A", a_dir, _node_toml(a_dir, b.url, max_in_flight))
        try:
            cpu = CpuMeter({"A": a.pid, "B": b.pid})
            health = Health(a.url)
            peak: int | None = None
            ready_rss = proc_status_kib(a.pid, "VmRSS") if sample_rss else None
            samples = 0
            next_sample = 0.0
            end = time.monotonic() + cap
            forwarded = 0
            try:
                while True:
                    now = time.monotonic()
                    if sample_rss and now >= next_sample:
                        rss = proc_status_kib(a.pid, "VmRSS")
                        if rss is not None:
                            peak = rss if peak is None else max(peak, rss)
                            samples += 1
                        next_sample = now + RSS_INTERVAL
                    forwarded = health.forwarded(PEER)
                    if forwarded >= n:
                        break
                    if now > end:
                        log(f"    warning: stopped waiting after {cap:.0f} s: {forwarded:,} of {n:,} forwarded")
                        break
                    if a.proc.poll() is not None:
                        raise RuntimeError(f"node A exited with {a.proc.returncode}:\n{a.log_tail()}")
                    time.sleep(FORWARD_POLL)
                done_at = time.time()
                used = cpu.stop()
            finally:
                health.close()
            hwm = proc_status_kib(a.pid, "VmHWM") if sample_rss else None
            if sample_rss:
                rss = proc_status_kib(a.pid, "VmRSS")
                if rss is not None:
                    peak = rss if peak is None else max(peak, rss)
        finally:
            a.stop()
        drained, drain_seconds = (None, None) if drainer is None else drainer.result(a.ready_at)
    return ForwardResult(
        n=n,
        drained=drained,
        drain_seconds=drain_seconds,
        forwarded=forwarded,
        seconds=done_at - a.ready_at,
        b_inbox=_inbox_count(b_dir, CHANNEL),
        a_outbox_left=_outbox_count(a_dir, PEER),
        startup=a.ready_at - a.spawned_at,
        rss_ready_kib=ready_rss,
        cpu=used,
        rss_peak_kib=peak,
        hwm_kib=hwm,
        samples=samples,
    )


def forward_from_template(
    template: Path, n: int, cap: float, max_in_flight: int | None, drain: bool = False
) -> ForwardResult:
    with tmpdir("spoolq-net-fwd-") as base:
        r = forward_backlog(template, base / "node-a", n, cap, max_in_flight=max_in_flight, drain=drain)
    if not r.complete:
        log(f"    warning: incomplete run: {r}")
    return r


@dataclass
class RawResult:
    rows: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.rows / self.seconds

    def __str__(self) -> str:
        return f"{fmt_rate(self.rate)} ({self.rows:,} rows in {self.seconds:.2f} s)"


def raw_sqlite_full(n: int, rows_per_txn: int = RAW_ROWS_PER_TXN) -> RawResult:
    """The reference of row 1, as ``bench/local.py`` measures it: stdlib sqlite3, WAL, ``synchronous=FULL``,
    table ``t(id INTEGER PRIMARY KEY, body BLOB)``, ``BEGIN IMMEDIATE`` / ``executemany`` of ``rows_per_txn``
    100-byte bodies / ``COMMIT``, ``n`` rows in all."""
    with tmpdir("spoolq-net-raw-") as base:
        conn = sqlite3.connect(base / "raw.db", isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, body BLOB)")
            sql = "INSERT INTO t(body) VALUES (?)"
            rows = [(POOL[k & MASK],) for k in range(rows_per_txn)]
            start = time.perf_counter()
            end = time.monotonic() + 120
            done = 0
            while done < n and time.monotonic() < end:
                k = min(rows_per_txn, n - done)
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(sql, rows[:k])
                conn.execute("COMMIT")
                done += k
            return RawResult(done, time.perf_counter() - start)
        finally:
            conn.close()


def _drain_consumer(b_dir: str, n: int, cap: float, ready: Any, out: Any) -> None:
    """Row 5's consumer on B: ``lease_many(1000, wait=0.5)`` + ``ack_many`` until ``n`` are acked or ``cap`` s."""
    acked = 0
    last = 0.0
    with Spool(b_dir, durability="full") as s:
        ready.set()
        end = time.monotonic() + cap
        while acked < n and time.monotonic() < end:
            leases = s.lease_many(CHANNEL, DRAIN_BATCH, wait=0.5)
            if leases:
                s.ack_many(leases)
                acked += len(leases)
                last = time.time()
    out.put((acked, last))


class Drainer:
    """A consumer process on B draining the forwarded messages (row 5), started before A's daemon."""

    def __init__(self, b_dir: Path, n: int, cap: float) -> None:
        ctx = mp.get_context("spawn")
        ready = ctx.Event()
        self.out = ctx.Queue()
        self.cap = cap
        self.proc = ctx.Process(target=_drain_consumer, args=(str(b_dir), n, cap, ready, self.out), daemon=True)
        self.proc.start()
        if not ready.wait(60):
            reap(self.proc, 1)
            raise RuntimeError("the consumer on B did not start")

    def result(self, started: float) -> tuple[int, float | None]:
        """(messages acked, seconds from ``started`` (Unix time) to the last ack)."""
        acked, last = self.out.get(timeout=self.cap + 60)
        return acked, (last - started if last else None)

    def __enter__(self) -> Drainer:
        return self

    def __exit__(self, *exc: object) -> None:
        reap(self.proc, self.cap + 30)


def forward_deep(n: int, cap: float) -> tuple[ForwardResult, float]:
    """Row 4: fill A's outbox with ``n`` messages (durability normal), forward with RSS sampling."""
    with tmpdir("spoolq-net-deep-") as base:
        a_dir = base / "node-a"
        log(f"[row 4] filling A's outbox with {n:,} messages (send_many, durability normal)")
        fill = fill_outbox(a_dir, n, "normal")
        log(f"[row 4] filled in {fill:.1f} s ({n / fill:,.0f} msg/s); forwarding with VmRSS sampling")
        r = forward_backlog(None, a_dir, n, cap, sample_rss=True)
    return r, fill


# -- row 2: latency -----------------------------------------------------------------------------------------------

LatKind = Literal["spoolq", "beanstalkd", "redis"]
Received = tuple[bytes, Callable[[], object]]  # a body, and how to finish it (ack, delete)


def _nothing() -> None:
    return None


def _lat_sender(kind: LatKind, where: str) -> tuple[Callable[[bytes], object], Callable[[], None]]:
    """(send one body, close) for a producer."""
    if kind == "spoolq":
        s = Spool(where, durability="full")
        return (lambda body: s.send(body, LAT_CHANNEL, to=PEER)), s.close
    if kind == "beanstalkd":
        import greenstalk

        c = greenstalk.Client(("127.0.0.1", int(where)), encoding=None, use=LAT_CHANNEL)
        return c.put, c.close
    import redis

    r = redis.Redis(host="127.0.0.1", port=int(where))
    return (lambda body: r.lpush(LAT_CHANNEL, body)), r.close


def _lat_receiver(kind: LatKind, where: str) -> tuple[Callable[[], Received | None], Callable[[], None]]:
    """(wait up to ~1 s for one message: its body and how to finish it (ack, delete), close) for a consumer."""
    if kind == "spoolq":
        s = Spool(where, durability="full")

        def lease() -> Received | None:
            x = s.lease(LAT_CHANNEL, wait=0.5)
            return None if x is None else (x.body, x.ack)

        return lease, s.close
    if kind == "beanstalkd":
        import greenstalk

        c = greenstalk.Client(("127.0.0.1", int(where)), encoding=None, watch=LAT_CHANNEL)

        def reserve() -> Received | None:
            try:
                job = c.reserve(timeout=1)
            except greenstalk.TimedOutError:
                return None
            return bytes(job.body), lambda: c.delete(job)

        return reserve, c.close
    import redis

    r = redis.Redis(host="127.0.0.1", port=int(where))

    def brpop() -> Received | None:
        got = r.brpop([LAT_CHANNEL], timeout=1)
        if got is None:
            return None
        body = got[1]
        return (body if isinstance(body, bytes) else str(body).encode()), _nothing

    return brpop, r.close


def _lat_producer(kind: LatKind, where: str, seconds: float, rate: int, ready: Any, go: Any) -> None:
    send, close = _lat_sender(kind, where)
    try:
        ready.set()
        if not go.wait(60):
            return
        for i in range(WARMUP):
            send(b"warm" + POOL[i][: BODY_SIZE - 4])
            time.sleep(0.01)
        time.sleep(0.2)
        paced(send, int(rate * seconds), rate, seconds + 60)
        send(b"stop")
    finally:
        close()


def _lat_consumer(kind: LatKind, where: str, timeout: float, ready: Any, out: Any) -> None:
    lats: list[float] = []
    warm = 0
    receive, close = _lat_receiver(kind, where)
    try:
        ready.set()
        end = time.monotonic() + timeout
        while time.monotonic() < end and len(lats) < 1_000_000:
            item = receive()
            if item is None:
                continue
            got = time.time()  # when the message was handed over, before it is acked (deleted)
            body, finish = item
            finish()
            if body == b"stop":
                break
            if body.startswith(b"warm"):
                warm += 1
                continue
            lats.append(got - float(body.split(b" ", 1)[0]))
    finally:
        close()
        out.put((lats, warm))


@dataclass
class Latency:
    p50: float
    p99: float
    received: int
    expected: int
    breakdown: str = ""
    low: float | None = None  # the fastest one, ms

    def __str__(self) -> str:
        s = f"p50 {fmt_ms(self.p50)}, p99 {fmt_ms(self.p99)}, min {fmt_ms(self.low)}"
        s += f" ({self.received:,}/{self.expected:,} received)"
        return s + (f"; {self.breakdown}" if self.breakdown else "")


def latency_run(kind: LatKind, producer_at: str, consumer_at: str, seconds: float, rate: int = LATENCY_RATE) -> Latency:
    """Spawn the consumer, then the producer; returns percentiles of the consumer's latencies."""
    ctx = mp.get_context("spawn")
    c_ready, p_ready, go = ctx.Event(), ctx.Event(), ctx.Event()
    out = ctx.Queue()
    timeout = seconds + 60
    consumer = ctx.Process(target=_lat_consumer, args=(kind, consumer_at, timeout, c_ready, out), daemon=True)
    producer = ctx.Process(target=_lat_producer, args=(kind, producer_at, seconds, rate, p_ready, go), daemon=True)
    consumer.start()
    try:
        producer.start()
        try:
            if not c_ready.wait(60) or not p_ready.wait(60):
                raise RuntimeError("the consumer or producer process did not start")
            time.sleep(0.3)  # let the consumer block in lease / reserve / brpop
            go.set()
            lats, _warm = out.get(timeout=timeout + 30)
        finally:
            reap(producer, 30)
    finally:
        reap(consumer)
    expected = int(rate * seconds)
    p50, p99 = latency_ms(lats, expected)  # sorts lats
    return Latency(p50, p99, len(lats), expected, low=lats[0] * 1000)


def _metrics(url: str) -> dict[str, float]:
    """A node's /metrics as {"name{labels}": value} (no tokens are configured, so no auth is needed)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[key] = float(value)
    return out


def _mean_ms(m: dict[str, float], name: str, labels: str) -> tuple[float, int] | None:
    count = m.get(f"{name}_count{{{labels}}}")
    total = m.get(f"{name}_sum{{{labels}}}")
    return None if not count or total is None else (total / count * 1000, int(count))


def latency_spoolq(seconds: float, rate: int = LATENCY_RATE) -> Latency:
    """Row 2 for spoolq; also reads from the nodes' /metrics where the time goes (means over the run)."""
    with tmpdir("spoolq-net-lat-") as base:
        a_dir, b_dir = base / "node-a", base / "node-b"
        with NodeProc("B", b_dir, _node_toml(b_dir)) as b, NodeProc("A", a_dir, _node_toml(a_dir, b.url)) as a:
            result = latency_run("spoolq", str(a_dir), str(b_dir), seconds, rate)
            try:
                ma, mb = _metrics(a.url), _metrics(b.url)
            except (OSError, http.client.HTTPException) as e:
                log(f"    warning: cannot read /metrics: {e}")
                return result
    parts = []
    fwd = _mean_ms(ma, "spoolq_forward_batch_seconds", f'peer="{PEER}"')
    if fwd is not None:
        parts.append(f"A: {fwd[1]:,} batches ({result.received / fwd[1]:.1f} msgs each), post + settle {fwd[0]:.2f} ms")
    recv = _mean_ms(mb, "spoolq_http_request_seconds", 'route="/v1/batches"')
    if recv is not None:
        parts.append(f"B handles a batch in {recv[0]:.2f} ms (means)")
    result.breakdown = ", ".join(parts)
    return result


def _latency_server(kind: LatKind, what: str, seconds: float, command: Callable[[int, Path], list[str]]) -> Latency:
    """Row 2 through a server started for it: ``command(port, directory)`` on a free port, in a fresh directory."""
    with tmpdir(f"spoolq-net-{kind}-") as base:
        port = free_port()
        with serving(command(port, base), port, what, STOP_CAP):
            return latency_run(kind, str(port), str(port), seconds)


def latency_beanstalkd(exe: str, seconds: float) -> Latency:
    def command(port: int, base: Path) -> list[str]:
        return [exe, "-l", "127.0.0.1", "-p", str(port), "-b", str(base), "-f", "0"]

    return _latency_server("beanstalkd", "beanstalkd", seconds, command)


def latency_redis(exe: str, seconds: float) -> Latency:
    def command(port: int, base: Path) -> list[str]:
        where = ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(base)]
        durable = ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
        return [exe, *where, *durable, "--daemonize", "no", "--logfile", str(base / "redis.log")]

    return _latency_server("redis", "redis-server", seconds, command)


# -- row 3: HTTP API ----------------------------------------------------------------------------------------------


def serve_empty_node(config_path: str) -> int:
    """A node whose JSON send handler stores nothing: ``Node.send`` returns made-up ids."""
    from spoolq.node.config import load_config
    from spoolq.node.daemon import Node, setup_logging

    config = load_config(config_path)
    setup_logging(config.log_json)
    counter = itertools.count(1)

    async def store_nothing(channel: str, items: Any) -> list[str]:
        await asyncio.sleep(0)
        return [f"{next(counter):032x}" for _ in items]

    async def serve() -> int:
        node = Node(config)
        node.send = store_nothing  # type: ignore[method-assign]
        await node.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await node.stop()
        return 0

    return asyncio.run(serve())


_WRK_LUA = """
wrk.method = "POST"
wrk.body = [[%s]]
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  io.write(string.format("BENCH-RESULT %%d %%d %%d %%d %%d %%d %%d %%d %%d\\n", summary.duration, summary.requests,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.status,
    summary.errors.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass
class Load:
    """What the load generator saw."""

    ok: int  # 2xx answers
    errors: int  # non-2xx answers and socket errors
    seconds: float
    p50_ms: float | None = None
    p99_ms: float | None = None

    @property
    def rate(self) -> float:
        return self.ok / self.seconds


def wrk_load(exe: str, url: str, seconds: int, workdir: Path) -> Load:
    script = workdir / "post.lua"
    script.write_text(_WRK_LUA % HTTP_JSON)
    cmd = [exe, "-t1", f"-c{HTTP_CONNS}", f"-d{seconds}s", "-s", str(script), url + HTTP_PATH]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, stdin=subprocess.DEVNULL)
    m = re.search(r"^BENCH-RESULT ((?:\d+ ?){9})$", r.stdout, re.M)
    if r.returncode != 0 or m is None:
        raise RuntimeError(f"wrk failed (exit {r.returncode}): {(r.stdout + r.stderr).strip()[-500:]}")
    duration_us, requests, connect, read, write, status, timeouts, p50, p99 = (int(x) for x in m.group(1).split())
    return Load(
        ok=requests - status,
        errors=status + connect + read + write + timeouts,
        seconds=duration_us / 1e6,
        p50_ms=p50 / 1000,
        p99_ms=p99 / 1000,
    )


def _aiohttp_load_child(url: str, seconds: float, out: Any) -> None:
    import aiohttp

    async def run() -> tuple[int, int, float]:
        ok = errors = 0
        conn = aiohttp.TCPConnector(limit=HTTP_CONNS)
        async with aiohttp.ClientSession(connector=conn) as session:
            start = time.perf_counter()
            end = start + seconds

            async def worker() -> None:
                nonlocal ok, errors
                while time.perf_counter() < end:  # no new request after the deadline; in-flight ones finish
                    try:
                        async with session.post(
                            url, data=HTTP_JSON, headers={"Content-Type": "application/json"}
                        ) as resp:
                            await resp.read()
                            if 200 <= resp.status < 300:
                                ok += 1
                            else:
                                errors += 1
                    except aiohttp.ClientError:
                        errors += 1

            await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(HTTP_CONNS))), seconds + 60)
            return ok, errors, time.perf_counter() - start

    out.put(asyncio.run(run()))


def aiohttp_load(url: str, seconds: int) -> Load:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_aiohttp_load_child, args=(url + HTTP_PATH, float(seconds), out), daemon=True)
    proc.start()
    try:
        ok, errors, elapsed = out.get(timeout=seconds + 90)
    finally:
        reap(proc)
    return Load(ok=ok, errors=errors, seconds=elapsed)


@dataclass
class HttpResult:
    load: Load
    landed: int
    client: str
    cpu: Cpu | None = None

    def __str__(self) -> str:
        lat = (
            ""
            if self.load.p50_ms is None
            else f", latency p50 {fmt_ms(self.load.p50_ms)} p99 {fmt_ms(self.load.p99_ms)}"
        )
        return (
            f"{fmt_rate(self.load.rate)} ({self.load.ok:,} ok, {self.load.errors:,} errors in "
            f"{self.load.seconds:.2f} s{lat}; {self.landed:,} landed in the spool)"
        ) + (f"; {self.cpu}" if self.cpu is not None else "")


def http_sends(empty: bool, seconds: int, wrk: str | None) -> HttpResult:
    with tmpdir("spoolq-net-http-") as base:
        b_dir = base / "node-b"
        with NodeProc("B-empty" if empty else "B", b_dir, _node_toml(b_dir), empty_handler=empty) as b:
            meter = CpuMeter({"B": b.pid})
            load = wrk_load(wrk, b.url, seconds, base) if wrk else aiohttp_load(b.url, seconds)
            cpu = meter.stop()
        landed = _inbox_count(b_dir, CHANNEL)
    return HttpResult(load, landed, "wrk" if wrk else "aiohttp", cpu)


# -- the rows -------------------------------------------------------------------------------------------------------


@dataclass
class Bench:
    quick: bool
    rows: list[int]
    http_client: str
    rounds: int = ROUNDS
    sizes: Sizes = field(default_factory=Sizes)
    installer: Installer = field(default_factory=Installer)
    wrk: str | None = None
    bs_exe: str | None = None
    redis_exe: str | None = None
    details: Details = field(default_factory=list)
    load_at_start: tuple[float, float, float] = field(default_factory=os.getloadavg)
    source: SourceWatch = field(default_factory=lambda: SourceWatch(spoolq_source))
    _template_base: Path | None = None
    _template: Path | None = None
    forward_rate: float | None = None  # row 1's median with the default max_in_flight

    def __post_init__(self) -> None:
        if self.quick:
            self.rounds = 1
            self.sizes = self.sizes.quick()

    # running ------------------------------------------------------------------------------------------------

    def setup(self) -> None:
        if 2 in self.rows:
            self.bs_exe = self._server_with_client("beanstalkd", "greenstalk")
            self.redis_exe = self._server_with_client("redis-server", "redis")
        if 3 in self.rows and self.http_client == "wrk":
            self.wrk = self.installer.apt("wrk", "wrk")
            if self.wrk is None:
                log("wrk is unavailable: row 3 falls back to an aiohttp client in a separate process")

    def _server_with_client(self, server: str, client: str) -> str | None:
        """A peer server's binary (a Debian package of that name), if its Python client (a PyPI package) is there."""
        if self.installer.pip(client, client):
            return self.installer.apt(server, server)
        log(f"unavailable: {server} (no {client} client)")
        return None

    def teardown(self) -> None:
        if self._template_base is not None:
            shutil.rmtree(self._template_base, ignore_errors=True)
            self._template_base = self._template = None

    def template(self) -> Path:
        """A spool whose outbox holds the row 1 backlog for peer b (built once, copied for every run)."""
        if self._template is None:
            self._template_base = Path(tempfile.mkdtemp(prefix="spoolq-net-template-", dir=TMP))
            self._template = self._template_base / "node-a"
            n = self.sizes.backlog
            log(f"[row 1] filling the template outbox: {n:,} messages for b (send_many(1000), durability full)")
            secs = fill_outbox(self._template, n, "full")
            log(f"[row 1] filled in {secs:.1f} s ({n / secs:,.0f} msg/s)")
        return self._template

    def interleave(self, row: str, variants: list[Variant[T]], rounds: int | None = None) -> dict[str, list[T]]:
        """Run every variant once per round (order rotated each round); returns the values per label."""
        runs = interleave(row, variants, self.rounds if rounds is None else rounds)
        for label, rs in runs.items():  # every round for the output, with the load average when it started
            self.details.append(
                (row, label, [f"FAILED: {r.error}" if r.error else f"{r.value} [load {r.load:.2f}]" for r in rs])
            )
        return {label: values(rs) for label, rs in runs.items()}

    def run(self) -> list[TableRow]:
        return run_rows(self.rows, {1: self.row1, 2: self.row2, 3: self.row3, 4: self.row4, 5: self.row5})

    # the report -------------------------------------------------------------------------------------------

    def intro(self) -> list[str]:
        return [f"Rounds: {self.rounds} for rows 1, 3 and 5 (median shown), 1 for rows 2 and 4."]

    def machine(self) -> list[str]:
        tools = []
        if self.wrk:
            tools.append(f"wrk: {tool_version([self.wrk, '-v'], '?')}")
        if self.bs_exe:
            tools.append(f"beanstalkd: {tool_version([self.bs_exe, '-v'], '?')}")
        if self.redis_exe:
            tools.append(f"redis-server: {tool_version([self.redis_exe, '--version'], '?')}")
        lines = [
            *machine_facts(
                self.load_at_start,
                before="before",
                after="after",
                python=f"; aiohttp {version('aiohttp')}; msgspec {version('msgspec')}",
            ),
            f"- spoolq {version('spoolq')} from {self.source.at_start}",
            f"- clients: greenstalk {version('greenstalk')}, redis {version('redis')}",
        ]
        if tools:
            lines.append("- " + "; ".join(tools))
        now = self.source.changed()
        if now is not None:
            lines.append(f"- CHANGED during the run: at the end, {now}")
        lines += [f"- not available: {note}" for note in self.installer.notes]
        lines.append(f"- temporary directories under {TMP}; bodies of {BODY_SIZE} random bytes")
        return lines

    # rows ---------------------------------------------------------------------------------------------------

    def row1(self) -> list[TableRow]:
        n = self.sizes.backlog
        cap = self.sizes.forward_cap(n)
        template = self.template()
        default, one, raw = (
            "max_in_flight 4 (default)",
            "max_in_flight 1",
            f"raw SQLite FULL {RAW_ROWS_PER_TXN:,} rows/txn",
        )
        vs: list[Variant[Any]] = [
            Variant(default, lambda: forward_from_template(template, n, cap, None)),
            Variant(one, lambda: forward_from_template(template, n, cap, 1)),
            Variant(raw, lambda: raw_sqlite_full(n)),
        ]
        got: dict[str, list[Any]] = self.interleave("1", vs)
        med = {k: median([r.rate for r in v]) for k, v in got.items()}
        complete = all(r.complete for k, v in got.items() if k != raw for r in v)
        self.forward_rate = med[default]
        quoted = "; ".join(f"{k}: ~{v:,}/s" for k, v in QUOTED_FORWARD.items())
        size = f"{n // 1000}k"
        out: list[TableRow] = []
        base = med[raw]
        for label in (default, one):
            mine = med[label]
            ratio = None if mine is None or not base else mine / base
            ratios = f"{fmt_ratio(mine, base)} of raw SQLite; " + "; ".join(
                f"{fmt_ratio(mine, v)} {k.split(',')[0]}" for k, v in QUOTED_FORWARD.items()
            )
            peers = f"{raw} (same run): {fmt_rate(base)}; {quoted} (quoted in the issue, not measured here)"
            if label == default:
                ok = None if ratio is None else ratio >= 0.25 and complete
                target = ">= 0.25x raw SQLite FULL 10,000 rows/txn"
                ratios += f"; {fmt_ratio(mine, med[one])} of max_in_flight 1"
            else:
                ok, target = None, "-"
            out.append(
                TableRow(
                    f"1. forward a {size} backlog A -> B, {label}, full",
                    fmt_rate(mine),
                    peers,
                    ratios,
                    target,
                    fmt_met(ok),
                )
            )
        if not complete:
            out[0].peers += " (INCOMPLETE runs: see every round)"
        return out

    def row2(self) -> list[TableRow]:
        secs = self.sizes.latency_seconds
        out: list[TableRow] = []
        for rate in LATENCY_RATES:
            mine_label = f"spoolq A -> B at {rate:,}/s"
            vs: list[Variant[Latency]] = [Variant(mine_label, lambda r=rate: latency_spoolq(secs, r))]  # type: ignore[misc]
            if rate == LATENCY_RATE and self.bs_exe:
                vs.append(Variant("beanstalkd -f0", lambda exe=self.bs_exe: latency_beanstalkd(exe, secs)))  # type: ignore[misc]
            if rate == LATENCY_RATE and self.redis_exe:
                vs.append(Variant("redis appendfsync always", lambda x=self.redis_exe: latency_redis(x, secs)))  # type: ignore[misc]
            got: dict[str, list[Latency]] = self.interleave("2", vs, rounds=1)
            mine = got.pop(mine_label)
            unavailable = []
            if rate == LATENCY_RATE and not self.bs_exe:
                unavailable.append("beanstalkd: unavailable")
            if rate == LATENCY_RATE and not self.redis_exe:
                unavailable.append("redis: unavailable")
            low = min((x.low for x in mine if x.low is not None), default=None)
            note = f", min {fmt_ms(low)}" + (f" ({mine[0].received:,}/{mine[0].expected:,} received)" if mine else "")
            out.append(
                latency_row(
                    f"2. latency send on A -> lease(wait) on B returns, at {rate:,} msg/s for {secs:g} s, full",
                    [(x.p50, x.p99) for x in mine],
                    {label: [(x.p50, x.p99) for x in vals] for label, vals in got.items()},
                    (1.5, 5.0),
                    versus=lambda label: f"of {label.split()[0]}",
                    peer_note=lambda label: f" (issue: {QUOTED_LATENCY[label]})",
                    mine_note=note,
                    unavailable=unavailable,
                )
            )
        return out

    def row3(self) -> list[TableRow]:
        secs = self.sizes.http_seconds
        wrk = self.wrk if self.http_client == "wrk" else None
        real, empty = "real node (stores, full)", "empty handler (stores nothing)"
        vs = [Variant(real, lambda: http_sends(False, secs, wrk)), Variant(empty, lambda: http_sends(True, secs, wrk))]
        got: dict[str, list[HttpResult]] = self.interleave("3", vs)
        mine = median([r.load.rate for r in got[real]])
        base = median([r.load.rate for r in got[empty]])
        ok = None if mine is None or base is None else mine >= 0.6 * base
        client = f"wrk -t1 -c{HTTP_CONNS} -d{secs}s" if wrk else f"aiohttp client, {HTTP_CONNS} tasks, {secs} s"
        rows = [
            TableRow(
                f"3. HTTP JSON single sends, {HTTP_CONNS} connections ({client}), node B",
                fmt_rate(mine),
                f"same server, handler stores nothing: {fmt_rate(base)}",
                f"{fmt_ratio(mine, base)} of the empty handler",
                ">= 0.60x the empty handler (ceiling ~10,000/s here)",
                fmt_met(ok),
            )
        ]
        # landed vs counted: wrk abandons (uncounted) up to one in-flight request per connection when it stops
        slack = HTTP_CONNS if wrk else 0
        diffs = [r.landed - r.load.ok for r in got[real]]
        errors = sum(r.load.errors for r in got[real])
        if diffs:
            shown = ", ".join(f"{r.landed:,} landed / {r.load.ok:,} counted" for r in got[real])
            good = all(0 <= d <= slack for d in diffs) and errors == 0
            extra = f" (landed - counted: {', '.join(str(d) for d in diffs)})"
            rows.append(
                TableRow(
                    "3b. messages in the real node's spool vs successful requests counted by the client",
                    shown + extra,
                    f"empty handler stored: {', '.join(str(r.landed) for r in got[empty]) or 'n/a'}",
                    "-",
                    "landed = counted"
                    + (f" (+ 0..{slack} left in flight when wrk stopped)" if slack else "")
                    + "; no errors",
                    fmt_met(good),
                )
            )
        return rows

    def row4(self) -> list[TableRow]:
        n = self.sizes.deep
        log(f"[row 4] daemon RSS while forwarding a {n:,}-message backlog")
        started = time.monotonic()
        load = os.getloadavg()[0]
        r, fill = forward_deep(n, self.sizes.forward_cap(n))
        log(f"[row 4] {r} ({time.monotonic() - started:.1f} s)")
        self.details.append(
            ("4", f"forward {n:,} with VmRSS sampling (fill took {fill:.1f} s)", [f"{r} [load {load:.2f}]"])
        )
        peak_mb = None if r.rss_peak_kib is None else r.rss_peak_kib / 1024
        hwm_mb = None if r.hwm_kib is None else r.hwm_kib / 1024
        worst = max((x for x in (peak_mb, hwm_mb) if x is not None), default=None)
        ok = None if worst is None else worst < 120 and r.complete
        size = "1M" if n == 1_000_000 else f"{n // 1000}k"
        return [
            TableRow(
                f"4. A's daemon RSS forwarding a {size} backlog A -> B, full",
                f"peak VmRSS {fmt_mb(r.rss_peak_kib)} (VmHWM {fmt_mb(r.hwm_kib)})",
                f"forwarding rate {fmt_rate(r.rate)} ({r.forwarded:,} in {r.seconds:.1f} s, B inbox {r.b_inbox:,});"
                f" VmRSS when A started {fmt_mb(r.rss_ready_kib)};"
                f" {r.samples} samples every {RSS_INTERVAL * 1000:.0f} ms",
                "-",
                "< 120 MB",
                fmt_met(ok),
            )
        ]

    def row5(self) -> list[TableRow]:
        n = self.sizes.backlog
        cap = self.sizes.forward_cap(n)
        template = self.template()
        alone, draining = (
            "forwarding alone",
            f"forwarding while a consumer on B drains (lease_many({DRAIN_BATCH}) + ack_many)",
        )
        vs = [
            Variant(alone, lambda: forward_from_template(template, n, cap, None)),
            Variant(draining, lambda: forward_from_template(template, n, cap, None, drain=True)),
        ]
        got: dict[str, list[ForwardResult]] = self.interleave("5", vs)
        mine = median([r.rate for r in got[draining]])
        base = median([r.rate for r in got[alone]])
        drained = median([r.drained / r.drain_seconds for r in got[draining] if r.drained and r.drain_seconds])
        complete = all(r.complete for v in got.values() for r in v)
        ok = None if mine is None or not base else mine >= 0.7 * base and complete
        return [
            TableRow(
                f"5. forward a {n // 1000}k backlog A -> B while a consumer on B drains it, full",
                f"{fmt_rate(mine)} forwarded (consumer: {fmt_rate(drained)} acked, from A's start to its last ack)",
                f"same backlog forwarded with no consumer (same run): {fmt_rate(base)}"
                + ("" if complete else " (INCOMPLETE runs: see every round)"),
                f"{fmt_ratio(mine, base)} of forwarding alone",
                ">= 0.70x forwarding alone",
                fmt_met(ok),
            )
        ]


# -- output -----------------------------------------------------------------------------------------------------

REPORT = Report(title="spoolq network benchmark (two nodes on loopback)", script="bench/network.py", separator="; ")


# -- main -------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = arg_parser(__doc__)
    parser.add_argument("--quick", action="store_true", help="1 round, smaller sizes, skip row 4")
    only = rows_option(ALL_ROWS, "1,3")
    parser.add_argument("--only", type=only, default=None, metavar="ROW,ROW", help="run these rows (1-4)")
    parser.add_argument(
        "--http-client",
        choices=["wrk", "aiohttp"],
        default="wrk",
        help="row 3's load generator (default wrk; aiohttp when wrk cannot be installed)",
    )
    parser.add_argument("--serve-empty-node", metavar="CONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_empty_node:
        return serve_empty_node(args.serve_empty_node)
    if args.only is None:
        args.only = [r for r in ALL_ROWS if not (args.quick and r in SLOW_ROWS)]
        if args.quick:
            log("--quick: row 4 (1M backlog) is skipped; name it with --only to run it (with 200,000)")
    started = time.monotonic()
    return run_suite(Bench(quick=args.quick, rows=args.only, http_client=args.http_client), REPORT, started, argv)


if __name__ == "__main__":
    sys.exit(main())
