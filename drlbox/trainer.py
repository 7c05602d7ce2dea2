"""`make_trainer(algorithm, **kwargs).run()`: train an agent with one call on this machine."""
from __future__ import annotations

from typing import Any

from drlbox.config import TrainerConfig, trainer_config
from drlbox.launch.local import LocalRun, TrainResult


class Trainer:
    """A configured training run; `run()` trains and returns a TrainResult."""

    def __init__(self, config: TrainerConfig):
        self.config = config

    def run(self) -> TrainResult:
        """Train until train_steps (or target_return, or a stop); blocks until done."""
        result = LocalRun(self.config).run()
        if self.config.verbose:
            print(f"drlbox: {result.state} after {result.global_steps} env steps, "
                  f"{result.updates} updates in {result.wall_seconds:.1f} s; {result.message}")
            for checkpoint in result.checkpoints[-1:]:
                print(f"drlbox: final model saved to {checkpoint.path}")
        return result


def make_trainer(algorithm: str, **kwargs: Any) -> Trainer:
    """A trainer for 'a3c', 'acer', 'impala' or 'dqn' (case-insensitive) with the given args.

    Every argument of the original drlbox is accepted with its default (see the README); an
    unknown argument, one of another algorithm, or a bad value raises an error naming it.
    """
    return Trainer(trainer_config(algorithm, **kwargs))
