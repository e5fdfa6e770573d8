"""``spoolq top``: a live view of channels and peers, with rates per second.

Each round takes a snapshot (counts per channel and per peer) from the spool directory
(:meth:`Spool.stats`) or from a running node (``GET /v1/stats`` and ``GET /v1/peers``), and the
rates are the differences between two snapshots divided by the time between them:

- per channel, ``net/s``: how fast the channel's depth (ready + delayed + leased + held) grows
  (negative: it drains), and ``dead/s``;
- per peer, ``sent/s``: messages forwarded per second (the node's counter), or, from a spool
  directory, how fast the outbox drains.

On a terminal the view is redrawn in place every ``--interval`` (rich ``Live``) until Ctrl-C or
``--iterations``; elsewhere (a pipe, a script) nothing is drawn: one plain frame is printed at the end
(``--iterations`` defaults to 1 there), or one JSON object per round with ``--json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..errors import NotFound, PeerError
from ..spool import Spool
from . import _format as fmt
from ._common import DURATION, err, open_spool, out, spool_options
from ._http import NodeClient, node_options

CHANNEL_STATES = ("ready", "delayed", "leased", "held")


@dataclass
class Snapshot:
    """One round's counts: ``t`` is a monotonic time in seconds."""

    t: float
    channels: dict[str, dict[str, Any]]
    peers: dict[str, dict[str, Any]]
    source: str


@dataclass
class Frame:
    """A snapshot with the rates against the previous one (None on the first round)."""

    snap: Snapshot
    interval: float | None = None
    channel_rates: dict[str, dict[str, float]] = field(default_factory=dict)
    peer_rates: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        chans = {n: {**c, **self.channel_rates.get(n, {"net_rate": None, "dead_rate": None})}
                 for n, c in self.snap.channels.items()}
        peers = {n: {**p, "sent_rate": self.peer_rates.get(n)} for n, p in self.snap.peers.items()}
        return {"source": self.snap.source, "interval": self.interval, "channels": chans, "peers": peers}


def _depth(c: dict[str, Any]) -> int:
    return sum(int(c.get(s) or 0) for s in CHANNEL_STATES)


def rates(prev: Snapshot | None, snap: Snapshot) -> Frame:
    """The frame of ``snap``: rates per second against ``prev`` for what both snapshots know."""
    if prev is None or snap.t <= prev.t:
        return Frame(snap)
    dt = snap.t - prev.t
    ch: dict[str, dict[str, float]] = {}
    for name, c in snap.channels.items():
        p = prev.channels.get(name)
        if p is not None:
            ch[name] = {"net_rate": (_depth(c) - _depth(p)) / dt,
                        "dead_rate": (int(c.get("dead") or 0) - int(p.get("dead") or 0)) / dt}
    pr: dict[str, float] = {}
    for name, c in snap.peers.items():
        p = prev.peers.get(name)
        if p is None:
            continue
        if c.get("forwarded") is not None and p.get("forwarded") is not None:
            pr[name] = max(0.0, (c["forwarded"] - p["forwarded"]) / dt)
        else:  # a spool directory has no counter: what left the outbox (never below zero)
            pr[name] = max(0.0, (int(p.get("waiting") or 0) - int(c.get("waiting") or 0)) / dt)
    return Frame(snap, dt, ch, pr)


# -- where the counts come from -------------------------------------------------------------


def local_snapshot(spool: Spool) -> Snapshot:
    st = spool.stats().as_dict()
    peers = {name: {"waiting": p.get("outbox", 0), "in_flight": p.get("in_flight", 0), "held": p.get("held", 0),
                    "dead": p.get("dead", 0), "oldest_age": p.get("oldest_age")}
             for name, p in st["peers"].items()}
    return Snapshot(time.monotonic(), st["channels"], peers, f"spool {spool.path}")


def node_snapshot(client: NodeClient) -> Snapshot:
    st = client.get("/v1/stats")
    try:
        health = client.get("/v1/peers").get("peers") or {}
    except PeerError as e:
        if e.status not in (401, 403):
            raise
        health = {}  # a token without the admin scope still sees the depths
    t = time.monotonic()
    channels = st.get("channels") if isinstance(st, dict) else None
    peers_in = st.get("peers") if isinstance(st, dict) else None
    peers: dict[str, dict[str, Any]] = {}
    for name, p in (peers_in or {}).items():
        peers[name] = {"waiting": p.get("outbox", 0), "in_flight": p.get("in_flight", 0), "held": p.get("held", 0),
                       "dead": p.get("dead", 0), "oldest_age": p.get("oldest_age")}
    for name, h in health.items() if isinstance(health, dict) else ():
        row = peers.setdefault(name, {"waiting": 0, "in_flight": 0, "held": 0, "dead": 0, "oldest_age": None})
        row.update(up=h.get("up"), forwarded=h.get("forwarded"), last_error=h.get("last_error"),
                   next_retry=h.get("backoff_seconds"))
    if health:  # an admin token: the forwarder's view of each peer (a node older than the admin API has none)
        try:
            states = client.get("/v1/admin/outbox").get("peers") or []
        except NotFound:
            states = []
        for p in states if isinstance(states, list) else []:
            if isinstance(p, dict) and p.get("peer") in peers:
                peers[p["peer"]].update({k: p[k] for k in ("state", "in_flight", "batch_size") if k in p})
    return Snapshot(t, channels if isinstance(channels, dict) else {}, peers, f"node {client.base}")


# -- drawing ----------------------------------------------------------------------------------


def _num(v: Any) -> str:
    return "-" if v is None else str(v)


def _age(v: Any) -> str:
    return "-" if v is None else f"{float(v):.1f}"


def _rate(v: float | None) -> str:
    return "-" if v is None else f"{v:+.1f}" if v else "0"


def _peer_state(p: dict[str, Any]) -> str:
    """The forwarder's state (up, idle, backing_off, unreachable), else up/down from the peer's health."""
    state = p.get("state")
    if state is None:
        up = p.get("up")
        return "-" if up is None else ("up" if up else "[red]down[/red]")
    text = escape(fmt.safe(state))
    return f"[red]{text}[/red]" if state in ("unreachable", "backing_off") else text


def render(frame: Frame) -> Group:
    snap = frame.snap
    every = f"every {frame.interval:.1f}s" if frame.interval else "rates from the next round"
    ct = Table(title=f"{escape(snap.source)}  ({every})", title_justify="left", expand=False)
    for col in ("channel", *CHANNEL_STATES, "dead", "oldest (s)", "net/s", "dead/s"):
        ct.add_column(col, justify="left" if col == "channel" else "right")
    for name, c in sorted(snap.channels.items()):
        r = frame.channel_rates.get(name, {})
        ct.add_row(escape(fmt.safe(name)), *(_num(c.get(s, 0)) for s in CHANNEL_STATES), _num(c.get("dead", 0)),
                   _age(c.get("oldest_age")), _rate(r.get("net_rate")), _rate(r.get("dead_rate")))
    parts: list[Any] = [ct]
    if snap.peers:
        pt = Table(title="peers", title_justify="left")
        for col in ("peer", "state", "waiting", "in flight", "held", "dead", "oldest (s)", "sent/s", "next retry (s)",
                    "last error"):
            pt.add_column(col, justify="left" if col in ("peer", "state", "last error") else "right")
        for name, p in sorted(snap.peers.items()):
            sent = frame.peer_rates.get(name)
            pt.add_row(escape(fmt.safe(name)), _peer_state(p), _num(p.get("waiting")),
                       _num(p.get("in_flight")), _num(p.get("held", 0)), _num(p.get("dead")), _age(p.get("oldest_age")),
                       "-" if sent is None else f"{sent:.1f}", _age(p.get("next_retry")),
                       escape(fmt.safe(p.get("last_error") or ""))[:60])
        parts.append(pt)
    if not snap.channels and not snap.peers:
        parts.append(Text("(no channels and no peers yet)"))
    return Group(*parts)


# -- the command ------------------------------------------------------------------------------


@click.command()
@click.option("--interval", type=DURATION, default=1.0, show_default=True, help="Time between rounds.")
@click.option("--iterations", type=click.IntRange(min=1), default=None,
              help="Stop after this many rounds [default: until Ctrl-C on a terminal, 1 elsewhere].")
@click.option("--once", is_flag=True, help="One round and exit (no rates): --iterations 1.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per round, nothing drawn.")
@node_options
@spool_options
def top(interval: float, iterations: int | None, once: bool, as_json: bool, node_url: str | None,
        token: str | None, spool_dir: str | None, durability: str) -> None:
    """A live view of channels and peers with rates per second, redrawn every --interval.

    From the spool directory, or from a running node with --node URL --token T.
    """
    if interval <= 0 or interval > 3600:
        raise click.BadParameter("must be more than 0 and at most 1h", param_hint="--interval")
    if once:
        iterations = 1
    live = out.is_terminal and not as_json
    if iterations is None and not live:
        iterations = 1
    if node_url:
        client = NodeClient(node_url, token, timeout=max(5.0, interval * 5))
        _loop(lambda: node_snapshot(client), interval, iterations, as_json, live)
    else:
        with open_spool(spool_dir, durability, read_only=True) as spool:
            _loop(lambda: local_snapshot(spool), interval, iterations, as_json, live)


def _loop(take: Callable[[], Snapshot], interval: float, iterations: int | None, as_json: bool,
          live: bool) -> None:
    prev: Snapshot | None = None
    frame: Frame | None = None
    n = 0
    view = Live(console=out, auto_refresh=False, transient=False) if live else None
    try:
        if view is not None:
            view.start()
        while iterations is None or n < iterations:
            if n:
                time.sleep(max(0.0, interval - (time.monotonic() - prev.t if prev else 0.0)))
            snap = take()
            frame = rates(prev, snap)
            prev, n = snap, n + 1
            if as_json:
                click.echo(json.dumps(frame.as_dict()))
            elif view is not None:
                view.update(render(frame), refresh=True)
    except KeyboardInterrupt:
        pass
    finally:
        if view is not None:
            view.stop()
    if frame is not None and not as_json and view is None:
        Console(highlight=False, color_system=None, width=max(out.width, 160)).print(render(frame))
    if frame is None:
        err.print("no round taken")
