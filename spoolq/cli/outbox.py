"""``spoolq outbox``: per peer status, and ``outbox relay`` (the transactional outbox)."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..errors import NotFound, PeerError
from . import _format as fmt
from ._backend import running_node
from ._common import DURATION, READ_ONLY, err, open_spool, out, spool_options
from ._http import NodeClient, node_options


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@node_options
@READ_ONLY
@spool_options
@click.pass_context
def outbox(ctx: click.Context, as_json: bool, node_url: str | None, token: str | None, spool_dir: str | None,
           durability: str, read_only: bool) -> None:
    """Per peer: messages waiting, in flight, held, dead, the oldest's age, and (from the running node, with
    an admin --token) its state, last success, last error, next retry, batch size and rate.

    From the spool directory (and the node running on it, if any), or from --node URL.
    Subcommand `relay`: the transactional outbox."""
    if ctx.invoked_subcommand is not None:
        return
    if node_url:
        node = NodeClient(node_url, token)
        st = node.get("/v1/stats")
        counts = st.get("peers") if isinstance(st, dict) else None
        source = f"node {node.base}"
        client: NodeClient | None = node
    else:
        with open_spool(spool_dir, durability, read_only) as spool:
            counts = spool.stats().as_dict()["peers"]
            path = spool.path
        url = running_node(path)
        client = NodeClient(url, token, timeout=10) if url else None
        source = str(path)
    rows: dict[str, dict[str, Any]] = {}
    for name, ps in (counts or {}).items():
        rows[name] = {"waiting": ps.get("outbox", 0), "in_flight": ps.get("in_flight", 0), "held": ps.get("held", 0),
                      "dead": ps.get("dead", 0), "oldest_age": ps.get("oldest_age")}
    live = _live(client, strict=node_url is not None) if client is not None else None
    for name, info in (live or {}).items():
        rows.setdefault(name, {"waiting": 0, "in_flight": 0, "held": 0, "dead": 0, "oldest_age": None}).update(info)
    if as_json:
        where = {"node": source[len("node "):]} if node_url else {"spool": source}
        click.echo(json.dumps({**where, "node_running": live is not None, "peers": rows}, indent=2))
        return
    t = Table(title=f"outbox of {escape(source)}" + ("" if live is not None else
                                                     "  (no node running: no peer health)"), title_justify="left")
    for col in ("peer", "state", "waiting", "in flight", "held", "dead", "oldest", "batch", "sent/s", "last ok",
                "next retry", "last error"):
        left = col in ("peer", "state", "last error")
        t.add_column(col, justify="left" if left else "right", no_wrap=col != "last error",
                     overflow="fold" if col == "last error" else "ellipsis")
    for name, r in sorted(rows.items()):
        t.add_row(escape(fmt.safe(name)), _state(r), *(str(r.get(k, "-")) for k in ("waiting", "in_flight", "held",
                                                                                     "dead")),
                  fmt.age(r.get("oldest_age")), _opt(r.get("batch_size")),
                  "-" if r.get("rate") is None else f"{float(r['rate']):.1f}", fmt.until(r.get("last_success")),
                  _retry(r), escape(fmt.safe(r.get("last_error") or "-"))[:200])
    wide = out if out.is_terminal else Console(highlight=False, color_system=None, width=max(out.width, 200))
    wide.print(t)


def _opt(v: Any) -> str:
    return "-" if v is None else str(v)


def _state(r: dict[str, Any]) -> str:
    state = r.get("state")
    if state is None and r.get("up") is not None:
        state = "up" if r["up"] else "down"
    colour = {"up": "green", "idle": "", "backing_off": "yellow", "unreachable": "red", "down": "red"}.get(str(state))
    text = escape(fmt.safe(state or "-"))
    return f"[{colour}]{text}[/{colour}]" if colour else text


def _retry(r: dict[str, Any]) -> str:
    v = r.get("next_retry")
    if v is None:
        v = r.get("next_retry_seconds")
        return "-" if not v else f"in {fmt.age(v)}"
    return fmt.until(v) if float(v) > 1e9 else f"in {fmt.age(v)}"  # an epoch time, or seconds from now


def _live(client: NodeClient, strict: bool) -> dict[str, dict[str, Any]] | None:
    """The running node's view of its peers: ``/v1/peers`` (up, failures, last error, back-off) and, from a
    node with the admin API, ``/v1/admin/outbox`` (state, last success, next retry, batch size, rate).
    None when no node answers (an error when ``strict``: the user named the node)."""
    try:
        peers = client.get("/v1/peers").get("peers")
    except PeerError as e:
        if strict:
            raise
        if e.status in (401, 403):
            err.print("[yellow]note:[/yellow] the running node wants an admin token for its peers' health "
                      "(--token T or $SPOOLQ_TOKEN)", highlight=False)
        return None
    rows: dict[str, dict[str, Any]] = {}
    for name, h in (peers if isinstance(peers, dict) else {}).items():
        if isinstance(h, dict):
            rows[str(name)] = {"up": h.get("up"), "failures": h.get("failures"), "last_error": h.get("last_error"),
                               "next_retry_seconds": h.get("backoff_seconds"), "forwarded": h.get("forwarded")}
    try:
        data = client.get("/v1/admin/outbox")
    except NotFound:  # a node older than the admin API
        return rows
    for p in data.get("peers", []) if isinstance(data, dict) else []:
        if isinstance(p, dict) and isinstance(p.get("peer"), str):
            row = rows.setdefault(p["peer"], {})
            for k in ("state", "in_flight", "held", "last_success", "last_error", "next_retry", "batch_size",
                      "rate"):
                if k in p:
                    row[k] = p[k]
    return rows


@outbox.command("relay")
@click.option("--dsn", default=None, envvar="DATABASE_URL", help="PostgreSQL conninfo or URL [env: DATABASE_URL].")
@click.option("--sqlite", "sqlite_path", default=None, type=click.Path(dir_okay=False), help="A SQLite database.")
@click.option("--to", "to", multiple=True, help="Forward to this peer instead of the local inbox (repeatable).")
@click.option("--batch", type=int, default=500, show_default=True, help="Rows per round.")
@click.option("--poll", type=DURATION, default=1.0, show_default=True, help="Poll interval (PostgreSQL also LISTENs).")
@click.option("--no-listen", is_flag=True, help="PostgreSQL: poll only, no LISTEN/NOTIFY.")
@spool_options
def outbox_relay(dsn: str | None, sqlite_path: str | None, to: tuple[str, ...], batch: int, poll: float,
                 no_listen: bool, spool_dir: str | None, durability: str) -> None:
    """Move committed outbox rows into the spool (same ids, exactly once) until SIGTERM/SIGINT."""
    import signal

    if (dsn is None) == (sqlite_path is None):
        raise click.UsageError("give exactly one of --dsn (PostgreSQL) or --sqlite PATH")
    spool = open_spool(spool_dir, durability)
    target = list(to) or None
    if dsn is not None:
        try:
            from ..outbox.postgres import PostgresOutbox
        except ImportError as e:
            raise click.ClickException(f"{e}: install the extra: pip install 'spoolq[postgres]'") from e

        relay = PostgresOutbox(dsn, spool=spool).relay(to=target, batch=batch, poll_interval=poll,
                                                        listen=not no_listen)
    else:
        from ..outbox.sqlite import SQLiteOutbox

        relay = SQLiteOutbox(sqlite_path or "", spool=spool).relay(to=target, batch=batch, poll_interval=poll)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: relay.stop())
    try:
        relay.run()
    finally:
        relay.close()
        spool.close()
