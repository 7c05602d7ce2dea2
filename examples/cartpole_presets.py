"""CartPole-v1 settings shared by the per-algorithm examples and benchmarks/cartpole_solve.py.

Each preset was found by hand on a 2-core machine with num_parallel=2 and the 200/100 ReLU
feature network; the benchmark reports how fast each one solves CartPole.
"""
import gymnasium
import keras

PRESETS = {
    "a3c": dict(rollout_maxlen=16, batch_size=4, opt_kwargs=dict(learning_rate=7e-4),
                a3c_entropy_weight=1e-2),
    "acer": dict(rollout_maxlen=16, batch_size=4, opt_kwargs=dict(learning_rate=7e-4),
                 replay_ratio=2, replay_kwargs=dict(maxlen=2000, minlen=100)),
    "impala": dict(rollout_maxlen=16, batch_size=4, opt_kwargs=dict(learning_rate=7e-4),
                   replay_ratio=2, replay_kwargs=dict(maxlen=2000, minlen=100)),
    # Without replay, asynchronous n-step Q-learning solved 1 seed in 3 within 200k steps;
    # replaying short lists twice per batch made it reliable.
    "dqn": dict(rollout_maxlen=4, batch_size=8, replay_type="uniform", replay_ratio=2,
                replay_kwargs=dict(maxlen=5000, minlen=200), opt_kwargs=dict(learning_rate=5e-4),
                policy_eps_decay_steps=10_000, sync_target_interval=100),
}


def cartpole():
    """The environment."""
    return gymnasium.make("CartPole-v1")


def mlp_features(observation_space, sizes=(200, 100)):
    """Input layer and ReLU Dense layers of the given sizes."""
    inp = keras.Input(shape=observation_space.shape)
    feature = inp
    for size in sizes:
        feature = keras.layers.Dense(size, activation="relu")(feature)
    return inp, feature
