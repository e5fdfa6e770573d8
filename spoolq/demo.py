"""``spoolq demo``: the story of the mission, run for real on this machine.

Local demo: several producer processes and two consumer processes share one
temporary spool; halfway through, one consumer is killed with SIGKILL. Its
leased messages come back when their leases expire, the other consumer takes
them, and in the end every message sent was consumed: none lost.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import tempfile
import time
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
