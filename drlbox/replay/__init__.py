"""Replay memories (uniform and prioritized) of opaque rollout items, NumPy only."""
from drlbox.replay.memory import (PrioritizedReplay, ReplayNotReady, Sample, UniformReplay,
                                  make_replay)
from drlbox.replay.sum_tree import SumTree

__all__ = ["PrioritizedReplay", "ReplayNotReady", "Sample", "SumTree", "UniformReplay",
           "make_replay"]
