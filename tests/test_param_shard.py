"""A parameter-server shard's math against plain NumPy: Adam, clipping, slices, aux rules,
the staleness rule, and resuming from a snapshot."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from drlbox.algorithms import ALGORITHM_CLASSES
from drlbox.config import trainer_config
from drlbox.ops.flat_weights import WeightLayout, shard_bounds, slice_pieces
from drlbox.ops.fused_adam import FusedAdam, can_fuse
from drlbox.roles.interfaces import ShardState
from drlbox.roles.param_shard import (GradientError, ParameterShard, make_optimizer,
                                      shard_from_settings, wants_weights)
from drlbox.roles.param_server import shard_settings
from drlbox.rpc import serde

LR, BETA_1, BETA_2, EPS = 1e-2, 0.9, 0.999, 1e-4


def numpy_adam(weights, gradients, lr=LR, beta_1=BETA_1, beta_2=BETA_2, epsilon=EPS):
    """Reference: Adam written out step by step, in float64."""
    w = weights.astype(np.float64)
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t, g in enumerate(gradients, start=1):
        g = g.astype(np.float64)
        m = beta_1 * m + (1 - beta_1) * g
        v = beta_2 * v + (1 - beta_2) * g * g
        alpha = lr * np.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)
        w = w - alpha * m / (np.sqrt(v) + epsilon)
    return w


def layout_of(*shapes, frozen=()):
    """A WeightLayout of float32 variables of these shapes (indices in `frozen` not trained)."""
    rng = np.random.default_rng(0)
    variables = [keras.Variable(rng.standard_normal(shape).astype(np.float32),
                                trainable=i not in frozen, name=f"w{i}")
                 for i, shape in enumerate(shapes)]
    return WeightLayout(variables)


def make_shard(layout, start, stop, optimizer=None, clip_norm=1e9, aux_rule=None,
               max_staleness=0, state=None):
    flat = layout.flat([v.numpy() for v in layout.variables])
    optimizer = optimizer or FusedAdam(learning_rate=LR, epsilon=EPS)
    return ParameterShard(slice_pieces(layout, start, stop),
                          state or ShardState(flat[start:stop].copy()), optimizer, clip_norm,
                          aux_rule, max_staleness)


def gradients(size, count, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(size).astype(np.float32) for _ in range(count)]


def test_fused_adam_matches_a_numpy_reference_and_keras():
    layout = layout_of((6, 5), (5,), (5, 3))
    start_weights = layout.flat([v.numpy() for v in layout.variables])
    grads = gradients(layout.size, 5)
    fused = make_shard(layout, 0, layout.size)
    per_piece = make_shard(layout, 0, layout.size,
                           keras.optimizers.Adam(learning_rate=LR, epsilon=EPS))
    for g in grads:
        fused.exchange(g, -1, -1)
        per_piece.exchange(g, -1, -1)
    reference = numpy_adam(start_weights, grads)
    np.testing.assert_allclose(fused.weights(), reference, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(per_piece.weights(), reference, rtol=1e-5, atol=1e-6)
    assert fused.version == fused.updates == 5


def test_only_plain_adam_settings_take_the_fused_path():
    assert can_fuse({"learning_rate": 1e-4, "epsilon": 1e-4, "beta_1": 0.8})
    assert not can_fuse({"learning_rate": 1e-4, "amsgrad": True})
    assert not can_fuse({"learning_rate": keras.optimizers.schedules.ExponentialDecay(
        1e-3, 100, 0.5)})
    assert isinstance(make_optimizer("adam", {"learning_rate": 1e-4}), FusedAdam)
    assert isinstance(make_optimizer("adam", {"learning_rate": 1e-4, "weight_decay": 0.1}),
                      keras.optimizers.Adam)
    user = keras.optimizers.RMSprop(learning_rate=3e-3)
    copy = make_optimizer(user, {})
    assert isinstance(copy, keras.optimizers.RMSprop) and copy is not user


@pytest.mark.parametrize("optimizer", ["fused", "keras"])
def test_slices_updated_apart_equal_the_whole_vector_updated_at_once(optimizer):
    """Cutting the weights into shards changes nothing: Adam is elementwise."""
    layout = layout_of((7, 4), (4,), (4, 3), (3,))
    new = (lambda: FusedAdam(learning_rate=LR, epsilon=EPS)) if optimizer == "fused" else (
        lambda: keras.optimizers.Adam(learning_rate=LR, epsilon=EPS))
    whole = make_shard(layout, 0, layout.size, new())
    bounds = shard_bounds(layout.size, 3)
    parts = [make_shard(layout, lo, hi, new()) for lo, hi in bounds]
    for g in gradients(layout.size, 4):
        whole.exchange(g, -1, -1)
        for (lo, hi), part in zip(bounds, parts):
            part.exchange(g[lo:hi], -1, -1)
    np.testing.assert_allclose(np.concatenate([p.weights() for p in parts]), whole.weights(),
                               rtol=1e-6, atol=1e-7)


def test_slice_pieces_keep_whole_variables_whole_and_cut_the_one_on_a_boundary():
    layout = layout_of((4, 3), (3,), (3, 2))        # sizes 12, 3, 6
    assert shard_bounds(21, 2) == [(0, 10), (10, 21)]
    first = slice_pieces(layout, 0, 10)
    second = slice_pieces(layout, 10, 21)
    assert [(p.start, p.stop, p.shape) for p in first] == [(0, 10, (10,))]
    assert [(p.start, p.stop, p.shape) for p in second] == [(0, 2, (2,)), (2, 5, (3,)),
                                                            (5, 11, (3, 2))]
    with pytest.raises(ValueError, match="cannot cut 3 weights into 4"):
        shard_bounds(3, 4)


def test_weights_that_are_not_trained_never_move():
    layout = layout_of((3, 2), (2,), (4,), frozen={1})
    start_weights = layout.flat([v.numpy() for v in layout.variables])
    shard = make_shard(layout, 0, layout.size)
    for g in gradients(layout.size, 3):
        shard.exchange(g, -1, -1)         # a hostile push with gradients for the frozen ones
    after = shard.weights()
    np.testing.assert_array_equal(after[6:8], start_weights[6:8])
    assert np.all(after[:6] != start_weights[:6]) and np.all(after[8:] != start_weights[8:])


def test_a_slice_above_the_clip_norm_is_scaled_to_it_and_bad_ones_are_refused():
    layout = layout_of((10,))
    clipped, pushed = make_shard(layout, 0, 10, clip_norm=0.5), make_shard(layout, 0, 10)
    big = np.arange(1, 11, dtype=np.float32)
    clipped.exchange(big, -1, -1)
    pushed.exchange(big * np.float32(0.5 / np.linalg.norm(big)), -1, -1)
    np.testing.assert_allclose(clipped.weights(), pushed.weights(), rtol=0, atol=1e-7)
    before = clipped.weights().copy()
    for bad, match in [(np.full(9, 0.1, np.float32), "takes 10 float32"),
                       (np.full(10, 0.1, np.float64), "takes 10 float32"),
                       (np.full(10, 1e20, np.float32), "NaN or infinite"),
                       (np.array([np.nan] + [0.0] * 9, np.float32), "NaN or infinite")]:
        with pytest.raises(GradientError, match=match):
            clipped.exchange(bad, -1, -1)
    assert clipped.version == 1
    assert clipped.weights().tobytes() == before.tobytes()


def test_bfloat16_pushes_keep_float32_range_and_about_three_digits():
    rng = np.random.default_rng(3)
    values = (rng.standard_normal(10_000) * 1e-3).astype(np.float32)
    values[:3] = [2.5e30, -7e-30, 1e-38]              # float16 could hold none of these
    compressed = serde.to_bfloat16(values)
    assert compressed.dtype.name == "bfloat16" and compressed.nbytes == values.nbytes // 2
    back = compressed.astype(np.float32)
    np.testing.assert_allclose(back, values, rtol=2 ** -8, atol=0)
    # A shard fed the bfloat16 slice moves as with the float32 one, to about 3 digits.
    layout = layout_of((100, 100))
    small = values.copy()
    small[:3] = 1e-3
    exact, pushed = make_shard(layout, 0, 10_000), make_shard(layout, 0, 10_000)
    exact.exchange(small, -1, -1)
    pushed.exchange(serde.to_bfloat16(small), -1, -1)
    np.testing.assert_allclose(pushed.weights(), exact.weights(), rtol=0, atol=1e-5)
    with pytest.raises(GradientError, match="takes 10000 float32 .or bfloat16"):
        pushed.exchange(small.astype(np.float16), -1, -1)
    assert pushed.version == 1


def test_aux_rules_follow_the_algorithms():
    acer = trainer_config("acer", env_maker=lambda: None, feature_maker=lambda s: None,
                          acer_soft_update_ratio=0.25)
    polyak = ALGORITHM_CLASSES["acer"].aux_rule(acer)
    average, weights = np.zeros(3, np.float32), np.ones(3, np.float32)
    np.testing.assert_allclose(polyak(average, weights, 1), [0.25] * 3)
    dqn = trainer_config("dqn", env_maker=lambda: None, feature_maker=lambda s: None,
                         sync_target_interval=3)
    sync = ALGORITHM_CLASSES["dqn"].aux_rule(dqn)
    assert sync(average, weights, 2) is None
    copied = sync(average, weights, 3)
    np.testing.assert_array_equal(copied, weights)
    assert copied is not weights
    assert ALGORITHM_CLASSES["a3c"].aux_rule(acer) is None


def test_the_staleness_rule():
    assert wants_weights(5, -1, 3)                     # holds nothing
    assert wants_weights(5, 9, 3)                      # ahead: the server restarted
    assert not wants_weights(5, 2, 3) and wants_weights(6, 2, 3)
    assert not wants_weights(5, 5, 0) and wants_weights(5, 4, 0)


def test_a_shard_resumes_exactly_from_its_snapshot():
    layout = layout_of((5, 4), (4,))
    grads = gradients(layout.size, 6)
    straight = make_shard(layout, 0, layout.size)
    for g in grads:
        straight.exchange(g, -1, -1)
    first = make_shard(layout, 0, layout.size)
    for g in grads[:3]:
        first.exchange(g, -1, -1)
    snapshot = first.snapshot()
    assert (snapshot.version, snapshot.updates) == (3, 3)
    resumed = make_shard(layout, 0, layout.size, state=snapshot)
    for g in grads[3:]:
        resumed.exchange(g, -1, -1)
    assert resumed.weights().tobytes() == straight.weights().tobytes()
    assert resumed.version == 6


def test_a_shard_process_builds_the_same_shard_from_plain_settings():
    cfg = trainer_config("dqn", env_maker=lambda: None, feature_maker=lambda s: None,
                         opt_kwargs={"learning_rate": LR}, sync_target_interval=2,
                         opt_clip_norm=7.0, max_staleness=3)
    layout = layout_of((6, 4), (4,), (4, 2))
    lo, hi = shard_bounds(layout.size, 2)[1]
    settings = shard_settings(cfg, slice_pieces(layout, lo, hi), 1, 2)
    flat = layout.flat([v.numpy() for v in layout.variables])
    remote = shard_from_settings(settings, ShardState(flat[lo:hi].copy()))
    local = ParameterShard(slice_pieces(layout, lo, hi), ShardState(flat[lo:hi].copy()),
                           make_optimizer(cfg.optimizer, cfg.merged_opt_kwargs),
                           cfg.opt_clip_norm, ALGORITHM_CLASSES["dqn"].aux_rule(cfg), 3)
    assert (remote.clip_norm, remote.max_staleness) == (7.0, 3)
    for g in gradients(hi - lo, 4):
        a, b = remote.exchange(g, -1, -1), local.exchange(g, -1, -1)
        assert a.aux_version == b.aux_version
    assert remote.weights().tobytes() == local.weights().tobytes()
    assert remote.aux_version == 4


def test_snapshot_arrays_do_not_change_after_later_updates():
    layout = layout_of((8,))
    shard = make_shard(layout, 0, 8)
    shard.exchange(gradients(8, 1)[0], -1, -1)
    snapshot = shard.snapshot()
    kept = snapshot.weights.copy(), [o.copy() for o in snapshot.optimizer]
    shard.exchange(gradients(8, 1, seed=1)[0], -1, -1)
    assert snapshot.weights.tobytes() == kept[0].tobytes()
    for now, then in zip(snapshot.optimizer, kept[1]):
        assert now.tobytes() == then.tobytes()
    assert tf.executing_eagerly()
