"""The network path A -> B (issue 15): connections reused, order and exactly-once kept, wake-ups prompt."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from spoolq import _bell
from spoolq.node import gate as gate_module
from spoolq.node.config import NodeConfig, PeerConfig
from spoolq.node.daemon import Node

from .conftest import wait_for


async def until(cond: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def forwarded(a: Node) -> int:
    link = a.links.get("b")
    return 0 if link is None else link.forwarded


def run_pair(tmp_path: Path, body: Callable[[Node, Node], Awaitable[None]], **peer: Any) -> None:
    """Real nodes A and B in this process (one event loop, real HTTP on 127.0.0.1); A forwards to B as peer b."""

    async def main() -> None:
        b = Node(NodeConfig(spool=str(tmp_path / "b"), listen="127.0.0.1:0").validate())
        await b.start()
        try:
            cfg = NodeConfig(spool=str(tmp_path / "a"), listen="127.0.0.1:0", backoff_base=0.05, backoff_cap=0.3,
                             peers=(PeerConfig("b", b.url, **peer),)).validate()
            a = Node(cfg)
            await a.start()
            try:
                await asyncio.wait_for(body(a, b), 60)
            finally:
                await a.stop()
        finally:
            await b.stop()

    asyncio.run(main())


def test_forwarding_reuses_keep_alive_connections(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[float] = []
    factory = gate_module.Gate.__call__

    def counting(self: gate_module.Gate) -> asyncio.BaseProtocol:
        made.append(time.monotonic())
        return factory(self)

    monkeypatch.setattr(gate_module.Gate, "__call__", counting)
    n, per_batch, in_flight = 300, 5, 2

    async def body(a: Node, b: Node) -> None:
        await until(lambda: len(made) >= 1)  # A's hello to B at start
        for i in range(0, n, 20):  # in several rounds, so that connections go idle between batches
            await asyncio.to_thread(a.spool.send_many, [b"m%d" % k for k in range(i, i + 20)], "c", to="b")
            await until(lambda i=i: forwarded(a) >= i + 20)  # type: ignore[misc]
        assert b.spool.stats().channels["c"].ready == n

    run_pair(tmp_path, body, batch_messages=per_batch, max_in_flight=in_flight)
    # 60 batches or more (and a hello) on at most one connection per batch in flight, plus the hello's
    assert len(made) <= in_flight + 1, f"{len(made)} connections for {n // per_batch} batches"


def test_order_and_exactly_once_with_batches_in_flight(tmp_path: Path) -> None:
    """Per-peer order by priority then age arrives intact, each message once, with 4 batches in flight."""
    n = 400

    async def body(a: Node, b: Node) -> None:
        urgent = await asyncio.to_thread(a.spool.send_many, [b"u%d" % k for k in range(50)], "c", to="b",
                                         priority=10)
        plain = await asyncio.to_thread(a.spool.send_many, [b"p%d" % k for k in range(n)], "c", to="b")
        await until(lambda: forwarded(a) >= n + 50)
        leased = await asyncio.to_thread(b.spool.lease_many, "c", 10_000)
        assert [x.id for x in leased] == [*urgent, *plain]  # priority first, then age
        assert b.spool.stats().channels["c"].ready == 0

    run_pair(tmp_path, body, batch_messages=7, max_in_flight=4)


def test_a_send_wakes_the_forwarder_at_once(tmp_path: Path) -> None:
    """A message for a known peer is forwarded on the outbox bell, not on the 5 s scan."""

    async def body(a: Node, b: Node) -> None:
        await asyncio.to_thread(a.spool.send, b"first", "c", to="b")
        await until(lambda: forwarded(a) == 1)
        for k in range(5):
            t0 = time.monotonic()
            await asyncio.to_thread(a.spool.send, b"m%d" % k, "c", to="b")
            await until(lambda k=k: forwarded(a) == k + 2, timeout=4.0)  # type: ignore[misc]
            assert time.monotonic() - t0 < 4.0

    run_pair(tmp_path, body)


def test_outbox_batch_nowait_reads_or_says_it_would_wait(tmp_path: Path) -> None:
    from spoolq import Spool

    with Spool(tmp_path / "s") as s:
        ids = s.send_many([b"a", b"b", b"c"], "c", to="http://127.0.0.1:1")
        peer = "http://127.0.0.1:1"
        got = s.outbox_batch_nowait(peer, max_messages=2)
        assert got is not None and [r.body for r in got] == [b"a", b"b"]
        assert got == s.outbox_batch(peer, max_messages=2)
        rest = s.outbox_batch_nowait(peer, after=got[-1].key)
        assert rest is not None and [r.body for r in rest] == [b"c"] and len(ids) == 3
        with s._db.read_lock:  # another thread is reading: it would wait, so it does not
            assert s.outbox_batch_nowait(peer) is None
        assert s.outbox_batch_nowait("unknown-peer") is None  # a name to look up: not on the loop
        assert s.outbox_batch("unknown-peer") == []
    with Spool(tmp_path / "s") as fresh:  # names not cached yet in this object: it would read them
        assert fresh.outbox_batch_nowait(peer) is None
        assert [r.body for r in fresh.outbox_batch(peer)] == [b"a", b"b", b"c"]
        assert [r.body for r in fresh.outbox_batch_nowait(peer) or []] == [b"a", b"b", b"c"]


def test_a_backlog_goes_in_full_batches_with_one_in_flight(tmp_path: Path) -> None:
    """The inline first read (at most 64 messages) must not cut a backlog into small batches."""
    n, per_batch = 900, 300

    def ok_batches(node: Node) -> float:
        return float(node.metrics.receive_batches.labels("ok")._value.get())

    async def body(a: Node, b: Node) -> None:
        await asyncio.to_thread(a.spool.send_many, [b"m%d" % k for k in range(n)], "c", to="b")
        await until(lambda: forwarded(a) >= n)
        assert ok_batches(b) <= n // per_batch + 1, f"{ok_batches(b):.0f} batches for {n} messages"
        for k in range(3):  # and single sends still go at once, one by one
            await asyncio.to_thread(a.spool.send, b"single", "c", to="b")
            await until(lambda k=k: forwarded(a) >= n + k + 1)  # type: ignore[misc]
        assert b.spool.stats().channels["c"].ready == n + 3

    run_pair(tmp_path, body, batch_messages=per_batch, max_in_flight=1)


def test_a_big_batch_is_counted_once_per_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The all-accepted reply (one shared result) and the mixed one count the same way: messages
    into the dashboard's flows and the received metric, duplicates apart."""
    from spoolq.codec import WireMessage, decode_reply, encode_batch
    from spoolq.message import _take_ids

    def received(node: Node, result: str) -> float:
        return float(node.metrics.received_total.labels(result)._value.get())

    async def body(a: Node, b: Node) -> None:
        assert b.history is not None
        came: dict[str, int] = {}  # the history's own counts are taken away by its sampler
        monkeypatch.setattr(b.history, "came", lambda ch, n=1: came.__setitem__(ch, came.get(ch, 0) + n))
        msgs = [WireMessage(_take_ids(1).to_bytes(16, "big"), "c" if k < 40 or k % 2 else "d", b"x")
                for k in range(60)]
        assert a._session is not None
        for sent, want in ((msgs[:40], [0] * 40), (msgs, [1] * 40 + [0] * 20)):
            async with a._session.post(b.url + "/v1/batches", data=encode_batch("node-a", sent)) as resp:
                assert resp.status == 200
                reply = decode_reply(await resp.read(), expected=len(sent))
            assert [r.status for r in reply.results] == want
        assert received(b, "accepted") == 60 and received(b, "duplicate") == 40
        assert came == {"c": 50, "d": 10}

    run_pair(tmp_path, body)


def with_bells(tmp_path: Path, main: Callable[[Path, _bell.Bells], Awaitable[None]]) -> None:
    """Run ``main(bells_dir, ringer)`` on an event loop, with a bells directory and a ringer of its own."""
    bells_dir = tmp_path / "bells"
    bells_dir.mkdir()
    ringer = _bell.Bells(bells_dir)
    try:
        asyncio.run(main(bells_dir, ringer))
    finally:
        ringer.close()


def test_a_bell_without_a_file_is_heard_through_the_directory_and_no_file_is_made(tmp_path: Path) -> None:
    """A client's long poll names any channel it likes: the hub does not make a file for a bell nobody
    rang (``create=False``), it hears the bell's first ring through the directory, and drops that
    watch when its last such waiter leaves."""

    async def main(bells_dir: Path, ringer: _bell.Bells) -> None:
        hub = _bell.BellHub(bells_dir)
        hub.start()
        try:
            waits = [hub.subscribe(f"c.poll{i}", create=False) for i in range(20)]
            assert sorted(os.listdir(bells_dir)) == []
            ringer.ring("c.poll7")  # the first send to that channel
            await asyncio.wait_for(waits[7].wait(), 10)
            assert not any(w.is_set() for i, w in enumerate(waits) if i != 7)
            assert sorted(os.listdir(bells_dir)) == ["c.poll7"]
            for i, w in enumerate(waits):
                hub.unsubscribe(f"c.poll{i}", w)
            assert hub._name_wd == {}  # the directory's watch went with its last waiter
            kept = hub.subscribe("c.poll7", create=False)  # its file exists now: watched as a file
            assert list(hub._name_wd) == ["c.poll7"]
            ringer.ring("c.poll7")
            await asyncio.wait_for(kept.wait(), 10)
        finally:
            hub.close()

    with_bells(tmp_path, main)


def test_the_hub_wakes_only_for_the_bells_it_watches(tmp_path: Path) -> None:
    """A node's hub watches the files of bells someone waits on: its own ring of another channel (every
    received batch rings one) does not wake its loop; ``"*"`` still hears every bell; an unsubscribed
    bell is not heard any more."""

    async def main(bells_dir: Path, ringer: _bell.Bells) -> None:
        hub = _bell.BellHub(bells_dir)
        fired: list[str] = []
        real_fire = hub._fire

        def noting(name: str) -> None:
            fired.append(name)
            real_fire(name)

        hub._fire = noting  # type: ignore[method-assign]
        outbox = hub.subscribe(_bell.OUTBOX)  # before start, as the daemon does
        hub.start()
        try:
            lat = hub.subscribe("c.lat")
            ringer.ring("c.other")  # nobody here waits on it
            ringer.ring("c.lat")
            await asyncio.wait_for(lat.wait(), 10)
            # inotify keeps the order of events: a watched c.other would have come first
            assert fired == ["c.lat"] and not outbox.is_set()
            ringer.ring(_bell.OUTBOX)
            await asyncio.wait_for(outbox.wait(), 10)

            hub.unsubscribe("c.lat", lat)
            lat.clear()
            everything = hub.subscribe("*")
            fired.clear()
            ringer.ring("c.lat")
            await asyncio.wait_for(everything.wait(), 10)
            assert fired == ["c.lat"] and not lat.is_set()
        finally:
            hub.close()

    with_bells(tmp_path, main)


def test_messages_between_nodes_are_announced_before_the_sync_and_answered_after_it(tmp_path: Path) -> None:
    """A consumer's wake-up overlaps the receiver's sync (the sender keeps the batch until the answer,
    which still waits for the sync), and the forwarder's read overlaps the sender's (send() still
    returns after it); a local send still rings after its sync."""
    from spoolq import Spool, _bell
    from spoolq.codec import WireMessage
    from spoolq.message import _take_ids

    order: list[str] = []
    with Spool(tmp_path / "b", durability="full") as s:
        real_ring, real_sync = s.bells.ring, s._db.sync_created

        def ring(name: str) -> None:
            order.append(f"ring {name}")
            real_ring(name)

        def sync() -> None:
            order.append("sync")
            real_sync()

        real_insert = s._db.insert_created

        def insert(statement: str, params: tuple[object, ...], synced: bool = False) -> None:
            real_insert(statement, params, synced)
            if synced:  # a lone sender's commit that SQLite synced itself (no writer thread lingering)
                order.append("sync")

        s.bells.ring = ring  # type: ignore[method-assign]
        s._db.sync_created = sync  # type: ignore[method-assign]
        s._db.insert_created = insert  # type: ignore[method-assign]
        m = WireMessage(_take_ids(1).to_bytes(16, "big"), "c", b"x", 1024, None, None, None, "node-a")

        async def receive() -> None:
            await s.areceive([m], "node-a")
            order.append("answered")

        asyncio.run(receive())
        assert order == [f"ring {_bell.channel_bell('c')}", "sync", "answered"]
        order.clear()
        wait_for(lambda: not s._commit._leading, 10)  # the writer thread stopped lingering: a lone send
        s.send(b"y", "c")
        # a lone sender's row may be synced by SQLite inside its commit (synchronous=FULL): no sync_created
        assert order in (["sync", f"ring {_bell.channel_bell('c')}"], [f"ring {_bell.channel_bell('c')}"])
        order.clear()
        s.send(b"z", "c", to="http://127.0.0.1:9")  # the forwarder's read and POST overlap the sync
        order.append("returned")
        assert order == [f"ring {_bell.OUTBOX}", "sync", "returned"]


def test_a_message_ahead_of_the_cursor_goes_when_the_batch_in_flight_returns(tmp_path: Path) -> None:
    """A link that read to the end is not woken by each finished batch (that read found nothing), but
    one that could not go round to the front because a batch was in flight is: a more urgent message
    sent meanwhile goes then, not on the next scan."""
    import aiohttp

    from spoolq import Spool
    from spoolq.codec import ACCEPTED_RESULT, Result, WireMessage
    from spoolq.node.forwarder import PeerLink, Target

    class GatedSink:
        def __init__(self) -> None:
            self.got: list[bytes] = []
            self.gate = asyncio.Event()

        async def deliver(self, messages: list[WireMessage]) -> list[Result]:
            self.got += [m.body for m in messages]
            await self.gate.wait()
            return [ACCEPTED_RESULT] * len(messages)

        async def close(self) -> None:
            pass

    async def main(s: Spool) -> None:
        sink = GatedSink()
        async with aiohttp.ClientSession() as session:
            link = PeerLink("b", [Target("b", "http://127.0.0.1:9", sink=sink)], s, session, node_id="a",
                            scan_interval=600.0)  # no scan comes to the rescue
            task = asyncio.create_task(link.run())
            try:
                s.send(b"first", "c", to="b")
                link.wake.set()  # the outbox bell
                await until(lambda: sink.got == [b"first"])
                s.send(b"urgent", "c", to="b", priority=1)  # sorts before the cursor
                link.wake.set()
                await until(lambda: not link.wake.is_set())  # read after the cursor: nothing
                sink.gate.set()
                await until(lambda: sink.got == [b"first", b"urgent"])
                await until(lambda: link.forwarded == 2)
            finally:
                await link.stop()
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    with Spool(tmp_path / "a") as s:
        asyncio.run(main(s))


def test_new_peers_sent_to_in_quick_succession_all_get_links(tmp_path: Path) -> None:
    """The outbox bell looks for new outbox peers at most every NEW_PEER_GAP; rings in between are kept,
    so a peer first sent to during the gap still gets its link without waiting for the scan."""
    from spoolq.testing import StubPeer

    with StubPeer() as p1, StubPeer() as p2, StubPeer() as p3:
        async def main() -> None:
            node = Node(NodeConfig(spool=str(tmp_path / "a"), listen="127.0.0.1:0", scan_interval=600.0).validate())
            await node.start()
            try:
                for p in (p1, p2, p3):
                    await asyncio.to_thread(node.spool.send, b"to " + p.url.encode(), "c", to=p.url)
                await until(lambda: all(len(p.messages) == 1 for p in (p1, p2, p3)))
            finally:
                await node.stop()

        asyncio.run(main())


def test_a_small_received_batch_is_written_on_the_loop_and_answered_after_the_sync(tmp_path: Path) -> None:
    """No hand-off to the writer thread for a lone small batch (issue 15): it is written in the loop's
    thread, its bell rung, then synced (in another thread) before areceive returns; sent again, it is all
    duplicates. A larger batch, or one that finds the gate held by another thread, goes to the writer
    thread as before, and is stored exactly once all the same."""
    import threading

    from spoolq import Spool, _bell
    from spoolq.codec import WireMessage
    from spoolq.message import _take_ids
    from spoolq.store import commit as commit_module
    from spoolq.store.outbox import RECEIVE_NOW_MESSAGES

    def wire(n: int) -> list[WireMessage]:
        return [WireMessage(_take_ids(1).to_bytes(16, "big"), "c", b"m", 1024, None, None, None, "node-a")
                for _ in range(n)]

    with Spool(tmp_path / "b", durability="full") as s:
        asyncio.run(s.areceive(wire(1), "node-a"))  # names cached (channel, origin): nothing to look up
        order: list[tuple[str, int]] = []
        real_ring, real_sync, real_write = s.bells.ring, s._db.sync_created, commit_module.GroupCommit._write_batch

        def ring(name: str) -> None:
            order.append((f"ring {name}", threading.get_ident()))
            real_ring(name)

        def sync() -> None:
            order.append(("sync", threading.get_ident()))
            real_sync()

        def write(self: commit_module.GroupCommit, batch: list[commit_module.WriteRequest],
                  nowait: bool = False) -> bool:
            done = real_write(self, batch, nowait)
            order.append((f"write nowait={nowait} done={done}", threading.get_ident()))
            return done

        s.bells.ring = ring  # type: ignore[method-assign]
        s._db.sync_created = sync  # type: ignore[method-assign]
        commit_module.GroupCommit._write_batch = write  # type: ignore[method-assign]
        try:
            async def receive(batch: list[WireMessage]) -> tuple[set[bytes], int]:
                dups = await s.areceive(batch, "node-a")
                order.append(("answered", threading.get_ident()))
                return dups, threading.get_ident()

            small = wire(3)
            dups, loop_thread = asyncio.run(receive(small))
            bell = f"ring {_bell.channel_bell('c')}"
            assert dups == set()
            assert [o for o, _ in order] == ["write nowait=True done=True", bell, "sync", "answered"]
            assert order[0][1] == order[1][1] == loop_thread != order[2][1]
            order.clear()
            dups, _ = asyncio.run(receive(small))  # sent again (a lost answer): all duplicates, no bell
            assert dups == {m.id for m in small}
            order.clear()

            big = wire(RECEIVE_NOW_MESSAGES + 1)
            dups, loop_thread = asyncio.run(receive(big))
            assert dups == set()
            writes = [(o, t) for o, t in order if o.startswith("write")]
            assert writes == [(writes[0][0], writes[0][1])] and "nowait=False" in writes[0][0]
            assert writes[0][1] != loop_thread
            order.clear()

            held = threading.Event()
            release = threading.Event()

            def hold_gate() -> None:
                with s._db.gate:
                    held.set()
                    release.wait(30)

            holder = threading.Thread(target=hold_gate)
            holder.start()
            held.wait(30)

            async def blocked() -> tuple[set[bytes], int]:
                task = asyncio.ensure_future(receive(small2))
                await asyncio.sleep(0.05)  # the batch now waits for the gate, in the writer thread
                release.set()
                return await task

            small2 = wire(2)
            try:
                dups, loop_thread = asyncio.run(blocked())
            finally:
                release.set()
                holder.join()
            assert dups == set()
            writes = [(o, t) for o, t in order if o.startswith("write")]
            assert writes[0] == ("write nowait=True done=False", loop_thread)  # tried, gave up, nothing done
            assert writes[1][0] == "write nowait=False done=True" and writes[1][1] != loop_thread
        finally:
            commit_module.GroupCommit._write_batch = real_write  # type: ignore[method-assign]
        got = s.lease_many("c", 1000)
        assert sorted(x.body for x in got).count(b"m") == 1 + 3 + RECEIVE_NOW_MESSAGES + 1 + 2


def test_txn_nowait_gives_up_while_another_process_writes(tmp_path: Path) -> None:
    """SQLite busy (another connection holds the write lock): nothing done, no wait; then it writes."""
    import sqlite3

    from spoolq import Spool

    with Spool(tmp_path / "s") as s:
        db = s._db
        other = sqlite3.connect(tmp_path / "s" / "spool.db", isolation_level=None, timeout=0)
        try:
            other.execute("BEGIN IMMEDIATE")
            calls: list[int] = []
            assert db.txn_nowait(db.move, lambda c: calls.append(1)) == (False, None)
            assert calls == [] and not db.move.in_transaction
            other.execute("ROLLBACK")
            assert db.txn_nowait(db.move, lambda c: c.execute("SELECT 1").fetchone()[0]) == (True, 1)
        finally:
            other.close()


def test_the_forwarder_posts_an_inline_batch_before_reading_again(tmp_path: Path) -> None:
    """A batch read on the loop is on its way (its POST written) before the step reads again (issue 15:
    that read, which usually finds nothing, delayed every lone message by its length); a batch read on
    the loop is short, so the step reads no more; a small answer is settled on the loop."""
    import threading

    import aiohttp

    from spoolq import Spool
    from spoolq.codec import ACCEPTED_RESULT, Result, WireMessage
    from spoolq.node.forwarder import PeerLink, Target

    events: list[str] = []

    class Sink:
        async def deliver(self, messages: list[WireMessage]) -> list[Result]:
            events.append("post")
            await asyncio.sleep(0)
            return [ACCEPTED_RESULT] * len(messages)

        async def close(self) -> None:
            pass

    async def main(s: Spool) -> None:
        real_read, real_settle = s.outbox_batch_nowait, s.outbox_settle_nowait
        loop_thread = threading.get_ident()

        def read(*a: Any, **k: Any) -> Any:
            events.append("read")
            return real_read(*a, **k)

        def settle(*a: Any, **k: Any) -> bool:
            done = real_settle(*a, **k)
            events.append(f"settled {done} {threading.get_ident() == loop_thread}")
            return done

        s.outbox_batch_nowait = read  # type: ignore[method-assign]
        s.outbox_settle_nowait = settle  # type: ignore[method-assign]
        async with aiohttp.ClientSession() as session:
            link = PeerLink("b", [Target("b", "http://127.0.0.1:9", sink=Sink())], s, session, node_id="a",
                            scan_interval=600.0)
            task = asyncio.create_task(link.run())
            try:
                await until(lambda: link.forwarded == 1)
            finally:
                await link.stop()
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        # one read per woken batch: no read after it (it would find nothing) until the batch is settled,
        # then one from the front (the link goes round once nothing is in flight)
        assert events[:4] == ["read", "post", "settled True True", "read"]

    with Spool(tmp_path / "a") as s:
        s.send(b"one", "c", to="b")
        asyncio.run(main(s))
        assert s.stats().peers["b"].outbox == 0
