"""Tests for drlbox.layers.noisy (NoisyNet dense layers)."""
from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from drlbox.layers import (
    NoisyDense,
    noise_variable_ids,
    noisy_layers,
    resample_noise,
    synced_weights,
)

FAN_IN = 5
ROOT = math.sqrt(FAN_IN)


def _built(layer: NoisyDense, fan_in: int = FAN_IN) -> NoisyDense:
    """Build ``layer`` for inputs of width ``fan_in`` and return it."""
    layer.build((None, fan_in))
    return layer


def _f(x: np.ndarray) -> np.ndarray:
    """The paper's f(x) = sign(x) sqrt(|x|), in numpy."""
    return np.sign(x) * np.sqrt(np.abs(x))


def _x(batch: int = 4, fan_in: int = FAN_IN, seed: int = 0) -> np.ndarray:
    """A deterministic float32 input batch."""
    return np.random.default_rng(seed).normal(size=(batch, fan_in)).astype("float32")


def _model(seed: int = 0) -> keras.Model:
    """A small functional model mixing both noise types and a plain Dense."""
    inp = keras.Input((FAN_IN,))
    h = NoisyDense(8, noise="ig", activation="relu", seed=seed, name="nd_ig")(inp)
    h = keras.layers.Dense(6, activation="tanh", name="plain")(h)
    out = NoisyDense(3, noise="fg", sigma_init=0.3, seed=seed + 1, name="nd_fg")(h)
    return keras.Model(inp, out)


def noise_variables_of(model: keras.Model) -> list[keras.Variable]:
    """All noise variables of ``model`` in layer order."""
    return [v for layer in noisy_layers(model) for v in layer.noise_variables]


@pytest.mark.parametrize("noise", ["ig", "fg"])
def test_output_shape(noise: str) -> None:
    layer = NoisyDense(7, noise=noise, seed=1)
    assert tuple(layer(_x()).shape) == (4, 7)
    # Rank > 2 inputs contract over the last axis only, like Dense.
    assert tuple(layer(np.ones((2, 3, FAN_IN), "float32")).shape) == (2, 3, 7)
    assert layer.compute_output_shape((None, 3, FAN_IN)) == (None, 3, 7)


def test_default_init_follows_paper() -> None:
    ig = _built(NoisyDense(4, noise="ig", seed=0))
    fg = _built(NoisyDense(4, noise="fg", seed=0))
    np.testing.assert_allclose(ig.kernel_sigma.numpy(), 0.017)
    np.testing.assert_allclose(ig.bias_sigma.numpy(), 0.017)
    np.testing.assert_allclose(fg.kernel_sigma.numpy(), 0.5 / ROOT, rtol=1e-6)
    np.testing.assert_allclose(fg.bias_sigma.numpy(), 0.5 / ROOT, rtol=1e-6)
    assert np.abs(ig.kernel_mu.numpy()).max() <= math.sqrt(3 / FAN_IN)
    assert np.abs(fg.kernel_mu.numpy()).max() <= 1 / math.sqrt(FAN_IN)
    assert np.abs(fg.bias_mu.numpy()).max() <= 1 / math.sqrt(FAN_IN)
    # An explicit sigma_init is sigma_0: absolute for ig, / sqrt(fan_in) for fg.
    ig2 = _built(NoisyDense(4, noise="ig", sigma_init=0.2))
    fg2 = _built(NoisyDense(4, noise="fg", sigma_init=0.2))
    np.testing.assert_allclose(ig2.kernel_sigma.numpy(), 0.2)
    np.testing.assert_allclose(fg2.kernel_sigma.numpy(), 0.2 / ROOT, rtol=1e-6)


def test_ig_noise_is_independent_per_weight() -> None:
    layer = _built(NoisyDense(4, noise="ig", seed=3))
    shapes = [tuple(v.shape) for v in layer.noise_variables]
    assert shapes == [(FAN_IN, 4), (4,)]
    assert all(not v.trainable for v in layer.noise_variables)
    eps = np.asarray(layer.kernel_epsilon)
    np.testing.assert_array_equal(eps, layer.kernel_eps.numpy())
    # Independent draws: the noise matrix is (almost surely) full rank.
    assert np.linalg.matrix_rank(eps) == min(FAN_IN, 4)


def test_fg_noise_is_rank_one_outer_product() -> None:
    layer = _built(NoisyDense(4, noise="fg", seed=3))
    shapes = [tuple(v.shape) for v in layer.noise_variables]
    assert shapes == [(FAN_IN,), (4,)]
    eps_in, eps_out = (v.numpy() for v in layer.noise_variables)
    expected = np.outer(_f(eps_in), _f(eps_out))
    np.testing.assert_allclose(np.asarray(layer.kernel_epsilon), expected, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(layer.bias_epsilon), _f(eps_out), rtol=1e-6)
    assert np.linalg.matrix_rank(expected) == 1


@pytest.mark.parametrize("noise, rank", [("ig", min(FAN_IN, 4)), ("fg", 1)])
def test_noise_structure_by_behaviour(noise: str, rank: int) -> None:
    # With mu = 0 and sigma = 1, feeding the identity reads out the noise matrix.
    layer = _built(NoisyDense(4, noise=noise, use_bias=False, seed=5))
    layer.kernel_mu.assign(np.zeros((FAN_IN, 4), "float32"))
    layer.kernel_sigma.assign(np.ones((FAN_IN, 4), "float32"))
    weights = layer(np.eye(FAN_IN, dtype="float32")).numpy()
    assert np.linalg.matrix_rank(weights, tol=1e-5) == rank


@pytest.mark.parametrize("noise", ["ig", "fg"])
def test_noise_fixed_until_resample(noise: str) -> None:
    layer = NoisyDense(6, noise=noise, seed=7)
    x = _x()
    y1 = layer(x).numpy()
    np.testing.assert_array_equal(y1, layer(x).numpy())
    before = [v.numpy().copy() for v in layer.noise_variables]
    layer.resample()  # eager, outside any tf.function
    after = [v.numpy() for v in layer.noise_variables]
    assert all(not np.array_equal(b, a) for b, a in zip(before, after))
    y2 = layer(x).numpy()
    assert not np.allclose(y1, y2)
    np.testing.assert_array_equal(y2, layer(x).numpy())


def test_resample_inside_tf_function() -> None:
    layer = NoisyDense(3, seed=2)
    x = _x()
    layer(x)

    @tf.function
    def step(inputs: tf.Tensor) -> tf.Tensor:
        layer.resample()
        return layer(inputs)

    # The seed generator state advances in the graph too, so each call differs.
    assert not np.allclose(step(x).numpy(), step(x).numpy())


def test_same_seed_reproduces_layer() -> None:
    x = _x()
    a, b = NoisyDense(4, seed=11), NoisyDense(4, seed=11)
    np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())
    a.resample()
    b.resample()
    np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())


def test_resample_before_build_raises() -> None:
    layer = NoisyDense(3)
    assert layer.noise_variables == []
    with pytest.raises(ValueError, match="built"):
        layer.resample()


@pytest.mark.parametrize("noise", ["ig", "fg"])
def test_zero_sigma_equals_dense_with_mu(noise: str) -> None:
    x = _x()
    layer = NoisyDense(4, noise=noise, activation="relu", sigma_init=0.0, seed=1)
    y = layer(x).numpy()
    dense = keras.layers.Dense(4, activation="relu")
    dense.build((None, FAN_IN))
    dense.set_weights([layer.kernel_mu.numpy(), layer.bias_mu.numpy()])
    np.testing.assert_allclose(y, dense(x).numpy(), rtol=1e-6, atol=1e-6)
    layer.resample()  # noise is irrelevant once sigma is zero
    np.testing.assert_allclose(layer(x).numpy(), y, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("noise", ["ig", "fg"])
def test_gradients_reach_mu_and_sigma(noise: str) -> None:
    layer = NoisyDense(3, noise=noise, seed=4)
    x = _x()
    layer(x)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(layer(x)))
    trainable = layer.trainable_variables
    assert {v.name for v in trainable} == {
        "kernel_mu", "kernel_sigma", "bias_mu", "bias_sigma"
    }
    grads = tape.gradient(loss, trainable)
    for var, grad in zip(trainable, grads):
        assert grad is not None, var.name
        assert np.abs(grad.numpy()).sum() > 0, var.name


@pytest.mark.parametrize("ext", ["keras", "h5"])
def test_save_load_round_trip(tmp_path, ext: str) -> None:
    model = _model()
    # Neither format saves the seed-generator state, so a reloaded fixed-seed
    # layer restarts its noise stream: its first resample reproduces the
    # original's first resample. Resample twice so the saved noise is not that.
    resample_noise(model)
    first_noise = [v.numpy().copy() for v in noise_variables_of(model)]
    resample_noise(model)
    x = _x(batch=6)
    y = model(x).numpy()
    path = str(tmp_path / f"model.{ext}")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert [type(nd).__name__ for nd in noisy_layers(loaded)] == ["NoisyDense"] * 2
    np.testing.assert_array_equal(loaded(x).numpy(), y)
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # The loaded layers are live: resampling changes outputs, and (fixed seed,
    # unsaved generator state) replays the original's noise stream.
    resample_noise(loaded)
    assert not np.allclose(loaded(x).numpy(), y)
    for a, b in zip(first_noise, noise_variables_of(loaded)):
        np.testing.assert_array_equal(a, b.numpy())


def test_get_config_round_trip() -> None:
    layer = NoisyDense(
        np.int64(6), noise="ig", activation="tanh", use_bias=False,
        sigma_init=0.05, seed=9, name="custom", dtype="float64",
    )
    config = layer.get_config()
    assert config["units"] == 6 and type(config["units"]) is int
    clone = NoisyDense.from_config(config)
    assert clone.get_config() == config
    for key, value in {
        "noise": "ig", "activation": "tanh", "use_bias": False,
        "sigma_init": 0.05, "seed": 9, "name": "custom",
    }.items():
        assert config[key] == value, key
    assert clone.dtype == "float64"
    # Same seed and config: the clone is the same layer, weights and all.
    x = _x().astype("float64")
    np.testing.assert_array_equal(layer(x).numpy(), clone(x).numpy())


def test_synced_weights_excludes_exactly_noise() -> None:
    model = _model()
    layers = noisy_layers(model)
    assert [layer.name for layer in layers] == ["nd_ig", "nd_fg"]
    noise = noise_variables_of(model)
    assert len(noise) == 4
    assert noise_variable_ids(model) == {id(v) for v in noise}
    synced = synced_weights(model)
    assert [id(w) for w in synced] == [
        id(w) for w in model.weights if all(w is not v for v in noise)
    ]
    assert len(synced) + len(noise) == len(model.weights)
    # Everything trainable is synced, including the plain Dense weights.
    assert {id(w) for w in model.trainable_weights} <= {id(w) for w in synced}


def test_noisy_layers_finds_nested() -> None:
    inner = keras.Sequential([keras.Input((FAN_IN,)), NoisyDense(4, name="inner_nd")])
    outer = keras.Sequential(
        [
            keras.Input((FAN_IN,)),
            inner,
            keras.layers.Dense(3),
            NoisyDense(2, name="outer_nd"),
        ]
    )
    assert {layer.name for layer in noisy_layers(outer)} == {"inner_nd", "outer_nd"}
    assert len(synced_weights(outer)) == len(outer.weights) - 4
    before = inner.layers[0].eps_in.numpy().copy()
    resample_noise(outer)
    assert not np.array_equal(before, inner.layers[0].eps_in.numpy())


@pytest.mark.parametrize(
    "kwargs, exc, fragment",
    [
        ({"units": 0}, ValueError, "units=0"),
        ({"units": -3}, ValueError, "units=-3"),
        ({"units": 2.5}, TypeError, "units=2.5"),
        ({"units": "8"}, TypeError, "units='8'"),
        ({"units": 4, "noise": "gaussian"}, ValueError, "noise='gaussian'"),
        ({"units": 4, "sigma_init": -0.1}, ValueError, "sigma_init=-0.1"),
        ({"units": 4, "sigma_init": float("nan")}, ValueError, "sigma_init=nan"),
        ({"units": 4, "seed": 1.5}, TypeError, "seed=1.5"),
    ],
)
def test_bad_args_raise_naming_value(kwargs: dict, exc: type, fragment: str) -> None:
    with pytest.raises(exc, match=fragment.replace("(", r"\(")) as info:
        NoisyDense(**kwargs)
    if "noise" in kwargs:
        assert "'ig'" in str(info.value) and "'fg'" in str(info.value)
