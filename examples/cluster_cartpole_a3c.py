"""A3C on CartPole-v1 as a cluster job: `drlbox submit examples/cluster_cartpole_a3c.py -f`.

A submission file for `drlbox submit`: its module-level names that are `make_trainer` arguments
make the job (`algorithm` is required); anything else, like `_tower` below, is a helper. The
makers travel to the cluster by value, so this file needs no copy there. TensorFlow is only
imported inside the makers, which keeps `drlbox submit` quick.

    make up && export DRLBOX_TOKEN=$(make -s token)
    drlbox submit examples/cluster_cartpole_a3c.py --follow
    drlbox submit examples/cluster_cartpole_a3c.py --set train_steps=20000   # a shorter run

The settings are examples/cartpole_presets.py's A3C preset (separate Tanh policy and value
networks, 8 envs per worker, 32-step lists); the job ends once the cluster's evaluator measures
a greedy mean return of 475 over 10 episodes, or after train_steps. `num_parallel` has no
effect on a cluster: its worker count applies (`make scale WORKERS=N`).
"""
import gymnasium

algorithm = "a3c"
train_steps = 200_000
batch_size = 8                      # envs each worker steps in lockstep
rollout_maxlen = 32
opt_kwargs = {"learning_rate": 2e-3}
a3c_entropy_weight = 1e-2
save_interval = 10_000              # a checkpoint every 10k env steps, and a final one
eval_interval = 5_000               # the cluster's evaluator plays eval_episodes episodes...
eval_episodes = 10
target_return = 475.0               # ...and the job ends once their mean reaches this


def env_maker():
    return gymnasium.make("CartPole-v1")


def _tower(inp, outputs):
    import keras

    x = inp
    for size in (200, 100):
        x = keras.layers.Dense(size, activation="tanh")(x)
    return keras.layers.Dense(outputs)(x)


def model_maker(env):
    """A3C's (logits, value) model: separate 200/100 Tanh policy and value networks."""
    import keras

    inp = keras.Input(shape=env.observation_space.shape)
    return keras.Model(inp, [_tower(inp, int(env.action_space.n)), _tower(inp, 1)])
