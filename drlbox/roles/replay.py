"""The replay role: a replay memory behind the small interface rollout workers use."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from drlbox.replay import ReplayNotReady, UniformReplay
from drlbox.roles.interfaces import ReplaySample


class ReplayService:
    """Insert and sample rollout lists; `sample` answers None while the memory is not ready."""

    def __init__(self, memory: UniformReplay):
        self.memory = memory

    def insert(self, lists: Sequence[dict]) -> None:
        """Add rollout lists."""
        self.memory.extend(lists)

    def sample(self, batch_size: int) -> ReplaySample | None:
        """A batch of lists with keys and importance weights, or None when not ready."""
        try:
            drawn = self.memory.sample(batch_size)
        except ReplayNotReady:
            return None
        return ReplaySample(list(drawn.items), drawn.keys, drawn.weights)

    def update_priorities(self, keys: np.ndarray, priorities: np.ndarray) -> None:
        """New priorities for sampled lists (no-op for uniform replay)."""
        self.memory.update_priorities(keys, priorities)

    def __len__(self) -> int:
        return len(self.memory)

    @property
    def ready(self) -> bool:
        """True once the memory holds minlen lists."""
        return self.memory.ready
