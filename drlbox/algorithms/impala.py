"""IMPALA's actor-critic with V-trace off-policy correction (Espeholt et al. 2018).

Outputs: (logits, value). The behaviour policy's logits (or Gaussian parameters) are stored with
every step, so replayed and stale rollouts are corrected with truncated importance weights
(rho-bar = impala_trunc_rho_max, c-bar = impala_trunc_c_max).
"""
from __future__ import annotations

import tensorflow as tf

from drlbox.algorithms.a3c import A3C
from drlbox.algorithms.base import LossOutput, forward, masked_mean, per_list_mean
from drlbox.ops.returns import vtrace


class IMPALA(A3C):
    """V-trace actor-critic; discrete or Gaussian actions."""

    name = "impala"

    def loss(self, model, aux_model, batch):
        logits, values = forward(model, batch["obs"])
        values = values[..., 0]
        log_pi = self.dist.log_prob(logits[:-1], batch["actions"])
        log_mu = self.dist.log_prob(batch["behaviour"], batch["actions"])
        log_rho = tf.stop_gradient(log_pi) - log_mu
        cfg = self.config
        targets = vtrace(tf.stop_gradient(values), batch["rewards"], batch["discount"], log_rho,
                         batch["lambda"], cfg.impala_trunc_rho_max, cfg.impala_trunc_c_max)
        mask, weights = batch["mask"], batch["weights"]
        value_error = targets.vs - values[:-1]
        policy_loss = -masked_mean(log_pi * targets.pg_advantages, mask, weights)
        value_loss = 0.5 * masked_mean(tf.square(value_error), mask, weights)
        entropy_mean = masked_mean(self.dist.entropy(logits[:-1]), mask, weights)
        loss = policy_loss + value_loss - cfg.a3c_entropy_weight * entropy_mean
        stats = {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy_mean,
                 "mean_rho": masked_mean(tf.exp(log_rho), mask, weights)}
        return LossOutput(loss, stats, per_list_mean(tf.abs(value_error), mask))
