"""Replay memories (uniform and prioritized) of opaque rollout items, NumPy only."""
from drlbox.replay.memory import (MAX_REPLAY_LEN, PrioritizedReplay, ReplayNotReady, Sample,
                                  UniformReplay, check_replay, make_replay)
from drlbox.replay.sum_tree import SumTree

__all__ = ["MAX_REPLAY_LEN", "PrioritizedReplay", "ReplayNotReady", "Sample", "SumTree",
           "UniformReplay", "check_replay", "make_replay"]
