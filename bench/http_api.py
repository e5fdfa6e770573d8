"""HTTP JSON API benchmark (issue 9): a node's JSON sends against the same server with an empty send handler.

Run it by hand from the repository root, in an environment where spoolq is installed::

    python bench/http_api.py                   # 3 rounds of 5 s each, real and empty interleaved (~1 min)
    python bench/http_api.py --quick           # 1 round of 2 s
    python bench/http_api.py --profile out.txt # also py-spy the real node during one extra run (--idle off)

(Not named ``http.py``: run as a script, that would shadow the standard library's ``http`` package.)

Workload: ``wrk -t1 -c32 -d5s`` with a Lua script POSTing ``{"body": "<100 letters and digits>"}`` as
``application/json`` to ``/v1/channels/bench/messages`` over 32 keep-alive connections (wrk is installed with
``apt-get install -y wrk`` when missing). Two servers, each a fresh process on 127.0.0.1 port 0 with a fresh
spool under /tmp, started for one measurement and stopped with SIGTERM by its PID:

- real: ``python -m spoolq node --config <toml>`` with only ``spool`` and ``listen`` set, so durability and every
  other setting are the node's defaults (the durability is read back from the node's log and printed);
- empty: this file run with ``--serve-empty CONFIG``, the same config: the daemon's own ``_serve`` on the same
  event loop (``spoolq._loop``: uvloop when installed), so the same aiohttp application, connection gate,
  middlewares (metrics, errors, auth) and spool, except that the send route's handler reads the request body and
  answers 201 with a constant JSON body shaped like the real one (``{"id": "<26 characters>"}``) without
  decoding, validating or storing anything.

Printed per server: msg/s (2xx answers per second, from wrk), latency p50/p99 (wrk), the server's CPU time per
request (all its threads, from /proc); then the ratio real/empty of the medians and the target (>= 0.80x), the
same ratio of CPU per request (what a CPU-bound server would reach; steadier than the rates when other
processes share the cores), the messages that landed in the
real node's spool (they must equal the counted answers, plus up to 32 abandoned in flight when wrk stops), and the
load average before and after. ``--profile FILE`` runs one more real-node load with ``py-spy record --format raw``
(sampling the node's pid, idle samples excluded) and prints the functions with the most samples, self and total.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from _common import (
    Installer,
    arg_parser,
    fmt_met,
    fmt_ms,
    fmt_rate,
    fmt_ratio,
    log,
    median,
    spoolq_commit,
    stop_proc,
    tmpdir,
    tool_version,
    version,
)
from network import CHANNEL, HTTP_CONNS, HTTP_PATH, CpuMeter, Load, _inbox_count, wrk_load

TARGET = 0.8
ROUNDS = 3
START_CAP = 30.0
STOP_CAP = 30.0
EMPTY_REPLY = json.dumps({"id": "0" * 26}).encode()


def serve_empty(config_path: str) -> int:
    """The node daemon with the send route's handler replaced by an empty one (same status, same reply shape)."""
    from aiohttp import web

    from spoolq import _loop
    from spoolq.node import api, daemon
    from spoolq.node.config import load_config

    async def empty_send(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=EMPTY_REPLY, status=201, content_type="application/json", charset="utf-8")

    api.post_messages = empty_send  # build_app() looks the handler up when the node starts
    config = load_config(config_path)
    daemon.setup_logging(config.log_json)
    return _loop.run(daemon._serve(config))


class Server:
    """A node process (real or empty) on 127.0.0.1:0 with a fresh spool; its URL comes from ``node.json``."""

    def __init__(self, base: Path, empty: bool) -> None:
        self.spool = base / "spool"
        self.spool.mkdir(parents=True)
        config = base / "node.toml"
        config.write_text(f'[node]\nspool = "{self.spool}"\nlisten = "127.0.0.1:0"\n')
        self.log_path = base / "node.log"
        if empty:
            args = [sys.executable, str(Path(__file__).resolve()), "--serve-empty", str(config)]
        else:
            args = [sys.executable, "-m", "spoolq", "node", "--config", str(config)]
        self._log = open(self.log_path, "ab")  # closed in stop()
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        self.url = ""
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        info = self.spool / "node.json"
        end = time.monotonic() + START_CAP
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}: {self.log_text()[-1000:]}")
            with contextlib.suppress(OSError, ValueError):
                data = json.loads(info.read_text())
                if data.get("pid") == self.pid:
                    self.url = str(data["url"])
                    return
            time.sleep(0.01)
        raise RuntimeError(f"node did not start within {START_CAP:g} s: {self.log_text()[-1000:]}")

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def durability(self) -> str:
        m = re.search(r"durability (\w+)", self.log_text())
        return m.group(1) if m else "?"

    def stop(self) -> None:
        stop_proc(self.proc, STOP_CAP)
        self._log.close()


@dataclass
class Result:
    load: Load
    cpu_us: float  # the server's CPU time per answered request
    landed: int | None  # messages in the spool afterwards (real node only)
    durability: str
    loadavg: float

    def __str__(self) -> str:
        landed = "" if self.landed is None else f", {self.landed:,} landed"
        return (f"{fmt_rate(self.load.rate)} ({self.load.ok:,} ok, {self.load.errors} errors in "
                f"{self.load.seconds:.2f} s; p50 {fmt_ms(self.load.p50_ms)}, p99 {fmt_ms(self.load.p99_ms)}; "
                f"server CPU {self.cpu_us:.0f} us/request{landed}) [load {self.loadavg:.2f}]")


def measure(wrk: str, empty: bool, seconds: int, profile: Path | None = None) -> Result:
    loadavg = os.getloadavg()[0]
    with tmpdir("spoolq-http-") as base:
        server = Server(base, empty)
        try:
            spy = None
            if profile is not None:
                spy = subprocess.Popen(
                    [py_spy(), "record", "--pid", str(server.pid), "--duration", str(seconds), "--rate", "250",
                     "--format", "raw", "--output", str(profile), "--nonblocking"],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                time.sleep(0.5)  # let py-spy attach before the load starts
            meter = CpuMeter({"node": server.pid})
            load = wrk_load(wrk, server.url, seconds, base)
            cpu = meter.stop()
            if spy is not None:
                _out, err = spy.communicate(timeout=60)
                if spy.returncode != 0:
                    log(f"py-spy failed: {err.decode(errors='replace')[-500:]}")
            durability = server.durability()
        finally:
            server.stop()
        landed = None if empty else _inbox_count(server.spool, CHANNEL)
    used = cpu.procs.get("node", 0.0)
    return Result(load, used / max(load.ok, 1) * 1e6, landed, durability, loadavg)


def py_spy() -> str:
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(exe).exists():
        raise RuntimeError("py-spy is not installed: python -m pip install py-spy")
    return exe


def top_of_profile(raw: Path, n: int = 25) -> list[str]:
    """The ``n`` functions with the most samples in a py-spy raw (collapsed stacks) file: self and total."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        k = int(count)
        samples += k
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        own[frames[-1]] += k
        for f in set(frames):
            total[f] += k
    out = [f"{samples} samples (idle excluded); self % / total %, function (file)"]
    for name, k in own.most_common(n):
        out.append(f"  {100 * k / samples:5.1f}% / {100 * total[name] / samples:5.1f}%  {name}")
    out.append("by total:")
    for name, k in total.most_common(n):
        out.append(f"  {100 * own[name] / samples:5.1f}% / {100 * k / samples:5.1f}%  {name}")
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = arg_parser(__doc__)
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s")
    parser.add_argument("--seconds", type=int, default=None, help="seconds of load per measurement (default 5)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 3)")
    parser.add_argument("--profile", metavar="FILE", help="py-spy the real node in one extra run; raw stacks to FILE")
    parser.add_argument("--serve-empty", metavar="CONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_empty:
        return serve_empty(args.serve_empty)
    seconds = args.seconds or (2 if args.quick else 5)
    rounds = args.rounds or (1 if args.quick else ROUNDS)
    wrk = Installer().apt("wrk", "wrk")
    if wrk is None:
        log("wrk is needed: apt-get install -y wrk")
        return 1
    started = time.monotonic()
    load_before = os.getloadavg()
    runs: dict[bool, list[Result]] = {False: [], True: []}
    for r in range(rounds):
        for empty in ((False, True) if r % 2 == 0 else (True, False)):
            res = measure(wrk, empty, seconds)
            runs[empty].append(res)
            log(f"round {r + 1}/{rounds} {'empty' if empty else 'real '}: {res}")
    profile_lines: list[str] = []
    if args.profile:
        res = measure(wrk, False, seconds, Path(args.profile))
        log(f"profiled run (py-spy attached, slower): {res}")
        profile_lines = top_of_profile(Path(args.profile))
    load_after = os.getloadavg()

    def med(empty: bool, f: str) -> float | None:
        vals = [getattr(x.load, f) if f != "cpu_us" else x.cpu_us for x in runs[empty]]
        return median([v for v in vals if v is not None])

    real, base = med(False, "rate"), med(True, "rate")
    ok = None if real is None or not base else real >= TARGET * base
    durability = runs[False][0].durability if runs[False] else "?"
    lines = [
        "## spoolq HTTP JSON API vs the same server with an empty send handler (issue 9)",
        "",
        f"Command: `{' '.join(['python', 'bench/http_api.py', *argv])}`",
        f"Load: wrk -t1 -c{HTTP_CONNS} -d{seconds}s, POST {HTTP_PATH} {{\"body\": 100 chars}}; "
        f"{rounds} round(s), median shown; node durability: {durability} (the default)",
        "",
        "| server | msg/s | p50 | p99 | server CPU/request |",
        "| --- | --- | --- | --- | --- |",
        f"| real node ({durability}) | {fmt_rate(real)} | {fmt_ms(med(False, 'p50_ms'))} | "
        f"{fmt_ms(med(False, 'p99_ms'))} | {med(False, 'cpu_us') or 0:.0f} us |",
        f"| empty send handler | {fmt_rate(base)} | {fmt_ms(med(True, 'p50_ms'))} | "
        f"{fmt_ms(med(True, 'p99_ms'))} | {med(True, 'cpu_us') or 0:.0f} us |",
        "",
        f"Ratio real/empty: {fmt_ratio(real, base)}; target >= {TARGET:.2f}x: {fmt_met(ok)}",
        f"Server CPU per request, empty/real: {fmt_ratio(med(True, 'cpu_us'), med(False, 'cpu_us'))} (the ratio a "
        "CPU-bound server would reach: less noisy than the rates on a shared machine)",
        "",
        "Every round:",
        *[f"- {'empty' if e else 'real'}: {x}" for e in (False, True) for x in runs[e]],
    ]
    bad = [x for x in runs[False] if x.landed is not None and not 0 <= x.landed - x.load.ok <= HTTP_CONNS]
    errors = sum(x.load.errors for xs in runs.values() for x in xs)
    lines.append(f"Landed = counted (+ up to {HTTP_CONNS} abandoned in flight) and no errors: "
                 f"{fmt_met(not bad and errors == 0)}")
    if profile_lines:
        lines += ["", f"py-spy profile of the real node ({args.profile}):", *profile_lines]
    lines += [
        "",
        f"Machine: {os.cpu_count()} cores; Python {sys.version.split()[0]}; aiohttp {version('aiohttp')}; "
        f"uvloop {version('uvloop')}; wrk {tool_version([wrk, '-v'], '?')}; spoolq {spoolq_commit()}",
        f"Load average before: {' '.join(f'{x:.2f}' for x in load_before)}; "
        f"after: {' '.join(f'{x:.2f}' for x in load_after)}; run time {time.monotonic() - started:.0f} s",
    ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
