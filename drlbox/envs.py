"""Environments at the front door: build from the user's maker, adapt old Gym APIs, check spaces."""
from __future__ import annotations

import importlib.util
from typing import Any, Callable

import gymnasium
import numpy as np
from gymnasium import spaces


class OldGymAdapter(gymnasium.Env):
    """Present an env with the old Gym API (reset -> obs, step -> 4-tuple) as a Gymnasium env.

    A `done` with `info["TimeLimit.truncated"]` set becomes a truncation, any other `done` a
    termination, so returns bootstrap exactly where the time limit cut the episode.
    """

    def __init__(self, env: Any):
        self.env = env
        self.observation_space = convert_space(env.observation_space)
        self.action_space = convert_space(env.action_space)
        self.metadata = getattr(env, "metadata", {})
        self.render_mode = getattr(env, "render_mode", None)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None and hasattr(self.env, "seed"):
            self.env.seed(seed)
        result = self.env.reset()
        # Some late-Gym envs already return (obs, info).
        if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], dict):
            return result
        return result, {}

    def step(self, action):
        result = self.env.step(action)
        if len(result) == 5:
            return result
        obs, reward, done, info = result
        truncated = bool(done and info.get("TimeLimit.truncated", False))
        return obs, reward, bool(done) and not truncated, truncated, info

    def render(self):
        return self.env.render()

    def close(self):
        if hasattr(self.env, "close"):
            self.env.close()


def convert_space(space: Any) -> spaces.Space:
    """A Gymnasium space for a Gymnasium or old Gym Discrete/Box space."""
    if isinstance(space, spaces.Space):
        return space
    kind = type(space).__name__
    if kind == "Discrete":
        return spaces.Discrete(int(space.n))
    if kind == "Box":
        shape = tuple(space.shape)
        return spaces.Box(low=np.broadcast_to(space.low, shape), dtype=np.dtype(space.dtype),
                          high=np.broadcast_to(space.high, shape), shape=shape)
    raise TypeError(f"cannot adapt a space of type {kind}; drlbox supports Discrete and Box")


def _call_maker(env_maker: Callable[[], Any]) -> Any:
    """Call env_maker; register ale-py's envs if it asks for an unknown 'ALE/...' env.

    Role processes run the user's makers without the script's module-level code, so a
    `gymnasium.register_envs(ale_py)` at the top of the script never ran there.
    """
    try:
        return env_maker()
    except gymnasium.error.NamespaceNotFound as err:
        if "ALE" not in str(err) or importlib.util.find_spec("ale_py") is None:
            raise
        import ale_py

        gymnasium.register_envs(ale_py)
        return env_maker()


def make_env(env_maker: Callable[[], Any]) -> gymnasium.Env:
    """Call env_maker and return a checked Gymnasium env (old Gym-API envs are adapted)."""
    env = _call_maker(env_maker)
    if isinstance(env, gymnasium.Env):
        pass
    elif hasattr(env, "reset") and hasattr(env, "step") and hasattr(env, "action_space"):
        env = OldGymAdapter(env)
    else:
        raise TypeError(f"env_maker returned {type(env).__name__}, not an environment with "
                        f"reset(), step() and action_space")
    check_action_space(env.action_space)
    return env


def check_action_space(space: spaces.Space) -> None:
    """Accept Discrete, and 1-D Box for the algorithms with Gaussian policies."""
    if isinstance(space, spaces.Discrete):
        return
    if isinstance(space, spaces.Box) and len(space.shape) == 1:
        return
    raise TypeError(f"unsupported action space {space}; drlbox supports Discrete and 1-D Box")


def is_continuous(space: spaces.Space) -> bool:
    """True for Box action spaces."""
    return isinstance(space, spaces.Box)


def action_dim(space: spaces.Space) -> int:
    """Number of discrete actions, or dimensions of a Box."""
    return int(space.n) if isinstance(space, spaces.Discrete) else int(space.shape[0])


def env_action(space: spaces.Space, action: np.ndarray) -> Any:
    """What env.step takes: a Python int, or a Box action clipped to its bounds."""
    if isinstance(space, spaces.Discrete):
        return int(action) + int(space.start)
    return np.clip(action, space.low, space.high).astype(space.dtype)
