"""Programs the multi-process tests run as real processes (python -m tests.procs ROLE ...)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from spoolq import LeaseError, Spool


def producer(spool_dir: str, channel: str, prefix: str, count: int, threads: int) -> None:
    """Send ``count`` messages from ``threads`` threads; print each id after send() returned."""
    spool = Spool(spool_dir)
    lock = threading.Lock()
    out = sys.stdout

    def run(t: int) -> None:
        for i in range(t, count, threads):
            mid = spool.send(f"{prefix}:{i}".encode(), channel)
            with lock:
                out.write(f"{mid} {prefix}:{i}\n")
                out.flush()

    ts = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    spool.close()


def consumer(spool_dir: str, channel: str, log_path: str, visibility: float, batch: int, hold: float) -> None:
    """Lease, log, ack until SIGTERM. Log lines: ``L id attempts t deadline`` before, ``A id t`` after the ack."""
    spool = Spool(spool_dir)
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    while not stop:
        leases = spool.lease_many(channel, batch, visibility=visibility, wait=0.2)
        if not leases:
            continue
        now = time.time()
        os.write(fd, "".join(f"L {x.id} {x.attempts} {now:.6f} {x.deadline:.6f} {x.body.decode()}\n"
                             for x in leases).encode())
        if hold:
            time.sleep(hold)
        acked = []
        try:
            spool.ack_many(leases)
            acked = leases
        except LeaseError:  # some lease ran out: ack the others one by one
            for x in leases:
                try:
                    x.ack()
                    acked.append(x)
                except LeaseError:
                    os.write(fd, f"X {x.id}\n".encode())
        now = time.time()
        os.write(fd, "".join(f"A {x.id} {now:.6f}\n" for x in acked).encode())
    os.close(fd)
    spool.close()


if __name__ == "__main__":
    role = sys.argv[1]
    if role == "producer":
        producer(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))
    elif role == "consumer":
        consumer(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7]))
    else:
        raise SystemExit(f"unknown role {role}")
