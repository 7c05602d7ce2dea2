"""Return and trace targets against plain per-step NumPy loops.

The sequences mix three kinds of step ends: a step that continues, an episode that *terminates*
(no bootstrap: discount 0) and an episode that is *truncated* or a rollout that is cut (bootstrap
from the value of the final observation, trace stops: lambda 0).
"""
import numpy as np
import pytest
import tensorflow as tf

from drlbox.ops import returns

GAMMA = 0.9


def make_sequence(seed=0, steps=7, batch=3):
    """Random rewards and values with a termination and a truncation in the middle."""
    rng = np.random.default_rng(seed)
    r = rng.normal(size=(steps, batch)).astype(np.float32)
    values = rng.normal(size=(steps + 1, batch)).astype(np.float32)
    terminated = np.zeros((steps, batch), bool)
    truncated = np.zeros((steps, batch), bool)
    terminated[2, 0] = True          # column 0: episode ends at step 2, next one starts at 3
    truncated[4, 1] = True           # column 1: time limit at step 4, bootstrap from final obs
    terminated[1, 2] = truncated[5, 2] = True
    discount = np.where(terminated, 0.0, GAMMA).astype(np.float32)
    lam = np.where(terminated | truncated, 0.0, 1.0).astype(np.float32)
    return r, values, discount, lam, terminated, truncated


def ref_nstep(r, v_tp1, terminated, truncated):
    """n-step returns written the textbook way: walk back, restart at every episode end."""
    steps, batch = r.shape
    out = np.zeros_like(r)
    for b in range(batch):
        g = None
        for t in reversed(range(steps)):
            if terminated[t, b]:
                g = r[t, b]
            elif truncated[t, b] or t == steps - 1:
                g = r[t, b] + GAMMA * v_tp1[t, b]
            else:
                g = r[t, b] + GAMMA * g
            out[t, b] = g
    return out


def ref_vtrace(values, r, terminated, truncated, log_rho, rho_bar, c_bar):
    """V-trace as the IMPALA paper writes it, one column and one step at a time."""
    steps, batch = r.shape
    vs = np.zeros_like(r)
    adv = np.zeros_like(r)
    for b in range(batch):
        acc = 0.0                                    # vs_{t+1} - V(s_{t+1})
        for t in reversed(range(steps)):
            cut = terminated[t, b] or truncated[t, b] or t == steps - 1
            d = 0.0 if terminated[t, b] else GAMMA
            rho = min(rho_bar, np.exp(log_rho[t, b]))
            c = 0.0 if cut else min(c_bar, np.exp(log_rho[t, b]))
            delta = rho * (r[t, b] + d * values[t + 1, b] - values[t, b])
            acc = delta + d * c * acc
            vs[t, b] = values[t, b] + acc
        for t in range(steps):
            cut = terminated[t, b] or truncated[t, b] or t == steps - 1
            d = 0.0 if terminated[t, b] else GAMMA
            vs_next = values[t + 1, b] if cut else vs[t + 1, b]
            rho = min(rho_bar, np.exp(log_rho[t, b]))
            adv[t, b] = rho * (r[t, b] + d * vs_next - values[t, b])
    return vs, adv


def ref_retrace(q_a, values, r, terminated, truncated, rho):
    """ACER's Algorithm 2: Q_ret walks back from the bootstrap value, reset at episode ends."""
    steps, batch = r.shape
    out = np.zeros_like(r)
    for b in range(batch):
        q_ret = 0.0
        for t in reversed(range(steps)):
            if terminated[t, b]:
                q_ret = 0.0
            elif truncated[t, b] or t == steps - 1:
                q_ret = values[t + 1, b]
            q_ret = r[t, b] + (0.0 if terminated[t, b] else GAMMA) * q_ret
            out[t, b] = q_ret
            q_ret = min(1.0, rho[t, b]) * (q_ret - q_a[t, b]) + values[t, b]
    return out


def test_discounted_sum_matches_loop_with_zeros_and_large_factors():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(9, 4)).astype(np.float64)
    c = rng.uniform(0, 1.5, size=(9, 4))
    c[3, :2] = 0.0
    expected = np.zeros_like(x)
    y = np.zeros(4)
    for t in reversed(range(9)):
        y = x[t] + c[t] * y
        expected[t] = y
    np.testing.assert_allclose(returns.discounted_sum(x, c).numpy(), expected, rtol=1e-10)


def test_discounted_sum_handles_trailing_dimensions():
    x = np.ones((3, 2, 2), np.float32)
    c = np.full((3, 2, 2), 0.5, np.float32)
    np.testing.assert_allclose(returns.discounted_sum(x, c).numpy()[0], np.full((2, 2), 1.75))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nstep_returns_terminated_and_truncated_mid_rollout(seed):
    r, values, discount, lam, terminated, truncated = make_sequence(seed)
    got = returns.lambda_returns(r, discount, values[1:], lam).numpy()
    np.testing.assert_allclose(got, ref_nstep(r, values[1:], terminated, truncated), rtol=1e-5,
                               atol=1e-6)


def test_termination_does_not_bootstrap_and_truncation_does():
    r = np.ones((2, 2), np.float32)
    v_tp1 = np.full((2, 2), 10.0, np.float32)
    discount = np.array([[GAMMA, GAMMA], [0.0, GAMMA]], np.float32)   # column 0 terminates
    lam = np.array([[1.0, 1.0], [0.0, 0.0]], np.float32)
    got = returns.lambda_returns(r, discount, v_tp1, lam).numpy()
    assert got[1, 0] == pytest.approx(1.0)                 # terminated: reward only
    assert got[1, 1] == pytest.approx(1.0 + GAMMA * 10.0)  # truncated: bootstraps
    assert got[0, 0] == pytest.approx(1.0 + GAMMA * 1.0)


@pytest.mark.parametrize("rho_bar,c_bar", [(1.0, 1.0), (0.5, 0.8), (2.0, 1.0)])
def test_vtrace_matches_paper_loop(rho_bar, c_bar):
    r, values, discount, lam, terminated, truncated = make_sequence(3)
    log_rho = np.random.default_rng(4).normal(scale=0.7, size=r.shape).astype(np.float32)
    got = returns.vtrace(values, r, discount, log_rho, lam, rho_bar, c_bar)
    vs, adv = ref_vtrace(values, r, terminated, truncated, log_rho, rho_bar, c_bar)
    np.testing.assert_allclose(got.vs.numpy(), vs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.pg_advantages.numpy(), adv, rtol=1e-5, atol=1e-5)


def test_vtrace_on_policy_equals_nstep_returns():
    r, values, discount, lam, terminated, truncated = make_sequence(5)
    got = returns.vtrace(values, r, discount, np.zeros_like(r), lam, 1.0, 1.0)
    np.testing.assert_allclose(got.vs.numpy(), ref_nstep(r, values[1:], terminated, truncated),
                               rtol=1e-5, atol=1e-5)


def test_vtrace_cut_equals_two_separate_traces():
    r, values, discount, _, _, _ = make_sequence(6, steps=6)
    r, values, discount = r[:, 1:2], values[:, 1:2], discount[:, 1:2]   # no episode end
    log_rho = np.random.default_rng(7).normal(size=r.shape).astype(np.float32)
    lam = np.ones_like(r)
    lam[2] = 0.0                                             # cut after step 2
    whole = returns.vtrace(values, r, discount, log_rho, lam).vs.numpy()
    first = returns.vtrace(values[:4], r[:3], discount[:3], log_rho[:3], lam[:3]).vs.numpy()
    second = returns.vtrace(values[3:], r[3:], discount[3:], log_rho[3:], lam[3:]).vs.numpy()
    np.testing.assert_allclose(whole, np.concatenate([first, second]), rtol=1e-6)


def test_retrace_matches_acer_algorithm():
    r, values, discount, lam, terminated, truncated = make_sequence(8)
    rng = np.random.default_rng(9)
    q_a = rng.normal(size=r.shape).astype(np.float32)
    rho = rng.uniform(0.2, 2.5, size=r.shape).astype(np.float32)
    got = returns.retrace_q_targets(q_a, values, r, discount, rho, lam).numpy()
    np.testing.assert_allclose(got, ref_retrace(q_a, values, r, terminated, truncated, rho),
                               rtol=1e-5, atol=1e-5)


def test_retrace_with_exact_q_and_on_policy_is_nstep_of_expected_values():
    # With rho = 1 and Q(s_t, a_t) = V(s_t), Q_ret telescopes to the plain n-step return.
    r, values, discount, lam, terminated, truncated = make_sequence(10)
    got = returns.retrace_q_targets(values[:-1], values, r, discount, np.ones_like(r), lam)
    np.testing.assert_allclose(got.numpy(), ref_nstep(r, values[1:], terminated, truncated),
                               rtol=1e-5, atol=1e-5)


def test_q_bootstrap_double_and_max():
    q_target = np.array([[[1.0, 5.0, 3.0]], [[2.0, 0.0, 4.0]]], np.float32)   # [T=2, B=1, A=3]
    q_online = np.array([[[9.0, 0.0, 0.0]], [[0.0, 7.0, 0.0]]], np.float32)
    np.testing.assert_allclose(returns.q_bootstrap(q_target).numpy(), [[5.0], [4.0]])
    np.testing.assert_allclose(returns.q_bootstrap(q_target, q_online).numpy(), [[1.0], [0.0]])


def test_targets_carry_no_gradient():
    values = tf.Variable(np.ones((4, 2), np.float32))
    r = np.ones((3, 2), np.float32)
    with tf.GradientTape() as tape:
        target = returns.lambda_returns(r, np.full_like(r, GAMMA), values[1:], np.ones_like(r))
        loss = tf.reduce_sum(target)
    assert tape.gradient(loss, values) is None
