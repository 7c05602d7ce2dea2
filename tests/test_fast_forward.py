"""NumPy forward plans (drlbox.ops.fast_forward) must match model(x, training=False)."""
from __future__ import annotations

import os
import sys
from typing import Any

import keras
import numpy as np
import pytest

from drlbox.ops.fast_forward import NumpyForward, compile_numpy_forward, make_predict_fn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "examples"))
from nature_cnn import nature_cnn as nature_cnn_trunk  # noqa: E402

L = keras.layers
RNG = np.random.default_rng(1234)


def _reference(model: keras.Model, xs: list[np.ndarray]) -> list[np.ndarray]:
    out = model(xs[0] if len(xs) == 1 else list(xs), training=False)
    return [np.asarray(o) for o in keras.tree.flatten(out)]


def _assert_matches(got: list[np.ndarray], model: keras.Model, *xs: np.ndarray) -> None:
    ref = _reference(model, list(xs))
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert g.dtype == np.float32
        assert g.shape == r.shape
        # 1e-5 relative; the tiny absolute term only covers entries that are
        # ~0 after cancellation, scaled by the output's magnitude.
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6 * max(1.0, np.abs(r).max()))


def _compile(model: keras.Model) -> NumpyForward:
    plan = compile_numpy_forward(model)
    assert plan is not None
    return plan


def _randn(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def mlp_two_heads() -> keras.Model:
    inp = keras.Input((4,))
    h = L.Dense(200, activation="relu")(inp)
    h = L.Dense(100, activation="relu")(h)
    return keras.Model(inp, [L.Dense(2, name="logits")(h), L.Dense(1, name="value")(h)])


def nature_cnn(n_actions: int = 6) -> keras.Model:
    inp = keras.Input((84, 84, 4))
    h = nature_cnn_trunk(inp)
    return keras.Model(inp, [L.Dense(n_actions)(h), L.Dense(1)(h)])


def test_mlp_two_outputs() -> None:
    model = mlp_two_heads()
    plan = _compile(model)
    assert plan.conv_params == 0
    for batch in (1, 7):
        x = _randn(batch, 4)
        _assert_matches(plan(x), model, x)
    x64 = _randn(3, 4).astype(np.float64)  # converted like Keras does
    _assert_matches(plan(x64), model, x64.astype(np.float32))
    _assert_matches(plan(x64.tolist()), model, x64.astype(np.float32))  # array-likes too
    with pytest.raises(TypeError):
        plan(x64, x64)
    with pytest.raises(ValueError):
        plan(x64[0])


def test_two_stream_concatenate() -> None:
    inp = keras.Input((6,))
    actor = L.Dense(64, activation="tanh")(inp)
    actor = L.Dense(32, activation="elu")(actor)
    critic = L.Dense(64, activation="sigmoid")(inp)
    critic = L.Dense(32, activation="relu")(critic)
    both = L.Concatenate()([actor, critic])
    policy = L.Dense(5, activation="softmax")(both)
    value = L.Dense(1)(critic)
    model = keras.Model(inp, [policy, value])
    x = _randn(9, 6, scale=3.0)
    _assert_matches(_compile(model)(x), model, x)


def test_sequential_mlp() -> None:
    model = keras.Sequential([keras.Input((5,)), L.Dense(32, activation="tanh"),
                              L.Dropout(0.5), L.Dense(3)])
    x = _randn(4, 5)
    _assert_matches(_compile(model)(x), model, x)
    built_later = keras.Sequential([L.Dense(8, activation="relu"), L.Dense(2)])
    assert compile_numpy_forward(built_later) is None  # not built: no graph yet
    built_later.build((None, 3))
    x = _randn(2, 3)
    _assert_matches(_compile(built_later)(x), built_later, x)


def test_nature_cnn() -> None:
    model = nature_cnn()
    plan = _compile(model)
    assert plan.conv_params > 0
    for batch in (1, 3):
        x = RNG.integers(0, 256, (batch, 84, 84, 4)).astype(np.float32)
        _assert_matches(plan(x), model, x)


def test_conv_same_and_valid_padding() -> None:
    inp = keras.Input((15, 13, 3))
    a = L.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inp)  # 8x7
    # even kernel size: TF pads asymmetrically (extra row/column after)
    a = L.Conv2D(6, 4, strides=1, padding="same", activation="tanh")(a)
    a = L.Conv2D(5, 5, strides=3, padding="same", use_bias=False)(a)
    b = L.Conv2D(4, (3, 2), strides=(2, 3), padding="valid", activation="elu")(inp)
    b = L.Conv2D(4, 1, padding="same")(b)
    model = keras.Model(inp, [L.Flatten()(a), L.Flatten()(b)])
    plan = _compile(model)
    for batch in (1, 2):
        x = _randn(batch, 15, 13, 3)
        _assert_matches(plan(x), model, x)


@pytest.mark.parametrize("act", ["linear", "relu", "relu6", "tanh", "sigmoid", "silu", "softmax",
                                 "elu", "selu", "softplus", "softsign", "leaky_relu",
                                 "hard_sigmoid"])
def test_dense_activations(act: str) -> None:
    inp = keras.Input((3,))
    h = L.Dense(16, activation=act)(inp)
    model = keras.Model(inp, [h, L.Activation(act)(L.Dense(4)(inp))])
    x = _randn(6, 3, scale=6.0)  # wide range: saturation, large negatives
    _assert_matches(_compile(model)(x), model, x)


def test_assorted_layers_nested_and_multi_input() -> None:
    tower = keras.Sequential([keras.Input((4, 3)), L.Flatten(), L.Dense(8, activation="relu")],
                             name="tower")
    sub_in = keras.Input((8,))
    sub = keras.Model(sub_in, [L.Dense(8)(sub_in), L.ReLU(max_value=0.5)(sub_in)], name="sub")
    a_in, b_in = keras.Input((12,)), keras.Input((4, 3))
    a = L.Reshape((4, 3))(L.Rescaling([0.5, 2.0, -1.0], offset=0.25)(L.Reshape((4, 3))(a_in)))
    ta, tb = tower(a), tower(b_in)  # shared nested model
    shared = L.Dense(8)
    s1, s2 = shared(ta), shared(L.GaussianNoise(1.0)(tb))
    sa, sb = sub(L.Add()([s1, s2, ta]))
    merged = [L.Subtract()([sa, sb]), L.Multiply()([sa, sb, s1]), L.Average()([s1, s2]),
              L.Maximum()([sa, s2]), L.Minimum()([sb, s1])]
    h = L.Concatenate(axis=-1)(merged)
    h = L.ReLU(negative_slope=0.1, threshold=0.2, max_value=3.0)(h)
    h = L.LeakyReLU(negative_slope=0.3)(L.ReLU(negative_slope=0.05)(h))
    model = keras.Model([a_in, b_in], {"h": h, "b": L.Dropout(0.3)(b_in),
                                      "d3": L.Dense(5, activation="tanh")(b_in)})  # rank-3 Dense
    plan = _compile(model)
    xa, xb = _randn(5, 12, scale=2.0), _randn(5, 4, 3, scale=2.0)
    out = plan(xa, xb)
    _assert_matches(out, model, xa, xb)
    _assert_matches(plan([xa, xb]), model, xa, xb)  # one list of inputs is accepted too
    # A passthrough output is a copy, never the caller's own array.
    assert out[0] is not xb and np.array_equal(out[0], xb)


def test_refresh_after_set_weights() -> None:
    model, donor = mlp_two_heads(), mlp_two_heads()
    plan = _compile(model)
    x = _randn(4, 4)
    before = plan(x)
    model.set_weights(donor.get_weights())
    stale = plan(x)  # weights are cached until refresh()
    for b, s in zip(before, stale):
        np.testing.assert_array_equal(b, s)
    plan.refresh()
    after = plan(x)
    _assert_matches(after, model, x)
    assert not np.allclose(after[0], before[0])


class _FakeNoisy(L.Layer):
    """Minimal stand-in exposing the duck-typed effective_kernel_and_bias()."""

    def __init__(self, units: int, activation: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units, self.activation = units, keras.activations.get(activation)

    def build(self, input_shape: tuple) -> None:
        n = input_shape[-1]
        self.mu = self.add_weight(shape=(n, self.units), initializer="glorot_uniform")
        self.sigma = self.add_weight(shape=(n, self.units), initializer="ones")
        self.eps = self.add_weight(shape=(n, self.units), initializer="zeros", trainable=False)
        self.b = self.add_weight(shape=(self.units,), initializer="ones")

    def call(self, x: Any) -> Any:
        return self.activation(keras.ops.matmul(x, self.mu + self.sigma * self.eps) + self.b)

    def effective_kernel_and_bias(self) -> tuple[np.ndarray, np.ndarray]:
        return self.mu.numpy() + self.sigma.numpy() * self.eps.numpy(), self.b.numpy()


def test_effective_kernel_layers_are_dense() -> None:
    inp = keras.Input((5,))
    noisy = _FakeNoisy(7, activation="tanh")
    model = keras.Model(inp, _FakeNoisy(2)(noisy(inp)))
    plan = _compile(model)
    x = _randn(3, 5)
    _assert_matches(plan(x), model, x)
    noisy.eps.assign(_randn(5, 7))  # "resample"
    plan.refresh()
    _assert_matches(plan(x), model, x)


@pytest.mark.parametrize("noise", ["ig", "fg"])
def test_drlbox_noisy_dense(noise: str) -> None:
    noisy_mod = pytest.importorskip("drlbox.layers.noisy")
    if not hasattr(noisy_mod.NoisyDense, "effective_kernel_and_bias"):
        pytest.skip("NoisyDense.effective_kernel_and_bias() not available yet")
    inp = keras.Input((6,))
    layer = noisy_mod.NoisyDense(16, noise=noise, activation="relu", seed=3)
    model = keras.Model(inp, noisy_mod.NoisyDense(3, noise=noise, seed=4)(layer(inp)))
    plan = _compile(model)
    x = _randn(4, 6)
    _assert_matches(plan(x), model, x)
    layer.resample()
    plan.refresh()
    _assert_matches(plan(x), model, x)


def _lambda_model() -> keras.Model:
    inp = keras.Input((4,))
    h = L.Dense(16, activation="relu")(inp)
    h = L.Lambda(lambda t: t * 2.0 + 1.0)(h)
    return keras.Model(inp, [L.Dense(2)(h), L.Dense(1)(h)])


def test_lambda_is_unsupported_and_falls_back_to_tf() -> None:
    model = _lambda_model()
    assert compile_numpy_forward(model) is None
    fn = make_predict_fn(model)
    assert fn.backend == "tf"
    fn.refresh()  # no-op but present
    x = _randn(3, 4)
    _assert_matches(fn(x), model, x)
    with pytest.raises(ValueError):
        make_predict_fn(model, prefer="numpy")


def _unsupported_models() -> list[keras.Model]:
    models = []
    inp = keras.Input((4,))
    models.append(keras.Model(inp, L.Dropout(0.5)(inp, training=True)))  # dropout forced on
    models.append(keras.Model(inp, L.Dense(3, activation="gelu")(inp)))
    models.append(keras.Model(inp, L.Dense(3, activation=lambda t: t * 2)(inp)))
    models.append(keras.Model(inp, L.Dense(3, dtype="mixed_float16")(inp)))
    models.append(keras.Model(inp, keras.ops.exp(L.Dense(3)(inp))))  # raw keras.ops node
    inner_in = keras.Input((4, 1))
    inner = keras.Model(inner_in, L.Flatten()(inner_in))
    models.append(keras.Model(inp, inner(inp)))  # Keras silently expands the rank here

    class MyDense(L.Dense):
        def call(self, x: Any) -> Any:
            return super().call(x) * 2.0

    models.append(keras.Model(inp, MyDense(3)(inp)))

    class Sub(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.d = L.Dense(2)

        def call(self, x: Any) -> Any:
            return self.d(x)

    sub = Sub()
    sub(np.zeros((1, 4), np.float32))
    models.append(sub)
    return models


def test_other_unsupported_models_return_none() -> None:
    for model in _unsupported_models():
        assert compile_numpy_forward(model) is None, model.name


def test_make_predict_fn_policies() -> None:
    mlp = mlp_two_heads()
    x = _randn(2, 4)
    fn = make_predict_fn(mlp)
    assert fn.backend == "numpy"
    _assert_matches(fn(x), mlp, x)
    tf_fn = make_predict_fn(mlp, prefer="tf")
    assert tf_fn.backend == "tf"
    _assert_matches(tf_fn(x), mlp, x)
    mlp.set_weights(mlp_two_heads().get_weights())
    _assert_matches(tf_fn(x), mlp, x)  # tf.function reads live variables
    fn.refresh()
    _assert_matches(fn(x), mlp, x)
    with pytest.raises(ValueError):
        make_predict_fn(mlp, prefer="fastest")

    cnn = nature_cnn(4)
    fn = make_predict_fn(cnn)  # benchmarks both; either answer must be exact
    assert fn.backend in ("numpy", "tf")
    xi = RNG.integers(0, 256, (2, 84, 84, 4)).astype(np.float32)
    _assert_matches(fn(xi), cnn, xi)
    donor = nature_cnn(4)
    cnn.set_weights(donor.get_weights())
    fn.refresh()
    _assert_matches(fn(xi), cnn, xi)
    assert make_predict_fn(cnn, prefer="numpy").backend == "numpy"


def test_a_plan_that_disagrees_with_its_model_is_not_used() -> None:
    """The NumPy plan reads Keras internals; every plan is checked once against the model, and
    one that does not reproduce it (here: a plan of another model of the same shape, as a
    Keras change could produce) gives way to tf.function, with a warning naming the model."""
    from drlbox.ops.fast_forward import _checked

    model, other = mlp_two_heads(), mlp_two_heads()
    other.set_weights([w + 0.5 for w in model.get_weights()])
    assert _checked(compile_numpy_forward(model), model).backend == "numpy"
    with pytest.warns(RuntimeWarning, match=f"{other.name}.*disagrees with the Keras model"):
        fn = _checked(compile_numpy_forward(other), model)
    assert fn.backend == "tf"
    x = _randn(2, 4)
    _assert_matches(fn(x), model, x)
