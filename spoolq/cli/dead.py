"""``spoolq dead``: dead letters listed, shown, retried and purged."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.table import Table

from ..errors import InvalidArgument
from ..message import DeadLetter
from ._backend import WHO
from ._common import DURATION, READ_ONLY, F, body_text, err, open_spool, out, spool_options


@click.group()
def dead() -> None:
    """Dead letters: messages that will not be delivered, with the reason."""


def dead_filters(f: F) -> F:
    f = click.option("--newer-than", type=DURATION, default=None, help="Died less than this long ago.")(f)
    f = click.option("--older-than", type=DURATION, default=None, help="Died at least this long ago.")(f)
    f = click.option("--reason", default=None,
                     help="max_attempts, expired, rejected, buried or corrupt.")(f)
    f = click.option("--channel", default=None, help="Only this channel.")(f)
    return f


def _dead_row(d: DeadLetter) -> dict[str, Any]:
    return d.as_dict()


@dead.command("ls")
@dead_filters
@click.option("--limit", type=int, default=None, help="Show at most this many.")
@click.option("--json", "as_json", is_flag=True)
@READ_ONLY
@spool_options
def dead_ls(channel: str | None, reason: str | None, older_than: float | None, newer_than: float | None,
            limit: int | None, as_json: bool, spool_dir: str | None, durability: str, read_only: bool) -> None:
    """List dead letters, oldest first."""
    with open_spool(spool_dir, durability, read_only) as spool:
        rows = spool.dead_letters(channel=channel, reason=reason, older_than=older_than,
                                  newer_than=newer_than, limit=limit)
    if as_json:
        for d in rows:
            click.echo(json.dumps(_dead_row(d)))
        return
    t = Table(title=f"{len(rows)} dead letters")
    for col in ("id", "channel", "peer", "reason", "attempts", "size", "detail"):
        t.add_column(col)
    for d in rows:
        t.add_row(d.id, d.channel, d.peer or "", d.reason, str(d.message.attempts), str(len(d.message.body)),
                  d.detail)
    out.print(t)


@dead.command("show")
@click.argument("message_id")
@READ_ONLY
@spool_options
def dead_show(message_id: str, spool_dir: str | None, durability: str, read_only: bool) -> None:
    """Show one dead letter, body included."""
    with open_spool(spool_dir, durability, read_only) as spool:
        d = spool.dead_letter(message_id)
    rec = _dead_row(d)
    rec["headers"] = d.message.headers
    rec.update(body_text(d.message.body))
    click.echo(json.dumps(rec, indent=2))


def _selection(ids: tuple[str, ...], all_: bool, channel: str | None, reason: str | None,
               older_than: float | None, newer_than: float | None) -> dict[str, Any]:
    if not ids and not all_ and channel is None and reason is None and older_than is None and newer_than is None:
        raise InvalidArgument("no dead letters selected",
                              hint="name ids, or use --channel/--reason/--older-than/--newer-than, or --all")
    return {"ids": list(ids) or None, "channel": channel, "reason": reason,
            "older_than": older_than, "newer_than": newer_than}


@dead.command("retry")
@click.argument("ids", nargs=-1)
@dead_filters
@click.option("--all", "all_", is_flag=True, help="Every dead letter.")
@click.option("--dry-run", is_flag=True, help="Show what would be retried; change nothing.")
@spool_options
def dead_retry(ids: tuple[str, ...], channel: str | None, reason: str | None, older_than: float | None,
               newer_than: float | None, all_: bool, dry_run: bool, spool_dir: str | None, durability: str) -> None:
    """Make dead letters ready again (attempts reset), or re-queue them for their peer."""
    sel = _selection(ids, all_, channel, reason, older_than, newer_than)
    with open_spool(spool_dir, durability) as spool:
        done = spool.retry_dead(dry_run=dry_run, who=WHO, **sel)
    verb = "would retry" if dry_run else "retried"
    for d in done:
        click.echo(f"{verb} {d.id} ({d.channel}{' -> ' + d.peer if d.peer else ''}, {d.reason})")
    err.print(f"{verb} {len(done)} dead letters")


@dead.command("purge")
@click.argument("ids", nargs=-1)
@dead_filters
@click.option("--all", "all_", is_flag=True, help="Every dead letter.")
@click.option("--dry-run", is_flag=True, help="Count what would be purged; change nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@spool_options
def dead_purge(ids: tuple[str, ...], channel: str | None, reason: str | None, older_than: float | None,
               newer_than: float | None, all_: bool, dry_run: bool, yes: bool, spool_dir: str | None,
               durability: str) -> None:
    """Delete dead letters for good."""
    sel = _selection(ids, all_, channel, reason, older_than, newer_than)
    with open_spool(spool_dir, durability) as spool:
        n = spool.purge_dead(dry_run=True, **sel)
        if dry_run:
            click.echo(f"would purge {n} dead letters")
            return
        if n and not yes and not click.confirm(f"purge {n} dead letters for good?"):
            sys.exit(1)
        n = spool.purge_dead(who=WHO, **sel)
    click.echo(f"purged {n} dead letters")
