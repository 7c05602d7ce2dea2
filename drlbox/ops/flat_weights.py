"""A model's weight set as one flat float32 vector, on the host and inside compiled graphs.

Moving one vector in or out of TensorFlow costs one tensor conversion instead of one per
variable, which is most of the cost of a small network's weight set. Variables of other dtypes
(rare: integer state) stay separate arrays.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

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
        self.offsets = [0, *np.cumsum(self.sizes, dtype=np.int64).tolist()]
        self._bounds = self.offsets[1:-1]
        self.trainable = [bool(v.trainable) for v in self.flat_variables]

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


# --- shards --------------------------------------------------------------------------------
class Piece(NamedTuple):
    """The part of one float32 variable that falls into a slice of the flat vector."""

    name: str            # the variable's name
    start: int           # where the part starts and stops, as offsets into the slice
    stop: int
    shape: tuple         # the variable's shape when the slice holds all of it, else (size,)
    trainable: bool


def shard_bounds(size: int, shards: int) -> list[tuple[int, int]]:
    """Contiguous, near-equal slices [start, stop) of a flat vector of `size`, one per shard."""
    if shards < 1 or size < shards:
        raise ValueError(f"cannot cut {size} weights into {shards} parameter-server shards; "
                         f"use between 1 and {max(size, 1)} shards")
    cuts = [size * k // shards for k in range(shards + 1)]
    return list(zip(cuts[:-1], cuts[1:]))


def slice_pieces(layout: WeightLayout, start: int, stop: int) -> list[Piece]:
    """The variables (or parts of them) that make up the slice [start, stop), in order.

    A shard keeps one array per piece so that an optimizer sees whole variables with their
    shapes wherever a slice boundary does not cut through one.
    """
    pieces = []
    for i, var in enumerate(layout.flat_variables):
        lo, hi = max(start, layout.offsets[i]), min(stop, layout.offsets[i + 1])
        if lo >= hi:
            continue
        whole = (lo, hi) == (layout.offsets[i], layout.offsets[i + 1])
        name = var.path if hasattr(var, "path") else var.name
        pieces.append(Piece(name, lo - start, hi - start,
                            layout.shapes[i] if whole else (hi - lo,), layout.trainable[i]))
    return pieces
