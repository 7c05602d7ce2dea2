"""CartPole-v1 settings shared by the per-algorithm examples and benchmarks/cartpole_solve.py.

Each preset (make_trainer arguments, the 200/100 network included) was found by hand on a 2-core
machine (num_parallel=2 unless the preset says otherwise); the benchmark reports how fast each
one solves CartPole.
"""
import gymnasium


def cartpole():
    """The environment."""
    return gymnasium.make("CartPole-v1")


def mlp_features(observation_space, sizes=(200, 100), activation="relu"):
    """Input layer and Dense layers of the given sizes (ReLU unless told otherwise)."""
    import keras        # here, not at the top: the training script itself needs no TensorFlow

    inp = keras.Input(shape=observation_space.shape)
    feature = inp
    for size in sizes:
        feature = keras.layers.Dense(size, activation=activation)(feature)
    return inp, feature


def tanh_features(observation_space):
    """The same 200/100 network with Tanh units."""
    return mlp_features(observation_space, activation="tanh")


def two_towers(env, sizes=(200, 100), activation="tanh"):
    """Separate 200/100 policy and value networks (what SB3's net_arch=[200, 100] builds):
    a model_maker returning A3C's (logits, value) model."""
    import keras

    inp = keras.Input(shape=env.observation_space.shape)

    def tower(outputs):
        x = inp
        for size in sizes:
            x = keras.layers.Dense(size, activation=activation)(x)
        return keras.layers.Dense(outputs)(x)

    return keras.Model(inp, [tower(int(env.action_space.n)), tower(1)])


PRESETS = {
    # Separate Tanh policy and value networks, one worker stepping 8 envs in lockstep with the
    # default 32-step lists; this solved faster than a shared Tanh trunk with 2 workers x 4 envs
    # and 8-step lists, and far faster than the first, ReLU, 16-step preset. One worker leaves
    # the second core to the parameter server instead of making two workers contend with it.
    # How fast each preset solves, per seed: docs/performance.md, "Time to solve".
    "a3c": dict(model_maker=two_towers, num_parallel=1, batch_size=8, rollout_maxlen=32,
                opt_kwargs=dict(learning_rate=2e-3), a3c_entropy_weight=1e-2),
    "acer": dict(feature_maker=mlp_features, rollout_maxlen=16, batch_size=4,
                 opt_kwargs=dict(learning_rate=7e-4), replay_ratio=2,
                 replay_kwargs=dict(maxlen=2000, minlen=100)),
    "impala": dict(feature_maker=mlp_features, rollout_maxlen=16, batch_size=4,
                   opt_kwargs=dict(learning_rate=7e-4), replay_ratio=2,
                   replay_kwargs=dict(maxlen=2000, minlen=100)),
    # Without replay, asynchronous n-step Q-learning solved 1 seed in 3 within 200k steps;
    # replaying short lists twice per batch made it reliable. One worker x 8 envs, epsilon
    # decayed over 5k steps and the target net synced every 50 updates solved faster than
    # 2 workers with a 10k decay and syncs every 100 (figures: docs/performance.md).
    "dqn": dict(feature_maker=mlp_features, num_parallel=1, rollout_maxlen=4, batch_size=8,
                replay_type="uniform", replay_ratio=2, replay_kwargs=dict(maxlen=5000, minlen=200),
                opt_kwargs=dict(learning_rate=5e-4), policy_eps_decay_steps=5000,
                sync_target_interval=50),
}


def cartpole_trainer(algorithm, seed=0, max_steps=300_000, **overrides):
    """A trainer that runs `algorithm` with its preset until a greedy evaluation of 20 episodes
    averages >= 475 (or max_steps)."""
    from drlbox.trainer import make_trainer

    kwargs = dict(env_maker=cartpole, num_parallel=2,
                  train_steps=max_steps, seed=seed, eval_interval=5000, eval_episodes=20,
                  target_return=475.0, verbose=True)
    return make_trainer(algorithm, **{**kwargs, **PRESETS[algorithm], **overrides})


def first_solved(result):
    """The first evaluation that reached 475, or None."""
    return next((e for e in result.evaluations if e.mean_return >= 475.0), None)


def solve_cartpole(algorithm, seed=0, max_steps=300_000):
    """Train until solved and say when that happened."""
    result = cartpole_trainer(algorithm, seed, max_steps).run()
    solved = first_solved(result)
    if solved:
        print(f"{algorithm}: solved CartPole-v1 after {solved.global_steps} env steps, "
              f"{solved.wall_seconds:.1f} s (greedy mean return {solved.mean_return:.1f})")
    else:
        print(f"{algorithm}: not solved within {result.global_steps} env steps")
    return result
