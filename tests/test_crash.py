"""Crash safety: producers and consumers killed with SIGKILL at random points lose nothing."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

from spoolq import Spool

from .conftest import PYTHON, ROOT, python_env, wait_for


class Producer:
    def __init__(self, spool_dir: Path, prefix: str, count: int) -> None:
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "tests.procs", "producer", str(spool_dir), "crash", prefix, str(count), "3"],
            cwd=ROOT, env=python_env(), stdout=subprocess.PIPE, text=True)
        self.sent: dict[str, str] = {}
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            parts = line.split()
            if len(parts) == 2:  # a whole line: send() had returned
                self.sent[parts[0]] = parts[1]


def consumer(spool_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([PYTHON, "-m", "tests.procs", "consumer", str(spool_dir), "crash", str(log), "1.0", "5",
                             "0.002"], cwd=ROOT, env=python_env())


def test_sigkill_at_random_points_loses_nothing(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("SPOOLQ_CRASH_SEED", "20261127")))
    spool_dir = tmp_path / "spool"
    Spool(spool_dir).close()
    producers: list[Producer] = []
    consumers: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    generation = 0

    def new_producer() -> None:
        nonlocal generation
        generation += 1
        producers.append(Producer(spool_dir, f"g{generation}", 1500))

    def new_consumer() -> None:
        log = tmp_path / f"consumer-{len(logs)}.log"
        logs.append(log)
        consumers.append(consumer(spool_dir, log))

    for _ in range(3):
        new_producer()
    for _ in range(2):
        new_consumer()
    kills = {"producer": 0, "consumer": 0}
    try:
        end = time.monotonic() + 12
        while time.monotonic() < end:
            time.sleep(rng.uniform(0.2, 0.6))
            live_p = [p for p in producers if p.proc.poll() is None]
            live_c = [c for c in consumers if c.poll() is None]
            if rng.random() < 0.5 and live_p:
                victim = rng.choice(live_p)
                victim.proc.send_signal(signal.SIGKILL)
                kills["producer"] += 1
                new_producer()
            elif live_c:
                rng.choice(live_c).send_signal(signal.SIGKILL)
                kills["consumer"] += 1
                new_consumer()
            while sum(1 for p in producers if p.proc.poll() is None) < 3:
                new_producer()
        for p in producers:  # no more kills: let the producers finish
            p.proc.wait(120)
            p.reader.join(10)
        sent: dict[str, str] = {}
        for p in producers:
            sent.update(p.sent)

        def drained() -> bool:
            with Spool(spool_dir) as s:
                st = s.stats().channels["crash"]
                return st.ready + st.leased + st.delayed == 0

        wait_for(drained, timeout=120, interval=0.25)
    finally:
        for c in consumers:
            if c.poll() is None:
                c.send_signal(signal.SIGTERM)
        for c in consumers:
            try:
                c.wait(20)
            except subprocess.TimeoutExpired:
                c.kill()
        for p in producers:
            if p.proc.poll() is None:
                p.proc.kill()
    assert kills["producer"] >= 3 and kills["consumer"] >= 3, kills
    assert len(sent) > 1000
    processed: dict[str, str] = {}
    for log in logs:
        if log.exists():
            for line in log.read_text().splitlines():
                rec = line.split()
                if rec and rec[0] == "L" and len(rec) == 6:
                    processed[rec[1]] = rec[5]
    lost = set(sent) - set(processed)
    assert not lost, f"{len(lost)} messages that send() returned for were never delivered"
    assert all(processed[mid] == body for mid, body in sent.items())  # ids and bodies belong together
    # one message per body: nothing stored twice
    bodies = list(processed.values())
    assert len(bodies) == len(set(bodies))
    with Spool(spool_dir) as s:
        st = s.stats().channels["crash"]
        assert (st.ready, st.leased, st.delayed, st.dead) == (0, 0, 0, 0)
    c = sqlite3.connect(spool_dir / "spool.db")
    assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    c.close()
