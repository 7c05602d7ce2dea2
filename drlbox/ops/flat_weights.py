"""A model's weight set as one flat float32 vector, on the host and inside compiled graphs.

Moving one vector in or out of TensorFlow costs one tensor conversion instead of one per
variable, which is most of the cost of a small network's weight set. Variables of other dtypes
(rare: integer state) stay separate arrays.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf


class WeightLayout:
    """Where each of `variables` sits: a slice of the flat vector when float32, else apart."""

    def __init__(self, variables: Sequence):
        self.variables = list(variables)
        self.flat_index = [i for i, v in enumerate(self.variables)
                           if np.dtype(v.dtype) == np.float32]
        flat = set(self.flat_index)
        self.other_index = [i for i in range(len(self.variables)) if i not in flat]
        self.flat_variables = [self.variables[i] for i in self.flat_index]
        self.other_variables = [self.variables[i] for i in self.other_index]
        self.shapes = [tuple(v.shape) for v in self.flat_variables]
        self.sizes = [int(np.prod(shape, dtype=np.int64)) for shape in self.shapes]
        self.size = sum(self.sizes)
        self._bounds = np.cumsum(self.sizes)[:-1] if self.sizes else []

    # --- host ------------------------------------------------------------------------------
    def flat(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        """The float32 ones of `arrays` (in `variables` order) as one vector."""
        if not self.flat_index:
            return np.zeros(0, np.float32)
        return np.concatenate([np.ravel(arrays[i]) for i in self.flat_index]).astype(
            np.float32, copy=False)

    def others(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The arrays of `other_variables`, picked from `arrays` (in `variables` order)."""
        return [arrays[i] for i in self.other_index]

    def merge(self, vector: np.ndarray, others: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The inverse of (`flat`, `others`): arrays in `variables` order (views of `vector`)."""
        arrays: list = [None] * len(self.variables)
        parts = np.split(vector, self._bounds) if self.sizes else []
        for i, part, shape in zip(self.flat_index, parts, self.shapes):
            arrays[i] = part.reshape(shape)
        for i, array in zip(self.other_index, others):
            arrays[i] = array
        return arrays

    def spec(self) -> tf.TensorSpec:
        """The flat vector's TensorSpec, for a concrete function's signature."""
        return tf.TensorSpec([self.size], tf.float32)

    # --- inside a graph -----------------------------------------------------------------
    def graph_split(self, vector: tf.Tensor) -> list[tf.Tensor]:
        """The vector as one tensor per float32 variable, shaped like it."""
        if not self.sizes:
            return []
        return [tf.reshape(part, shape) for part, shape in
                zip(tf.split(vector, self.sizes), self.shapes)]

    def graph_flat(self) -> tf.Tensor:
        """The float32 variables' current values as one vector."""
        if not self.sizes:
            return tf.zeros([0], tf.float32)
        return tf.concat([tf.reshape(v, [-1]) for v in self.flat_variables], 0)
