"""The ``spoolq`` command line: a thin shell over :class:`spoolq.Spool`."""

from __future__ import annotations

import base64
import importlib
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import InvalidArgument, SpoolqError
from .message import DeadLetter
from .spool import Spool

F = TypeVar("F", bound=Callable[..., Any])

err = Console(stderr=True)
out = Console()

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


class Duration(click.ParamType):  # type: ignore[type-arg]
    """Seconds, with an optional unit: 30, 1.5, 250ms, 10s, 5m, 2h, 7d."""

    name = "duration"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        m = _DURATION.match(str(value))
        if not m:
            self.fail(f"{value!r} is not a duration (examples: 30, 1.5, 250ms, 10s, 5m, 2h, 7d)", param, ctx)
        return float(m.group(1)) * _UNITS[m.group(2)]


DURATION = Duration()


READ_ONLY = click.option(
    "--read-only",
    is_flag=True,
    help="Open the spool for inspection only (e.g. on a read-only mount): nothing is created or written.",
)


def spool_options(f: F) -> F:
    f = click.option(
        "--durability",
        type=click.Choice(["full", "normal"]),
        default="full",
        show_default=True,
        help="full: synced before send returns; normal: survives process crashes only.",
    )(f)
    f = click.option(
        "--spool",
        "spool_dir",
        envvar="SPOOLQ_SPOOL",
        type=click.Path(file_okay=False),
        help="Spool directory [env: SPOOLQ_SPOOL; default: ~/.local/share/spoolq].",
    )(f)
    return f


def open_spool(spool_dir: str | None, durability: str = "full", read_only: bool = False) -> Spool:
    return Spool(spool_dir, durability=durability, read_only=read_only)  # type: ignore[arg-type]


def fail(e: SpoolqError) -> None:
    err.print(f"[bold red]error:[/bold red] {escape(e.message)}", highlight=False)
    if e.hint:
        err.print(f"[yellow]hint:[/yellow] {escape(e.hint)}", highlight=False)
    sys.exit(2 if isinstance(e, InvalidArgument) else 1)


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SpoolqError as e:
            fail(e)


@click.group(cls=_Group)
@click.version_option(package_name="spoolq")
def main() -> None:
    """spoolq: a durable store-and-forward message queue.

    Every command works on a spool directory (--spool, or $SPOOLQ_SPOOL).
    """


def _body_text(body: bytes) -> dict[str, str]:
    try:
        return {"body": body.decode("utf-8")}
    except UnicodeDecodeError:
        return {"body_base64": base64.b64encode(body).decode()}


@main.command()
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


@main.command()
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
                       "job": x.job, "headers": x.headers, **_body_text(x.body)}
                click.echo(json.dumps(rec))
            else:
                sys.stdout.buffer.write(x.body + b"\n")
        sys.stdout.flush()
        if not no_ack:
            spool.ack_many(leases)


@main.command()
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


@main.command()
@click.option("--spool", "spool_dir", envvar="SPOOLQ_SPOOL", type=click.Path(file_okay=False),
              help="Spool directory [env: SPOOLQ_SPOOL].")
def check(spool_dir: str | None) -> None:
    """Check a spool read-only (SQLite's integrity check and spoolq's invariants); exit 1 on a problem."""
    from .spool import default_spool_path
    from .store.check import check_spool

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


# -- dead letters ---------------------------------------------------------------------


@main.group()
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
    rec.update(_body_text(d.message.body))
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
        done = spool.retry_dead(dry_run=dry_run, **sel)
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
        n = spool.purge_dead(**sel)
    click.echo(f"purged {n} dead letters")


# -- worker and demo --------------------------------------------------------------------


def load_handler(spec: str) -> Callable[..., Any]:
    module_name, sep, func_name = spec.partition(":")
    if not sep or not module_name or not func_name:
        raise InvalidArgument(f"{spec!r} is not MODULE:FUNCTION", hint="e.g. spoolq worker myapp.tasks:handle")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise InvalidArgument(f"cannot import {module_name!r}: {e}",
                              hint="run from the directory that holds the module, or set PYTHONPATH") from e
    obj: Any = module
    for part in func_name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise InvalidArgument(f"{module_name!r} has no attribute {func_name!r}")
    if not callable(obj):
        raise InvalidArgument(f"{spec} is not callable")
    return obj  # type: ignore[no-any-return]


@main.command()
@click.argument("handler")
@click.option("--channel", "-c", required=True, help="Channel to consume.")
@click.option("--concurrency", "-n", type=int, default=1, show_default=True, help="Handler threads.")
@click.option("--visibility", type=DURATION, default=30.0, show_default=True, help="Lease length.")
@click.option("--grace", type=DURATION, default=30.0, show_default=True,
              help="On SIGTERM/SIGINT, wait this long for running handlers, then release their messages.")
@spool_options
def worker(handler: str, channel: str, concurrency: int, visibility: float, grace: float,
           spool_dir: str | None, durability: str) -> None:
    """Run HANDLER (MODULE:FUNCTION) on every message of a channel.

    The function gets a spoolq.Lease. Returning acks the message; raising
    spoolq.Reject dead-letters it; any other exception retries it later.
    """
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    fn = load_handler(handler)
    with open_spool(spool_dir, durability) as spool:
        w = spool.worker(channel, fn, concurrency=concurrency, visibility=visibility, grace=grace)
        err.print(f"worker: {handler} on {channel!r} x{concurrency} (spool {spool.path}); Ctrl-C to stop")
        w.run()
        err.print(f"worker stopped: {w.processed} acked, {w.failed} failed, {w.rejected} rejected")


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="SPOOLQ_CONFIG",
              help="Node config file (TOML) [env: SPOOLQ_CONFIG].")
@click.option("--spool", "spool_dir", envvar="SPOOLQ_SPOOL", type=click.Path(file_okay=False),
              help="Spool directory (overrides the config) [env: SPOOLQ_SPOOL].")
@click.option("--listen", default=None, help="HOST:PORT to serve on (default 127.0.0.1:7070; port 0: any free).")
@click.option("--tls-cert", type=click.Path(dir_okay=False), default=None, help="Serve HTTPS with this certificate.")
@click.option("--tls-key", type=click.Path(dir_okay=False), default=None, help="... and this private key.")
@click.option("--durability", type=click.Choice(["full", "normal"]), default=None, help="Overrides the config.")
@click.option("--log-json", is_flag=True, default=None, help="Log one JSON object per line.")
@click.option("--beanstalk", default=None, metavar="HOST:PORT",
              help="Also speak the beanstalkd protocol there (loopback, or unix:PATH).")
@click.option("--check-config", is_flag=True,
              help="Only validate the config (and flags): exit 0 when good, else print what is wrong and exit 2.")
def node(config_path: str | None, spool_dir: str | None, listen: str | None, tls_cert: str | None,
         tls_key: str | None, durability: str | None, log_json: bool | None, beanstalk: str | None,
         check_config: bool) -> None:
    """Run the node daemon: forward the outbox to peers, receive their batches, serve the HTTP API.

    SIGTERM/SIGINT stop it gracefully; SIGHUP reloads peers, routes and tokens from --config.
    Under systemd (Type=notify) it reports READY=1 once it serves. The dashboard is at /ui/.
    """
    from .node.config import load_config

    cfg = load_config(config_path, spool=spool_dir, listen=listen, tls_cert=tls_cert, tls_key=tls_key,
                      durability=durability, log_json=log_json or None, beanstalk=beanstalk)
    if check_config:
        where = cfg.source or "no config file (defaults)"
        click.echo(f"config OK: {where}: listen {cfg.listen}, spool {cfg.spool or '(default)'}, "
                   f"{len(cfg.peers)} peers, {len(cfg.routes)} routes, {len(cfg.tokens)} tokens")
        return
    from .node.daemon import run_node

    sys.exit(run_node(cfg))


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def beanstalkd(args: tuple[str, ...]) -> None:
    """Run a standalone beanstalkd-compatible server (takes beanstalkd's flags; -h for them)."""
    from .beanstalk.standalone import main as bs_main

    sys.exit(bs_main(list(args)))


@main.command()
@spool_options
@click.option("--listen", default="127.0.0.1:61613", show_default=True, metavar="HOST:PORT",
              help="Where to serve STOMP (loopback: no login needed).")
@click.option("--tls-cert", default=None, type=click.Path(dir_okay=False), help="TLS certificate (PEM).")
@click.option("--tls-key", default=None, type=click.Path(dir_okay=False), help="TLS private key (PEM).")
@click.option("--heart-beat", "heart_beat", default="10000,10000", show_default=True, metavar="SX,SY",
              help="Server heart-beat offer in ms: can send every SX, wants every SY (0: none).")
def stomp(spool_dir: str | None, durability: str, listen: str, tls_cert: str | None, tls_key: str | None,
          heart_beat: str) -> None:
    """Run a standalone STOMP 1.2 server on the spool (/queue/CHANNEL, /topic/NAME)."""
    from .stomp.main import run

    try:
        try:
            sx, sy = (int(x) for x in heart_beat.split(","))
        except ValueError:
            raise InvalidArgument(f"--heart-beat {heart_beat!r} must be two integers: SX,SY") from None
        sys.exit(run(spool_dir, listen, durability=durability, tls_cert=tls_cert, tls_key=tls_key,
                     heartbeat=(sx, sy)))
    except SpoolqError as e:
        fail(e)


@main.command()
@click.option("--local", "local", is_flag=True, help="One spool, many processes, a SIGKILL (no daemons).")
@click.option("--producers", type=int, default=None, help="Producer processes (default 4; --local: 3).")
@click.option("--messages", type=int, default=None, help="Per producer (default 5000; --local: 2000).")
def demo(local: bool, producers: int | None, messages: int | None) -> None:
    """Run the demo for real on this machine.

    Default: two nodes; B is down while A's producers send, then B starts and
    receives every message exactly once. --local: producers and consumers on
    one spool, one consumer killed with SIGKILL, nothing lost.
    """
    from .demo import run_local, run_network

    if local:
        ok = run_local(producers=producers or 3, messages=messages or 2000, console=out)
    else:
        ok = run_network(producers=producers or 4, messages=messages or 5000, console=out)
    sys.exit(0 if ok else 1)


@main.group(invoke_without_command=True)
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
            from .outbox.postgres import PostgresOutbox
        except ImportError as e:
            raise click.ClickException(f"{e}: install the extra: pip install 'spoolq[postgres]'") from e

        relay = PostgresOutbox(dsn, spool=spool).relay(to=target, batch=batch, poll_interval=poll,
                                                        listen=not no_listen)
    else:
        from .outbox.sqlite import SQLiteOutbox

        relay = SQLiteOutbox(sqlite_path or "", spool=spool).relay(to=target, batch=batch, poll_interval=poll)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: relay.stop())
    try:
        relay.run()
    finally:
        relay.close()
        spool.close()


@main.command()
@click.option("--writes", type=int, default=600, show_default=True,
              help="Total writes (thirds: before, during, after).")
@click.option("--writers", type=int, default=16, show_default=True, help="Concurrent HTTP writers.")
@click.option("--two-hosts", is_flag=True, help="A web node forwarding to a DB node (its daemon is killed too).")
def showcase(writes: int, writers: int, two_hosts: bool) -> None:
    """A site that keeps taking writes while PostgreSQL is down (needs spoolq[showcase],
    PostgreSQL's initdb/pg_ctl and memcached)."""
    try:
        from .showcase.run import run
    except ImportError as e:
        raise click.ClickException(f"{e}: install the extra: pip install 'spoolq[showcase]'") from e
    sys.exit(0 if run(writes=writes, writers=writers, two_hosts=two_hosts) else 1)


if __name__ == "__main__":  # pragma: no cover
    main()
