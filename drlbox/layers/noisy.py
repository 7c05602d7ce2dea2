"""NoisyNet dense layers (Fortunato et al. 2017) as a serialisable Keras 3 layer."""
from __future__ import annotations

import math
import operator
import warnings
from typing import Any

import numpy as np

import keras
from keras import ops

from drlbox.ops import keras_internals as ki

__all__ = [
    "NoisyDense",
    "noisy_layers",
    "resample_noise",
    "noise_variable_ids",
    "synced_weights",
]

_NOISE_TYPES = ("ig", "fg")
# Paper defaults: sigma_0 = 0.017 for independent noise (an absolute value) and
# sigma_0 = 0.5 for factorised noise (divided by sqrt(fan_in) at build time).
_DEFAULT_SIGMA_INIT = {"ig": 0.017, "fg": 0.5}


def _factor(x: Any) -> Any:
    """The paper's noise-shaping function f(x) = sign(x) * sqrt(|x|)."""
    return ops.sign(x) * ops.sqrt(ops.abs(x))


@keras.saving.register_keras_serializable(package="drlbox")
class NoisyDense(keras.layers.Layer):
    """Dense layer with learnable Gaussian weight noise (NoisyNet).

    Computes ``activation(x @ (mu + sigma * eps) + (b_mu + b_sigma * b_eps))``.
    The noise ``eps`` lives in non-trainable variables, so every call uses the
    same noise until ``resample()`` draws a fresh sample.

    Args:
        units: output dimensionality (anything ``operator.index`` accepts, > 0).
        noise: ``'ig'`` (independent Gaussian, one draw per weight) or ``'fg'``
            (factorised Gaussian, one draw per input and per output unit).
        activation: activation function or its name; ``None`` means linear.
        use_bias: whether the layer has a (noisy) bias.
        sigma_init: the paper's sigma_0. For ``'ig'`` every sigma starts at
            exactly this value; for ``'fg'`` at ``sigma_init / sqrt(fan_in)``.
            ``None`` picks the paper's defaults (0.017 for ig, 0.5 for fg).
        seed: seed for the layer's ``keras.random.SeedGenerator``, which drives
            both the mu initialisation and all noise draws.
        **kwargs: forwarded to ``keras.layers.Layer`` (name, dtype, ...).
    """

    def __init__(
        self,
        units: int,
        noise: str = "fg",
        activation: Any = None,
        use_bias: bool = True,
        sigma_init: float | None = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            units = operator.index(units)
        except TypeError:
            raise TypeError(
                f"NoisyDense `units` must be an integer, got units={units!r}"
            ) from None
        if units <= 0:
            raise ValueError(
                f"NoisyDense `units` must be positive, got units={units}"
            )
        if noise not in _NOISE_TYPES:
            raise ValueError(
                f"NoisyDense `noise` must be 'ig' (independent Gaussian) or "
                f"'fg' (factorised Gaussian), got noise={noise!r}"
            )
        if sigma_init is not None:
            sigma_init = float(sigma_init)
            if not math.isfinite(sigma_init) or sigma_init < 0.0:
                raise ValueError(
                    "NoisyDense `sigma_init` must be a finite number >= 0 or "
                    f"None, got sigma_init={sigma_init!r}"
                )
        if seed is not None:
            try:
                # SeedGenerator insists on a builtin int; accept numpy ints too.
                seed = operator.index(seed)
            except TypeError:
                raise TypeError(
                    f"NoisyDense `seed` must be an integer or None, got seed={seed!r}"
                ) from None
        super().__init__(**kwargs)
        self.units = units
        self.noise = noise
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.sigma_init = sigma_init
        self.seed = seed
        # Attribute assignment makes Keras track the generator's state variable
        # (as layer state, not as a weight), so draws work eagerly and in graphs.
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.input_spec = keras.layers.InputSpec(min_ndim=2)
        self.supports_masking = True
        self._noise_variables: list[keras.Variable] = []

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        """Create mu/sigma weights and the noise variables for ``input_shape``."""
        fan_in = input_shape[-1]
        if fan_in is None:
            raise ValueError(
                "NoisyDense needs a known last input dimension, got "
                f"input_shape={input_shape}"
            )
        fan_in = int(fan_in)
        sigma_0 = (
            _DEFAULT_SIGMA_INIT[self.noise]
            if self.sigma_init is None
            else self.sigma_init
        )
        if self.noise == "ig":
            mu_bound = math.sqrt(3.0 / fan_in)
            sigma_value = sigma_0
        else:
            mu_bound = 1.0 / math.sqrt(fan_in)
            sigma_value = sigma_0 / math.sqrt(fan_in)

        def mu_init(shape: tuple[int, ...], dtype: Any = None) -> Any:
            # Drawn from the layer's generator so a fixed `seed` reproduces the
            # whole layer, not just its noise.
            return keras.random.uniform(
                shape, -mu_bound, mu_bound, dtype=dtype, seed=self.seed_generator
            )

        sigma_init = keras.initializers.Constant(sigma_value)
        self.kernel_mu = self.add_weight(
            name="kernel_mu", shape=(fan_in, self.units), initializer=mu_init
        )
        self.kernel_sigma = self.add_weight(
            name="kernel_sigma", shape=(fan_in, self.units), initializer=sigma_init
        )
        if self.use_bias:
            self.bias_mu = self.add_weight(
                name="bias_mu", shape=(self.units,), initializer=mu_init
            )
            self.bias_sigma = self.add_weight(
                name="bias_sigma", shape=(self.units,), initializer=sigma_init
            )
        else:
            self.bias_mu = None
            self.bias_sigma = None

        # Noise is state, not a parameter: non-trainable so optimisers skip it,
        # and listed in `noise_variables` so weight sync can skip it too.
        def noise_weight(name: str, shape: tuple[int, ...]) -> keras.Variable:
            return self.add_weight(
                name=name, shape=shape, initializer="zeros", trainable=False
            )

        if self.noise == "ig":
            self.kernel_eps = noise_weight("kernel_eps", (fan_in, self.units))
            self.bias_eps = (
                noise_weight("bias_eps", (self.units,)) if self.use_bias else None
            )
            self._noise_variables = [self.kernel_eps] + (
                [self.bias_eps] if self.use_bias else []
            )
        else:
            # Raw N(0, 1) factors; f() is applied in call (cheap: fan_in + units).
            self.eps_in = noise_weight("eps_in", (fan_in,))
            self.eps_out = noise_weight("eps_out", (self.units,))
            self._noise_variables = [self.eps_in, self.eps_out]
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: fan_in})
        self.built = True
        self.resample()

    @property
    def noise_variables(self) -> list[keras.Variable]:
        """The non-trainable noise variables (empty before the layer is built)."""
        return list(self._noise_variables)

    def resample(
        self, seed_generator: keras.random.SeedGenerator | None = None
    ) -> None:
        """Draw fresh noise into the noise variables (eagerly or inside a graph)."""
        if not self.built:
            raise ValueError(
                f"NoisyDense {self.name!r} must be built before resample()"
            )
        gen = self.seed_generator if seed_generator is None else seed_generator
        for var in self._noise_variables:
            var.assign(keras.random.normal(var.shape, dtype=var.dtype, seed=gen))

    @property
    def kernel_epsilon(self) -> Any:
        """The current effective kernel noise, shape (fan_in, units)."""
        if self.noise == "ig":
            return self.kernel_eps.value
        return ops.outer(_factor(self.eps_in.value), _factor(self.eps_out.value))

    @property
    def bias_epsilon(self) -> Any | None:
        """The current effective bias noise, shape (units,), or None without bias."""
        if not self.use_bias:
            return None
        if self.noise == "ig":
            return self.bias_eps.value
        return _factor(self.eps_out.value)

    def effective_kernel_and_bias(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The kernel and bias with the current noise applied, as NumPy (for fast acting)."""
        kernel = ops.convert_to_numpy(self.kernel_mu + self.kernel_sigma * self.kernel_epsilon)
        if not self.use_bias:
            return kernel, None
        return kernel, ops.convert_to_numpy(self.bias_mu + self.bias_sigma * self.bias_epsilon)

    def call(self, inputs: Any) -> Any:
        """Apply the noisy affine map and the activation."""
        kernel = self.kernel_mu + self.kernel_sigma * self.kernel_epsilon
        outputs = ops.matmul(inputs, kernel)
        if self.use_bias:
            outputs = outputs + (self.bias_mu + self.bias_sigma * self.bias_epsilon)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple:
        """Same as the input shape with the last axis replaced by ``units``."""
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments, so ``from_config`` rebuilds an equivalent layer."""
        config = super().get_config()
        config.update(
            units=self.units,
            noise=self.noise,
            activation=keras.activations.serialize(self.activation),
            use_bias=self.use_bias,
            sigma_init=self.sigma_init,
            seed=self.seed,
        )
        return config


def noisy_layers(model: keras.layers.Layer) -> list[NoisyDense]:
    """Every NoisyDense in ``model``, including inside nested models and layers."""
    # Model.layers is neither recursive nor defined on plain Layers, so walk the
    # tracked sub-layer tree (the same walk Keras itself uses for weights).
    found: list[NoisyDense] = []
    seen: set[int] = set()
    stack = [model]
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, NoisyDense):
            found.append(layer)
        stack.extend(reversed(_children(layer)))
    return found


def _children(layer: Any) -> list[Any]:
    try:
        return ki.sublayers(layer)
    except ki.PrivateApiChanged as e:
        # Model.layers still finds a model's own layers, not those nested in plain layers.
        warnings.warn(f"{e}; NoisyDense layers nested inside plain layers are not found",
                      RuntimeWarning, stacklevel=3)
        return list(getattr(layer, "layers", []))


def resample_noise(model: keras.layers.Layer) -> None:
    """Resample the noise of every NoisyDense in ``model``."""
    for layer in noisy_layers(model):
        layer.resample()


def noise_variable_ids(model: keras.layers.Layer) -> set[int]:
    """``id()`` of every noise variable in ``model`` (for filtering weight sync)."""
    return {id(v) for layer in noisy_layers(model) for v in layer.noise_variables}


def synced_weights(model: keras.layers.Layer) -> list[keras.Variable]:
    """``model.weights`` without the noise variables, in ``model.weights`` order."""
    skip = noise_variable_ids(model)
    return [w for w in model.weights if id(w) not in skip]
