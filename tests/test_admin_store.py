"""Queue administration on a spool (issue 11): browse without leasing, hold/release/requeue/delete, the audit."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

import spoolq
from spoolq import Spool
from spoolq.admin import MAX_IDS
from spoolq.errors import InvalidArgument, NotFound, SpoolUnavailable
from spoolq.message import id_text_from_bytes
from spoolq.store import admin as store_admin
from spoolq.store import sql_admin
from spoolq.testing import FakeClock


def made_at(ms: int, n: int) -> bytes:
    """An id created at ``ms`` (Unix ms), unique by ``n``."""
    return ((ms << 80) | (0x7 << 76) | n).to_bytes(16, "big")


def every_page(spool: Spool, filters: dict[str, object] | None = None,
               limit: int = 3) -> list[spoolq.admin.AdminMessage]:
    out = []
    msgs, nxt = spool.admin.browse(filters, limit=limit)
    out += msgs
    for _ in range(10_000):
        if nxt is None:
            return out
        msgs, nxt = spool.admin.browse(filters, after=nxt, limit=limit)
        out += msgs
    raise AssertionError("paging did not end")


def test_browse_lists_every_place_and_state_once_without_leasing(spool: Spool) -> None:
    ready = spool.send_many([b"r%d" % i for i in range(7)], "jobs")
    spool.send(b"urgent", "jobs", priority=1)
    later = spool.send(b"later", "jobs", delay=60)
    out = spool.send(b"away", "jobs", to="http://127.0.0.1:9")
    other = spool.send(b"other", "mail", headers={"tenant": "acme"})
    lease = spool.lease("jobs")
    assert lease is not None and lease.body == b"urgent"
    spool.admin.hold([ready[6]])

    seen = every_page(spool)
    assert len(seen) == len({(m.id, m.place) for m in seen}) == 11
    by_id = {m.id: m for m in seen}
    assert by_id[lease.id].state == "leased" and by_id[lease.id].lease_until is not None
    assert by_id[ready[0]].state == "ready" and by_id[ready[0]].preview == "r0" and by_id[ready[0]].size == 2
    assert by_id[later].state == "delayed" and by_id[later].due == pytest.approx(spool._clock() + 60, abs=0.01)
    assert by_id[out].place == "outbox" and by_id[out].peer == "http://127.0.0.1:9"
    assert by_id[ready[6]].state == "held" and by_id[ready[6]].place == "inbox"
    assert by_id[other].channel == "mail"
    # nothing was leased by looking
    assert spool.stats().channels["jobs"].leased == 1
    assert {m.id for m in every_page(spool, {"channel": "jobs", "state": "ready"})} == set(ready[:6])
    assert [m.id for m in every_page(spool, {"peer": "http://127.0.0.1:9"})] == [out]
    assert [m.id for m in every_page(spool, {"header": "tenant=acme"})] == [other]
    assert [m.id for m in every_page(spool, {"max_priority": 10})] == [lease.id]
    assert every_page(spool, {"channel": "nosuch"}) == [] and every_page(spool, {"peer": "nosuch"}) == []


def test_age_filters_use_the_creation_time_in_the_id(spool: Spool, clock: FakeClock) -> None:
    now = int(clock() * 1000)
    old = spool.send(b"old", "c", id=made_at(now - 3_600_000, 1))
    new = spool.send(b"new", "c", id=made_at(now - 1_000, 2))
    assert [m.id for m in every_page(spool, {"older_than": 60})] == [old]
    assert [m.id for m in every_page(spool, {"newer_than": 60})] == [new]
    assert every_page(spool, {"older_than": 60})[0].age == pytest.approx(3600, abs=1)


def test_hold_takes_a_message_out_of_leasing_and_release_puts_it_back_as_it_was(spool: Spool, clock: FakeClock) -> None:
    a, b = spool.send_many([b"a", b"b"], "jobs")
    first = spool.lease("jobs", visibility=1)
    assert first is not None and first.id == a
    clock.advance(2)  # the lease ran out: a counts one attempt
    job = spool.jobs.find(first.job)
    assert job is not None
    assert spool.admin.hold([a, b]) == (2, 2)
    assert spool.lease("jobs") is None
    assert spool.stats().channels["jobs"].held == 2 and spool.stats().channels["jobs"].ready == 0
    assert spool.admin.release(filter={"channel": "jobs"}) == (2, 2)
    got = spool.lease("jobs")
    assert got is not None and got.id == a and got.attempts == 2 and got.job == first.job


def test_a_held_delayed_message_goes_back_to_its_due_time_and_requeue_makes_it_ready_now(
        spool: Spool, clock: FakeClock) -> None:
    mid = spool.send(b"d", "jobs", delay=100)
    assert spool.admin.hold(filter={"state": "delayed"}) == (1, 1)
    clock.advance(200)
    assert spool.lease("jobs") is None  # due, but held
    assert spool.admin.release([mid]) == (1, 1)
    [m] = spool.admin.find(mid)
    assert m.state == "delayed" and m.due == pytest.approx(clock() - 100, abs=0.01)
    assert spool.lease("jobs") is not None  # its due time has passed: ready
    later = spool.send(b"later", "jobs", delay=3600)
    assert spool.admin.requeue([later]) == (1, 1)
    got = spool.lease("jobs")
    assert got is not None and got.id == later
    held_delayed = spool.send(b"hd", "jobs", delay=3600)
    spool.admin.hold([held_delayed])
    assert spool.admin.requeue(filter={"channel": "jobs"}) == (1, 1)  # held (and delayed): ready now
    got = spool.lease("jobs")
    assert got is not None and got.id == held_delayed


def test_a_held_outbox_message_is_not_forwarded_until_released(spool: Spool) -> None:
    mid = spool.send(b"x", "jobs", to="peer-b")
    assert [id_text_from_bytes(r.id) for r in spool.outbox_batch("peer-b")] == [mid]
    assert spool.admin.hold(filter={"peer": "peer-b"}) == (1, 1)
    assert spool.outbox_batch("peer-b") == []
    assert spool.stats().peers["peer-b"].held == 1
    [m] = spool.admin.find(mid)
    assert (m.state, m.place, m.peer, m.body) == ("held", "outbox", "peer-b", b"x")
    assert spool.admin.release([mid]) == (1, 1)
    assert [id_text_from_bytes(r.id) for r in spool.outbox_batch("peer-b")] == [mid]


def test_leased_messages_are_matched_but_never_held_or_deleted(spool: Spool) -> None:
    spool.send_many([b"1", b"2"], "jobs")
    lease = spool.lease("jobs")
    assert lease is not None
    assert spool.admin.hold(filter={"channel": "jobs"}, dry_run=True) == (2, 1)
    assert spool.admin.delete([lease.id]) == (1, 0)
    assert spool.admin.hold(filter={"channel": "jobs"}) == (2, 1)
    lease.ack()  # the consumer still owns it
    assert spool.admin.delete(filter={"channel": "jobs"}) == (1, 1)
    assert every_page(spool) == []


def test_dry_run_changes_nothing_and_is_not_audited(spool: Spool) -> None:
    spool.send_many([b"1", b"2", b"3"], "jobs")
    assert spool.admin.delete(filter={}, dry_run=True) == (3, 3)
    assert len(every_page(spool)) == 3 and spool.admin.audit_log() == []
    calls: list[tuple[int, int]] = []
    assert spool.admin.delete(filter={}, who="ops", progress=lambda m, c: calls.append((m, c))) == (3, 3)
    assert calls and calls[-1] == (3, 3)
    [entry] = spool.admin.audit_log()
    assert (entry.who, entry.action, entry.count, entry.target) == ("ops", "delete", 3, "filter (everything)")


def test_find_shows_every_copy_with_headers_and_body_or_not_found(spool: Spool) -> None:
    mid = spool.send(b'{"a": 1}', "jobs", to=["p1", "p2"], headers={"k": "v"})
    found = spool.admin.find(mid)
    assert sorted(m.peer or "" for m in found) == ["p1", "p2"]
    assert all(m.body == b'{"a": 1}' and m.headers == {"k": "v"} for m in found)
    assert spool.admin.delete([mid]) == (2, 2)
    with pytest.raises(NotFound):
        spool.admin.find(mid)


def test_hold_by_filter_over_many_pages_visits_each_message_once(spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_admin, "ACT_PAGE", 7)
    ids = spool.send_many([b"m"] * 50, "jobs")
    spool.send_many([b"d"] * 5, "jobs", delay=60)
    assert spool.admin.hold(filter={"channel": "jobs"}) == (55, 55)
    assert spool.admin.hold(filter={"channel": "jobs"}) == (0, 0)  # hold's scope: not already held
    assert spool.admin.release(filter={}) == (55, 55)
    assert {m.id for m in every_page(spool, {"state": "ready"}, limit=1000)} == set(ids)


def test_a_selective_filter_stops_at_the_scan_budget_with_a_cursor(spool: Spool,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_admin, "SCAN_BUDGET", 10)
    spool.send_many([b"x"] * 35, "jobs")
    target = spool.send(b"y", "jobs", headers={"pick": "me"})
    msgs, nxt = spool.admin.browse({"header": "pick=me"})
    assert msgs == [] and nxt is not None
    assert [m.id for m in every_page(spool, {"header": "pick=me"})] == [target]


def test_bad_input_names_the_field_and_changes_nothing(spool: Spool) -> None:
    spool.send(b"x", "jobs")
    bad: list[tuple[dict[str, object], str]] = [
        ({"state": "gone"}, "state"), ({"min_priority": -1}, "min_priority"), ({"older_than": "soon"}, "older_than"),
        ({"older_than": float("nan")}, "older_than"), ({"header": "novalue"}, "header"), ({"bogus": 1}, "bogus"),
        ({"channel": "no spaces"}, "channel"), ({"peer": 5}, "peer"),
    ]
    for f, field in bad:
        with pytest.raises(InvalidArgument, match=field):
            spool.admin.browse(f)
        with pytest.raises(InvalidArgument, match=field):
            spool.admin.delete(filter=f)
    for cursor in ("", "garbage!", "W10", "WzksMCwwLCIiXQ", "x" * 300):
        with pytest.raises(InvalidArgument, match="after"):
            spool.admin.browse(after=cursor)
    for limit in (0, 1001, "10", True):
        with pytest.raises(InvalidArgument, match="limit"):
            spool.admin.browse(limit=limit)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="ids"):
        spool.admin.hold(["not-an-id"])
    with pytest.raises(InvalidArgument, match="ids"):
        spool.admin.hold(["00000000-0000-0000-0000-000000000000"] * (MAX_IDS + 1))
    with pytest.raises(InvalidArgument, match="either ids or a filter"):
        spool.admin.hold()
    with pytest.raises(InvalidArgument, match="dry_run"):
        spool.admin.hold(filter={}, dry_run="yes")  # type: ignore[arg-type]
    assert [m.state for m in every_page(spool)] == ["ready"] and spool.admin.audit_log() == []


def test_the_audit_keeps_its_newest_rows(spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_admin, "AUDIT_KEEP", 5)
    for i in range(12):
        spool.admin.audit("ops", "delete", f"t{i}", i)
    log = spool.admin.audit_log(100)
    assert [e.target for e in log] == ["t11", "t10", "t9", "t8", "t7"]
    c = sqlite3.connect(spool.db_path)
    assert c.execute("SELECT count(*) FROM audit").fetchone()[0] == 5
    c.close()


def test_a_held_message_does_not_expire_until_released(spool: Spool, clock: FakeClock) -> None:
    mid = spool.send(b"t", "jobs", ttl=10)
    spool.admin.hold([mid])
    clock.advance(60)
    assert spool.sweep()["expired"] == 0
    spool.admin.release([mid])
    assert spool.lease("jobs") is None
    assert spool.dead_letter(mid).reason == "expired"


def test_a_version_1_spool_opened_read_only_reads_as_if_nothing_were_held(spool_dir: Path) -> None:
    s = Spool(spool_dir)
    mid = s.send(b"kept", "jobs")
    s.close()
    c = sqlite3.connect(spool_dir / "spool.db")
    for table in ("held", "audit", "events"):
        c.execute(f"DROP TABLE {table}")
    c.execute("PRAGMA user_version=1")
    c.commit()
    c.close()
    with Spool(spool_dir, read_only=True) as ro:
        assert [m.id for m in ro.admin.browse()[0]] == [mid]
        assert [m.id for m in ro.admin.browse({"state": "held"})[0]] == []
        assert ro.admin.find(mid)[0].body == b"kept"
        assert ro.admin.audit_log() == []
        assert ro.stats().channels["jobs"].held == 0
        assert ro.admin.hold([mid], dry_run=True) == (1, 1)
        with pytest.raises(SpoolUnavailable, match="read-only"):
            ro.admin.hold([mid])


def test_every_admin_statement_reads_by_an_index(spool: Spool) -> None:
    c = spool._db.read_conn
    statements = {n: v for n, v in vars(sql_admin).items()
                  if n.isupper() and isinstance(v, str) and not n.startswith("_")
                  and v.lstrip().startswith(("SELECT", "INSERT", "DELETE"))}
    assert len(statements) > 25
    for name, statement in statements.items():
        plan = " | ".join(r[3] for r in c.execute("EXPLAIN QUERY PLAN " + statement, [1] * statement.count("?")))
        assert "TEMP B-TREE" not in plan, (name, plan)
        if name != "AUDIT_LIST" and "SCAN" in plan:  # AUDIT_LIST walks the rowid backwards: LIMIT rows
            raise AssertionError(f"{name} scans a table: {plan}")


def test_a_deep_page_of_a_million_messages_costs_what_the_first_one_does(spool: Spool) -> None:
    spool.send(b"seed", "deep")
    ch = spool._names.channel("deep", create=False)
    c = sqlite3.connect(spool.db_path)
    c.execute(
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 1000000) "
        "INSERT INTO inbox(channel, priority, id, job, body) "
        "SELECT ?, 1024, CAST(printf('%016d', x) AS BLOB), 1000000 + x, CAST('body' AS BLOB) FROM n", (ch,))
    c.commit()
    c.close()
    conn = spool._db.read_conn
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    def cost(after: str | None) -> int:
        steps[0] = 0
        conn.set_progress_handler(count, 100)
        try:
            msgs, nxt = spool.admin.browse({"channel": "deep"}, after=after, limit=100)
        finally:
            conn.set_progress_handler(None, 0)
        assert len(msgs) == 100 and nxt is not None
        return steps[0]

    first = cost(None)
    deep = store_admin.encode_cursor((0, ch, 1024, b"%016d" % 999_000))  # type: ignore[arg-type]
    at_depth = cost(deep)
    assert at_depth <= 2 * first + 50, (first, at_depth)
    # the counter can fail: a count over the table costs thousands of times more
    steps[0] = 0
    conn.set_progress_handler(count, 100)
    conn.execute("SELECT count(*) FROM inbox WHERE length(body) > 0").fetchone()
    conn.set_progress_handler(None, 0)
    assert steps[0] > 100 * first


def test_hold_and_release_racing_producers_and_consumers_lose_and_duplicate_nothing(real_spool: Spool) -> None:
    sent: list[str] = []
    acked: list[str] = []
    producing = threading.Event()
    producing.set()

    def produce() -> None:
        for i in range(40):
            sent.extend(real_spool.send_many([b"%d" % i] * 25, "race"))
        producing.clear()

    def consume() -> None:
        while True:
            got = real_spool.lease_many("race", 10, visibility=60, wait=0.05)
            for x in got:
                acked.append(x.id)
            if got:
                real_spool.ack_many(got)
            elif not producing.is_set():
                return

    threads = [threading.Thread(target=produce)] + [threading.Thread(target=consume) for _ in range(2)]
    for t in threads:
        t.start()
    rounds = 0
    while (producing.is_set() or rounds < 5) and rounds < 5000:
        real_spool.admin.hold(filter={"channel": "race"})
        real_spool.admin.release(filter={"channel": "race", "state": "held"})
        rounds += 1
    for t in threads:
        t.join(60)
        assert not t.is_alive()
    real_spool.admin.release(filter={})
    for x in real_spool.lease_many("race", 1000):
        acked.append(x.id)
        x.ack()
    assert len(sent) == 1000 and rounds >= 5
    assert len(acked) == len(set(acked)) and set(acked) == set(sent)
    assert real_spool.stats().channels["race"] == spoolq.ChannelStats()


def test_dead_letter_retry_and_purge_are_audited_with_who(spool: Spool) -> None:
    mid = spool.send(b"x", "jobs")
    lease = spool.lease("jobs")
    assert lease is not None
    lease.dead("bad")
    assert len(spool.retry_dead([mid], dry_run=True, who="ops")) == 1
    assert spool.admin.audit_log() == []
    assert len(spool.retry_dead(channel="jobs", who="ops")) == 1
    assert spool.purge_dead(channel="jobs", who="ops") == 0
    assert [(e.action, e.target, e.count) for e in spool.admin.audit_log()] == [
        ("dead-purge", "dead channel='jobs'", 0), ("dead-retry", "dead channel='jobs'", 1)]


@pytest.mark.parametrize("max_groups", [1024, 1])
def test_ids_are_found_in_every_channel_and_priority_by_skipping_or_by_one_scan(
        spool: Spool, monkeypatch: pytest.MonkeyPatch, max_groups: int) -> None:
    monkeypatch.setattr(store_admin, "MAX_GROUPS", max_groups)  # 1: too many pairs, so one scan per chunk
    ids = [spool.send(b"%d" % p, f"ch{p % 3}", priority=p) for p in range(12)]
    ids += [spool.send(b"o", "ch0", to=f"peer{p}", priority=p) for p in range(3)]
    ids.append(spool.send(b"d", "ch1", delay=60))
    assert spool.admin.hold(ids) == (16, 16)
    assert spool.admin.release(ids) == (16, 16)
    assert [spool.admin.find(i)[0].id for i in ids] == ids
    assert spool.admin.delete(ids[::2]) == (8, 8)
    assert len(every_page(spool, limit=1000)) == 8
