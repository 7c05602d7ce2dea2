"""Per-layer NumPy kernels used by the plans of :mod:`drlbox.ops.fast_forward`."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import keras
import numpy as np
from numpy.lib.stride_tricks import as_strided

# An activation kernel: (x, inplace) -> y.  ``inplace`` may only be True when the
# caller owns ``x`` (a fresh matmul result), never for a slot another step reads.
ActFn = Callable[[np.ndarray, bool], np.ndarray]
# A merge kernel (Add, Concatenate, ...): list of inputs -> y.
Merge = Callable[[list[np.ndarray]], np.ndarray]
# New weight values by id() of the Keras variable they belong to (see `read_f32`).
Values = Mapping[int, np.ndarray] | None

_F32 = np.float32
_SELU_ALPHA = _F32(1.6732632423543772848170429916717)
_SELU_SCALE = _F32(1.0507009873554804934193349852946)


def read_f32(var: Any, values: Values = None) -> np.ndarray:
    """A Keras variable's value as a float32 array: from `values` (arrays by id() of their
    variable) when it holds one, else one host read of the variable."""
    value = values.get(id(var)) if values else None
    return np.asarray(var.numpy() if value is None else value, dtype=_F32)


def _out(x: np.ndarray, inplace: bool) -> np.ndarray | None:
    return x if inplace else None


def _linear(x: np.ndarray, inplace: bool) -> np.ndarray:
    return x


def _relu(x: np.ndarray, inplace: bool) -> np.ndarray:
    return np.maximum(x, _F32(0), out=_out(x, inplace))


def _relu6(x: np.ndarray, inplace: bool) -> np.ndarray:
    return np.clip(x, _F32(0), _F32(6), out=_out(x, inplace))


def _tanh(x: np.ndarray, inplace: bool) -> np.ndarray:
    return np.tanh(x, out=_out(x, inplace))


def _sigmoid(x: np.ndarray, inplace: bool) -> np.ndarray:
    # exp(-|x|) never overflows, so tiny outputs keep their relative precision
    # (1 / (1 + exp(-x)) would flush them to 0 where TF does not).
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, _F32(1), e) / (_F32(1) + e)


def _silu(x: np.ndarray, inplace: bool) -> np.ndarray:
    return x * _sigmoid(x, False)


def _softmax(x: np.ndarray, inplace: bool) -> np.ndarray:
    y = np.subtract(x, x.max(axis=-1, keepdims=True), out=_out(x, inplace))
    np.exp(y, out=y)
    y /= y.sum(axis=-1, keepdims=True)
    return y


def elu(x: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """Keras/TF ELU: x for x > 0, alpha * expm1(x) otherwise."""
    neg = np.expm1(np.minimum(x, _F32(0)))  # clamp first: expm1 of big x overflows
    if alpha != 1.0:
        neg *= _F32(alpha)
    return np.where(x > 0, x, neg)


def _elu(x: np.ndarray, inplace: bool) -> np.ndarray:
    return elu(x)


def _selu(x: np.ndarray, inplace: bool) -> np.ndarray:
    y = elu(x, float(_SELU_ALPHA))
    y *= _SELU_SCALE
    return y


def _softplus(x: np.ndarray, inplace: bool) -> np.ndarray:
    return np.logaddexp(x, _F32(0), out=_out(x, inplace))


def _softsign(x: np.ndarray, inplace: bool) -> np.ndarray:
    return x / (_F32(1) + np.abs(x))


def leaky_relu(x: np.ndarray, negative_slope: float) -> np.ndarray:
    """TF LeakyRelu kernel semantics: x if x > 0 else slope * x."""
    return np.where(x > 0, x, x * _F32(negative_slope))


def _leaky_relu(x: np.ndarray, inplace: bool) -> np.ndarray:
    return leaky_relu(x, 0.2)  # keras.activations.leaky_relu default slope


def _hard_sigmoid(x: np.ndarray, inplace: bool) -> np.ndarray:
    return np.clip(x + _F32(3), _F32(0), _F32(6)) / _F32(6)


# Keyed by the function object itself: Dense/Conv/Activation store the result of
# keras.activations.get(), so identity is exact and a user-supplied callable
# (lambda, tf.nn.relu, ...) simply misses the table and makes compilation fail.
_A = keras.activations
ACTIVATIONS: dict[Any, ActFn] = {
    _A.linear: _linear,
    _A.relu: _relu,
    _A.relu6: _relu6,
    _A.tanh: _tanh,
    _A.sigmoid: _sigmoid,
    _A.silu: _silu,
    _A.softmax: _softmax,
    _A.elu: _elu,
    _A.selu: _selu,
    _A.softplus: _softplus,
    _A.softsign: _softsign,
    _A.leaky_relu: _leaky_relu,
    _A.hard_sigmoid: _hard_sigmoid,
}


def activation_kernel(fn: Any) -> ActFn | None:
    """NumPy kernel for a Keras activation function, or None if unsupported."""
    if fn is None:
        return _linear
    try:
        return ACTIVATIONS.get(fn)
    except TypeError:  # unhashable callable
        return None


class DenseOp:
    """y = act(x @ W + b) with W, b cached from Keras variables."""

    def __init__(self, kernel: Any, bias: Any | None, act: ActFn) -> None:
        self._kernel_var, self._bias_var, self._act = kernel, bias, act
        self.w: np.ndarray = np.empty((0, 0), _F32)
        self.b: np.ndarray | None = None

    def refresh(self, values: Values = None) -> None:
        """Re-read the weights (from `values`, else one host read per variable)."""
        self.w = read_f32(self._kernel_var, values)
        self.b = None if self._bias_var is None else read_f32(self._bias_var, values)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = x @ self.w
        if self.b is not None:
            y += self.b
        return self._act(y, True)


class EffectiveDenseOp(DenseOp):
    """Dense kernel for layers exposing ``effective_kernel_and_bias()`` (e.g. NoisyDense)."""

    def __init__(self, layer: Any, act: ActFn) -> None:
        super().__init__(None, None, act)
        self._layer = layer

    def refresh(self, values: Values = None) -> None:
        """Ask the layer for its current effective (kernel, bias); noise makes them differ from
        any pulled values, so `values` is not used."""
        kernel, bias = self._layer.effective_kernel_and_bias()
        self.w = np.asarray(kernel, dtype=_F32)
        self.b = None if bias is None else np.asarray(bias, dtype=_F32)


class Conv2DOp:
    """channels_last Conv2D (groups=1, dilation=1) as im2col + one matmul."""

    def __init__(self, kernel: Any, bias: Any | None, strides: Sequence[int],
                 same: bool, act: ActFn) -> None:
        self._kernel_var, self._bias_var, self._act = kernel, bias, act
        self.kh, self.kw, _, self.filters = (int(d) for d in kernel.shape)
        self.sh, self.sw = (int(s) for s in strides)
        self.same = same
        self.w: np.ndarray = np.empty((0, 0), _F32)
        self.b: np.ndarray | None = None

    def refresh(self, values: Values = None) -> None:
        """Re-read the weights; the kernel is kept as a (kh*kw*cin, filters) view."""
        k = read_f32(self._kernel_var, values)
        self.w = k.reshape(-1, k.shape[-1])
        self.b = None if self._bias_var is None else read_f32(self._bias_var, values)

    def _pad(self, x: np.ndarray) -> np.ndarray:
        # TF 'SAME': output = ceil(in / stride), padding split with the odd
        # pixel going after (bottom/right).
        n, h, w, c = x.shape
        ph = max((-(-h // self.sh) - 1) * self.sh + self.kh - h, 0)
        pw = max((-(-w // self.sw) - 1) * self.sw + self.kw - w, 0)
        if ph == 0 and pw == 0:
            return x
        xp = np.zeros((n, h + ph, w + pw, c), dtype=_F32)
        xp[:, ph // 2: ph // 2 + h, pw // 2: pw // 2 + w] = x
        return xp

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.same:
            x = self._pad(x)
        n, h, w, c = x.shape
        oh = (h - self.kh) // self.sh + 1
        ow = (w - self.kw) // self.sw + 1
        s0, s1, s2, s3 = x.strides
        # Read-only window view (n, oh, ow, kh, kw, c); its (kh, kw, c) order
        # matches the Keras kernel layout, so the reshape below is the im2col.
        win = as_strided(x, (n, oh, ow, self.kh, self.kw, c),
                         (s0, s1 * self.sh, s2 * self.sw, s1, s2, s3),
                         writeable=False)
        y = win.reshape(n * oh * ow, self.kh * self.kw * c) @ self.w
        if self.b is not None:
            y += self.b
        return self._act(y, True).reshape(n, oh, ow, self.filters)


def make_relu_layer(negative_slope: float, max_value: float | None,
                    threshold: float) -> Callable[[np.ndarray], np.ndarray]:
    """Mirror of keras ReLU.static_call for the ReLU layer's three parameters."""
    ns, th = float(negative_slope), float(threshold)
    mv = None if max_value is None else float(max_value)
    if ns != 0.0 and mv is None and th == 0.0:
        return lambda x: leaky_relu(x, ns)

    def relu(x: np.ndarray) -> np.ndarray:
        neg = np.maximum(_F32(th) - x, _F32(0)) if ns != 0.0 else None
        if th != 0.0:
            y = np.where(x > _F32(th), x, _F32(0))
        else:
            y = np.maximum(x, _F32(0))
        if mv is not None:
            np.clip(y, _F32(0), _F32(mv), out=y)
        if neg is not None:
            y -= _F32(ns) * neg
        return y

    return relu


def make_activation(act: ActFn) -> Callable[[np.ndarray], np.ndarray]:
    """Standalone activation step (never in place: its input slot may be shared)."""
    return lambda x: act(x, False)


def make_rescaling(scale: Any, offset: Any) -> Callable[[np.ndarray], np.ndarray]:
    """x * scale + offset in float32, as keras Rescaling casts both to float32."""
    s, o = np.asarray(scale, dtype=_F32), np.asarray(offset, dtype=_F32)
    if not o.any():  # adding 0 changes no value, only costs a pass over the image
        return lambda x: x * s

    def rescale(x: np.ndarray) -> np.ndarray:
        y = x * s
        y += o
        return y

    return rescale


def flatten(x: np.ndarray) -> np.ndarray:
    """Keras Flatten for channels_last: keep the batch axis, merge the rest."""
    return x.reshape(x.shape[0], -1)


def make_reshape(target: Sequence[int]) -> Callable[[np.ndarray], np.ndarray]:
    """Keras Reshape: target shape excludes the batch axis and may contain -1."""
    tgt = tuple(int(d) for d in target)
    return lambda x: x.reshape((x.shape[0],) + tgt)


def make_concat(axis: int) -> Merge:
    """Keras Concatenate along ``axis``."""
    return lambda xs: np.concatenate(xs, axis=axis)


def _fold(op: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Merge:
    def merge(xs: list[np.ndarray]) -> np.ndarray:
        y = xs[0]
        for x in xs[1:]:
            y = op(y, x)  # not in place: inputs may broadcast up to a bigger shape
        return y
    return merge


def _average(xs: list[np.ndarray]) -> np.ndarray:
    y = _fold(np.add)(xs)
    y /= _F32(len(xs))
    return y


_L = keras.layers
# Merge layer class -> kernel; the caller guarantees >= 2 same-rank inputs.
MERGES: dict[type, Merge] = {
    _L.Add: _fold(np.add),
    _L.Subtract: lambda xs: np.subtract(xs[0], xs[1]),
    _L.Multiply: _fold(np.multiply),
    _L.Average: _average,
    _L.Maximum: _fold(np.maximum),
    _L.Minimum: _fold(np.minimum),
}

# Layers that are the identity at inference (training=False): no step at all.
IDENTITY_LAYERS: tuple[type, ...] = tuple(getattr(_L, n) for n in (
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
    "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization",
) if hasattr(_L, n))
