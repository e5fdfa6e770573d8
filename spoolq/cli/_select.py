"""Which messages an admin command works on: the filters of the HTTP admin API as options, and ids.

Filters (all optional, combined with AND): ``--channel``, ``--peer``, ``--state`` (ready, delayed,
leased, held), ``--older-than`` / ``--newer-than`` (age, e.g. 10m), ``--min-priority`` /
``--max-priority``, ``--header NAME=VALUE`` (exact match). They are checked by the spool (or the
node), which names the bad one; here they only get their types.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..errors import InvalidArgument
from ._common import DURATION

F = TypeVar("F", bound=Callable[..., Any])

STATES = ("ready", "delayed", "leased", "held")
MAX_STDIN_IDS = 1_000_000  # ids read from standard input (one per line)


def filter_options(channel: bool = True) -> Callable[[F], F]:
    """The filter options; ``channel=False`` for a command taking CHANNEL as an argument."""

    def deco(f: F) -> F:
        f = click.option("--header", default=None, metavar="NAME=VALUE",
                         help="Only messages with this header value (exact match).")(f)
        f = click.option("--max-priority", type=click.IntRange(min=0), default=None,
                         help="Only priorities up to this (0 is most urgent).")(f)
        f = click.option("--min-priority", type=click.IntRange(min=0), default=None,
                         help="Only priorities from this on.")(f)
        f = click.option("--newer-than", type=DURATION, default=None, help="Only messages younger than this.")(f)
        f = click.option("--older-than", type=DURATION, default=None, help="Only messages at least this old.")(f)
        f = click.option("--state", type=click.Choice(STATES), default=None, help="Only messages in this state.")(f)
        f = click.option("--peer", default=None, help="Only messages waiting in this peer's outbox.")(f)
        if channel:
            f = click.option("--channel", default=None, help="Only this channel.")(f)
        return f

    return deco


def filters_of(kw: dict[str, Any]) -> dict[str, Any]:
    """Pop the filter options out of a command's keyword arguments, keeping the ones given."""
    names = ("channel", "peer", "state", "older_than", "newer_than", "min_priority", "max_priority", "header")
    got = {k: kw.pop(k, None) for k in names}
    if got["header"] is not None and "=" not in got["header"]:
        raise InvalidArgument(f"--header {got['header']!r} is not NAME=VALUE", hint="e.g. --header tenant=acme")
    return {k: v for k, v in got.items() if v is not None}


def read_ids(ids: tuple[str, ...]) -> list[str]:
    """The ids given as arguments; ``-`` reads more from standard input, one per line (``spoolq ls --json |
    jq -r .id | spoolq hold -``). Duplicates are dropped, the order kept."""
    out: dict[str, None] = {}
    for x in ids:
        if x == "-":
            for n, line in enumerate(sys.stdin):
                if n >= MAX_STDIN_IDS:
                    raise InvalidArgument(f"more than {MAX_STDIN_IDS} ids on standard input",
                                          hint="select them with a filter instead")
                if line.strip():
                    out[line.strip()] = None
        else:
            out[x] = None
    return list(out)
