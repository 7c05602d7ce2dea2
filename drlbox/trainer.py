"""`make_trainer(algorithm, **kwargs).run()`: train an agent with one call on this machine."""
from __future__ import annotations

from typing import Any

import numpy as np

from drlbox.config import TrainerConfig, trainer_config
from drlbox.launch.local import LocalRun, TrainResult


def check_makers(config: TrainerConfig) -> None:
    """Build the env and model once here, so a mistake fails in the user's own process.

    Calls env_maker, the model makers and state_to_input on a real observation, and runs the
    model on it: the message then names what to fix rather than a role process dying later.
    """
    from drlbox.algorithms import make_algorithm, make_model
    from drlbox.envs import make_env

    env = make_env(config.env_maker)
    try:
        algorithm = make_algorithm(config, env.action_space)
        model = make_model(config, env, algorithm)
        obs, _ = env.reset(seed=config.seed)
        x = obs if config.state_to_input is None else config.state_to_input(obs)
        x = np.asarray(x, np.float32)[np.newaxis]
        expected = tuple(model.inputs[0].shape[1:])
        if len(model.inputs) != 1 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"the model takes inputs of shape {expected} but an observation "
                             f"becomes {tuple(x.shape[1:])} after state_to_input; make them "
                             f"agree (state_to_input maps observation -> model input)")
        model(x)
        from drlbox.layers.noisy import synced_weights
        from drlbox.ops.flat_weights import WeightLayout, shard_bounds

        shard_bounds(WeightLayout(synced_weights(model)).size, config.ps_shards)
    finally:
        env.close()


class Trainer:
    """A configured training run; `run()` trains and returns a TrainResult."""

    def __init__(self, config: TrainerConfig):
        self.config = config

    def run(self) -> TrainResult:
        """Train until train_steps (or target_return, or a stop); blocks until done."""
        check_makers(self.config)
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
