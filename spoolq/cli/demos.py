"""``spoolq demo`` and ``spoolq showcase``: the product shown running for real on this machine."""

from __future__ import annotations

import sys

import click

from ._common import out


@click.command()
@click.option("--local", "local", is_flag=True, help="One spool, many processes, a SIGKILL (no daemons).")
@click.option("--producers", type=int, default=None, help="Producer processes (default 4; --local: 3).")
@click.option("--messages", type=int, default=None, help="Per producer (default 5000; --local: 2000).")
def demo(local: bool, producers: int | None, messages: int | None) -> None:
    """Run the demo for real on this machine.

    Default: two nodes; B is down while A's producers send, then B starts and
    receives every message exactly once. --local: producers and consumers on
    one spool, one consumer killed with SIGKILL, nothing lost.
    """
    from ..demo import run_local, run_network

    if local:
        ok = run_local(producers=producers or 3, messages=messages or 2000, console=out)
    else:
        ok = run_network(producers=producers or 4, messages=messages or 5000, console=out)
    sys.exit(0 if ok else 1)

@click.command()
@click.option("--writes", type=int, default=600, show_default=True,
              help="Total writes (thirds: before, during, after).")
@click.option("--writers", type=int, default=16, show_default=True, help="Concurrent HTTP writers.")
@click.option("--two-hosts", is_flag=True, help="A web node forwarding to a DB node (its daemon is killed too).")
def showcase(writes: int, writers: int, two_hosts: bool) -> None:
    """A site that keeps taking writes while PostgreSQL is down (needs spoolq[showcase],
    PostgreSQL's initdb/pg_ctl and memcached)."""
    try:
        from ..showcase.run import run
    except ImportError as e:
        raise click.ClickException(f"{e}: install the extra: pip install 'spoolq[showcase]'") from e
    sys.exit(0 if run(writes=writes, writers=writers, two_hosts=two_hosts) else 1)
