"""The node's last hour, for the dashboard: the spool's counts sampled every few seconds, kept in memory.

Theory of operation:

- :class:`History` is a ring of :class:`Sample` objects (one per ``interval`` seconds, at most one hour of
  them). ``step(stats, forwarded, now)`` turns one reading into a sample; it does no I/O, so tests feed
  it readings and a clock of their own.
- :class:`Sampler` is the loop around it: every ``interval`` it reads ``Spool.stats()`` in a worker
  thread (it counts rows: never on the event loop) and the forwarders' counters, and calls ``step``.
  A slow reading (a deep spool: ``stats()`` counts rows) stretches the interval so that reading
  takes at most a fifth of the time (:func:`pause`): readings never pile up or run back to back.
- Rates. The spool keeps no per-channel counters (one more write per send and ack would cost every
  message), so ``in_rate`` and ``out_rate`` come from two things: what this node's process saw enter
  and leave each channel (HTTP sends and peer batches in, HTTP acks out: :meth:`History.came` and
  :meth:`History.left`), and the change in the channel's depth (ready + delayed + leased + held)
  between two samples. Whatever the depth change says the counted flows missed (a producer or a
  consumer in another process, the beanstalkd front-end, expiry to dead letters) is added to the side
  it must have come from, so ``in - out`` always equals the depth change. With all traffic through
  the node's HTTP API both rates are exact; otherwise they are lower bounds (a flow in and out of
  the same channel by other processes within one interval shows only as its net change).
- Peers: ``waiting`` is the outbox depth, ``rate`` the messages the forwarder delivered per second.
- Memory is bounded: at most ``MAX_SERIES`` channels and peers per sample (the busiest ones), and
  ``SECONDS / interval`` samples, each a few flat arrays of doubles (about 10 MB for a full hour of
  64 channels and 64 peers at 2 s; a few hundred KB for a handful of channels).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from array import array
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from ..errors import InvalidArgument, SpoolqError

__all__ = ["History", "Sample", "Sampler", "SECONDS", "MAX_SERIES", "install", "pause"]

log = logging.getLogger("spoolq.history")

SECONDS = 3600.0  # how far back the history goes
MAX_SERIES = 64  # channels (and peers) kept per sample: the busiest
DUTY = 5  # a reading of the spool may take at most 1/DUTY of the time (see pause())
CHANNEL_FIELDS = ("depth", "ready", "delayed", "leased", "held", "dead", "in_rate", "out_rate", "oldest_age")


class ChannelCounts(Protocol):
    """What a sample reads of one channel (``store.inbox.ChannelStats``; ``held`` when the spool has it)."""

    @property
    def ready(self) -> int: ...
    @property
    def delayed(self) -> int: ...
    @property
    def leased(self) -> int: ...
    @property
    def dead(self) -> int: ...
    @property
    def oldest_age(self) -> float | None: ...


class PeerCounts(Protocol):
    @property
    def outbox(self) -> int: ...


class StatsLike(Protocol):
    @property
    def channels(self) -> Mapping[str, ChannelCounts]: ...

    @property
    def peers(self) -> Mapping[str, PeerCounts]: ...


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading, stored compactly: the names in tuples (shared with the previous sample when they
    did not change) and the numbers in flat arrays of doubles, ``CHANNEL_FIELDS`` per channel (an
    unknown oldest age is NaN) and ``(waiting, rate)`` per peer."""

    t: float
    channel_names: tuple[str, ...]
    channel_values: array[float]
    peer_names: tuple[str, ...]
    peer_values: array[float]

    @property
    def channels(self) -> dict[str, tuple[float | None, ...]]:
        n = len(CHANNEL_FIELDS)
        v = self.channel_values
        return {name: tuple(_num(x) for x in v[i * n:(i + 1) * n]) for i, name in enumerate(self.channel_names)}

    @property
    def peers(self) -> dict[str, tuple[float | None, ...]]:
        v = self.peer_values
        return {name: (_num(v[2 * i]), _num(v[2 * i + 1])) for i, name in enumerate(self.peer_names)}

    def as_dict(self) -> dict[str, Any]:
        return {
            "t": self.t,
            "channels": {name: dict(zip(CHANNEL_FIELDS, v, strict=True)) for name, v in self.channels.items()},
            "peers": {name: {"waiting": w, "rate": r} for name, (w, r) in self.peers.items()},
        }


def _num(x: float) -> float | int | None:
    """A stored double back as JSON wants it: counts as ints, NaN as null."""
    if math.isnan(x):
        return None
    return int(x) if x.is_integer() and abs(x) < 1 << 53 else x


def _rate(n: float, dt: float) -> float:
    return round(n / dt, 3) if dt > 0 else 0.0


class History:
    """The ring of samples and the flow counters between two samples.

    Args:
        interval: seconds between samples (the ring holds ``SECONDS / interval`` of them).
    """

    def __init__(self, interval: float) -> None:
        if not interval > 0:
            raise InvalidArgument(f"history interval must be positive, not {interval!r}")
        self.interval = float(interval)
        self.samples: deque[Sample] = deque(maxlen=max(2, math.ceil(SECONDS / self.interval)))
        self._came: dict[str, int] = {}
        self._left: dict[str, int] = {}
        self._depth: dict[str, int] = {}
        self._forwarded: dict[str, int] = {}
        self._last_t: float | None = None

    # -- flows seen by this process (called on the event loop: cheap) -----------------------------

    def came(self, channel: str, n: int = 1) -> None:
        """``n`` messages entered ``channel`` through this node (sent over HTTP, received from a peer)."""
        if len(self._came) < 4 * MAX_SERIES or channel in self._came:
            self._came[channel] = self._came.get(channel, 0) + n

    def left(self, channel: str, n: int = 1) -> None:
        """``n`` messages of ``channel`` were acked through this node."""
        if len(self._left) < 4 * MAX_SERIES or channel in self._left:
            self._left[channel] = self._left.get(channel, 0) + n

    # -- sampling ---------------------------------------------------------------------------------

    def step(self, stats: StatsLike, forwarded: Mapping[str, int], now: float) -> Sample:
        """Make one sample from a reading of the spool (``stats``) and the forwarders' running totals
        of delivered messages per peer (``forwarded``), taken at ``now`` (Unix seconds)."""
        dt = now - self._last_t if self._last_t is not None else 0.0
        came, left = self._came, self._left
        self._came, self._left = {}, {}
        channels: dict[str, tuple[float | None, ...]] = {}
        depths: dict[str, int] = {}
        for name, c in stats.channels.items():
            held = int(getattr(c, "held", 0) or 0)
            depth = c.ready + c.delayed + c.leased + held
            depths[name] = depth
            # a channel new since the last sample started from nothing
            change = depth - self._depth.get(name, 0 if self._last_t is not None else depth)
            n_in, n_out = came.get(name, 0), left.get(name, 0)
            n_in, n_out = max(n_in, n_out + change), max(n_out, n_in - change)
            if dt <= 0:
                n_in = n_out = 0
            age = round(c.oldest_age, 3) if c.oldest_age is not None else None
            channels[name] = (depth, c.ready, c.delayed, c.leased, held, c.dead,
                              _rate(n_in, dt), _rate(n_out, dt), age)
        self._depth = depths
        peers: dict[str, tuple[int, float]] = {}
        for name in {*stats.peers, *forwarded}:
            p = stats.peers.get(name)
            total = forwarded.get(name, 0)
            done = max(0, total - self._forwarded.get(name, total))
            peers[name] = (p.outbox if p is not None else 0, _rate(done, dt))
        self._forwarded = dict(forwarded)
        self._last_t = now
        chans = _busiest(channels, lambda v: (v[0] or 0.0, (v[6] or 0.0) + (v[7] or 0.0)))
        busy = _busiest(peers, lambda v: (v[0], v[1]))
        prev = self.samples[-1] if self.samples else None
        cnames, pnames = tuple(chans), tuple(busy)
        if prev is not None:  # the same names as last time: share the tuples
            cnames = prev.channel_names if cnames == prev.channel_names else cnames
            pnames = prev.peer_names if pnames == prev.peer_names else pnames
        sample = Sample(round(now, 3), cnames,
                        array("d", (math.nan if x is None else x for v in chans.values() for x in v)),
                        pnames, array("d", (x for v in busy.values() for x in v)))
        self.samples.append(sample)
        return sample

    def since(self, seconds: float, after: float | None, now: float) -> list[Sample]:
        """The samples of the last ``seconds`` (and newer than ``after``, when given), oldest first."""
        start = now - seconds
        if after is not None:
            start = max(start, after)
        out = []
        for s in reversed(self.samples):
            if s.t <= start:
                break
            out.append(s)
        out.reverse()
        return out


def _busiest(series: dict[str, Any], key: Callable[[Any], tuple[float, float]]) -> dict[str, Any]:
    if len(series) <= MAX_SERIES:
        return series
    keep = sorted(series, key=lambda name: key(series[name]), reverse=True)[:MAX_SERIES]
    return {name: series[name] for name in sorted(keep)}


class Sampler:
    """The loop that feeds a :class:`History`: ``step()`` takes one reading, ``run()`` repeats it.

    Args:
        history: where the samples go.
        read_stats: the spool's ``stats`` (blocking: called in a worker thread).
        forwarded: the forwarders' delivered totals per peer (cheap: called on the loop).
        clock: Unix time.
    """

    def __init__(self, history: History, read_stats: Callable[[], StatsLike],
                 forwarded: Callable[[], Mapping[str, int]], clock: Callable[[], float] = time.time) -> None:
        self.history = history
        self.read_stats = read_stats
        self.forwarded = forwarded
        self.clock = clock
        self._errors = 0

    async def step(self) -> Sample | None:
        try:
            stats = await asyncio.to_thread(self.read_stats)
        except SpoolqError as e:  # a busy or failing spool: a gap in the charts, logged now and then
            self._errors += 1
            if self._errors in (1, 10, 100) or self._errors % 1000 == 0:
                log.warning("history: cannot read the spool's counts (%d times so far): %s", self._errors, e)
            return None
        return self.history.step(stats, self.forwarded(), self.clock())

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            await self.step()
            await asyncio.sleep(pause(self.history.interval, time.monotonic() - started))


def pause(interval: float, took: float) -> float:
    """Seconds to wait before the next reading, when the last one took ``took`` seconds.

    ``stats()`` counts rows, so on a deep spool it is slow (about 0.2 s per 200,000 messages here):
    waiting ``DUTY`` times as long as it took keeps the sampler under a fifth of one core and of the
    spool's read capacity, stretching the interval instead of scanning without pause."""
    return max(interval - took, (DUTY - 1) * took, 0.0)


# -- GET /v1/admin/history ---------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Add = Callable[[str, str, Handler, str, "str | None"], None]


def _number(query: Mapping[str, str], key: str, default: float | None, low: float, high: float) -> float | None:
    raw = query.get(key)
    if raw is None:
        return default
    try:
        v = float(raw)
    except ValueError:
        raise InvalidArgument(f"{key}: must be a number of seconds, not {raw[:40]!r}") from None
    if not low <= v <= high:  # NaN fails this too
        raise InvalidArgument(f"{key}: must be {low:g} to {high:g}, not {raw[:40]!r}")
    return v


def _encode(samples: Iterable[Sample], interval: float, now: float) -> bytes:
    import json

    body = {"interval": interval, "now": round(now, 3), "samples": [s.as_dict() for s in samples]}
    return json.dumps(body, separators=(",", ":")).encode()


def install(add: Add, history: Callable[[], History | None]) -> None:
    """Add ``GET /v1/admin/history`` (scope ``admin``) through build_app's ``add``.

    Query: ``seconds`` (how far back, default and most 3600) and ``since`` (only samples taken after
    this Unix time: the dashboard polls with the last ``t`` it has). Answers ``{"interval", "now",
    "samples": [{"t", "channels": {name: {depth, ready, delayed, leased, held, dead, in_rate,
    out_rate, oldest_age}}, "peers": {name: {waiting, rate}}}]}``, oldest first.
    """

    async def get_history(request: web.Request) -> web.Response:
        seconds = _number(request.query, "seconds", SECONDS, 0.0, SECONDS)
        after = _number(request.query, "since", None, 0.0, 1e11)
        h = history()
        now = time.time()
        if h is None:  # a node built without a sampler (tests of the routes alone)
            body = _encode([], 0.0, now)
        else:
            assert seconds is not None
            samples = h.since(seconds, after, now)
            # a full hour of many channels is megabytes of JSON: encode it off the event loop
            body = await asyncio.to_thread(_encode, samples, h.interval, now) if len(samples) > 60 else \
                _encode(samples, h.interval, now)
        return web.Response(body=body, content_type="application/json")

    add("GET", "/v1/admin/history", get_history, "admin_history", "admin")
