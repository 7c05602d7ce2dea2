"""ACER for discrete actions (Wang et al. 2017), with the trust region folded into the loss.

Outputs: (logits, q_values). Per valid step:
- Retrace target Q_ret (`retrace_q_targets`) for Q(s_t, a_t), value V = sum_a pi(a) Q(s_t, a);
- truncated importance-weighted policy gradient ``min(c, rho_t) log pi(a_t) (Q_ret - V)``;
- bias correction ``sum_a [1 - c / rho(a)]_+ pi(a) log pi(a) (Q(s_t, a) - V)`` under the current
  policy, so the truncation adds no bias (c = acer_trunc_max);
- ``acer_kl_weight * KL(pi_avg || pi)`` towards the Polyak-averaged network kept by the
  parameter server (moved by acer_soft_update_ratio after every update);
- an entropy bonus (a3c_entropy_weight).
"""
from __future__ import annotations

import tensorflow as tf

from drlbox.algorithms.base import (Algorithm, LossOutput, dense, forward, masked_mean,
                                    per_list_mean, policy_value_model)
from drlbox.ops.distributions import Categorical
from drlbox.ops.returns import retrace_q_targets


class ACER(Algorithm):
    """Actor-critic with experience replay; discrete actions."""

    name = "acer"

    @classmethod
    def aux_rule(cls, config):
        """The average net moves `acer_soft_update_ratio` of the way to the new weights."""
        ratio = config.acer_soft_update_ratio

        def polyak(average, weights, updates):
            return (1.0 - ratio) * average + ratio * weights

        return polyak

    def output_spec(self):
        return [("logits", self.num_actions), ("q_values", self.num_actions)]

    def build_model(self, inputs, feature):
        noisy = self.config.noisynet
        return policy_value_model(inputs, feature, self.action_space, noisy,
                                  lambda f: dense(self.num_actions, noisy, "q_values")(f))

    def loss(self, model, aux_model, batch):
        cfg = self.config
        logits, q_values = forward(model, batch["obs"])
        pi = tf.nn.softmax(logits)
        values = tf.stop_gradient(tf.reduce_sum(pi * q_values, axis=-1))      # [T+1, L]
        actions = tf.cast(batch["actions"], tf.int32)
        q_a = tf.gather(q_values[:-1], actions, axis=-1, batch_dims=2)
        pi_now = tf.stop_gradient(pi[:-1])
        rho_all = pi_now / tf.maximum(tf.nn.softmax(batch["behaviour"]), 1e-8)   # [T, L, A]
        rho = tf.gather(rho_all, actions, axis=-1, batch_dims=2)
        q_ret = retrace_q_targets(tf.stop_gradient(q_a), values, batch["rewards"],
                                  batch["discount"], rho, batch["lambda"])
        log_pi_all = tf.nn.log_softmax(logits[:-1])
        log_pi = tf.gather(log_pi_all, actions, axis=-1, batch_dims=2)
        mask, weights = batch["mask"], batch["weights"]
        advantage = q_ret - values[:-1]
        policy_loss = -masked_mean(tf.minimum(cfg.acer_trunc_max, rho) * log_pi * advantage,
                                   mask, weights)
        correction_weight = tf.nn.relu(1.0 - cfg.acer_trunc_max / tf.maximum(rho_all, 1e-8))
        q_advantage = tf.stop_gradient(q_values[:-1]) - values[:-1, :, tf.newaxis]
        correction = tf.reduce_sum(correction_weight * pi_now * log_pi_all * q_advantage, -1)
        correction_loss = -masked_mean(correction, mask, weights)
        value_loss = 0.5 * masked_mean(tf.square(q_ret - q_a), mask, weights)
        entropy_mean = masked_mean(Categorical.entropy(logits[:-1]), mask, weights)
        avg_logits = tf.stop_gradient(forward(aux_model, batch["obs"][:-1])[0])
        kl_mean = masked_mean(Categorical.kl(avg_logits, logits[:-1]), mask, weights)
        loss = (policy_loss + correction_loss + value_loss
                - cfg.a3c_entropy_weight * entropy_mean + cfg.acer_kl_weight * kl_mean)
        stats = {"policy_loss": policy_loss, "correction_loss": correction_loss,
                 "value_loss": value_loss, "entropy": entropy_mean, "kl": kl_mean,
                 "mean_rho": masked_mean(rho, mask, weights)}
        return LossOutput(loss, stats, per_list_mean(tf.abs(q_ret - q_a), mask))
