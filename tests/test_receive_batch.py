"""Large peer batches take the one-blob statements (issue 15): dedup, inbox, event log, settling.

A batch of at least ``sql.IDS_MIN`` ids is recorded in ``seen`` by one upsert
when none was seen before, and falls back to the per-chunk ``RETURNING`` upsert
(nothing of the first attempt kept) when some were: exactly once either way.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from spoolq import Spool
from spoolq.codec import WireMessage
from spoolq.message import _take_ids
from spoolq.store import events, sql

SENDER = "node-a-0123456789abcdef0123456789ab"


def wire(n: int, channel: str = "jobs") -> list[WireMessage]:
    return [WireMessage(_take_ids(1).to_bytes(16, "big"), channel, b"m%d" % i, 1024, None, None, None, SENDER)
            for i in range(n)]


def receive(s: Spool, messages: list[WireMessage]) -> set[bytes]:
    return asyncio.run(s.areceive(messages, SENDER))


def bodies(s: Spool, channel: str) -> list[bytes]:
    leases = s.lease_many(channel, 10_000)
    return sorted(lease.body for lease in leases)


def results(s: Spool, idb: bytes, kind: str) -> list[str]:
    return [e["detail"]["result"] for e in s.trace_events(idb) if e["kind"] == kind]


def test_a_big_batch_sent_again_is_all_duplicates_and_stored_once(tmp_path: Path) -> None:
    first = wire(40) + wire(20, "other")
    assert len(first) >= sql.IDS_MIN
    with Spool(tmp_path / "b", trace=True) as s:  # the event log is what this test reads
        assert receive(s, first) == set()
        again = first[:30] + wire(25)  # some seen (the fallback path), some new
        dups = receive(s, again)
        assert dups == {m.id for m in first[:30]}
        assert len(bodies(s, "jobs")) == 40 + 25 and len(bodies(s, "other")) == 20
        for m in first[:30]:
            assert results(s, m.id, "received") == ["new", "duplicate"]
        for m in first[30:] + again[30:]:
            assert results(s, m.id, "received") == ["new"]
            assert s.trace_events(m.id)[0]["detail"]["from"] == SENDER


def test_two_big_batches_with_the_same_ids_in_one_commit(tmp_path: Path) -> None:
    batch = wire(50)

    async def both(s: Spool) -> list[set[bytes]]:  # one loop turn: one group commit
        return list(await asyncio.gather(s.areceive(batch, SENDER), s.areceive(batch, SENDER)))

    with Spool(tmp_path / "b") as s:
        first, second = asyncio.run(both(s))  # which one is first depends on the threads that name "jobs"
        assert sorted([first, second], key=len) == [set(), {m.id for m in batch}]
        assert len(bodies(s, "jobs")) == 50


def test_an_expired_seen_entry_counts_as_new(tmp_path: Path) -> None:
    now = [1_700_000_000.0]
    batch = wire(20)
    with Spool(tmp_path / "b", seen_retention=60, clock=lambda: now[0]) as s:
        assert receive(s, batch) == set()
        s.ack_many(s.lease_many("jobs", 100))
        assert receive(s, batch) == {m.id for m in batch}
        now[0] += 61
        assert receive(s, batch) == set()  # forgotten: stored again, as the retention says
        assert len(bodies(s, "jobs")) == 20


def test_settling_a_big_batch_removes_it_and_logs_each_result(tmp_path: Path) -> None:
    with Spool(tmp_path / "a", trace=True) as s:
        ids = [bytes.fromhex(m.replace("-", "")) for m in s.send_many([b"x"] * 30, "jobs", to="b")]
        urgent = s.send_many([b"u"] * 20, "jobs", to="b", priority=1)
        batch = s.outbox_batch("b", max_messages=1000)
        assert len(batch) == 50
        dup = set(ids[:5])
        s.outbox_settle("b", [r.key for r in batch], target=("b", "http://127.0.0.1:9"), duplicates=dup)
        assert s.outbox_batch("b") == []
        for idb in ids:
            assert results(s, idb, "forwarded") == ["duplicate" if idb in dup else "accepted"]
        assert results(s, bytes.fromhex(urgent[0].replace("-", "")), "forwarded") == ["accepted"]


def test_settling_leaves_the_messages_of_the_range_it_was_not_told_of(tmp_path: Path) -> None:
    with Spool(tmp_path / "a") as s:
        s.send_many([b"x"] * 40, "jobs", to="b")
        batch = s.outbox_batch("b", max_messages=1000)
        keep = {batch[10].key, batch[25].key}  # inside the run of keys settled
        s.outbox_settle("b", [r.key for r in batch if r.key not in keep], retry=[batch[25].key])
        assert sorted(r.key for r in s.outbox_batch("b")) == sorted(keep)
        s.outbox_settle("b", [batch[10].key, batch[25].key, batch[10].key])  # a key twice: still exact
        assert s.outbox_batch("b") == []


# -- the events of a batch are runs: one row for many ids (schema v3) ------------------------------


def ids_at(ms: int, n: int) -> list[bytes]:
    """``n`` distinct ids whose time (first 6 bytes) is ``ms``, in order."""
    return [ms.to_bytes(6, "big") + (7 << 72 | i).to_bytes(10, "big") for i in range(n)]


def batch_of(ids: list[bytes]) -> list[WireMessage]:
    return [WireMessage(i, "jobs", b"m", 1024, None, None, None, SENDER) for i in ids]


def event_rows(s: Spool) -> tuple[int, int]:
    """(rows of `events`, rows of `event_runs`) in the spool's database."""
    c = sqlite3.connect(s.path / "spool.db")
    try:
        return (c.execute("SELECT count(*) FROM events").fetchone()[0],
                c.execute("SELECT count(*) FROM event_runs").fetchone()[0])
    finally:
        c.close()


def test_a_wide_batch_is_logged_as_runs_within_the_span_and_rows_for_stragglers(tmp_path: Path) -> None:
    now = int(time.time() * 1000)
    hour = 3_600_000
    recent, straggling, old = ids_at(now, 30), ids_at(now - 2 * hour, 3), ids_at(now - 4 * hour, 20)
    assert len(straggling) < sql.IDS_MIN <= len(old)
    with Spool(tmp_path / "b", trace=True) as s:
        assert receive(s, batch_of(recent + straggling + old)) == set()
        assert event_rows(s) == (3, 2)  # two runs (each within RUN_SPAN), a row per straggler
        for idb in recent + straggling + old:
            assert results(s, idb, "received") == ["new"]
        assert s.trace_events(ids_at(now, 31)[-1]) == []  # in no run's ids, though inside its range
        dups = receive(s, batch_of(recent))
        assert dups == set(recent) and results(s, recent[0], "received") == ["new", "duplicate"]


def test_an_id_is_found_in_a_run_only_at_its_own_place() -> None:
    a, b = ids_at(5, 2)
    assert events._holds(a + b, b) and events._holds(a + b, a)
    assert not events._holds(a + b, a[8:] + b[:8])  # the bytes are there, across two ids


def test_prune_counts_a_run_as_its_ids_and_drops_the_oldest_first(tmp_path: Path) -> None:
    now = [time.time()]
    ms = int(now[0] * 1000)
    older, newer = ids_at(ms - 60_000, 50), ids_at(ms - 30_000, 50)
    with Spool(tmp_path / "b", trace=True, clock=lambda: now[0]) as s:
        receive(s, batch_of(older))
        receive(s, batch_of(newer))
        sent = s.send_many([b"x"] * 10, "jobs")  # rows per id ("created"), the newest ids
        assert event_rows(s) == (10, 2)
        assert s.event_log.prune(None, 70) == 50  # the older run goes whole
        assert s.trace_events(older[0]) == [] and results(s, newer[-1], "received") == ["new"]
        assert s.event_log.prune(None, 5) == 55  # then the other run, then the oldest rows
        assert len(s.trace_events(sent[-1])) == 1 and s.trace_events(sent[0]) == []
        receive(s, batch_of(ids_at(ms - 20_000, 20)))
        now[0] += 7200
        assert s.event_log.prune(3600, None) == 25  # by age: the run and the rows logged before the cutoff
        assert event_rows(s) == (0, 0)


def test_an_outbox_batch_reads_each_field_as_the_wire_takes_it(tmp_path: Path) -> None:
    """Records come in (priority, id) order with names joined in SQL: the origin is None for this
    node's messages and the creating node's id for a relayed one; headers are a map."""
    with Spool(tmp_path / "a") as s:
        plain = s.send(b"p", "jobs", to="b")
        rich = s.send(b"r", "other", to="b", headers={"k": "v"}, ttl=600, priority=7)
        receive(s, wire(1, "relay"))
        lease = s.lease("relay")
        assert lease is not None
        lease.forward("b")  # its origin is the sender's node
        got = s.outbox_batch("b")
        assert [r.channel for r in got] == ["other", "jobs", "relay"]
        first, second, third = got
        assert first.id == bytes.fromhex(rich.replace("-", "")) and first.key == (7, first.id)
        assert first.headers == {"k": "v"} and first.expires is not None and first.origin is None
        assert second.id == bytes.fromhex(plain.replace("-", "")) and second.headers is None
        assert second.expires is None and second.deliver_at is None and second.origin is None
        assert third.origin == SENDER and third.body == b"m0"
        assert [r.channel for r in s.outbox_batch("b", after=first.key)] == ["jobs", "relay"]
        assert len(s.outbox_batch("b", max_bytes=1)) == 1  # the byte limit: at least one message
        assert len(s.outbox_batch("b", max_bytes=64 + 1 + 64 + 1)) == 1  # the headers count too


def test_a_consumers_lease_many_and_ack_many_are_logged_as_runs(tmp_path: Path) -> None:
    with Spool(tmp_path / "b", trace=True) as s:
        batch = wire(40)
        receive(s, batch)
        leases = s.lease_many("jobs", 40)
        assert len(leases) == 40
        s.ack_many(leases)
        assert event_rows(s) == (0, 3)  # received, leased, acked: one run each
        for m in batch:
            kinds = [e["kind"] for e in s.trace_events(m.id)]
            assert kinds == ["received", "leased", "acked"]
            assert s.trace_events(m.id)[1]["detail"]["attempt"] == 1
        few = wire(3)  # under IDS_MIN: a row per id
        receive(s, few)
        s.ack_many(s.lease_many("jobs", 3))
        assert event_rows(s) == (9, 3)
