"""Array-backed sum tree over non-negative priorities, for proportional sampling."""
from __future__ import annotations

import numbers

import numpy as np
from numpy.typing import ArrayLike


def _check_priorities(priorities: np.ndarray) -> None:
    """Raise ValueError naming the first priority that is negative, NaN or infinite."""
    bad = ~(np.isfinite(priorities) & (priorities >= 0))
    if bad.any():
        value = float(priorities[bad].flat[0])
        raise ValueError(f"priority must be finite and >= 0, got {value!r}")


class SumTree:
    """Fixed-capacity binary tree whose leaves are priorities and inner nodes their sums.

    The tree is heap-ordered in flat arrays with the root at position 1 and the leaves at
    ``[leaf0, leaf0 + capacity)``, where ``leaf0`` is ``capacity`` rounded up to a power of
    two. Padding to a power of two keeps every leaf at the same depth, so prefix-sum order
    equals index order and ``find`` is one vectorised step per level. Alongside the sums we
    keep max and min trees so the extreme priorities are O(1) to read.
    """

    def __init__(self, capacity: int) -> None:
        """Create an all-zero tree with ``capacity`` leaves (an int >= 1)."""
        if isinstance(capacity, bool) or not isinstance(capacity, numbers.Integral) or capacity < 1:
            raise ValueError(f"capacity must be an int >= 1, got {capacity!r}")
        self._capacity = int(capacity)
        self._leaf0 = 1 << (self._capacity - 1).bit_length()
        self._depth = self._leaf0.bit_length() - 1
        size = 2 * self._leaf0
        self._sum = np.zeros(size, dtype=np.float64)
        self._max = np.zeros(size, dtype=np.float64)
        # Zero leaves hold +inf in the min tree so the minimum is over nonzero leaves only.
        self._min = np.full(size, np.inf, dtype=np.float64)

    @property
    def capacity(self) -> int:
        """Number of leaves."""
        return self._capacity

    @property
    def total(self) -> float:
        """Sum of all priorities."""
        return float(self._sum[1])

    @property
    def max_priority(self) -> float:
        """Largest priority, or 0.0 when every leaf is zero."""
        return float(self._max[1])

    @property
    def min_priority(self) -> float:
        """Smallest nonzero priority, or 0.0 when every leaf is zero."""
        value = float(self._min[1])
        return 0.0 if value == np.inf else value

    def _leaf_positions(self, indices: ArrayLike) -> np.ndarray:
        """Map leaf indices to array positions, raising IndexError for any out of range."""
        idx = np.asarray(indices)
        if idx.size and not np.issubdtype(idx.dtype, np.integer):
            raise IndexError(f"leaf indices must be integers, got dtype {idx.dtype}")
        idx = idx.astype(np.int64, copy=False)
        out_of_range = (idx < 0) | (idx >= self._capacity)
        if out_of_range.any():
            raise IndexError(f"leaf index {int(idx[out_of_range].flat[0])} out of range "
                             f"[0, {self._capacity})")
        return idx + self._leaf0

    def _set_leaves(self, positions: np.ndarray, values: np.ndarray) -> None:
        """Write leaf values into all three trees (no propagation)."""
        self._sum[positions] = values
        self._max[positions] = values
        self._min[positions] = np.where(values > 0, values, np.inf)

    def _refresh(self, nodes: np.ndarray) -> None:
        """Recompute inner ``nodes`` from their children.

        Recomputing rather than adding deltas keeps each parent exactly equal to the float
        sum of its children, so rounding never drifts and ``find`` stays consistent.
        """
        left, right = 2 * nodes, 2 * nodes + 1
        self._sum[nodes] = self._sum[left] + self._sum[right]
        self._max[nodes] = np.maximum(self._max[left], self._max[right])
        self._min[nodes] = np.minimum(self._min[left], self._min[right])

    def update(self, index: int, priority: float) -> None:
        """Set the priority of leaf ``index``."""
        # A scalar walk up the tree: the replay calls this on every append, where the
        # per-level np.unique of update_many would dominate.
        node = int(self._leaf_positions(index))
        value = np.float64(priority)
        _check_priorities(np.asarray([value]))
        self._sum[node] = self._max[node] = value
        self._min[node] = value if value > 0 else np.inf
        for _ in range(self._depth):
            node >>= 1
            left, right = 2 * node, 2 * node + 1
            self._sum[node] = self._sum[left] + self._sum[right]
            self._max[node] = max(self._max[left], self._max[right])
            self._min[node] = min(self._min[left], self._min[right])

    def update_many(self, indices: ArrayLike, priorities: ArrayLike) -> None:
        """Set several leaf priorities at once; on repeated indices the last one wins."""
        values = np.asarray(priorities, dtype=np.float64).ravel()
        positions = self._leaf_positions(indices).ravel()
        if positions.shape != values.shape:
            raise ValueError(f"got {positions.size} indices but {values.size} priorities")
        _check_priorities(values)
        if positions.size == 0:
            return
        # Keep the last occurrence of each index: NumPy does not promise which of several
        # writes to the same position survives a fancy assignment.
        rev_unique, rev_first = np.unique(positions[::-1], return_index=True)
        self._set_leaves(rev_unique, values[::-1][rev_first])
        nodes = rev_unique
        for _ in range(self._depth):
            nodes = np.unique(nodes >> 1)
            self._refresh(nodes)

    def get(self, indices: ArrayLike) -> np.ndarray:
        """Priorities of the given leaves (same shape as ``indices``)."""
        return self._sum[self._leaf_positions(indices)]

    def find(self, prefix_sums: ArrayLike) -> np.ndarray:
        """Leaf index for each value ``v`` in ``[0, total)``: the leaf whose prefix-sum
        interval ``[cumsum_before, cumsum_before + priority)`` contains ``v``.

        Zero-priority leaves are never returned. A value equal to ``total`` is tolerated
        (it maps to the last nonzero leaf) because ``u * total`` with ``u < 1`` can round
        up to ``total``.
        """
        values = np.array(prefix_sums, dtype=np.float64)  # a copy: it is consumed below
        total = self.total
        if total <= 0:
            raise ValueError("cannot find in a sum tree whose total priority is 0")
        bad = ~((values >= 0) & (values <= total))
        if bad.any():
            raise ValueError(f"prefix sum must be in [0, total={total!r}], "
                             f"got {float(values[bad].flat[0])!r}")
        nodes = np.ones(values.shape, dtype=np.int64)
        for _ in range(self._depth):
            left = 2 * nodes
            left_sum = self._sum[left]
            # Only step right into a subtree with mass: every node we visit then has a
            # positive sum, so the leaf we reach has a positive priority even when float
            # rounding leaves ``values`` slightly past the end of the right subtree.
            go_right = (values >= left_sum) & (self._sum[left + 1] > 0)
            values = np.where(go_right, values - left_sum, values)
            nodes = left + go_right
        return nodes - self._leaf0
