"""The parameter server role: shard 0 of the weights, and the job's counters and checkpoints.

The job's flat weight vector is cut into `shards` contiguous slices (`shard_bounds`). This
object serves slice 0 itself and keeps what belongs to the job as a whole: global env steps,
episode returns, evaluations, the stop rule (`train_steps`, `target_return`) and checkpoints,
which gather every slice into one `.keras` file. Slices 1..K-1 are served by shard processes
booked in `ShardSlots`. Given a resume file (cluster mode), a `ResumeJournal` keeps what a
restart must carry (every slice's optimizer state and the counters with each checkpoint, the
job's history with each evaluation too), and a new server on the same file resumes from there.
It knows nothing of gRPC: `drlbox.rpc.parameter_server` serves it.
"""
from __future__ import annotations

import collections
import logging
import os
import threading
import time
from typing import Any, Callable, Sequence

import keras
import numpy as np

from drlbox.algorithms import ALGORITHM_CLASSES
from drlbox.layers.noisy import synced_weights
from drlbox.metrics import STALENESS_BUCKETS, BucketCounts
from drlbox.ops.flat_weights import WeightLayout, shard_bounds, slice_pieces
from drlbox.roles.checkpoints import ScalarLog, checkpoint_path, save_model_atomically
from drlbox.roles.interfaces import (Checkpoint, Evaluation, JobStatus, PushResult, ShardReply,
                                     ShardState, WeightsUpdate, WorkerReport)
from drlbox.roles.job_journal import JobHistory, Position, ResumeJournal
from drlbox.roles.limits import (check_address, check_evaluation, check_reason, check_report)
from drlbox.roles.param_shard import GradientError, ParameterShard, make_optimizer
from drlbox.roles.shard_slots import ShardSlots

log = logging.getLogger(__name__)
__all__ = ["GradientError", "ParameterServer", "shard_settings"]
# A push that arrives after the job reached its end, or was stopped, carries env steps already
# spent: it is still applied and counted (and the reply says stop). Not after a cancel.
LATE_PUSHES_COUNT = ("running", "done", "stopped")
TEMP_PREFIXES = (".saving-",)


def shard_settings(config: Any, pieces: list, index: int, shards: int) -> dict:
    """What a shard process needs to serve slice `index` (plain data: it runs no user code)."""
    optimizer = (["adam", config.merged_opt_kwargs] if isinstance(config.optimizer, str)
                 else ["keras", keras.optimizers.serialize(config.optimizer)])
    return {"index": index, "shards": shards, "pieces": [list(p) for p in pieces],
            "optimizer": optimizer, "settings": config.plain_settings()}


class ParameterServer:
    """Shard 0 of a job's weights plus the job's counters; thread-safe.

    `connect(address)` reaches a shard process (see `ShardSlots`); needed when shards > 1.
    """

    def __init__(self, job_id: str, config: Any, model: keras.Model,
                 resume_file: str | None = None, shards: int = 1,
                 connect: Callable[[str], Any] | None = None,
                 rollout_spec: dict | None = None):
        self.job_id, self.config, self.model = job_id, config, model
        self.rollout_spec = rollout_spec      # what the job's rollout lists look like
        self.layout = WeightLayout(synced_weights(model))
        self._others = [v.numpy() for v in self.layout.other_variables]
        self.bounds = shard_bounds(self.layout.size, shards)
        self._aux_rule = ALGORITHM_CLASSES[config.algorithm].aux_rule(config)
        self._lock = threading.Lock()
        self.global_steps = self.updates = 0
        self.history = JobHistory()     # evaluations, episodes, recent returns
        self._staleness: collections.deque = collections.deque(maxlen=100)
        self._staleness_sum = 0
        self.staleness_counts = BucketCounts(STALENESS_BUCKETS)     # for the metrics
        self._checkpoints: list[Checkpoint] = []
        self._stats: dict = {}
        self._start = time.monotonic()
        self._rate_mark: tuple | None = None      # (time, steps); starts at the first report
        self._rate_start: tuple | None = None     # the first report's (time, steps)
        self._first_report: float | None = None
        self._steps_per_sec = 0.0
        self._next_save = config.save_interval
        self._scalars = ScalarLog(config.save_dir)
        self.state, self.message = "running", ""
        self._changed_after_end = False
        # The weights an evaluator pulled last, (version, flat), and those of the evaluation
        # that reached target_return: the final model is the one that was judged, not the
        # newer weights training went on to while the evaluator played. One slice only.
        self._pulled: tuple[int, np.ndarray] | None = None
        self._judged: tuple[int, np.ndarray] | None = None
        self._journal = ResumeJournal(resume_file) if resume_file else None
        if config.save_dir:
            remove_leftovers(config.save_dir, resume_file)
        self.resumed_from_steps = 0
        states = self._initial_states()
        if self._journal is not None:
            position, self.history = self._journal.load()
            if position is not None:
                states = self._restore(position, states)
        self.shard0 = self._make_shard(0, states[0])
        self.slots = ShardSlots(job_id, states[1:], connect or _no_remote_shards)

    # --- shards ----------------------------------------------------------------------------
    def _initial_states(self) -> list[ShardState]:
        flat = self.layout.flat([v.numpy() for v in self.layout.variables])
        return [ShardState(flat[lo:hi].copy(), aux=flat[lo:hi].copy() if self._aux_rule
                           else None) for lo, hi in self.bounds]

    def _make_shard(self, index: int, state: ShardState) -> ParameterShard:
        cfg = self.config
        return ParameterShard(slice_pieces(self.layout, *self.bounds[index]), state,
                              make_optimizer(cfg.optimizer, cfg.merged_opt_kwargs),
                              cfg.opt_clip_norm, self._aux_rule, cfg.max_staleness)

    def assignment(self, address: str) -> tuple[dict, ShardState] | None:
        """(settings, state) of a free slot for the shard process at `address`, or None."""
        check_address(address)
        slot = self.slots.claim(address)
        if slot is None:
            return None
        pieces = slice_pieces(self.layout, *self.bounds[slot.index])
        return shard_settings(self.config, pieces, slot.index, len(self.bounds)), slot.state

    def shard_map(self) -> list[tuple[str | None, int, int]]:
        """(address, start, stop) of every slice; slice 0's address is '' (this server), a
        slice without a serving process has None."""
        addresses = [""] + self.slots.addresses()
        return [(a, lo, hi) for a, (lo, hi) in zip(addresses, self.bounds)]

    @property
    def version(self) -> int:
        """Slice 0's version."""
        return self.shard0.version

    @property
    def aux_version(self) -> int:
        """Slice 0's aux version."""
        return self.shard0.aux_version

    @property
    def size(self) -> int:
        """Weights in slice 0."""
        return self.shard0.size

    @property
    def others(self) -> list:
        """The model's non-float32 weights (sent with slice 0's weights)."""
        return self._others

    def snapshot(self):
        """Slice 0's state."""
        return self.shard0.snapshot()

    @property
    def ready(self) -> bool:
        """Whether every slice is served, so workers can train."""
        return self.slots.complete

    # --- weights -----------------------------------------------------------------------------
    def exchange(self, gradient: np.ndarray | None, base_version: int,
                 report: WorkerReport | None, newer_than: int, aux_newer_than: int = -1,
                 pull: bool = False) -> tuple[PushResult, ShardReply]:
        """Shard 0's part of a worker's exchange, plus its report: apply the gradient slice,
        record progress, and answer with the push result and (unless stopping) the weights."""
        if report is not None:
            check_report(report)
        if self.state not in LATE_PUSHES_COUNT:
            return self._stopped_reply()
        reply = self.shard0.exchange(gradient, base_version, newer_than, aux_newer_than, pull)
        if pull and newer_than < 0 and reply.weights is not None and self._keeps_judged_weights:
            self._pulled = (reply.version, np.array(reply.weights, np.float32))
        scalars: list = []
        with self._lock:
            if self.state not in LATE_PUSHES_COUNT:     # cancelled while this was applied
                return (PushResult(reply.version, self.global_steps, True),
                        reply._replace(weights=None, aux=None))
            if self.state != "running" and (gradient is not None or report is not None):
                self._changed_after_end = True
            losses = {}
            if gradient is not None:
                self.updates += 1
                losses = self._record_update(report, reply)
            if report is not None:
                scalars = self._record_progress(report, losses)
            if self.state == "running":
                self._maybe_checkpoint()
                if self.global_steps >= self.config.train_steps:
                    self._finish("done", f"reached train_steps={self.config.train_steps}")
            stop = self.state != "running"
            result = PushResult(reply.version, self.global_steps, stop)
        self._scalars.write_all(scalars)        # outside the lock: one line per episode
        return result, reply._replace(weights=None, aux=None) if stop else reply

    def _stopped_reply(self) -> tuple[PushResult, ShardReply]:
        with self._lock:
            version = self.shard0.version
            return (PushResult(version, self.global_steps, True),
                    ShardReply(version, None, self.shard0.aux_version, None, None))

    def _record_update(self, report: WorkerReport | None, reply: ShardReply) -> dict:
        """Losses and staleness of an applied update; their TensorBoard scalars."""
        stats = dict(report.stats) if report is not None else {}
        if reply.staleness is not None:
            if len(self._staleness) == self._staleness.maxlen:
                self._staleness_sum -= self._staleness[0]
            self._staleness.append(reply.staleness)
            self._staleness_sum += reply.staleness
            self.staleness_counts.observe(reply.staleness)
            stats["staleness"] = float(reply.staleness)
        if self._staleness:
            stats["staleness_mean"] = self._staleness_sum / len(self._staleness)
        self._stats = stats
        return {k if k.startswith("staleness") else f"loss/{k}": v for k, v in stats.items()}

    def get_weights(self, newer_than: int, aux_newer_than: int = -1) -> WeightsUpdate | None:
        """The weights unless the caller holds this version (one shard only, in process)."""
        self._in_process_only()
        _, reply = self.exchange(None, -1, None, newer_than, aux_newer_than, pull=True)
        return self.weights_update(reply)

    def push_and_pull(self, gradient: np.ndarray | None, base_version: int,
                      report: WorkerReport, newer_than: int,
                      aux_newer_than: int = -1) -> tuple[PushResult, WeightsUpdate | None]:
        """A worker's exchange in process (one shard only)."""
        self._in_process_only()
        result, reply = self.exchange(gradient, base_version, report, newer_than,
                                      aux_newer_than)
        return result, self.weights_update(reply)

    def weights_update(self, reply: ShardReply) -> WeightsUpdate | None:
        """Shard 0's reply as a WeightsUpdate (None when it sent no weights)."""
        if reply.weights is None:
            return None
        return WeightsUpdate(reply.version, reply.weights, reply.aux_version, reply.aux,
                             self._others)

    def _in_process_only(self) -> None:
        if len(self.bounds) > 1:
            raise RuntimeError("a sharded parameter server is reached through its clients")

    # --- progress ----------------------------------------------------------------------------
    def _record_progress(self, report: WorkerReport,
                         losses: dict) -> list[tuple[int, dict]]:
        """Count the report's steps and episodes; the TensorBoard scalars to write."""
        self.global_steps += int(report.env_steps)
        self.history.add_episodes(report.episode_returns)
        scalars = [(self.global_steps, {"episode_return": r}) for r in report.episode_returns]
        now = time.monotonic()
        if self._rate_mark is None:
            self._rate_mark = self._rate_start = (now, self.global_steps)
            if self._first_report is None:
                self._first_report = now
        mark_time, mark_steps = self._rate_mark
        if now - mark_time >= 1.0:
            self._steps_per_sec = (self.global_steps - mark_steps) / (now - mark_time)
            self._rate_mark = (now, self.global_steps)
            losses["steps_per_sec"] = self._steps_per_sec
        return scalars + [(self.global_steps, losses)]

    @property
    def _keeps_judged_weights(self) -> bool:
        cfg = self.config
        return cfg.target_return is not None and bool(cfg.save_dir) and len(self.bounds) == 1

    def report_evaluation(self, global_steps: int, returns: Sequence[float],
                          weights_version: int | None = None) -> PushResult:
        """Record an evaluation; reaching target_return stops the job, and the weights that
        played (when they are the ones last pulled, at `weights_version`) become the final
        model. A second report for a step already evaluated (an evaluator that rejoined after
        a restart) changes nothing."""
        check_evaluation(global_steps, returns, self.global_steps, weights_version)
        with self._lock:
            mean = float(np.mean(returns)) if len(returns) else float("nan")
            evaluation = Evaluation(int(global_steps), mean, len(returns),
                                    time.monotonic() - self._start)
            if not self.history.add_evaluation(evaluation):
                return PushResult(self.shard0.version, self.global_steps,
                                  self.state != "running")
            # Saved at once while the job runs; after its end, the final model's save holds
            # what a restart needs (a late evaluation is in the status the job ends with).
            if self._journal is not None and self.state == "running":
                self._journal.save_history(self.history)
            self._scalars.write(global_steps, {"eval/mean_return": mean})
            target = self.config.target_return
            if self.state == "running" and target is not None and mean >= target:
                pulled = self._pulled
                if pulled is not None and weights_version == pulled[0]:
                    self._judged = (int(global_steps), pulled[1])
                self._finish("done", f"evaluation mean return {mean:.1f} reached "
                                     f"target_return={target}")
            return PushResult(self.shard0.version, self.global_steps, self.state != "running")

    def stop(self, reason: str = "stopped on request") -> None:
        """End the job now (workers learn it on their next push), saving a final model."""
        check_reason(reason)
        with self._lock:
            if self.state == "running":
                self._finish("stopped", reason)

    def _finish(self, state: str, message: str) -> None:
        self.state, self.message = state, message
        if self._rate_start is not None:
            # A finished job reports its average rate (a short job may end within one window).
            start_time, start_steps = self._rate_start
            elapsed = time.monotonic() - start_time
            if elapsed > 0:
                self._steps_per_sec = (self.global_steps - start_steps) / elapsed
        log.info("job %s %s: %s", self.job_id, state, message)
        if self.config.save_dir:
            self._save(checkpoint_path(self.config.save_dir, None), self._judged)
        self._scalars.flush()
        self.slots.close()

    # --- checkpoints -------------------------------------------------------------------------
    def _maybe_checkpoint(self) -> None:
        if not self.config.save_dir or self.global_steps < self._next_save:
            return
        self._save(checkpoint_path(self.config.save_dir, self.global_steps))
        interval = self.config.save_interval
        self._next_save = (self.global_steps // interval + 1) * interval

    def _save(self, path: str, judged: tuple[int, np.ndarray] | None = None) -> None:
        """Save the model (the current weights, or `judged` = (env steps, flat weights))."""
        states = [self.shard0.snapshot()] + self.slots.snapshot()
        steps, flat = judged or (self.global_steps, np.concatenate([s.weights for s in states]))
        for variable, value in zip(self.layout.variables, self.layout.merge(flat, self._others)):
            variable.assign(value)
        save_model_atomically(self.model, path)
        self._checkpoints = [c for c in self._checkpoints if c.path != path]
        self._checkpoints.append(Checkpoint(path, steps, self._train_seconds()))
        if self._journal is not None:
            self._journal.save_position(Position(path, self.global_steps, self.updates,
                                                 self._train_seconds(),
                                                 list(self._checkpoints), states), self.history)

    def save_final(self) -> JobStatus:
        """Save the final model again if pushes were applied after the job ended (its
        workers' last batches), so that nothing they spent steps on is lost; the status it
        was saved with (read at once: no push comes between)."""
        with self._lock:
            # (Not over the weights an evaluation judged: they are the final model.)
            if self._changed_after_end and self.config.save_dir and self._judged is None:
                self._save(checkpoint_path(self.config.save_dir, None))
                self._changed_after_end = False
            self._scalars.flush()
            return self._status()

    def save_now(self) -> None:
        """Checkpoint the running job (weights, optimizer, counters) without ending it."""
        with self._lock:
            if self.state == "running" and self.config.save_dir:
                self._save(checkpoint_path(self.config.save_dir, self.global_steps))

    def _restore(self, position: Position, fresh: list[ShardState]) -> list[ShardState]:
        """Slice states and counters of a saved position (weights from its model file)."""
        self.model.load_weights(position.model_path)
        flat = self.layout.flat([v.numpy() for v in self.layout.variables])
        saved = position.slots
        same_cut = len(saved) == len(self.bounds)
        if not same_cut:
            log.warning("job %s was saved with %d parameter-server shards and resumes with "
                        "%d: its optimizer state starts afresh", self.job_id, len(saved),
                        len(self.bounds))
        aux = np.concatenate([s.aux for s in saved]) if self._aux_rule else None
        states = []
        for k, (lo, hi) in enumerate(self.bounds):
            slot = saved[k] if same_cut else saved[0]
            states.append(ShardState(flat[lo:hi].copy(), slot.version,
                                     None if aux is None else aux[lo:hi].copy(),
                                     slot.aux_version, slot.optimizer if same_cut else None,
                                     slot.updates))
        self.global_steps, self.updates = position.global_steps, position.updates
        self._checkpoints = list(position.checkpoints)
        self._first_report = time.monotonic() - position.train_seconds
        interval = self.config.save_interval
        self._next_save = (self.global_steps // interval + 1) * interval
        self.resumed_from_steps = self.global_steps
        log.info("job %s resumed from %s at %d env steps", self.job_id, position.model_path,
                 self.global_steps)
        return states

    def _train_seconds(self) -> float:
        return 0.0 if self._first_report is None else time.monotonic() - self._first_report

    def status(self) -> JobStatus:
        """A snapshot of the job's progress."""
        with self._lock:
            return self._status()

    def _status(self) -> JobStatus:
        """status(), the lock held."""
        history = self.history
        recent = (float(np.mean(history.recent_returns)) if history.recent_returns
                  else float("nan"))
        message = self.message
        if self.state == "running" and not self.ready:
            missing = sum(a is None for a in self.slots.addresses())
            message = f"waiting for {missing} parameter-server shard(s) to join"
        return JobStatus(
            job_id=self.job_id, state=self.state, message=message,
            global_steps=self.global_steps, train_steps=self.config.train_steps,
            updates=self.updates, version=self.shard0.version, episodes=history.episodes,
            recent_return=recent, steps_per_sec=self._steps_per_sec,
            wall_seconds=time.monotonic() - self._start,
            train_seconds=self._train_seconds(),
            evaluations=list(history.evaluations), checkpoints=list(self._checkpoints),
            stats=dict(self._stats), recent_returns=list(history.recent_returns),
            resumed_from_steps=self.resumed_from_steps, algorithm=self.config.algorithm)


def _no_remote_shards(address: str) -> Any:
    raise RuntimeError("this parameter server was built without a way to reach shard processes")


def remove_leftovers(save_dir: str, resume_file: str | None) -> None:
    """Delete what an interrupted save left in save_dir: temporary model files (only this job
    writes there) and a half-written resume file."""
    if not os.path.isdir(save_dir):
        return
    for name in os.listdir(save_dir):
        if name.startswith(TEMP_PREFIXES):
            try:
                os.remove(os.path.join(save_dir, name))
            except OSError:
                pass
    if resume_file:
        ResumeJournal(resume_file).remove_partial_writes()
