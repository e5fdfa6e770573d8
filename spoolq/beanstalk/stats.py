"""The YAML of ``stats``, ``stats-tube`` and ``stats-job``, from the server's state (see :mod:`.server`)."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Collection
from typing import TYPE_CHECKING, Protocol

from .jobs import DELAY_HEADER, NOT_EARLY, JobCounts, int_header, ttr_of_job
from .names import channel_tube
from .wire import yaml_dict, yaml_str

if TYPE_CHECKING:
    from ..spool import Job, Stats


class _ConnView(Protocol):
    producer: bool
    worker: bool
    use: str
    watch: list[str]


class StatsSource(Protocol):
    """What the stats read of the server (:class:`.server.Server`)."""

    @property
    def conns(self) -> Collection[_ConnView]: ...
    @property
    def waiting(self) -> Collection[_ConnView]: ...
    cmds: dict[str, int]
    job_timeouts: int
    total_jobs: int
    total_connections: int
    max_job_size: int
    started: float
    draining: bool
    instance_id: str
    paused: dict[str, tuple[float, int]]
    tube_jobs: dict[str, int]
    tube_deletes: dict[str, int]
    tube_pauses: dict[str, int]
    jobs: dict[int, JobCounts]

    def tubes(self, counted: Stats | None = None) -> list[str]: ...
    def channel(self, tube: str) -> str | None: ...


def server_yaml(srv: StatsSource, counted: Stats) -> bytes:
    """``stats``, from the spool's counts (``counting.Counting``: due delayed jobs already made ready)."""
    st = counted.channels
    ru = resource.getrusage(resource.RUSAGE_SELF)
    uname = os.uname()  # what beanstalkd reports (platform.uname would cost start-up time)
    c = srv.cmds
    total = {k: sum(getattr(x, k) for x in st.values()) for k in ("urgent", "ready", "leased", "delayed", "dead")}
    lines = [
        ("current-jobs-urgent", total["urgent"]), ("current-jobs-ready", total["ready"]),
        ("current-jobs-reserved", total["leased"]), ("current-jobs-delayed", total["delayed"]),
        ("current-jobs-buried", total["dead"]),
        *((f"cmd-{k}", c.get(k, 0)) for k in (
            "put", "peek", "peek-ready", "peek-delayed", "peek-buried", "reserve", "reserve-with-timeout",
            "delete", "release", "use", "watch", "ignore", "bury", "kick", "touch", "stats", "stats-job",
            "stats-tube", "list-tubes", "list-tube-used", "list-tubes-watched", "pause-tube")),
        ("job-timeouts", srv.job_timeouts), ("total-jobs", srv.total_jobs),
        ("max-job-size", srv.max_job_size), ("current-tubes", len(srv.tubes(counted))),
        ("current-connections", len(srv.conns)),
        ("current-producers", sum(1 for x in srv.conns if x.producer)),
        ("current-workers", sum(1 for x in srv.conns if x.worker)),
        ("current-waiting", len(srv.waiting)), ("total-connections", srv.total_connections),
        ("pid", os.getpid()), ("version", yaml_str("1.13")),
        ("rusage-utime", f"{ru.ru_utime:.6f}"), ("rusage-stime", f"{ru.ru_stime:.6f}"),
        ("uptime", int(time.time() - srv.started)),
        ("binlog-oldest-index", 0), ("binlog-current-index", 0), ("binlog-records-migrated", 0),
        ("binlog-records-written", 0), ("binlog-max-size", 10485760),
        ("draining", "true" if srv.draining else "false"), ("id", srv.instance_id),
        ("hostname", yaml_str(uname.nodename)), ("os", yaml_str(uname.version)),
        ("platform", yaml_str(uname.machine)),
    ]
    return yaml_dict(lines)

def tube_yaml(srv: StatsSource, tube: str, counted: Stats) -> bytes | None:
    """``stats-tube``, from the spool's counts: None when the tube does not exist."""
    if tube not in srv.tubes(counted):
        return None
    st = counted.channels.get(srv.channel(tube) or "")
    now = time.monotonic()
    until, secs = srv.paused.get(tube, (0.0, 0))
    paused = until > now
    left = int(until - now) if paused else 0
    lines = [
        ("name", yaml_str(tube)),
        ("current-jobs-urgent", st.urgent if st else 0), ("current-jobs-ready", st.ready if st else 0),
        ("current-jobs-reserved", st.leased if st else 0), ("current-jobs-delayed", st.delayed if st else 0),
        ("current-jobs-buried", st.dead if st else 0), ("total-jobs", srv.tube_jobs.get(tube, 0)),
        ("current-using", sum(1 for x in srv.conns if x.use == tube)),
        ("current-watching", sum(1 for x in srv.conns if tube in x.watch)),
        ("current-waiting", sum(1 for x in srv.waiting if tube in x.watch)),
        ("cmd-delete", srv.tube_deletes.get(tube, 0)), ("cmd-pause-tube", srv.tube_pauses.get(tube, 0)),
        ("pause", secs if paused else 0), ("pause-time-left", left),
    ]
    return yaml_dict(lines)

def job_yaml(srv: StatsSource, job: Job) -> bytes:
    """``stats-job``."""
    now = time.time()
    counts = srv.jobs.get(job.job) or JobCounts()
    ttr = ttr_of_job(job)
    if job.state in ("reserved", "delayed") and job.due is not None:
        left = max(0, int(job.due - NOT_EARLY - now))  # what the client asked for, not the slack
    else:
        left = 0
    delay = counts.delay if counts.delay >= 0 else int_header(job.headers, DELAY_HEADER)
    lines = [
        ("id", job.job), ("tube", yaml_str(channel_tube(job.channel))), ("state", job.state),
        ("pri", job.priority), ("age", max(0, int(now - job.created_at))), ("delay", delay), ("ttr", ttr),
        ("time-left", left), ("file", 0), ("reserves", max(job.attempts, counts.reserves)),
        ("timeouts", counts.timeouts),
        ("releases", counts.releases), ("buries", counts.buries), ("kicks", counts.kicks),
    ]
    return yaml_dict(lines)
