"""``spoolq outbox``: per peer status, and ``outbox relay`` (the transactional outbox)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from ._common import DURATION, READ_ONLY, err, open_spool, out, spool_options


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--token", envvar="SPOOLQ_TOKEN", default=None,
              help="An admin token of the running node, for peer health [env: SPOOLQ_TOKEN].")
@READ_ONLY
@spool_options
@click.pass_context
def outbox(ctx: click.Context, as_json: bool, token: str | None, spool_dir: str | None, durability: str,
           read_only: bool) -> None:
    """Per peer: messages waiting, in flight, dead, the oldest's age, and (from the running node) whether
    it is up, its failures, last error and next retry. Subcommand `relay`: the transactional outbox."""
    if ctx.invoked_subcommand is not None:
        return
    with open_spool(spool_dir, durability, read_only) as spool:
        st = spool.stats()
        path = spool.path
    health = _node_peers(path, token)
    rows = {}
    for name, ps in st.peers.items():
        rows[name] = {"waiting": ps.outbox, "in_flight": ps.in_flight, "dead": ps.dead, "oldest_age": ps.oldest_age}
    for name, h in (health or {}).items():
        rows.setdefault(name, {"waiting": 0, "in_flight": 0, "dead": 0, "oldest_age": None}).update(
            up=h.get("up"), failures=h.get("failures"), last_error=h.get("last_error"),
            next_retry_seconds=h.get("backoff_seconds"), forwarded=h.get("forwarded"))
    if as_json:
        click.echo(json.dumps({"spool": str(path), "node_running": health is not None, "peers": rows}, indent=2))
        return
    t = Table(title=f"outbox of {path}" + ("" if health is not None else "  (no node running: no peer health)"))
    for col in ("peer", "waiting", "in flight", "dead", "oldest age (s)", "up", "failures", "next retry (s)",
                "last error"):
        t.add_column(col, justify="left" if col in ("peer", "last error") else "right")
    for name, r in rows.items():
        t.add_row(name, str(r["waiting"]), str(r["in_flight"]), str(r["dead"]),
                  f"{r['oldest_age']:.1f}" if r["oldest_age"] is not None else "-",
                  "-" if r.get("up") is None else ("yes" if r["up"] else "no"), str(r.get("failures", "-")),
                  f"{r['next_retry_seconds']:.1f}" if r.get("next_retry_seconds") is not None else "-",
                  escape(str(r.get("last_error") or "-"))[:80])
    out.print(t)


def _node_peers(spool_path: Path, token: str | None) -> dict[str, Any] | None:
    """The running node's view of its peers (``/v1/peers``), or None when no node answers."""
    import urllib.error
    import urllib.request

    try:
        info = json.loads((spool_path / "node.json").read_text())
        url = str(info["url"]).rstrip("/") + "/v1/peers"
    except (OSError, ValueError, KeyError, TypeError):
        return None
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            data = json.loads(resp.read())
    except urllib.error.HTTPError as e:
        err.print(f"[yellow]note:[/yellow] the node answered {e.code} for its peers (pass an admin --token)",
                  highlight=False)
        return None
    except (OSError, ValueError):
        return None
    peers = data.get("peers") if isinstance(data, dict) else None
    return peers if isinstance(peers, dict) else None


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
