"""Where the latency of one message A -> B goes: timestamps along the path, medians per stage.

Run it by hand from the repository root, in an environment where spoolq is installed::

    python bench/net_trace.py                 # 300 messages at 100 msg/s
    python bench/net_trace.py --rate 1000 --count 2000

Two node daemons (A forwards to B, durability full, 127.0.0.1 port 0) run in spawned processes, each built
from ``spoolq.node.daemon.Node`` as ``spoolq node`` builds it, with timing wrappers around the functions of
the path (nothing else changes): the producer's ``send`` (this process), A's outbox bell, the forwarder's
wake-up, batch read, POST and reply, B's request handler, decode, group commit (start and end of the
transaction, in the writer thread) and its answer, and the consumer's ``lease(wait=...)`` (a spawned
process). Each message's stages are matched by id where the stage sees ids, else by the first event at or
after the previous stage. The output lists, for each stage, the median and p90 time since the previous
stage (ms), and the end-to-end p50/p99.

A profiling tool: it changes the code it measures a little (a ``time.time()`` and a list append per stage).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import multiprocessing as mp
import os
import signal
import sys
import time
from bisect import bisect_left
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import log, percentile, reap, tmpdir

from spoolq import Spool

Event = tuple[str, float, list[str]]  # (stage, Unix time, message ids in hex, or [] when the stage sees none)


def _wrap(
    owner: Any,
    name: str,
    before: str | None,
    after: str | None,
    ids_in: Callable[..., list[str]] | None = None,
    ids_out: Callable[[Any], list[str]] | None = None,
    sink: list[Event] | None = None,
) -> None:
    """Replace ``owner.name`` (a function or a coroutine function) by one that notes the stages around it."""
    fn = getattr(owner, name)
    assert sink is not None

    def note(stage: str | None, args: Any, kwargs: Any, out: Any = None, done: bool = False) -> None:
        if stage:
            ids = ids_out(out) if done and ids_out else (ids_in(*args, **kwargs) if ids_in else [])
            sink.append((stage, time.time(), ids))

    if inspect.iscoroutinefunction(fn):
        async def awrapper(*args: Any, **kwargs: Any) -> Any:
            note(before, args, kwargs)
            out = await fn(*args, **kwargs)
            note(after, args, kwargs, out, True)
            return out

        setattr(owner, name, awrapper)
        return

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        note(before, args, kwargs)
        out = fn(*args, **kwargs)
        note(after, args, kwargs, out, True)
        return out

    setattr(owner, name, wrapper)


def _node_main(config_path: str, events_path: str, role: str) -> None:
    from spoolq import _bell
    from spoolq.node import api, forwarder
    from spoolq.node.config import load_config
    from spoolq.node.daemon import Node
    from spoolq.store import commit

    ev: list[Event] = []
    if role == "A":
        fire = _bell.BellHub._fire

        def traced_fire(self: Any, name: str) -> None:
            if name == _bell.OUTBOX:
                ev.append(("A bell", time.time(), []))
            fire(self, name)

        _bell.BellHub._fire = traced_fire  # type: ignore[method-assign]
        _wrap(forwarder.PeerLink, "step", "A wake", None, sink=ev)
        _wrap(Spool, "outbox_batch", None, "A read", ids_out=lambda rs: [r.id.hex() for r in rs], sink=ev)
        if hasattr(Spool, "outbox_batch_nowait"):  # since issue 15 (the script also traces older code)
            _wrap(
                Spool, "outbox_batch_nowait", None, "A read", ids_out=lambda rs: [r.id.hex() for r in rs or []], sink=ev
            )
        _wrap(
            forwarder.HttpSink,
            "deliver",
            "A post",
            "A reply",
            ids_in=lambda self, ms: [m.id.hex() for m in ms],
            sink=ev,
        )
        _wrap(
            Spool,
            "outbox_settle",
            None,
            "A settled",
            ids_in=lambda self, peer, done=(), *a, **k: [i.hex() for _, i in done],
            sink=ev,
        )
    else:
        _wrap(api, "post_batch", "B request", "B answer", sink=ev)
        _wrap(api, "decode_batch", None, "B decoded", ids_out=lambda b: [m.id.hex() for m in b.messages], sink=ev)
        _wrap(
            commit.GroupCommit,
            "_commit",
            "B commit start",
            "B committed",
            ids_in=lambda self, batch: [r[2].hex() for w in batch for r in w.inbox],
            sink=ev,
        )
        _wrap(  # its start: a batch written on the event loop does not go through _commit (issue 15)
            commit.GroupCommit,
            "_write_batch",
            "B commit start",
            "B written",
            ids_in=lambda self, batch, *a, **k: [r[2].hex() for w in batch for r in w.inbox],
            sink=ev,
        )
        _wrap(
            Spool, "areceive", None, "B receive done", ids_in=lambda self, ms, sender: [m.id.hex() for m in ms], sink=ev
        )
    config = load_config(config_path)

    async def serve() -> None:
        node = Node(config)
        await node.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await node.stop()

    from spoolq import _loop

    _loop.run(serve())
    Path(events_path).write_text(json.dumps(ev))


def _consumer(b_dir: str, n: int, out: Any, ready: Any) -> None:
    got: list[tuple[str, float]] = []
    with Spool(b_dir, durability="full") as s:
        ready.set()
        end = time.monotonic() + 120
        while len(got) < n and time.monotonic() < end:
            x = s.lease("lat", wait=0.5)
            if x is None:
                continue
            got.append((x.id.replace("-", ""), time.time()))
            x.ack()
    out.put(got)


def _start(ctx: Any, base: Path, role: str, peer_url: str | None) -> tuple[Any, str, Path]:
    spool = base / f"node-{role.lower()}"
    spool.mkdir()
    toml = f'[node]\nspool = "{spool}"\nlisten = "127.0.0.1:0"\ndurability = "full"\n'
    if peer_url:
        toml += f'\n[peers.b]\nurl = "{peer_url}"\n'
    cfg = base / f"{role}.toml"
    cfg.write_text(toml)
    events = base / f"{role}.events.json"
    proc = ctx.Process(target=_node_main, args=(str(cfg), str(events), role), daemon=True)
    proc.start()
    end = time.monotonic() + 30
    while time.monotonic() < end:
        try:
            info = json.loads((spool / "node.json").read_text())
            if info.get("pid") == proc.pid:
                return proc, str(info["url"]), events
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    raise RuntimeError(f"node {role} did not start")


STAGES = [
    "sent",
    "A bell",
    "A wake",
    "A read",
    "A post",
    "B request",
    "B decoded",
    "B commit start",
    "B written",
    "leased",
    "B committed",
    "B receive done",
    "B answer",
    "A reply",
    "A settled",
]


ANON = {"A bell", "A wake", "B request", "B answer"}  # stages that see no ids: matched by time


def analyse(sent: dict[str, float], leased: dict[str, float], events: list[Event]) -> list[str]:
    by_id: dict[str, dict[str, float]] = {i: {"sent": t} for i, t in sent.items()}
    anon: dict[str, list[float]] = {}
    for stage, t, ids in events:
        if stage not in ANON:
            for i in ids:
                d = by_id.get(i)
                if d is not None and stage not in d:
                    d[stage] = t
        else:
            anon.setdefault(stage, []).append(t)
    for times in anon.values():
        times.sort()
    for i, t in leased.items():
        if i in by_id:
            by_id[i]["leased"] = t
    deltas: dict[str, list[float]] = {s: [] for s in STAGES[1:]}
    total: list[float] = []
    for d in by_id.values():
        prev = d["sent"]
        for stage in STAGES[1:]:
            if stage in anon:  # first event of that kind at or after the previous stage
                times = anon[stage]
                k = bisect_left(times, prev)
                if k == len(times):
                    break
                d[stage] = times[k]
            if stage not in d:
                continue
            deltas[stage].append(d[stage] - prev)
            prev = d[stage]
        if "leased" in d:
            total.append(d["leased"] - d["sent"])
    lines = ["| stage | since the previous stage: p50 ms | p90 ms | n |", "| --- | --- | --- | --- |"]
    for stage in STAGES[1:]:
        xs = sorted(deltas[stage])
        if xs:
            p50, p90 = percentile(xs, 0.5) * 1000, percentile(xs, 0.9) * 1000
            lines.append(f"| {stage} | {p50:.3f} | {p90:.3f} | {len(xs)} |")
    total.sort()
    if total:
        lines.append("")
        p50, p99 = percentile(total, 0.5) * 1000, percentile(total, 0.99) * 1000
        lines.append(
            f"send called -> lease returned: p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
            f"min {total[0] * 1000:.2f} ms ({len(total)} messages)"
        )
    lines.append(
        "(B rings the consumer's bell once the batch is written, before its sync (issue 15): stages after "
        "'leased' run concurrently with the consumer's wake-up and are measured from 'leased')"
    )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--rate", type=int, default=100)
    parser.add_argument("--count", type=int, default=300)
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    with tmpdir("spoolq-net-trace-") as base:
        b, b_url, b_events = _start(ctx, base, "B", None)
        a, _a_url, a_events = _start(ctx, base, "A", b_url)
        out, ready = ctx.Queue(), ctx.Event()
        consumer = ctx.Process(target=_consumer, args=(str(base / "node-b"), args.count, out, ready), daemon=True)
        consumer.start()
        ready.wait(30)
        sent: dict[str, float] = {}
        returned: list[float] = []
        with Spool(base / "node-a", durability="full") as s:
            for _ in range(5):  # warm-up: names, connections
                s.send(b"warm", "lat", to="b")
                time.sleep(0.02)
            time.sleep(0.3)
            start = time.perf_counter()
            for i in range(args.count):
                delay = start + i / args.rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                t0 = time.time()
                mid = s.send(b"x" * 100, "lat", to="b").replace("-", "")
                sent[mid] = t0
                returned.append(time.time() - t0)
        got = out.get(timeout=150)
        reap(consumer, 5)
        for p in (a, b):
            os.kill(p.pid, signal.SIGTERM)
            reap(p, 30)
        events = json.loads(a_events.read_text()) + json.loads(b_events.read_text())
    leased = {i: t for i, t in got}
    log(f"{len(sent)} sent, {len(leased)} leased")
    print(f"## Latency trace: {args.count} messages at {args.rate}/s (A -> B, full)\n")
    print("\n".join(analyse(sent, leased, [(s, t, ids) for s, t, ids in events])))
    returned.sort()
    print(
        f"\nsend on A (its commit and sync): p50 {percentile(returned, 0.5) * 1000:.3f} ms, "
        f"p90 {percentile(returned, 0.9) * 1000:.3f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
