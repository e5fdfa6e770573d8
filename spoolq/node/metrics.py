"""Prometheus metrics of a node (prometheus-client, one registry per daemon).

Gauges that describe the spool (depth per channel and state, outbox per
peer, oldest ages) and the peers' health (up, backoff, last error) are read
at scrape time by a collector, so they are never stale. Counters and
histograms record what happened: messages forwarded and received, batches,
HTTP requests and their latency.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from ..spool import Spool


_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"})

class TargetState(Protocol):
    name: str
    failures: int
    retry_at: float
    last_error: str | None
    last_error_at: float | None


class LinkState(Protocol):
    """What the metrics read of a forwarding loop (``forwarder.LinkState``)."""

    name: str
    in_flight: int

    @property
    def targets(self) -> Sequence[TargetState]: ...

__all__ = ["Metrics", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _SpoolCollector(Collector):
    def __init__(self, spool: Spool, links: Callable[[], list[LinkState]]) -> None:
        self.spool = spool
        self.links = links

    def collect(self) -> Iterator[GaugeMetricFamily]:
        st = self.spool.stats()
        depth = GaugeMetricFamily("spoolq_channel_messages", "Messages per channel and state",
                                  labels=["channel", "state"])
        oldest = GaugeMetricFamily("spoolq_channel_oldest_age_seconds",
                                   "Age of the oldest ready or leased message per channel", labels=["channel"])
        for name, c in st.channels.items():
            for state in ("ready", "delayed", "leased", "held", "dead"):
                depth.add_metric([name, state], getattr(c, state))
            if c.oldest_age is not None:
                oldest.add_metric([name], c.oldest_age)
        yield depth
        yield oldest
        outbox = GaugeMetricFamily("spoolq_peer_outbox_messages", "Messages waiting in the outbox per peer",
                                   labels=["peer"])
        out_age = GaugeMetricFamily("spoolq_peer_outbox_oldest_age_seconds",
                                    "Age of the oldest message waiting for each peer", labels=["peer"])
        held = GaugeMetricFamily("spoolq_peer_held_messages", "Messages for each peer in the hold queue",
                                 labels=["peer"])
        for name, p in st.peers.items():
            outbox.add_metric([name], p.outbox)
            held.add_metric([name], p.held)
            if p.oldest_age is not None:
                out_age.add_metric([name], p.oldest_age)
        yield outbox
        yield out_age
        yield held
        up = GaugeMetricFamily("spoolq_peer_up", "1 if the last exchange with the peer succeeded", labels=["peer"])
        fails = GaugeMetricFamily("spoolq_peer_consecutive_failures", "Failures since the last success",
                                  labels=["peer"])
        back = GaugeMetricFamily("spoolq_peer_backoff_seconds", "Seconds until the next attempt (0: not backing off)",
                                 labels=["peer"])
        err = GaugeMetricFamily("spoolq_peer_last_error_timestamp_seconds", "When the last error happened",
                                labels=["peer", "error"])
        inflight = GaugeMetricFamily("spoolq_peer_batches_in_flight", "Batches posted and not yet answered",
                                     labels=["peer"])
        now = time.monotonic()
        for link in self.links():
            inflight.add_metric([link.name], link.in_flight)
            for t in link.targets:
                up.add_metric([t.name], 0 if t.failures else 1)
                fails.add_metric([t.name], t.failures)
                back.add_metric([t.name], max(0.0, t.retry_at - now))
                if t.last_error and t.last_error_at:
                    err.add_metric([t.name, t.last_error[:200]], t.last_error_at)
        yield up
        yield fails
        yield back
        yield err
        yield inflight


class Metrics:
    """The metrics of one node."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.forwarded_total = Counter("spoolq_forwarded_messages", "Messages forwarded to peers, by result",
                                       ["peer", "result"], registry=r)
        self.forward_batches = Counter("spoolq_forward_batches", "Batches posted to peers, by outcome",
                                       ["peer", "outcome"], registry=r)
        self.forward_seconds = Histogram("spoolq_forward_batch_seconds", "Time to post a batch and settle the reply",
                                         ["peer"], buckets=_LATENCY_BUCKETS, registry=r)
        self.received_total = Counter("spoolq_received_messages", "Messages received from peers, by result",
                                      ["result"], registry=r)
        self.receive_batches = Counter("spoolq_receive_batches", "Batches received, by outcome", ["outcome"],
                                       registry=r)
        self.requests = Counter("spoolq_http_requests", "HTTP requests, by route and status",
                                ["route", "method", "status"], registry=r)
        self.request_seconds = Histogram("spoolq_http_request_seconds", "HTTP request latency by route",
                                         ["route"], buckets=_LATENCY_BUCKETS, registry=r)
        self.leases_released = Counter("spoolq_leases_released",
                                       "Leases given back uncounted because their HTTP client left", registry=r)
        self._collector: _SpoolCollector | None = None
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, remembered: that call costs ~10 us (a lock, a tuple, a dict), and
        every batch sent or received made four of them (issue 15). Bounded: label values can come from
        clients (an HTTP method), so the memo starts over past 4,096 entries."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            if len(self._children) >= 4096:
                self._children.clear()
            child = self._children[key] = metric.labels(*labels)
        return child

    def watch(self, spool: Spool, links: Callable[[], list[LinkState]]) -> None:
        """Report the spool's depths and the peers' health at every scrape."""
        self._collector = _SpoolCollector(spool, links)
        self.registry.register(self._collector)

    def forwarded(self, peer: str, counts: dict[str, int], expired: int, seconds: float) -> None:
        for result, n in counts.items():
            if n:
                self._child(self.forwarded_total, peer, result).inc(n)
        if expired:
            self._child(self.forwarded_total, peer, "expired").inc(expired)
        self._child(self.forward_seconds, peer).observe(seconds)

    def batch(self, peer: str, ok: bool) -> None:
        self._child(self.forward_batches, peer, "ok" if ok else "error").inc()

    def received(self, accepted: int, duplicate: int, rejected: int) -> None:
        """A batch received and stored: its messages by result (and the batch counted as ok)."""
        if accepted:
            self._child(self.received_total, "accepted").inc(accepted)
        if duplicate:
            self._child(self.received_total, "duplicate").inc(duplicate)
        if rejected:
            self._child(self.received_total, "rejected").inc(rejected)
        self._child(self.receive_batches, "ok").inc()

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        """One HTTP request answered. A method HTTP does not define is counted as ``other``: the method is
        the client's to choose (any token), and every label value is a series the registry keeps forever."""
        if method not in _METHODS:
            method = "other"
        self._child(self.requests, route, method, str(status)).inc()
        self._child(self.request_seconds, route).observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition (reads the spool: call it in a thread)."""
        return generate_latest(self.registry)
