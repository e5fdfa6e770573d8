"""``spoolq demo``: the story of the mission, run for real on this machine.

Two-node demo (the default): node B is down while producers on node A send
N messages; their ``send()`` calls never fail or wait. Then B starts, A's
daemon forwards the backlog, a consumer on B drains it, and the demo checks
that all N arrived exactly once.

Local demo (``--local``): several producer processes and two consumer
processes share one temporary spool; halfway through, one consumer is killed
with SIGKILL. Its leased messages come back when their leases expire, the
other consumer takes them, and in the end every message sent was consumed.
"""

from __future__ import annotations

import array
import json
import multiprocessing as mp
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from .spool import Spool

CHANNEL = "demo"


def _producer(spool_dir: str, index: int, count: int, log_path: str) -> None:
    spool = Spool(spool_dir)
    with open(log_path, "a", buffering=1) as log:
        for i in range(count):
            mid = spool.send(f"producer {index} message {i}".encode(), CHANNEL)
            log.write(mid + "\n")  # written only after send() returned: the message is durable
    spool.close()


def _consumer(spool_dir: str, index: int, log_path: str, visibility: float) -> None:
    spool = Spool(spool_dir)
    stop = False

    def on_term(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    with open(log_path, "a", buffering=1) as log:
        while not stop:
            leases = spool.lease_many(CHANNEL, 20, visibility=visibility, wait=0.2)
            for lease in leases:
                log.write(lease.id + "\n")  # "processed" before the ack
                time.sleep(0.0005)  # pretend to work
            if leases:
                spool.ack_many(leases)
    spool.close()


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def _read_ids(path: Path) -> list[str]:
    try:
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def run_local(
    producers: int = 3, messages: int = 2000, visibility: float = 2.0, console: Console | None = None
) -> bool:
    """Run the local demo; returns ``True`` when every message was consumed."""
    out = console or Console()
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="spoolq-demo-") as tmp:
        base = Path(tmp)
        spool_dir = str(base / "spool")
        Spool(spool_dir).close()  # create it once, before the crowd arrives
        total = producers * messages
        out.print(f"[bold]spoolq demo[/bold]: {producers} producer processes send {messages} messages each "
                  f"into one spool at {spool_dir} (durability full)")
        out.print(f"two consumer processes lease them (visibility {visibility:g}s); "
                  "consumer 1 will be killed with SIGKILL halfway")
        started = time.monotonic()
        procs = [ctx.Process(target=_producer, args=(spool_dir, p, messages, str(base / f"sent-{p}.log")))
                 for p in range(producers)]
        consumers = [ctx.Process(target=_consumer, args=(spool_dir, c, str(base / f"consumed-{c}.log"), visibility))
                     for c in (1, 2)]
        for p in procs + consumers:
            p.start()
        killed_at = None
        deadline = time.monotonic() + 120
        spool = Spool(spool_dir)
        try:
            while time.monotonic() < deadline:
                consumed = sum(_count_lines(base / f"consumed-{c}.log") for c in (1, 2))
                if killed_at is None and consumed >= total // 2:
                    os.kill(consumers[0].pid, signal.SIGKILL)  # type: ignore[arg-type]
                    consumers[0].join()
                    killed_at = consumed
                    out.print(f"[red]killed consumer 1 with SIGKILL[/red] after {consumed} messages consumed; "
                              "its leased messages will come back when their leases expire")
                if all(not p.is_alive() for p in procs) and killed_at is not None:
                    st = spool.stats().channels.get(CHANNEL)
                    if st is not None and st.ready + st.leased + st.delayed == 0:
                        break
                time.sleep(0.05)
        finally:
            for c in consumers:
                if c.is_alive():
                    c.terminate()
                c.join(10)
            for p in procs:
                p.join(10)
            spool.close()
        elapsed = time.monotonic() - started
        sent = [i for p in range(producers) for i in _read_ids(base / f"sent-{p}.log")]
        consumed_all = [i for c in (1, 2) for i in _read_ids(base / f"consumed-{c}.log")]
        sent_set, consumed_set = set(sent), set(consumed_all)
        lost = sent_set - consumed_set
        redelivered = len(consumed_all) - len(consumed_set)
        out.print(f"sent {len(sent)} messages ({len(sent_set)} distinct ids) in {elapsed:.1f}s")
        out.print(f"consumed {len(consumed_set)} distinct messages; {redelivered} delivered twice "
                  "(leased by the killed consumer, redelivered after its leases expired)")
        if not lost and len(sent_set) == total:
            out.print(f"[bold green]every message was consumed, none lost[/bold green] "
                      f"({len(sent_set)}/{total}, {redelivered} redelivered)")
            return True
        out.print(f"[bold red]LOST {len(lost)} messages[/bold red] (sent {len(sent_set)} of {total})")
        return False


# -- two nodes ------------------------------------------------------------------------------


def _net_producer(spool_dir: str, index: int, count: int, log_path: str, ready: Any, go: Any) -> None:
    """Send ``count`` messages, timing each call; the ids go to ``log_path``, the timings to
    ``log_path + ".lat"`` (float64: start, end, then one duration per send)."""
    spool = Spool(spool_dir)
    lats = array.array("d")
    ready.put(index)
    go.wait(60)  # all producers start together, as the raw reference's do (bench/_procs.py)
    clock = time.monotonic  # one clock for every process: the phase runs from the first start to the last end
    with open(log_path, "w", buffering=1 << 16) as log:
        start = now = clock()
        for i in range(count):
            t = now
            mid = spool.send(f"order {index}-{i}".encode(), "demo.orders")  # routed to node B
            now = clock()
            lats.append(now - t)
            log.write(mid + "\n")
        end = now
    spool.close()
    with open(log_path + ".lat", "wb") as f:
        array.array("d", [start, end]).tofile(f)
        lats.tofile(f)


@dataclass
class Phase:
    """The producers' figures: how many sent, from the first start to the last end, and each send's time."""

    sent: list[str]
    seconds: float
    lats: list[float]  # sorted, seconds

    @property
    def rate(self) -> float:
        return len(self.sent) / self.seconds if self.seconds > 0 else 0.0

    def pct(self, q: float) -> float:
        return self.lats[min(len(self.lats) - 1, int(q * len(self.lats)))] if self.lats else 0.0

    def __str__(self) -> str:
        return (f"{len(self.sent)} sends in {self.seconds:.2f}s of sending ({self.rate:,.0f} msg/s); one send "
                f"p50 {self.pct(0.5) * 1000:.2f} ms, p99 {self.pct(0.99) * 1000:.2f} ms, "
                f"max {(self.lats[-1] if self.lats else 0) * 1000:.1f} ms")


def produce(spool_dir: Path, base: Path, producers: int, messages: int) -> Phase:
    """Run ``producers`` spawned processes sending ``messages`` each into ``spool_dir`` (started together)."""
    ctx = mp.get_context("spawn")
    ready, go = ctx.Queue(), ctx.Event()
    logs = [base / f"sent-{p}.log" for p in range(producers)]
    procs = [ctx.Process(target=_net_producer, args=(str(spool_dir), p, messages, str(logs[p]), ready, go))
             for p in range(producers)]
    for p in procs:
        p.start()
    try:
        waiting, deadline = len(procs), time.monotonic() + 60
        while waiting:
            try:
                ready.get(timeout=0.5)
                waiting -= 1
            except queue.Empty:
                if any(p.exitcode is not None for p in procs) or time.monotonic() > deadline:
                    raise RuntimeError("a producer process failed to start") from None
    finally:
        go.set()
        for p in procs:
            p.join()
    sent: list[str] = []
    lats = array.array("d")
    first, last = float("inf"), 0.0
    for path in logs:
        sent += [line for line in path.read_text().splitlines() if line]
        raw = array.array("d")
        with open(f"{path}.lat", "rb") as f:
            raw.frombytes(f.read())
        if len(raw) >= 2:
            first, last = min(first, raw[0]), max(last, raw[1])
            lats.extend(raw[2:])
    return Phase(sent, max(0.0, last - first), sorted(lats))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Daemon:
    def __init__(self, spool_dir: Path, listen: str, config: Path | None, log: Path) -> None:
        args = [sys.executable, "-m", "spoolq", "node", "--spool", str(spool_dir), "--listen", listen]
        if config is not None:
            args += ["--config", str(config)]
        self.info = spool_dir / "node.json"
        self._log = open(log, "ab")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node failed to start; see {log}")
            try:
                if json.loads(self.info.read_text()).get("pid") == self.proc.pid:
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        raise RuntimeError(f"node did not start in 30 s; see {log}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()


def run_network(producers: int = 4, messages: int = 5000, console: Console | None = None) -> bool:
    """Run the two-node demo; returns ``True`` when all messages arrived exactly once."""
    out = console or Console()
    with tempfile.TemporaryDirectory(prefix="spoolq-demo-") as tmp:
        base = Path(tmp)
        a_dir, b_dir = base / "node-a", base / "node-b"
        port = _free_port()
        b_url = f"http://127.0.0.1:{port}"
        config = base / "node-a.toml"
        config.write_text(
            f'[node]\nbackoff_cap = 1.0\n\n[peers.b]\nurl = "{b_url}"\n\n'
            '[[routes]]\nchannels = "demo.*"\nto = ["b"]\n'
        )
        total = producers * messages
        out.print("[bold]spoolq demo[/bold]: two nodes on this machine, A and B, each with its own spool "
                  "and daemon (durability full on both)")
        out.print(f"node A forwards channel demo.* to node B at {b_url}. [red]Node B is down.[/red]")
        a = _Daemon(a_dir, "127.0.0.1:0", config, base / "node-a.log")
        b: _Daemon | None = None
        try:
            t0 = time.monotonic()
            phase = produce(a_dir, base, producers, messages)
            sent = phase.sent
            send_time = time.monotonic() - t0
            with Spool(a_dir) as sa:
                waiting = sa.stats().peers.get("b")
            out.print(f"{producers} producer processes sent {len(sent)} messages to A while B was down "
                      f"({send_time:.1f}s with the processes' start): {phase}; "
                      f"{waiting.outbox if waiting else 0} wait in A's outbox")
            out.print("[green]starting node B[/green]; A's daemon notices and forwards the backlog")
            t1 = time.monotonic()
            b = _Daemon(b_dir, f"127.0.0.1:{port}", None, base / "node-b.log")
            got: list[str] = []
            with Spool(b_dir) as sb:
                deadline = time.monotonic() + 120
                while len(got) < total and time.monotonic() < deadline:
                    leases = sb.lease_many("demo.orders", 1000, wait=1.0)
                    if leases:
                        got += [x.id for x in leases]
                        sb.ack_many(leases)
                # anything more would be a duplicate: look once more, briefly
                extra = sb.lease_many("demo.orders", 1000, wait=0.5)
                got += [x.id for x in extra]
            elapsed = time.monotonic() - t1
        finally:
            if b is not None:
                b.stop()
            a.stop()
        distinct = set(got)
        ok = len(got) == total and distinct == set(sent) and len(sent) == total
        out.print(f"a consumer on B received {len(got)} messages ({len(distinct)} distinct) "
                  f"{elapsed:.1f}s after B started ({len(got) / max(elapsed, 1e-9):,.0f} msg/s end to end)")
        if ok:
            out.print(f"[bold green]all {total} messages arrived exactly once[/bold green]: none lost, none twice")
        else:
            missing = set(sent) - distinct
            out.print(f"[bold red]FAILED[/bold red]: {len(missing)} missing, {len(got) - len(distinct)} duplicates")
        return ok
