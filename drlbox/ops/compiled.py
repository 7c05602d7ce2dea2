"""TensorFlow functions traced once and called with a flat list of arrays, cheaply.

A concrete function's public call matches every argument against its signature, about 0.3 ms
for a handful of arguments on a 2-core machine: as much as a small network's gradient step. The
hot paths (gradient steps, weight assignment) call the concrete function's flat entry point,
which takes the tensors in signature order. That entry point is private TensorFlow API (read
through drlbox.ops.keras_internals), so where a TensorFlow lacks it the public call stands in.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import tensorflow as tf

from drlbox.ops import keras_internals as ki

logger = logging.getLogger(__name__)


def _trace(fn: Callable, specs: Sequence[tf.TensorSpec]) -> Any:
    """`fn`'s concrete function, traced without AutoGraph when it allows.

    drlbox's losses and Keras 3 layers use no Python control flow on tensors, and tracing them
    without AutoGraph's source conversion takes less than half the time (0.23 s against 0.55 s
    of CPU for A3C's gradient step on a 200/100 MLP): a worker's first gradient comes that much
    sooner. A user's layer that branches on a tensor needs AutoGraph, and gets it.
    """
    try:
        return tf.function(fn, autograph=False).get_concrete_function(*specs)
    except (TypeError, ValueError, NotImplementedError):   # e.g. a tensor used as a bool
        return tf.function(fn).get_concrete_function(*specs)


def _flat_call_or_none(concrete: Any) -> Callable | None:
    """The flat entry point of `concrete`, or None (with a warning) when this
    TensorFlow lacks it."""
    try:
        return ki.flat_call(concrete)
    except ki.PrivateApiChanged as e:
        logger.warning("%s", e)
        return None


class FlatFunction:
    """`fn` traced for `specs` (one TensorSpec per positional argument), called with arrays."""

    def __init__(self, fn: Callable, specs: Sequence[tf.TensorSpec]):
        self.concrete = _trace(fn, specs)
        self._dtypes = [spec.dtype for spec in specs]
        self._flat_call = _flat_call_or_none(self.concrete)

    def __call__(self, *arrays: Any) -> Any:
        if len(arrays) != len(self._dtypes):
            raise TypeError(f"expected {len(self._dtypes)} arrays, got {len(arrays)}")
        if self._flat_call is None:
            return self.concrete(*arrays)
        return self._flat_call([tf.convert_to_tensor(a, dtype=d)
                                for a, d in zip(arrays, self._dtypes)])
