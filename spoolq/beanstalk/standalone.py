"""``spoolq-beanstalkd``: the entry point, kept lean.

Tools that start ``beanstalkd`` (client test suites set ``BEANSTALKD_PATH``)
connect about 100 ms after starting it. This module binds the listening
socket using only the standard library, before importing the server, SQLite
and asyncio; connections made meanwhile wait in the socket's backlog. It also
keeps the compiled modules even where ``PYTHONDONTWRITEBYTECODE`` is set: in a
source checkout, compiling the spool on every start would cost about 40 ms of
those 100.
"""

from __future__ import annotations

import os
import socket
import sys

from .. import __version__

TYPE_CHECKING = False  # not typing's: importing typing before the bind costs start-up time
if TYPE_CHECKING:
    from typing import Any, Literal

    from ..spool import Spool
    from .early import EarlyAccept

DEFAULT_MAX_JOB_SIZE = (1 << 16) - 1
NO_ATTEMPT_LIMIT = 1 << 62  # beanstalkd tubes have no attempt limit (spoolq's channels default to 20)

USAGE = """\
Use: spoolq-beanstalkd [OPTIONS]

Options:
 -b DIR   spool directory (jobs survive restarts); without it, jobs are kept in memory only
 -f MS    sync at most every MS milliseconds (-f 0: sync every put: durability full); default 50
 -F       never sync (durability normal)
 -l ADDR  listen on address (default 127.0.0.1); unix:PATH for a unix socket
 -p PORT  listen on port (default 11300)
 -z BYTES maximum job size in bytes (default 65535)
 --max-attempts N  bury a job when it is released (or its TTR runs out) for the Nth time;
          default: no limit, as in beanstalkd
 -s, -u, -c, -n   accepted for compatibility and ignored
 -V       increase verbosity
 -v       show version information
 -h       show this help
"""


def _parse_args(argv: list[str]) -> dict[str, Any]:
    opts: dict[str, Any] = {"addr": "127.0.0.1", "port": 11300, "dir": None, "fsync_ms": 50, "never_sync": False,
                            "max_job_size": DEFAULT_MAX_JOB_SIZE, "verbose": 0, "max_attempts": None}
    i = 0

    def value() -> str:
        nonlocal i
        arg = argv[i]
        if len(arg) > 2:
            return arg[2:]
        i += 1
        if i >= len(argv):
            raise SystemExit(f"spoolq-beanstalkd: option {arg} requires an argument\n{USAGE}")
        return argv[i]

    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help"):
            print(USAGE, end="")
            raise SystemExit(0)
        if arg in ("-v", "--version"):
            print(f"beanstalkd 1.13 (spoolq {__version__})")
            raise SystemExit(0)
        flag = arg[:2]
        try:
            if arg.startswith("--max-attempts"):
                flag = "--max-attempts"
                if "=" in arg:
                    opts["max_attempts"] = int(arg.split("=", 1)[1])
                else:
                    i += 1
                    if i >= len(argv):
                        raise SystemExit(f"spoolq-beanstalkd: option {arg} requires an argument\n{USAGE}")
                    opts["max_attempts"] = int(argv[i])
                if opts["max_attempts"] < 1:
                    raise ValueError
            elif flag == "-b":
                opts["dir"] = value()
            elif flag == "-f":
                opts["fsync_ms"] = int(value())
            elif flag == "-F":
                opts["never_sync"] = True
            elif flag == "-l":
                opts["addr"] = value()
            elif flag == "-p":
                opts["port"] = int(value())
            elif flag == "-z":
                opts["max_job_size"] = int(value())
            elif flag in ("-s", "-u", "-c", "-n"):
                if flag in ("-s", "-u"):
                    value()
            elif arg.startswith("-V"):
                opts["verbose"] += arg.count("V")
            else:
                raise SystemExit(f"spoolq-beanstalkd: unknown option {arg}\n{USAGE}")
        except ValueError:
            raise SystemExit(f"spoolq-beanstalkd: bad value for {flag}\n{USAGE}") from None
        i += 1
    if opts["max_job_size"] < 0:
        raise SystemExit("spoolq-beanstalkd: -z must be 0 to 1073741824")
    if opts["max_job_size"] > 1 << 30:  # as beanstalkd: capped, with a warning
        print("spoolq-beanstalkd: maximum job size was set to 1073741824", file=sys.stderr)
        opts["max_job_size"] = 1 << 30
    if not 0 <= opts["port"] <= 65535:  # beanstalkd wraps it around; a port nobody asked for is worse
        raise SystemExit(f"spoolq-beanstalkd: -p must be 0 to 65535, not {opts['port']}")
    if opts["fsync_ms"] < 0:
        raise SystemExit("spoolq-beanstalkd: -f must be >= 0")
    return opts


EXIT_LOCK = 10  # beanstalkd's exit status when it cannot lock its -b directory
_locks: list[Any] = []


def _lock_dir(path: str) -> str | None:
    """Lock the ``-b`` directory for this process, as beanstalkd locks its binlog directory.

    Returns an error message if the directory is missing or another server holds it. The lock
    (``flock`` on ``DIR/lock``) lasts until this process exits, however it exits.
    """
    import fcntl

    try:
        fd = os.open(os.path.join(path, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as e:
        return f"failed to lock spool dir {path}: {e.strerror}"
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return f"failed to lock spool dir {path}: another server uses it"
    _locks.append(fd)
    return None


def bind(addr: str, port: int) -> socket.socket:
    """A bound, listening socket for ``addr`` (``unix:PATH`` or a host) and ``port``."""
    if addr.startswith("unix:"):
        path = addr[5:]
        try:  # no contextlib before the bind: it costs start-up time
            os.unlink(path)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
    else:
        # An ASCII host goes as bytes: a str would load the idna codec, which costs start-up time.
        host: str | bytes = addr.encode("ascii") if addr.isascii() else addr
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, stype, proto, _, sockaddr = infos[0]
        sock = socket.socket(family, stype, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def main(argv: list[str] | None = None) -> int:
    """``spoolq-beanstalkd``: a beanstalkd drop-in that keeps its jobs in a spoolq spool."""
    opts = _parse_args(sys.argv[1:] if argv is None else argv)
    if opts["dir"] is not None:
        err = _lock_dir(opts["dir"])
        if err:
            print(f"spoolq-beanstalkd: {err}", file=sys.stderr)
            return EXIT_LOCK
    # Listen first, before the heavy imports: clients that connect meanwhile wait in the backlog.
    try:
        sock = bind(opts["addr"], opts["port"])
    except OSError as e:
        print(f"spoolq-beanstalkd: cannot listen on {opts['addr']}:{opts['port']}: {e.strerror or e}",
              file=sys.stderr)
        return 1
    sys.dont_write_bytecode = False  # see the module docstring: compiled once, every start is fast
    import signal

    from .early import EarlyAccept  # standard library only: takes connections while the rest loads

    # A drain asked for (SIGUSR1) while starting is not lost, nor taken for the default "terminate".
    signal.signal(signal.SIGUSR1, lambda *_: opts.__setitem__("drain", True))
    return run_standalone(opts, sock, EarlyAccept(sock))


# -- the standalone server ----------------------------------------------------------------------


def run_standalone(opts: dict[str, Any], sock: socket.socket, early: EarlyAccept | None = None) -> int:
    """Run the standalone server on an already listening socket (the heavy imports happen here);
    ``early`` holds the connections taken meanwhile."""
    import asyncio
    import contextlib
    import logging
    import signal

    from .. import _loop
    from ..errors import SpoolqError
    from ..spool import Spool
    from .memory import MemoryStore
    from .server import Server, log

    logging.basicConfig(level=logging.WARNING - 10 * min(2, opts["verbose"]),
                        format="spoolq-beanstalkd: %(levelname)s %(message)s")
    path: str | None
    durability: Literal["full", "normal"]
    sync_ms: int | None
    if opts["dir"] is None:  # beanstalkd without -b: the jobs live in memory only (see .memory)
        path, durability, sync_ms = None, "normal", None
    elif opts["never_sync"]:
        path, durability, sync_ms = opts["dir"], "normal", None
    elif opts["fsync_ms"] == 0:
        path, durability, sync_ms = opts["dir"], "full", None
    else:
        path, durability, sync_ms = opts["dir"], "normal", opts["fsync_ms"]
    max_attempts = opts["max_attempts"] or NO_ATTEMPT_LIMIT
    spool: Spool | None = None
    memory: MemoryStore | None = None
    if path is None:
        memory = MemoryStore(max_attempts)
    else:
        try:
            spool = Spool(path, durability=durability, max_message_size=max(1 << 20, opts["max_job_size"] + 4096),
                          max_attempts=max_attempts)
            spool.jobs.own()  # -b is locked: we own it; jobs reserved when the last server died are ready again
        except SpoolqError as e:
            print(f"spoolq-beanstalkd: {e}", file=sys.stderr)
            for ec in early.finish() if early is not None else ():
                ec.sock.close()
            return 1

    async def run() -> None:
        server = Server(spool, max_job_size=opts["max_job_size"], memory=memory)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)

        def drain() -> None:
            server.draining = True
            log.warning("entering drain mode: puts are refused")

        loop.add_signal_handler(signal.SIGUSR1, drain)
        if opts.get("drain"):
            drain()
        taken = early.finish() if early is not None else []
        await server.listen(sock)
        await server.adopt(taken)
        chores = [asyncio.create_task(_sweeper(spool))] if spool is not None else []
        if sync_ms and spool is not None:
            chores.append(asyncio.create_task(_syncer(spool, sync_ms / 1000.0)))
        log.info("serving the beanstalkd protocol (spool %s, durability %s, event loop %s)", path or "in memory",
                 durability, type(loop).__module__)
        await stop.wait()
        for c in chores:
            c.cancel()
        await server.close()

    try:
        _loop.run(run())
    finally:
        if spool is not None:
            spool.close()
        if opts["addr"].startswith("unix:"):
            with contextlib.suppress(OSError):
                os.unlink(opts["addr"][5:])
    return 0


async def _sweeper(spool: Spool) -> None:
    import asyncio
    import contextlib

    from ..errors import SpoolqError

    while True:
        await asyncio.sleep(5.0)
        with contextlib.suppress(SpoolqError):
            await asyncio.to_thread(spool.sweep)


async def _syncer(spool: Spool, every: float) -> None:
    """beanstalkd's ``-f MS``: under durability normal, sync the spool at most every MS."""
    import asyncio
    import contextlib

    while True:
        await asyncio.sleep(every)
        with contextlib.suppress(OSError):
            await asyncio.to_thread(spool.sync)


