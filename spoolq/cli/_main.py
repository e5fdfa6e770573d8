"""The ``spoolq`` group itself: a click group that turns a SpoolqError into a clear message and exit code."""

from __future__ import annotations

from typing import Any

import click

from ..errors import SpoolqError
from ._common import fail


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
