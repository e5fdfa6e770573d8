"""Bridges end to end: a real `spoolq node` forwarding into (sinks) and consuming from (sources)
real redis-server, nats-server -js and rabbitmq-server processes (tests/brokers.py)."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spoolq import Spool

from .brokers import Broker, Nats, Rabbit, Redis
from .conftest import PYTHON, python_env, wait_for
from .nodes import NodeProc

KINDS = ["redis", "nats", "rabbitmq"]


@pytest.fixture(scope="session")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rabbit]:
    """ONE private rabbitmq-server for the session (it takes seconds to boot)."""
    b = Rabbit(tmp_path_factory.mktemp("rabbit"))
    try:
        b.start()
        yield b
    finally:
        b.close()


@pytest.fixture
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    kind = request.param
    if kind == "rabbitmq":
        yield request.getfixturevalue("rabbit")
        return
    b: Broker = Redis(tmp_path / "redis") if kind == "redis" else Nats(tmp_path / "nats")
    b.start()
    try:
        yield b
    finally:
        b.stop()


def kind_of(b: Broker) -> str:
    return {Redis: "redis", Nats: "nats", Rabbit: "rabbitmq"}[type(b)]


# -- the broker's side, through its own Python client ----------------------------------------------


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _prepare(b: Broker, name: str) -> None:
    """A place for messages addressed to ``name`` (stream / queue), empty."""
    if isinstance(b, Nats):
        import nats

        nc = await nats.connect(b.url)
        js = nc.jetstream()
        try:
            await js.delete_stream(name)
        except Exception:  # not there yet
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


async def _received_ids(b: Broker, name: str) -> list[str]:
    """Every spoolq id the broker holds under ``name`` (duplicates included), without consuming."""
    if isinstance(b, Nats):
        import nats

        nc = await nats.connect(b.url)
        js = nc.jetstream()
        info = await js.stream_info(name)
        ids = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1) if info.state.messages else []:
            m = await js.get_msg(name, seq)
            ids.append((m.headers or {})["Nats-Msg-Id"])
        await nc.close()
        return ids
    if isinstance(b, Rabbit):  # browse: get without ack, then close (everything goes back)
        import aio_pika

        conn = await aio_pika.connect(b.url)
        ch = await conn.channel()
        q = await ch.declare_queue(name, durable=True, passive=True)
        ids = []
        while True:
            m = await q.get(no_ack=False, fail=False)
            if m is None:
                break
            ids.append(str(m.message_id))
        await conn.close()
        return ids
    import redis.asyncio as aredis

    r = aredis.from_url(b.url)
    entries = await r.xrange(name)
    await r.aclose()
    return [f[b"id"].decode() for _, f in entries]


def received(b: Broker, name: str) -> list[str]:
    """Every id the broker holds under ``name``, for a final assertion: a broker that does not answer
    (busy machine) is asked again for up to 60 s, and its last error is raised, never taken for "none"."""
    errors: list[BaseException] = []

    def ask() -> tuple[list[str]] | None:
        try:
            return (run(_received_ids(b, name)),)
        except Exception as e:
            errors.append(e)
            return None

    try:
        got = wait_for(ask, timeout=60, interval=0.5)
    except AssertionError:
        raise errors[-1] if errors else AssertionError("the broker never answered") from None
    return got[0]  # type: ignore[index,no-any-return]


def peer_config(b: Broker, name: str, backoff_cap: float = 1.0) -> str:
    key = {"redis": f'stream = "{name}"', "nats": f'subject = "{name}"', "rabbitmq": f'routing_key = "{name}"'}
    return (f"[node]\nbackoff_base = 0.1\nbackoff_cap = {backoff_cap}\nscan_interval = 0.5\n"
            f'[peers.mq]\nurl = "{b.url}"\n{key[kind_of(b)]}\n')


def outbox_depth(spool_dir: Path) -> int:
    s = Spool(spool_dir)
    try:
        return sum(p.outbox for p in s.stats().peers.values())
    finally:
        s.close()


def send(spool_dir: Path, n: int, channel: str, prefix: str = "m") -> list[str]:
    s = Spool(spool_dir)
    try:
        ids: list[str] = []
        for i in range(0, n, 1000):
            ids += s.send_many([f"{prefix}{j}".encode() for j in range(i, min(n, i + 1000))], channel, to="mq",
                               headers={"k": "v"}, priority=7)
        return ids
    finally:
        s.close()


# -- sinks -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("broker", KINDS, indirect=True)
def test_forward_end_to_end(broker: Broker, tmp_path: Path) -> None:
    name = f"fwd{uuid.uuid4().hex[:6]}"
    run(_prepare(broker, name))
    ids = send(tmp_path / "spool", 300, "orders")
    with NodeProc(tmp_path / "spool", config=peer_config(broker, name)):
        wait_for(lambda: outbox_depth(tmp_path / "spool") == 0, timeout=60)
    got = received(broker, name)
    assert sorted(got) == sorted(ids)  # settled only after the broker held each one: all there, once


@pytest.mark.parametrize("broker", KINDS, indirect=True)
def test_broker_down_then_back(broker: Broker, tmp_path: Path) -> None:
    name = f"down{uuid.uuid4().hex[:6]}"
    run(_prepare(broker, name))
    broker.stop()
    try:
        with NodeProc(tmp_path / "spool", config=peer_config(broker, name)) as node:
            ids = send(tmp_path / "spool", 200, "orders")
            wait_for(lambda: "retrying in" in node.log(), timeout=30)
            assert outbox_depth(tmp_path / "spool") == 200  # nothing settled while the broker is away
            broker.restart()
            wait_for(lambda: outbox_depth(tmp_path / "spool") == 0, timeout=60)
    finally:
        if broker.proc is None or broker.proc.poll() is not None:
            broker.restart()  # the session's rabbit must stay up for the next tests
    assert sorted(received(broker, name)) == sorted(ids)


@pytest.mark.parametrize("broker", KINDS, indirect=True)
def test_node_killed_mid_forward(broker: Broker, tmp_path: Path) -> None:
    name = f"kill{uuid.uuid4().hex[:6]}"
    run(_prepare(broker, name))
    n = 20_000
    ids = send(tmp_path / "spool", n, "orders")
    cfg = peer_config(broker, name)
    node = NodeProc(tmp_path / "spool", config=cfg)
    try:
        wait_for(lambda: 0 < outbox_depth(tmp_path / "spool") < n, timeout=60, interval=0.005)
    finally:
        node.kill()
    with NodeProc(tmp_path / "spool", config=cfg):
        wait_for(lambda: outbox_depth(tmp_path / "spool") == 0, timeout=120)
    got = received(broker, name)
    assert set(got) == set(ids)  # nothing lost
    if isinstance(broker, Nats):
        assert len(got) == n  # Nats-Msg-Id inside the duplicate window: exactly once
    # RabbitMQ and Redis: at-least-once; a re-sent batch may appear twice (documented)


def test_permanent_rejection_is_a_dead_letter(tmp_path: Path) -> None:
    """A message over nats-server's max_payload can never be published: a dead letter, the rest goes on."""
    b = Nats(tmp_path / "nats", max_payload=2048)
    b.start()
    try:
        name = "big"
        run(_prepare(b, name))
        s = Spool(tmp_path / "spool")
        big = s.send(b"x" * 4096, "orders", to="mq")
        small = s.send_many([b"s"] * 10, "orders", to="mq")
        s.close()
        with NodeProc(tmp_path / "spool", config=peer_config(b, name)):
            wait_for(lambda: outbox_depth(tmp_path / "spool") == 0, timeout=60)
        assert sorted(received(b, name)) == sorted(small)
        s = Spool(tmp_path / "spool")
        try:
            assert [d.id for d in s.dead_letters(reason="rejected")] == [big]
        finally:
            s.close()
    finally:
        b.stop()


def test_missing_extra_is_named(tmp_path: Path) -> None:
    cfg = tmp_path / "n.toml"
    cfg.write_text('[peers.mq]\nurl = "amqp://guest:guest@127.0.0.1:1/"\n')
    code = ("import sys; sys.modules['aio_pika'] = None\n"  # as if spoolq[rabbitmq] were not installed
            "from spoolq.node.config import load_config\n"
            f"load_config({str(cfg)!r})\n")
    r = subprocess.run([PYTHON, "-c", code], env=python_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "pip install 'spoolq[rabbitmq]'" in r.stderr


def test_bad_bridge_key_is_named(tmp_path: Path) -> None:
    from spoolq.node.config import ConfigError, load_config

    cfg = tmp_path / "n.toml"
    cfg.write_text('[peers.mq]\nurl = "redis://127.0.0.1:1/0"\nexchange = "x"\n')
    with pytest.raises(ConfigError, match=r"peers\.mq\.exchange"):
        load_config(cfg)
    cfg.write_text('[peers.mq]\nurl = "ftp://127.0.0.1:1/"\n')
    with pytest.raises(ConfigError, match=r"peers\.mq\.url"):
        load_config(cfg)


# -- sources -----------------------------------------------------------------------------------------


async def _publish(b: Broker, name: str, n: int, start: int = 0) -> None:
    """The broker's own client puts n messages there, each with its own broker id."""
    if isinstance(b, Nats):
        import nats

        nc = await nats.connect(b.url)
        js = nc.jetstream()
        await asyncio.gather(*(js.publish(name, f"s{i}".encode(), headers={"Nats-Msg-Id": f"x-{i}"})
                               for i in range(start, start + n)))
        await nc.close()
    elif isinstance(b, Rabbit):
        import aio_pika

        conn = await aio_pika.connect(b.url)
        ch = await conn.channel()
        await asyncio.gather(*(ch.default_exchange.publish(
            aio_pika.Message(f"s{i}".encode(), message_id=f"x-{i}", delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            name) for i in range(start, start + n)))
        await conn.close()
    else:
        import redis.asyncio as aredis

        r = aredis.from_url(b.url)
        pipe = r.pipeline(transaction=False)
        for i in range(start, start + n):
            pipe.xadd(name, {"body": f"s{i}".encode()})
        await pipe.execute()
        await r.aclose()


def source_config(b: Broker, name: str) -> str:
    key = {"redis": f'stream = "{name}"', "nats": f'stream = "{name}"\nsubject = "{name}"',
           "rabbitmq": f'queue = "{name}"'}
    return (f"[node]\nbackoff_base = 0.1\nbackoff_cap = 1.0\n"
            f'[[sources]]\nname = "src"\nurl = "{b.url}"\nchannel = "local"\nbatch = 200\n{key[kind_of(b)]}\n')


def local_bodies(spool_dir: Path) -> list[bytes]:
    s = Spool(spool_dir)
    try:
        out: list[bytes] = []
        while True:
            leases = s.lease_many("local", 1000, visibility=600)
            if not leases:
                return out
            out += [x.body for x in leases]
    finally:
        s.close()


def local_ready(spool_dir: Path) -> int:
    s = Spool(spool_dir)
    try:
        st = s.stats().channels.get("local")
        return st.ready if st else 0
    finally:
        s.close()


@pytest.mark.parametrize("broker", KINDS, indirect=True)
def test_source_connection_cut_mid_batch(broker: Broker, tmp_path: Path) -> None:
    name = f"src{uuid.uuid4().hex[:6]}"
    run(_prepare(broker, name))
    n = 3000
    run(_publish(broker, name, n))
    spool_dir = tmp_path / "spool"
    try:
        with NodeProc(spool_dir, config=source_config(broker, name)) as node:
            wait_for(lambda: local_ready(spool_dir) > 0, timeout=60, interval=0.005)
            if isinstance(broker, Rabbit):
                broker.stop()  # rabbitmq: a clean stop (its script does not die with the PID)
            else:
                broker.kill()  # the connection is cut in the middle of the stream
            broker.restart()
            run(_publish(broker, name, 500, start=n))
            wait_for(lambda: local_ready(spool_dir) >= n + 500, timeout=90)
            assert "source src" in node.log() or local_ready(spool_dir) >= n + 500
    finally:
        if broker.proc is None or broker.proc.poll() is not None:
            broker.restart()
    bodies = local_bodies(spool_dir)
    assert sorted(bodies) == sorted(f"s{i}".encode() for i in range(n + 500))  # all, once (dedup by broker id)


def test_source_ids_are_deterministic() -> None:
    from spoolq.bridges import source_id

    u = str(uuid.uuid4())
    assert source_id("a", u) == u  # a UUID (what a spoolq sink writes) is kept
    assert source_id("a", "x-1") == source_id("a", "x-1")  # a redelivery maps to the same id
    assert source_id("a", "x-1") != source_id("b", "x-1")  # per source
    uuid.UUID(source_id("a", "1700000000000-0"))


def test_bad_source_key_is_named(tmp_path: Path) -> None:
    from spoolq.node.config import ConfigError, load_config

    cfg = tmp_path / "n.toml"
    cfg.write_text('[[sources]]\nname = "s"\nurl = "redis://127.0.0.1:1/0"\nchannel = "c"\nqueue = "q"\n')
    with pytest.raises(ConfigError, match=r"sources\[0\]\.queue"):
        load_config(cfg)
    cfg.write_text('[[sources]]\nname = "s"\nurl = "http://127.0.0.1:1"\nchannel = "c"\n')
    with pytest.raises(ConfigError, match=r"sources\[0\]\.url"):
        load_config(cfg)
    cfg.write_text('[[sources]]\nname = "s"\nurl = "nats://127.0.0.1:1"\nchannel = "c"\nbatch = 0\n')
    with pytest.raises(ConfigError, match=r"sources\[0\]\.batch"):
        load_config(cfg)


def test_broker_passwords_are_redacted() -> None:
    from spoolq.bridges import redact

    assert redact("amqp://guest:pw@127.0.0.1:5672/vh") == "amqp://guest:***@127.0.0.1:5672/vh"
    assert redact("rediss://:pw@h/0") == "rediss://:***@h/0"
    assert redact("nats://127.0.0.1:4222") == "nats://127.0.0.1:4222"
