"""Steps several env copies in lockstep, one batched inference per step, into rollout lists."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from drlbox.envs import env_action
from drlbox.ops.rollout import RolloutList, make_list


class _Track:
    """The open rollout list and episode tallies of one env copy."""

    def __init__(self, first_input: np.ndarray):
        self.start(first_input)
        self.episode_return = 0.0
        self.episode_length = 0

    def start(self, first_input: np.ndarray) -> None:
        self.obs, self.actions, self.rewards, self.behaviour = [first_input], [], [], []


class Collector:
    """Collect rollout lists from `envs` with `act(outputs) -> (actions, behaviour)`.

    A list closes when it reaches `rollout_maxlen` steps or its episode ends; an env whose
    list closed goes on with a new one, so lists carry over from one call to the next.
    `predict` is handed the same input array at every step, updated in place: it must not keep it.
    """

    def __init__(self, envs: list, state_to_input: Callable[[Any], np.ndarray],
                 predict: Callable[[np.ndarray], list], act: Callable, rollout_maxlen: int,
                 behaviour_size: int, seed: int | None):
        self.envs = envs
        self.to_input = state_to_input
        self.predict = predict
        self.act = act
        self.maxlen = rollout_maxlen
        self.behaviour_size = behaviour_size
        self.action_space = envs[0].action_space
        self.tracks = []
        for i, env in enumerate(envs):
            obs, _ = env.reset(seed=None if seed is None else seed + i)
            self.tracks.append(_Track(self.to_input(obs)))
        # Each env's newest input, kept as one batch so no step has to stack them anew.
        self.inputs = np.stack([t.obs[-1] for t in self.tracks]).astype(np.float32)
        self.env_steps = 0
        self.finished_returns: list[float] = []
        self.finished_lengths: list[int] = []

    def collect(self, num_lists: int, steps_so_far: int) -> list[RolloutList]:
        """Step all envs until at least `num_lists` lists closed; returns them."""
        done: list[RolloutList] = []
        while len(done) < num_lists:
            actions, behaviour = self.act(self.predict(self.inputs),
                                          steps_so_far + self.env_steps)
            for i, (env, track) in enumerate(zip(self.envs, self.tracks)):
                closed = self._step(env, track, actions[i], behaviour[i])
                self.inputs[i] = track.obs[-1]
                if closed is not None:
                    done.append(closed)
            self.env_steps += len(self.envs)
        return done

    def _step(self, env, track: _Track, action, behaviour) -> RolloutList | None:
        obs, reward, terminated, truncated, _ = env.step(env_action(self.action_space, action))
        reward = float(reward)
        track.episode_return += reward
        track.episode_length += 1
        track.obs.append(self.to_input(obs))
        track.actions.append(action)
        track.rewards.append(reward)
        track.behaviour.append(behaviour)
        episode_over = terminated or truncated
        if not episode_over and len(track.rewards) < self.maxlen:
            return None
        closed = make_list(track.obs, track.actions, track.rewards, track.behaviour,
                           bool(terminated), self.behaviour_size)
        if episode_over:
            self.finished_returns.append(track.episode_return)
            self.finished_lengths.append(track.episode_length)
            track.episode_return, track.episode_length = 0.0, 0
            obs, _ = env.reset()
            track.start(self.to_input(obs))
        else:
            track.start(track.obs[-1])
        return closed

    def take_episode_stats(self) -> tuple[list[float], list[int], int]:
        """Returns and lengths of episodes finished since the last call, and env steps."""
        stats = (self.finished_returns, self.finished_lengths, self.env_steps)
        self.finished_returns, self.finished_lengths = [], []
        self.env_steps = 0
        return stats


def example_list(env: Any, state_to_input: Callable, predict: Callable, act: Callable,
                 rollout_maxlen: int, behaviour_size: int) -> RolloutList:
    """One rollout list collected as a worker collects them: it shows what the job's lists
    look like (names, dtypes, shapes) to the replay server, which checks inserts against it."""
    collector = Collector([env], state_to_input, predict, act, rollout_maxlen, behaviour_size,
                          seed=0)
    return collector.collect(1, 0)[0]
