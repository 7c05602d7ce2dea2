"""Prometheus metrics of drlbox's roles, served over HTTP at `/metrics` on a port of their own.

Nothing is counted twice: each role already keeps its counters (env steps, updates, episode
returns, replay size...), and a collector reads them when Prometheus scrapes. The only work on
the hot path is `BucketCounts.observe` (a bisect and two additions) for the latencies and
staleness that were not kept before. Each role process has its own registry, never the global
default. Metrics are read-only and need no token: they reveal job ids, counters and returns,
nothing else. Nothing here imports TensorFlow.
"""
from __future__ import annotations

import bisect
import collections
import itertools
import logging
import math
import os
from typing import Any, Iterable, Sequence

log = logging.getLogger(__name__)

# `drlbox ROLE` serves metrics on these ports unless told otherwise (--metrics-port 0: off).
DEFAULT_METRICS_PORTS = {"parameter-server": 9450, "worker": 9451, "replay": 9452,
                         "evaluator": 9453, "ps-shard": 9454}
# A local run's roles serve metrics only when this is set: on loopback, from this port on,
# as its gRPC ports follow port_begin (parameter server +0, replay +1, evaluator +2, worker
# i +3+i; its ps-shard processes serve none).
PORT_BASE_VARIABLE = "DRLBOX_METRICS_PORT_BASE"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)
STALENESS_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64, 128)
RECENT_EPISODES = 100


class BucketCounts:
    """A histogram's counts, kept as plain numbers: observing costs well under a microsecond.

    Not locked: each instance is observed by one thread at a time (under its owner's lock, or
    from a single thread); a scrape may read it between two observations.
    """

    def __init__(self, bounds: Sequence[float]):
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)       # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count one value into the first bucket whose upper bound is >= value."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, count of values <= it) pairs, as Prometheus histograms have them."""
        bounds = [str(float(b)) for b in self.bounds] + ["+Inf"]
        return list(zip(bounds, itertools.accumulate(list(self.counts))))


class RecentReturns:
    """Episodes counted and the returns of the last RECENT_EPISODES of them."""

    def __init__(self):
        self.episodes = 0
        self.last: collections.deque = collections.deque(maxlen=RECENT_EPISODES)

    def add(self, returns: Iterable[float]) -> None:
        """Record finished episodes' returns."""
        for value in returns:
            self.last.append(float(value))
            self.episodes += 1

    def mean(self) -> float:
        """Mean of the recent returns (NaN before the first episode)."""
        last = list(self.last)
        return sum(last) / len(last) if last else math.nan


# --- building metric families --------------------------------------------------------------
def _gauge(name: str, doc: str, labels: dict, value: float):
    from prometheus_client.core import GaugeMetricFamily

    family = GaugeMetricFamily(name, doc, labels=list(labels))
    family.add_metric(list(labels.values()), value)
    return family


def _counter(name: str, doc: str, labels: dict, value: float):
    from prometheus_client.core import CounterMetricFamily

    family = CounterMetricFamily(name, doc, labels=list(labels))
    family.add_metric(list(labels.values()), value)
    return family


def _histogram(name: str, doc: str, labels: dict, counts: BucketCounts):
    from prometheus_client.core import HistogramMetricFamily

    family = HistogramMetricFamily(name, doc, labels=list(labels))
    family.add_metric(list(labels.values()), counts.cumulative(), counts.sum)
    return family


class _Collector:
    """A prometheus_client custom collector: `families()` reads the role's state at scrape."""

    def collect(self):
        try:
            yield from self.families()
        except Exception:  # noqa: BLE001 - a scrape must not take the role down
            log.exception("metrics: reading the role's state failed")

    def families(self):
        raise NotImplementedError


class _WatchingCollector(_Collector):
    """Reads the object a role process works on now (a worker, an evaluator).

    `watch(job_id, target)` when a job begins; `freeze()` when it ends keeps the values it
    reached (visible until the next job) and lets the object go.
    """

    def __init__(self):
        self._current: tuple[str, Any] | None = None
        self._frozen: list | None = None

    def watch(self, job_id: str, target: Any) -> "_WatchingCollector":
        """Read `target`, working on job_id, from now on."""
        self._current, self._frozen = (job_id, target), None
        return self

    def freeze(self) -> None:
        """Keep the current values and drop the object."""
        current, self._current = self._current, None
        self._frozen = [] if current is None else list(self.families_of(*current))

    def families(self):
        current = self._current
        if current is not None:
            yield from self.families_of(*current)
        elif self._frozen is not None:
            yield from self._frozen

    def families_of(self, job_id: str, target: Any):
        raise NotImplementedError


class ParameterServerCollector(_Collector):
    """The job table's queue and the running (else last) job's progress.

    `jobs` is a job table with `latest()` -> (JobStatus, ParameterServer or None) or None;
    a cluster's JobHost also has `job_states()` and `queue_length()`. An ended job's
    parameter server is gone: its histograms are the ones a scrape saw while it ran (the
    counts, not a copy, so they hold every update).
    """

    def __init__(self, jobs: Any):
        self.jobs = jobs
        self._histograms: tuple[str, BucketCounts, BucketCounts] | None = None

    def families(self):
        if hasattr(self.jobs, "queue_length"):
            yield from self._queue()
        latest = self.jobs.latest()
        if latest is None:
            return
        status, server = latest
        job = {"job": status.job_id}
        yield _counter("drlbox_env_steps", "Env steps the job's workers reported", job,
                       status.global_steps)
        yield _gauge("drlbox_env_steps_per_second", "The job's env steps per second (over "
                     "the last second or so; its average once it ended)", job,
                     status.steps_per_sec)
        yield _gauge("drlbox_train_steps", "Env steps the job trains for", job,
                     status.train_steps)
        yield _counter("drlbox_gradient_updates", "Gradient updates applied to the job's "
                       "weights", job, status.updates)
        yield _gauge("drlbox_weights_version", "Version of the job's weights (slice 0)", job,
                     status.version)
        yield _counter("drlbox_episodes", "Training episodes the job's workers finished", job,
                       status.episodes)
        yield _gauge("drlbox_episode_return_mean", "Mean return of the job's last 100 "
                     "training episodes", job, status.recent_return)
        yield _gauge("drlbox_job_running", "1 while the job trains, 0 once it ended", job,
                     1.0 if status.state == "running" else 0.0)
        if "staleness_mean" in status.stats:
            yield _gauge("drlbox_staleness_recent_mean", "Mean staleness of the job's last "
                         "100 updates (updates between a gradient's weights and its update)",
                         job, status.stats["staleness_mean"])
        if status.evaluations:
            yield _counter("drlbox_evaluations", "Evaluations reported for the job", job,
                           len(status.evaluations))
            yield _gauge("drlbox_evaluation_mean_return", "Mean return of the job's latest "
                         "evaluation", job, status.evaluations[-1].mean_return)
        if server is not None:
            self._histograms = (status.job_id, server.staleness_counts,
                                server.shard0.apply_seconds)
        if self._histograms is not None and self._histograms[0] == status.job_id:
            _, staleness, apply_seconds = self._histograms
            yield _histogram("drlbox_staleness", "Staleness of applied updates (updates "
                             "between a gradient's weights and its update)", job, staleness)
            yield _histogram("drlbox_slice_apply_seconds", "Seconds a weight slice took to "
                             "apply one gradient (and read the new weights)",
                             {**job, "slice": "0"}, apply_seconds)

    def _queue(self):
        yield _gauge("drlbox_job_queue_length", "Jobs queued, waiting for the running one to "
                     "end", {}, self.jobs.queue_length())
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily("drlbox_jobs", "Jobs submitted here, by state",
                                   labels=["state"])
        for state, count in sorted(self.jobs.job_states().items()):
            family.add_metric([state], count)
        yield family


class ShardCollector(_Collector):
    """The slice a ps-shard process serves. `table` is its ShardTable."""

    def __init__(self, table: Any):
        self.table = table

    def families(self):
        served = self.table.served()
        if served is None:
            return
        job_id, index, shard = served
        labels = {"job": job_id, "slice": str(index)}
        yield _counter("drlbox_slice_updates", "Gradient updates this slice applied", labels,
                       shard.updates)
        yield _gauge("drlbox_slice_version", "Version of this slice's weights", labels,
                     shard.version)
        yield _histogram("drlbox_slice_apply_seconds", "Seconds a weight slice took to apply "
                         "one gradient (and read the new weights)", labels, shard.apply_seconds)


class WorkerCollector(_WatchingCollector):
    """A rollout worker's own progress (it watches a RolloutWorker)."""

    def families_of(self, job_id: str, worker: Any):
        job = {"job": job_id}
        yield _counter("drlbox_worker_env_steps", "Env steps this worker reported", job,
                       worker.total_steps)
        yield _counter("drlbox_worker_pushes", "Gradient pushes this worker made", job,
                       worker.pushes)
        yield _gauge("drlbox_worker_weights_version", "Version of the weights this worker "
                     "acts with", job, worker.version)
        yield _counter("drlbox_worker_episodes", "Training episodes this worker finished", job,
                       worker.returns.episodes)
        yield _gauge("drlbox_worker_episode_return_mean", "Mean return of this worker's last "
                     "100 training episodes", job, worker.returns.mean())
        yield _histogram("drlbox_worker_push_seconds", "Seconds of one exchange with the "
                         "parameter server: push the gradient, get the new weights", job,
                         worker.exchange.push_seconds)


class EvaluatorCollector(_WatchingCollector):
    """The evaluator's results (it watches a FollowingEvaluator)."""

    def families_of(self, job_id: str, evaluator: Any):
        job = {"job": job_id}
        yield _counter("drlbox_evaluator_evaluations", "Evaluations this evaluator made", job,
                       evaluator.evaluations)
        if evaluator.evaluations:
            yield _gauge("drlbox_evaluator_mean_return", "Mean return of the latest "
                         "evaluation", job, evaluator.last_mean_return)
            yield _gauge("drlbox_evaluator_global_steps", "The job's env steps when the "
                         "latest evaluation's weights were taken", job,
                         evaluator.last_global_steps)


class ReplayCollector(_Collector):
    """The replay memory of the running job. `table` is the ReplayTable."""

    def __init__(self, table: Any):
        self.table = table

    def families(self):
        current = self.table.current()
        if current is None:
            return
        job_id, service = current
        job = {"job": job_id}
        yield _gauge("drlbox_replay_size", "Rollout lists the replay memory holds", job,
                     len(service))
        yield _gauge("drlbox_replay_capacity", "Rollout lists the replay memory can hold", job,
                     service.memory.maxlen)
        yield _counter("drlbox_replay_inserted_lists", "Rollout lists inserted", job,
                       service.inserted)
        yield _counter("drlbox_replay_sampled_batches", "Batches sampled", job,
                       service.sampled)


# --- serving -------------------------------------------------------------------------------
def serve_metrics(port: int | None, host: str, collector: Any, role: str) -> Any:
    """Serve `collector` (and the process's CPU and memory) at http://host:port/metrics from a
    daemon thread; the HTTP server, or None when port is 0/None or cannot be bound (a role
    without metrics beats a role that will not start: that is logged, not raised)."""
    if not port:
        return None
    from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server

    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    registry.register(collector)
    try:
        server, _ = start_http_server(port, addr=host, registry=registry)
    except OSError as err:
        log.warning("%s: metrics off, cannot serve them on %s:%d (%s); pass another "
                    "--metrics-port (DRLBOX_METRICS_PORT), or 0 to turn them off", role, host,
                    port, err.strerror or err)
        return None
    log.info("%s: metrics on http://%s:%d/metrics", role, host, server.server_port)
    return server


def local_metrics_port(offset: int) -> int:
    """A local run's role's metrics port: $DRLBOX_METRICS_PORT_BASE + offset, or 0 (no metrics)
    when that variable is unset or bad (a bad value is logged, not raised: the run goes on)."""
    try:
        base = check_metrics_port(os.environ.get(PORT_BASE_VARIABLE, ""), PORT_BASE_VARIABLE)
    except ValueError as err:
        log.warning("metrics off: %s", err)
        return 0
    return base and base + offset


def check_metrics_port(value: str | int | None, where: str) -> int:
    """A metrics port from a flag or the environment: 0 (off) or 1..65535."""
    if value in (None, ""):
        return 0
    try:
        port = int(value)
    except (TypeError, ValueError):
        port = -1
    if not 0 <= port <= 65535:
        raise ValueError(f"{where} must be a port number (1-65535) or 0 to turn metrics off, "
                         f"got {value!r}")
    return port

