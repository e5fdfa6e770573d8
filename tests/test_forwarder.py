"""The forwarder against a stub peer that fails, stalls and rejects (spoolq.testing.StubPeer)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from spoolq import Spool
from spoolq.node.config import NodeConfig
from spoolq.node.daemon import Node
from spoolq.testing import StubPeer

from .nodes import NodeProc


@pytest.fixture
def stub() -> Iterator[StubPeer]:
    with StubPeer() as peer:
        yield peer


def run_node(spool_dir: Path, body: object, timeout: float = 30.0) -> None:
    """Start an in-process node on ``spool_dir``, run ``body(node)`` (a coroutine function), stop it."""

    async def main() -> None:
        cfg = NodeConfig(spool=str(spool_dir), listen="127.0.0.1:0", backoff_base=0.05, backoff_cap=0.3,
                         scan_interval=0.5).validate()
        node = Node(cfg)
        await node.start()
        try:
            await asyncio.wait_for(body(node), timeout)  # type: ignore[operator]
        finally:
            await node.stop()

    asyncio.run(main())


async def until(cond: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def test_peer_answering_500_keeps_messages_until_it_recovers(tmp_path: Path, stub: StubPeer) -> None:
    stub.fail(4, status=500)

    async def body(node: Node) -> None:
        node.spool.send_many([b"m%d" % i for i in range(50)], "c", to=stub.url)
        await until(lambda: stub.batches >= 4)
        assert node.spool.stats().peers[stub.url].outbox > 0 or len(stub.messages) == 50
        await until(lambda: len(stub.messages) == 50)
        await until(lambda: node.spool.stats().peers[stub.url].outbox == 0)
        link = node.links[stub.url]
        # the settle commits in a thread; the link resets its failures when the loop resumes after it
        await until(lambda: link.targets[0].failures == 0)
        assert link.targets[0].last_error is not None

    run_node(tmp_path / "a", body)
    assert sorted(m.body for m in stub.messages) == sorted(b"m%d" % i for i in range(50))


def test_slow_peer_still_gets_everything_once(tmp_path: Path, stub: StubPeer) -> None:
    stub.delay = 0.3

    async def body(node: Node) -> None:
        node.spool.send_many([b"m%d" % i for i in range(30)], "c", to=stub.url)
        await until(lambda: len(stub.messages) == 30 and node.spool.stats().peers[stub.url].outbox == 0)

    run_node(tmp_path / "a", body)
    assert len({m.id for m in stub.messages}) == 30


def test_permanent_rejection_becomes_a_dead_letter(tmp_path: Path, stub: StubPeer) -> None:
    stub.reject("refused")

    async def body(node: Node) -> None:
        node.spool.send(b"no", "refused", to=stub.url)
        node.spool.send(b"yes", "fine", to=stub.url)
        await until(lambda: len(node.spool.dead_letters()) == 1 and len(stub.messages) == 1)
        d = node.spool.dead_letters()[0]
        assert d.reason == "rejected" and d.peer == stub.url and "rejected by the stub" in d.detail

    run_node(tmp_path / "a", body)


def test_expired_messages_are_not_forwarded(tmp_path: Path, stub: StubPeer) -> None:
    stub.fail(1000, status=503)

    async def body(node: Node) -> None:
        node.spool.send(b"late", "c", to=stub.url, ttl=0.3)
        await asyncio.sleep(0.5)
        stub.recover()
        await until(lambda: len(node.spool.dead_letters()) == 1)
        assert node.spool.dead_letters()[0].reason == "expired"

    run_node(tmp_path / "a", body)
    assert stub.messages == []


def test_peer_token_is_sent(tmp_path: Path) -> None:
    with StubPeer(token="t0k3n-t0k3n-t0k3n") as peer:
        cfg_toml = f'[peers.p]\nurl = "{peer.url}"\ntoken = "t0k3n-t0k3n-t0k3n"\n'
        with Spool(tmp_path / "a") as s:
            s.send(b"x", "c", to="p")
        node = NodeProc(tmp_path / "a", config=cfg_toml)
        try:
            deadline = time.monotonic() + 20
            while not peer.messages and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            node.stop()
        assert [m.body for m in peer.messages] == [b"x"]


def test_message_too_big_for_the_peer_is_dead_lettered(tmp_path: Path) -> None:
    b = NodeProc(tmp_path / "b", config="[node]\nmax_message_size = 1000\nmax_batch_bytes = 4096\n")
    a = NodeProc(tmp_path / "a", config=f'[node]\nbackoff_cap = 0.3\n\n[peers.b]\nurl = "{b.url}"\n')
    try:
        with Spool(tmp_path / "a") as s:
            s.send(b"x" * 10000, "big", to="b")  # over B's batch limit: B answers 413, always
            s.send(b"small", "big", to="b")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not (s.dead_letters() and s.stats().peers["b"].outbox == 0):
                time.sleep(0.05)
            dead = s.dead_letters()
            assert len(dead) == 1 and dead[0].reason == "rejected" and "413" in dead[0].detail
            assert s.stats().peers["b"].outbox == 0
        with Spool(tmp_path / "b") as sb:
            assert [x.body for x in sb.lease_many("big", 10)] == [b"small"]
    finally:
        a.stop()
        b.stop()


def test_an_outbox_record_is_a_wire_message() -> None:
    """A batch of records is encoded as it is (``encode_batch``), and ``_wire`` builds a WireMessage
    for other sinks from the record itself, naming this node where the record's origin is None."""
    from spoolq.codec import WireMessage, decode_batch, encode_batch
    from spoolq.node.forwarder import _wire
    from spoolq.store.outbox import OutboxRecord

    assert OutboxRecord._fields == WireMessage.__struct_fields__
    r = OutboxRecord(b"i" * 16, "ch", b"body", 5, {"k": "v"}, 7, 8, "node")
    assert r.key == (5, b"i" * 16)
    assert _wire(r, "me") == WireMessage(b"i" * 16, "ch", b"body", 5, {"k": "v"}, 7, 8, "node")
    mine = r._replace(origin=None)
    assert _wire(mine, "me") == WireMessage(b"i" * 16, "ch", b"body", 5, {"k": "v"}, 7, 8, "me")
    wire = [WireMessage(*r), WireMessage(*mine)]
    assert encode_batch("me", [r, mine]) == encode_batch("me", wire)
    assert decode_batch(encode_batch("me", [r, mine])).messages == wire


def test_a_few_messages_are_read_on_the_loop_while_batches_are_in_flight(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No backlog: the next small batch is read without a thread hop even with others in flight."""
    import aiohttp

    from spoolq.codec import ACCEPTED_RESULT, WireMessage
    from spoolq.node import forwarder
    from spoolq.node.forwarder import PeerLink, Target

    class Sink:
        def __init__(self) -> None:
            self.got: list[list[WireMessage]] = []

        async def deliver(self, messages: list[WireMessage]) -> list[forwarder.Result]:
            self.got.append(messages)
            return [ACCEPTED_RESULT] * len(messages)

        async def close(self) -> None:
            pass

    async def no_thread(*args: object, **kwargs: object) -> object:
        raise AssertionError("read from a thread")

    async def main(s: Spool) -> None:
        sink = Sink()
        async with aiohttp.ClientSession() as session:
            link = PeerLink("b", [Target("b", "http://127.0.0.1:9", sink=sink)], s, session, node_id="a")
            link.in_flight = 2  # as if two batches were on their way
            monkeypatch.setattr(forwarder.asyncio, "to_thread", no_thread)
            assert await link.step() == 1
            await asyncio.sleep(0)  # the batch's task starts and hands it to the sink
            assert [[m.body for m in b] for b in sink.got] == [[b"a", b"b", b"c"]]

    with Spool(tmp_path / "a") as s:
        s.send_many([b"a", b"b", b"c"], "c", to="b")
        asyncio.run(main(s))


def test_unreachable_peer_gets_one_small_batch_at_a_time(tmp_path: Path) -> None:
    """Reading thousands of messages for a peer that refuses connections (and logging a failed attempt for
    each) took the write lock from producers: after no reply, one batch of at most 64 is tried at a time."""
    from spoolq.node.forwarder import UNREACHABLE_MESSAGES

    from .nodes import free_port

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    reads: list[tuple[int, bool, int]] = []  # (max_messages, target unreachable, batches in flight)

    async def body(node: Node) -> None:
        real = node.spool.outbox_batch

        def spy(*args: object, **kwargs: object) -> object:
            link = node.links.get(url)
            t = link.targets[0] if link is not None else None
            reads.append((int(kwargs["max_messages"]), bool(t and t.unreachable), link.in_flight if link else 0))
            return real(*args, **kwargs)  # type: ignore[arg-type]

        node.spool.outbox_batch = spy  # type: ignore[method-assign]
        node.spool.send_many([b"m%d" % i for i in range(1000)], "c", to=url)
        await until(lambda: url in node.links and node.links[url].targets[0].failures >= 4)
        assert node.spool.stats().peers[url].outbox == 1000

    run_node(tmp_path / "a", body)
    # reads decided before the first failure came back may still ask for a full batch; every later attempt
    # (at least three: four failures) reads a small one, with no other batch in flight
    assert all(n <= UNREACHABLE_MESSAGES for n, _, _ in reads[-3:]), reads
    assert all(n <= UNREACHABLE_MESSAGES for n, unreachable, in_flight in reads if unreachable and not in_flight), reads
