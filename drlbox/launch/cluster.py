"""The roles in cluster mode: long-lived processes that serve whatever job is running.

The parameter server hosts the job queue (`JobHost`) and job control for the SDK. Workers, the
replay server and the evaluator start idle, poll the parameter server for a job, build what
they need from its makers, work until it ends (or their connection to it is lost), and go back
to idle. `drlbox.cli` starts them; nothing here imports TensorFlow at module level.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import grpc

from drlbox.metrics import (EvaluatorCollector, ParameterServerCollector, ReplayCollector,
                            WorkerCollector, serve_metrics)
from drlbox.rpc.security import Security

log = logging.getLogger(__name__)
IDLE_POLL_SECONDS = 1.0
# A worker may wait this long for a restarting parameter server before it gives up the job.
CALL_TIMEOUT = 180.0


@dataclass(frozen=True)
class Endpoint:
    """Where a role listens and how its peers are reached."""

    host: str
    port: int
    security: Security
    ps_address: str | None = None
    replay_address: str | None = None
    metrics_port: int = 0           # 0: no metrics


def _wait_for_termination() -> threading.Event:
    """An event set by SIGTERM or SIGINT (docker stop, kubectl delete, Ctrl-C)."""
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    return done


def run_parameter_server(endpoint: Endpoint, data_dir: str, shards: int = 1) -> None:
    """Serve job control and the running job's weights until terminated; with shards > 1,
    each job's weights are cut into that many slices and slices 1.. wait for `ps-shard`
    processes to join."""
    from drlbox.launch.processes import PS_THREADS, build_parameter_server
    from drlbox.roles.job_host import JobHost
    from drlbox.rpc.job_control import add_job_control
    from drlbox.rpc.parameter_server import add_parameter_server
    from drlbox.rpc.server import make_server

    done = _wait_for_termination()
    host = JobHost(data_dir, lambda job, resume_file: build_parameter_server(
        job, resume_file, shards, endpoint.security))
    server, port = make_server(endpoint.port, [add_parameter_server(host), add_job_control(host)],
                               host=endpoint.host, max_workers=PS_THREADS,
                               security=endpoint.security)
    log.warning("parameter server listening on %s:%d, jobs under %s, %d shard(s)",
                endpoint.host, port, host.data_dir, shards)
    serve_metrics(endpoint.metrics_port, endpoint.host, ParameterServerCollector(host),
                  "parameter-server")
    engine = threading.Thread(target=host.serve_forever, args=(done,), name="job-queue",
                              daemon=True)
    engine.start()
    done.wait()
    # Not the job's end: checkpoint it so that a restarted parameter server resumes it.
    host.suspend()
    server.stop(grace=2.0).wait()
    engine.join(timeout=5.0)


def _exit_now(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def _idle_loop(role: str, endpoint: Endpoint, work: Callable[[Any, Any, dict], None]) -> None:
    """Poll for a job, `work(params, job, state)` on it, go back to idle; forever."""
    from drlbox.launch.processes import status_server
    from drlbox.rpc.parameter_client import ParameterClient

    state = {"state": "idle", "job_id": "", "counters": {}}
    server = status_server(endpoint.port, role, state, host=endpoint.host,  # noqa: F841
                           security=endpoint.security)   # keep a reference: GC would stop it
    # A worker has nothing to save: stop at once, even mid-job (the job goes on without it).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_now)
    finished: set[str] = set()
    log.warning("%s idle, polling %s for a job", role, endpoint.ps_address)
    params = ParameterClient(endpoint.ps_address, timeout=CALL_TIMEOUT,
                             security=endpoint.security)
    try:
        while True:
            try:
                job = params.fetch_job()
            except grpc.RpcError as err:
                if err.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE,
                                      grpc.StatusCode.DEADLINE_EXCEEDED):
                    log.warning("cannot fetch a job: %s", err.details())
                job = None
            if job is None or job.job_id in finished:
                time.sleep(IDLE_POLL_SECONDS)
                continue
            state.update(state="running", job_id=job.job_id, counters={})
            log.warning("%s joined job %s", role, job.job_id)
            try:
                work(params, job, state)
                finished.add(job.job_id)
            except grpc.RpcError as err:
                # The job may have ended or its parameter server restarted: look again.
                log.warning("%s lost job %s (%s: %s); looking for work again", role,
                            job.job_id, err.code().name, err.details())
            except Exception:  # noqa: BLE001 - e.g. the user's env failing: keep the role alive
                log.exception("%s failed on job %s; it will not rejoin that job", role,
                              job.job_id)
                finished.add(job.job_id)
            finally:
                state.update(state="idle")
    finally:
        params.close()


def run_worker(endpoint: Endpoint) -> None:
    """A rollout worker that trains on whichever job is running."""
    from drlbox.roles.worker import RolloutWorker
    from drlbox.rpc.replay import ReplayClient

    metrics = WorkerCollector()
    serve_metrics(endpoint.metrics_port, endpoint.host, metrics, "worker")

    def work(params: Any, job: Any, state: dict) -> None:
        config = job.config
        replay = None
        if config.uses_replay:
            if not endpoint.replay_address:
                raise RuntimeError(f"job {job.job_id} uses replay but this worker has no replay "
                                   f"address: set DRLBOX_REPLAY_ADDRESS")
            replay = ReplayClient(endpoint.replay_address, job.job_id, timeout=CALL_TIMEOUT,
                                  security=endpoint.security)
        index = params.worker_index
        seed = None if config.seed is None else config.seed * 1009 + index + 1
        worker = RolloutWorker(config, params, replay, index, seed)
        metrics.watch(job.job_id, worker)

        def publish(w: RolloutWorker) -> None:
            state["counters"] = {"env_steps": w.total_steps, "pushes": w.pushes,
                                 "weights_version": w.version}

        try:
            worker.run(after_batch=publish)
        finally:
            metrics.freeze()
            if replay is not None:
                replay.close()

    _idle_loop("worker", endpoint, work)


def run_evaluator(endpoint: Endpoint) -> None:
    """Evaluate whichever job is running, when it asks for evaluations (eval_interval)."""
    from drlbox.launch.processes import make_following_evaluator

    metrics = EvaluatorCollector()
    serve_metrics(endpoint.metrics_port, endpoint.host, metrics, "evaluator")

    def work(params: Any, job: Any, state: dict) -> None:
        if not job.config.eval_interval:
            while params.status().running:      # nothing to do: wait for the job to end
                time.sleep(IDLE_POLL_SECONDS)
            return
        evaluator = make_following_evaluator(params, job)
        metrics.watch(job.job_id, evaluator)
        try:
            state["counters"] = {"evaluations": evaluator.run()}
        finally:
            metrics.freeze()

    _idle_loop("evaluator", endpoint, work)


def run_replay(endpoint: Endpoint) -> None:
    """A replay server holding the running job's memory (no TensorFlow)."""
    from drlbox.launch.processes import replay_services
    from drlbox.roles.replay import ReplayTable
    from drlbox.rpc.parameter_client import ParameterClient
    from drlbox.rpc.replay import add_replay
    from drlbox.rpc.server import make_server

    params = ParameterClient(endpoint.ps_address, timeout=30.0, security=endpoint.security)
    done = _wait_for_termination()
    table = ReplayTable(replay_services(params))
    server, port = make_server(endpoint.port, [add_replay(table)],
                               host=endpoint.host, security=endpoint.security)
    log.warning("replay server listening on %s:%d", endpoint.host, port)
    serve_metrics(endpoint.metrics_port, endpoint.host, ReplayCollector(table), "replay")
    done.wait()
    server.stop(grace=1.0).wait()


def run_shard(endpoint: Endpoint, advertise: str = "") -> None:
    """A parameter-server shard: serve a slice of whichever job needs one (see launch.shard)."""
    from drlbox.launch.shard import serve_shards

    serve_shards(endpoint.ps_address, endpoint.host, endpoint.port, endpoint.security,
                 advertise, _wait_for_termination(), endpoint.metrics_port)
