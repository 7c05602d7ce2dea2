"""Asynchronous n-step Q-learning (Mnih et al. 2016) with double and dueling options.

Outputs: (q_values,). The n-step target bootstraps from a target network that the parameter
server copies from the online one every `sync_target_interval` updates; with `dqn_double` the
online network picks the bootstrap action (van Hasselt et al. 2016). Acting is epsilon-greedy
with epsilon decaying linearly over each worker's own env steps.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from drlbox.algorithms.base import (Algorithm, LossOutput, dense, forward, masked_mean,
                                    per_list_mean, split_feature)
from drlbox.layers.dueling import DuelingCombine
from drlbox.ops.returns import lambda_returns, q_bootstrap


def linear_epsilon(step: int, start: float, end: float, decay_steps: int) -> float:
    """Epsilon after `step` env steps of a linear decay from start to end."""
    fraction = min(step / decay_steps, 1.0)
    return start + fraction * (end - start)


class DQN(Algorithm):
    """n-step Q-learning; discrete actions."""

    name = "dqn"

    @classmethod
    def aux_rule(cls, config):
        """The target net becomes a copy of the online one every `sync_target_interval`
        updates."""
        interval = config.sync_target_interval

        def sync(target, weights, updates):
            return weights.copy() if updates % interval == 0 else None

        return sync

    def output_spec(self):
        return [("q_values", self.num_actions)]

    @property
    def behaviour_size(self) -> int:
        return 0          # Q-learning needs no behaviour probabilities

    def build_model(self, inputs, feature):
        feature, _ = split_feature(feature)
        noisy = self.config.noisynet
        if not self.config.dqn_dueling:
            return keras.Model(inputs, dense(self.num_actions, noisy, "q_values")(feature))
        value = dense(1, noisy, "state_value")(feature)
        advantages = dense(self.num_actions, noisy, "advantages")(feature)
        return keras.Model(inputs, DuelingCombine(name="q_values")([value, advantages]))

    def epsilon(self, worker_steps: int) -> float:
        """Exploration rate after this worker's env steps."""
        cfg = self.config
        return linear_epsilon(worker_steps, cfg.policy_eps_start, cfg.policy_eps_end,
                              cfg.policy_eps_decay_steps)

    def act(self, outputs, rng, worker_steps):
        q_values = outputs[0]
        greedy = np.argmax(q_values, axis=-1)
        explore = rng.random(len(greedy)) < self.epsilon(worker_steps)
        random_actions = rng.integers(0, self.num_actions, size=len(greedy))
        return np.where(explore, random_actions, greedy), np.zeros((len(greedy), 0), np.float32)

    def loss(self, model, aux_model, batch):
        obs = batch["obs"]
        (q_values,) = forward(model, obs)
        (q_target_tp1,) = forward(aux_model, obs[1:])
        online_tp1 = tf.stop_gradient(q_values[1:]) if self.config.dqn_double else None
        bootstrap = q_bootstrap(q_target_tp1, online_tp1)
        returns = lambda_returns(batch["rewards"], batch["discount"], bootstrap, batch["lambda"])
        actions = tf.cast(batch["actions"], tf.int32)
        q_a = tf.gather(q_values[:-1], actions, axis=-1, batch_dims=2)
        td_error = returns - q_a
        mask, weights = batch["mask"], batch["weights"]
        loss = 0.5 * masked_mean(tf.square(td_error), mask, weights)
        stats = {"q_loss": loss, "mean_q": masked_mean(q_a, mask, weights)}
        return LossOutput(loss, stats, per_list_mean(tf.abs(td_error), mask))
