"""``spoolq demo``'s producer phase against raw SQLite FULL from as many processes (issue 9).

Run it by hand from the repository root, in an environment where spoolq is installed::

    python bench/demo_producers.py            # 3 rounds, 4 producers x 5,000 (the demo's defaults)
    python bench/demo_producers.py --quick    # 1 round

A round runs, in an order rotated every round:

- demo: what ``spoolq demo`` does before node B starts: node A's daemon runs (``spoolq node`` with the demo's
  config: ``demo.*`` routed to peer b, which is down, ``backoff_cap = 1``), and 4 spawned producer processes,
  started together, each ``send()`` 5,000 messages to ``demo.orders`` (durability full), timing every call
  (``spoolq.demo.produce``, the same code the demo runs);
- raw: the reference of ``bench/local.py`` row 11 with 4 processes: raw SQLite FULL, one autocommitted INSERT
  of a 100-byte body per call, 20,000 in all (``bench/_procs.py``).

Both rates are all messages / (last producer's end - first producer's start). Target (issue 9): the demo's
producer phase >= 0.9x raw, and every send returns at once (its p99 and max are printed).
"""

from __future__ import annotations

import os
import sys
import time

from _common import arg_parser, fmt_met, fmt_ratio, log, median, spoolq_commit, tmpdir
from _procs import many_producers

from spoolq.demo import Phase, _Daemon, _free_port, produce

TARGET = 0.9
CAP = 120.0  # seconds the raw reference may take


def demo_phase(producers: int, messages: int) -> Phase:
    with tmpdir("spoolq-demo-bench-") as base:
        a_dir = base / "node-a"
        config = base / "node-a.toml"
        config.write_text(
            f'[node]\nbackoff_cap = 1.0\n\n[peers.b]\nurl = "http://127.0.0.1:{_free_port()}"\n\n'
            '[[routes]]\nchannels = "demo.*"\nto = ["b"]\n'
        )
        a = _Daemon(a_dir, "127.0.0.1:0", config, base / "node-a.log")
        try:
            return produce(a_dir, base, producers, messages)
        finally:
            a.stop()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = arg_parser(__doc__)
    parser.add_argument("--quick", action="store_true", help="1 round")
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--messages", type=int, default=5000, help="per producer")
    args = parser.parse_args(argv)
    rounds = 1 if args.quick else 3
    started = time.monotonic()
    before = os.getloadavg()
    demo: list[tuple[Phase, float]] = []
    raw: list[tuple[tuple[float, float, float], float]] = []
    total = args.producers * args.messages
    for r in range(rounds):
        for kind in (("demo", "raw") if r % 2 == 0 else ("raw", "demo")):
            load = os.getloadavg()[0]
            if kind == "demo":
                ph = demo_phase(args.producers, args.messages)
                demo.append((ph, load))
                log(f"round {r + 1}/{rounds} demo: {ph} [load {load:.2f}]")
            else:
                fig = many_producers("raw", args.producers, total, CAP)
                raw.append((fig, load))
                log(f"round {r + 1}/{rounds} raw: {fig[0]:,.0f} msg/s, p50 {fig[1]:.2f} ms, p99 {fig[2]:.2f} ms "
                    f"[load {load:.2f}]")
    mine = median([p.rate for p, _ in demo])
    ref = median([f[0] for f, _ in raw])
    ok = None if mine is None or not ref else mine >= TARGET * ref
    worst = max((p.lats[-1] for p, _ in demo if p.lats), default=0.0)
    p99 = median([p.pct(0.99) for p, _ in demo])
    lines = [
        "## spoolq demo's producer phase vs raw SQLite FULL, same number of processes (issue 9)",
        "",
        f"Command: `{' '.join(['python', 'bench/demo_producers.py', *argv])}`; {rounds} round(s), median shown",
        "",
        f"- demo ({args.producers} producers x {args.messages:,}, node A up, peer B down): {mine or 0:,.0f} msg/s; "
        f"send p50 {(median([p.pct(0.5) for p, _ in demo]) or 0) * 1000:.2f} ms, p99 {(p99 or 0) * 1000:.2f} ms, "
        f"max {worst * 1000:.1f} ms (worst of all rounds)",
        f"- raw SQLite FULL, {args.producers} processes, 1 row/txn: {ref or 0:,.0f} msg/s; "
        f"p50 {median([f[1] for f, _ in raw]) or 0:.2f} ms, p99 {median([f[2] for f, _ in raw]) or 0:.2f} ms",
        f"- ratio {fmt_ratio(mine, ref)}; target >= {TARGET:.1f}x: {fmt_met(ok)}",
        "",
        "Every round:",
        *[f"- demo: {p} [load {load:.2f}]" for p, load in demo],
        *[f"- raw: {f[0]:,.0f} msg/s, p50 {f[1]:.2f} ms, p99 {f[2]:.2f} ms [load {load:.2f}]" for f, load in raw],
        "",
        f"Machine: {os.cpu_count()} cores; Python {sys.version.split()[0]}; spoolq {spoolq_commit()}; "
        f"load average before {' '.join(f'{x:.2f}' for x in before)}, after "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; run time {time.monotonic() - started:.0f} s",
    ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
