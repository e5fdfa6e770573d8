"""``spoolq dead``: dead letters listed, shown, retried and purged (on a spool directory, or a node with
``--node URL --token T`` through ``/v1/dead``). Retries and purges are audited (``cli`` on a spool
directory, the token's name on a node)."""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import click
from rich.markup import escape
from rich.table import Table

from ..errors import InvalidArgument, PeerError
from ..message import DeadLetter
from . import _format as fmt
from ._backend import WHO
from ._common import DURATION, READ_ONLY, F, body_text, err, open_spool, out, spool_options
from ._http import NodeClient, node_options


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


def _filters(channel: str | None, reason: str | None, older_than: float | None,
             newer_than: float | None) -> dict[str, Any]:
    got = {"channel": channel, "reason": reason, "older_than": older_than, "newer_than": newer_than}
    return {k: v for k, v in got.items() if v is not None}


@dead.command("ls")
@dead_filters
@click.option("--limit", type=click.IntRange(min=0), default=None, help="Show at most this many.")
@click.option("--json", "as_json", is_flag=True)
@node_options
@READ_ONLY
@spool_options
def dead_ls(channel: str | None, reason: str | None, older_than: float | None, newer_than: float | None,
            limit: int | None, as_json: bool, node_url: str | None, token: str | None, spool_dir: str | None,
            durability: str, read_only: bool) -> None:
    """List dead letters, oldest first (of the spool directory, or of --node URL)."""
    filters = _filters(channel, reason, older_than, newer_than)
    if node_url:
        data = NodeClient(node_url, token).get("/v1/dead", {**filters, "limit": limit})
        rows = [x for x in data.get("dead", []) if isinstance(x, dict)] if isinstance(data, dict) else []
    else:
        with open_spool(spool_dir, durability, read_only) as spool:
            rows = [_dead_row(d) for d in spool.dead_letters(**filters, limit=limit)]
    if as_json:
        for r in rows:
            click.echo(json.dumps(r))
        return
    t = Table(title=f"{len(rows)} dead letters")
    for col in ("id", "channel", "peer", "reason", "attempts", "size", "detail"):
        t.add_column(col)
    for r in rows:
        t.add_row(*(escape(fmt.safe(r.get(k) if r.get(k) is not None else "")) for k in
                    ("id", "channel", "peer", "reason", "attempts", "size", "detail")))
    out.print(t)


@dead.command("show")
@click.argument("message_id")
@node_options
@READ_ONLY
@spool_options
def dead_show(message_id: str, node_url: str | None, token: str | None, spool_dir: str | None, durability: str,
              read_only: bool) -> None:
    """Show one dead letter, body included (JSON)."""
    if node_url:
        rec = NodeClient(node_url, token).get("/v1/dead/" + quote(message_id.strip(), safe=""))
        if not isinstance(rec, dict):
            raise PeerError("the node's dead letter is not a JSON object")
        try:
            body = base64.b64decode(str(rec.pop("body_base64", "")), validate=True)
        except ValueError as e:
            raise PeerError("the node's dead letter has a body that is not base64") from e
        rec.update(body_text(body))
    else:
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


def _http_selection(sel: dict[str, Any], all_: bool, dry_run: bool) -> dict[str, Any]:
    body = {k: v for k, v in sel.items() if v is not None}
    if all_:
        body["all"] = True
    return {**body, "dry_run": dry_run}


@dead.command("retry")
@click.argument("ids", nargs=-1)
@dead_filters
@click.option("--all", "all_", is_flag=True, help="Every dead letter.")
@click.option("--dry-run", is_flag=True, help="Show what would be retried; change nothing.")
@click.option("--json", "as_json", is_flag=True, help='{"retried": [ids], "dry_run": ...} (the HTTP API\'s shape).')
@node_options
@spool_options
def dead_retry(ids: tuple[str, ...], channel: str | None, reason: str | None, older_than: float | None,
               newer_than: float | None, all_: bool, dry_run: bool, as_json: bool, node_url: str | None,
               token: str | None, spool_dir: str | None, durability: str) -> None:
    """Make dead letters ready again (attempts reset), or re-queue them for their peer. Audited."""
    sel = _selection(ids, all_, channel, reason, older_than, newer_than)
    verb = "would retry" if dry_run else "retried"
    if node_url:
        data = NodeClient(node_url, token).post("/v1/dead/retry", _http_selection(sel, all_, dry_run))
        done = [str(x) for x in data.get("retried", [])] if isinstance(data, dict) else []
        if as_json:
            click.echo(json.dumps({"retried": done, "dry_run": dry_run}))
            return
        for mid in done:
            click.echo(f"{verb} {fmt.safe(mid)}")
        err.print(f"{verb} {len(done)} dead letters")
        return
    with open_spool(spool_dir, durability) as spool:
        letters = spool.retry_dead(dry_run=dry_run, who=WHO, **sel)
    if as_json:
        click.echo(json.dumps({"retried": [d.id for d in letters], "dry_run": dry_run}))
        return
    for d in letters:
        click.echo(f"{verb} {d.id} ({d.channel}{' -> ' + d.peer if d.peer else ''}, {d.reason})")
    err.print(f"{verb} {len(letters)} dead letters")


@dead.command("purge")
@click.argument("ids", nargs=-1)
@dead_filters
@click.option("--all", "all_", is_flag=True, help="Every dead letter.")
@click.option("--dry-run", is_flag=True, help="Count what would be purged; change nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help='{"purged": n, "dry_run": ...} (the HTTP API\'s shape).')
@node_options
@spool_options
def dead_purge(ids: tuple[str, ...], channel: str | None, reason: str | None, older_than: float | None,
               newer_than: float | None, all_: bool, dry_run: bool, yes: bool, as_json: bool, node_url: str | None,
               token: str | None, spool_dir: str | None, durability: str) -> None:
    """Delete dead letters for good. Audited."""
    sel = _selection(ids, all_, channel, reason, older_than, newer_than)
    if node_url:
        client = NodeClient(node_url, token)

        def purge(dry: bool) -> int:
            data = client.post("/v1/dead/purge", _http_selection(sel, all_, dry))
            return int(data.get("purged", 0)) if isinstance(data, dict) else 0

        _purge(purge, dry_run, yes, as_json)
        return
    with open_spool(spool_dir, durability) as spool:
        _purge(lambda dry: spool.purge_dead(dry_run=dry, who=None if dry else WHO, **sel), dry_run, yes, as_json)


def _purge(purge: Callable[[bool], int], dry_run: bool, yes: bool, as_json: bool) -> None:
    """Count, then (unless a dry run) confirm and purge."""
    n = purge(True)
    if not dry_run:
        if n and not yes and not click.confirm(f"purge {n} dead letters for good?", err=as_json):
            sys.exit(1)
        n = purge(False)
    if as_json:
        click.echo(json.dumps({"purged": n, "dry_run": dry_run}))
    else:
        click.echo(f"{'would purge' if dry_run else 'purged'} {n} dead letters")
