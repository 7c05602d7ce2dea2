"""Rollout lists: pack_lists layout, the Collector's list boundaries, and the losses on packed
batches (the sign of the learning signal end to end)."""
import gymnasium
import numpy as np
import pytest
from gymnasium import spaces

from drlbox.ops.rollout import make_list, pack_lists
from drlbox.roles.collector import Collector

GAMMA = 0.9


# --- pack_lists -------------------------------------------------------------------------------
def hand_list(n, terminated, start, obs_dim=2, k=3):
    """A list of n steps whose obs/actions/rewards/behaviour encode (start, step)."""
    obs = [np.full(obs_dim, start + t, np.float32) for t in range(n + 1)]
    actions = [(start + t) % 2 for t in range(n)]
    rewards = [float(start + t) + 0.5 for t in range(n)]
    behaviour = [np.full(k, start + t, np.float32) for t in range(n)]
    return make_list(obs, actions, rewards, behaviour, terminated, k)


@pytest.fixture
def three_lists():
    return [hand_list(3, True, 10), hand_list(2, False, 20), hand_list(1, True, 30)]


def test_make_list_fields():
    r = hand_list(3, True, 10)
    assert r["obs"].shape == (4, 2)
    assert r["actions"].shape == (3,)
    assert r["rewards"].dtype == np.float32 and r["rewards"].shape == (3,)
    assert r["behaviour"].shape == (3, 3) and r["behaviour"].dtype == np.float32
    np.testing.assert_array_equal(r["terminated"], [1])
    np.testing.assert_array_equal(hand_list(2, False, 0)["terminated"], [0])
    empty_behaviour = make_list([np.zeros(2)] * 3, [0, 1], [1.0, 1.0], [], False, 0)
    assert empty_behaviour["behaviour"].shape == (2, 0)


def test_pack_shapes_and_values(three_lists):
    b = pack_lists(three_lists, GAMMA)
    assert b["obs"].shape == (4, 3, 2) and b["obs"].dtype == np.float32
    assert b["actions"].shape == (3, 3)
    assert b["rewards"].shape == (3, 3)
    assert b["behaviour"].shape == (3, 3, 3)
    for key in ("mask", "discount", "lambda"):
        assert b[key].shape == (3, 3) and b[key].dtype == np.float32, key
    assert b["weights"].shape == (3,)
    # Valid data, time-major.
    np.testing.assert_array_equal(b["obs"][:, 0, 0], [10, 11, 12, 13])
    np.testing.assert_array_equal(b["obs"][:3, 1, 0], [20, 21, 22])
    np.testing.assert_array_equal(b["obs"][:2, 2, 0], [30, 31])
    np.testing.assert_array_equal(b["rewards"][:, 0], [10.5, 11.5, 12.5])
    np.testing.assert_array_equal(b["actions"][:, 0], [0, 1, 0])
    np.testing.assert_array_equal(b["behaviour"][:, 0, 1], [10, 11, 12])


def test_pack_padding(three_lists):
    b = pack_lists(three_lists, GAMMA)
    # Observations beyond a list's bootstrap obs repeat it (a valid model input).
    np.testing.assert_array_equal(b["obs"][3, 1], [22, 22])
    np.testing.assert_array_equal(b["obs"][2:, 2, 0], [31, 31])
    assert np.isfinite(b["obs"]).all()
    # Padded steps are zero.
    assert b["rewards"][2, 1] == 0 and (b["rewards"][1:, 2] == 0).all()
    assert b["actions"][2, 1] == 0 and (b["actions"][1:, 2] == 0).all()
    assert (b["behaviour"][2, 1] == 0).all() and (b["behaviour"][1:, 2] == 0).all()


def test_pack_mask_discount_lambda(three_lists):
    b = pack_lists(three_lists, GAMMA)
    g = np.float32(GAMMA)
    np.testing.assert_array_equal(b["mask"], [[1, 1, 1], [1, 1, 0], [1, 0, 0]])
    # Terminated list 0 ends with 0; list 1 was cut, not terminated: gamma at its last step,
    # 0 in padding; list 2 (1 step, terminated) is 0 throughout.
    np.testing.assert_allclose(b["discount"], [[g, g, 0], [g, g, 0], [0, 0, 0]])
    # The trace goes on inside a list and stops at its last step and in padding.
    np.testing.assert_array_equal(b["lambda"], [[1, 1, 0], [1, 0, 0], [0, 0, 0]])


def test_pack_weights(three_lists):
    np.testing.assert_array_equal(pack_lists(three_lists, GAMMA)["weights"], [1, 1, 1])
    b = pack_lists(three_lists, GAMMA, weights=np.array([0.5, 1.0, 2.0]))
    np.testing.assert_array_equal(b["weights"], [0.5, 1.0, 2.0])
    assert b["weights"].dtype == np.float32


def test_pack_single_list_equal_lengths():
    b = pack_lists([hand_list(2, False, 0), hand_list(2, False, 5)], 1.0)
    assert b["mask"].all()
    np.testing.assert_array_equal(b["discount"], np.ones((2, 2)))
    np.testing.assert_array_equal(b["lambda"], [[1, 1], [0, 0]])


# --- Collector --------------------------------------------------------------------------------
class CounterEnv(gymnasium.Env):
    """obs = [steps so far]; reward 1 per step; terminates at step 5 when `terminates`."""

    def __init__(self, terminates=True, terminate_at=5):
        self.observation_space = spaces.Box(0.0, 100.0, (1,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.terminates = terminates
        self.terminate_at = terminate_at
        self.t = 0
        self.resets = 0
        self.actions = []

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.resets += 1
        return np.array([0.0], np.float32), {}

    def step(self, action):
        assert type(action) is int
        self.actions.append(action)
        self.t += 1
        terminated = self.terminates and self.t >= self.terminate_at
        return np.array([float(self.t)], np.float32), 1.0, terminated, False, {}


def truncating_env(limit=4):
    return gymnasium.wrappers.TimeLimit(CounterEnv(terminates=False), max_episode_steps=limit)


NUM_ACTIONS, K = 2, 3


class Recorder:
    """predict/act pair that records what the collector feeds them."""

    def __init__(self):
        self.inputs, self.steps = [], []

    def predict(self, inputs):
        self.inputs.append(inputs.copy())       # the collector reuses its input batch
        return [np.zeros((len(inputs), NUM_ACTIONS))]

    def act(self, outputs, steps):
        self.steps.append(steps)
        n = len(outputs[0])
        return np.zeros(n, int), np.zeros((n, K))


def make_collector(envs, maxlen, to_input=lambda obs: obs):
    rec = Recorder()
    return Collector(envs, to_input, rec.predict, rec.act, maxlen, K, seed=0), rec


def obs_of(r):
    return r["obs"][:, 0].tolist()


def test_lists_close_at_maxlen_and_episode_end():
    collector, _ = make_collector([CounterEnv()], maxlen=2)
    lists = collector.collect(3, 0)
    assert len(lists) == 3
    assert [obs_of(r) for r in lists] == [[0, 1, 2], [2, 3, 4], [4, 5]]
    assert [int(r["terminated"][0]) for r in lists] == [0, 0, 1]
    for r in lists:
        np.testing.assert_array_equal(r["rewards"], np.ones(len(r["rewards"])))
        assert r["behaviour"].shape == (len(r["rewards"]), K)
        assert r["actions"].shape == (len(r["rewards"]),)
    # After the termination the next list starts from the reset observation.
    (nxt,) = collector.collect(1, 0)
    assert obs_of(nxt) == [0, 1, 2]


def test_lists_carry_over_between_calls():
    collector, _ = make_collector([CounterEnv(terminates=False)], maxlen=3)
    (first,) = collector.collect(1, 0)
    (second,) = collector.collect(1, 0)
    assert obs_of(first) == [0, 1, 2, 3] and obs_of(second) == [3, 4, 5, 6]


def test_terminated_list_flag():
    collector, _ = make_collector([CounterEnv()], maxlen=10)
    (r,) = collector.collect(1, 0)
    assert obs_of(r) == [0, 1, 2, 3, 4, 5]
    assert r["terminated"][0] == 1 and len(r["rewards"]) == 5


def test_truncated_list_bootstraps_from_final_obs():
    env = truncating_env(4)
    collector, _ = make_collector([env], maxlen=3)
    first, second = collector.collect(2, 0)
    assert obs_of(first) == [0, 1, 2, 3] and first["terminated"][0] == 0
    # Truncated at step 4: the last obs is the episode's final observation, not the reset one.
    assert obs_of(second) == [3, 4]
    assert second["terminated"][0] == 0
    (third,) = collector.collect(1, 0)
    assert obs_of(third) == [0, 1, 2, 3]


def test_truncated_at_maxlen_boundary():
    collector, _ = make_collector([truncating_env(4)], maxlen=4)
    (r,) = collector.collect(1, 0)
    assert obs_of(r) == [0, 1, 2, 3, 4] and r["terminated"][0] == 0
    (r,) = collector.collect(1, 0)
    assert obs_of(r)[0] == 0


def test_state_to_input_applied_everywhere():
    collector, rec = make_collector([truncating_env(2)], maxlen=5,
                                    to_input=lambda obs: np.concatenate([obs, obs * 10]))
    r1, r2 = collector.collect(2, 0)
    np.testing.assert_array_equal(r1["obs"], [[0, 0], [1, 10], [2, 20]])
    np.testing.assert_array_equal(r2["obs"], [[0, 0], [1, 10], [2, 20]])
    assert all(x.shape == (1, 2) and x.dtype == np.float32 for x in rec.inputs)


def test_two_lockstep_envs_and_episode_stats():
    envs = [CounterEnv(terminate_at=5), truncating_env(4)]
    collector, rec = make_collector(envs, maxlen=10)
    (r,) = collector.collect(1, 100)
    # The truncated env finishes first, after 4 lockstep steps.
    assert obs_of(r) == [0, 1, 2, 3, 4] and r["terminated"][0] == 0
    assert all(x.shape == (2, 1) for x in rec.inputs)
    # act sees the global step count: steps_so_far plus the collector's env steps.
    assert rec.steps == [100, 102, 104, 106]
    returns, lengths, steps = collector.take_episode_stats()
    assert returns == [4.0] and lengths == [4] and steps == 8
    (r,) = collector.collect(1, 0)
    assert obs_of(r) == [0, 1, 2, 3, 4, 5] and r["terminated"][0] == 1
    returns, lengths, steps = collector.take_episode_stats()
    assert returns == [5.0] and lengths == [5] and steps == 2
    assert collector.take_episode_stats() == ([], [], 0)
    # Both envs got their actions as Python ints, one per lockstep step.
    assert envs[0].actions == [0] * 5


def test_lockstep_lists_close_together():
    envs = [CounterEnv(terminates=False), CounterEnv(terminates=False)]
    collector, _ = make_collector(envs, maxlen=3)
    lists = collector.collect(2, 0)
    assert len(lists) == 2 and all(obs_of(r) == [0, 1, 2, 3] for r in lists)
    lists = collector.collect(3, 0)   # at least 3: two steps of lockstep close 4
    assert len(lists) == 4


def test_episode_stats_over_several_episodes():
    collector, _ = make_collector([CounterEnv(terminate_at=3)], maxlen=2)
    collector.collect(6, 0)   # 3 episodes of 3 steps, lists of 2 + 1
    returns, lengths, steps = collector.take_episode_stats()
    assert returns == [3.0, 3.0, 3.0] and lengths == [3, 3, 3] and steps == 9


def test_discrete_start_offset_applied():
    class Offset(CounterEnv):
        def __init__(self):
            super().__init__()
            self.action_space = spaces.Discrete(2, start=7)

    env = Offset()
    collector, _ = make_collector([env], maxlen=2)
    r = collector.collect(1, 0)[0]
    assert env.actions == [7, 7]
    np.testing.assert_array_equal(r["actions"], [0, 0])   # stored as the model's index


# --- losses on packed batches: does the learning signal point the right way? ------------------
tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from drlbox.algorithms import make_algorithm  # noqa: E402
from drlbox.algorithms.base import forward  # noqa: E402
from drlbox.config import trainer_config  # noqa: E402


def bandit_batch(lists_per_action=4):
    """Single-step terminated lists from one state: action 0 pays 1, action 1 pays 0."""
    lists = []
    for i in range(2 * lists_per_action):
        action = i % 2
        obs = [np.ones(1, np.float32), np.ones(1, np.float32)]
        lists.append(make_list(obs, [action], [1.0 - action], [np.zeros(2, np.float32)], True, 2))
    return pack_lists(lists, GAMMA)


def as_tensors(batch):
    return {k: tf.convert_to_tensor(v) for k, v in batch.items()}


def test_byte_observations_pack_as_bytes_and_the_loss_sees_the_same_values():
    rng = np.random.default_rng(0)
    lists = [make_list(list(rng.integers(0, 256, (n + 1, 2, 3), dtype=np.uint8)), [0] * n,
                       [1.0] * n, [np.zeros(2, np.float32)] * n, False, 2) for n in (3, 1)]
    packed = pack_lists(lists, GAMMA)
    assert packed["obs"].dtype == np.uint8
    as_floats = pack_lists([{**r, "obs": r["obs"].astype(np.float32)} for r in lists], GAMMA)
    assert as_floats["obs"].dtype == np.float32
    np.testing.assert_array_equal(packed["obs"], as_floats["obs"])
    inputs = keras.Input((2, 3))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)))
    np.testing.assert_array_equal(forward(model, tf.constant(packed["obs"]))[0].numpy(),
                                  forward(model, tf.constant(as_floats["obs"]))[0].numpy())


def favour_wrong_action(model, head):
    """Start the head preferring action 1, the one that pays nothing."""
    layer = model.get_layer(head)
    kernel, bias = layer.get_weights()
    layer.set_weights([np.zeros_like(kernel), np.array([0.0, 1.0], bias.dtype)])


def setup(alg, **kwargs):
    keras.utils.set_random_seed(1)
    cfg = trainer_config(alg, env_maker=lambda: None, feature_maker=lambda s: None,
                         num_parallel=1, **kwargs)
    algorithm = make_algorithm(cfg, spaces.Discrete(2))
    inputs = keras.Input((1,))
    model = algorithm.build_model(inputs, keras.layers.Dense(8, activation="tanh")(inputs))
    algorithm.check_model(model)
    return algorithm, model


def train(algorithm, model, batch_fn, steps, lr, aux_model=None, prepare=None):
    opt = keras.optimizers.SGD(learning_rate=lr)

    @tf.function
    def step(batch):
        if prepare is not None:
            batch = prepare(batch)
        with tf.GradientTape() as tape:
            out = algorithm.loss(model, aux_model, batch)
        grads = tape.gradient(out.loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return out.loss

    for _ in range(steps):
        loss = step(batch_fn())
    assert np.isfinite(float(loss))


def probs(model):
    logits = model(np.ones((1, 1), np.float32))[0]
    return tf.nn.softmax(logits[0]).numpy()


def test_a3c_loss_prefers_rewarding_action():
    algorithm, model = setup("a3c")
    favour_wrong_action(model, "policy")
    batch = as_tensors(bandit_batch())
    assert probs(model)[0] < 0.3
    train(algorithm, model, lambda: batch, steps=300, lr=0.1)
    assert probs(model)[0] > 0.9
    value = float(model(np.ones((1, 1), np.float32))[1][0, 0])
    assert 0.3 < value < 0.7           # V(s) -> mean reward 0.5 under the batch's 50/50 actions


def test_impala_loss_prefers_rewarding_action():
    algorithm, model = setup("impala")
    favour_wrong_action(model, "policy")
    assert probs(model)[0] < 0.3
    batch = as_tensors(bandit_batch())

    def on_policy(batch):
        """Behaviour logits = the current policy's logits (importance ratios of 1)."""
        logits = forward(model, batch["obs"])[0][:-1]
        return dict(batch, behaviour=tf.stop_gradient(logits))

    train(algorithm, model, lambda: batch, steps=300, lr=0.1, prepare=on_policy)
    assert probs(model)[0] > 0.9
    out = algorithm.loss(model, None, on_policy(batch))
    np.testing.assert_allclose(float(out.stats["mean_rho"]), 1.0, rtol=1e-5)


def test_dqn_loss_prefers_rewarding_action():
    algorithm, model = setup("dqn")
    favour_wrong_action(model, "q_values")
    target = keras.models.clone_model(model)
    target.set_weights(model.get_weights())
    batch = as_tensors(bandit_batch())
    train(algorithm, model, lambda: batch, steps=300, lr=0.1, aux_model=target)
    q = model(np.ones((1, 1), np.float32)).numpy()[0]
    assert q[0] > q[1] + 0.5, q
    np.testing.assert_allclose(q, [1.0, 0.0], atol=0.2)   # terminated: the target is the reward


def test_a3c_value_loss_matches_numpy_on_padded_batch():
    """A constant model: the loss's n-step returns on a padded batch match a NumPy loop."""
    algorithm, model = setup("a3c", a3c_entropy_weight=0.0)
    v = 0.7
    for layer in model.layers:
        if layer.name in ("policy", "value"):
            kernel, bias = layer.get_weights()
            layer.set_weights([np.zeros_like(kernel), np.full_like(bias, v)])
    lists = [hand_list(3, True, 0, obs_dim=1, k=1), hand_list(2, False, 4, obs_dim=1, k=1),
             hand_list(1, True, 8, obs_dim=1, k=1)]
    out = algorithm.loss(model, None, as_tensors(pack_lists(lists, GAMMA)))
    advantages = []          # per list, in time order
    for r in lists:
        n, rewards = len(r["rewards"]), r["rewards"]
        g = 0.0 if r["terminated"][0] else v      # the cut list bootstraps from V(last obs)
        adv = []
        for t in reversed(range(n)):
            g = rewards[t] + GAMMA * g
            adv.insert(0, g - v)
        advantages.append(np.array(adv))
    flat = np.concatenate(advantages)
    np.testing.assert_allclose(float(out.stats["value_loss"]), 0.5 * np.mean(flat ** 2),
                               rtol=1e-5)
    # Uniform policy over 2 actions: log pi(a) = -log 2 for every action.
    np.testing.assert_allclose(float(out.stats["policy_loss"]), np.log(2) * np.mean(flat),
                               rtol=1e-5)
    np.testing.assert_allclose(float(out.stats["entropy"]), np.log(2), rtol=1e-5)
    np.testing.assert_allclose(out.priorities.numpy(),
                               [np.mean(np.abs(a)) for a in advantages], rtol=1e-5)
