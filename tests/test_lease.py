"""Consuming: order, leases, expiry, attempts, TTL, nack/touch/ack rules (with a fake clock)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

import spoolq
from spoolq import Lease, Spool
from spoolq.testing import FakeClock

from .conftest import PYTHON, python_env


def drain(spool: Spool, channel: str) -> list[spoolq.Lease]:
    got = []
    while (x := spool.lease(channel)) is not None:
        got.append(x)
    return got


def test_priority_then_fifo_by_id(spool: Spool) -> None:
    sent = []
    for i, pri in enumerate([5, 1, 5, 0, 1, 2**32 - 1, 5]):
        sent.append((pri, spool.send(f"{i}".encode(), "c", priority=pri)))
    order = [x.id for x in drain(spool, "c")]
    assert order == [mid for _, mid in sorted(sent)]  # priority, then id (= creation order)


def test_fifo_within_priority_across_send_many(spool: Spool) -> None:
    a = spool.send_many([b"a1", b"a2"], "c")
    b = spool.send(b"b", "c")
    c = spool.send_many([b"c1", b"c2"], "c")
    assert [x.id for x in drain(spool, "c")] == [*a, b, *c]


def test_channels_are_independent(spool: Spool) -> None:
    spool.send(b"1", "one")
    spool.send(b"2", "two")
    x = spool.lease("two")
    assert x is not None and x.body == b"2"
    assert spool.lease("three") is None
    y = spool.lease("one")
    assert y is not None and y.body == b"1"


def test_lease_is_exclusive_until_it_expires(spool: Spool, clock: FakeClock) -> None:
    spool.send(b"x", "c")
    first = spool.lease("c", visibility=10)
    assert first is not None and first.attempts == 1
    assert spool.lease("c") is None  # held
    clock.advance(9.999)
    assert spool.lease("c") is None
    clock.advance(0.002)
    second = spool.lease("c", visibility=10)
    assert second is not None and second.id == first.id
    assert second.attempts == 2  # the expired lease counted as an attempt
    with pytest.raises(spoolq.LeaseLost):
        first.ack()  # the old holder cannot ack the new lease
    second.ack()
    assert spool.lease("c") is None


def test_ack_after_expiry_raises_and_changes_nothing(spool: Spool, clock: FakeClock) -> None:
    spool.send(b"x", "c")
    lease = spool.lease("c", visibility=5)
    assert lease is not None
    clock.advance(6)
    with pytest.raises(spoolq.LeaseExpired) as ei:
        lease.ack()
    assert "touch" in (ei.value.hint or "")
    st = spool.stats().channels["c"]
    assert st.ready == 1 and st.leased == 0  # still there, ready again
    assert spool.lease("c") is not None


def test_double_ack_raises_lease_lost(spool: Spool) -> None:
    spool.send(b"x", "c")
    lease = spool.lease("c")
    assert lease is not None
    lease.ack()
    with pytest.raises(spoolq.LeaseLost):
        lease.ack()
    with pytest.raises(spoolq.LeaseLost):
        lease.nack()
    with pytest.raises(spoolq.LeaseLost):
        lease.touch(10)


def test_foreign_lease_is_refused(spool: Spool, spool_dir: Path, clock: FakeClock) -> None:
    other = Spool(spool_dir, clock=clock)
    spool.send(b"x", "c")
    lease = other.lease("c")
    assert lease is not None
    with pytest.raises(spoolq.InvalidArgument, match="another Spool"):
        spool.ack_many([lease])
    assert spool.stats().channels["c"].leased == 1
    lease.ack()
    other.close()


def test_touch_extends_the_lease(spool: Spool, clock: FakeClock) -> None:
    spool.send(b"x", "c")
    lease = spool.lease("c", visibility=5)
    assert lease is not None
    clock.advance(4)
    lease.touch(10)
    assert lease.deadline == pytest.approx(clock() + 10)
    clock.advance(9)
    assert spool.lease("c") is None
    lease.ack()


def test_touch_after_expiry_raises(spool: Spool, clock: FakeClock) -> None:
    spool.send(b"x", "c")
    lease = spool.lease("c", visibility=1)
    assert lease is not None
    clock.advance(2)
    with pytest.raises(spoolq.LeaseExpired):
        lease.touch(10)


def test_nack_zero_makes_ready_at_once_and_keeps_position(spool: Spool) -> None:
    a = spool.send(b"a", "c")
    spool.send(b"b", "c")
    lease = spool.lease("c")
    assert lease is not None and lease.id == a
    lease.nack(0)
    again = spool.lease("c")
    assert again is not None and again.id == a and again.attempts == 2


def test_nack_with_delay(spool: Spool, clock: FakeClock) -> None:
    spool.send(b"a", "c")
    lease = spool.lease("c")
    assert lease is not None
    lease.nack(30)
    st = spool.stats().channels["c"]
    assert st.delayed == 1 and st.ready == 0 and st.leased == 0
    clock.advance(29)
    assert spool.lease("c") is None
    clock.advance(1)
    again = spool.lease("c")
    assert again is not None and again.id == lease.id and again.attempts == 2


def test_nack_default_is_exponential_backoff(spool: Spool, clock: FakeClock) -> None:
    spool.send(b"a", "c")
    lease = spool.lease("c")
    assert lease is not None
    waits = []
    for attempt in range(1, 7):
        lease.nack()  # no delay given: backoff from the attempt count
        start = clock()
        while (nxt := spool.lease("c")) is None:  # find when it comes back, in 50 ms steps
            clock.advance(0.05)
        waits.append(clock() - start)
        assert nxt.attempts == attempt + 1
        lease = nxt
    for attempt, w in enumerate(waits, start=1):
        ceiling = 2.0 ** (attempt - 1)  # 1, 2, 4, 8 ... s, jitter in [ceiling/2, ceiling]
        assert ceiling / 2 - 0.01 <= w <= ceiling + 0.06, (attempt, w)


def test_nack_with_new_priority(spool: Spool) -> None:
    spool.send(b"a", "c", priority=10)
    spool.send(b"b", "c", priority=10)
    lease = spool.lease("c")
    assert lease is not None and lease.body == b"a"
    lease.nack(0, priority=100)
    assert [x.body for x in drain(spool, "c")] == [b"b", b"a"]


def test_max_attempts_moves_to_dead_letters(spool: Spool, clock: FakeClock) -> None:
    spool.configure_channel("c", max_attempts=3)
    mid = spool.send(b"poison", "c")
    for attempt in (1, 2, 3):
        lease = spool.lease("c", visibility=1)
        assert lease is not None and lease.attempts == attempt
        clock.advance(2)  # consumer died: lease expires
    assert spool.lease("c") is None
    dead = spool.dead_letters(channel="c")
    assert [d.id for d in dead] == [mid]
    assert dead[0].reason == "max_attempts" and dead[0].message.attempts == 3
    st = spool.stats().channels["c"]
    assert (st.ready, st.leased, st.dead) == (0, 0, 1)


def test_nack_on_last_attempt_dead_letters_at_once(spool: Spool) -> None:
    spool.configure_channel("c", max_attempts=2)
    spool.send(b"x", "c")
    spool.lease("c").nack(0)  # type: ignore[union-attr]
    spool.lease("c").nack(0)  # type: ignore[union-attr]
    assert spool.stats().channels["c"].dead == 1
    assert spool.dead_letters()[0].reason == "max_attempts"


def test_default_max_attempts_is_20(spool: Spool, clock: FakeClock) -> None:
    spool.send(b"x", "c")
    for _ in range(20):
        lease = spool.lease("c", visibility=1)
        assert lease is not None
        clock.advance(1.5)
    assert spool.lease("c") is None
    assert spool.dead_letters()[0].message.attempts == 20


def test_spool_level_max_attempts_default(spool_dir: Path, clock: FakeClock) -> None:
    s = Spool(spool_dir, clock=clock, max_attempts=1)
    s.send(b"x", "c")
    s.lease("c").nack(0)  # type: ignore[union-attr]
    assert s.stats().channels["c"].dead == 1
    s.close()


def test_ttl_expired_message_is_dead_lettered_not_delivered(spool: Spool, clock: FakeClock) -> None:
    mid = spool.send(b"x", "c", ttl=10)
    keep = spool.send(b"y", "c")
    clock.advance(10)
    lease = spool.lease("c")
    assert lease is not None and lease.id == keep
    dead = spool.dead_letters()
    assert [d.id for d in dead] == [mid] and dead[0].reason == "expired"


def test_sweep_dead_letters_expired_messages_without_consumers(spool: Spool, clock: FakeClock) -> None:
    spool.send(b"x", "c", ttl=5)
    spool.send(b"y", "c", ttl=5, delay=100)
    spool.send(b"z", "c", ttl=5, to="peer")
    spool.send(b"w", "c")
    clock.advance(6)
    result = spool.sweep()
    assert result["expired"] == 3
    assert sorted(d.reason for d in spool.dead_letters()) == ["expired"] * 3
    assert spool.stats().channels["c"].ready == 1
    assert spool.stats().peers["peer"].outbox == 0


def test_sweep_promotes_due_delayed(spool: Spool, clock: FakeClock) -> None:
    spool.send(b"x", "c", delay=5)
    clock.advance(5)
    assert spool.sweep()["promoted"] == 1
    assert spool.stats().channels["c"].ready == 1


def test_delayed_messages_become_ready_in_priority_order(spool: Spool, clock: FakeClock) -> None:
    spool.send(b"late-urgent", "c", delay=20, priority=0)
    spool.send(b"soon", "c", delay=10)
    spool.send(b"now", "c")
    assert [x.body for x in drain(spool, "c")] == [b"now"]
    clock.advance(10)
    assert [x.body for x in drain(spool, "c")] == [b"soon"]
    clock.advance(10)
    spool.send(b"plain", "c")
    assert [x.body for x in drain(spool, "c")] == [b"late-urgent", b"plain"]


def test_lease_many_respects_max_and_order(spool: Spool) -> None:
    ids = spool.send_many([b"%d" % i for i in range(10)], "c")
    first = spool.lease_many("c", 4)
    assert [x.id for x in first] == ids[:4]
    rest = spool.lease_many("c", 100)
    assert [x.id for x in rest] == ids[4:]
    with pytest.raises(spoolq.InvalidArgument):
        spool.lease_many("c", 0)


def test_ack_many_is_all_or_nothing(spool: Spool, clock: FakeClock) -> None:
    spool.send_many([b"a", b"b", b"c"], "c")
    a = spool.lease_many("c", 1, visibility=5)
    bc = spool.lease_many("c", 2, visibility=50)
    clock.advance(10)  # a's lease expired
    with pytest.raises(spoolq.LeaseExpired):
        spool.ack_many(a + bc)
    st = spool.stats().channels["c"]
    assert st.leased == 2 and st.ready == 1  # nothing was acked
    spool.ack_many(bc)
    assert spool.stats().channels["c"].leased == 0


def test_lease_dead_moves_to_dead_letters(spool: Spool) -> None:
    spool.send(b"x", "c")
    lease = spool.lease("c")
    assert lease is not None
    lease.dead("cannot parse")
    d = spool.dead_letter(lease.id)
    assert d.reason == "rejected" and d.detail == "cannot parse"


def test_bad_lease_arguments(spool: Spool) -> None:
    with pytest.raises(spoolq.InvalidArgument):
        spool.lease("c", visibility=0)
    with pytest.raises(spoolq.InvalidArgument):
        spool.lease("c", wait=-1)
    with pytest.raises(spoolq.InvalidChannel):
        spool.lease("no good")


def test_peek_does_not_lease(spool: Spool) -> None:
    spool.send(b"a", "c", priority=2)
    spool.send(b"b", "c", priority=1)
    assert [m.body for m in spool.peek("c")] == [b"b", b"a"]
    assert spool.stats().channels["c"].ready == 2


def test_wait_returns_none_after_timeout(real_spool: Spool) -> None:
    t = time.monotonic()
    assert real_spool.lease("empty", wait=0.2) is None
    assert 0.19 <= time.monotonic() - t < 2


def test_wait_wakes_for_delayed_message(real_spool: Spool) -> None:
    real_spool.send(b"x", "c", delay=0.3)
    t = time.monotonic()
    lease = real_spool.lease("c", wait=5)
    elapsed = time.monotonic() - t
    assert lease is not None and lease.body == b"x"
    assert 0.25 <= elapsed < 1.5


def test_wait_wakes_for_expired_lease(real_spool: Spool) -> None:
    real_spool.send(b"x", "c")
    assert real_spool.lease("c", visibility=0.3) is not None
    t = time.monotonic()
    again = real_spool.lease("c", wait=5)
    assert again is not None and again.attempts == 2
    assert time.monotonic() - t < 1.5


SENDER = """
import sys, time
from spoolq import Spool
s = Spool(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
for i in range(int(sys.argv[2])):
    t = time.time()
    s.send(repr(t).encode(), "wake")
    time.sleep(0.05)
"""


def test_wait_wakes_within_milliseconds_of_a_send_in_another_process(spool_dir: Path) -> None:
    s = Spool(spool_dir)
    n = 10
    proc = subprocess.Popen([PYTHON, "-c", SENDER, str(spool_dir), str(n)], env=python_env(),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "ready"
        proc.stdin.write("go\n")
        proc.stdin.flush()
        delays = []
        for _ in range(n):
            lease = s.lease("wake", wait=10)
            assert lease is not None
            delays.append(time.time() - float(lease.body))
            lease.ack()
        proc.wait(10)
    finally:
        proc.kill()
        s.close()
    delays.sort()
    # the median wake-up is a few milliseconds; the bound is loose for a busy machine, yet a waiter that
    # missed the bell and slept to its 10 s wait (or a poll of a second) would still show here
    assert delays[len(delays) // 2] < 0.5, delays


def test_acommit_sends_and_acks_together_or_not_at_all(real_spool: Spool) -> None:
    import asyncio

    real_spool.send(b"job", "in")
    lease = real_spool.lease("in")
    assert lease is not None
    ids = asyncio.run(real_spool.acommit([(b"out1", "out", {}), (b"out2", "other", {"priority": 1})], [lease]))
    assert len(ids) == 2
    st = real_spool.stats().channels
    assert st["in"].ready == 0 and st["in"].leased == 0
    assert st["out"].ready == 1 and st["other"].ready == 1
    real_spool.send(b"job2", "in")
    again = real_spool.lease("in")
    assert again is not None
    again.ack()
    with pytest.raises(spoolq.LeaseLost):
        asyncio.run(real_spool.acommit([(b"never", "out", {})], [again]))
    assert real_spool.stats().channels["out"].ready == 1  # the send of the failed transaction did not happen
    with pytest.raises(spoolq.InvalidArgument):
        asyncio.run(real_spool.acommit([(b"x", "bad channel!", {})], []))


@pytest.mark.parametrize("trace", [False, True])
def test_one_lease_takes_the_front_in_every_case(spool_dir: Path, clock: FakeClock, trace: bool) -> None:
    """lease() of one message is one statement without the event log (issue 9) and a transaction with
    it: both take a due delayed message before a less urgent ready one, dead-letter a spent front row
    and go on behind it, and count the attempt."""
    with Spool(spool_dir, clock=clock, trace=trace) as s:
        s.configure_channel("c", max_attempts=2)
        s.send(b"plain", "c", priority=5)
        s.send(b"due", "c", priority=1, delay=1)
        clock.advance(1)
        first = s.lease("c")
        assert first is not None and first.body == b"due" and first.attempts == 1
        first.nack(0)  # attempt 1 of 2
        again = s.lease("c", visibility=1)
        assert again is not None and again.body == b"due" and again.attempts == 2
        clock.advance(2)  # expired: its attempts are used up, so it dies when it comes to the front
        nxt = s.lease("c")
        assert nxt is not None and nxt.body == b"plain" and nxt.attempts == 1
        assert [d.message.body for d in s.dead_letters()] == [b"due"]
        nxt.ack()
        assert s.lease("c") is None


def test_a_lease_taken_for_a_cancelled_waiter_is_given_back(tmp_path: Path) -> None:
    """Cancelling a task that awaits a lease in a worker thread does not stop the thread: what it
    leases must come back at once, uncounted (a STOMP UNSUBSCRIBE during a subscription's lease)."""
    import asyncio
    import threading

    from spoolq import _loop

    entered, go, leased = threading.Event(), threading.Event(), threading.Event()

    class Slow(Spool):
        def lease_many(self, *args: Any, **kwargs: Any) -> list[Lease]:
            entered.set()
            assert go.wait(10)
            try:
                return super().lease_many(*args, **kwargs)
            finally:
                leased.set()

    async def main(s: Slow) -> None:
        task = asyncio.ensure_future(_loop.lease_in_thread(s, "jobs", 10, 60))
        assert await asyncio.to_thread(entered.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        go.set()  # the thread now leases the message for nobody
        assert await asyncio.to_thread(leased.wait, 10)
        for _ in range(1000):
            back = Spool.lease_many(s, "jobs", 10)
            if back:
                assert [(x.body, x.attempts) for x in back] == [(b"x", 1)]  # not counted as an attempt
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the message leased for a cancelled waiter was not given back")

    with Slow(tmp_path / "s") as s:
        s.send(b"x", "jobs")
        asyncio.run(main(s))


def test_an_armed_waiter_looks_once_before_it_sleeps_and_a_send_during_that_look_wakes_it(
        real_spool: Spool) -> None:
    """Issue 15: a thread whose watch is armed by an earlier wait does not look twice (an empty look is
    two write transactions); a ring after its watch was last drained, even during its first look, wakes it."""
    import threading

    s = real_spool
    s.send(b"first", "c")
    x = s.lease("c", wait=1)
    assert x is not None
    x.ack()
    assert s.lease("c", wait=0.01) is None  # arms this thread's watch for the channel
    real = s._inbox.lease_once
    looks: list[int] = []

    def counting(*args: Any) -> Any:
        looks.append(1)
        return real(*args)

    s._inbox.lease_once = counting  # type: ignore[method-assign,assignment]
    assert s.lease("c", wait=0.05) is None
    assert len(looks) == 2  # the first look, and one when the wait ends (was 3: a second look before it)

    looks.clear()

    def send_during_look(*args: Any) -> Any:
        got = real(*args)
        if not looks:  # the first (empty) look: a message arrives before the waiter sleeps
            t = threading.Thread(target=s.send, args=(b"late", "c"))
            t.start()
            t.join(10)
        looks.append(1)
        return got

    s._inbox.lease_once = send_during_look  # type: ignore[method-assign,assignment]
    watch = s._watches.for_thread()
    real_wait = watch.wait
    woke: list[bool] = []

    def wait(timeout: float) -> bool:
        woke.append(real_wait(timeout))
        return woke[-1]

    watch.wait = wait  # type: ignore[method-assign]
    got = s.lease("c", wait=5)
    assert got is not None and got.body == b"late"
    assert woke == [True]  # woken by the ring (a lost ring: the wait ends at its timeout, False)


def test_an_empty_look_takes_one_write_transaction_not_two(real_spool: Spool) -> None:
    """Issue 15: when nothing is ready, a lease says so from a read after its one write statement, rather
    than taking the write lock again for the general path; that path still runs when it has work."""
    s = real_spool
    s.send(b"x", "c")
    got = s.lease("c")
    assert got is not None
    got.ack()
    move = s._inbox.db.move
    writes: list[str] = []
    move.set_trace_callback(lambda st: writes.append(st) if st.startswith(("BEGIN IMMEDIATE", "UPDATE")) else None)
    try:
        assert s.lease("c") is None
        assert len(writes) == 1, writes
        writes.clear()
        s.send(b"later", "c", delay=0.05)  # due soon: the general path promotes it when it is
        late = s.lease("c", wait=10)
        assert late is not None and late.body == b"later"
        assert any(st.startswith("BEGIN IMMEDIATE") for st in writes), writes
    finally:
        move.set_trace_callback(None)
