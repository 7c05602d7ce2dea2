"""Categorical and Gaussian policy maths against direct NumPy formulas."""
import numpy as np
import pytest

from drlbox.ops.distributions import Categorical, DiagGaussian


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_categorical_log_prob_entropy_kl():
    rng = np.random.default_rng(0)
    lp, lq = rng.normal(size=(2, 5, 4)).astype(np.float32)
    actions = rng.integers(0, 4, size=5)
    p, q = softmax(lp), softmax(lq)
    np.testing.assert_allclose(Categorical.log_prob(lp, actions).numpy(),
                               np.log(p[np.arange(5), actions]), rtol=1e-5)
    np.testing.assert_allclose(Categorical.entropy(lp).numpy(), -(p * np.log(p)).sum(-1),
                               rtol=1e-5)
    np.testing.assert_allclose(Categorical.kl(lp, lq).numpy(),
                               (p * (np.log(p) - np.log(q))).sum(-1), rtol=1e-4, atol=1e-6)


def test_categorical_sampling_frequencies_follow_probabilities():
    logits = np.log(np.array([[0.1, 0.6, 0.3]] * 20000))
    counts = np.bincount(Categorical.sample_np(logits, np.random.default_rng(1)), minlength=3)
    np.testing.assert_allclose(counts / counts.sum(), [0.1, 0.6, 0.3], atol=0.015)
    assert Categorical.mode_np(logits[:2]).tolist() == [1, 1]


def test_gaussian_log_prob_entropy_kl():
    rng = np.random.default_rng(2)
    mean_p, mean_q = rng.normal(size=(2, 6, 3))
    log_std_p, log_std_q = rng.uniform(-1, 0.5, size=(2, 6, 3))
    pp = np.concatenate([mean_p, log_std_p], -1).astype(np.float32)
    pq = np.concatenate([mean_q, log_std_q], -1).astype(np.float32)
    a = rng.normal(size=(6, 3)).astype(np.float32)
    std_p, std_q = np.exp(log_std_p), np.exp(log_std_q)
    logp = (-0.5 * ((a - mean_p) / std_p) ** 2 - np.log(std_p * np.sqrt(2 * np.pi))).sum(-1)
    ent = (0.5 * np.log(2 * np.pi * np.e * std_p ** 2)).sum(-1)
    kl = (np.log(std_q / std_p) + (std_p ** 2 + (mean_p - mean_q) ** 2) / (2 * std_q ** 2)
          - 0.5).sum(-1)
    np.testing.assert_allclose(DiagGaussian.log_prob(pp, a).numpy(), logp, rtol=1e-4)
    np.testing.assert_allclose(DiagGaussian.entropy(pp).numpy(), ent, rtol=1e-5)
    np.testing.assert_allclose(DiagGaussian.kl(pp, pq).numpy(), kl, rtol=1e-4, atol=1e-6)


def test_gaussian_sampling_moments():
    params = np.tile(np.array([[1.5, -2.0, np.log(0.5), np.log(2.0)]], np.float32), (40000, 1))
    samples = DiagGaussian.sample_np(params, np.random.default_rng(3))
    np.testing.assert_allclose(samples.mean(0), [1.5, -2.0], atol=0.05)
    np.testing.assert_allclose(samples.std(0), [0.5, 2.0], rtol=0.03)
    np.testing.assert_allclose(DiagGaussian.mode_np(params[:1]), [[1.5, -2.0]])


@pytest.mark.parametrize("log_std", [-20.0, 20.0])
def test_gaussian_log_std_is_clipped_to_stay_finite(log_std):
    params = np.array([[0.0, log_std]], np.float32)
    assert np.isfinite(DiagGaussian.log_prob(params, np.array([[3.0]], np.float32)).numpy()).all()
