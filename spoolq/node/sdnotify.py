"""systemd's readiness protocol (sd_notify): one datagram to the unix socket named by ``$NOTIFY_SOCKET``.

A unit with ``Type=notify`` starts the daemon with ``NOTIFY_SOCKET`` set; the daemon sends
``READY=1`` once it serves, ``STOPPING=1`` when it begins to stop (see sd_notify(3)). Without the
variable this does nothing, so the node runs the same outside systemd. A name starting with ``@``
is in Linux's abstract namespace.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

__all__ = ["notify"]

log = logging.getLogger("spoolq.node")


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (``KEY=value`` lines) to the service manager. Returns whether it was sent;
    a failure is logged, never raised (the node serves either way)."""
    addr = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    elif not addr.startswith("/"):
        log.warning("NOTIFY_SOCKET=%r is not a unix socket path: not telling systemd %s", addr[:100], state[:40])
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall(state.encode())
    except OSError as e:
        log.warning("cannot notify systemd at %s: %s", addr.lstrip("\0")[:100], e)
        return False
    return True
