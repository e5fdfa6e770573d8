"""Dead letters: list with filters, show, retry (and dry run), purge."""

from __future__ import annotations

import pytest

import spoolq
from spoolq import Spool
from spoolq.testing import FakeClock


def kill(spool: Spool, channel: str, detail: str = "bad") -> str:
    lease = spool.lease(channel)
    assert lease is not None
    lease.dead(detail)
    return lease.id


@pytest.fixture
def deads(spool: Spool, clock: FakeClock) -> dict[str, str]:
    spool.send(b"a", "alpha", headers={"h": "1"}, priority=3)
    spool.send(b"b", "beta")
    spool.send(b"c", "alpha", ttl=1)
    a = kill(spool, "alpha", "cannot parse")
    clock.advance(100)
    b = kill(spool, "beta", "downstream said no")
    spool.sweep()  # c expires
    c = spool.dead_letters(reason="expired")[0].id
    return {"a": a, "b": b, "c": c}


def test_list_and_filter(spool: Spool, clock: FakeClock, deads: dict[str, str]) -> None:
    assert [d.id for d in spool.dead_letters()] == [deads["a"], deads["b"], deads["c"]]
    assert [d.id for d in spool.dead_letters(channel="alpha")] == [deads["a"], deads["c"]]
    assert [d.id for d in spool.dead_letters(reason="rejected")] == [deads["a"], deads["b"]]
    assert [d.id for d in spool.dead_letters(older_than=50)] == [deads["a"]]
    assert [d.id for d in spool.dead_letters(newer_than=50)] == [deads["b"], deads["c"]]
    assert [d.id for d in spool.dead_letters(limit=1)] == [deads["a"]]
    assert spool.dead_letters(channel="nonexistent") == []


def test_show_one(spool: Spool, deads: dict[str, str]) -> None:
    d = spool.dead_letter(deads["a"])
    assert d.channel == "alpha" and d.reason == "rejected" and d.detail == "cannot parse"
    assert d.message.body == b"a" and d.message.headers == {"h": "1"} and d.message.priority == 3
    assert d.message.state == "dead" and d.peer is None
    assert d.as_dict()["size"] == 1
    with pytest.raises(spoolq.NotFound):
        spool.dead_letter(spoolq.new_id())


def test_retry_dry_run_changes_nothing(spool: Spool, deads: dict[str, str]) -> None:
    would = spool.retry_dead(channel="alpha", dry_run=True)
    assert sorted(d.id for d in would) == sorted([deads["a"], deads["c"]])
    assert len(spool.dead_letters()) == 3
    assert spool.stats().channels["alpha"].ready == 0


def test_retry_makes_ready_with_attempts_reset_and_ttl_cleared(spool: Spool, clock: FakeClock,
                                                               deads: dict[str, str]) -> None:
    done = spool.retry_dead(channel="alpha")
    assert len(done) == 2
    assert [d.id for d in spool.dead_letters()] == [deads["b"]]
    leases = spool.lease_many("alpha", 10)
    assert sorted(x.id for x in leases) == sorted([deads["a"], deads["c"]])
    assert all(x.attempts == 1 for x in leases)
    assert all(x.expires_at is None for x in leases)
    a = next(x for x in leases if x.id == deads["a"])
    assert a.headers == {"h": "1"} and a.priority == 3


def test_retry_by_id_keeps_job_number(spool: Spool, deads: dict[str, str]) -> None:
    job = spool.dead_letter(deads["b"]).message.job
    spool.retry_dead([deads["b"]])
    lease = spool.lease("beta")
    assert lease is not None and lease.id == deads["b"] and lease.job == job


def test_retry_outbox_dead_letter_goes_back_to_the_outbox(spool: Spool, clock: FakeClock) -> None:
    spool.send(b"x", "c", to="dc2", ttl=1)
    clock.advance(2)
    spool.sweep()
    d = spool.dead_letters()[0]
    assert d.peer == "dc2" and d.reason == "expired"
    spool.retry_dead([d.id])
    assert spool.stats().peers["dc2"].outbox == 1


def test_purge(spool: Spool, deads: dict[str, str]) -> None:
    assert spool.purge_dead(reason="rejected", dry_run=True) == 2
    assert len(spool.dead_letters()) == 3
    assert spool.purge_dead(reason="rejected") == 2
    assert [d.id for d in spool.dead_letters()] == [deads["c"]]
    assert spool.purge_dead() == 1
    assert spool.dead_letters() == []


def test_stats_count_dead(spool: Spool, deads: dict[str, str]) -> None:
    st = spool.stats()
    assert st.channels["alpha"].dead == 2 and st.channels["beta"].dead == 1
