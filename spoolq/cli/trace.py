"""``spoolq trace ID``: one message, every hop (see ``spoolq.tracing``); ``spoolq trace --enable/--disable``:
the spool's event-log setting, which every process using the spool follows."""

from __future__ import annotations

import asyncio
import datetime
import json
import ssl
import sys
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..errors import InvalidArgument
from ..message import id_bytes

if TYPE_CHECKING:
    from ..tracing import Timeline

__all__ = ["trace"]

_DETAIL_ORDER = ("channel", "by", "client", "to", "route", "from", "peer", "target", "url", "result", "until",
                 "attempt", "delay", "reason", "error", "detail")


def _when(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _detail_text(d: dict[str, Any], labels: dict[str, str]) -> str:
    keys = [k for k in _DETAIL_ORDER if k in d] + sorted(k for k in d if k not in _DETAIL_ORDER)
    parts = []
    for k in keys:
        v = d[k]
        if k == "until" and isinstance(v, (int, float)):
            v = _when(float(v))[11:]
        elif k == "from" and isinstance(v, str) and v in labels:
            v = labels[v]
        parts.append(f"{k}={v}")
    return " ".join(parts)


def _labels(tl: Timeline) -> dict[str, str]:
    """Node id -> how to show it: the peer name its upstream gave it (the first node: its URL's
    host:port), and the end of its id (ids are time-ordered: their beginnings look alike)."""
    out: dict[str, str] = {}
    for h in tl.hops:
        if h.node and h.node not in out:
            name = h.peer
            if name in ("start", "local"):
                name = urlsplit(h.url).netloc if h.url else "local"
            out[h.node] = f"{name} (…{h.node[-6:]})"
    return out


def _hop_tokens(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for v in values:
        name, sep, token = v.partition("=")
        if not sep or not name or not token:
            raise click.BadParameter(f"{v!r}: use NAME=TOKEN or URL=TOKEN", param_hint="--hop-token")
        out[name.rstrip("/")] = token
    return out


def _local_answer(message_id: str, spool_dir: str | None, peers_cfg: Any) -> dict[str, Any]:
    from ..node.trace_api import next_hops
    from ..spool import Spool

    with Spool(spool_dir, read_only=True) as spool:
        events = spool.trace_events(message_id)
        me = spool.node_id
    return {"node": me, "url": None, "next": next_hops(events, peers_cfg),
            "events": [{**e, "node": me} for e in events]}


def _collapsed(events: list[dict[str, Any]]) -> list[tuple[dict[str, Any], int, float]]:
    """Failed attempts repeated with the same error (a peer down for hours) as one row with a count."""
    out: list[tuple[dict[str, Any], int, float]] = []
    for e in events:
        if out and e["kind"] == "forward_failed":
            prev, n, _ = out[-1]
            if prev["kind"] == e["kind"] and prev["node"] == e["node"] and prev["detail"] == e["detail"]:
                out[-1] = (prev, n + 1, e["at"])
                continue
        out.append((e, 1, e["at"]))
    return out


def render(tl: Timeline, console: Console) -> None:
    labels = _labels(tl)
    table = Table(title=f"message {tl.id}", show_lines=False)
    for col in ("time (UTC)", "node", "event", "detail"):
        table.add_column(col, overflow="fold")
    for e, repeats, last in _collapsed(tl.events):
        label = labels.get(e["node"], e["node"])
        style = {"dead": "bold red", "forward_failed": "yellow", "lease_expired": "yellow", "acked": "green",
                 "forwarded": "cyan", "received": "cyan"}.get(e["kind"], "")
        table.add_row(_when(e["at"]), escape(label), f"[{style}]{e['kind']}[/{style}]" if style else e["kind"],
                      escape(_detail_text(e["detail"], labels)
                             + (f" (x{repeats}, the last at {_when(last)[11:]})" if repeats > 1 else "")))
    if tl.events:
        console.print(table)
    else:
        console.print(f"no events for message {tl.id} on the nodes reached")
    for h in tl.unreachable:
        via = f" (named by {labels.get(h.via, h.via)})" if h.via else ""
        console.print(f"[bold red]could not reach hop {escape(h.peer)}[/bold red] at {escape(str(h.url))}{via}: "
                      f"{escape(h.error or '')}", highlight=False)


def _switch(spool_dir: str | None, on: bool | None) -> None:
    """Show (``on`` None) or store the spool's event-log setting."""
    from ..spool import Spool

    if on is None:
        with Spool(spool_dir, read_only=True) as spool:
            state = spool.trace_setting()
            where = spool.path
        click.echo(f"trace is {'on' if state else 'off'} for the spool at {where}")
        return
    with Spool(spool_dir) as spool:
        spool.set_trace(on)
        where = spool.path
    click.echo(f"trace is now {'on' if on else 'off'} for the spool at {where}: processes using it follow within "
               "a second (a node stores its config's `trace` again when it starts)")


@click.command("trace")
@click.argument("message_id", required=False)
@click.option("--enable/--disable", "switch", default=None,
              help="Instead of tracing a message: switch the event log of the spool (--spool) on or off, for "
                   "every process using it. Without MESSAGE_ID or these: show the setting.")
@click.option("--node", "node_url", envvar="SPOOLQ_NODE", default=None,
              help="Ask this node first (http://host:7070) [env: SPOOLQ_NODE]; default: read --spool directly.")
@click.option("--token", envvar="SPOOLQ_TOKEN", default=None,
              help="Bearer token (admin scope) for --node [env: SPOOLQ_TOKEN].")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="SPOOLQ_CONFIG", default=None,
              help="Node config whose [peers] tokens are used for the next hops (matched by URL) "
                   "[env: SPOOLQ_CONFIG].")
@click.option("--hop-token", "hop_tokens", multiple=True, metavar="NAME=TOKEN",
              help="Token for a hop, by peer name or URL (repeatable).")
@click.option("--timeout", type=float, default=5.0, show_default=True, help="Seconds per node asked.")
@click.option("--json", "as_json", is_flag=True, help="The merged timeline as JSON.")
@click.option("--spool", "spool_dir", envvar="SPOOLQ_SPOOL", type=click.Path(file_okay=False), default=None,
              help="Spool directory to start from without --node, or to switch [env: SPOOLQ_SPOOL].")
def trace(message_id: str | None, switch: bool | None, node_url: str | None, token: str | None, config_path: str | None,
          hop_tokens: tuple[str, ...], timeout: float, as_json: bool, spool_dir: str | None) -> None:
    """Where is message MESSAGE_ID, and what happened to it on every node it passed?

    Asks the node (or reads the spool), then each peer it was forwarded to, over
    their HTTP APIs, and prints one timeline sorted by time. Hops that could not
    be asked are named, with the reason. Exit status 0 when the first node
    answered, 3 when some hop could not be reached, 1 when the first node failed.
    """
    from ..node.config import NodeConfig, load_config

    if message_id is None or switch is not None:
        if message_id is not None:
            raise InvalidArgument("give a MESSAGE_ID to trace, or --enable/--disable, not both")
        if node_url is not None:
            raise InvalidArgument("--enable/--disable act on a spool directory (--spool), not on --node")
        _switch(spool_dir or (load_config(config_path) if config_path else NodeConfig()).spool, switch)
        return
    from ..tracing import follow  # aiohttp: imported only when tracing

    id_bytes(message_id)  # a bad id is refused before anything is asked
    if not 0 < timeout <= 600:
        raise InvalidArgument("--timeout: must be more than 0 and at most 600 seconds")
    cfg = load_config(config_path) if config_path else NodeConfig()
    extra = _hop_tokens(hop_tokens)
    ssl_ctx = ssl.create_default_context(cafile=cfg.ca_file) if cfg.ca_file else None
    local = None
    if node_url is None:
        local = _local_answer(message_id, spool_dir or cfg.spool, cfg)
    elif not node_url.startswith(("http://", "https://")):
        raise InvalidArgument(f"--node: {node_url!r} is not an http(s) URL", hint="e.g. --node http://127.0.0.1:7070")
    tl = asyncio.run(follow(message_id, start_url=node_url, start_token=token, local=local, peers=list(cfg.peers),
                            extra_tokens=extra, timeout=timeout, ssl_ctx=ssl_ctx))
    first = tl.hops[0] if tl.hops else None
    if as_json:
        click.echo(json.dumps(tl.as_dict(), indent=2))
    else:
        render(tl, Console())
    if first is None or first.error is not None:
        sys.exit(1)
    if tl.unreachable:
        sys.exit(3)
