"""`make_evaluator(algorithm, **kwargs).run()`: play episodes with a saved model."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from drlbox.config import EvaluatorConfig, evaluator_config


@dataclass
class EvaluationResult:
    """Returns of the evaluation episodes."""

    returns: list

    @property
    def mean_return(self) -> float:
        """Mean undiscounted return."""
        return float(np.mean(self.returns))


class Evaluator:
    """A configured evaluation; `run()` plays the episodes and returns their returns."""

    def __init__(self, config: EvaluatorConfig):
        self.config = config

    def run(self) -> EvaluationResult:
        """Play num_episodes episodes with the saved model; print them when verbose."""
        from drlbox.launch.processes import import_tensorflow_quietly

        import_tensorflow_quietly()
        from drlbox.algorithms import ALGORITHM_CLASSES, load_keras_model
        from drlbox.envs import make_env
        from drlbox.ops.fast_forward import make_predict_fn
        from drlbox.roles.evaluator import evaluation_policy, run_episodes

        cfg = self.config
        env = make_env(cfg.env_maker)
        model = load_keras_model(cfg.load_model, cfg.load_model_custom)
        ALGORITHM_CLASSES[cfg.algorithm](cfg, env.action_space).check_model(model)
        policy = evaluation_policy(env.action_space, cfg.policy_type, cfg.policy_eps)

        def show(episode: int, total: float, length: int) -> None:
            if cfg.verbose:
                print(f"episode {episode + 1}/{cfg.num_episodes}: return {total:.2f} "
                      f"({length} steps)")

        try:
            returns = run_episodes(env, make_predict_fn(model), policy, cfg.num_episodes,
                                   cfg.state_to_input or (lambda obs: obs),
                                   np.random.default_rng(cfg.seed), cfg.render_timestep,
                                   cfg.render_end, show)
        finally:
            env.close()
        result = EvaluationResult(returns)
        if cfg.verbose:
            print(f"mean return over {len(returns)} episodes: {result.mean_return:.2f}")
        return result


def make_evaluator(algorithm: str, **kwargs: Any) -> Evaluator:
    """An evaluator for a model saved by training with 'a3c', 'acer', 'impala' or 'dqn'."""
    return Evaluator(evaluator_config(algorithm, **kwargs))
