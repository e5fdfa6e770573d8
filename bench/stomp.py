"""STOMP benchmark: ``spoolq stomp`` against RabbitMQ's STOMP plugin, on this machine, in one run.

Run it by hand from the repository root, in an environment where spoolq is installed::

    python bench/stomp.py                  # 2000 messages per row
    python bench/stomp.py --messages 500   # quicker
    python bench/stomp.py --compare        # answers to frames where the spec is vague, side by side

Rows: durable sends (every SEND carries ``receipt`` and ``persistent:true``; the client waits for the
RECEIPT before the next SEND) and consumes (``ack:client-individual``, prefetch 100, one ACK per
message), each with 1 client and with 8 client processes. Both servers get the same raw-socket client
(``spoolq.stomp.wire``), 100-byte bodies, destination ``/queue/bench``.

Servers, each on 127.0.0.1 free ports in its own temporary directory, stopped by PID afterwards:

- spoolq: ``python -m spoolq stomp --spool DIR --listen 127.0.0.1:PORT`` (durability ``full``: every
  receipted SEND is synced to disk first).
- RabbitMQ (Debian ``rabbitmq-server``): a private node (``RABBITMQ_NODENAME=spoolqbench<pid>@localhost``,
  its own mnesia/log/config/enabled-plugins files and epmd port), ``rabbitmq_stomp`` enabled offline,
  STOMP listener ``stomp.listeners.tcp.1``. ``/queue/bench`` there is a durable classic queue and
  ``persistent:true`` messages are confirmed after they reach disk.

Prints a Markdown table with messages/s for both and the ratio spoolq / RabbitMQ.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from spoolq.stomp.wire import Frame, Parser, encode

SERVER_COMMANDS = frozenset({"CONNECTED", "MESSAGE", "RECEIPT", "ERROR"})
BODY = os.urandom(50).hex().encode()  # 100 bytes
DEST = "/queue/bench"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, cap: float = 60.0) -> None:
    end = time.monotonic() + cap
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {cap:g} s")


# -- a small blocking client ------------------------------------------------------------------


class Client:
    def __init__(self, port: int, vhost: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.parser = Parser(commands=SERVER_COMMANDS, max_frame_size=1 << 24)
        self.frames: list[Frame] = []
        self.send(Frame("CONNECT", (("accept-version", "1.2"), ("host", vhost), ("login", "guest"),
                                    ("passcode", "guest"), ("heart-beat", "0,0"))))
        f = self.frame()
        if f.command != "CONNECTED":
            raise RuntimeError(f"CONNECT failed: {f}")

    def send(self, f: Frame) -> None:
        self.sock.sendall(encode(f))

    def frame(self) -> Frame:
        while not self.frames:
            data = self.sock.recv(1 << 16)
            if not data:
                raise RuntimeError("server closed the connection")
            self.frames += [e for e in self.parser.feed(data) if isinstance(e, Frame)]
        f = self.frames.pop(0)
        if f.command == "ERROR":
            raise RuntimeError(f"ERROR {f.get('message')}: {f.body[:200]!r}")
        return f

    def close(self) -> None:
        self.send(Frame("DISCONNECT", (("receipt", "bye"),)))
        with contextlib.suppress(Exception):
            self.frame()
        self.sock.close()


def produce(port: int, vhost: str, n: int, receipts: bool = True) -> tuple[float, float]:
    c = Client(port, vhost)
    start = time.perf_counter()
    for i in range(n):
        hs: tuple[tuple[str, str], ...] = (("destination", DEST), ("persistent", "true"))
        if receipts:
            hs += (("receipt", str(i)),)
        c.send(Frame("SEND", hs, BODY))
        if receipts:
            c.frame()
    if not receipts:
        c.send(Frame("SEND", (("destination", "/queue/bench-sync"), ("receipt", "end")), b""))
        c.frame()
    end = time.perf_counter()
    c.close()
    return start, end


def consume(port: int, vhost: str, total: int, counter: Any) -> tuple[float, float]:
    c = Client(port, vhost)
    start = time.perf_counter()
    c.send(Frame("SUBSCRIBE", (("destination", DEST), ("id", "0"), ("ack", "client-individual"),
                               ("activemq.prefetchSize", "100"), ("prefetch-count", "100"))))
    while True:
        with counter.get_lock():
            if counter.value >= total:
                break
        try:
            c.sock.settimeout(0.5)
            f = c.frame()
        except TimeoutError:
            continue
        c.sock.settimeout(60)
        if f.command != "MESSAGE":
            continue
        with counter.get_lock():
            counter.value += 1
        c.send(Frame("ACK", (("id", f.get("ack") or ""),)))
    c.sock.settimeout(60)
    c.send(Frame("UNSUBSCRIBE", (("id", "0"), ("receipt", "u"))))
    while c.frame().command != "RECEIPT":
        pass
    end = time.perf_counter()
    c.close()
    return start, end


def _produce_worker(args: tuple[int, str, int]) -> tuple[float, float]:
    return produce(*args)


def _consume_worker(args: tuple[int, str, int]) -> tuple[float, float]:
    return consume(args[0], args[1], args[2], _COUNTER)


_COUNTER: Any = None


def _init(counter: Any) -> None:
    global _COUNTER
    _COUNTER = counter


def rate_sends(port: int, vhost: str, n: int, clients: int) -> float:
    if clients == 1:
        s, e = produce(port, vhost, n)
        return n / (e - s)
    ctx = mp.get_context("spawn")
    with ctx.Pool(clients) as pool:
        times = pool.map(_produce_worker, [(port, vhost, n // clients)] * clients)
    return (n // clients * clients) / (max(e for _, e in times) - min(s for s, _ in times))


def rate_consumes(port: int, vhost: str, n: int, clients: int) -> float:
    produce(port, vhost, n, receipts=False)  # prefill, untimed
    ctx = mp.get_context("spawn")
    counter = ctx.Value("q", 0)
    if clients == 1:
        _init(counter)
        s, e = consume(port, vhost, n, counter)
        return n / (e - s)
    with ctx.Pool(clients, initializer=_init, initargs=(counter,)) as pool:
        times = pool.map(_consume_worker, [(port, vhost, n)] * clients)
    return n / (max(e for _, e in times) - min(s for s, _ in times))


# -- servers ----------------------------------------------------------------------------------


@contextlib.contextmanager
def spoolq_server() -> Iterator[tuple[int, str]]:
    d = Path(tempfile.mkdtemp(prefix="bench-stomp-"))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "spoolq", "stomp", "--spool", str(d / "spool"),
                             "--listen", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL)
    try:
        wait_port(port, proc, "spoolq stomp")
        yield port, "localhost"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(d, ignore_errors=True)


def _pids_with_env(marker: bytes) -> list[int]:
    """Our own RabbitMQ processes (beam, epmd): those whose environment names our unique node."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            with contextlib.suppress(OSError):
                if marker in (p / "environ").read_bytes().split(b"\0"):
                    out.append(int(p.name))
    return out


@contextlib.contextmanager
def rabbitmq_server() -> Iterator[tuple[int, str]]:
    if shutil.which("rabbitmq-server") is None:
        raise RuntimeError("rabbitmq-server is not installed (apt-get install -y rabbitmq-server)")
    d = Path(tempfile.mkdtemp(prefix="bench-rmq-"))
    (d / "mnesia").mkdir()
    (d / "log").mkdir()
    stomp, amqp, dist, epmd = free_port(), free_port(), free_port(), free_port()
    (d / "rabbitmq.conf").write_text(
        f"listeners.tcp.default = 127.0.0.1:{amqp}\n"
        f"stomp.listeners.tcp.1 = 127.0.0.1:{stomp}\n"
        f"distribution.listener.port_range.min = {dist}\n"
        f"distribution.listener.port_range.max = {dist}\n"
        "distribution.listener.interface = 127.0.0.1\n"
        "loopback_users = none\n")
    node = f"spoolqbench{os.getpid()}@localhost"
    env = dict(os.environ, RABBITMQ_NODENAME=node, RABBITMQ_MNESIA_BASE=str(d / "mnesia"),
               RABBITMQ_LOG_BASE=str(d / "log"), RABBITMQ_CONFIG_FILE=str(d / "rabbitmq"),
               RABBITMQ_ENABLED_PLUGINS_FILE=str(d / "enabled_plugins"), RABBITMQ_PID_FILE=str(d / "pid"),
               ERL_EPMD_PORT=str(epmd), HOME=str(d))
    subprocess.run(["rabbitmq-plugins", "--offline", "enable", "rabbitmq_stomp"], env=env, check=True,
                   capture_output=True)
    if os.geteuid() == 0:  # the Debian wrapper drops to the rabbitmq user
        subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", str(d)], check=True)
    proc = subprocess.Popen(["rabbitmq-server"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t = time.monotonic()
    try:
        wait_port(stomp, proc, "rabbitmq-server")
        log(f"  RabbitMQ up after {time.monotonic() - t:.1f} s")
        yield stomp, "/"
    finally:
        marker = f"RABBITMQ_NODENAME={node}".encode()
        for pid in _pids_with_env(marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        end = time.monotonic() + 30
        while _pids_with_env(marker) and time.monotonic() < end:
            time.sleep(0.1)
        for pid in _pids_with_env(marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        shutil.rmtree(d, ignore_errors=True)


# -- behaviour side by side where the spec is vague ---------------------------------------------

SCENARIOS: list[tuple[str, list[bytes]]] = [
    ("ACK of an unknown id", [b"ACK\nid:nope\nreceipt:r\n\n\0"]),
    ("UNSUBSCRIBE of an unknown id", [b"UNSUBSCRIBE\nid:nope\nreceipt:r\n\n\0"]),
    ("SUBSCRIBE twice with one id", [b"SUBSCRIBE\nid:1\ndestination:/queue/cmp\n\n\0",
                                     b"SUBSCRIBE\nid:1\ndestination:/queue/cmp2\nreceipt:r\n\n\0"]),
    ("SEND without destination", [b"SEND\nreceipt:r\n\nx\0"]),
    ("SEND to a topic nobody listens to", [b"SEND\ndestination:/topic/cmp\nreceipt:r\n\nx\0"]),
    ("unknown command", [b"FROB\nreceipt:r\n\n\0"]),
    ("undefined escape \\t in a header", [b"SEND\ndestination:/queue/cmp\nx:a\\tb\nreceipt:r\n\nx\0"]),
    ("COMMIT of an unknown transaction", [b"COMMIT\ntransaction:nope\nreceipt:r\n\n\0"]),
    ("BEGIN twice with one name", [b"BEGIN\ntransaction:t\n\n\0", b"BEGIN\ntransaction:t\nreceipt:r\n\n\0"]),
    ("priority:high on SEND", [b"SEND\ndestination:/queue/cmp\npriority:high\nreceipt:r\n\nx\0"]),
]


def probe(port: int, vhost: str, frames: list[bytes]) -> str:
    c = Client(port, vhost)
    for raw in frames:
        c.sock.sendall(raw)
    c.sock.settimeout(2)
    try:
        f = c.frame()
    except RuntimeError as e:
        text = str(e)
        return (text[:70] + "...") if len(text) > 70 else text
    except TimeoutError:
        return "no answer within 2 s"
    finally:
        c.sock.close()
    return f.command


def compare() -> None:
    answers: dict[str, list[str]] = {}
    for server in (spoolq_server, rabbitmq_server):
        with server() as (port, vhost):
            for label, frames in SCENARIOS:
                answers.setdefault(label, []).append(probe(port, vhost, frames).replace("|", "/"))
    print("| frame(s) | spoolq | RabbitMQ |")
    print("|---|---|---|")
    for label, (a, b) in answers.items():
        print(f"| {label} | {a} | {b} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--compare", action="store_true", help="only print answers to vague-spec frames side by side")
    a = ap.parse_args()
    if a.compare:
        compare()
        return
    n = a.messages
    rows = [("durable send, receipts, 1 client", rate_sends, 1),
            ("durable send, receipts, 8 clients", rate_sends, 8),
            ("consume client-individual, 1 client", rate_consumes, 1),
            ("consume client-individual, 8 clients", rate_consumes, 8)]
    results: dict[str, dict[str, float]] = {"spoolq": {}, "rabbitmq": {}}
    t0 = time.monotonic()
    for name, server in (("spoolq", spoolq_server), ("rabbitmq", rabbitmq_server)):
        log(f"{name}:")
        for label, fn, clients in rows:
            with server() as (port, vhost):  # a fresh server (and empty queue) per row
                results[name][label] = fn(port, vhost, n, clients)
            log(f"  {label}: {results[name][label]:,.0f} msg/s")
    print(f"\n{n} messages per row, 100-byte bodies, nproc {os.cpu_count()}, load {os.getloadavg()[0]:.2f}, "
          f"run {time.monotonic() - t0:.0f} s\n")
    print("| workload | spoolq msg/s | RabbitMQ msg/s | ratio |")
    print("|---|---:|---:|---:|")
    for label, _, _ in rows:
        s, r = results["spoolq"][label], results["rabbitmq"][label]
        print(f"| {label} | {s:,.0f} | {r:,.0f} | {s / r:.2f}x |")


if __name__ == "__main__":
    main()
