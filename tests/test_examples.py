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
def test_breakout_acer_runs_saves_and_evaluates(tmp_path, port_base):
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
        train_steps=300, save_dir=str(tmp_path), port_begin=port_base(), seed=0,
    ).run()
    assert result.state == "done", result.message
    assert result.global_steps >= 300
    assert result.updates > 0
    assert not result.failed_roles

    path = tmp_path / "model_final.keras"
    assert str(path) in [c.path for c in result.checkpoints]
    model = keras.models.load_model(path, compile=False)
    assert [tuple(t.shape) for t in model.outputs] == [(None, 4), (None, 4)]

    def play(policy_type, seed=0):
        return make_evaluator(
            "acer", env_maker=short_breakout, state_to_input=breakout_acer.state_to_input,
            load_model=str(path), num_episodes=1, policy_type=policy_type, seed=seed,
        ).run().returns

    # The saved model plays whole episodes both ways; greedy play with the same seed is the
    # same game again (the model, the env's seeding and the policy are all deterministic).
    stochastic, greedy = play("stochastic"), play("greedy")
    assert len(stochastic) == 1 and len(greedy) == 1
    assert greedy == play("greedy")


@pytest.mark.slow
def test_pendulum_a3c_learns(tmp_path, port_base):
    """150k steps of the example's settings lift the greedy mean return far beyond noise.

    Measured (10 greedy episodes on the same start states; seeds 0-3, 5 runs): untrained -1188
    to -1285, after 150k steps -212 to -278 (gains of 910-1050, about 25-50 s of training).
    Runs that have not learned the swing-up (30k-60k steps) gain 20-220.
    """
    import pendulum_a3c

    before = pendulum_a3c.greedy_mean_return(
        pendulum_a3c.save_untrained_model(str(tmp_path / "untrained.keras"), seed=0))
    result = pendulum_a3c.train(str(tmp_path), 150_000, seed=0, port_begin=port_base())
    assert result.state == "done", result.message
    assert not result.failed_roles
    after = pendulum_a3c.greedy_mean_return(str(tmp_path / "model_final.keras"))
    assert before < -900, f"the untrained policy already does well: {before:.1f}"
    assert after > before + 400, f"greedy mean return {before:.1f} -> {after:.1f}"


@pytest.mark.slow
def test_make_train_solves_cartpole_and_prints_no_tensorflow_log_lines(tmp_path):
    """`make train`'s script, as a new user runs it: solved, evaluated, and quiet."""
    import re
    import subprocess

    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "DRLBOX_TF_LOGS", "DRLBOX_VERBOSE")}
    done = subprocess.run([sys.executable, os.path.join(EXAMPLES, "train_cartpole.py")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    # The script plays saved models until one averages >= 475 and says how to load it.
    played = re.findall(r"(runs/cartpole_a3c/model_\w+\.keras) \(.*mean return ([\d.]+)",
                        done.stdout)
    assert played and float(played[-1][1]) >= 475.0, done.stdout
    assert (tmp_path / played[-1][0]).exists()
    assert f"load_model='{played[-1][0]}'" in done.stdout
    # TensorFlow's C++ lines look like "E0000 00:00:... cuda_platform.cc:52] failed call to ..."
    cpp_lines = [line for line in output.splitlines()
                 if re.match(r"[IWEF]\d{4} ", line) or "absl::InitializeLog" in line
                 or "cuInit" in line or "oneDNN" in line or "cpu_feature_guard" in line]
    assert cpp_lines == []
