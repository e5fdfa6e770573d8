"""Tube names and the channels that hold their jobs (pure functions, no I/O)."""

from __future__ import annotations

from typing import Final

from ..message import CHANNEL_RE

__all__ = ["NAME_MAX", "channel_tube", "tube_channel", "unwatch", "valid_tube"]

NAME_MAX: Final = 200
NAME_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-+/;.$_()")
ESCAPE_PREFIX: Final = "bt_"


def valid_tube(name: str) -> bool:
    """Whether beanstalkd accepts ``name`` as a tube name."""
    return 0 < len(name) <= NAME_MAX and name[0] != "-" and all(c in NAME_CHARS for c in name)


def tube_channel(tube: str) -> str | None:
    """The channel holding a tube's jobs, or ``None`` if it cannot be named.

    Tube names that are channel names are used as they are. Others (with
    ``+ / ; $ ( )``) become ``bt_`` followed by the name with each such
    character written ``_XX`` (hex); a plain channel whose name looks like
    that would be shown as the decoded tube.
    """
    if CHANNEL_RE.fullmatch(tube):
        return tube
    out = ESCAPE_PREFIX + "".join(c if c.isalnum() or c in ".-" else f"_{ord(c):02x}" for c in tube)
    return out if len(out) <= NAME_MAX else None


def channel_tube(channel: str) -> str:
    """The tube name a channel is shown as (the inverse of :func:`tube_channel`)."""
    if not channel.startswith(ESCAPE_PREFIX):
        return channel
    rest = channel[len(ESCAPE_PREFIX):]
    out = []
    i = 0
    try:
        while i < len(rest):
            if rest[i] == "_":
                out.append(chr(int(rest[i + 1:i + 3], 16)))
                i += 3
            else:
                out.append(rest[i])
                i += 1
    except ValueError:
        return channel
    tube = "".join(out)
    # only what tube_channel would have made decodes; anything else is a plain channel name
    return tube if valid_tube(tube) and tube_channel(tube) == channel else channel


def unwatch(watch: list[str], tube: str) -> None:
    """Take ``tube`` out of a connection's watch list as beanstalkd does: the last tube watched takes
    its place (``list-tubes-watched`` shows that order)."""
    i = watch.index(tube)
    last = watch.pop()
    if i < len(watch):
        watch[i] = last
