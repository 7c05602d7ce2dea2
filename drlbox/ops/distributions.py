"""Action distributions built from a policy head's output: categorical and diagonal Gaussian.

Each class offers the same static functions in TensorFlow (for losses) and a NumPy sampler (for
the acting path, where a TF call per step would cost more than the env step itself).
A Gaussian head outputs ``2 * action_dim`` numbers: the means, then the log standard deviations.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


class Categorical:
    """Distribution over discrete actions, parameterised by logits [..., A]."""

    @staticmethod
    def log_prob(logits: tf.Tensor, actions: tf.Tensor) -> tf.Tensor:
        """log pi(a) for integer actions [...]."""
        log_pi = tf.nn.log_softmax(logits)
        actions = tf.cast(actions, tf.int32)
        return tf.gather(log_pi, actions, axis=-1, batch_dims=actions.shape.rank)

    @staticmethod
    def entropy(logits: tf.Tensor) -> tf.Tensor:
        """Entropy of each distribution, [...]."""
        log_pi = tf.nn.log_softmax(logits)
        return -tf.reduce_sum(tf.exp(log_pi) * log_pi, axis=-1)

    @staticmethod
    def kl(logits_p: tf.Tensor, logits_q: tf.Tensor) -> tf.Tensor:
        """KL(p || q), [...]."""
        log_p = tf.nn.log_softmax(logits_p)
        log_q = tf.nn.log_softmax(logits_q)
        return tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=-1)

    @staticmethod
    def sample_np(logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Sample one action per row of logits [N, A] with the Gumbel-max trick:
        argmax(logits + G), G = -log(E) with E standard exponential, is distributed as
        softmax(logits), in a third of the NumPy calls of an inverse-CDF draw. E is drawn in
        float64, where a zero (whose log would pick its action outright) has odds near 2**-53."""
        noise = np.log(rng.standard_exponential(logits.shape))
        return np.argmax(logits - noise, axis=-1)

    @staticmethod
    def mode_np(logits: np.ndarray) -> np.ndarray:
        """Most likely action per row."""
        return np.argmax(logits, axis=-1)


def _split_gaussian(params: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    mean, log_std = tf.split(params, 2, axis=-1)
    return mean, tf.clip_by_value(log_std, LOG_STD_MIN, LOG_STD_MAX)


class DiagGaussian:
    """Diagonal Gaussian over continuous actions, parameterised by [..., 2 * D]."""

    @staticmethod
    def log_prob(params: tf.Tensor, actions: tf.Tensor) -> tf.Tensor:
        """log pi(a) summed over action dimensions, [...]."""
        mean, log_std = _split_gaussian(params)
        z = (tf.cast(actions, mean.dtype) - mean) * tf.exp(-log_std)
        per_dim = -0.5 * tf.square(z) - log_std - 0.5 * np.log(2.0 * np.pi)
        return tf.reduce_sum(per_dim, axis=-1)

    @staticmethod
    def entropy(params: tf.Tensor) -> tf.Tensor:
        """Entropy summed over action dimensions, [...]."""
        _, log_std = _split_gaussian(params)
        return tf.reduce_sum(log_std + 0.5 * np.log(2.0 * np.pi * np.e), axis=-1)

    @staticmethod
    def kl(params_p: tf.Tensor, params_q: tf.Tensor) -> tf.Tensor:
        """KL(p || q) summed over action dimensions, [...]."""
        mean_p, log_std_p = _split_gaussian(params_p)
        mean_q, log_std_q = _split_gaussian(params_q)
        var_p, var_q = tf.exp(2.0 * log_std_p), tf.exp(2.0 * log_std_q)
        per_dim = (log_std_q - log_std_p
                   + (var_p + tf.square(mean_p - mean_q)) / (2.0 * var_q) - 0.5)
        return tf.reduce_sum(per_dim, axis=-1)

    @staticmethod
    def sample_np(params: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Sample one action per row of params [N, 2D]."""
        mean, log_std = np.split(params, 2, axis=-1)
        log_std = np.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)
        return (mean + np.exp(log_std) * rng.standard_normal(mean.shape)).astype(np.float32)

    @staticmethod
    def mode_np(params: np.ndarray) -> np.ndarray:
        """The mean action per row."""
        return np.split(params, 2, axis=-1)[0].astype(np.float32)
