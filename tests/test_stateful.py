"""The spool against a simple in-memory model (hypothesis stateful testing).

The model is a dict of messages with the rules of DESIGN.md written the
obvious way; every step compares what the spool did with what the model says.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import spoolq
from spoolq import Spool
from spoolq.testing import FakeClock

CHANNELS = ["a", "b"]
MAX_ATTEMPTS = 3


@dataclass
class M:
    id: str
    channel: str
    priority: int
    body: bytes
    where: str  # inbox, delayed, dead, gone
    due: int = 0
    lease_until: int = 0
    attempts: int = 0
    expires: int | None = None


class SpoolModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="spoolq-model-")
        self.clock = FakeClock(start=1_800_000_000.0)
        self.spool = Spool(self.dir, clock=self.clock, durability="normal")
        for c in CHANNELS:
            self.spool.configure_channel(c, max_attempts=MAX_ATTEMPTS)
        self.msgs: dict[str, M] = {}
        self.held: list[tuple[spoolq.Lease, M]] = []
        self.caller_ids: list[str] = []
        self.n = 0

    def teardown(self) -> None:
        self.spool.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- model helpers ----------------------------------------------------------

    @property
    def now(self) -> int:
        return int(self.clock() * 1000)

    def _kill(self, m: M) -> None:
        m.where = "dead"
        m.lease_until = 0

    def _promote(self, channel: str | None) -> None:
        for m in self.msgs.values():
            if m.where == "delayed" and (channel is None or m.channel == channel) and m.due <= self.now:
                m.where = "inbox"
                m.lease_until = 0

    def _ready(self, channel: str) -> list[M]:
        return sorted((m for m in self.msgs.values()
                       if m.where == "inbox" and m.channel == channel and m.lease_until <= self.now),
                      key=lambda m: (m.priority, m.id))

    def _valid(self, lease: spoolq.Lease, m: M) -> str:
        if m.where == "inbox" and m.attempts == lease.attempts:
            return "ok" if m.lease_until > self.now else "expired"
        return "lost"

    # -- rules -------------------------------------------------------------------

    @rule(channel=st.sampled_from(CHANNELS), priority=st.sampled_from([0, 5, 1024]),
          delay=st.sampled_from([0, 0, 0, 2, 5]), ttl=st.sampled_from([None, None, 3, 50]),
          own_id=st.booleans())
    def send(self, channel: str, priority: int, delay: int, ttl: int | None, own_id: bool) -> None:
        self.n += 1
        body = f"m{self.n}".encode()
        mid = spoolq.new_id() if own_id else None
        got = self.spool.send(body, channel, priority=priority, delay=delay, ttl=ttl, id=mid)
        if mid is not None:
            assert got == mid
            self.caller_ids.append(mid)
        m = M(got, channel, priority, body, "delayed" if delay else "inbox",
              due=self.now + delay * 1000, expires=self.now + ttl * 1000 if ttl else None)
        self.msgs[got] = m

    @precondition(lambda self: self.caller_ids)
    @rule(i=st.integers(min_value=0))
    def resend_same_id(self, i: int) -> None:
        mid = self.caller_ids[i % len(self.caller_ids)]
        m = self.msgs[mid]
        assert self.spool.send(b"again", m.channel, priority=m.priority, id=mid) == mid  # no-op

    @rule(channel=st.sampled_from(CHANNELS), visibility=st.sampled_from([1.0, 4.0]))
    def lease(self, channel: str, visibility: float) -> None:
        got = self.spool.lease(channel, visibility=visibility)
        self._promote(channel)
        expect = None
        for m in self._ready(channel):
            if m.expires is not None and m.expires <= self.now:
                self._kill(m)
            elif m.attempts >= MAX_ATTEMPTS:
                self._kill(m)
            else:
                expect = m
                break
        if expect is None:
            assert got is None, f"spool leased {got} but the model has nothing ready"
            return
        assert got is not None, f"model expected {expect.id}"
        assert got.id == expect.id and got.body == expect.body and got.priority == expect.priority
        expect.attempts += 1
        expect.lease_until = self.now + int(visibility * 1000)
        assert got.attempts == expect.attempts
        self.held.append((got, expect))

    @precondition(lambda self: self.held)
    @rule(i=st.integers(min_value=0))
    def ack(self, i: int) -> None:
        lease, m = self.held.pop(i % len(self.held))
        v = self._valid(lease, m)
        if v == "ok":
            lease.ack()
            m.where = "gone"
        else:
            exc = spoolq.LeaseExpired if v == "expired" else spoolq.LeaseLost
            try:
                lease.ack()
            except exc:
                pass
            else:
                raise AssertionError(f"ack should have raised {exc.__name__}")

    @precondition(lambda self: self.held)
    @rule(i=st.integers(min_value=0), delay=st.sampled_from([0, 0, 2]))
    def nack(self, i: int, delay: int) -> None:
        lease, m = self.held.pop(i % len(self.held))
        v = self._valid(lease, m)
        if v != "ok":
            exc = spoolq.LeaseExpired if v == "expired" else spoolq.LeaseLost
            try:
                lease.nack(delay)
            except exc:
                return
            raise AssertionError(f"nack should have raised {exc.__name__}")
        lease.nack(delay)
        if m.attempts >= MAX_ATTEMPTS:
            self._kill(m)
        elif delay == 0:
            m.lease_until = 0
        else:
            m.where = "delayed"
            m.due = self.now + delay * 1000
            m.lease_until = 0

    @precondition(lambda self: self.held)
    @rule(i=st.integers(min_value=0), visibility=st.sampled_from([1.0, 6.0]))
    def touch(self, i: int, visibility: float) -> None:
        lease, m = self.held[i % len(self.held)]
        v = self._valid(lease, m)
        if v == "ok":
            lease.touch(visibility)
            m.lease_until = self.now + int(visibility * 1000)
        else:
            exc = spoolq.LeaseExpired if v == "expired" else spoolq.LeaseLost
            try:
                lease.touch(visibility)
            except exc:
                return
            raise AssertionError(f"touch should have raised {exc.__name__}")

    @rule(dt=st.sampled_from([0.5, 1.0, 2.0, 3.0, 10.0]))
    def advance(self, dt: float) -> None:
        self.clock.advance(dt)

    @rule()
    def sweep(self) -> None:
        self.spool.sweep()
        now = self.now
        for m in self.msgs.values():
            if m.expires is not None and m.expires <= now and (
                m.where == "delayed" or (m.where == "inbox" and m.lease_until <= now)
            ):
                self._kill(m)
        self._promote(None)

    @rule()
    def retry_dead(self) -> None:
        done = self.spool.retry_dead()
        assert {d.id for d in done} == {m.id for m in self.msgs.values() if m.where == "dead"}
        for m in self.msgs.values():
            if m.where == "dead":
                m.where, m.attempts, m.expires, m.lease_until = "inbox", 0, None, 0

    # -- invariants ----------------------------------------------------------------

    @invariant()
    def counts_match(self) -> None:
        stats = self.spool.stats().channels
        now = self.now
        for c in CHANNELS:
            mine = [m for m in self.msgs.values() if m.channel == c]
            ready = sum(1 for m in mine if m.where == "inbox" and m.lease_until <= now)
            leased = sum(1 for m in mine if m.where == "inbox" and m.lease_until > now)
            delayed = sum(1 for m in mine if m.where == "delayed")
            dead = sum(1 for m in mine if m.where == "dead")
            s = stats.get(c, spoolq.ChannelStats())
            assert (s.ready, s.leased, s.delayed, s.dead) == (ready, leased, delayed, dead), (c, s)

    @invariant()
    def ready_order_matches(self) -> None:
        for c in CHANNELS:
            assert [m.id for m in self.spool.peek(c, limit=1000)] == [m.id for m in self._ready(c)]


TestSpoolModel = SpoolModel.TestCase
TestSpoolModel.settings = settings(max_examples=60, stateful_step_count=40, deadline=None,
                                   suppress_health_check=[HealthCheck.too_slow])
