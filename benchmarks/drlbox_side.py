"""drlbox's side of the SB3 comparison: offline evaluation of saved models, and Pong."""
from __future__ import annotations

import os
import sys

import gymnasium
import keras
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "examples"))
from nature_cnn import nature_cnn  # noqa: E402

from drlbox.algorithms import load_keras_model  # noqa: E402
from drlbox.envs import make_env  # noqa: E402
from drlbox.ops.fast_forward import make_predict_fn  # noqa: E402
from drlbox.roles.evaluator import evaluation_policy, run_episodes  # noqa: E402
from drlbox.trainer import make_trainer  # noqa: E402

SOLVED = 475.0
EPISODES = 20
EVAL_SEED_OFFSET = 10_000


def evaluate_saved(path: str, seed: int) -> float:
    """Greedy mean return of a saved CartPole model over 20 episodes."""
    env = make_env(lambda: gymnasium.make("CartPole-v1"))
    model = load_keras_model(path)
    returns = run_episodes(env, make_predict_fn(model), evaluation_policy(env.action_space,
                                                                          "greedy", 0.0),
                           EPISODES, lambda obs: obs,
                           np.random.default_rng(seed + EVAL_SEED_OFFSET))
    env.close()
    return float(np.mean(returns))


def solved_at(checkpoints: list, seed: int) -> tuple:
    """(first (steps, mean return, train seconds) that reached 475 or None, all evaluations)."""
    evals = []
    for checkpoint in sorted(checkpoints, key=lambda c: c.global_steps):
        mean = evaluate_saved(checkpoint.path, seed)
        evals.append((checkpoint.global_steps, mean, checkpoint.train_seconds))
        if mean >= SOLVED:
            return evals[-1], evals
    return None, evals


def pong_env():
    """Pong as the agent sees it: 84x84 grey, 4 frames skipped, 4 stacked, clipped reward."""
    import ale_py

    gymnasium.register_envs(ale_py)
    env = gymnasium.make("ALE/Pong-v5", frameskip=1, repeat_action_probability=0.0)
    env = gymnasium.wrappers.AtariPreprocessing(env, frame_skip=4, screen_size=84,
                                                grayscale_obs=True, noop_max=30)
    env = gymnasium.wrappers.ClipReward(env, -1.0, 1.0)
    return gymnasium.wrappers.FrameStackObservation(env, 4)


def channels_last(obs) -> np.ndarray:
    """(4, 84, 84) stacked frames -> (84, 84, 4) uint8."""
    return np.moveaxis(np.asarray(obs), 0, -1)


def nature_cnn_a3c(env) -> keras.Model:
    """The Nature CNN with A3C's (logits, value) heads."""
    inp = keras.Input((84, 84, 4))
    x = nature_cnn(inp)
    logits = keras.layers.Dense(int(env.action_space.n))(x)
    return keras.Model(inp, [logits, keras.layers.Dense(1)(x)])


def pong_trainer(steps: int, port_begin: int, **overrides):
    """A3C on Pong: one worker stepping 8 envs in lockstep, drlbox's default 32-step lists.

    (With 2 workers x 4 envs and SB3's n_steps=5 the 6.7 MB weight set crossed gRPC every 20
    steps: 205 steps/s; one worker with 32-step lists moves it every 256 steps.)
    """
    return make_trainer("a3c", env_maker=pong_env, state_to_input=channels_last,
                        model_maker=nature_cnn_a3c, num_parallel=1, batch_size=8,
                        rollout_maxlen=32, train_steps=steps, port_begin=port_begin, seed=0,
                        opt_kwargs=dict(learning_rate=7e-4), **overrides)
