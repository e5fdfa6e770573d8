"""Standalone STOMP server on a spool: ``spoolq stomp`` and ``python -m spoolq.stomp.main``."""

from __future__ import annotations

import contextlib
import ssl as ssl_mod
import sys

from .. import _loop
from ..node.config import ConfigError, is_loopback, parse_listen
from ..spool import Spool
from .server import Token, serve


def run(spool_dir: str | None, listen: str, *, durability: str = "full", tls_cert: str | None = None,
        tls_key: str | None = None, tokens: list[Token] | None = None,
        heartbeat: tuple[int, int] = (10000, 10000)) -> int:
    host, port = parse_listen(listen, key="--listen")
    if not tokens and not is_loopback(host):
        raise ConfigError(f"--listen: refusing to serve STOMP on {host} without tokens",
                          hint="listen on 127.0.0.1, or run it in a node with [tokens]")
    ctx = None
    if tls_cert:
        ctx = ssl_mod.create_default_context(ssl_mod.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(tls_cert, tls_key)
    spool = Spool(spool_dir, durability=durability)  # type: ignore[arg-type]

    def ready(h: str, p: int) -> None:
        print(f"stomp listening on {h}:{p}", flush=True)

    try:
        with contextlib.suppress(KeyboardInterrupt):
            _loop.run(serve(spool, host, port, ssl=ctx, tokens=tokens or (), ready=ready,
                              heartbeat=heartbeat))
    finally:
        spool.close()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run(sys.argv[1] if len(sys.argv) > 1 else None, sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1:61613"))
