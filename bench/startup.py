"""Start-up benchmark: how soon ``spoolq-beanstalkd`` answers after exec, against real beanstalkd, in one run.

Client test suites (greenstalk's) start the server and connect 0.1 s later without retrying, so the time
from exec to a listening socket, and to the first reply, decides whether they pass on a busy machine.

Run it by hand from the repository root, in an environment where spoolq is installed::

    python bench/startup.py            # 30 starts of each server, interleaved
    python bench/startup.py --runs 10

For every start: exec -> the socket accepts a connection (polled every 0.5 ms), exec -> the reply to
``list-tube-used`` (sent as soon as the connection is made, so a server still importing answers late), and
the server's CPU seconds at that moment (/proc/<pid>/stat). Variants: TCP, a unix socket (``-l unix:PATH``)
and a durable spool (``-b DIR -f 0``). beanstalkd is Debian's (installed with apt-get when missing, as root).
Figures are medians and maxima in ms; the ratio column is spoolq / beanstalkd, measured in the same run.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    Installer,
    arg_parser,
    free_port,
    log,
    machine_facts,
    median,
    proc_cpu_seconds,
    stop_proc,
    which,
)

VARIANTS = ("tcp", "unix", "durable")


def one_start(exe: str, variant: str, scratch: Path) -> tuple[float, float, float | None]:
    """(ms to accept, ms to first reply, CPU ms at the first reply) of one start of ``exe``."""
    args = [exe]
    port = free_port()
    if variant == "unix":
        path = str(scratch / f"s{time.monotonic_ns()}.sock")
        args += ["-l", f"unix:{path}"]
        addr: object = path
        family = socket.AF_UNIX
    else:
        args += ["-l", "127.0.0.1", "-p", str(port)]
        addr, family = ("127.0.0.1", port), socket.AF_INET
    if variant == "durable":
        wal = scratch / f"b{time.monotonic_ns()}"
        wal.mkdir()
        args += ["-b", str(wal), "-f", "0"]
    t0 = time.monotonic()
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = t0 + 20
        while True:
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.connect(addr)  # type: ignore[arg-type]
                break
            except OSError:
                sock.close()
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"{exe} ({variant}) did not listen within 20 s") from None
                time.sleep(0.0005)
        t1 = time.monotonic()
        sock.settimeout(20)
        sock.sendall(b"list-tube-used\r\n")
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(4096)
            if not chunk:
                raise RuntimeError(f"{exe} ({variant}) closed the connection")
            reply += chunk
        t2 = time.monotonic()
        cpu = proc_cpu_seconds(proc.pid)
        sock.close()
        return (t1 - t0) * 1000, (t2 - t0) * 1000, None if cpu is None else cpu * 1000
    finally:
        stop_proc(proc, 10, exe)


def main(argv: list[str]) -> int:
    parser = arg_parser(__doc__)
    parser.add_argument("--runs", type=int, default=30, help="starts of each server per variant (default 30)")
    opts = parser.parse_args(argv)
    runs = max(1, min(opts.runs, 1000))
    spoolq = which("spoolq-beanstalkd") or str(Path(sys.executable).parent / "spoolq-beanstalkd")
    beanstalkd = Installer().apt("beanstalkd", "beanstalkd")
    if not os.access(spoolq, os.X_OK) or beanstalkd is None:
        print("needs spoolq-beanstalkd (pip install -e .) and beanstalkd (apt-get install beanstalkd)", file=sys.stderr)
        return 2
    started = time.monotonic()
    load0 = os.getloadavg()
    figures: dict[tuple[str, str], list[tuple[float, float, float | None]]] = {}
    with tempfile.TemporaryDirectory(prefix="spoolq-startup-", dir="/tmp") as tmp:
        scratch = Path(tmp)
        for i in range(runs):  # interleaved, so both servers see the same load
            for variant in VARIANTS:
                for name, exe in (("spoolq", spoolq), ("beanstalkd", beanstalkd)):
                    figures.setdefault((name, variant), []).append(one_start(exe, variant, scratch))
            if i % 10 == 9:
                log(f"{i + 1} of {runs} rounds")

    def stat(name: str, variant: str, k: int) -> tuple[float | None, float | None]:
        xs = [x for f in figures[(name, variant)] if (x := f[k]) is not None]
        return median(xs), (max(xs) if xs else None)

    def ms(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.1f}"

    print("| variant | figure | spoolq p50 / max (ms) | beanstalkd p50 / max (ms) | p50 ratio |")
    print("|---|---|---|---|---|")
    for variant in VARIANTS:
        for k, what in ((0, "exec -> accepts"), (1, "exec -> first reply"), (2, "server CPU at first reply")):
            s50, smax = stat("spoolq", variant, k)
            b50, bmax = stat("beanstalkd", variant, k)
            ratio = "n/a" if s50 is None or not b50 else f"{s50 / b50:.1f}x"
            print(f"| {variant} | {what} | {ms(s50)} / {ms(smax)} | {ms(b50)} / {ms(bmax)} | {ratio} |")
    late = sum(1 for f in figures[("spoolq", "tcp")] + figures[("spoolq", "unix")] if f[0] > 100)
    print(f"\nspoolq starts not accepting within 100 ms (greenstalk's grace): {late} of {2 * runs}")
    for fact in machine_facts(load0):
        print(fact)
    print(f"runs: {runs} per server and variant; total {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
