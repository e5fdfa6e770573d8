"""Producing: send, send_many, asend, idempotent ids, bad input."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

import spoolq
from spoolq import Spool
from spoolq.testing import FakeClock


def test_send_returns_id_and_message_is_ready(spool: Spool) -> None:
    mid = spool.send(b"hello", "jobs")
    assert spoolq.id_time(mid) > 0
    st = spool.stats().channels["jobs"]
    assert (st.ready, st.leased, st.delayed, st.dead) == (1, 0, 0, 0)
    lease = spool.lease("jobs")
    assert lease is not None
    assert lease.id == mid and lease.body == b"hello" and lease.priority == 1024 and lease.attempts == 1


def test_send_accepts_bytearray_and_memoryview(spool: Spool) -> None:
    spool.send(bytearray(b"ab"), "c")
    spool.send(memoryview(b"cd"), "c")
    bodies = [x.body for x in spool.lease_many("c", 10)]
    assert bodies == [b"ab", b"cd"]
    assert all(type(b) is bytes for b in bodies)


@pytest.mark.parametrize("durability", ["full", "normal"])
def test_single_sends_store_ids_and_bodies_of_every_size_exactly(spool_dir: Path, durability: str) -> None:
    """A lone send binds small bodies and the id as bytearrays (SQLite's adapter lookup skips those, issue 9)
    and large bodies as they are: either way they are BLOBs, read back as the same bytes."""
    s = Spool(spool_dir, durability=durability)  # type: ignore[arg-type]
    try:
        bodies = [b"", b"x", bytes(range(256)) * 16, b"y" * 4097, b"z" * 70_000]
        ids = [s.send(b, "c") for b in bodies]
        got = s.lease_many("c", 10)
        assert [(x.id, x.body) for x in got] == list(zip(ids, bodies, strict=True))
        assert all(type(x.body) is bytes for x in got)
        assert s.send(b"again", "c", id=ids[0]) == ids[0]  # the id is a 16-byte BLOB key: the probe finds it
        assert s.stats().channels["c"].leased == len(bodies) and s.stats().channels["c"].ready == 0
    finally:
        s.close()


def test_headers_ttl_and_priority_round_trip(spool: Spool, clock: FakeClock) -> None:
    spool.send(b"x", "c", headers={"content-type": "text/plain", "trace": "abc"}, ttl=60, priority=7)
    lease = spool.lease("c")
    assert lease is not None
    assert lease.headers == {"content-type": "text/plain", "trace": "abc"}
    assert lease.priority == 7
    assert lease.expires_at == pytest.approx(clock() + 60, abs=0.01)
    m = lease.message
    assert m.state == "leased" and m.headers["trace"] == "abc" and m.origin == spool.node_id


def test_send_many_returns_ids_in_order_and_stores_all(spool: Spool) -> None:
    bodies = [f"m{i}".encode() for i in range(1000)]
    ids = spool.send_many(bodies, "bulk")
    assert len(ids) == 1000 and ids == sorted(ids) and len(set(ids)) == 1000
    got = []
    while True:
        leases = spool.lease_many("bulk", 300)
        if not leases:
            break
        got += leases
        spool.ack_many(leases)
    assert [x.body for x in got] == bodies
    assert [x.id for x in got] == ids


def test_send_many_empty_is_a_no_op(spool: Spool) -> None:
    assert spool.send_many([], "c") == []
    assert "c" not in spool.stats().channels  # nothing was created


def test_send_many_with_options_goes_to_delayed(spool: Spool, clock: FakeClock) -> None:
    spool.send_many([b"a", b"b"], "c", delay=10, headers={"k": "v"})
    assert spool.stats().channels["c"].delayed == 2
    assert spool.lease("c") is None
    clock.advance(10)
    leases = spool.lease_many("c", 5)
    assert [x.body for x in leases] == [b"a", b"b"]
    assert all(x.headers == {"k": "v"} for x in leases)


def test_send_many_all_or_nothing_on_bad_body(spool: Spool) -> None:
    spool.send(b"first", "c")
    with pytest.raises(spoolq.InvalidType):
        spool.send_many([b"ok", "not bytes", b"ok"], "c")
    assert spool.stats().channels["c"].ready == 1


@pytest.mark.parametrize("value", [1e9 + 1, 1e300])
def test_durations_have_an_upper_bound(spool: Spool, value: float) -> None:
    with pytest.raises(spoolq.InvalidArgument, match="too long"):
        spool.send(b"x", "c", delay=value)
    with pytest.raises(spoolq.InvalidArgument, match="too long"):
        spool.send(b"x", "c", ttl=value)
    with pytest.raises(spoolq.InvalidArgument, match="too long"):
        spool.lease("c", visibility=value)
    assert spool.stats().channels == {}


def test_send_many_rejects_a_single_body(spool: Spool) -> None:
    with pytest.raises(spoolq.InvalidType, match="list of bodies"):
        spool.send_many(b"abc", "c")  # type: ignore[arg-type]


def test_idempotent_send_with_caller_id(spool: Spool) -> None:
    mid = spoolq.new_id()
    assert spool.send(b"once", "c", id=mid) == mid
    assert spool.send(b"once", "c", id=mid) == mid  # a retry: no-op
    assert spool.stats().channels["c"].ready == 1
    lease = spool.lease("c")
    assert lease is not None and lease.id == mid
    lease.ack()
    # still remembered after it was consumed: a late retry does not deliver twice
    assert spool.send(b"once", "c", id=mid) == mid
    assert spool.lease("c") is None


def test_resend_with_an_id_the_spool_generated_is_a_no_op(spool: Spool) -> None:
    mid = spool.send(b"x", "c")
    assert spool.send(b"x", "c", id=mid) == mid
    assert spool.stats().channels["c"].ready == 1


def test_idempotent_send_many_skips_seen_ids_only(spool: Spool) -> None:
    a, b, c = spoolq.new_id(), spoolq.new_id(), spoolq.new_id()
    spool.send(b"a", "c", id=a)
    assert spool.send_many([b"a", b"b", b"c"], "c", ids=[a, b, c]) == [a, b, c]
    assert sorted(x.body for x in spool.lease_many("c", 10)) == [b"a", b"b", b"c"]


def test_dedup_window_is_per_spool_and_expires(spool_dir: Path, clock: FakeClock) -> None:
    s = Spool(spool_dir, clock=clock, seen_retention=100)
    mid = spoolq.new_id()
    s.send(b"x", "c", id=mid)
    lease = s.lease("c")
    assert lease is not None
    lease.ack()
    clock.advance(50)
    s.send(b"x", "c", id=mid)
    assert s.lease("c") is None  # still within the window
    clock.advance(51)
    s.send(b"x", "c", id=mid)
    assert s.lease("c") is not None  # forgotten after the window
    s.close()


def test_concurrent_idempotent_sends_store_once(spool: Spool) -> None:
    mid = spoolq.new_id()
    errors: list[BaseException] = []

    def go() -> None:
        try:
            for _ in range(20):
                spool.send(b"x", "c", id=mid)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert spool.stats().channels["c"].ready == 1


def test_send_to_peer_goes_to_outbox(spool: Spool) -> None:
    spool.send(b"x", "c", to="dc2")
    spool.send(b"y", "c", to="http://10.0.0.2:7070")
    spool.send(b"z", "c", to=["dc2", "dc3"])  # one copy each
    st = spool.stats()
    assert st.peers["dc2"].outbox == 2
    assert st.peers["http://10.0.0.2:7070"].outbox == 1
    assert st.peers["dc3"].outbox == 1
    assert spool.stats().channels["c"].ready == 0


@pytest.mark.parametrize(
    "kwargs,exc,fragment",
    [
        ({"body": "text"}, spoolq.InvalidType, "bytes"),
        ({"body": 42}, spoolq.InvalidType, "bytes"),
        ({"body": None}, spoolq.InvalidType, "bytes"),
        ({"body": b"x" * (1024 * 1024 + 1)}, spoolq.MessageTooLarge, "max_message_size"),
        ({"channel": "bad name"}, spoolq.InvalidChannel, "channel"),
        ({"channel": ""}, spoolq.InvalidChannel, "channel"),
        ({"channel": "x" * 201}, spoolq.InvalidChannel, "channel"),
        ({"channel": 7}, spoolq.InvalidType, "channel"),
        ({"delay": -1}, spoolq.InvalidArgument, "delay"),
        ({"delay": "soon"}, spoolq.InvalidType, "delay"),
        ({"priority": -1}, spoolq.InvalidArgument, "priority"),
        ({"priority": 2**32}, spoolq.InvalidArgument, "priority"),
        ({"priority": "high"}, spoolq.InvalidType, "priority"),
        ({"ttl": 0}, spoolq.InvalidArgument, "ttl"),
        ({"ttl": -5}, spoolq.InvalidArgument, "ttl"),
        ({"headers": {"a": 1}}, spoolq.InvalidType, "headers"),
        ({"headers": "a=b"}, spoolq.InvalidType, "headers"),
        ({"id": "not-a-uuid"}, spoolq.InvalidArgument, "id"),
        ({"to": "bad peer!"}, spoolq.InvalidArgument, "peer"),
        ({"to": 5}, spoolq.InvalidType, "peer"),
        ({"to": []}, spoolq.InvalidArgument, "to="),
    ],
)
def test_bad_input_raises_clear_error_and_stores_nothing(
    spool: Spool, kwargs: dict[str, object], exc: type, fragment: str
) -> None:
    args: dict[str, object] = {"body": b"ok", "channel": "c"}
    args.update(kwargs)
    body = args.pop("body")
    channel = args.pop("channel")
    with pytest.raises(exc) as ei:
        spool.send(body, channel, **args)  # type: ignore[arg-type]
    assert fragment in str(ei.value)
    assert isinstance(ei.value, spoolq.SpoolqError)
    st = spool.stats()
    assert st.channels == {} and st.peers == {}  # not even the channel or peer was created


def test_headers_count_against_max_message_size(spool_dir: Path) -> None:
    s = Spool(spool_dir, max_message_size=100)
    s.send(b"x" * 100, "c")
    with pytest.raises(spoolq.MessageTooLarge):
        s.send(b"x" * 90, "c", headers={"name": "v" * 20})
    assert s.stats().channels["c"].ready == 1
    s.close()


def test_max_message_size_is_configurable(spool_dir: Path) -> None:
    s = Spool(spool_dir, max_message_size=10)
    s.send(b"x" * 10, "c")
    with pytest.raises(spoolq.MessageTooLarge):
        s.send(b"x" * 11, "c")
    s.close()


def test_group_commit_many_threads_all_durable(real_spool: Spool) -> None:
    n_threads, per = 8, 300
    results: list[list[str]] = [[] for _ in range(n_threads)]

    def go(i: int) -> None:
        for k in range(per):
            results[i].append(real_spool.send(f"{i}:{k}".encode(), "gc"))

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [i for r in results for i in r]
    assert len(set(ids)) == n_threads * per
    got = set()
    while leases := real_spool.lease_many("gc", 500):
        got.update(x.id for x in leases)
        real_spool.ack_many(leases)
    assert got == set(ids)


def test_group_commit_with_mixed_requests(real_spool: Spool) -> None:
    """Plain, delayed, outbox and dedup sends from many threads land in the same commits correctly."""
    mid = spoolq.new_id()

    def go(i: int) -> None:
        for k in range(50):
            kind = (i + k) % 4
            if kind == 0:
                real_spool.send(b"plain", "mix")
            elif kind == 1:
                real_spool.send(b"later", "mix", delay=3600)
            elif kind == 2:
                real_spool.send(b"away", "mix", to="peer1")
            else:
                real_spool.send(b"once", "mix", id=mid)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    st = real_spool.stats()
    assert st.channels["mix"].ready == 100 + 1
    assert st.channels["mix"].delayed == 100
    assert st.peers["peer1"].outbox == 100


def test_asend_many_tasks_share_commits(real_spool: Spool) -> None:
    async def main() -> list[str]:
        async def prod(i: int) -> list[str]:
            return [await real_spool.asend(f"{i}:{k}".encode(), "async") for k in range(50)]

        chunks = await asyncio.gather(*[prod(i) for i in range(20)])
        more = await real_spool.asend_many([b"a", b"b"], "async", priority=1)
        return [i for c in chunks for i in c] + more

    ids = asyncio.run(main())
    assert len(set(ids)) == 1002
    assert real_spool.stats().channels["async"].ready == 1002
    batches, messages = real_spool.commit_stats()
    assert batches < messages  # at least some commits carried several sends


def test_asend_error_is_raised_in_the_task(real_spool: Spool) -> None:
    async def main() -> None:
        await real_spool.asend("text", "c")  # type: ignore[arg-type]

    with pytest.raises(spoolq.InvalidType):
        asyncio.run(main())


def test_asend_idempotent(real_spool: Spool) -> None:
    mid = spoolq.new_id()

    async def main() -> tuple[str, str]:
        return await real_spool.asend(b"x", "c", id=mid), await real_spool.asend(b"x", "c", id=mid)

    assert asyncio.run(main()) == (mid, mid)
    assert real_spool.stats().channels["c"].ready == 1


def test_asend_one_shares_one_request_per_loop_turn(real_spool: Spool) -> None:
    """The plain messages of one event-loop turn (the HTTP API's usual send) share one write request,
    and 40 of them (more than a cached multi-row statement used to take) all land with their bodies."""
    real_spool.send(b"first", "one")  # the channel exists: the shared path

    async def main() -> list[str]:
        return list(await asyncio.gather(*[real_spool.asend_one(f"m{i}".encode(), "one") for i in range(40)]))

    commits, requests = real_spool.commit_stats()
    ids = asyncio.run(main())
    assert len(set(ids)) == 40
    assert real_spool.commit_stats()[1] - requests == 1  # forty messages, one request
    assert real_spool.commit_stats()[0] - commits == 1
    got = {x.id: x.body for x in real_spool.lease_many("one", 100)}
    assert {got[i] for i in ids} == {f"m{i}".encode() for i in range(40)}
    assert len(got) == 41


def test_asend_one_with_the_event_log_shares_a_request_per_sender(tmp_path: Path) -> None:
    """With the event log on, a turn's messages share a request only with those of the same sender
    (ACTOR), so each ``created`` event still names who sent it."""
    from spoolq.store.events import ACTOR

    with Spool(tmp_path / "s", trace=True) as s:
        s.send(b"first", "one")

        async def send(actor: tuple[str, str | None]) -> str:
            ACTOR.set(actor)  # a task's own context, as a request handler sets it
            return await s.asend_one(b"x", "one")

        async def main() -> list[str]:
            senders = [("token:a", "10.0.0.1")] * 3 + [("token:b", "10.0.0.2")] * 2
            return list(await asyncio.gather(*[send(a) for a in senders]))

        requests = s.commit_stats()[1]
        ids = asyncio.run(main())
        assert s.commit_stats()[1] - requests == 2
        for mid, by in zip(ids, ["token:a"] * 3 + ["token:b"] * 2, strict=True):
            events = s.trace_events(mid)
            assert [e["kind"] for e in events] == ["created"]
            assert events[0]["detail"]["by"] == by


def test_asend_one_new_channel_and_bad_input(real_spool: Spool) -> None:
    async def main(body: object, channel: str) -> str:
        return await real_spool.asend_one(body, channel)  # type: ignore[arg-type]

    mid = asyncio.run(main(b"x", "brand.new"))  # not cached yet: created through the general path
    lease = real_spool.lease("brand.new")
    assert lease is not None and lease.id == mid
    with pytest.raises(spoolq.InvalidArgument):
        asyncio.run(main(b"x", "bad channel"))
    with pytest.raises(spoolq.InvalidType):
        asyncio.run(main("text", "brand.new"))
    with pytest.raises(spoolq.MessageTooLarge):
        asyncio.run(main(b"x" * (real_spool.max_message_size + 1), "brand.new"))
    assert real_spool.stats().channels["brand.new"].ready == 0
    assert "bad channel" not in real_spool.stats().channels


def test_a_failed_shared_commit_fails_every_sender_of_the_turn(real_spool: Spool,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    real_spool.send(b"first", "one")

    def boom(batch: object) -> None:
        raise spoolq.StorageError("the disk is gone")

    monkeypatch.setattr(real_spool._commit, "_write_batch", boom)

    async def main() -> list[object]:
        return list(await asyncio.gather(*[real_spool.asend_one(b"x", "one") for _ in range(5)],
                                         return_exceptions=True))

    results = asyncio.run(main())
    assert all(isinstance(r, spoolq.StorageError) for r in results), results
    monkeypatch.undo()
    assert real_spool.stats().channels["one"].ready == 1


def test_a_cancelled_sender_does_not_cancel_the_others(real_spool: Spool) -> None:
    real_spool.send(b"first", "one")

    async def main() -> list[str]:
        tasks = [asyncio.create_task(real_spool.asend_one(f"m{i}".encode(), "one")) for i in range(5)]
        await asyncio.sleep(0)  # every task has queued its row and waits
        tasks[0].cancel()
        with pytest.raises(asyncio.CancelledError):
            await tasks[0]
        return list(await asyncio.gather(*tasks[1:]))

    ids = asyncio.run(main())
    assert len(set(ids)) == 4
    got = {x.id for x in real_spool.lease_many("one", 100)}
    assert set(ids) <= got  # (the cancelled one's row was queued already: it may land too)


def test_asend_leaves_no_reference_cycles(real_spool: Spool) -> None:
    """A group's requests are freed when it is done, not left to the garbage collector (under load its
    full collections were ~8% of the node's CPU: the writer's callback closure held the group)."""
    import gc

    from spoolq.store.commit import WriteRequest

    real_spool.send(b"first", "one")

    async def main() -> None:
        for _ in range(3):
            await asyncio.gather(*[real_spool.asend_one(b"x", "one") for _ in range(10)])
            await asyncio.gather(*[real_spool.asend_items("one", [(b"y", {"priority": 3})]) for _ in range(10)])

    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        asyncio.run(main())
        gc.collect()
        left = [o for o in gc.garbage if isinstance(o, WriteRequest)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert left == []
    assert real_spool.stats().channels["one"].ready == 61


def test_the_event_loop_rings_the_bells_of_its_sends(real_spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A turn's bells are rung by the loop once its messages are synced (before the senders resume), so
    the writer thread goes straight on to the next group; a thread's send still rings in its own way."""
    real_spool.send(b"first", "one")
    rung: list[tuple[str, str]] = []
    real_ring = real_spool._commit.bells.ring

    def ring(name: str) -> None:
        rung.append((name, threading.current_thread().name))
        real_ring(name)

    monkeypatch.setattr(real_spool._commit.bells, "ring", ring)

    async def main() -> list[str]:
        ids = list(await asyncio.gather(*[real_spool.asend_one(b"x", "one") for _ in range(3)]))
        assert rung == [("c.one", threading.current_thread().name)]  # once for the turn, before we resume
        ids += await real_spool.asend_items("two", [(b"y", {"priority": 1})])
        return ids

    asyncio.run(main())
    assert rung[1] == ("c.two", threading.current_thread().name)


def test_the_writer_waits_longer_for_an_event_loops_next_group(real_spool: Spool) -> None:
    """After a loop's group the writer thread lingers LOOP_LINGER (a loop hands over a group a turn:
    notifying a waiting writer costs the loop less than starting it again through the executor)."""
    from spoolq.store import commit

    from .conftest import wait_for

    gc_ = real_spool._commit
    timeouts: list[float | None] = []
    real_wait = gc_._cv.wait

    def wait(timeout: float | None = None) -> bool:
        timeouts.append(timeout)
        return real_wait(timeout)

    gc_._cv.wait = wait  # type: ignore[method-assign]
    real_spool.send(b"first", "one")

    async def main() -> None:
        await real_spool.asend_one(b"x", "one")

    asyncio.run(main())
    wait_for(lambda: timeouts)
    assert timeouts[0] == commit.LOOP_LINGER
    assert commit.LOOP_LINGER > commit.LINGER


def test_close_wakes_a_lingering_writer(real_spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer thread lingers after an event loop's group (LOOP_LINGER, long: waiting costs nothing);
    close() does not wait that out: it wakes the writer, which then stops."""
    from spoolq.store import commit

    from .conftest import wait_for

    monkeypatch.setattr(commit, "LOOP_LINGER", 60.0)
    gc_ = real_spool._commit
    waits: list[tuple[float | None, bool]] = []
    real_wait = gc_._cv.wait

    def wait(timeout: float | None = None) -> bool:
        woken = real_wait(timeout)
        waits.append((timeout, woken))
        return woken

    gc_._cv.wait = wait  # type: ignore[method-assign]
    real_spool.send(b"first", "one")

    async def main() -> None:
        await real_spool.asend_one(b"x", "one")

    asyncio.run(main())
    wait_for(lambda: gc_._lingering)
    real_spool.close()
    assert waits[-1] == (60.0, True)  # woken by close(), not by the end of the wait
    assert not gc_._leading


def test_a_traced_group_of_plain_sends_is_one_statement(tmp_path: Path) -> None:
    """With the event log on, a group of plain sends and their ``created`` events are one autocommitted
    statement (the create connection's TEMP view, issue 9), not BEGIN, two INSERTs and COMMIT: each
    statement is a hand-off of the GIL for the writer thread. Every message still gets its event."""
    from spoolq.store.events import ACTOR

    with Spool(tmp_path / "s", trace=True) as s:
        s._commit.jobs._block = 1024  # job numbers for the whole group reserved before (else: a transaction)
        s.send(b"first", "one")
        s.send(b"first", "two")
        statements: list[str] = []
        s._db.create.set_trace_callback(statements.append)

        async def send(i: int) -> str:
            ACTOR.set(("token:a" if i % 2 else "token:b", "10.0.0.1"))
            return await s.asend_one(f"m{i}".encode(), "one" if i % 3 else "two")

        async def main() -> list[str]:
            return list(await asyncio.gather(*[send(i) for i in range(30)]))

        commits = s.commit_stats()[0]
        ids = asyncio.run(main())
        s._db.create.set_trace_callback(None)
        assert s.commit_stats()[0] - commits == 1
        # (the trace callback names the top statement again for each statement its trigger runs)
        assert len(set(statements)) == 1 and "send_traced" in statements[0]
        for i, mid in enumerate(ids):
            events = s.trace_events(mid)
            assert [e["kind"] for e in events] == ["created"]
            assert events[0]["detail"] == {"channel": "one" if i % 3 else "two",
                                           "by": "token:a" if i % 2 else "token:b", "client": "10.0.0.1"}
        got = {x.id: x.body for ch in ("one", "two") for x in s.lease_many(ch, 100)}
        assert {got[mid] for mid in ids} == {f"m{i}".encode() for i in range(30)}


def test_a_traced_group_whose_events_fail_writes_no_message(tmp_path: Path) -> None:
    """The messages and their events are one statement: when the events cannot be written, neither are
    the messages, and every sender of the group gets the error."""
    with Spool(tmp_path / "s", trace=True) as s:
        s.send(b"first", "one")
        s._db.create.execute("CREATE TEMP TRIGGER no_events BEFORE INSERT ON events BEGIN "
                             "SELECT RAISE(ABORT, 'no events today'); END")

        async def main() -> list[object]:
            return list(await asyncio.gather(*[s.asend_one(b"x", "one") for _ in range(5)],
                                             return_exceptions=True))

        results = asyncio.run(main())
        assert all(isinstance(r, spoolq.StorageError) for r in results), results
        s._db.create.execute("DROP TRIGGER temp.no_events")
        assert s.stats().channels["one"].ready == 1


def test_without_the_view_a_traced_group_takes_the_general_path(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """If SQLite refuses the TEMP view, the group is written by the general path (BEGIN ... COMMIT), with
    its events, and the view is not tried again."""
    from spoolq.store import sql

    monkeypatch.setattr(sql, "SEND_TRACED_VIEW", ("CREATE TEMP VIEW broken AS SELECT FROM",))
    with Spool(tmp_path / "s", trace=True) as s:
        s.send(b"first", "one")

        async def main() -> list[str]:
            return list(await asyncio.gather(*[s.asend_one(b"x", "one") for _ in range(5)]))

        ids = asyncio.run(main()) + asyncio.run(main())
        assert s._commit._traced_view is False
        for mid in ids:
            assert [e["kind"] for e in s.trace_events(mid)] == ["created"]
        assert s.stats().channels["one"].ready == 11
