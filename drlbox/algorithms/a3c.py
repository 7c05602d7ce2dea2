"""A3C (Mnih et al. 2016): n-step advantage actor-critic with an entropy bonus.

Outputs: (logits, value). Loss per valid step, averaged:
``-log pi(a_t) A_t + 0.5 (G_t - V(s_t))^2 - w H(pi(s_t))`` with ``A_t = G_t - V(s_t)``
and G_t the n-step return up to the end of the rollout list.
"""
from __future__ import annotations

import tensorflow as tf

from drlbox.algorithms.base import (Algorithm, LossOutput, dense, forward, masked_mean,
                                    per_list_mean, policy_value_model)
from drlbox.envs import is_continuous
from drlbox.ops.returns import lambda_returns


class A3C(Algorithm):
    """Advantage actor-critic; discrete or Gaussian actions."""

    name = "a3c"
    continuous_ok = True

    def output_spec(self):
        units = self.num_actions * (2 if is_continuous(self.action_space) else 1)
        return [("logits", units), ("value", 1)]

    def build_model(self, inputs, feature):
        noisy = self.config.noisynet
        return policy_value_model(inputs, feature, self.action_space, noisy,
                                  lambda f: dense(1, noisy, "value")(f))

    def loss(self, model, aux_model, batch):
        logits, values = forward(model, batch["obs"])
        values = values[..., 0]
        returns = lambda_returns(batch["rewards"], batch["discount"], values[1:], batch["lambda"])
        advantages = returns - values[:-1]
        log_pi = self.dist.log_prob(logits[:-1], batch["actions"])
        entropy = self.dist.entropy(logits[:-1])
        mask, weights = batch["mask"], batch["weights"]
        policy_loss = -masked_mean(log_pi * tf.stop_gradient(advantages), mask, weights)
        value_loss = 0.5 * masked_mean(tf.square(advantages), mask, weights)
        entropy_mean = masked_mean(entropy, mask, weights)
        loss = policy_loss + value_loss - self.config.a3c_entropy_weight * entropy_mean
        stats = {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy_mean}
        return LossOutput(loss, stats, per_list_mean(tf.abs(advantages), mask))
