"""The rollout worker's gradient step and weight exchange, with an in-process parameter server."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import cartpole
from drlbox.config import trainer_config
from drlbox.jobs import Job
from drlbox.launch.processes import build_parameter_server
from drlbox.layers.noisy import synced_weights
from drlbox.ops.rollout import pack_lists
from drlbox.roles.interfaces import WeightsUpdate
from drlbox.roles.worker import RolloutWorker, merge_updates


def small_features(space, dropout=0.0):
    inputs = keras.Input(space.shape)
    x = keras.layers.Dense(32, activation="tanh")(inputs)
    if dropout:
        x = keras.layers.Dropout(dropout)(x)
    return inputs, keras.layers.Dense(16, activation="tanh")(x)


def worker_and_server(algorithm="a3c", **kwargs):
    kwargs.setdefault("feature_maker", small_features)
    cfg = trainer_config(algorithm, env_maker=cartpole, train_steps=10**9, seed=0, batch_size=4,
                         rollout_maxlen=8, **kwargs)
    server = build_parameter_server(Job.new(cfg))
    return RolloutWorker(cfg, server, None, 0, seed=1), server


def eager_gradient(worker, arrays, batch, clip_norm):
    """Reference: a copy of the model holding `arrays`, differentiated eagerly; its gradients
    flattened in variable order and scaled down to a global norm of at most clip_norm."""
    model = keras.models.clone_model(worker.model)
    for var, array in zip(synced_weights(model), arrays):
        var.assign(array)
    with tf.GradientTape() as tape:
        out = worker.algorithm.loss(model, None, {k: tf.constant(v) for k, v in batch.items()})
    grads = tape.gradient(out.loss, model.trainable_variables)
    flat = np.concatenate([g.numpy().ravel() for g in grads])
    norm = float(np.sqrt(np.sum(flat.astype(np.float64) ** 2)))
    return flat * min(1.0, clip_norm / norm), norm


def perturbed_weights(worker, server):
    rng = np.random.default_rng(0)
    arrays = worker.layout.merge(server.get_weights(-1).weights, [])
    return [(a + 0.1 * rng.standard_normal(a.shape)).astype(np.float32) for a in arrays]


def test_gradient_step_at_given_weights_matches_eager_reference_and_leaves_variables():
    worker, server = worker_and_server()
    worker.sync()
    batch = pack_lists(worker.collector.collect(4, 0), worker.config.discount, None)
    arrays = perturbed_weights(worker, server)
    before = [v.numpy().copy() for v in worker.model.variables]

    grad, stats, _ = worker.gradient_step(worker.layout.flat(arrays), batch)

    reference, norm = eager_gradient(worker, arrays, batch, worker.config.opt_clip_norm)
    assert grad.shape == reference.shape == (worker.layout.size,)
    np.testing.assert_allclose(grad, reference, rtol=1e-4, atol=1e-6)
    assert stats["grad_norm"] == pytest.approx(norm, rel=1e-4)
    assert set(stats) >= {"policy_loss", "value_loss", "entropy"}
    for var, old in zip(worker.model.variables, before):
        np.testing.assert_array_equal(var.numpy(), old)


def test_gradient_step_clips_the_whole_gradient_by_its_global_norm():
    worker, server = worker_and_server(opt_clip_norm=1e-3)
    worker.sync()
    batch = pack_lists(worker.collector.collect(4, 0), worker.config.discount, None)
    arrays = perturbed_weights(worker, server)

    grad, stats, _ = worker.gradient_step(worker.layout.flat(arrays), batch)

    reference, norm = eager_gradient(worker, arrays, batch, 1e-3)
    assert norm > 1e-3, "the test needs a gradient that clipping changes"
    assert np.linalg.norm(grad) == pytest.approx(1e-3, rel=1e-4)
    np.testing.assert_allclose(grad, reference, rtol=1e-4, atol=1e-9)


def test_gradient_step_advances_dropout_state_between_calls():
    worker, _ = worker_and_server(feature_maker=lambda space: small_features(space, dropout=0.5))
    worker.sync()
    batch = pack_lists(worker.collector.collect(4, 0), worker.config.discount, None)
    first, _, _ = worker.gradient_step(worker.flat_weights, batch)
    second, _, _ = worker.gradient_step(worker.flat_weights, batch)
    # Same weights and batch: only a fresh dropout mask can make the gradients differ.
    assert not np.allclose(first, second)


def test_worker_acts_and_learns_with_the_newest_weights():
    worker, server = worker_and_server()
    for _ in range(5):
        worker.run_once()
    worker.exchange.wait()
    worker.sync()
    assert worker.version == server.version == worker.pushes
    now = server.get_weights(-1).weights
    np.testing.assert_array_equal(worker.flat_weights, now)
    # Acting uses them too: the NumPy forward pass equals the Keras model holding them.
    probe = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    reference = keras.models.clone_model(worker.model)
    reference.set_weights(worker.layout.merge(now, []))
    np.testing.assert_allclose(worker.predict(probe)[0], reference(probe)[0].numpy(),
                               rtol=1e-5, atol=1e-5)


def test_dqn_worker_receives_target_weights_when_they_change():
    worker, server = worker_and_server("dqn", sync_target_interval=2, replay_type="uniform",
                                       online_learning=True)
    worker.sync()
    assert worker.aux_version == 0
    for _ in range(4):
        worker.run_once()
    worker.exchange.wait()
    worker.sync()
    assert server.aux_version >= 2 and worker.aux_version == server.aux_version
    target = worker.aux_layout.merge(server.get_weights(-1, -1).aux, [])
    for var, array in zip(synced_weights(worker.aux_model), target):
        np.testing.assert_array_equal(var.numpy(), array)


def test_merge_updates_keeps_the_older_aux_set_when_the_newer_has_none():
    old = WeightsUpdate(3, ["w3"], 3, ["a3"])
    new = WeightsUpdate(4, ["w4"], 3, None)
    assert merge_updates(old, new) == WeightsUpdate(4, ["w4"], 3, ["a3"])
    assert merge_updates(None, new) is new
    newest = WeightsUpdate(5, ["w5"], 5, ["a5"])
    assert merge_updates(old, newest) is newest
