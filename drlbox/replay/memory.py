"""Thread-safe ring-buffer replay memories (uniform and prioritized) of opaque items."""
from __future__ import annotations

import inspect
import math
import numbers
import threading
from typing import Any, Iterable, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from drlbox.replay.sum_tree import SumTree


# The most items a memory may hold: each slot costs ~16 bytes before any item is stored, so a
# typo'd maxlen must not take a server's memory.
MAX_REPLAY_LEN = 10_000_000


class ReplayNotReady(RuntimeError):
    """Raised when sampling from a memory that holds fewer items than it needs."""


class Sample(NamedTuple):
    """A sampled batch: the items, their keys and their importance-sampling weights."""

    items: list
    keys: np.ndarray
    weights: np.ndarray


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """Return ``value`` as an int if it is an integer in ``[low, high]``, else ValueError."""
    allowed = f"an int >= {low}" if high is None else f"an int in [{low}, {high}]"
    is_int = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not is_int or value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return int(value)


def _check_float(name: str, value: Any, low: float, high: float = math.inf) -> float:
    """Return ``value`` as a float if it is a finite real in ``[low, high]``, else ValueError."""
    allowed = f"a finite number >= {low}" if high == math.inf else f"a number in [{low}, {high}]"
    is_real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not is_real or not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return float(value)


def _check_sizes(maxlen: Any, minlen: Any, seed: Any) -> tuple[int, int]:
    """(maxlen, minlen) as ints once both sizes and the seed are valid, else ValueError."""
    maxlen = _check_int("maxlen", maxlen, 1, MAX_REPLAY_LEN)
    if seed is not None:
        _check_int("seed", seed, 0)
    return maxlen, _check_int("minlen", minlen, 0, maxlen)


def _check_priority_exponents(alpha: Any, beta: Any, eps: Any) -> tuple[float, float, float]:
    """(alpha, beta, eps) as floats once valid, else ValueError."""
    return (_check_float("alpha", alpha, 0.0), _check_float("beta", beta, 0.0, 1.0),
            _check_float("eps", eps, 0.0))


class UniformReplay:
    """Ring buffer of opaque items sampled uniformly with replacement."""

    def __init__(self, maxlen: int = 1000, minlen: int = 100, seed: int | None = None) -> None:
        """Hold at most ``maxlen`` items; ``sample`` needs at least ``minlen`` of them."""
        self.maxlen, self.minlen = _check_sizes(maxlen, minlen, seed)
        self._items: list[Any] = [None] * self.maxlen
        self._keys = np.full(self.maxlen, -1, dtype=np.int64)
        self._next_key = 0
        self._rng = np.random.default_rng(seed)
        # A gRPC thread pool appends, samples and updates concurrently.
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Number of items currently held."""
        return min(self._next_key, self.maxlen)

    @property
    def ready(self) -> bool:
        """Whether enough items are held to sample."""
        return len(self) >= self.minlen

    def append(self, item: Any) -> int:
        """Store ``item`` (evicting the oldest when full) and return its unique key."""
        with self._lock:
            return self._store(item)

    def extend(self, items: Iterable[Any]) -> list[int]:
        """Store each of ``items`` in order and return their keys."""
        items = list(items)  # materialise outside the lock: a generator may be slow
        with self._lock:
            return [self._store(item) for item in items]

    def sample(self, batch_size: int) -> Sample:
        """Draw ``batch_size`` items with replacement."""
        batch_size = _check_int("batch_size", batch_size, 1)
        with self._lock:
            size = len(self)
            # Even with minlen=0 an empty memory has nothing to draw from.
            if size < max(self.minlen, 1):
                raise ReplayNotReady(f"replay memory is not ready to sample: len={size}, "
                                     f"minlen={self.minlen} (need len >= max(minlen, 1))")
            slots, weights = self._draw(batch_size, size)
            items = [self._items[slot] for slot in slots]
            return Sample(items, self._keys[slots].copy(), weights.astype(np.float32))

    def update_priorities(self, keys: ArrayLike, priorities: ArrayLike) -> None:
        """No-op: uniform sampling ignores priorities."""

    def _store(self, item: Any) -> int:
        """Write ``item`` into the next ring slot; the caller holds the lock."""
        key = self._next_key
        slot = key % self.maxlen
        self._items[slot] = item
        self._keys[slot] = key
        self._on_store(slot)
        self._next_key += 1
        return key

    def _on_store(self, slot: int) -> None:
        """Hook for subclasses to react to a freshly written slot."""

    def _draw(self, batch_size: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Pick slots among the ``size`` filled ones and their weights."""
        return self._rng.integers(0, size, size=batch_size), np.ones(batch_size)


class PrioritizedReplay(UniformReplay):
    """Ring buffer sampled proportionally to ``(priority + eps) ** alpha`` (Schaul et al.)."""

    def __init__(self, maxlen: int = 1000, minlen: int = 100, alpha: float = 0.6,
                 beta: float = 0.4, eps: float = 1e-6, seed: int | None = None) -> None:
        """Like UniformReplay, plus priority exponent ``alpha``, IS exponent ``beta`` and
        ``eps`` added to every priority so no item becomes unreachable."""
        super().__init__(maxlen=maxlen, minlen=minlen, seed=seed)
        self.alpha, self.beta, self.eps = _check_priority_exponents(alpha, beta, eps)
        # The tree stores already-exponentiated priorities, so sampling needs no pow.
        self._tree = SumTree(self.maxlen)

    def update_priorities(self, keys: ArrayLike, priorities: ArrayLike) -> None:
        """Set new raw priorities for ``keys``; keys of evicted items are ignored."""
        keys = np.asarray(keys, dtype=np.int64).ravel()
        raw = np.asarray(priorities, dtype=np.float64).ravel()
        if keys.shape != raw.shape:
            raise ValueError(f"got {keys.size} keys but {raw.size} priorities")
        bad = ~(np.isfinite(raw) & (raw >= 0))
        if bad.any():
            raise ValueError(f"priorities must be finite and >= 0, got {float(raw[bad][0])!r}")
        with self._lock:
            unissued = (keys < 0) | (keys >= self._next_key)
            if unissued.any():
                raise ValueError(f"key {int(keys[unissued][0])} was never issued by this "
                                 f"replay (valid keys are 0..{self._next_key - 1})")
            # Learners report priorities late; by then the item may have been overwritten.
            live = keys >= self._next_key - self.maxlen
            values = (raw[live] + self.eps) ** self.alpha
            self._tree.update_many(keys[live] % self.maxlen, values)

    def _on_store(self, slot: int) -> None:
        """Give the new item the current max priority so it is likely seen at least once."""
        if len(self) == self.maxlen:
            # The evicted item's priority must not count towards the current max.
            self._tree.update(slot, 0.0)
        priority = self._tree.max_priority
        # 1.0 when empty, and also when every priority is 0 (eps=0): a fresh item must
        # still be reachable.
        self._tree.update(slot, priority if priority > 0 else 1.0)

    def _draw(self, batch_size: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Pick slots proportionally to priority and compute normalised IS weights."""
        total = self._tree.total
        if total <= 0:  # every priority was set to 0 (eps=0): no preference left
            return super()._draw(batch_size, size)
        slots = self._tree.find(self._rng.random(batch_size) * total)
        probs = self._tree.get(slots) / total
        weights = (size * probs) ** -self.beta
        return slots, weights / weights.max()


_REPLAY_TYPES: dict[str, type[UniformReplay]] = {
    "uniform": UniformReplay,
    "prioritized": PrioritizedReplay,
}


def check_replay(replay_type: str | None, **kwargs: Any) -> None:
    """ValueError unless ``make_replay(replay_type, **kwargs)`` would build a memory; builds
    nothing, so a server can check a submitted job's settings before it allocates anything."""
    if replay_type is None:
        return
    if replay_type not in _REPLAY_TYPES:
        raise ValueError(f"unknown replay_type {replay_type!r}; valid types are None, "
                         + ", ".join(repr(name) for name in _REPLAY_TYPES))
    signature = inspect.signature(_REPLAY_TYPES[replay_type])
    unknown = [name for name in kwargs if name not in signature.parameters]
    if unknown:
        raise ValueError(f"unknown argument(s) {', '.join(map(repr, unknown))} for "
                         f"replay_type {replay_type!r}; valid arguments are "
                         f"{', '.join(signature.parameters)}")
    args = signature.bind(**kwargs)
    args.apply_defaults()
    _check_sizes(args.arguments["maxlen"], args.arguments["minlen"], args.arguments["seed"])
    if replay_type == "prioritized":
        _check_priority_exponents(args.arguments["alpha"], args.arguments["beta"],
                                  args.arguments["eps"])


def make_replay(replay_type: str | None, **kwargs: Any) -> UniformReplay | None:
    """Build the replay named by ``replay_type`` ('uniform', 'prioritized') or None."""
    check_replay(replay_type, **kwargs)
    return None if replay_type is None else _REPLAY_TYPES[replay_type](**kwargs)
