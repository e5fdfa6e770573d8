"""Forwarding a backlog into RabbitMQ, NATS JetStream and Redis Streams vs each broker's own Python client.

    python bench/bridges.py            # 200,000 messages of 100 bytes per broker
    python bench/bridges.py --quick    # 20,000
    python bench/bridges.py --only redis,nats

For each broker (a private server on free ports in a temp dir, as in the tests):

- native: the broker's Python client publishes the same messages (the same fields/headers a spoolq sink
  writes: id, channel, priority) with the same durability a spoolq sink
  waits for (RabbitMQ: persistent + publisher confirms; NATS: JetStream publish, wait for each PubAck;
  Redis: pipelined XADD, reply read; redis-server runs with appendfsync always), 1000 in flight at a time;
- spoolq: the same number of messages wait in a node's outbox (sent before, not timed); a `spoolq node`
  subprocess starts and forwards them; timed from the node being ready (node.json written) until the
  outbox is empty (spool reads and settles included); the figure with the process start-up is printed too.

Prints messages per second and the ratio spoolq / native (target >= 0.8).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spoolq import Spool
from tests.brokers import Broker, Nats, Rabbit, Redis
from tests.nodes import NodeProc

BODY = b"x" * 100
WINDOW = 1000


async def native(b: Broker, name: str, n: int) -> float:
    t0 = time.perf_counter()
    if isinstance(b, Redis):
        import redis.asyncio as aredis

        r = aredis.from_url(b.url)
        for i in range(0, n, WINDOW):
            pipe = r.pipeline(transaction=False)
            for _j in range(i, min(n, i + WINDOW)):
                pipe.xadd(name, {"id": str(uuid.uuid4()), "channel": "orders", "body": BODY, "priority": "1024"})
            await pipe.execute()
        await r.aclose()
    elif isinstance(b, Nats):
        import nats

        nc = await nats.connect(b.url)
        js = nc.jetstream()
        for i in range(0, n, WINDOW):
            await asyncio.gather(*(js.publish(name, BODY, headers={
                "Nats-Msg-Id": str(uuid.uuid4()), "Spoolq-Channel": "orders", "Spoolq-Priority": "1024"})
                                   for j in range(i, min(n, i + WINDOW))))
        await nc.close()
    else:
        import aio_pika

        conn = await aio_pika.connect(b.url)
        ch = await conn.channel(publisher_confirms=True)
        for i in range(0, n, WINDOW):
            await asyncio.gather(*(ch.default_exchange.publish(
                aio_pika.Message(BODY, message_id=str(uuid.uuid4()), priority=0,
                                 headers={"x-spoolq-priority": 1024, "x-spoolq-channel": "orders"},
                                 delivery_mode=aio_pika.DeliveryMode.PERSISTENT), name)
                for j in range(i, min(n, i + WINDOW))))
        await conn.close()
    return time.perf_counter() - t0


async def prepare(b: Broker, name: str) -> None:
    if isinstance(b, Nats):
        import nats

        nc = await nats.connect(b.url)
        js = nc.jetstream()
        try:
            await js.delete_stream(name)
        except Exception:  # not there
            pass
        await js.add_stream(name=name, subjects=[name])
        await nc.close()
    elif isinstance(b, Rabbit):
        import aio_pika

        conn = await aio_pika.connect(b.url)
        ch = await conn.channel()
        await ch.queue_delete(name)
        await ch.declare_queue(name, durable=True)
        await conn.close()
    else:
        import redis.asyncio as aredis

        r = aredis.from_url(b.url)
        await r.delete(name)
        await r.aclose()


def forward(b: Broker, kind: str, name: str, n: int, tmp: Path) -> float:
    spool_dir = tmp / f"spool-{kind}"
    s = Spool(spool_dir)
    for i in range(0, n, 5000):
        s.send_many([BODY] * min(5000, n - i), "orders", to="mq")
    s.close()
    key = {"redis": f'stream = "{name}"', "nats": f'subject = "{name}"', "rabbitmq": f'routing_key = "{name}"'}[kind]
    cfg = f'[peers.mq]\nurl = "{b.url}"\n{key}\n'
    t_start = time.perf_counter()
    node = NodeProc(spool_dir, config=cfg)
    t_ready = time.perf_counter()
    try:
        probe = Spool(spool_dir)
        while probe.outbox_batch("mq", max_messages=1):  # a cheap read: the first waiting message
            if time.perf_counter() - t_start > 1800:
                raise RuntimeError("forwarding did not finish within 30 minutes")
            time.sleep(0.02)
        t_end = time.perf_counter()
        probe.close()
    finally:
        node.stop()
    return t_end - t_start, t_end - t_ready


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="20,000 messages instead of 200,000")
    ap.add_argument("-n", type=int, default=None)
    ap.add_argument("--only", default="redis,nats,rabbitmq")
    args = ap.parse_args()
    n = args.n or (20_000 if args.quick else 200_000)
    rows = []
    with tempfile.TemporaryDirectory(prefix="spoolq-bench-bridges-") as d:
        tmp = Path(d)
        for kind in args.only.split(","):
            cls = {"redis": Redis, "nats": Nats, "rabbitmq": Rabbit}[kind]
            b = cls(tmp / kind)
            b.start()
            try:
                asyncio.run(prepare(b, "native"))
                t_native = asyncio.run(native(b, "native", n))
                asyncio.run(prepare(b, "spoolq"))
                t_process, t_spoolq = forward(b, kind, "spoolq", n, tmp)
            finally:
                b.close() if isinstance(b, Rabbit) else b.stop()
            rows.append((kind, n / t_native, n / t_spoolq, n / t_process))
            print(f"{kind:9} native {n / t_native:10,.0f} msg/s   spoolq {n / t_spoolq:10,.0f} msg/s   "
                  f"ratio {t_native / t_spoolq:.2f}x   (with the node's start-up: {n / t_process:,.0f} msg/s)",
                  flush=True)
    print(f"\n{n:,} messages of {len(BODY)} bytes per broker")
    print("| broker | native client msg/s | spoolq node msg/s | spoolq / native | incl. node start-up |")
    print("|---|---:|---:|---:|---:|")
    for kind, nat, sp, proc in rows:
        print(f"| {kind} | {nat:,.0f} | {sp:,.0f} | {sp / nat:.2f}x | {proc / nat:.2f}x |")


if __name__ == "__main__":
    main()
