"""Routes: which channels are forwarded to which peers (first match wins). No I/O.

A failover group is stored as one outbox peer named ``"a|b|c"``: the first of
them that is up gets each batch.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from .errors import InvalidArgument, InvalidType, SpoolqError
from .message import check_channel

__all__ = ["Route", "FAILOVER_SEP", "check_peer", "check_to", "route_peers", "failover_name", "failover_parts"]

FAILOVER_SEP: Final = "|"
MAX_PEER_URL: Final = 2000


@dataclass(frozen=True, slots=True)
class Route:
    """Messages of channels matching ``channels`` (a glob, e.g. ``orders.*``) go to ``to``.

    ``mode`` ``fanout``: each peer gets its own copy. ``failover``: the first
    peer that is up gets it (in order).
    """

    channels: str
    to: tuple[str, ...]
    mode: str = "fanout"


def failover_name(peers: Sequence[str]) -> str:
    return FAILOVER_SEP.join(peers)


def failover_parts(outbox_peer: str) -> list[str]:
    return outbox_peer.split(FAILOVER_SEP)


def route_peers(routes: Sequence[Route], channel: str) -> list[str] | None:
    """The outbox peers a message of ``channel`` goes to by ``routes`` (None: local delivery)."""
    for r in routes:
        if fnmatch.fnmatchcase(channel, r.channels):
            return [failover_name(r.to)] if r.mode == "failover" and len(r.to) > 1 else list(r.to)
    return None


def check_to(to: object) -> list[str] | None:
    """``to=`` of a send: None (local delivery), a peer, or a non-empty list of peers; returns the list."""
    if to is None:
        return None
    if isinstance(to, str):
        peers = [to]
    elif isinstance(to, (list, tuple)):
        peers = list(to)
    else:
        raise InvalidType(
            f"to= must be a peer name or URL (or a list of them), not {type(to).__name__}",
            hint="e.g. to='dc2' or to='http://10.0.0.2:7070'",
        )
    if not peers:
        raise InvalidArgument("to= is an empty list", hint="pass None for local delivery, or peer names")
    for peer in peers:
        check_peer(peer)
    return peers


def check_peer(name: object) -> str:
    """A peer is a configured name (like a channel name) or an http(s) URL."""
    if type(name) is not str:
        raise InvalidType(f"to= must be a peer name or URL, not {type(name).__name__}")
    if FAILOVER_SEP in name:  # a failover group, as routes store it
        for part in name.split(FAILOVER_SEP):
            check_peer(part)
        return name
    if name.startswith(("http://", "https://")):
        if len(name) > MAX_PEER_URL or any(ch.isspace() for ch in name):
            raise InvalidArgument(f"bad peer URL {name[:80]!r}", hint="use http://host:port or https://host:port")
        return name
    try:
        check_channel(name)
    except SpoolqError:
        raise InvalidArgument(
            f"bad peer {name[:80]!r}",
            hint="use a peer name from the node config ([A-Za-z0-9._-]) or a URL like http://host:7070",
        ) from None
    return name
