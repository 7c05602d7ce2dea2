"""The evaluator role: run episodes with an evaluation policy, standalone or following training."""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

import numpy as np

from drlbox.envs import env_action, is_continuous
from drlbox.ops.distributions import Categorical, DiagGaussian
from drlbox.roles.interfaces import ParameterPeer
from drlbox.roles.limits import OutOfRange

log = logging.getLogger(__name__)
Policy = Callable[[list, np.random.Generator], np.ndarray]


def evaluation_policy(action_space: Any, policy_type: str, policy_eps: float) -> Policy:
    """outputs -> actions for a batch of one or more observations.

    Every algorithm's first output is read the same way: actor-critic models act on their
    policy head ('stochastic' samples it, 'greedy' takes its mode); DQN's Q-values, read as
    logits, give the best action or a softmax sample. With probability `policy_eps` a greedy
    policy acts uniformly at random.
    """
    dist = DiagGaussian if is_continuous(action_space) else Categorical

    def policy(outputs: list, rng: np.random.Generator) -> np.ndarray:
        head = outputs[0]
        if policy_type == "stochastic":
            return dist.sample_np(head, rng)
        actions = dist.mode_np(head)
        if policy_eps > 0 and rng.random() < policy_eps:
            return np.stack([action_space.sample() for _ in range(len(head))])
        return actions

    return policy


def run_episodes(env: Any, predict: Callable, policy: Policy, num_episodes: int,
                 state_to_input: Callable, rng: np.random.Generator,
                 render_timestep: float | None = None, render_end: bool = False,
                 on_episode: Callable[[int, float, int], None] | None = None) -> list[float]:
    """Play `num_episodes` episodes and return their undiscounted returns."""
    returns = []
    for episode in range(num_episodes):
        obs, _ = env.reset(seed=int(rng.integers(2**31)))
        total, length, over = 0.0, 0, False
        while not over:
            x = np.asarray(state_to_input(obs), np.float32)[np.newaxis]
            action = policy(predict(x), rng)[0]
            obs, reward, terminated, truncated, _ = env.step(env_action(env.action_space, action))
            total += float(reward)
            length += 1
            over = terminated or truncated
            if render_timestep is not None:
                env.render()
                time.sleep(render_timestep)
        if render_end:
            env.render()
        returns.append(total)
        if on_episode:
            on_episode(episode, total, length)
    return returns


class FollowingEvaluator:
    """Evaluate the newest weights every `eval_interval` global steps and report the returns.

    `assign(update)` puts a WeightsUpdate's weights into the model `predict` runs.
    """

    def __init__(self, params: ParameterPeer, env: Any, predict: Any, assign: Callable,
                 policy: Policy, config: Any, seed: int | None, poll_seconds: float = 0.2):
        self.params, self.env, self.predict, self.assign = params, env, predict, assign
        self.policy, self.config, self.poll = policy, config, poll_seconds
        self.rng = np.random.default_rng(seed)
        self.to_input = config.state_to_input or (lambda obs: obs)
        self.next_eval = config.eval_interval
        self.evaluations = 0
        self.last_mean_return, self.last_global_steps = float("nan"), 0

    def run(self) -> int:
        """Evaluate until the job ends; returns the number of evaluations made."""
        status = self.params.status()
        self._go_on_after_evaluated(status)
        while status.running:
            if status.global_steps < self.next_eval:
                time.sleep(self.poll)
            elif self._evaluate(status.global_steps):
                break
            status = self.params.status()
        return self.evaluations

    def _evaluate(self, steps: int) -> bool:
        """Evaluate the newest weights (the job is at `steps`) and report the returns; whether
        the job stops."""
        update = self.params.get_weights(-1)
        self.assign(update)
        self.predict.refresh()
        returns = run_episodes(self.env, self.predict, self.policy, self.config.eval_episodes,
                               self.to_input, self.rng)
        self.last_mean_return, self.last_global_steps = float(np.mean(returns)), steps
        self.evaluations += 1
        log.info("evaluation at %d steps: mean return %.1f", steps, self.last_mean_return)
        self.next_eval = self._after(steps)
        try:
            return self.params.report_evaluation(steps, returns, update.version).stop
        except OutOfRange as err:
            # The job resumed from an earlier checkpoint while this ran: the weights it
            # measured are gone, and so is the evaluation.
            log.warning("evaluation at %d steps dropped: %s", steps, err)
            return False

    def _after(self, steps: int) -> int:
        """The first multiple of eval_interval beyond `steps`."""
        interval = self.config.eval_interval
        return (steps // interval + 1) * interval

    def _go_on_after_evaluated(self, status: Any) -> None:
        """Joining a job evaluated already (e.g. again after a parameter-server restart), go on
        after its last evaluation up to where it is now, rather than evaluate again at once.
        (Evaluations beyond that step are of weights a resume went back from: the steps
        trained again are evaluated again.)"""
        reached = [e.global_steps for e in status.evaluations
                   if e.global_steps <= status.global_steps]
        if reached:
            self.next_eval = max(self.next_eval, self._after(max(reached)))
