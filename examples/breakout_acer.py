"""ACER on Atari Breakout with the Nature CNN: the original drlbox Atari example.

    python examples/breakout_acer.py [--steps N] [--num-parallel K] [--save-dir DIR]
                                     [--port-begin P]

The environment is Gymnasium's own Atari stack: 84x84 grey frames, 4 frames skipped per action,
a life lost ends the episode ("episodic life"; Gymnasium's reset then starts a new game, so
returns count one life), rewards clipped to their sign, and the last 4 frames stacked. ale-py's
wheels carry the ROMs. The makers live at module level so that other code (the tests) can
import them; training only starts when the file is run.
"""
import argparse
import os

import ale_py
import gymnasium
import keras
import numpy as np
from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation, TransformReward
from nature_cnn import nature_cnn

from drlbox.trainer import make_trainer


def make_env():
    """Breakout, preprocessed as in the DQN/A3C papers; observations are (4, 84, 84) uint8."""
    # Registered here, not at import: drlbox's role processes run this function (pickled)
    # without executing this script's module-level code.
    gymnasium.register_envs(ale_py)
    env = gymnasium.make("ALE/Breakout-v5", frameskip=1, repeat_action_probability=0.0)
    env = AtariPreprocessing(env, frame_skip=4, screen_size=84, grayscale_obs=True,
                             terminal_on_life_loss=True)
    env = TransformReward(env, lambda r: float(np.sign(r)))
    return FrameStackObservation(env, 4)


def state_to_input(obs):
    """The frame stack (4, 84, 84) as an image with the frames as channels (84, 84, 4)."""
    return np.moveaxis(np.asarray(obs), 0, -1)


def make_model(env):
    """The Nature CNN with ACER's two heads: policy logits and Q-values, one per action."""
    num_actions = int(env.action_space.n)    # Keras 3 refuses NumPy integers as layer sizes
    inputs = keras.Input(shape=(84, 84, 4))
    x = nature_cnn(inputs)
    logits = keras.layers.Dense(num_actions, name="logits")(x)
    q_values = keras.layers.Dense(num_actions, name="q_values")(x)
    return keras.Model(inputs, [logits, q_values])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000_000, help="total env steps")
    parser.add_argument("--num-parallel", type=int, default=os.cpu_count() or 1,
                        help="number of worker processes")
    parser.add_argument("--save-dir", default="breakout_acer", help="where models are saved")
    parser.add_argument("--port-begin", type=int, default=2220, help="first port of the run")
    args = parser.parse_args()

    trainer = make_trainer(
        "acer",
        env_maker=make_env,
        state_to_input=state_to_input,
        model_maker=make_model,
        num_parallel=args.num_parallel,
        port_begin=args.port_begin,
        train_steps=args.steps,
        rollout_maxlen=20,
        batch_size=1,
        replay_kwargs=dict(maxlen=1000, minlen=100),   # lists of 20 uint8 frame stacks: ~0.6 GB
        opt_kwargs=dict(learning_rate=2.5e-4),
        save_dir=args.save_dir,
        save_interval=100_000,
        verbose=True,
    )
    trainer.run()
