"""A parameter server's jobs: submitted jobs queue and run one at a time, on disk.

Under `data_dir/jobs/<job_id>/` each job keeps `job.bin` (its cloudpickled config, as
submitted), `record.json` (state, message, final status) and `checkpoints/` (saved models,
TensorBoard scalars, and the resume files `.resume-<job_id>.npz` and
`.resume-<job_id>.history.json`: roles.job_journal). A parameter server restarted on the same
data_dir queues its queued jobs again and resumes the running one from its last checkpoint. A
local run is a one-machine cluster with one job whose checkpoints stay in the save_dir its user
gave (`keep_save_dir`). It knows nothing of gRPC: `drlbox.rpc.job_control` serves it.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import threading
import time
from typing import Any, Callable

from drlbox.config import check_trainer_config
from drlbox.jobs import Job
from drlbox.roles.interfaces import Checkpoint, JobStatus

log = logging.getLogger(__name__)
MAX_JOB_BYTES = 64 << 20      # a job is makers and settings: anything near this is a mistake
# How long an ended job stays current for what was on its way (pushes, an evaluation).
END_GRACE_SECONDS = 2.0


class JobRefused(ValueError):
    """A submission that cannot become a job; nothing was queued."""


class UnknownJob(KeyError):
    """No job with that id was ever submitted here."""


class JobHost:
    """The job table and queue of a parameter server (a cluster's, or a local run's with its
    one job); thread-safe.

    `build_server(job, resume_file)` makes the job's `ParameterServer` (TensorFlow work);
    `on_start_error(err)`, when given, is told why a job could not start (else it is logged).

    A job that has ended stays current for `end_grace` seconds (None: until `end_current`,
    as in a local run), so that what its workers had on the way when it ended, their last
    pushes and an evaluation being played, still counts; then its final model is saved again
    with them and the next job starts.
    """

    def __init__(self, data_dir: str, build_server: Callable[[Job, str | None], Any],
                 keep_save_dir: bool = False,
                 on_start_error: Callable[[BaseException], None] | None = None,
                 end_grace: float | None = END_GRACE_SECONDS):
        self.data_dir = os.path.abspath(data_dir)
        self._build_server = build_server
        self._keep_save_dir = keep_save_dir
        self._on_start_error = on_start_error
        self._end_grace = end_grace
        self._ended_at: float | None = None     # when the current job's end was first seen
        self._lock = threading.RLock()
        self._records: dict[str, dict] = {}
        self._queue: list[str] = []
        self._current: tuple[Job, Any] | None = None
        self._worker_counts: dict[str, int] = {}
        self._wake = threading.Event()     # a submission: start it now, not at the next poll
        self._load()

    # --- submissions -------------------------------------------------------------------
    def submit(self, data: bytes, algorithm: str | None = None) -> JobStatus:
        """Check and queue a cloudpickled TrainerConfig (of `algorithm`, as the submission
        says); raises JobRefused naming the problem."""
        if len(data) > MAX_JOB_BYTES:
            raise JobRefused(f"the job is {len(data)} bytes, over the {MAX_JOB_BYTES} byte "
                             f"limit; keep data out of the makers and load it in the env")
        try:
            config = Job.decode("", data).config
        except Exception as err:  # noqa: BLE001 - any unpickling failure is the submitter's
            raise JobRefused(f"the job could not be loaded on the cluster "
                             f"({type(err).__name__}: {err}); makers must only use modules "
                             f"installed in the cluster's images") from None
        try:
            check_trainer_config(config)
        except (TypeError, ValueError, FileNotFoundError) as err:
            raise JobRefused(f"the job's settings are invalid: {err}") from None
        if algorithm is not None and algorithm != config.algorithm:
            raise JobRefused(f"algorithm: the submission says {algorithm!r} but its config is "
                             f"for {config.algorithm!r}")
        job_id = Job.new(config).job_id
        os.makedirs(self._job_dir(job_id))
        _write_atomically(os.path.join(self._job_dir(job_id), "job.bin"), data)
        with self._lock:
            self._records[job_id] = {"job_id": job_id, "algorithm": config.algorithm,
                                     "train_steps": config.train_steps, "state": "queued",
                                     "message": "", "order": len(self._records),
                                     "submitted_at": time.time(), "status": None}
            self._queue.append(job_id)
            self._save_record(job_id)
        self.wake()
        log.info("job %s queued (%d in the queue)", job_id, len(self._queue))
        return self.status(job_id)

    def cancel(self, job_id: str) -> JobStatus:
        """Drop a queued job, or stop the running one (its workers go back to idle)."""
        with self._lock:
            record = self._record(job_id)
            if job_id in self._queue:
                self._queue.remove(job_id)
                record.update(state="cancelled", message="cancelled before it started")
                self._save_record(job_id)
            elif self._current and self._current[0].job_id == job_id:
                running = self._current[1].state == "running"   # (not one that has ended)
                self._current[1].stop("cancelled on request")
                self._finish_current(cancelled=running)
            return self.status(job_id)

    # --- what the servicers ask ----------------------------------------------------------
    def current(self) -> Any:
        """The parameter server of the job being trained (its shards may still be joining)."""
        with self._lock:
            if self._current and self._current[1].state == "running":
                return self._current[1]
            return None

    def running(self) -> tuple[Job, Any] | None:
        """(job, parameter server) of the job being trained once all its shards serve."""
        with self._lock:
            if self._current and self._current[1].state == "running" and \
                    self._current[1].ready:
                return self._current
            return None

    def server_for(self, job_id: str) -> Any:
        """The parameter server of job_id while it is the current job, else None."""
        with self._lock:
            if self._current and self._current[0].job_id == job_id:
                return self._current[1]
            return None

    def slice_for(self, job_id: str, index: int) -> Any:
        """What serves slice `index` of job_id here: the parameter server for slice 0."""
        return self.server_for(job_id) if index == 0 else None

    def next_worker_index(self, job_id: str) -> int:
        """A fresh index for a role joining job_id (seeds and reports)."""
        with self._lock:
            index = self._worker_counts.get(job_id, 0)
            self._worker_counts[job_id] = index + 1
            return index

    # --- what the metrics read -----------------------------------------------------------
    def latest(self) -> tuple[JobStatus, Any] | None:
        """(status, parameter server) of the current job; else (final status, None) of the
        job that ended last; None before any job ran."""
        with self._lock:
            if self._current:
                return self._current[1].status(), self._current[1]
            ended = [r for r in self._records.values() if r["status"] is not None]
            if not ended:
                return None
            last = max(ended, key=lambda r: r["order"])
            return JobStatus.from_dict(last["status"]), None

    def queue_length(self) -> int:
        """Jobs waiting in the queue."""
        with self._lock:
            return len(self._queue)

    def job_states(self) -> dict[str, int]:
        """How many jobs submitted here are in each state."""
        with self._lock:
            return dict(collections.Counter(r["state"] for r in self._records.values()))

    def status(self, job_id: str) -> JobStatus:
        """The job's status, whatever its state; UnknownJob if never submitted here."""
        with self._lock:
            record = self._record(job_id)
            if self._current and self._current[0].job_id == job_id:
                if self._note_end() is not None:    # recorded before anyone is told
                    # With what arrived since the end saved: the final model has the steps
                    # the status says.
                    return self._current[1].save_final()
                return self._current[1].status()
            if record["status"] is not None:
                return JobStatus.from_dict(record["status"])
            position = self._queue.index(job_id) + 1 if job_id in self._queue else 0
            return JobStatus(job_id=job_id, state=record["state"], message=record["message"],
                             train_steps=record["train_steps"], queue_position=position,
                             algorithm=record["algorithm"])

    def statuses(self) -> list[JobStatus]:
        """Every job's status, oldest submission first."""
        with self._lock:
            order = sorted(self._records, key=lambda j: self._records[j]["order"])
            return [self.status(job_id) for job_id in order]

    def checkpoint(self, job_id: str, global_steps: int | None) -> Checkpoint:
        """The newest checkpoint (global_steps None) or the one at global_steps."""
        saved = self.status(job_id).checkpoints
        if not saved:
            raise LookupError(f"job {job_id!r} has no checkpoint yet")
        if global_steps is None:
            # The last saved, which for a finished job is its final model, even when that holds
            # the weights an evaluation judged, older than the last periodic checkpoint.
            return saved[-1]
        for checkpoint in saved:
            if checkpoint.global_steps == global_steps:
                return checkpoint
        raise LookupError(f"job {job_id!r} has no checkpoint at {global_steps} steps; it has "
                          f"{sorted({c.global_steps for c in saved})}")

    # --- the queue's engine --------------------------------------------------------------
    def wake(self) -> None:
        """Have `serve_forever` look at once (a submission, or `stop` set)."""
        self._wake.set()

    def serve_forever(self, stop: threading.Event, poll: float = 0.2) -> None:
        """Start queued jobs one at a time and record how they end, until `stop` is set (then
        call `wake`)."""
        while not stop.is_set():
            self.step()
            self._wake.wait(poll)
            self._wake.clear()

    def step(self) -> None:
        """Record the end of the current job (and, after its grace, release it); start the next
        queued one when idle."""
        with self._lock:
            ended_at = self._note_end()
            if ended_at is not None and self._end_grace is not None and \
                    time.monotonic() - ended_at >= self._end_grace:
                self._finish_current()
            if self._current or not self._queue:
                return
            job_id = self._queue[0]
        try:
            job = self._load_job(job_id)
            server = self._build_server(job, resume_file(job))
        except Exception as err:  # noqa: BLE001 - a bad job must not stop the queue
            if self._on_start_error is None:
                log.exception("job %s failed to start", job_id)
            else:
                self._on_start_error(err)
            with self._lock:
                if job_id in self._queue:
                    self._queue.remove(job_id)
                self._records[job_id].update(
                    state="failed", message=f"could not start: {type(err).__name__}: {err}")
                self._save_record(job_id)
            return
        with self._lock:
            if not self._queue or self._queue[0] != job_id:    # cancelled while building
                return
            self._queue.pop(0)
            self._current = (job, server)
            self._records[job_id].update(state="running", message="")
            self._save_record(job_id)
        log.info("job %s started%s", job_id, f" (resumed at {server.resumed_from_steps} steps)"
                 if server.resumed_from_steps else "")

    def end_current(self, reason: str) -> None:
        """Stop the running job and record its end, with a final save."""
        with self._lock:
            if self._current:
                self._current[1].stop(reason)
                self._finish_current()

    def suspend(self) -> None:
        """Checkpoint the running job without ending it: a restart resumes it from here. (A
        job that has ended is released, with its final save.)"""
        with self._lock:
            if self._note_end() is not None:
                self._finish_current()
            elif self._current:
                self._current[1].save_now()

    def _note_end(self) -> float | None:
        """When the current job ended (None while it runs, or when there is none); the first
        time its end is seen, record it, so that a restarted server does not resume it."""
        if not self._current or self._current[1].state == "running":
            return None
        job, server = self._current
        if self._ended_at is None:
            self._ended_at = time.monotonic()
            status = server.status()
            self._records[job.job_id].update(state=status.state, message=status.message,
                                             status=status.to_dict())
            self._save_record(job.job_id)
        return self._ended_at

    def _finish_current(self, cancelled: bool = False) -> None:
        job, server = self._current
        record = self._records[job.job_id]
        # With the last pushes that arrived after the end (not for a cancelled job).
        status = server.status() if cancelled else server.save_final()
        if cancelled:
            status = dataclasses.replace(status, state="cancelled",
                                         message="cancelled on request")
        record.update(state=status.state, message=status.message, status=status.to_dict())
        self._save_record(job.job_id)
        self._current, self._ended_at = None, None
        log.info("job %s %s: %s", job.job_id, status.state, status.message)

    # --- disk ----------------------------------------------------------------------------
    def _job_dir(self, job_id: str) -> str:
        return os.path.join(self.data_dir, "jobs", job_id)

    def _record(self, job_id: str) -> dict:
        try:
            return self._records[job_id]
        except KeyError:
            raise UnknownJob(job_id) from None

    def _load_job(self, job_id: str) -> Job:
        with open(os.path.join(self._job_dir(job_id), "job.bin"), "rb") as f:
            job = Job.decode(job_id, f.read())
        if self._keep_save_dir:
            return job
        # Checkpoints go to the cluster's volume, whatever save_dir meant on the submitter's side.
        save_dir = os.path.join(self._job_dir(job_id), "checkpoints")
        return Job(job_id, dataclasses.replace(job.config, save_dir=save_dir))

    def _save_record(self, job_id: str) -> None:
        path = os.path.join(self._job_dir(job_id), "record.json")
        _write_atomically(path, json.dumps(self._records[job_id], default=str).encode())

    def _load(self) -> None:
        """Read the jobs a previous run of this parameter server left; requeue unfinished ones."""
        root = os.path.join(self.data_dir, "jobs")
        os.makedirs(root, exist_ok=True)
        for job_id in os.listdir(root):
            path = os.path.join(root, job_id, "record.json")
            if os.path.exists(path):
                with open(path) as f:
                    self._records[job_id] = json.load(f)
        pending = [j for j, r in self._records.items() if r["state"] in ("running", "queued")]
        # The job that was running goes first; it resumes from its resume file.
        pending.sort(key=lambda j: (self._records[j]["state"] != "running",
                                    self._records[j]["order"]))
        self._queue = pending
        if pending:
            log.info("found %d unfinished job(s) in %s: %s", len(pending), root,
                     ", ".join(pending))


def resume_file(job: Job) -> str | None:
    """Where the job's parameter server keeps what a restart resumes from (None without a
    save_dir): named after the job, so that another job's file in that directory is never
    picked up."""
    if not job.config.save_dir:
        return None
    return os.path.join(job.config.save_dir, f".resume-{job.job_id}.npz")


def _write_atomically(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
