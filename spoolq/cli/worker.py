"""``spoolq worker``: run a user's handler function on every message of a channel."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from ..errors import InvalidArgument
from ._common import DURATION, err, open_spool, spool_options


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


@click.command()
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
