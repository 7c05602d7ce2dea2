"""The rollout worker role: pull weights when they changed, collect, compute gradients, push.

One loop serves all four algorithms. Each batch of `batch_size` rollout lists is learned from
online (when `online_learning`), inserted into replay (when a replay peer is given), and followed
by Poisson(`replay_ratio`) replayed batches. The worker steps `batch_size` env copies in lockstep
so one inference call serves them all. Pushes, and the weight fetch after each, run on a
background thread while the next batch is collected.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from drlbox.algorithms import make_algorithm, make_model
from drlbox.envs import make_env
from drlbox.layers.noisy import noisy_layers, resample_noise, synced_weights
from drlbox.metrics import LATENCY_BUCKETS, BucketCounts, RecentReturns
from drlbox.ops.compiled import FlatFunction
from drlbox.ops.fast_forward import make_predict_fn
from drlbox.ops.flat_weights import WeightLayout
from drlbox.ops.rollout import pack_lists
from drlbox.roles.collector import Collector
from drlbox.roles.interfaces import (ParameterPeer, PushResult, ReplayPeer, WeightsUpdate,
                                     WorkerReport)
from drlbox.roles.limits import Refused

log = logging.getLogger(__name__)


def _identity(obs: Any) -> Any:
    return obs


class WeightAssigner:
    """Copies weight arrays into `variables` (in that order) in one compiled call.

    One eager `assign` costs ~0.15 ms; a graph assigning all variables costs about as much as
    one, which matters when weights change before every batch.
    """

    def __init__(self, variables: list):
        self.variables = variables
        self._assign = FlatFunction(self._assign_all,
                                    [tf.TensorSpec(v.shape, v.dtype) for v in variables])

    def _assign_all(self, *values) -> None:
        for var, value in zip(self.variables, values):
            var.assign(value)

    def __call__(self, arrays: list) -> None:
        if self.variables:
            self._assign(*arrays)


class GradientStep:
    """Compiled loss-and-gradient of the algorithm on a packed batch, at given weights.

    The weights come in as one flat vector that stands in for the model's float32 variables
    during the call (keras.StatelessScope): one tensor crosses into TensorFlow instead of one
    per variable, and pulled weights need no separate assignment. State the call changes
    (dropout seeds, say) is written back to its variables. The gradient comes out as one flat
    vector in the same layout (zeros for weights that are not trained), clipped here by its
    global norm to `clip_norm`: the worker is the one place that holds all of it, however
    many parameter-server shards apply its slices.
    """

    def __init__(self, algorithm: Any, model: keras.Model, aux_model: keras.Model | None,
                 layout: WeightLayout, clip_norm: float):
        self.algorithm, self.model, self.aux_model = algorithm, model, aux_model
        self.layout, self.clip_norm = layout, float(clip_norm)
        self.variables = list(model.trainable_variables)
        mapped = {id(v) for v in layout.flat_variables}
        unmapped = [v.path for v in self.variables if id(v) not in mapped]
        if unmapped:
            raise TypeError(f"drlbox trains float32 weights only; {unmapped} are "
                            f"{[str(v.dtype) for v in self.variables if id(v) not in mapped]}")
        self._stateful = [v for m in (model, aux_model) if m is not None for v in m.variables
                          if id(v) not in mapped]
        self._keys: list[str] = []
        self._step = None         # traced for the first batch's keys and dtypes

    def _compute(self, flat: tf.Tensor, *batch_values: tf.Tensor):
        batch = dict(zip(self._keys, batch_values))
        values = self.layout.graph_split(flat)
        value_of = {id(v): t for v, t in zip(self.layout.flat_variables, values)}
        with tf.GradientTape() as tape:
            tape.watch(values)
            with keras.StatelessScope(state_mapping=list(zip(self.layout.flat_variables,
                                                             values))) as scope:
                out = self.algorithm.loss(self.model, self.aux_model, batch)
        for var in self._stateful:
            new_value = scope.get_current_value(var)
            if new_value is not None:
                var.assign(new_value)
        sources = [value_of[id(v)] for v in self.variables]
        grads = tape.gradient(out.loss, sources)
        grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, self.variables)]
        clipped, norm = tf.clip_by_global_norm(grads, self.clip_norm)
        grad_of = {id(v): g for v, g in zip(self.variables, clipped)}
        flat = tf.concat([tf.reshape(grad_of[id(v)], [-1]) if id(v) in grad_of
                          else tf.zeros([size], tf.float32)
                          for v, size in zip(self.layout.flat_variables, self.layout.sizes)], 0)
        return flat, {**out.stats, "grad_norm": norm}, out.priorities

    @staticmethod
    def _spec(key: str, value: np.ndarray) -> tf.TensorSpec:
        # Time and list counts vary between batches; everything else is fixed.
        fixed = 1 if key == "weights" else 2
        return tf.TensorSpec((None,) * fixed + value.shape[fixed:], value.dtype)

    def __call__(self, flat_weights: np.ndarray,
                 batch: dict[str, np.ndarray]) -> tuple[np.ndarray, dict, np.ndarray]:
        """(flat clipped gradient, scalar stats, replay priorities)."""
        if self._step is None:
            self._keys = sorted(batch)
            self._step = FlatFunction(self._compute, [self.layout.spec()] + [
                self._spec(key, batch[key]) for key in self._keys])
        grad, stats, priorities = self._step(flat_weights, *[batch[k] for k in self._keys])
        return grad.numpy(), {k: float(v) for k, v in stats.items()}, priorities.numpy()


class AsyncExchange:
    """Pushes from a background thread with at most one push in flight, and fetches the weights
    as soon as each push is answered, so the worker collects its next batch while the parameter
    server applies the last one and sends the result (asynchronous, as A3C is).

    `push` answers with the reply to the previous push: a stop is seen one batch later. Weights
    are fetched by this thread alone, one fetch after another, so each fetch is at least as new
    as the one before; a fetch asks only for weights newer than the previous fetch's.
    """

    def __init__(self, params: ParameterPeer):
        self.params = params
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="exchange")
        self._pending: Future | None = None
        self._known = (-1, -1)          # (version, aux version) of the newest fetch
        self._fetched: WeightsUpdate | None = None
        self.last = PushResult(-1, 0, False)
        self.push_seconds = BucketCounts(LATENCY_BUCKETS)     # observed by this thread only

    def push(self, gradient: np.ndarray | None, base_version: int,
             report: WorkerReport) -> PushResult:
        """Queue this push and the fetch after it; return the newest reply received so far."""
        self.wait()
        self._pending = self._pool.submit(self._exchange, gradient, base_version, report)
        return self.last

    def _exchange(self, gradient: np.ndarray | None, base_version: int,
                  report: WorkerReport) -> tuple[PushResult, WeightsUpdate | None]:
        started = time.perf_counter()
        result, update = self.params.push_and_pull(gradient, base_version, report, *self._known)
        self.push_seconds.observe(time.perf_counter() - started)
        if update is not None:
            self._known = (update.version, update.aux_version)
        return result, update

    def wait(self) -> PushResult:
        """Block until the exchange in flight is done (its error, if any, is raised here)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self.last, update = pending.result()
            if update is not None:
                self._fetched = merge_updates(self._fetched, update)
        return self.last

    def follow(self, update: WeightsUpdate | None) -> None:
        """Fetch only weights newer than `update` (the worker's first pull) from now on."""
        if update is not None:
            self._known = (update.version, update.aux_version)

    def take_weights(self) -> WeightsUpdate | None:
        """The weights fetched since the last call, if any changed."""
        update, self._fetched = self._fetched, None
        return update

    def close(self) -> PushResult:
        """Finish the exchange in flight and stop the thread."""
        result = self.wait()
        self._pool.shutdown()
        return result


def merge_updates(older: WeightsUpdate | None, newer: WeightsUpdate) -> WeightsUpdate:
    """`newer`, keeping `older`'s aux weights when `newer` brings none."""
    if older is None or newer.aux is not None or older.aux is None:
        return newer
    return newer._replace(aux_version=older.aux_version, aux=older.aux)


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
        if self.algorithm.uses_aux:
            self.aux_model = keras.models.clone_model(self.model)
        synced = synced_weights(self.model)
        self.layout = WeightLayout(synced)
        self.noisy = bool(noisy_layers(self.model))
        # Acting reads only the first output (policy logits or Q-values): leave the value head,
        # or a whole value network, out of the per-step forward pass.
        self.predict = make_predict_fn(keras.Model(self.model.inputs, self.model.outputs[:1]))
        # The gradient step takes the weights as an argument; the variables themselves need
        # them only when acting reads them (NoisyNet layers, TensorFlow inference).
        self.variables_read = self.noisy or self.predict.backend != "numpy"
        self.assign = WeightAssigner(synced if self.variables_read else
                                     self.layout.other_variables)
        self.assign_aux = WeightAssigner(synced_weights(self.aux_model)) if self.aux_model else None
        self.collector = Collector(
            envs, config.state_to_input or _identity, self.predict,
            lambda outputs, steps: self.algorithm.act(outputs, self.rng, steps),
            config.rollout_maxlen, self.algorithm.behaviour_size, seed)
        self.gradient_step = GradientStep(self.algorithm, self.model, self.aux_model, self.layout,
                                          config.opt_clip_norm)
        self.aux_layout = WeightLayout(synced_weights(self.aux_model)) if self.aux_model else None
        self.flat_weights = self.layout.flat([v.numpy() for v in synced])
        self._others = self.layout.others([v.numpy() for v in synced])
        self.exchange = AsyncExchange(params)
        self.version = self.aux_version = -1
        self.total_steps = 0
        self.pushes = 0
        self.returns = RecentReturns()        # training episodes, for the metrics
        self._stats: dict = {}

    def sync(self) -> None:
        """Take the weights fetched after the last push, if they changed (the first time, pull
        them); NoisyNet draws fresh noise at each sync."""
        if self.version < 0:
            update = self.params.get_weights(self.version, self.aux_version)
            self.exchange.follow(update)
        else:
            update = self.exchange.take_weights()
        if update is None:
            return
        self._others = update.others or self._others
        arrays = self.layout.merge(update.weights, self._others)
        self.flat_weights = update.weights
        self.assign(arrays if self.variables_read else self._others)
        self.version = update.version
        if update.aux is not None:
            self.assign_aux(self.aux_layout.merge(update.aux, self._others))
            self.aux_version = update.aux_version
        if self.noisy:
            resample_noise(self.model)
        self.predict.refresh({id(v): a for v, a in zip(self.layout.variables, arrays)})

    def _report(self) -> WorkerReport:
        returns, lengths, steps = self.collector.take_episode_stats()
        self.total_steps += steps
        self.returns.add(returns)
        return WorkerReport(self.index, steps, returns, lengths, self._stats)

    def _learn(self, lists: list, weights: np.ndarray | None = None) -> tuple[PushResult, np.ndarray]:
        batch = pack_lists(lists, self.config.discount, weights)
        grad, self._stats, priorities = self.gradient_step(self.flat_weights, batch)
        result = self.exchange.push(grad, self.version, self._report())
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
            result = self.exchange.push(None, self.version, self._report())
        return result

    def _replay(self, lists: list) -> PushResult | None:
        self.replay.insert(lists)
        result = None
        for _ in range(self.rng.poisson(self.config.replay_ratio)):
            sample = self.replay.sample(self.config.batch_size)
            if sample is None:
                break
            self.sync()                 # learn from replay with the newest fetched weights
            result, priorities = self._learn(sample.lists, sample.weights)
            if self.config.replay_type == "prioritized":    # uniform replay ignores them
                try:
                    self.replay.update_priorities(sample.keys, priorities)
                except Refused as err:
                    # A replay server restarted since the sample: its memory never held them.
                    log.warning("priorities not updated: %s", err)
            if result.stop:
                break
        return result

    def run(self, after_batch: Any = None) -> int:
        """Work until the parameter server says stop; returns this worker's env steps."""
        while not self.run_once().stop:
            if after_batch is not None:
                after_batch(self)
        self.exchange.close()
        log.info("worker %d done after %d env steps, %d pushes", self.index, self.total_steps,
                 self.pushes)
        return self.total_steps
