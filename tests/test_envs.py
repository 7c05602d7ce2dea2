"""make_env: old Gym-API envs adapted to Gymnasium, spaces converted and checked, env_action.

The old-API env is written by hand (no `gym` import): its spaces are plain objects whose class
names are 'Discrete' and 'Box', as `convert_space` recognises them by name.
"""
import gymnasium
import numpy as np
import pytest
from gymnasium import spaces

from drlbox.envs import OldGymAdapter, convert_space, env_action, make_env


class Discrete:
    """Stand-in for gym.spaces.Discrete."""

    def __init__(self, n):
        self.n = n


class Box:
    """Stand-in for gym.spaces.Box (low/high are full arrays, as gym stores them)."""

    def __init__(self, low, high, shape, dtype):
        self.shape = shape
        self.dtype = np.dtype(dtype)
        self.low = np.full(shape, low, self.dtype)
        self.high = np.full(shape, high, self.dtype)


class MultiDiscrete:
    def __init__(self, nvec):
        self.nvec = np.asarray(nvec)


class OldEnv:
    """Old Gym API: reset() -> obs, step() -> (obs, reward, done, info).

    Action 1 ends the episode for real; otherwise the time limit ends it after `limit` steps
    and marks the end as a truncation the way gym's TimeLimit did.
    """

    metadata = {"render_modes": []}

    def __init__(self, limit=3, action_space=None):
        self.limit = limit
        self.observation_space = Box(-10.0, 10.0, (2,), np.float32)
        self.action_space = action_space if action_space is not None else Discrete(2)
        self.t = 0
        self.seeded = None
        self.closed = False

    def seed(self, seed):
        self.seeded = seed

    def _obs(self):
        return np.array([self.t, -self.t], np.float32)

    def reset(self):
        self.t = 0
        return self._obs()

    def step(self, action):
        self.t += 1
        info = {}
        done = False
        if action == 1:
            done = True
        elif self.t >= self.limit:
            done = True
            info["TimeLimit.truncated"] = True
        return self._obs(), float(self.t), done, info

    def close(self):
        self.closed = True


class NewEnv(gymnasium.Env):
    """A minimal Gymnasium env with a configurable action space."""

    def __init__(self, action_space=None):
        self.observation_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.action_space = action_space if action_space is not None else spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        return np.zeros(1, np.float32), 0.0, True, False, {}


def test_old_env_adapted():
    env = make_env(OldEnv)
    assert isinstance(env, gymnasium.Env) and isinstance(env, OldGymAdapter)
    result = env.reset()
    assert isinstance(result, tuple) and len(result) == 2
    obs, info = result
    np.testing.assert_array_equal(obs, [0.0, 0.0])
    assert info == {}
    result = env.step(0)
    assert len(result) == 5
    obs, reward, terminated, truncated, info = result
    np.testing.assert_array_equal(obs, [1.0, -1.0])
    assert reward == 1.0 and terminated is False and truncated is False


def test_time_limit_end_is_truncation():
    env = make_env(lambda: OldEnv(limit=3))
    env.reset()
    assert env.step(0)[2:4] == (False, False)
    assert env.step(0)[2:4] == (False, False)
    obs, reward, terminated, truncated, info = env.step(0)
    assert truncated is True and terminated is False
    assert info.get("TimeLimit.truncated") is True
    np.testing.assert_array_equal(obs, [3.0, -3.0])   # the final observation, not a reset one


def test_real_end_is_termination():
    env = make_env(lambda: OldEnv(limit=3))
    env.reset()
    env.step(0)
    obs, reward, terminated, truncated, info = env.step(1)
    assert terminated is True and truncated is False
    assert reward == 2.0


def test_reset_seed_and_close_forwarded():
    inner = OldEnv()
    env = make_env(lambda: inner)
    env.reset(seed=7)
    assert inner.seeded == 7
    env.close()
    assert inner.closed


def test_old_env_spaces_converted():
    env = make_env(OldEnv)
    assert isinstance(env.action_space, spaces.Discrete)
    assert env.action_space.n == 2 and isinstance(env.action_space.n, (int, np.integer))
    obs_space = env.observation_space
    assert isinstance(obs_space, spaces.Box)
    assert obs_space.shape == (2,) and obs_space.dtype == np.float32
    np.testing.assert_array_equal(obs_space.low, [-10.0, -10.0])
    np.testing.assert_array_equal(obs_space.high, [10.0, 10.0])
    assert obs_space.contains(env.reset()[0])


def test_old_env_box_action_space_converted():
    env = make_env(lambda: OldEnv(action_space=Box(-2.0, 2.0, (3,), np.float64)))
    assert isinstance(env.action_space, spaces.Box)
    assert env.action_space.shape == (3,) and env.action_space.dtype == np.float64


def test_convert_space_passes_gymnasium_space_through():
    space = spaces.Discrete(4)
    assert convert_space(space) is space


def test_convert_space_rejects_unknown_kind():
    with pytest.raises(TypeError, match="MultiDiscrete"):
        convert_space(MultiDiscrete([2, 3]))


def test_gymnasium_env_passes_through():
    env = NewEnv()
    assert make_env(lambda: env) is env
    real = gymnasium.make("CartPole-v1")
    try:
        assert make_env(lambda: real) is real
    finally:
        real.close()


@pytest.mark.parametrize("thing", [42, "CartPole-v1", None, object()])
def test_not_an_env(thing):
    with pytest.raises(TypeError) as info:
        make_env(lambda: thing)
    assert type(thing).__name__ in str(info.value)


@pytest.mark.parametrize("space", [
    spaces.Dict({"a": spaces.Discrete(2)}),
    spaces.MultiDiscrete([2, 3]),
    spaces.Box(-1.0, 1.0, (2, 2), np.float32),
    spaces.Tuple((spaces.Discrete(2), spaces.Discrete(2))),
])
def test_unsupported_action_space(space):
    with pytest.raises(TypeError):
        make_env(lambda: NewEnv(action_space=space))


def test_old_env_with_unsupported_action_space():
    with pytest.raises(TypeError, match="MultiDiscrete"):
        make_env(lambda: OldEnv(action_space=MultiDiscrete([2, 2])))


def test_env_action_clips_box():
    space = spaces.Box(low=np.array([-1.0, 0.0], np.float32),
                       high=np.array([1.0, 0.5], np.float32))
    action = env_action(space, np.array([2.0, -3.0]))
    np.testing.assert_array_equal(action, [1.0, 0.0])
    assert action.dtype == np.float32
    inside = env_action(space, np.array([0.25, 0.25]))
    np.testing.assert_allclose(inside, [0.25, 0.25])


def test_env_action_discrete_offsets_start():
    space = spaces.Discrete(3, start=5)
    action = env_action(space, np.int64(1))
    assert action == 6 and type(action) is int
    assert env_action(spaces.Discrete(3), np.array(2)) == 2
    assert type(env_action(spaces.Discrete(3), np.int64(0))) is int


def test_old_box_with_scalar_bounds_keeps_shape():
    class ScalarBox:
        low, high, shape, dtype = -1.0, 1.0, (3,), np.float32

    ScalarBox.__name__ = "Box"
    space = convert_space(ScalarBox())
    assert space.shape == (3,) and space.dtype == np.float32



def test_ale_envs_are_registered_on_demand():
    """A role process never ran the user's register_envs(ale_py): make_env copes."""
    import subprocess
    import sys

    import pytest

    pytest.importorskip("ale_py")
    code = ("import gymnasium\nfrom drlbox.envs import make_env\n"
            "env = make_env(lambda: gymnasium.make('ALE/Pong-v5'))\nprint(env.action_space.n)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "6"
