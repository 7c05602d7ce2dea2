"""The role entry points: processes that serve whatever job the parameter server runs.

The parameter server hosts the job queue (`JobHost`) and job control. Workers, the replay server
and the evaluator start idle, poll the parameter server for a job, build what they need from its
makers, work until it ends (or their connection to it is lost), and go back to idle.

A cluster starts these functions with `drlbox ROLE` (drlbox.cli) and they serve job after job. A
local run (drlbox.launch.local) starts the very same functions on loopback with a private token,
as a one-machine cluster: it submits its one job through job control, and its workers and
evaluator leave once that job is over (`one_job`). Nothing here imports TensorFlow at module
level.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import grpc

from drlbox.launch.processes import NOTICE
from drlbox.metrics import (EvaluatorCollector, ParameterServerCollector, ReplayCollector,
                            WorkerCollector, serve_metrics)
from drlbox.rpc.security import Security

log = logging.getLogger(__name__)
IDLE_POLL_SECONDS = 1.0
FIRST_POLL_SECONDS = 0.05    # an idle role's first polls (see _idle_loop)
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


def _handle_termination(handler: Any) -> None:
    """Have SIGTERM and SIGINT (docker stop, kubectl delete, Ctrl-C) call `handler`; a signal
    the launcher set to be ignored stays ignored (a local run's launcher owns Ctrl-C)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, handler)


def _wait_for_termination() -> threading.Event:
    """An event set by SIGTERM or SIGINT."""
    done = threading.Event()
    _handle_termination(lambda *_: done.set())
    return done


def run_parameter_server(endpoint: Endpoint, data_dir: str, shards: int = 1, *,
                         keep_save_dir: bool = False, end_jobs_on_exit: bool = False,
                         error_file: str | None = None) -> None:
    """Serve job control and the running job's weights until terminated; with shards > 1,
    each job's weights are cut into that many slices and slices 1.. wait for `ps-shard`
    processes to join.

    A cluster keeps jobs' checkpoints under data_dir and, when terminated, checkpoints the
    running job so that it resumes on restart. A local run keeps them in the job's save_dir
    (`keep_save_dir`), ends its job with a final save when terminated (`end_jobs_on_exit`),
    and has the error that stops a job from starting saved to `error_file` for its launcher.
    """
    from drlbox.launch.processes import PS_THREADS, build_parameter_server, save_start_error
    from drlbox.roles.job_host import END_GRACE_SECONDS, JobHost
    from drlbox.rpc.job_control import add_job_control
    from drlbox.rpc.parameter_server import add_parameter_server
    from drlbox.rpc.server import make_server

    done = _wait_for_termination()
    host = JobHost(data_dir, lambda job, resume_file: build_parameter_server(
        job, resume_file, shards, endpoint.security), keep_save_dir=keep_save_dir,
        on_start_error=(lambda err: save_start_error(error_file, err)) if error_file else None,
        # A local run's one job stays current until the run ends: nothing its workers send
        # once it is over is lost, however long their last batch takes.
        end_grace=None if end_jobs_on_exit else END_GRACE_SECONDS)
    server, port = make_server(endpoint.port, [add_parameter_server(host), add_job_control(host)],
                               host=endpoint.host, max_workers=PS_THREADS,
                               security=endpoint.security)
    log.log(NOTICE, "parameter server listening on %s:%d, jobs under %s, %d shard(s)",
            endpoint.host, port, host.data_dir, shards)
    serve_metrics(endpoint.metrics_port, endpoint.host, ParameterServerCollector(host),
                  "parameter-server")
    engine = threading.Thread(target=host.serve_forever, args=(done,), name="job-queue",
                              daemon=True)
    engine.start()
    done.wait()
    host.wake()
    if end_jobs_on_exit:
        host.end_current("parameter server terminated")
    else:       # not the job's end: checkpoint it so that a restarted server resumes it
        host.suspend()
    server.stop(grace=2.0).wait()
    engine.join(timeout=5.0)


def _exit_now(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def _ask_job_control(endpoint: Endpoint, call: Callable[[Any], Any]) -> Any:
    """`call(job control client)`'s answer, or None when the parameter server cannot answer
    (e.g. while it restarts)."""
    from drlbox.rpc.job_control import JobControlClient

    jobs = JobControlClient(endpoint.ps_address, endpoint.security)
    try:
        return call(jobs)
    except grpc.RpcError:
        return None
    finally:
        jobs.close()


def _job_ended(endpoint: Endpoint, job_id: str) -> bool:
    """Whether job control says job_id is over (False when it cannot tell: the job may
    resume)."""
    status = _ask_job_control(endpoint, lambda jobs: jobs.status(job_id, timeout=10.0))
    return status is not None and status.finished


def _every_job_over(endpoint: Endpoint) -> bool:
    """Whether the parameter server has jobs and all of them are over (a local run's one job
    ended before this role could join it)."""
    statuses = _ask_job_control(endpoint, lambda jobs: jobs.list(timeout=10.0))
    return bool(statuses) and all(s.finished for s in statuses)


def _new_job(params: Any, joins_as: str, finished: set[str]) -> Any:
    """The running job, joined as `joins_as`, unless this role finished it; None when there is
    none to work on. Polling asks only what runs: the job itself is fetched once per job."""
    try:
        job_id = params.running_job().job_id
        if job_id in finished:
            return None
        return params.join_job(job_id, joins_as)
    except grpc.RpcError as err:     # NOT_FOUND: none runs (or it ended before we joined)
        if err.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE,
                              grpc.StatusCode.DEADLINE_EXCEEDED):
            log.warning("cannot join a job: %s", err.details())
        return None


def _idle_loop(role: str, joins_as: str, endpoint: Endpoint,
               work: Callable[[Any, Any, dict], None], one_job: bool = False) -> None:
    """Poll for a job, join it as `joins_as` ("worker" or "evaluator"), `work(params, job,
    state)` on it, go back to idle; forever, or until the first job it worked on is over
    (`one_job`, a local run's roles: their errors raise)."""
    from drlbox.launch.processes import status_server
    from drlbox.rpc.parameter_client import ParameterClient

    state = {"state": "idle", "job_id": "", "counters": {}}
    server = status_server(endpoint.port, role, state, host=endpoint.host,  # noqa: F841
                           security=endpoint.security)   # keep a reference: GC would stop it
    # A worker has nothing to save: stop at once, even mid-job (the job goes on without it).
    _handle_termination(_exit_now)
    finished: set[str] = set()
    log.log(NOTICE, "%s idle, polling %s for a job", role, endpoint.ps_address)
    params = ParameterClient(endpoint.ps_address, timeout=CALL_TIMEOUT,
                             security=endpoint.security)
    try:
        wait = FIRST_POLL_SECONDS
        while not (one_job and finished):
            job = _new_job(params, joins_as, finished)
            if job is None and one_job and _every_job_over(endpoint):
                return          # its job ended before it could join: nothing left to do
            if job is None:
                # Soon at first (a job is often being built as a role starts), then at ease.
                time.sleep(wait)
                wait = min(wait * 1.5, IDLE_POLL_SECONDS)
                continue
            wait = FIRST_POLL_SECONDS
            state.update(state="running", job_id=job.job_id, counters={})
            log.log(NOTICE, "%s joined job %s", role, job.job_id)
            try:
                work(params, job, state)
                finished.add(job.job_id)
            except grpc.RpcError as err:
                if _job_ended(endpoint, job.job_id):
                    log.log(NOTICE, "%s: job %s is over", role, job.job_id)
                    finished.add(job.job_id)
                    continue
                # Its parameter server may have restarted: look again (it may resume it).
                log.warning("%s lost job %s (%s: %s); looking for work again", role,
                            job.job_id, err.code().name, err.details())
            except Exception:  # noqa: BLE001 - e.g. the user's env failing: keep the role alive
                if one_job:
                    raise
                log.exception("%s failed on job %s; it will not rejoin that job", role,
                              job.job_id)
                finished.add(job.job_id)
            finally:
                state.update(state="idle")
    finally:
        params.close()


def run_worker(endpoint: Endpoint, name: str = "worker", one_job: bool = False) -> None:
    """A rollout worker that trains on whichever job is running."""
    from drlbox.roles.worker import RolloutWorker
    from drlbox.rpc.replay import ReplayClient

    metrics = WorkerCollector()
    serve_metrics(endpoint.metrics_port, endpoint.host, metrics, name)

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

    _idle_loop(name, "worker", endpoint, work, one_job)


def run_evaluator(endpoint: Endpoint, one_job: bool = False) -> None:
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

    _idle_loop("evaluator", "evaluator", endpoint, work, one_job)


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
    log.log(NOTICE, "replay server listening on %s:%d", endpoint.host, port)
    serve_metrics(endpoint.metrics_port, endpoint.host, ReplayCollector(table), "replay")
    done.wait()
    server.stop(grace=1.0).wait()


def run_shard(endpoint: Endpoint, advertise: str = "") -> None:
    """A parameter-server shard: serve a slice of whichever job needs one (see launch.shard)."""
    from drlbox.launch.shard import serve_shards

    serve_shards(endpoint.ps_address, endpoint.host, endpoint.port, endpoint.security,
                 advertise, _wait_for_termination(), endpoint.metrics_port)
