"""The rollout worker role: pull weights when they changed, collect, compute gradients, push.

One loop serves all four algorithms. Each batch of `batch_size` rollout lists is learned from
online (when `online_learning`), inserted into replay (when a replay peer is given), and followed
by Poisson(`replay_ratio`) replayed batches. The worker steps `batch_size` env copies in lockstep
so one inference call serves them all.
"""
from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from drlbox.algorithms import make_algorithm, make_model
from drlbox.envs import make_env
from drlbox.layers.noisy import noisy_layers, resample_noise, synced_weights
from drlbox.ops.fast_forward import make_predict_fn
from drlbox.ops.rollout import pack_lists
from drlbox.roles.collector import Collector
from drlbox.roles.interfaces import ParameterPeer, PushResult, ReplayPeer, WorkerReport

log = logging.getLogger(__name__)


def _identity(obs: Any) -> Any:
    return obs


class WeightAssigner:
    """Copies weight arrays into variables (in `synced_weights` order) in one compiled call.

    One eager `assign` costs ~0.15 ms; a graph assigning all variables costs about as much as
    one, which matters when weights change before every batch.
    """

    def __init__(self, variables: list):
        self.variables = variables
        # A concrete function skips tf.function's per-call signature matching (~0.3 ms here).
        self._assign = tf.function(self._assign_all).get_concrete_function(
            *[tf.TensorSpec(v.shape, v.dtype) for v in variables])

    def _assign_all(self, *values) -> None:
        for var, value in zip(self.variables, values):
            var.assign(value)

    def __call__(self, arrays: list) -> None:
        self._assign(*arrays)


class GradientStep:
    """Compiled loss-and-gradient of the algorithm on a packed batch."""

    def __init__(self, algorithm: Any, model: keras.Model, aux_model: keras.Model | None):
        self.algorithm, self.model, self.aux_model = algorithm, model, aux_model
        self.variables = list(model.trainable_variables)
        self._step = None         # a concrete function, made for the first batch's dtypes

    def _compute(self, batch: dict):
        with tf.GradientTape() as tape:
            out = self.algorithm.loss(self.model, self.aux_model, batch)
        grads = tape.gradient(out.loss, self.variables)
        grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, self.variables)]
        return grads, out.stats, out.priorities

    @staticmethod
    def _spec(batch: dict[str, np.ndarray]) -> dict:
        # Time and list counts vary between batches; everything else is fixed.
        return {key: tf.TensorSpec((None,) * (1 if key == "weights" else 2) + value.shape[
            1 if key == "weights" else 2:], value.dtype) for key, value in batch.items()}

    def __call__(self, batch: dict[str, np.ndarray]) -> tuple[list, dict, np.ndarray]:
        if self._step is None:
            self._step = tf.function(self._compute).get_concrete_function(self._spec(batch))
        grads, stats, priorities = self._step(batch)
        return ([g.numpy() for g in grads], {k: float(v) for k, v in stats.items()},
                priorities.numpy())


class AsyncPusher:
    """Sends pushes from a background thread with at most one in flight, so the worker collects
    its next batch while the parameter server applies the last one (asynchronous, as A3C is).

    `push` answers with the reply to the previous push: a stop is seen one batch later.
    """

    def __init__(self, params: ParameterPeer):
        self.params = params
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="push")
        self._pending: Future | None = None
        self.last = PushResult(-1, 0, False)

    def push(self, gradients: list | None, base_version: int, report: WorkerReport) -> PushResult:
        """Queue this push; return the newest reply received so far."""
        self.wait()
        self._pending = self._pool.submit(self.params.push, gradients, base_version, report)
        return self.last

    def wait(self) -> PushResult:
        """Block until the push in flight is answered (its error, if any, is raised here)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self.last = pending.result()
        return self.last

    def close(self) -> PushResult:
        """Finish the push in flight and stop the thread."""
        result = self.wait()
        self._pool.shutdown()
        return result


class RolloutWorker:
    """One rollout worker; peers are passed in, so it runs with or without the network."""

    def __init__(self, config: Any, params: ParameterPeer, replay: ReplayPeer | None = None,
                 index: int = 0, seed: int | None = None):
        self.config, self.params, self.replay, self.index = config, params, replay, index
        self.rng = np.random.default_rng(seed)
        envs = [make_env(config.env_maker) for _ in range(config.batch_size)]
        self.algorithm = make_algorithm(config, envs[0].action_space)
        self.model = make_model(config, envs[0], self.algorithm)
        self.aux_model = None
        if self.algorithm.aux_kind:
            self.aux_model = keras.models.clone_model(self.model)
        self.assign = WeightAssigner(synced_weights(self.model))
        self.assign_aux = WeightAssigner(synced_weights(self.aux_model)) if self.aux_model else None
        self.noisy = bool(noisy_layers(self.model))
        # Acting reads only the first output (policy logits or Q-values): leave the value head,
        # or a whole value network, out of the per-step forward pass.
        self.predict = make_predict_fn(keras.Model(self.model.inputs, self.model.outputs[:1]))
        self.collector = Collector(
            envs, config.state_to_input or _identity, self.predict,
            lambda outputs, steps: self.algorithm.act(outputs, self.rng, steps),
            config.rollout_maxlen, self.algorithm.behaviour_size, seed)
        self.gradient_step = GradientStep(self.algorithm, self.model, self.aux_model)
        self.pusher = AsyncPusher(params)
        self.version = self.aux_version = -1
        self.total_steps = 0
        self.pushes = 0
        self._stats: dict = {}

    def sync(self) -> None:
        """Pull weights if the server has newer ones; NoisyNet draws fresh noise at each sync."""
        update = self.params.get_weights(self.version, self.aux_version)
        if update is None:
            return
        self.assign(update.weights)
        self.version = update.version
        if update.aux is not None:
            self.assign_aux(update.aux)
            self.aux_version = update.aux_version
        if self.noisy:
            resample_noise(self.model)
        self.predict.refresh()

    def _report(self) -> WorkerReport:
        returns, lengths, steps = self.collector.take_episode_stats()
        self.total_steps += steps
        return WorkerReport(self.index, steps, returns, lengths, self._stats)

    def _learn(self, lists: list, weights: np.ndarray | None = None) -> tuple[PushResult, np.ndarray]:
        batch = pack_lists(lists, self.config.discount, weights)
        grads, self._stats, priorities = self.gradient_step(batch)
        result = self.pusher.push(grads, self.version, self._report())
        self.pushes += 1
        return result, priorities

    def run_once(self) -> PushResult:
        """Collect one batch and learn from it (online and/or replayed); returns the last reply."""
        self.sync()
        lists = self.collector.collect(self.config.batch_size, self.total_steps)
        result = None
        if self.config.online_learning:
            result, _ = self._learn(lists)
        if self.replay is not None and not (result and result.stop):
            result = self._replay(lists) or result
        if result is None:              # nothing learned yet: still report the env steps
            result = self.pusher.push(None, self.version, self._report())
        return result

    def _replay(self, lists: list) -> PushResult | None:
        self.replay.insert(lists)
        result = None
        for _ in range(self.rng.poisson(self.config.replay_ratio)):
            sample = self.replay.sample(self.config.batch_size)
            if sample is None:
                break
            self.sync()                 # learn from replay with the freshest weights
            result, priorities = self._learn(sample.lists, sample.weights)
            if self.config.replay_type == "prioritized":    # uniform replay ignores them
                self.replay.update_priorities(sample.keys, priorities)
            if result.stop:
                break
        return result

    def run(self, after_batch: Any = None) -> int:
        """Work until the parameter server says stop; returns this worker's env steps."""
        while not self.run_once().stop:
            if after_batch is not None:
                after_batch(self)
        self.pusher.close()
        log.info("worker %d done after %d env steps, %d pushes", self.index, self.total_steps,
                 self.pushes)
        return self.total_steps
