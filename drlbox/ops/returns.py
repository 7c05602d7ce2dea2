"""Return and trace targets (n-step/lambda, V-trace, Retrace, double-Q), time-major TensorFlow.

Every recursion here has the shape ``y_t = x_t + c_t * y_{t+1}``; `discounted_sum` solves it
without a loop, and each target is a small function that builds its ``x`` and ``c``.

Shapes: ``[T, B]`` for per-step quantities, ``[T+1, B]`` for state values that include the
bootstrap state. ``discount_t`` is gamma on a step that continues, 0 on a step whose episode
*terminated* (no bootstrap). ``lambda_t`` is 1 where the trace continues into step t+1 and 0 where
the sequence is *cut* after step t (end of a rollout list, or an episode truncated by a time
limit): there the target bootstraps from the value of the next state and stops. The last step of
a sequence is always a cut. All targets are wrapped in ``tf.stop_gradient``.
"""
from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf


def discounted_sum(x_t: tf.Tensor, c_t: tf.Tensor) -> tf.Tensor:
    """Solve ``y_t = x_t + c_t * y_{t+1}`` backwards from ``y_T = 0``; x_t, c_t are [T, B].

    Vectorised as ``y_t = sum_{k>=t} (prod_{j=t}^{k-1} c_j) x_k`` with an upper-triangular
    [T, T, B] product matrix: O(T^2 B) work but no sequential loop, which is far cheaper than a
    `tf.scan` for rollout lengths of tens of steps.
    """
    x_t = tf.convert_to_tensor(x_t)
    c_t = tf.cast(c_t, x_t.dtype)
    steps = tf.shape(x_t)[0]
    # upper[t, j] is 1 where j >= t: only those factors enter y_t.
    upper = tf.linalg.band_part(tf.ones([steps, steps], x_t.dtype), 0, -1)
    upper = tf.reshape(upper, tf.concat([[steps, steps], tf.ones_like(tf.shape(x_t)[1:])], 0))
    factors = upper * c_t[tf.newaxis] + (1.0 - upper)
    products = tf.math.cumprod(factors, axis=1, exclusive=True) * upper
    return tf.reduce_sum(products * x_t[tf.newaxis], axis=1)


def _cut_last_step(lambda_t: tf.Tensor) -> tf.Tensor:
    """Force a cut after the final step: nothing follows it inside the sequence."""
    lambda_t = tf.convert_to_tensor(lambda_t)
    return tf.concat([lambda_t[:-1], tf.zeros_like(lambda_t[-1:])], axis=0)


def _shift_up(x_t: tf.Tensor) -> tf.Tensor:
    """Return x_{t+1} aligned at t, with zeros after the last step."""
    return tf.concat([x_t[1:], tf.zeros_like(x_t[:1])], axis=0)


def lambda_returns(r_t: tf.Tensor, discount_t: tf.Tensor, v_tp1: tf.Tensor,
                   lambda_t: tf.Tensor) -> tf.Tensor:
    """Lambda-returns ``G_t = r_t + d_t ((1 - l_t) v_{t+1} + l_t G_{t+1})``, all [T, B].

    With ``lambda_t = 1`` inside a rollout list and 0 at its end this is the n-step return of
    A3C and n-step Q-learning (Mnih et al. 2016). ``v_tp1`` is the value of the state *after*
    step t (for a truncated episode: of its final observation, not of the reset one).
    """
    lambda_t = tf.cast(_cut_last_step(lambda_t), r_t.dtype)
    discount_t = tf.cast(discount_t, r_t.dtype)
    x_t = r_t + discount_t * (1.0 - lambda_t) * v_tp1
    return tf.stop_gradient(discounted_sum(x_t, discount_t * lambda_t))


class VTraceReturns(NamedTuple):
    """V-trace value targets ``vs`` and policy-gradient advantages, both [T, B]."""

    vs: tf.Tensor
    pg_advantages: tf.Tensor


def vtrace(values: tf.Tensor, r_t: tf.Tensor, discount_t: tf.Tensor, log_rho_t: tf.Tensor,
           lambda_t: tf.Tensor, rho_bar: float = 1.0, c_bar: float = 1.0) -> VTraceReturns:
    """V-trace targets (Espeholt et al. 2018, eq. 1 and the actor-critic update of sec. 4.2).

    ``values`` is [T+1, B] (V(s_0) .. V(s_T)), ``log_rho_t`` the log importance ratios
    log pi(a_t|s_t) - log mu(a_t|s_t), [T, B]. Returns targets for V(s_t) and the advantages
    ``rho_t (r_t + d_t vs_{t+1} - V(s_t))`` for the policy gradient.
    """
    lambda_t = tf.cast(_cut_last_step(lambda_t), r_t.dtype)
    discount_t = tf.cast(discount_t, r_t.dtype)
    rho_t = tf.exp(log_rho_t)
    clipped_rho = tf.minimum(rho_bar, rho_t)
    clipped_c = tf.minimum(c_bar, rho_t) * lambda_t
    v_t, v_tp1 = values[:-1], values[1:]
    delta_t = clipped_rho * (r_t + discount_t * v_tp1 - v_t)
    vs_minus_v = discounted_sum(delta_t, discount_t * clipped_c)
    vs = v_t + vs_minus_v
    # vs_{t+1}: the V-trace target of the next state inside the trace, its plain value at a cut.
    vs_tp1 = v_tp1 + lambda_t * _shift_up(vs_minus_v)
    pg_advantages = clipped_rho * (r_t + discount_t * vs_tp1 - v_t)
    return VTraceReturns(tf.stop_gradient(vs), tf.stop_gradient(pg_advantages))


def retrace_q_targets(q_a_t: tf.Tensor, values: tf.Tensor, r_t: tf.Tensor,
                      discount_t: tf.Tensor, rho_t: tf.Tensor, lambda_t: tf.Tensor) -> tf.Tensor:
    """ACER's Retrace target Q_ret (Wang et al. 2017, Algorithm 2), [T, B].

    ``Q_ret_t = r_t + d_t (V(s_{t+1}) + l_t min(1, rho_{t+1}) (Q_ret_{t+1} - Q(s_{t+1}, a_{t+1})))``
    where ``q_a_t`` = Q(s_t, a_t) [T, B], ``values`` = V(s_t) [T+1, B] (bootstrap included) and
    ``rho_t`` = pi(a_t|s_t) / mu(a_t|s_t) [T, B]. At a cut Q_ret bootstraps from V(s_{t+1}).
    """
    lambda_t = tf.cast(_cut_last_step(lambda_t), r_t.dtype)
    discount_t = tf.cast(discount_t, r_t.dtype)
    trace_tp1 = lambda_t * _shift_up(tf.minimum(1.0, rho_t))
    x_t = r_t + discount_t * (values[1:] - trace_tp1 * _shift_up(q_a_t))
    return tf.stop_gradient(discounted_sum(x_t, discount_t * trace_tp1))


def q_bootstrap(q_target_tp1: tf.Tensor, q_online_tp1: tf.Tensor | None = None) -> tf.Tensor:
    """Value of the next state for Q-learning targets: [T, B, A] -> [T, B].

    With ``q_online_tp1`` (double DQN, van Hasselt et al. 2016) the target net evaluates the
    online net's greedy action; without it, the target net's own max.
    """
    if q_online_tp1 is None:
        return tf.stop_gradient(tf.reduce_max(q_target_tp1, axis=-1))
    greedy = tf.argmax(q_online_tp1, axis=-1, output_type=tf.int32)
    chosen = tf.gather(q_target_tp1, greedy, axis=-1, batch_dims=greedy.shape.rank)
    return tf.stop_gradient(chosen)
