"""beanstalkd protocol benchmark: ``spoolq-beanstalkd`` against real beanstalkd, on this machine, in one run.

Run it by hand from the repository root, in an environment where spoolq is installed::

    python bench/beanstalk.py              # full run: 3 interleaved rounds (~4 min here)
    python bench/beanstalk.py --quick      # 1 round, a fifth of the counts (under 30 s)
    python bench/beanstalk.py --only 2,4   # selected rows only (numbers below)

Progress goes to stderr. The result goes to stdout: a Markdown table with the columns
``workload | spoolq | peer figures | ratio | target | met?``, then every round's figure (with the CPU share
the server process used while the clock ran), the machine (nproc, load, Python, SQLite, greenstalk, both
servers' versions, the spoolq commit) and the total run time. Ratios are spoolq / peer, measured in the same
run.

Servers. Every measurement starts its own server, on 127.0.0.1 and a free port, with its own temporary
directory under /tmp (removed afterwards), and stops it with SIGTERM by its PID:

- spoolq ``full``:   ``spoolq-beanstalkd -b DIR -f 0`` (every put synced before ``INSERTED``)
- spoolq ``normal``: ``spoolq-beanstalkd -b DIR -F`` (durability normal, never an explicit sync)
- spoolq in-memory:  ``spoolq-beanstalkd`` without ``-b`` (jobs kept in memory only, as beanstalkd without ``-b``)
- beanstalkd ``-f0``: ``beanstalkd -b DIR -f 0`` (binlog, fsync after every write)
- beanstalkd in-memory: ``beanstalkd`` without ``-b``

beanstalkd is Debian's (``apt-get install -y beanstalkd`` when missing, as root); greenstalk is
pip-installed into this interpreter when missing. A server is ready when it answers ``list-tube-used``.

Clients: greenstalk, ``encoding=None``, over a socket with a 30 s timeout (so no call can hang), tube
``bench``, 100-byte random bodies, default priority, delay 0 and TTR 60. One-client rows run the client in
this process; the 8-client rows run 8 spawned processes, each with its own connection, released together by
a barrier. A consume measurement is prefilled outside the timer with exactly the jobs it will reserve
(pipelined puts over 16 connections, checked with ``stats-tube``); every consumer uses plain ``reserve``
with a fixed share of the jobs, so none ever waits for a job that is not there.

Rows:

 1. put, 1 client: spoolq ``normal`` and spoolq in-memory vs beanstalkd ``-f0`` and in-memory. Target for
    each spoolq variant: >= 0.7x in-memory beanstalkd (issue 9).
 2. put, 1 client: spoolq ``full`` vs beanstalkd ``-f0``. Target: >= 1.0x beanstalkd -f0.
 3. reserve + delete, 1 client: spoolq ``full``, ``normal`` and in-memory vs beanstalkd ``-f0`` and
    in-memory. Targets: full >= 1.0x beanstalkd -f0; normal and in-memory >= 0.7x in-memory beanstalkd.
 4. 8 clients (processes): (a) put, then (b) reserve + delete: spoolq ``full`` vs beanstalkd ``-f0``
    (in-memory beanstalkd for reference). Target: >= 1.0x beanstalkd -f0.

Rows 1-3 also run the in-memory (rows 1, 3) or ``full`` (row 2) spoolq server on asyncio's own event loop
(``SPOOLQ_LOOP=asyncio``) next to the default one (uvloop, when installed), and print the ratio of the two.

Durability is not the same on the consume side: spoolq ``full`` syncs every put before ``INSERTED``, but its
leases and acks (reserve, delete) are committed with SQLite ``synchronous=NORMAL`` (see ``spoolq/spool.py``,
"Durability"), while beanstalkd ``-f 0`` fsyncs its binlog after every write, deletes included. The output says so.

Method: the machine may be shared and noisy. Every row is measured in 3 rounds; a round runs every variant
of the row once, in an order rotated every round, and the table shows the median of the rounds. A
measurement runs its job count or stops after ``CAP`` seconds, whichever comes first, and reports jobs /
elapsed seconds (for 8 clients: all their jobs / (last client's end - first client's start)). Counts are
sized for roughly 1-5 s per measurement on a 2-core VM (fsync-bound variants do a few thousand jobs per
second, the others tens of thousands). ``--quick``: 1 round, a fifth of the counts. Every loop and wait is
bounded in count and time.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import multiprocessing as mp
import os
import queue
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import (
    BODY_SIZE,
    MASK,
    POOL,
    ROUNDS,
    TMP,
    Details,
    Installer,
    Report,
    SourceWatch,
    TableRow,
    Variant,
    arg_parser,
    fmt_met,
    fmt_rate,
    fmt_ratio,
    free_port,
    interleave,
    log,
    machine_facts,
    median,
    proc_cpu_seconds,
    reap,
    rows_option,
    run_rows,
    run_suite,
    spoolq_commit,
    stop_proc,
    tmpdir,
    tool_version,
    values,
    version,
)

TUBE = "bench"
CAP = 5.0  # seconds: a measurement stops after this long, done or not
HARD_CAP = 60.0  # seconds: no other loop of one measurement (prefill, start, stop, joins) runs longer
SOCKET_TIMEOUT = 30.0  # seconds: no client call waits longer
CLIENTS = 8
PREFILL_CONNS = 16
PREFILL_CHUNK = 64  # pipelined puts per connection before reading the answers
SHM = "/dev/shm"
ALL_ROWS = (1, 2, 3, 4)


# -- counts -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Counts:
    """Jobs per measurement: ``sync`` for variants that fsync every put or delete, ``fast`` for the others."""

    put_sync: int = 15_000
    put_fast: int = 60_000
    get_sync: int = 15_000
    get_fast: int = 30_000
    many_put_sync: int = 20_000
    many_put_fast: int = 100_000
    many_get_sync: int = 16_000
    many_get_fast: int = 80_000

    def quick(self) -> Counts:
        step = CLIENTS * 100
        small = {f.name: max(step, getattr(self, f.name) // 5 // step * step) for f in dataclasses.fields(self)}
        return dataclasses.replace(self, **small)


# -- servers ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """One server variant."""

    key: str  # short name used in labels
    label: str
    server: str  # "spoolq" or "beanstalkd"
    disk: bool  # a -b directory
    sync_every_op: bool  # fsync per put (and per delete for beanstalkd)
    args: tuple[str, ...]
    loop: str = "default"  # spoolq's event loop: "default" (uvloop when installed) or "asyncio" (SPOOLQ_LOOP)


S_FULL = Kind("spoolq full", "spoolq full (-b DIR -f 0)", "spoolq", True, True, ("-f", "0"))
S_NORMAL = Kind("spoolq normal", "spoolq normal (-b DIR -F)", "spoolq", True, False, ("-F",))
S_MEM = Kind("spoolq in-memory", "spoolq in-memory (no -b)", "spoolq", False, False, ())
S_FULL_AIO = Kind(
    "spoolq full, asyncio loop", "spoolq full (-b DIR -f 0), SPOOLQ_LOOP=asyncio", "spoolq", True, True, ("-f", "0"),
    "asyncio",
)
S_MEM_AIO = Kind(
    "spoolq in-memory, asyncio loop", "spoolq in-memory (no -b), SPOOLQ_LOOP=asyncio", "spoolq", False, False, (),
    "asyncio",
)
B_F0 = Kind("beanstalkd -f0", "beanstalkd -b DIR -f 0", "beanstalkd", True, True, ("-f", "0"))
B_MEM = Kind("beanstalkd in-memory", "beanstalkd in-memory (no -b)", "beanstalkd", False, False, ())


@dataclass(frozen=True)
class Exes:
    spoolq: list[str]
    beanstalkd: str | None


def find_spoolq_beanstalkd() -> list[str]:
    """The ``spoolq-beanstalkd`` command of this interpreter's environment."""
    beside = Path(sys.executable).parent / "spoolq-beanstalkd"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    found = shutil.which("spoolq-beanstalkd")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from spoolq.beanstalk.standalone import main; sys.exit(main())"]


def _shm_dir_of(pid: int) -> str | None:
    """The temporary spool directory under SHM that process ``pid`` has open (spoolq without ``-b``), or None."""
    prefix = os.path.join(SHM, "spoolq-beanstalkd-")
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith(prefix):
                    return os.path.dirname(target)
    except OSError:
        pass
    return None


@dataclass
class Running:
    port: int
    pid: int
    cpu_mark: float | None = None
    cpu_share: float | None = None  # CPU seconds of the server / elapsed seconds, while the clock ran

    def addr(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def clock_started(self) -> None:
        self.cpu_mark = proc_cpu_seconds(self.pid)

    def clock_stopped(self, elapsed: float) -> None:
        now = proc_cpu_seconds(self.pid)
        if self.cpu_mark is not None and now is not None and elapsed > 0:
            self.cpu_share = (now - self.cpu_mark) / elapsed


def _ready(port: int, proc: subprocess.Popen[bytes], deadline: float) -> bool:
    """Wait until the server answers ``list-tube-used`` (spoolq-beanstalkd listens before it can answer)."""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
                sock.settimeout(max(0.1, deadline - time.monotonic()))
                sock.sendall(b"list-tube-used\r\n")
                got = b""
                while not got.endswith(b"\r\n") and len(got) < 200:
                    chunk = sock.recv(200)
                    if not chunk:
                        break
                    got += chunk
                if got == b"USING default\r\n":
                    return True
        except OSError:
            pass
        time.sleep(0.02)
    return False


@contextlib.contextmanager
def server(kind: Kind, exes: Exes) -> Iterator[Running]:
    """Start one server of ``kind`` on a free port with a fresh directory; stop it (by PID) afterwards."""
    own_shm: str | None = None  # the in-memory spoolq's directory (found via /proc/<pid>/fd)
    with tmpdir("spoolq-bench-bs-") as base:
        try:
            for attempt in range(3):  # the free port may be taken between probing and binding
                port = free_port()
                if kind.server == "spoolq":
                    cmd = [*exes.spoolq, "-l", "127.0.0.1", "-p", str(port)]
                    if kind.disk:
                        (base / "spool").mkdir(exist_ok=True)  # like beanstalkd, it needs the directory
                        cmd += ["-b", str(base / "spool")]
                else:
                    assert exes.beanstalkd is not None
                    cmd = [exes.beanstalkd, "-l", "127.0.0.1", "-p", str(port)]
                    if kind.disk:
                        (base / "binlog").mkdir(exist_ok=True)
                        cmd += ["-b", str(base / "binlog")]
                cmd += list(kind.args)
                errpath = base / f"stderr-{attempt}.txt"
                env = {k: v for k, v in os.environ.items() if k != "SPOOLQ_LOOP"}
                if kind.loop != "default":
                    env["SPOOLQ_LOOP"] = kind.loop
                with open(errpath, "wb") as err:
                    proc = subprocess.Popen(
                        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env
                    )
                try:
                    if _ready(port, proc, time.monotonic() + 20):
                        if kind.server == "spoolq" and not kind.disk:
                            own_shm = _shm_dir_of(proc.pid)
                        yield Running(port, proc.pid)
                        return
                    tail = errpath.read_text(errors="replace").strip()[-500:]
                    log(f"    {kind.key} did not start (exit {proc.poll()}): {' '.join(cmd)}: {tail}")
                finally:
                    stop_proc(proc, 15.0, kind.key)
            raise RuntimeError(f"{kind.key} did not start")
        finally:
            if own_shm is not None and os.path.exists(own_shm):  # only the directory of the server we started
                log(f"    warning: {own_shm} was left behind by the stopped server; removing it")
                shutil.rmtree(own_shm, ignore_errors=True)


# -- clients ------------------------------------------------------------------------------------------------


def _client(addr: tuple[str, int], *, use: bool = False, watch: bool = False) -> Any:
    import greenstalk

    sock = socket.create_connection(addr, timeout=SOCKET_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return greenstalk.Client(sock, encoding=None, use=TUBE if use else "default", watch=TUBE if watch else "default")


def _ready_jobs(addr: tuple[str, int]) -> int:
    with _client(addr) as c:
        return int(c.stats_tube(TUBE)["current-jobs-ready"])


def prefill(addr: tuple[str, int], n: int) -> None:
    """Put ``n`` jobs into TUBE: pipelined puts over PREFILL_CONNS connections (a spoolq server commits the
    puts of one event-loop turn together, one per connection). Checks the tube holds them all."""
    started = time.monotonic()
    deadline = started + HARD_CAP
    socks: list[socket.socket] = []
    try:
        for _ in range(min(PREFILL_CONNS, max(1, n // PREFILL_CHUNK))):
            s = socket.create_connection(addr, timeout=SOCKET_TIMEOUT)
            s.sendall(b"use " + TUBE.encode() + b"\r\n")
            socks.append(s)
        want_use = b"USING " + TUBE.encode() + b"\r\n"
        for s in socks:
            if _read_lines(s, 1, deadline)[0] != want_use:
                raise RuntimeError("prefill: unexpected answer to use")
        done = 0
        while done < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"prefill stopped by its {HARD_CAP:.0f} s cap at {done:,} of {n:,}")
            sent: dict[socket.socket, int] = {}
            for s in socks:
                k = min(PREFILL_CHUNK, n - done - sum(sent.values()))
                if k <= 0:
                    break
                base = done + sum(sent.values())
                s.sendall(
                    b"".join(b"put 65536 0 60 %d\r\n%s\r\n" % (BODY_SIZE, POOL[(base + i) & MASK]) for i in range(k))
                )
                sent[s] = k
            for s, k in sent.items():
                for line in _read_lines(s, k, deadline):
                    if not line.startswith(b"INSERTED "):
                        raise RuntimeError(f"prefill: unexpected answer {line[:60]!r}")
                done += k
    finally:
        for s in socks:
            s.close()
    have = _ready_jobs(addr)
    if have != n:
        raise RuntimeError(f"prefill: the tube holds {have:,} ready jobs, not {n:,}")
    log(f"    prefilled {n:,} jobs in {time.monotonic() - started:.1f} s")


def _read_lines(s: socket.socket, k: int, deadline: float) -> list[bytes]:
    """Read exactly ``k`` CRLF-terminated lines (the answers to ``k`` pipelined commands)."""
    buf = b""
    while buf.count(b"\r\n") < k:
        if time.monotonic() > deadline:
            raise RuntimeError("timed out reading answers")
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError("the server closed the connection")
        buf += chunk
    lines = buf.split(b"\r\n")
    if len(lines) != k + 1 or lines[-1]:
        raise RuntimeError("more answers than commands")
    return [ln + b"\r\n" for ln in lines[:-1]]


# -- measurements -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    rate: float  # jobs per second
    jobs: int
    seconds: float
    server_cpu: float | None  # CPU share of the server process while the clock ran (1.0 = one core)

    def show(self, load: float | None = None) -> str:
        """The figure, with the 1-minute load average when the measurement started (if given)."""
        cpu = "n/a" if self.server_cpu is None else f"{self.server_cpu:.0%}"
        at = "" if load is None else f", load {load:.2f}"
        return f"{fmt_rate(self.rate)} ({self.jobs:,} jobs in {self.seconds:.2f} s, server CPU {cpu}{at})"


def _timed_loop(n: int, op: Callable[[int], None], run: Running) -> Result:
    start = time.perf_counter()
    end = start + CAP
    run.clock_started()
    done = 0
    now = start
    while done < n:
        op(done)
        done += 1
        now = time.perf_counter()
        if now >= end:
            break
    run.clock_stopped(now - start)
    return Result(done / (now - start), done, now - start, run.cpu_share)


def put_one(kind: Kind, exes: Exes, n: int) -> Result:
    """put, one client in this process."""
    with server(kind, exes) as run, _client(run.addr(), use=True) as c:
        put = c.put
        for i in range(10):  # warm-up: creates the tube / channel
            put(POOL[i])

        def op(i: int) -> None:
            put(POOL[i & MASK])

        return _timed_loop(n, op, run)


def get_one(kind: Kind, exes: Exes, n: int) -> Result:
    """reserve + delete one at a time, one client in this process, of ``n`` jobs prefilled."""
    with server(kind, exes) as run:
        prefill(run.addr(), n)
        with _client(run.addr(), watch=True) as c:
            reserve, delete = c.reserve, c.delete

            def op(i: int) -> None:
                delete(reserve())

            return _timed_loop(n, op, run)


def _worker(addr: tuple[str, int], mode: str, quota: int, offset: int, barrier: Any, out: Any) -> None:
    """One of the concurrent clients (a spawned process): ``quota`` puts or reserve+deletes, after the barrier."""
    try:
        with _client(addr, use=mode == "put", watch=mode == "get") as c:
            if mode == "put":
                c.put(POOL[offset & MASK])  # warm-up (creates the tube)
            barrier.wait(HARD_CAP)
            t0 = time.monotonic()
            end = t0 + CAP
            done = 0
            t1 = t0
            if mode == "put":
                put = c.put
                for i in range(quota):
                    put(POOL[(offset + i) & MASK])
                    done += 1
                    t1 = time.monotonic()
                    if t1 >= end:
                        break
            else:
                reserve, delete = c.reserve, c.delete
                for _ in range(quota):
                    delete(reserve())
                    done += 1
                    t1 = time.monotonic()
                    if t1 >= end:
                        break
            out.put(("ok", done, t0, t1))
    except BaseException as e:  # report it rather than leave the parent waiting
        with contextlib.suppress(Exception):
            barrier.abort()
        out.put(("error", f"{type(e).__name__}: {e}", 0.0, 0.0))


def many(kind: Kind, exes: Exes, mode: str, n: int, clients: int = CLIENTS) -> Result:
    """``clients`` processes at once, each with its own connection: puts, or reserve+deletes of ``n`` prefilled
    jobs (each client takes n / clients)."""
    quota = n // clients
    n = quota * clients
    ctx = mp.get_context("spawn")
    with server(kind, exes) as run:
        if mode == "get":
            prefill(run.addr(), n)
        barrier = ctx.Barrier(clients + 1)
        out = ctx.Queue()
        procs = [
            ctx.Process(target=_worker, args=(run.addr(), mode, quota, k * quota, barrier, out), daemon=True)
            for k in range(clients)
        ]
        for p in procs:
            p.start()
        try:
            barrier.wait(HARD_CAP)  # every client connected (and warmed up)
            run.clock_started()
            cpu_t0 = time.monotonic()
            results: list[tuple[str, Any, float, float]] = []
            deadline = time.monotonic() + CAP + HARD_CAP
            while len(results) < clients:
                try:
                    results.append(out.get(timeout=max(0.1, deadline - time.monotonic())))
                except queue.Empty:
                    raise RuntimeError(f"only {len(results)} of {clients} clients reported") from None
            run.clock_stopped(time.monotonic() - cpu_t0)
        finally:
            for p in procs:
                reap(p)  # our own children, by their PIDs
        errors = [r[1] for r in results if r[0] != "ok"]
        if errors:
            raise RuntimeError(f"client failed: {errors[0]}")
        done = sum(r[1] for r in results)
        t0 = min(r[2] for r in results)
        t1 = max(r[3] for r in results)
        return Result(done / (t1 - t0), done, t1 - t0, run.cpu_share)


# -- the rows -----------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.rounds = 1 if args.quick else ROUNDS
        self.counts = Counts().quick() if args.quick else Counts()
        self.rows: list[int] = args.only
        self.exes = Exes(find_spoolq_beanstalkd(), None)
        self.details: Details = []
        self.load_at_start = os.getloadavg()
        # every spoolq-beanstalkd is started afresh from the installed (editable) source: note it at both ends
        self.source = SourceWatch(spoolq_commit)

    def setup(self) -> None:
        installer = Installer()
        if not installer.pip("greenstalk", "greenstalk"):
            raise SystemExit("greenstalk is needed (python -m pip install greenstalk)")
        self.exes = Exes(self.exes.spoolq, installer.apt("beanstalkd", "beanstalkd"))

    def teardown(self) -> None:
        """Nothing to remove: every server removes its own directory when it stops."""

    def count(self, kind: Kind, which: str) -> int:
        return int(getattr(self.counts, f"{which}_{'sync' if kind.sync_every_op else 'fast'}"))

    def interleave(
        self, row: str, kinds: list[Kind], make: Callable[[Kind], Callable[[], Result]]
    ) -> dict[str, float | None]:
        """Run ``make(kind)`` for every kind once per round (order rotated each round; beanstalkd's kinds only when
        it is there); returns the median rate per kind."""
        kinds = [k for k in kinds if k.server == "spoolq" or self.exes.beanstalkd]
        variants = [Variant(k.key, make(k)) for k in kinds]
        runs = interleave(row, variants, self.rounds, show=Result.show, took=" with start, prefill and stop")
        for k in kinds:
            self.details.append((row, k.label, [v.show(r.load) for r in runs[k.key] if (v := r.value) is not None]))
        return {k.key: median([r.rate for r in values(runs[k.key])]) for k in kinds}

    def _row(
        self, name: str, mine: Kind, med: dict[str, float | None], peers: list[Kind], target_peer: Kind, factor: float
    ) -> TableRow:
        me = med.get(mine.key)
        shown = [p for p in peers if p.key in med]
        peer_text = "; ".join(f"{p.label}: {fmt_rate(med[p.key])}" for p in shown) or "beanstalkd unavailable"
        ratio_text = "; ".join(f"{fmt_ratio(me, med[p.key])} {p.key}" for p in shown) or "-"
        goal = med.get(target_peer.key)
        ok = None if me is None or goal is None else me >= factor * goal
        target = f">= {factor:.1f}x {target_peer.key}"
        return TableRow(f"{name} — {mine.label}", fmt_rate(me), peer_text, ratio_text, target, fmt_met(ok))

    def row1(self) -> list[TableRow]:
        kinds = [S_NORMAL, S_MEM, S_MEM_AIO, B_F0, B_MEM]
        med = self.interleave("1", kinds, lambda k: lambda: put_one(k, self.exes, self.count(k, "put")))
        name = "1. put, 1 client"
        return [
            *(self._row(name, s, med, [B_MEM, B_F0], B_MEM, 0.7) for s in (S_NORMAL, S_MEM, S_MEM_AIO)),
            self._loops(name, S_MEM, S_MEM_AIO, med),
        ]

    def row2(self) -> list[TableRow]:
        kinds = [S_FULL, S_FULL_AIO, B_F0]
        med = self.interleave("2", kinds, lambda k: lambda: put_one(k, self.exes, self.count(k, "put")))
        name = "2. put, 1 client"
        return [
            *(self._row(name, s, med, [B_F0], B_F0, 1.0) for s in (S_FULL, S_FULL_AIO)),
            self._loops(name, S_FULL, S_FULL_AIO, med),
        ]

    def row3(self) -> list[TableRow]:
        kinds = [S_FULL, S_NORMAL, S_MEM, S_MEM_AIO, B_F0, B_MEM]
        med = self.interleave("3", kinds, lambda k: lambda: get_one(k, self.exes, self.count(k, "get")))
        name = "3. reserve + delete, 1 client"
        return [
            self._row(name, S_FULL, med, [B_F0, B_MEM], B_F0, 1.0),
            self._row(name, S_NORMAL, med, [B_MEM, B_F0], B_MEM, 0.7),
            self._row(name, S_MEM, med, [B_MEM, B_F0], B_MEM, 0.7),
            self._row(name, S_MEM_AIO, med, [B_MEM, B_F0], B_MEM, 0.7),
            self._loops(name, S_MEM, S_MEM_AIO, med),
        ]

    def _loops(self, name: str, default: Kind, aio: Kind, med: dict[str, float | None]) -> TableRow:
        """spoolq on its default loop (uvloop) against the same server on asyncio's loop, same run."""
        me, base = med.get(default.key), med.get(aio.key)
        return TableRow(
            f"{name} — {default.key}: default loop (uvloop) vs asyncio's",
            fmt_rate(me),
            f"{aio.label}: {fmt_rate(base)}",
            f"{fmt_ratio(me, base)} asyncio loop",
            "-",
            "-",
        )

    def row4(self) -> list[TableRow]:
        kinds = [S_FULL, B_F0, B_MEM]
        out = []
        for sub, mode, which, what in (("4a", "put", "many_put", "put"), ("4b", "get", "many_get", "reserve + delete")):

            def make(k: Kind, m: str = mode, w: str = which) -> Callable[[], Result]:
                return lambda: many(k, self.exes, m, self.count(k, w))

            med = self.interleave(sub, kinds, make)
            name = f"{sub}. {what}, {CLIENTS} clients (processes)"
            out.append(self._row(name, S_FULL, med, [B_F0, B_MEM], B_F0, 1.0))
        return out

    def run(self) -> list[TableRow]:
        return run_rows(self.rows, {1: self.row1, 2: self.row2, 3: self.row3, 4: self.row4})

    # the report -------------------------------------------------------------------------------------------

    def intro(self) -> list[str]:
        c = self.counts
        return [
            f"Rounds: {self.rounds} (median shown); a measurement stops after its count or {CAP:g} s. Counts "
            f"(fsync-per-op variants / others): put 1 client {c.put_sync:,} / {c.put_fast:,}; reserve+delete 1 client "
            f"{c.get_sync:,} / {c.get_fast:,}; put {CLIENTS} clients {c.many_put_sync:,} / {c.many_put_fast:,}; "
            f"reserve+delete {CLIENTS} clients {c.many_get_sync:,} / {c.many_get_fast:,}.",
            "Note: spoolq `full` syncs every put before `INSERTED`; its leases and acks (reserve, delete) are "
            "committed with SQLite `synchronous=NORMAL`, not synced one by one. beanstalkd `-f 0` fsyncs its binlog "
            "after every write, deletes included.",
        ]

    def _source_line(self) -> str:
        now = self.source.changed()
        if now is None:
            return f"- spoolq (and spoolq-beanstalkd) from {self.source.at_start}"
        return (
            f"- spoolq (and spoolq-beanstalkd) from {self.source.at_start} at the start, {now} at the end: "
            "the source changed during the run, so its servers may have run different code"
        )

    def machine(self) -> list[str]:
        bs = tool_version([self.exes.beanstalkd, "-v"]) if self.exes.beanstalkd else "unavailable"
        return [
            *machine_facts(self.load_at_start),
            f"- spoolq {version('spoolq')}; greenstalk {version('greenstalk')}; msgspec {version('msgspec')}",
            f"- beanstalkd: {bs} ({self.exes.beanstalkd or '-'}); spoolq-beanstalkd: "
            f"{tool_version([*self.exes.spoolq, '-v'])} ({' '.join(self.exes.spoolq)})",
            self._source_line(),
            f"- temporary directories under {TMP}; bodies of {BODY_SIZE} random bytes",
        ]


# -- output -------------------------------------------------------------------------------------------------

REPORT = Report(
    title="spoolq-beanstalkd vs beanstalkd",
    script="bench/beanstalk.py",
    separator="; ",
    every_round="Every round (rate, jobs, seconds, CPU share of the server process, 1-minute load at the start)",
)


# -- main ---------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = arg_parser(__doc__)
    parser.add_argument("--quick", action="store_true", help="1 round, a fifth of the counts")
    only = rows_option(ALL_ROWS, "1,3")
    parser.add_argument("--only", type=only, default=list(ALL_ROWS), metavar="ROW,ROW", help="rows (1-4)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    return run_suite(Bench(args), REPORT, started, argv)


if __name__ == "__main__":
    sys.exit(main())
