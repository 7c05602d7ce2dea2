"""One parameter-server shard: a contiguous slice of the job's flat weight vector.

A shard holds its slice of the weights (one variable per piece, see `slice_pieces`), the
optimizer's state for it, its slice of the auxiliary weights (ACER's average net, DQN's target
net), and a version it bumps at each update. Workers clip the whole gradient by its global norm
before cutting it into slices, so clipping stays exact however many shards there are; a shard
still clips its own slice to `opt_clip_norm` (which changes nothing for an honest worker) and
refuses a slice that is not finite, so no single push can wreck the weights. It knows nothing of
gRPC or of the job's counters.
"""
from __future__ import annotations

import threading
import time
import types
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from drlbox.metrics import LATENCY_BUCKETS, BucketCounts
from drlbox.ops.compiled import FlatFunction
from drlbox.ops.flat_weights import Piece
from drlbox.ops.fused_adam import FusedAdam, can_fuse
from drlbox.roles.interfaces import ShardReply, ShardState
from drlbox.roles.limits import Refused


class GradientError(Refused):
    """Pushed gradients that do not fit the shard; nothing was applied."""


def make_optimizer(optimizer: Any, opt_kwargs: dict) -> Any:
    """Adam from the merged opt_kwargs (fused when plain), or a fresh copy of the user's
    Keras optimizer instance."""
    if isinstance(optimizer, str):
        return FusedAdam(**opt_kwargs) if can_fuse(opt_kwargs) else keras.optimizers.Adam(
            **opt_kwargs)
    return optimizer.__class__.from_config(optimizer.get_config())


def aligned_empty(size: int) -> np.ndarray:
    """A float32 vector whose data starts on a 64-byte boundary, as TensorFlow needs to use
    memory it did not allocate."""
    raw = np.empty(size + 16, np.float32)
    skip = (-raw.ctypes.data % 64) // 4
    return raw[skip:skip + size]


def as_tensor(array: np.ndarray) -> tf.Tensor:
    """`array` as a tensor without copying it (DLPack) when TensorFlow can use its memory
    directly (aligned, contiguous, writable float32); else a copy. The caller keeps the array
    unchanged while the tensor is in use."""
    if (array.dtype == np.float32 and array.flags.c_contiguous and array.flags.writeable
            and array.ctypes.data % 64 == 0):
        return tf.experimental.dlpack.from_dlpack(array.__dlpack__())
    return tf.convert_to_tensor(array, tf.float32)


def wants_weights(version: int, newer_than: int, max_staleness: int) -> bool:
    """Whether a caller holding `newer_than` should get weights of `version`: when it holds
    none, is ahead (the server restarted from a checkpoint), or lags more than max_staleness."""
    return newer_than < 0 or newer_than > version or version - newer_than > max_staleness


class ParameterShard:
    """Applies gradient slices to one slice of the weights; thread-safe.

    With the fused Adam (elementwise) the slice is one variable, updated in place; any other
    optimizer gets one variable per piece, shaped like the model's. Weights are read out of
    TensorFlow only when someone needs them: a reply, the aux rule, a snapshot.
    """

    def __init__(self, pieces: Sequence[Piece], state: ShardState, optimizer: Any,
                 clip_norm: float, aux_rule: Any = None, max_staleness: int = 0):
        self.pieces = list(pieces)
        self.size = self.pieces[-1].stop if self.pieces else 0
        if len(state.weights) != self.size:
            raise ValueError(f"the shard's state has {len(state.weights)} weights, its slice "
                             f"{self.size}")
        self._flat = isinstance(optimizer, FusedAdam)
        if self._flat:
            self._variables = [keras.Variable(np.asarray(state.weights, np.float32),
                                              name="slice")]
            self._trainable = self._variables
        else:
            self._variables = [keras.Variable(state.weights[p.start:p.stop].reshape(p.shape),
                                              trainable=p.trainable,
                                              name=p.name.rsplit("/", 1)[-1])
                               for p in self.pieces]
            self._trainable = [v for v in self._variables if v.trainable]
        # Fused Adam leaves a weight whose gradient is 0 exactly as it is; a gradient for the
        # weights that are not trained (batch-norm statistics, say) is zeroed to keep it so.
        self._frozen = [(p.start, p.stop) for p in self.pieces if not p.trainable]
        self._optimizer = optimizer
        self._optimizer.build(self._trainable)
        if state.optimizer is not None:
            for variable, value in zip(self._optimizer.variables, state.optimizer, strict=True):
                variable.assign(value)
        spec = [tf.TensorSpec([self.size], tf.float32)]
        self._apply = FlatFunction(self._apply_slice, spec)
        # One call instead of two when the new weights are needed at once (each call into
        # TensorFlow costs ~0.12 ms, as much as a small model's whole update).
        self._apply_read = FlatFunction(lambda g: (self._apply_slice(g), self._read_slice())[1],
                                        spec)
        self._read = FlatFunction(self._read_slice, [])
        self._gradient = aligned_empty(self.size)     # reused: no allocation per update
        self.clip_norm = float(clip_norm)
        self.aux_rule, self.max_staleness = aux_rule, int(max_staleness)
        self._lock = threading.Lock()
        self.version, self.updates = int(state.version), int(state.updates)
        self._weights: tuple = (self.version, np.array(state.weights, np.float32))
        self._aux = None if aux_rule is None else np.array(
            state.weights if state.aux is None else state.aux, np.float32)
        self.aux_version = int(state.aux_version)
        self.apply_seconds = BucketCounts(LATENCY_BUCKETS)    # read by the metrics collector

    def _apply_slice(self, gradient: tf.Tensor) -> None:
        """One optimizer step."""
        if self._flat:
            self._optimizer.apply([gradient], self._variables)
            return
        grads = [tf.reshape(gradient[p.start:p.stop], p.shape)
                 for p in self.pieces if p.trainable]
        self._optimizer.apply(grads, self._trainable)

    def _read_slice(self) -> tf.Tensor:
        """The slice's weights as one vector."""
        if self._flat:
            return tf.identity(self._variables[0])
        return tf.concat([tf.reshape(v, [-1]) for v in self._variables], 0)

    def _current(self) -> np.ndarray:
        """The weights of the current version (read once per version; callers hold the lock)."""
        if self._weights[0] != self.version:
            self._weights = (self.version, self._read().numpy())
        return self._weights[1]

    def _load(self, gradient: np.ndarray) -> None:
        """Put a pushed slice (float32, or bfloat16 from compress_gradients) into the gradient
        buffer as float32, clipped to clip_norm. GradientError when it does not fit or is not
        finite; the weights are untouched either way. Callers hold the lock."""
        if gradient.dtype.name not in ("float32", "bfloat16") or gradient.shape != (self.size,):
            raise GradientError(f"gradient: this shard takes {self.size} float32 (or bfloat16) "
                                f"values, got {gradient.size} {gradient.dtype}")
        np.copyto(self._gradient, gradient)
        with np.errstate(over="ignore", invalid="ignore"):
            squared = float(np.dot(self._gradient, self._gradient))
        if not np.isfinite(squared):
            raise GradientError("gradient: has NaN or infinite values (or overflows float32); "
                                "nothing was applied")
        norm = np.sqrt(squared)
        if norm > self.clip_norm:
            self._gradient *= np.float32(self.clip_norm / norm)
        for start, stop in self._frozen:
            self._gradient[start:stop] = 0.0

    def exchange(self, gradient: np.ndarray | None, base_version: int, newer_than: int,
                 aux_newer_than: int = -1, pull: bool = False) -> ShardReply:
        """Apply a gradient slice (if any); the weights go back when `wants_weights` (any
        change for a plain `pull`), the aux slice with them when the caller lacks it."""
        with self._lock:
            staleness = None
            if gradient is not None:
                started = time.perf_counter()
                self._load(gradient)
                if self.aux_rule is not None or wants_weights(self.version + 1, newer_than,
                                                              self.max_staleness):
                    self._weights = (self.version + 1,
                                     self._apply_read(as_tensor(self._gradient)).numpy())
                else:
                    self._apply(as_tensor(self._gradient))
                self.version += 1
                self.updates += 1
                staleness = self.version - 1 - base_version if base_version >= 0 else None
                if self.aux_rule is not None:
                    aux = self.aux_rule(self._aux, self._current(), self.updates)
                    if aux is not None:
                        self._aux, self.aux_version = aux, self.version
                self.apply_seconds.observe(time.perf_counter() - started)
            if pull:
                send = self.version != newer_than or (self._aux is not None
                                                      and self.aux_version != aux_newer_than)
            else:
                send = wants_weights(self.version, newer_than, self.max_staleness)
            weights = self._current() if send else None
            aux = self._aux if send and self.aux_version != aux_newer_than else None
            return ShardReply(self.version, weights, self.aux_version, aux, staleness)

    def weights(self) -> np.ndarray:
        """The current slice (an array nobody writes to)."""
        with self._lock:
            return self._current()

    def snapshot(self) -> ShardState:
        """Everything needed to resume this shard."""
        with self._lock:
            return ShardState(self._current(), self.version, self._aux, self.aux_version,
                              [np.array(v.numpy()) for v in self._optimizer.variables],
                              self.updates)


def shard_from_settings(settings: dict, state: ShardState) -> ParameterShard:
    """The shard a shard process serves, built from the coordinator's plain settings (see
    `drlbox.roles.param_server.shard_settings`): no user code runs here."""
    from drlbox.algorithms import ALGORITHM_CLASSES

    plain = types.SimpleNamespace(**settings["settings"])
    kind, spec = settings["optimizer"]
    optimizer = (make_optimizer("adam", spec) if kind == "adam"
                 else keras.optimizers.deserialize(spec))
    pieces = [Piece(name, start, stop, tuple(shape), trainable)
              for name, start, stop, shape, trainable in settings["pieces"]]
    return ParameterShard(pieces, state, optimizer, plain.opt_clip_norm,
                          ALGORITHM_CLASSES[plain.algorithm].aux_rule(plain),
                          plain.max_staleness)
