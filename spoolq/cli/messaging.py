"""Sending, leasing, counting and checking: the everyday commands on a spool directory."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from ..errors import InvalidArgument
from ._common import DURATION, READ_ONLY, body_text, err, open_spool, out, spool_options


@click.command()
@click.argument("channel")
@click.argument("body", required=False)
@click.option("--to", "to", multiple=True, help="Peer name or URL (repeat for copies to several peers).")
@click.option("--priority", type=int, default=1024, show_default=True, help="0 is most urgent.")
@click.option("--delay", type=DURATION, default=0.0, help="Not ready before this long (e.g. 30s, 5m).")
@click.option("--ttl", type=DURATION, default=None, help="Dead-letter if not delivered within this long.")
@click.option("--header", "headers", multiple=True, metavar="NAME=VALUE", help="A header (repeatable).")
@click.option("--id", "message_id", default=None, help="Your own message id, for idempotent retries.")
@spool_options
def send(
    channel: str,
    body: str | None,
    to: tuple[str, ...],
    priority: int,
    delay: float,
    ttl: float | None,
    headers: tuple[str, ...],
    message_id: str | None,
    spool_dir: str | None,
    durability: str,
) -> None:
    """Send BODY (or standard input) to CHANNEL; prints the message id."""
    data = sys.stdin.buffer.read() if body is None or body == "-" else body.encode()
    hdrs: dict[str, str] = {}
    for h in headers:
        name, sep, value = h.partition("=")
        if not sep:
            raise InvalidArgument(f"--header {h!r} is not NAME=VALUE")
        hdrs[name] = value
    with open_spool(spool_dir, durability) as spool:
        mid = spool.send(
            data,
            channel,
            to=list(to) if to else None,
            priority=priority,
            delay=delay,
            ttl=ttl,
            headers=hdrs or None,
            id=message_id,
        )
    click.echo(mid)


@click.command()
@click.argument("channel")
@click.option("--wait", type=DURATION, default=0.0, help="Wait this long for a message (e.g. 5s).")
@click.option("--visibility", type=DURATION, default=30.0, show_default=True, help="Lease length.")
@click.option("--max", "max_", type=int, default=1, show_default=True, help="Lease up to this many.")
@click.option("--no-ack", is_flag=True, help="Leave the lease to expire (the message comes back).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per message.")
@spool_options
def lease(
    channel: str,
    wait: float,
    visibility: float,
    max_: int,
    no_ack: bool,
    as_json: bool,
    spool_dir: str | None,
    durability: str,
) -> None:
    """Lease messages from CHANNEL, print them, and ack them (unless --no-ack).

    Exits with status 3 when no message was ready.
    """
    with open_spool(spool_dir, durability) as spool:
        leases = spool.lease_many(channel, max_, visibility=visibility, wait=wait)
        if not leases:
            err.print(f"no message ready in {channel!r}")
            sys.exit(3)
        for x in leases:
            if as_json:
                rec = {"id": x.id, "channel": x.channel, "priority": x.priority, "attempts": x.attempts,
                       "job": x.job, "headers": x.headers, **body_text(x.body)}
                click.echo(json.dumps(rec))
            else:
                sys.stdout.buffer.write(x.body + b"\n")
        sys.stdout.flush()
        if not no_ack:
            spool.ack_many(leases)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@READ_ONLY
@spool_options
def stats(as_json: bool, spool_dir: str | None, durability: str, read_only: bool) -> None:
    """Messages per channel (ready, delayed, leased, dead) and per peer outbox."""
    with open_spool(spool_dir, durability, read_only) as spool:
        st = spool.stats()
        node = spool.node_id
        path = str(spool.path)
    if as_json:
        click.echo(json.dumps({"node_id": node, "spool": path, **st.as_dict()}, indent=2))
        return
    t = Table(title=f"spool {path}  (node {node})")
    for col in ("channel", "ready", "delayed", "leased", "dead", "oldest age (s)"):
        t.add_column(col, justify="left" if col == "channel" else "right")
    for name, c in st.channels.items():
        t.add_row(name, str(c.ready), str(c.delayed), str(c.leased), str(c.dead),
                  f"{c.oldest_age:.1f}" if c.oldest_age is not None else "-")
    out.print(t)
    if st.peers:
        p = Table(title="outbox")
        for col in ("peer", "waiting", "in flight", "dead", "oldest age (s)"):
            p.add_column(col, justify="left" if col == "peer" else "right")
        for name, ps in st.peers.items():
            p.add_row(name, str(ps.outbox), str(ps.in_flight), str(ps.dead),
                      f"{ps.oldest_age:.1f}" if ps.oldest_age is not None else "-")
        out.print(p)


@click.command()
@click.option("--spool", "spool_dir", envvar="SPOOLQ_SPOOL", type=click.Path(file_okay=False),
              help="Spool directory [env: SPOOLQ_SPOOL].")
def check(spool_dir: str | None) -> None:
    """Check a spool read-only (SQLite's integrity check and spoolq's invariants); exit 1 on a problem."""
    from ..spool import default_spool_path
    from ..store.check import check_spool

    path = Path(spool_dir) if spool_dir else default_spool_path()
    facts, problems = check_spool(path)
    for f in facts:
        out.print(f"{path}: {escape(f)}", highlight=False)
    if problems:
        for p in problems:
            err.print(f"[bold red]problem:[/bold red] {escape(p)}", highlight=False)
        err.print("[yellow]hint:[/yellow] nothing was changed; restore the spool from a backup, or move it aside "
                  "to start an empty one", highlight=False)
        sys.exit(1)
    out.print(f"{path}: ok", highlight=False)
