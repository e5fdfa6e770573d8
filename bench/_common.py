"""What the benchmark scripts in this folder share (``local.py``, ``network.py``, ``beanstalk.py``).

Not a benchmark itself. The scripts import it with ``from _common import ...``, which works because running
``python bench/<script>.py`` puts the script's folder first on ``sys.path`` (and processes spawned by
multiprocessing inherit that path).

- bodies: a pool of random bodies used round robin, and time-stamped bodies for latency runs;
- progress: ``log`` to stderr with the seconds since the start;
- rounds: ``Variant`` and ``interleave`` (every variant once per round, the order rotated every round), medians,
  percentiles;
- output: the Markdown report (``TableRow``, ``Report``), figure formatting, machine facts (nproc, load
  average, platform, Python, SQLite, package and tool versions), where spoolq comes from (its git commit, and
  whether its source changed during the run);
- command line: the parser and the ``--only ROW,ROW`` type (``arg_parser``, ``rows_option``), running the
  selected rows (``run_rows``) and the whole benchmark (``run_suite``);
- processes: free ports, starting a server subprocess and waiting until it accepts connections, stopping it by
  its PID, reaping spawned processes, CPU and memory figures from /proc;
- installing what is missing: ``Installer`` (Debian packages with apt-get, Python packages with pip).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import math
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Generic, Protocol, TypeVar

T = TypeVar("T")

BODY_SIZE = 100
POOL_SIZE = 4096  # distinct random bodies, used round robin
MASK = POOL_SIZE - 1
POOL: list[bytes] = [os.urandom(BODY_SIZE) for _ in range(POOL_SIZE)]
TMP = "/tmp"
ROUNDS = 3
REPO = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")

_T0 = time.monotonic()


def log(msg: str) -> None:
    """A progress line on stderr, with the seconds since the start."""
    print(f"[{time.monotonic() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def stamped(i: int) -> bytes:
    """Body ``i`` of the pool, starting with ``time.time()`` as text and a space (for latency runs)."""
    stamp = f"{time.time():.6f} ".encode()
    return stamp + POOL[i & MASK][: BODY_SIZE - len(stamp)]


def paced(send: Callable[[bytes], object], total: int, rate: int, cap: float) -> None:
    """Send ``total`` stamped bodies at ``rate`` per second; stop early (with a warning) after ``cap`` seconds."""
    start = time.perf_counter() + 0.01
    end = time.monotonic() + cap
    for i in range(total):
        if time.monotonic() > end:
            log(f"    warning: sending stopped by its {cap:.0f} s cap at {i:,} of {total:,}")
            return
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        send(stamped(i))


@contextlib.contextmanager
def tmpdir(prefix: str) -> Iterator[Path]:
    """A fresh directory under TMP whose name starts with ``prefix``; removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir=TMP))
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- figures ------------------------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    k = max(0, min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[k]


def latency_ms(lats: list[float], expected: int) -> tuple[float, float]:
    """(p50, p99) in ms of latencies in seconds (sorts ``lats``); warns when fewer than ``expected`` came."""
    if len(lats) < expected:
        log(f"    warning: the consumer received {len(lats):,} of {expected:,} messages")
    if not lats:
        raise RuntimeError("no message was received")
    lats.sort()
    return percentile(lats, 0.50) * 1000, percentile(lats, 0.99) * 1000


def fmt_rate(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.0f}/s"


def fmt_ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def fmt_met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "NO")


def fmt_ms(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f} ms"


def fmt_mb(kib: float | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:.1f} MB"


# -- rounds -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant(Generic[T]):
    """One thing measured in a row: a label, and the call that measures it once."""

    label: str
    run: Callable[[], T]


@dataclass(frozen=True)
class Run(Generic[T]):
    """One measurement of a variant: its value (None when it failed: then ``error`` says why) and the 1-minute
    load average when it started."""

    value: T | None
    load: float
    error: str = ""


def _show_value(value: object, load: float) -> str:
    return str(value)


def interleave(
    row: str, variants: Sequence[Variant[T]], rounds: int, show: Callable[[T, float], str] = _show_value, took: str = ""
) -> dict[str, list[Run[T]]]:
    """Run every variant once per round, in an order rotated every round; returns the runs per label.

    Logs every run: ``show(value, load)`` and the seconds it took (followed by ``took``), or why it failed.
    """
    runs: dict[str, list[Run[T]]] = {v.label: [] for v in variants}
    for r in range(rounds):
        shift = r % len(variants)
        for v in [*variants[shift:], *variants[:shift]]:
            started = time.monotonic()
            load = os.getloadavg()[0]
            head = f"[row {row}] round {r + 1}/{rounds} {v.label}"
            try:
                value = v.run()
            except Exception as e:
                error = f"{type(e).__name__}: {e}"
                log(f"{head}: FAILED: {error}")
                runs[v.label].append(Run(None, load, error))
                continue
            runs[v.label].append(Run(value, load))
            log(f"{head}: {show(value, load)} ({time.monotonic() - started:.1f} s{took})")
    return runs


def values(runs: Sequence[Run[T]]) -> list[T]:
    """The values of the runs that did not fail."""
    return [r.value for r in runs if r.value is not None]


# -- the report ---------------------------------------------------------------------------------------------

Details = list[tuple[str, str, list[str]]]  # (row, label, each round's figure as shown), under "Every round"


@dataclass
class TableRow:
    workload: str
    spoolq: str
    peers: str
    ratio: str
    target: str
    met: str

    def markdown(self) -> str:
        return f"| {self.workload} | {self.spoolq} | {self.peers} | {self.ratio} | {self.target} | {self.met} |"


def latency_row(
    workload: str,
    mine: Sequence[tuple[float, float]],
    peers: Mapping[str, Sequence[tuple[float, float]]],
    limits: tuple[float, float],
    *,
    versus: Callable[[str], str],
    peer_note: Callable[[str], str] = lambda label: "",
    mine_note: str = "",
    unavailable: Sequence[str] = (),
) -> TableRow:
    """A latency row from each round's (p50, p99) in ms: spoolq's medians (followed by ``mine_note``), each peer's
    (followed by ``peer_note(label)``) and unavailable peers, the ratios (``versus(label)`` names the peer), and
    whether spoolq's p50 and p99 are under ``limits``."""
    p50, p99 = median([a for a, _ in mine]), median([b for _, b in mine])
    shown: list[str] = []
    ratios: list[str] = []
    for label, vals in peers.items():
        b50, b99 = median([a for a, _ in vals]), median([b for _, b in vals])
        shown.append(f"{label}: p50 {fmt_ms(b50)}, p99 {fmt_ms(b99)}{peer_note(label)}")
        ratios.append(f"p50 {fmt_ratio(p50, b50)}, p99 {fmt_ratio(p99, b99)} {versus(label)}")
    ok = None if p50 is None or p99 is None else p50 < limits[0] and p99 < limits[1]
    return TableRow(
        workload,
        f"p50 {fmt_ms(p50)}, p99 {fmt_ms(p99)}{mine_note}",
        "; ".join([*shown, *unavailable]) or "-",
        "; ".join(ratios) or "-",
        f"p50 < {limits[0]:g} ms, p99 < {limits[1]:g} ms",
        fmt_met(ok),
    )


def run_rows(selected: Sequence[int], rows: Mapping[int, Callable[[], list[TableRow]]]) -> list[TableRow]:
    """Run the selected rows in order; a row that fails becomes a ``(failed)`` line of the table."""
    table: list[TableRow] = []
    for num in selected:
        log(f"== row {num}")
        try:
            table.extend(rows[num]())
        except Exception as e:
            log(f"row {num} failed: {type(e).__name__}: {e}")
            table.append(TableRow(f"{num}. (failed)", f"error: {type(e).__name__}: {e}", "", "", "", "n/a"))
    return table


@dataclass(frozen=True)
class Report:
    """How a benchmark prints its result (the content comes from its ``Suite``)."""

    title: str
    script: str  # the script as shown in the command line, e.g. "bench/local.py"
    separator: str  # between the figures of one variant's rounds, under "Every round"
    every_round: str = "Every round"  # that section's heading

    def markdown(
        self,
        argv: Sequence[str],
        intro: Sequence[str],
        table: Sequence[TableRow],
        details: Details,
        machine: Sequence[str],
        elapsed: float,
    ) -> str:
        """Title, command, the ``intro`` paragraphs, the table, every round, the machine and the run time."""
        lines = [f"## {self.title}", "", f"Command: `{' '.join(['python', self.script, *argv])}`", ""]
        for paragraph in intro:
            lines += [paragraph, ""]
        lines += [
            "| workload | spoolq | peer figures | ratio | target | met? |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        lines += [r.markdown() for r in table]
        lines += ["", f"### {self.every_round}", ""]
        lines += [f"- row {row}, {label}: {self.separator.join(shown) or 'no result'}" for row, label, shown in details]
        lines += ["", "### Machine", "", *machine, "", f"Total run time: {elapsed:.0f} s ({elapsed / 60:.1f} min)"]
        return "\n".join(lines)


# -- the machine --------------------------------------------------------------------------------------------


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def tool_version(cmd: list[str], missing: str = "unknown") -> str:
    """The first line a tool prints for ``cmd`` (e.g. ``[exe, "-v"]``), or ``missing``."""
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return missing
    text = (r.stdout + r.stderr).strip()
    return text.splitlines()[0] if text else missing


def machine_facts(
    load_at_start: tuple[float, float, float], *, before: str = "at start", after: str = "at the end", python: str = ""
) -> list[str]:
    """nproc with the load average at the start and now, platform, Python (followed by ``python``) and SQLite."""

    def loads(xs: tuple[float, float, float]) -> str:
        return ", ".join(f"{x:.2f}" for x in xs)

    return [
        f"- nproc: {os.cpu_count()} (usable: {len(os.sched_getaffinity(0))}); load average {before}: "
        f"{loads(load_at_start)}; {after}: {loads(os.getloadavg())}",
        f"- platform: {platform.platform()}",
        f"- Python {platform.python_version()} ({sys.executable}); SQLite {sqlite3.sqlite_version}{python}",
    ]


def git(where: Path, *args: str) -> str | None:
    """What ``git -C where ARGS`` prints (stripped), or None when it fails."""
    try:
        r = subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def spoolq_dir() -> Path | None:
    """The directory spoolq is imported from (found without importing it), or None."""
    spec = importlib.util.find_spec("spoolq")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).resolve().parent


def spoolq_commit() -> str:
    """Where spoolq is imported from, and its git commit (with "+ uncommitted changes" when dirty)."""
    where = spoolq_dir()
    if where is None:
        return "spoolq not found"
    head = git(where, "rev-parse", "--short", "HEAD")
    if head is None:
        return str(where)
    dirty = git(where, "status", "--porcelain", "--", ".")
    return f"{where} at {head}" + (" + uncommitted changes" if dirty else "")


def spoolq_source() -> str:
    """Where spoolq is imported from, the commit of this repository, what is uncommitted, and a hash of spoolq's
    source files (which tells whether the code under test changed during the run, committed or not)."""
    where = spoolq_dir()
    if where is None:
        return "spoolq not found"
    digest = hashlib.sha256()
    for f in sorted(where.rglob("*.py")):
        with contextlib.suppress(OSError):
            digest.update(f.relative_to(where).as_posix().encode() + b"\0" + f.read_bytes())
    where_text = f"{where} (source sha256 {digest.hexdigest()[:12]})"
    head = git(REPO, "rev-parse", "--short", "HEAD")
    if head is None:
        return f"{where_text}, not a git checkout"
    status = git(REPO, "status", "--porcelain") or ""
    changed = [line[3:] for line in status.splitlines() if line.strip()]
    in_pkg = [c for c in changed if c.startswith("spoolq/")]
    dirty = f"uncommitted changes in spoolq/: {', '.join(in_pkg)}" if in_pkg else "spoolq/ clean"
    others = len(changed) - len(in_pkg)
    if others:
        dirty += f"; {others} other changed or untracked files in the repository"
    return f"{where_text}, commit {head} ({dirty})"


class SourceWatch:
    """spoolq's source as ``describe`` tells it at the start of a run, to tell at the end whether it changed."""

    def __init__(self, describe: Callable[[], str]) -> None:
        self.describe = describe
        self.at_start = describe()

    def changed(self) -> str | None:
        """The description now, when it differs from the one at the start; else None."""
        now = self.describe()
        return None if now == self.at_start else now


# -- processes ------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, cap: float = 10.0) -> None:
    """Wait until something accepts connections on 127.0.0.1:``port``; fail if ``proc`` exits first."""
    end = time.monotonic() + cap
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{what} did not accept connections on port {port} within {cap:g} s")


def stop_proc(proc: subprocess.Popen[bytes], cap: float, what: str = "") -> int | None:
    """SIGTERM a process we started (by its PID), wait up to ``cap`` s, SIGKILL it if it does not exit."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(cap)
        except subprocess.TimeoutExpired:
            who = f"{what} (pid {proc.pid})" if what else f"pid {proc.pid}"
            log(f"    warning: {who} ignored SIGTERM for {cap:g} s; killing it")
            proc.kill()
            proc.wait(cap)
    return proc.returncode


@contextlib.contextmanager
def serving(cmd: list[str], port: int, what: str, stop_cap: float) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``cmd``, a server that listens on 127.0.0.1:``port``, and wait until it accepts connections; stop it
    (by its PID) afterwards."""
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc, what)
        yield proc
    finally:
        stop_proc(proc, stop_cap, what)


def reap(proc: BaseProcess, wait: float = 15.0) -> None:
    """Join a process we spawned; terminate it (by its PID) if it is still alive after ``wait`` seconds."""
    proc.join(wait)
    if proc.is_alive():
        proc.terminate()
        proc.join(5)


def proc_cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user + system) a process has used, from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, ValueError, IndexError):
        return None


def proc_status_kib(pid: int | str, key: str) -> int | None:
    """A ``kB`` field (VmRSS, VmHWM) of /proc/<pid>/status (``pid`` may be "self"), or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


# -- installing what is missing -------------------------------------------------------------------------------


def run_logged(cmd: list[str], env: dict[str, str] | None = None) -> bool:
    """Run an install command, log it and, when it fails, the tail of its output; True when it succeeded."""
    log(f"  $ {' '.join(cmd)}")
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        log(f"    failed: {e}")
        return False
    if r.returncode != 0:
        tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-5:])
        log(f"    exit {r.returncode}:\n{tail}")
    return r.returncode == 0


def which(name: str) -> str | None:
    """An executable on PATH, or in /usr/bin or /usr/sbin (not always on a non-root PATH)."""
    return shutil.which(name) or next(
        (p for p in (f"/usr/bin/{name}", f"/usr/sbin/{name}") if os.access(p, os.X_OK)), None
    )


class Installer:
    """apt-get and pip installs of what is missing; remembers what could not be had (``notes``)."""

    def __init__(self) -> None:
        self.updated = False
        self.notes: list[str] = []

    def _unavailable(self, note: str) -> None:
        self.notes.append(note)
        log(f"unavailable: {note}")

    def apt(self, binary: str, package: str) -> str | None:
        """The path of ``binary``, installed with ``apt-get install -y package`` when missing (as root; with an
        ``apt-get update`` first if that fails), or None."""
        exe = which(binary)
        if exe:
            return exe
        if os.geteuid() != 0:
            self._unavailable(f"{package}: not installed, and this is not root (apt-get install -y {package})")
            return None
        log(f"installing {package} with apt-get")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", package]
        if not run_logged(cmd, env) and not self.updated:
            self.updated = True
            if run_logged(["apt-get", "update"], env):
                run_logged(cmd, env)
        exe = which(binary)
        if not exe:
            self._unavailable(f"{package}: apt-get install -y {package} failed")
        return exe

    def pip(self, module: str, package: str) -> bool:
        """Whether ``module`` can be imported, after ``python -m pip install package`` when it could not."""
        if importlib.util.find_spec(module) is None:
            log(f"installing {package} with pip")
            run_logged([sys.executable, "-m", "pip", "install", "--quiet", package])
            importlib.invalidate_caches()
        if importlib.util.find_spec(module) is None:
            self._unavailable(f"{package}: {sys.executable} -m pip install {package} failed")
            return False
        return True


# -- the command line -----------------------------------------------------------------------------------------


def arg_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser described by the first line of a script's docstring."""
    return argparse.ArgumentParser(description=doc.split("\n", 1)[0] if doc else None)


def rows_option(all_rows: tuple[int, ...], example: str) -> Callable[[str], list[int]]:
    """The ``type`` of ``--only ROW,ROW``: row numbers from ``all_rows`` (``example`` shows how), sorted."""

    def rows_arg(text: str) -> list[int]:
        try:
            rows = sorted({int(x) for x in text.split(",") if x.strip()})
        except ValueError:
            raise argparse.ArgumentTypeError(f"--only takes row numbers like {example}, not {text!r}") from None
        if not rows or any(r not in all_rows for r in rows):
            raise argparse.ArgumentTypeError(f"rows are numbered {all_rows[0]}-{all_rows[-1]}, not {text!r}")
        return rows

    return rows_arg


class Suite(Protocol):
    """What a script's benchmark provides to ``run_suite``."""

    details: Details  # every round's figures, listed under "Every round"

    def setup(self) -> None: ...

    def run(self) -> list[TableRow]: ...

    def teardown(self) -> None: ...

    def intro(self) -> list[str]:
        """Paragraphs between the command and the table (rounds, counts, caveats)."""
        ...

    def machine(self) -> list[str]:
        """The lines under "Machine"."""
        ...


def run_suite(bench: Suite, report: Report, started: float, argv: list[str]) -> int:
    """Set up, run the rows, tear down (also on failure), print the report; ``started``: when the run began
    (``time.monotonic()``)."""
    try:
        bench.setup()
        table = bench.run()
    finally:
        bench.teardown()
    elapsed = time.monotonic() - started
    print(report.markdown(argv, bench.intro(), table, bench.details, bench.machine(), elapsed))
    return 0
