"""Queue administration benchmark (issue 11): browsing a deep channel page by page, and bulk hold/release.

Run it by hand from the repository root, in an environment where spoolq is installed::

    python bench/admin.py                      # 1,000,000 messages to browse, 100,000 to hold
    python bench/admin.py --messages 200000 --bulk 20000

What it prints (every figure measured in this run, on this machine; ratios are what to compare):

- browse: the median time of a 1,000-message page (``spool.admin.browse``) among the first 20 pages
  and among the last 20 of a channel of ``--messages`` messages walked to the end with the cursor, and
  their ratio (keyset paging: about 1 whatever the depth), beside ``spool.peek(limit=1000)`` (the
  existing read of the first ready messages) as the same-run reference;
- a selective filter (a header no message has): the time of one call, which stops at its scan budget;
- bulk: ``hold`` then ``release`` by filter of ``--bulk`` messages, in messages per second, against
  ``send_many`` of the same messages (batches of 1,000) as the reference.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import POOL, log, machine_facts

from spoolq import Spool


def fill(spool: Spool, channel: str, n: int, batch: int = 10_000) -> float:
    """Send ``n`` messages; returns the seconds it took."""
    t0 = time.perf_counter()
    done = 0
    while done < n:
        k = min(batch, n - done)
        spool.send_many([POOL[(done + i) & 4095] for i in range(k)], channel)
        done += k
    return time.perf_counter() - t0


def walk(spool: Spool, channel: str, limit: int) -> list[float]:
    """Seconds per page, walking every page of ``channel`` with the cursor."""
    times: list[float] = []
    after = None
    for _ in range(10_000_000 // limit + 1):  # bounded: at most ten million messages
        t0 = time.perf_counter()
        _msgs, after = spool.admin.browse({"channel": channel}, after=after, limit=limit)
        times.append(time.perf_counter() - t0)
        if after is None:
            break
    return times


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=1_000_000, help="messages in the browsed channel")
    p.add_argument("--bulk", type=int, default=100_000, help="messages held and released by filter")
    args = p.parse_args()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="spoolq-bench-admin-", dir="/tmp") as d:
        spool = Spool(Path(d) / "spool", durability="normal")
        log(f"sending {args.messages} messages")
        fill(spool, "deep", args.messages)
        log("walking every page")
        pages = walk(spool, "deep", 1000)
        first = statistics.median(pages[:20])
        last = statistics.median(pages[-20:])
        peeks = []
        for _ in range(20):
            t0 = time.perf_counter()
            spool.peek("deep", limit=1000)
            peeks.append(time.perf_counter() - t0)
        peek = statistics.median(peeks)
        spool.send(b"x", "deep", headers={"only": "one"})
        t0 = time.perf_counter()
        _msgs, nxt = spool.admin.browse({"channel": "deep", "header": "nobody=here"})
        selective = time.perf_counter() - t0
        log(f"bulk: {args.bulk} messages")
        sent = fill(spool, "bulk", args.bulk, batch=1000)
        t0 = time.perf_counter()
        held = spool.admin.hold(filter={"channel": "bulk"}, who="bench")
        hold_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        released = spool.admin.release(filter={"channel": "bulk"}, who="bench")
        release_s = time.perf_counter() - t0
        spool.close()
    assert held == released == (args.bulk, args.bulk), (held, released)
    print("# spoolq queue administration\n")
    print("\n".join(machine_facts(load)))
    print("\n| figure | value | reference (same run) | ratio |\n|---|---|---|---|")
    print(f"| browse: a 1,000-message page, first 20 pages of {args.messages:,} | {first * 1000:.2f} ms "
          f"| peek(limit=1000): {peek * 1000:.2f} ms | {first / peek:.2f} |")
    print(f"| browse: a 1,000-message page, last 20 pages ({len(pages):,} pages walked) | {last * 1000:.2f} ms "
          f"| first pages: {first * 1000:.2f} ms | {last / first:.2f} |")
    print(f"| browse: a header no message has (stops at the scan budget; next given: {nxt is not None}) "
          f"| {selective * 1000:.1f} ms | a page: {first * 1000:.2f} ms | {selective / first:.1f} |")
    print(f"| hold {args.bulk:,} by filter | {args.bulk / hold_s:,.0f} msg/s | send_many: "
          f"{args.bulk / sent:,.0f} msg/s | {sent / hold_s:.2f} |")
    print(f"| release {args.bulk:,} by filter | {args.bulk / release_s:,.0f} msg/s | send_many: "
          f"{args.bulk / sent:,.0f} msg/s | {sent / release_s:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
