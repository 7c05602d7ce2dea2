"""Each algorithm learns CartPole-v1: a fixed, seeded budget and a bar a broken learner misses.

Full solving (greedy mean >= 475) is shown by benchmarks/cartpole_solve.py; here 50k env steps
with num_parallel=2 and the presets of examples/cartpole_presets.py. Measured on 2 cores, the
best of five greedy evaluations reached 217-496 over seeds 0 and 1 (A3C 217-435, ACER 278-453,
IMPALA 481-496, DQN 415-471); a random policy scores about 22.
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "examples"))
from cartpole_presets import PRESETS, cartpole, mlp_features  # noqa: E402

from drlbox.trainer import make_trainer  # noqa: E402

BAR = 120.0


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("algorithm", ["a3c", "acer", "impala", "dqn"])
def test_algorithm_learns_cartpole(algorithm, port_base):
    result = make_trainer(algorithm, env_maker=cartpole, feature_maker=mlp_features,
                          num_parallel=2, train_steps=50_000, seed=0, port_begin=port_base(),
                          eval_interval=10_000, eval_episodes=10, target_return=475.0,
                          **PRESETS[algorithm]).run()
    returns = [e.mean_return for e in result.evaluations]
    assert returns, "no evaluation was made"
    assert max(returns) >= BAR, f"{algorithm} evaluations {returns} never reached {BAR}"
