"""``spoolq ls`` and ``spoolq show``: what is in a queue, without leasing anything (Postfix's ``mailq``).

``ls`` follows the keyset cursor page by page (at most 1,000 messages a page) and prints as it goes,
so its memory stays flat on a million messages; ``--limit`` stops it early and prints the cursor to
go on from (``--after``).
"""

from __future__ import annotations

import base64
import json
import sys
from typing import Any

import click

from ..errors import InvalidArgument, NotFound
from . import _format as fmt
from ._backend import open_backend
from ._common import READ_ONLY, err, out, spool_options
from ._http import node_options
from ._select import filter_options, filters_of

PAGE = 1000
COLUMNS = (("id", 36), ("state", 7), ("pri", 5), ("att", 3), ("age", 7), ("size", 6), ("channel", 16),
           ("peer", 10), ("due", 10), ("preview", 0))


def _line(m: dict[str, Any]) -> str:
    due = m.get("due") if m.get("state") in ("delayed", "held") else m.get("lease_until")
    cells = (m.get("id"), m.get("state"), m.get("priority"), m.get("attempts"), fmt.age(m.get("age")),
             fmt.size(m.get("size")), m.get("channel"), m.get("peer") or "-", fmt.until(due) if due else "-",
             fmt.safe(m.get("preview"))[:48])
    padded = (fmt.safe(c).ljust(w) if w else fmt.safe(c) for c, (_, w) in zip(cells, COLUMNS, strict=True))
    return " ".join(padded).rstrip()


@click.command("ls")
@click.argument("channel", required=False)
@filter_options(channel=False)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Show at most this many [default: all].")
@click.option("--after", default=None, metavar="CURSOR", help="Go on from where a previous ls stopped.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per message (the HTTP API's shape).")
@node_options
@READ_ONLY
@spool_options
def ls(channel: str | None, limit: int | None, after: str | None, as_json: bool, node_url: str | None,
       token: str | None, spool_dir: str | None, durability: str, read_only: bool, **kw: Any) -> None:
    """List messages (of CHANNEL, or every channel) without leasing them: id, state, priority, attempts,
    age, size, due time (or lease end) and the first bytes of the body.

    \b
    Examples:
      spoolq ls orders --state delayed
      spoolq ls --peer dc2 --older-than 1h
      spoolq ls orders --header tenant=acme --json | jq -r .id
    """
    filters = filters_of({**kw, "channel": channel})
    shown = 0
    cursor = after
    head = None if as_json else " ".join(name.upper().ljust(w) if w else name.upper() for name, w in COLUMNS)
    with open_backend(node_url, token, spool_dir, durability, read_only) as backend:
        while True:
            want = PAGE if limit is None else min(PAGE, limit - shown)
            rows, cursor = backend.browse(filters, cursor, want)
            if head is not None:  # once the first page came back: an error is then the only output
                click.echo(click.style(head, bold=True) if out.is_terminal else head)
                head = None
            for m in rows:
                click.echo(json.dumps(m) if as_json else _line(m))
            shown += len(rows)
            if cursor is None or (limit is not None and shown >= limit):
                break
    err.print(f"{shown} message{'' if shown == 1 else 's'}", highlight=False)
    if cursor is not None:
        err.print(f"more: go on with --after {cursor}", highlight=False, soft_wrap=True)


@click.command("show")
@click.argument("message_id")
@click.option("--json", "as_json", is_flag=True, help="The HTTP API's shape: {\"messages\": [...]}.")
@click.option("--raw", is_flag=True, help="Write the body's bytes to standard output, nothing else.")
@node_options
@READ_ONLY
@spool_options
def show(message_id: str, as_json: bool, raw: bool, node_url: str | None, token: str | None,
         spool_dir: str | None, durability: str, read_only: bool) -> None:
    """Show one message: where it is, its headers and its body (pretty JSON when it is JSON).

    A message sent to several peers is one copy per peer: each is shown. Dead letters: spoolq dead show.
    """
    if as_json and raw:
        raise InvalidArgument("--json and --raw do not go together", hint="pick one")
    with open_backend(node_url, token, spool_dir, durability, read_only) as backend:
        try:
            copies = backend.find(message_id.strip())
        except NotFound as e:
            raise NotFound(e.message, hint="it may have been acked or forwarded; a dead letter: spoolq dead show ID"
                           ) from None
    if as_json:
        click.echo(json.dumps({"messages": copies}, indent=2))
        return
    if raw:
        sys.stdout.buffer.write(base64.b64decode(copies[0].get("body_b64") or ""))
        sys.stdout.flush()
        return
    for i, m in enumerate(copies):
        if i:
            click.echo("")
        _show_one(m)


def _show_one(m: dict[str, Any]) -> None:
    s = fmt.safe
    click.echo(f"id         {s(m.get('id'))}")
    where = f"{s(m.get('place'))} of {s(m.get('channel'))}" + (f" -> peer {s(m['peer'])}" if m.get("peer") else "")
    click.echo(f"where      {where}")
    click.echo(f"state      {s(m.get('state'))}")
    click.echo(f"priority   {s(m.get('priority'))}    attempts {s(m.get('attempts'))}")
    click.echo(f"age        {fmt.age(m.get('age'))}    size {fmt.size(m.get('size'))} ({s(m.get('size'))} bytes)")
    if m.get("due") is not None:
        click.echo(f"due        {fmt.when(m['due'])} ({fmt.until(m['due'])})")
    if m.get("lease_until") is not None:
        click.echo(f"leased to  {fmt.when(m['lease_until'])} ({fmt.until(m['lease_until'])})")
    headers = m.get("headers") or {}
    click.echo("headers" + ("" if headers else "    (none)"))
    for k, v in headers.items() if isinstance(headers, dict) else ():
        click.echo(f"  {s(k)}: {s(v)}")
    if m.get("body_json") is not None or (m.get("body_text") or "").strip() == "null":
        click.echo("body (JSON)")
        click.echo(s(json.dumps(m.get("body_json"), indent=2, ensure_ascii=False), keep_newlines=True))
    elif m.get("body_text") is not None:
        click.echo("body (text)")
        click.echo(s(m["body_text"], keep_newlines=True))
    else:
        click.echo("body (binary, base64; --raw writes the bytes)")
        click.echo(s(m.get("body_b64")))
