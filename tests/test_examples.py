"""The examples run: Breakout ACER end to end for a few hundred steps, Pendulum A3C learns.

The example modules are imported from examples/ (their makers live at module level; training
only starts under ``__main__``). Putting examples/ on sys.path also lets the spawned role
processes unpickle the makers, since spawned children inherit the parent's sys.path.
"""
from __future__ import annotations

import os
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
if EXAMPLES not in sys.path:
    sys.path.insert(0, EXAMPLES)


@pytest.mark.slow
def test_breakout_acer_runs_saves_and_evaluates(tmp_path):
    pytest.importorskip("ale_py")
    pytest.importorskip("cv2")
    import gymnasium
    import keras

    import breakout_acer
    import drlbox.layers  # noqa: F401  (registers drlbox's layers for load_model)
    from drlbox.evaluator import make_evaluator
    from drlbox.trainer import make_trainer

    def short_breakout():
        # An untrained greedy policy may never press FIRE: cap episodes for CI.
        return gymnasium.wrappers.TimeLimit(breakout_acer.make_env(), max_episode_steps=200)

    result = make_trainer(
        "acer", env_maker=short_breakout, state_to_input=breakout_acer.state_to_input,
        model_maker=breakout_acer.make_model, num_parallel=1, batch_size=1, rollout_maxlen=8,
        replay_kwargs=dict(maxlen=50, minlen=2),
        replay_ratio=1,        # replay is exercised; fewer CNN updates keep the test short
        train_steps=300, save_dir=str(tmp_path), port_begin=4300, seed=0,
    ).run()
    assert result.state == "done", result.message
    assert result.global_steps >= 300
    assert result.updates > 0
    assert not result.failed_roles

    path = tmp_path / "model_final.keras"
    assert str(path) in [c.path for c in result.checkpoints]
    model = keras.models.load_model(path, compile=False)
    assert [tuple(t.shape) for t in model.outputs] == [(None, 4), (None, 4)]

    for policy_type in ("stochastic", "greedy"):
        returns = make_evaluator(
            "acer", env_maker=short_breakout, state_to_input=breakout_acer.state_to_input,
            load_model=str(path), num_episodes=1, policy_type=policy_type, seed=0,
        ).run().returns
        assert len(returns) == 1 and returns[0] >= 0.0
