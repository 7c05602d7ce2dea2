"""The parameter server role: weights, optimizer, versions, global steps, checkpoints.

It applies pushed gradients one at a time (global-norm clipped), keeps ACER's average net or
DQN's target net as an auxiliary weight set, counts env steps, stops the job at `train_steps`
(or when an evaluation reaches `target_return`), and saves the model every `save_interval`
steps. Given a resume file (cluster mode), each checkpoint also records the optimizer state
and counters, and a new server on the same file resumes the job from there. It knows nothing
of gRPC: `drlbox.rpc.parameter_server` serves it.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import threading
import time
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from drlbox.layers.noisy import synced_weights
from drlbox.ops.compiled import FlatFunction
from drlbox.ops.flat_weights import WeightLayout
from drlbox.roles.checkpoints import ScalarLog, checkpoint_path, save_model_atomically
from drlbox.roles.interfaces import (Checkpoint, Evaluation, JobStatus, PushResult, WeightsUpdate,
                                     WorkerReport)

log = logging.getLogger(__name__)
# What a resumed job carries over besides weights and optimizer state.
_RESUMED_COUNTERS = ("version", "aux_version", "global_steps", "updates", "episodes")


def make_optimizer(config: Any) -> keras.optimizers.Optimizer:
    """Adam with the merged opt_kwargs, or a fresh copy of the user's optimizer instance."""
    if isinstance(config.optimizer, str):
        return keras.optimizers.Adam(**config.merged_opt_kwargs)
    return config.optimizer.__class__.from_config(config.optimizer.get_config())


class GradientError(ValueError):
    """Pushed gradients that do not fit the model; nothing was applied."""


class ParameterServer:
    """Holds the job's weights and applies gradients; thread-safe."""

    def __init__(self, job_id: str, config: Any, model: keras.Model, aux_kind: str | None,
                 resume_file: str | None = None):
        self.job_id = job_id
        self.config = config
        self.model = model
        self._variables = list(model.trainable_variables)
        self._synced = synced_weights(model)
        self._layout = WeightLayout(self._synced)
        self._optimizer = make_optimizer(config)
        self._optimizer.build(self._variables)
        self._apply = FlatFunction(self._apply_gradients,
                                   [tf.TensorSpec(v.shape, v.dtype) for v in self._variables])
        self._lock = threading.Lock()
        self._aux_kind = aux_kind
        self._weights = [v.numpy() for v in self._synced]
        self._aux = [w.copy() for w in self._weights] if aux_kind else None
        self.version = self.aux_version = 0
        self.global_steps = self.updates = self.episodes = 0
        self._recent_returns: collections.deque = collections.deque(maxlen=100)
        self._evaluations: list[Evaluation] = []
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
        self._resume_file = resume_file
        self.resumed_from_steps = 0
        if resume_file and os.path.exists(resume_file):
            self._restore(resume_file)

    # --- weights -----------------------------------------------------------------------
    def get_weights(self, newer_than: int, aux_newer_than: int = -1) -> WeightsUpdate | None:
        """The current weight set unless the caller already has this version, else None.

        A caller *ahead* of the server gets the weights too: the server was restarted from a
        checkpoint and the caller must drop the weights it holds.
        """
        with self._lock:
            if self.version == newer_than and (self._aux is None
                                               or self.aux_version == aux_newer_than):
                return None
            aux = self._aux if self._aux is not None and self.aux_version != aux_newer_than \
                else None
            return WeightsUpdate(self.version, self._weights, self.aux_version, aux)

    def _check_gradients(self, gradients: Sequence[np.ndarray]) -> None:
        if len(gradients) != len(self._variables):
            raise GradientError(f"expected {len(self._variables)} gradient arrays, "
                                f"got {len(gradients)}")
        for grad, var in zip(gradients, self._variables):
            if tuple(grad.shape) != tuple(var.shape) or grad.dtype != np.dtype(var.dtype):
                raise GradientError(f"gradient for {var.path} must be {var.dtype} "
                                    f"{tuple(var.shape)}, got {grad.dtype} {tuple(grad.shape)}")
            if not np.all(np.isfinite(grad)):
                raise GradientError(f"gradient for {var.path} has NaN or infinite values")

    def _apply_gradients(self, *gradients) -> tuple[tf.Tensor, tf.Tensor]:
        """Apply; return the gradients' global norm and the new weights as one flat vector
        (one read out of TensorFlow instead of one per variable). The graph orders the reads
        after the updates, as they touch the same variables."""
        clipped, norm = tf.clip_by_global_norm(gradients, self.config.opt_clip_norm)
        self._optimizer.apply_gradients(zip(clipped, self._variables))
        return norm, self._layout.graph_flat()

    def _after_update(self, flat: np.ndarray) -> None:
        self._weights = self._layout.merge(
            flat, [v.numpy() for v in self._layout.other_variables])
        self.version += 1
        self.updates += 1
        if self._aux_kind == "average":
            # New arrays, not in-place: a reader may still be serialising the previous set.
            ratio = self.config.acer_soft_update_ratio
            self._aux = [(1.0 - ratio) * avg + ratio * new
                         for avg, new in zip(self._aux, self._weights)]
            self.aux_version = self.version
        elif self._aux_kind == "target" and self.updates % self.config.sync_target_interval == 0:
            self._aux = [w.copy() for w in self._weights]
            self.aux_version = self.version

    # --- progress ----------------------------------------------------------------------
    def push(self, gradients: Sequence[np.ndarray] | None, base_version: int,
             report: WorkerReport) -> PushResult:
        """Apply gradients (if any) and record the worker's progress."""
        if gradients:
            self._check_gradients(gradients)
        with self._lock:
            if self.state != "running":
                return PushResult(self.version, self.global_steps, True)
            scalars = {}
            if gradients:
                norm, flat = self._apply(*gradients)
                self._after_update(flat.numpy())
                self._stats = {**report.stats, "grad_norm": float(norm),
                               "staleness": float(self.version - 1 - base_version)}
                scalars.update({f"loss/{k}": v for k, v in self._stats.items()})
            self._record_progress(report, scalars)
            self._maybe_checkpoint()
            if self.global_steps >= self.config.train_steps:
                self._finish("done", f"reached train_steps={self.config.train_steps}")
            return PushResult(self.version, self.global_steps, self.state != "running")

    def push_and_pull(self, gradients: Sequence[np.ndarray] | None, base_version: int,
                      report: WorkerReport, newer_than: int,
                      aux_newer_than: int = -1) -> tuple[PushResult, WeightsUpdate | None]:
        """`push`, then the weights (as `get_weights`) unless the job stopped."""
        result = self.push(gradients, base_version, report)
        return result, None if result.stop else self.get_weights(newer_than, aux_newer_than)

    def _record_progress(self, report: WorkerReport, scalars: dict) -> None:
        self.global_steps += int(report.env_steps)
        for ret in report.episode_returns:
            self.episodes += 1
            self._recent_returns.append(float(ret))
            self._scalars.write(self.global_steps, {"episode_return": ret})
        now = time.monotonic()
        if self._rate_mark is None:
            self._rate_mark = self._rate_start = (now, self.global_steps)
            if self._first_report is None:
                self._first_report = now
        mark_time, mark_steps = self._rate_mark
        if now - mark_time >= 1.0:
            self._steps_per_sec = (self.global_steps - mark_steps) / (now - mark_time)
            self._rate_mark = (now, self.global_steps)
            scalars["steps_per_sec"] = self._steps_per_sec
        self._scalars.write(self.global_steps, scalars)

    def report_evaluation(self, global_steps: int, returns: Sequence[float]) -> PushResult:
        """Record an evaluation; reaching target_return stops the job."""
        with self._lock:
            mean = float(np.mean(returns)) if len(returns) else float("nan")
            self._evaluations.append(Evaluation(int(global_steps), mean, len(returns),
                                                time.monotonic() - self._start))
            self._scalars.write(global_steps, {"eval/mean_return": mean})
            target = self.config.target_return
            if self.state == "running" and target is not None and mean >= target:
                self._finish("done", f"evaluation mean return {mean:.1f} reached "
                                     f"target_return={target}")
            return PushResult(self.version, self.global_steps, self.state != "running")

    def stop(self, reason: str = "stopped on request") -> None:
        """End the job now (workers learn it on their next push), saving a final model."""
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
            self._save(checkpoint_path(self.config.save_dir, None))
        self._scalars.flush()

    # --- checkpoints -------------------------------------------------------------------
    def _maybe_checkpoint(self) -> None:
        if not self.config.save_dir or self.global_steps < self._next_save:
            return
        self._save(checkpoint_path(self.config.save_dir, self.global_steps))
        interval = self.config.save_interval
        self._next_save = (self.global_steps // interval + 1) * interval

    def _save(self, path: str) -> None:
        save_model_atomically(self.model, path)
        self._checkpoints = [c for c in self._checkpoints if c.path != path]
        self._checkpoints.append(Checkpoint(path, self.global_steps, self._train_seconds()))
        if self._resume_file:
            self._save_resume_state(path)

    def save_now(self) -> None:
        """Checkpoint the running job (weights, optimizer, counters) without ending it."""
        with self._lock:
            if self.state == "running" and self.config.save_dir:
                self._save(checkpoint_path(self.config.save_dir, self.global_steps))

    def _save_resume_state(self, model_path: str) -> None:
        state = {f"optimizer_{i}": np.asarray(v) for i, v in
                 enumerate(self._optimizer.variables)}
        if self._aux is not None:
            state.update({f"aux_{i}": a for i, a in enumerate(self._aux)})
        counters = {name: getattr(self, name) for name in _RESUMED_COUNTERS}
        counters["train_seconds"] = self._train_seconds()
        counters["checkpoints"] = [dataclasses.astuple(c) for c in self._checkpoints]
        state["meta"] = np.array(json.dumps({"model_path": model_path, **counters}))
        tmp = f"{self._resume_file}.tmp.npz"
        np.savez(tmp, **state)
        os.replace(tmp, self._resume_file)

    def _restore(self, resume_file: str) -> None:
        """Load weights, optimizer state and counters saved by `_save_resume_state`."""
        with np.load(resume_file) as state:
            meta = json.loads(str(state["meta"]))
            self.model.load_weights(meta["model_path"])
            for i, variable in enumerate(self._optimizer.variables):
                variable.assign(state[f"optimizer_{i}"])
            if self._aux is not None:
                self._aux = [state[f"aux_{i}"] for i in range(len(self._aux))]
        for name in _RESUMED_COUNTERS:
            setattr(self, name, int(meta[name]))
        self._weights = [v.numpy() for v in self._synced]
        self._checkpoints = [Checkpoint(*c) for c in meta["checkpoints"]]
        self._first_report = time.monotonic() - meta["train_seconds"]
        interval = self.config.save_interval
        self._next_save = (self.global_steps // interval + 1) * interval
        self.resumed_from_steps = self.global_steps
        log.info("job %s resumed from %s at %d env steps", self.job_id, meta["model_path"],
                 self.global_steps)

    def _train_seconds(self) -> float:
        return 0.0 if self._first_report is None else time.monotonic() - self._first_report

    def status(self) -> JobStatus:
        """A snapshot of the job's progress."""
        with self._lock:
            recent = float(np.mean(self._recent_returns)) if self._recent_returns else float("nan")
            return JobStatus(
                job_id=self.job_id, state=self.state, message=self.message,
                global_steps=self.global_steps, train_steps=self.config.train_steps,
                updates=self.updates, version=self.version, episodes=self.episodes,
                recent_return=recent, steps_per_sec=self._steps_per_sec,
                wall_seconds=time.monotonic() - self._start,
                train_seconds=self._train_seconds(),
                evaluations=list(self._evaluations), checkpoints=list(self._checkpoints),
                stats=dict(self._stats), recent_returns=list(self._recent_returns),
                resumed_from_steps=self.resumed_from_steps, algorithm=self.config.algorithm)
