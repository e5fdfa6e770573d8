"""What every command shares: the consoles, durations, the spool options and the error exit."""

from __future__ import annotations

import base64
import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.markup import escape

from ..errors import InvalidArgument, SpoolqError
from ..spool import Spool

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


def fail(e: SpoolqError) -> NoReturn:
    err.print(f"[bold red]error:[/bold red] {escape(e.message)}", highlight=False)
    if e.hint:
        err.print(f"[yellow]hint:[/yellow] {escape(e.hint)}", highlight=False)
    sys.exit(2 if isinstance(e, InvalidArgument) else 1)


def body_text(body: bytes) -> dict[str, str]:
    """A body for JSON output: text when it is UTF-8, else base64."""
    try:
        return {"body": body.decode("utf-8")}
    except UnicodeDecodeError:
        return {"body_base64": base64.b64encode(body).decode()}
