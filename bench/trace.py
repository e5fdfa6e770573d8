"""What the per-message event log (``spoolq trace``) costs: every row measured with the log on and off,
in the same run, interleaved round by round, printed as rates and as the ratio on/off.

Rows:
  1  send, one message per call, one thread, durability full
  2  send, one message per call, one thread, durability normal
  3  send from 4 threads at once (group commit), durability full
  4  send_many in batches of 1,000, durability normal
  5  lease + ack, one at a time, durability normal
  6  lease_many(100) + ack_many, durability normal
  7  forward: two `spoolq node` processes A -> B; A's outbox prefilled; messages per second until B holds all

Usage: python bench/trace.py [--rounds N] [--only 1,7] [-n N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from _common import MASK, POOL, REPO, Variant, free_port, interleave, log, median, stop_proc, tmpdir, values

from spoolq import Spool

CHANNEL = "bench"
CAP = 20.0  # seconds a measurement may run at most


def _rate(n: int, op: Callable[[int], int]) -> float:
    start = time.perf_counter()
    end = start + CAP
    done = 0
    now = start
    while done < n:
        done += op(done)
        now = time.perf_counter()
        if now >= end:
            break
    return done / (now - start)


@contextlib.contextmanager
def _spool(trace: bool, durability: str = "full") -> Iterator[Spool]:
    with tmpdir("spoolq-trace-bench-") as base:
        s = Spool(base / "s", durability=durability, trace=trace)  # type: ignore[arg-type]
        try:
            s.send(b"warm", CHANNEL)
            yield s
        finally:
            s.close()


def send_one(trace: bool, durability: str, n: int) -> float:
    with _spool(trace, durability) as s:
        def op(i: int) -> int:
            s.send(POOL[i & MASK], CHANNEL)
            return 1
        return _rate(n, op)


def send_threads(trace: bool, n: int, threads: int = 4) -> float:
    with _spool(trace) as s:
        per = n // threads
        sent = [0] * threads
        barrier = threading.Barrier(threads + 1)

        def worker(k: int) -> None:
            barrier.wait(timeout=30)
            end = time.perf_counter() + CAP
            for i in range(per):
                s.send(POOL[(k * per + i) & MASK], CHANNEL)
                sent[k] += 1
                if time.perf_counter() >= end:
                    break

        pool = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(threads)]
        for t in pool:
            t.start()
        barrier.wait(timeout=30)
        start = time.perf_counter()
        for t in pool:
            t.join(CAP + 10)
        return sum(sent) / (time.perf_counter() - start)


def send_many(trace: bool, n: int) -> float:
    batch = [POOL[i & MASK] for i in range(1000)]
    with _spool(trace, "normal") as s:
        def op(i: int) -> int:
            s.send_many(batch, CHANNEL)
            return len(batch)
        return _rate(n, op)


def consume(trace: bool, n: int, batch: int) -> float:
    bodies = [POOL[i & MASK] for i in range(1000)]
    with _spool(trace, "normal") as s:
        for _ in range(0, n + 1, 1000):
            s.send_many(bodies, CHANNEL)

        def op(i: int) -> int:
            if batch == 1:
                x = s.lease(CHANNEL)
                if x is None:
                    raise RuntimeError("the channel ran dry")
                x.ack()
                return 1
            got = s.lease_many(CHANNEL, batch)
            s.ack_many(got)
            return len(got)
        return _rate(n, op)


class _Node:
    def __init__(self, spool_dir: Path, config: str) -> None:
        self.dir = spool_dir
        spool_dir.mkdir(parents=True, exist_ok=True)
        cfg = spool_dir.parent / f"{spool_dir.name}.toml"
        cfg.write_text(config)
        self.log = open(spool_dir.parent / f"{spool_dir.name}.log", "wb")
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen([sys.executable, "-m", "spoolq", "node", "--spool", str(spool_dir), "--listen",
                                      f"127.0.0.1:{free_port()}", "--config", str(cfg)],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.url = self._ready()

    def _ready(self) -> str:
        deadline = time.monotonic() + 30
        info = self.dir / "node.json"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}")
            with contextlib.suppress(OSError, ValueError):
                data = json.loads(info.read_text())
                if data.get("pid") == self.proc.pid:
                    return str(data["url"])
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("node did not start within 30 s")

    def stop(self) -> None:
        stop_proc(self.proc, 30, "node")
        self.log.close()


def forward(trace: bool, n: int) -> float:
    """A's outbox holds ``n`` messages for B before A starts; messages per second from A's start until
    B holds them all."""
    flag = "true" if trace else "false"
    with tmpdir("spoolq-trace-fwd-") as base:
        b = _Node(base / "b", f"[node]\ntrace = {flag}\n")
        a: _Node | None = None
        try:
            with Spool(base / "a", trace=trace) as s:
                bodies = [POOL[i & MASK] for i in range(1000)]
                for _ in range(0, n, 1000):
                    s.send_many(bodies, CHANNEL, to="b")
            a = _Node(base / "a", f'[node]\ntrace = {flag}\nscan_interval = 0.2\n\n[peers.b]\nurl = "{b.url}"\n')
            start = time.perf_counter()
            with Spool(base / "b", trace=trace) as rb:
                deadline = time.monotonic() + CAP * 3
                while True:
                    st = rb.stats().channels.get(CHANNEL)
                    got = st.ready if st is not None else 0
                    if got >= n:
                        return got / (time.perf_counter() - start)
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"B holds {got:,} of {n:,} after {CAP * 3:.0f} s")
                    time.sleep(0.02)
        finally:
            if a is not None:
                a.stop()
            b.stop()


ROWS: dict[int, tuple[str, Callable[[bool, int], float], int]] = {
    1: ("send, 1 thread, full", lambda t, n: send_one(t, "full", n), 2_000),
    2: ("send, 1 thread, normal", lambda t, n: send_one(t, "normal", n), 20_000),
    3: ("send, 4 threads, full", lambda t, n: send_threads(t, n), 8_000),
    4: ("send_many(1000), normal", lambda t, n: send_many(t, n), 200_000),
    5: ("lease + ack, 1 at a time, normal", lambda t, n: consume(t, n, 1), 10_000),
    6: ("lease_many(100) + ack_many, normal", lambda t, n: consume(t, n, 100), 100_000),
    7: ("forward A -> B (2 node processes)", lambda t, n: forward(t, n), 50_000),
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--only", default="", help="rows, e.g. 1,7")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every row's message count")
    args = p.parse_args()
    rows = [int(x) for x in args.only.split(",") if x] or sorted(ROWS)
    results = []
    for r in rows:
        title, fn, n = ROWS[r]
        count = max(100, int(n * args.scale))
        variants = [Variant(f"trace {'on' if on else 'off'}", lambda on=on, fn=fn, count=count: fn(on, count))
                    for on in (True, False)]
        runs = interleave(str(r), variants, args.rounds, lambda v, _l: f"{v:,.0f}/s")
        on, off = median(values(runs["trace on"])), median(values(runs["trace off"]))
        results.append((r, title, count, on, off))
    print("\n| row | what | messages | trace on | trace off | on / off |\n|---|---|---|---|---|---|")
    for r, title, count, on, off in results:
        ratio = f"{on / off:.2f}" if on and off else "n/a"
        print(f"| {r} | {title} | {count:,} | {on or 0:,.0f}/s | {off or 0:,.0f}/s | {ratio} |")
    load = os.getloadavg()[0]
    print(f"\nmedians of {args.rounds} interleaved rounds; load average {load:.2f}; nproc {os.cpu_count()}")
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
