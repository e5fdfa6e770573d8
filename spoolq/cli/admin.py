"""Acting on stored messages: hold, release, requeue, delete (Postfix's ``postsuper -h/-H/-r/-d``),
``flush`` (``postqueue -f``) and the ``audit`` of what was done.

Every action first counts what it would do (a dry run), prints that count, and with ``--dry-run``
stops there. ``delete`` asks for a confirmation on a terminal (``--yes`` skips it). Long actions show
a progress bar on a terminal and nothing in scripts: by id in chunks (10,000 ids per call to the
spool, 1,000 per HTTP request), by filter page by page as the spool (or the node) works through it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..errors import InvalidArgument
from ..spool import default_spool_path
from . import _format as fmt
from ._backend import Backend, NodeBackend, node_of_spool, open_backend
from ._common import err, out, spool_options
from ._http import NodeClient, node_options
from ._select import filter_options, filters_of, read_ids

LOCAL_ID_CHUNK = 10_000  # the spool's limit of ids per call (one audit entry each)
NODE_ID_CHUNK = 1_000  # ids per HTTP request

PAST = {"hold": "held", "release": "released", "requeue": "requeued", "delete": "deleted"}
HELP = {
    "hold": "Hold messages (Postfix postsuper -h): neither leased nor forwarded until released. Leased "
            "messages are skipped.",
    "release": "Release held messages (postsuper -H): back exactly where they were (ready, delayed until "
               "their due time, or in their peer's outbox).",
    "requeue": "Make delayed or held messages ready now (postsuper -r).",
    "delete": "Delete messages for good (postsuper -d); leased ones are skipped. Asks first on a terminal.",
}


def _progress(total: int, what: str) -> Progress | None:
    if not err.is_terminal or total <= 0:
        return None
    return Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err,
                    transient=True)


def _run(backend: Backend, action: str, ids: list[str] | None, filters: dict[str, Any] | None, dry_run: bool,
         total: int, label: str) -> tuple[int, int]:
    """Do (or count) the action, in chunks, with a progress bar on a terminal; returns (matched, changed)."""
    bar = None if dry_run else _progress(total, label)
    task = bar.add_task(label, total=total) if bar is not None else None

    def tick(done: int) -> None:
        if bar is not None and task is not None:
            bar.update(task, completed=min(done, total))

    matched = changed = 0
    try:
        if bar is not None:
            bar.start()
        if ids is None:
            return backend.act(action, None, filters, dry_run, lambda m, _c: tick(m))
        chunk = NODE_ID_CHUNK if isinstance(backend, NodeBackend) else LOCAL_ID_CHUNK
        for i in range(0, len(ids), chunk):
            base = matched

            def step(m: int, _c: int, base: int = base) -> None:
                tick(base + m)

            m, c = backend.act(action, ids[i:i + chunk], None, dry_run, step)
            matched, changed = matched + m, changed + c
            tick(matched)
        return matched, changed
    finally:
        if bar is not None:
            bar.stop()


def _action(action: str) -> click.Command:
    @click.command(action, help=HELP[action] + """

    Pick messages by IDS (`-`: more ids on standard input, one a line), by filters, or --all.
    The count comes first; --dry-run stops there.""")
    @click.argument("ids", nargs=-1)
    @filter_options()
    @click.option("--all", "all_", is_flag=True, help="Every message (in the action's scope).")
    @click.option("--dry-run", is_flag=True, help="Count what would be done; change nothing.")
    @click.option("--yes", "-y", is_flag=True, help="Do not ask for a confirmation.")
    @click.option("--json", "as_json", is_flag=True, help='{"action","matched","changed","dry_run"}.')
    @node_options
    @spool_options
    def command(ids: tuple[str, ...], all_: bool, dry_run: bool, yes: bool, as_json: bool, node_url: str | None,
                token: str | None, spool_dir: str | None, durability: str, **kw: Any) -> None:
        filters = filters_of(kw)
        chosen = read_ids(ids) if ids else None
        if chosen is not None and (filters or all_):
            raise InvalidArgument("give message ids or filters (--all), not both")
        if chosen is None and not filters and not all_:
            raise InvalidArgument(f"no messages selected to {action}",
                                  hint="name ids (or - to read them from standard input), use filters such as "
                                       "--channel/--state/--older-than, or --all")
        if chosen is not None and not chosen:
            raise InvalidArgument("no ids on standard input", hint="one message id a line")
        sel = None if chosen is not None else filters
        with open_backend(node_url, token, spool_dir, durability) as backend:
            matched, would = _run(backend, action, chosen, sel, True, 0, "")
            skipped = matched - would
            count = (f"{'would ' + action if dry_run else action}: {would} of {matched} matched message"
                     f"{'' if matched == 1 else 's'}"
                     + (f" ({skipped} not in a state to {action}: leased, or already so)" if skipped else ""))
            if dry_run:
                click.echo(json.dumps({"action": action, "matched": matched, "changed": would, "dry_run": True})
                           if as_json else count)
                return
            if not as_json:
                err.print(count, highlight=False)
            if (action == "delete" and would and not yes and sys.stdin.isatty()
                    and not click.confirm(f"delete {would} messages for good?", err=True)):
                err.print("nothing deleted")
                sys.exit(1)
            matched, changed = _run(backend, action, chosen, sel, False, matched, PAST[action])
        if as_json:
            click.echo(json.dumps({"action": action, "matched": matched, "changed": changed, "dry_run": False}))
        else:
            click.echo(f"{PAST[action]} {changed} message{'' if changed == 1 else 's'}"
                       + (f" ({matched - changed} of the {matched} matched left as they were)"
                          if matched != changed else ""))

    return command


hold = _action("hold")
release = _action("release")
requeue = _action("requeue")
delete = _action("delete")


@click.command()
@click.argument("peer", required=False)
@click.option("--json", "as_json", is_flag=True, help='{"flushed": [peer names]}.')
@node_options
@spool_options
def flush(peer: str | None, as_json: bool, node_url: str | None, token: str | None, spool_dir: str | None,
          durability: str) -> None:
    """Forward now: retry PEER (or every peer) at once, forgetting its back-off (Postfix postqueue -f).

    Needs the running node (the one on --spool, or --node URL).
    """
    if node_url:
        client = NodeClient(node_url, token)
    else:
        client = node_of_spool(Path(spool_dir) if spool_dir else default_spool_path(), token, "flush")
    data = client.post("/v1/admin/flush", {"peer": peer} if peer else {})
    names = data.get("flushed") if isinstance(data, dict) else None
    names = [str(x) for x in names] if isinstance(names, list) else []
    if as_json:
        click.echo(json.dumps({"flushed": names}))
    elif names:
        click.echo("flushed " + ", ".join(fmt.safe(n) for n in names))
    else:
        click.echo("no peer to flush")


@click.command()
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True,
              help="The newest this many entries.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per entry.")
@node_options
@spool_options
def audit(limit: int, as_json: bool, node_url: str | None, token: str | None, spool_dir: str | None,
          durability: str) -> None:
    """Who did what to how many messages, newest first (holds, releases, requeues, deletes, dead letter
    retries and purges; by the CLI, a token's name, or "local")."""
    with open_backend(node_url, token, spool_dir, durability, read_only=True) as backend:
        entries = backend.audit_log(limit)
    if as_json:
        for e in entries:
            click.echo(json.dumps(e))
        return
    _audit_table(entries)


def _audit_table(entries: Sequence[dict[str, Any]]) -> None:
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=f"{len(entries)} audit entries (newest first)", title_justify="left")
    for col in ("when", "who", "action", "count", "target", "detail"):
        t.add_column(col, justify="right" if col == "count" else "left")
    for e in entries:
        t.add_row(fmt.when(e.get("at")), escape(fmt.safe(e.get("who"))), escape(fmt.safe(e.get("action"))),
                  str(e.get("count")), escape(fmt.safe(e.get("target"))), escape(fmt.safe(e.get("detail"))))
    out.print(t)
