"""Each algorithm learns CartPole-v1: a fixed, seeded budget and a bar a broken learner misses.

Full solving (greedy mean >= 475) is shown by benchmarks/cartpole_solve.py; here a fixed budget
with the presets of examples/cartpole_presets.py (num_parallel=2 unless a preset sets it).
A3C also runs with its parameter server cut into two shards, which must learn the same.
Measured on 2 cores over seeds 0 and 1, the best greedy evaluation (every 10k steps) reached:
ACER 278-453, IMPALA 481-496 within 50k steps. The A3C and DQN presets (one worker x 8 envs)
solve CartPole outright (greedy mean >= 475) within 15-25k (A3C) and 35-50k (DQN) steps over
seeds 0-2 in benchmarks/compare_sb3.py. A random policy scores ~22.
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "examples"))
from cartpole_presets import PRESETS, cartpole  # noqa: E402

from drlbox.trainer import make_trainer  # noqa: E402

BAR = 120.0
BUDGET = {"a3c": 80_000, "acer": 50_000, "impala": 50_000, "dqn": 50_000}


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("algorithm, shards", [("a3c", 1), ("a3c", 2), ("acer", 1),
                                               ("impala", 1), ("dqn", 1)])
def test_algorithm_learns_cartpole(algorithm, shards, port_base):
    settings = dict(env_maker=cartpole, num_parallel=2, train_steps=BUDGET[algorithm], seed=0,
                    port_begin=port_base(), eval_interval=10_000, eval_episodes=10,
                    target_return=475.0, ps_shards=shards)
    result = make_trainer(algorithm, **{**settings, **PRESETS[algorithm]}).run()
    returns = [e.mean_return for e in result.evaluations]
    assert returns, "no evaluation was made"
    assert max(returns) >= BAR, f"{algorithm} evaluations {returns} never reached {BAR}"
