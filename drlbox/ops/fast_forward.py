"""Fast acting: Keras 3 Functional/Sequential models compiled to plain-NumPy forward plans.

Anything the plan cannot reproduce exactly makes compilation return None, and
``make_predict_fn`` then falls back to ``tf.function``.
"""
from __future__ import annotations

import logging
import time
import warnings
from typing import Any, Callable, Protocol, Sequence

import keras
import numpy as np

from drlbox.ops import keras_internals as ki
from drlbox.ops import numpy_layers as nl

logger = logging.getLogger(__name__)

_L = keras.layers
# (kernel, input slots, output slot, kernel takes a list of inputs)
Step = tuple[Callable[[Any], np.ndarray], tuple[int, ...], int, bool]


class PredictFn(Protocol):
    """What make_predict_fn returns: a batched forward pass plus refresh()."""

    backend: str  # "numpy" or "tf"
    def __call__(self, *inputs: Any) -> list[np.ndarray]: ...
    def refresh(self, values: nl.Values = None) -> None: ...


class _Unsupported(Exception):
    """Internal: the graph holds something the plan cannot reproduce exactly."""


class _Compiler:
    """Accumulates steps and weight-holding ops while walking (nested) graphs."""

    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.n_slots = 0
        self.ops: dict[int, Any] = {}  # id(layer) -> weight-holding op
        self.conv_params = 0

    def new_slot(self) -> int:
        self.n_slots += 1
        return self.n_slots - 1

    def graph(self, model: Any, in_slots: list[int]) -> list[int]:
        """Emit the steps of ``model``'s graph; return the slots of its outputs."""
        fn = ki.functional_graph(model)
        if fn is None:
            raise _Unsupported(f"{type(model).__name__} {model.name!r} is not a plain graph model")
        if len(fn.inputs) != len(in_slots):
            raise _Unsupported(f"{model.name!r}: input count mismatch")
        slot_of: dict[int, int] = {}
        for t, s in zip(fn.inputs, in_slots):
            if t.dtype != "float32":  # Keras would cast to it; we only do float32
                raise _Unsupported(f"input {t.name!r} has dtype {t.dtype}")
            slot_of[id(t)] = s
        for call in ki.layer_calls(fn):
            # Same rule as Keras running its own graph: skip unreachable calls.
            if any(id(t) not in slot_of for t in call.inputs):
                continue
            ins, multi = self._call_inputs(call, slot_of)
            outs = self.layer(call, ins, multi)
            if len(outs) != len(call.outputs):
                raise _Unsupported(f"{call.layer.name!r}: output count mismatch")
            for t, s in zip(call.outputs, outs):
                slot_of[id(t)] = s
        try:
            return [slot_of[id(t)] for t in fn.outputs]
        except KeyError:
            raise _Unsupported(f"{model.name!r}: output not computable from inputs") from None

    @staticmethod
    def _call_inputs(call: ki.LayerCall, slot_of: dict[int, int]) -> tuple[list[int], bool]:
        args = call.args
        for k, v in call.kwargs.items():
            # training=True baked into the graph would keep dropout/noise on.
            if not (k in ("training", "mask") and v is None or k == "training" and v is False):
                raise _Unsupported(f"{call.layer.name!r} called with {k}={v!r}")
        if len(args) == 1 and isinstance(args[0], keras.KerasTensor):
            return [slot_of[id(args[0])]], False
        if (len(args) == 1 and isinstance(args[0], (list, tuple)) and args[0]
                and all(isinstance(t, keras.KerasTensor) for t in args[0])):
            return [slot_of[id(t)] for t in args[0]], True
        raise _Unsupported(f"{call.layer.name!r}: unsupported call arguments")

    def _emit(self, fn: Callable[[Any], np.ndarray], ins: list[int], multi: bool) -> list[int]:
        out = self.new_slot()
        self.steps.append((fn, tuple(ins), out, multi))
        return [out]

    def _shared(self, layer: Any, make: Callable[[], Any]) -> Any:
        # One op per layer object: a shared layer reads its weights once per refresh.
        if id(layer) not in self.ops:
            self.ops[id(layer)] = make()
        return self.ops[id(layer)]

    def _act(self, layer: Any) -> nl.ActFn:
        act = nl.activation_kernel(getattr(layer, "activation", None))
        if act is None:
            raise _Unsupported(f"{layer.name!r}: activation {layer.activation!r}")
        return act

    def layer(self, call: ki.LayerCall, ins: list[int], multi: bool) -> list[int]:
        """Emit the step(s) for one layer call; return its output slots."""
        op = call.layer
        inner = ki.functional_graph(op)
        if inner is not None:  # nested model: inline its graph
            # Keras would re-pack dict inputs by name or squeeze/expand a rank;
            # the plan only wires positionally, so insist nothing of that applies.
            if (isinstance(ki.input_structure(op), dict)
                    or [len(t.shape) for t in call.inputs]
                    != [len(t.shape) for t in inner.inputs]):
                raise _Unsupported(f"nested model {op.name!r}: inputs need re-packing")
            return self.graph(op, ins)
        if not isinstance(op, _L.Layer):
            raise _Unsupported(f"op {type(op).__name__} is not a layer")
        if op.compute_dtype != "float32" or op.variable_dtype != "float32":
            raise _Unsupported(f"{op.name!r}: dtype policy {op.dtype_policy.name}")
        t = type(op)
        if callable(getattr(op, "numpy_call", None)) and not op.weights:
            # A weightless layer that states its own NumPy twin (e.g. the dueling combine).
            call = (lambda xs: op.numpy_call(*xs)) if multi else op.numpy_call
            return self._emit(call, ins, multi)
        if t in nl.MERGES:
            if not multi or len(ins) < 2 or (t is _L.Subtract and len(ins) != 2):
                raise _Unsupported(f"{op.name!r}: bad merge inputs")
            if len({len(x.shape) for x in call.inputs}) != 1:
                raise _Unsupported(f"{op.name!r}: rank-expanding merge")  # Keras expands dims
            return self._emit(nl.MERGES[t], ins, True)
        if t is _L.Concatenate:
            if not multi:
                raise _Unsupported(f"{op.name!r}: bad concat inputs")
            return self._emit(nl.make_concat(int(op.axis)), ins, True)
        if multi:
            raise _Unsupported(f"{op.name!r} ({t.__name__}) with a list input")
        if t in nl.IDENTITY_LAYERS:
            return ins  # alias: no step, no copy
        return self._emit(self._single_input_kernel(op, call.inputs[0]), ins, False)

    def _single_input_kernel(self, op: Any, x: Any) -> Callable[[np.ndarray], np.ndarray]:
        t = type(op)
        if callable(getattr(op, "effective_kernel_and_bias", None)):  # NoisyDense & co.
            return self._shared(op, lambda: nl.EffectiveDenseOp(op, self._act(op)))
        if t is _L.Dense:
            if op.quantization_mode is not None or getattr(op, "lora_enabled", False):
                raise _Unsupported(f"{op.name!r}: quantized/LoRA Dense")
            return self._shared(op, lambda: nl.DenseOp(op.kernel, op.bias, self._act(op)))
        if t is _L.Conv2D:
            return self._conv2d(op, x)
        if t is _L.Activation:
            return nl.make_activation(self._act(op))
        if t is _L.ReLU:
            return nl.make_relu_layer(op.negative_slope, op.max_value, op.threshold)
        if t is _L.LeakyReLU:
            slope = float(op.negative_slope)
            return lambda a: nl.leaky_relu(a, slope)
        if t is _L.Flatten:
            if op.data_format == "channels_first" and len(x.shape) > 2:
                raise _Unsupported(f"{op.name!r}: channels_first Flatten")
            return nl.flatten
        if t is _L.Reshape:
            return nl.make_reshape(op.target_shape)
        if t is _L.Rescaling:
            scale = np.asarray(op.scale)
            if scale.ndim > 0 and keras.config.image_data_format() == "channels_first":
                raise _Unsupported(f"{op.name!r}: channels_first per-channel Rescaling")
            return nl.make_rescaling(op.scale, op.offset)
        raise _Unsupported(f"layer {op.name!r} of type {t.__name__}")

    def _conv2d(self, op: Any, x: Any) -> nl.Conv2DOp:
        if (op.data_format != "channels_last" or op.groups != 1
                or tuple(op.dilation_rate) != (1, 1) or op.padding not in ("valid", "same")
                or getattr(op, "lora_enabled", False) or len(x.shape) != 4
                or getattr(op, "quantization_mode", None) is not None):
            raise _Unsupported(f"{op.name!r}: Conv2D configuration")
        if id(op) not in self.ops:
            self.conv_params += op.count_params()
        bias = op.bias if op.use_bias else None
        return self._shared(op, lambda: nl.Conv2DOp(op.kernel, bias, op.strides,
                                                     op.padding == "same", self._act(op)))


class NumpyForward:
    """A model's inference forward pass as a fixed sequence of NumPy kernels."""

    backend = "numpy"

    def __init__(self, model: Any, compiler: _Compiler, in_ranks: list[int],
                 out_slots: list[int]) -> None:
        self.model = model
        self.conv_params = compiler.conv_params
        self._steps = list(compiler.steps)
        self._n_slots = compiler.n_slots
        self._ops = list(compiler.ops.values())
        self._in_ranks = in_ranks
        self._out_slots = out_slots
        self.refresh()

    def refresh(self, values: nl.Values = None) -> None:
        """Re-read all weights (call after set_weights / noise resampling); `values` maps id()
        of a variable to its new array, saving the read of that variable."""
        for op in self._ops:
            op.refresh(values)

    def __call__(self, *inputs: Any) -> list[np.ndarray]:
        """Forward a batch; returns one float32 array per entry of ``model.outputs``."""
        n_in = len(self._in_ranks)
        if len(inputs) != n_in:
            if len(inputs) == 1 and isinstance(inputs[0], (list, tuple)) and len(inputs[0]) == n_in:
                inputs = tuple(inputs[0])
            else:
                raise TypeError(f"expected {n_in} input(s), got {len(inputs)}")
        vals: list[Any] = [None] * self._n_slots
        for i, x in enumerate(inputs):
            a = np.asarray(x, dtype=np.float32)
            if a.ndim != self._in_ranks[i]:
                raise ValueError(f"input {i}: expected rank {self._in_ranks[i]} "
                                 f"(batch axis included), got shape {a.shape}")
            vals[i] = a
        for fn, ins, out, multi in self._steps:
            vals[out] = fn([vals[i] for i in ins]) if multi else fn(vals[ins[0]])
        # Never hand back the caller's own input array as an output.
        return [vals[s].copy() if s < n_in else vals[s] for s in self._out_slots]


def compile_numpy_forward(model: Any) -> NumpyForward | None:
    """Compile ``model`` into a NumpyForward, or None if any part is unsupported."""
    try:
        fn = ki.functional_graph(model)
    except ki.PrivateApiChanged as e:
        logger.warning("NumPy plan not possible for %r: %s", model.name, e)
        return None
    if fn is None:
        logger.info("NumPy plan: %s is not a built Functional/Sequential model",
                    type(model).__name__)
        return None
    compiler = _Compiler()
    try:
        in_slots = [compiler.new_slot() for _ in fn.inputs]
        out_slots = compiler.graph(model, in_slots)
        return NumpyForward(model, compiler, [len(t.shape) for t in fn.inputs], out_slots)
    except _Unsupported as e:
        logger.info("NumPy plan not possible for %r: %s", model.name, e)
    except Exception as e:  # private Keras API drift (ki.PrivateApiChanged) etc.: fall back
        logger.warning("NumPy plan compilation failed for %r: %r", model.name, e)
    return None


def _input_structure(model: Any) -> Any:
    """The structure ``model``'s inputs were declared in, or None: then one input goes as a
    bare tensor and several as a list, which is right for all but dict-input models."""
    try:
        return ki.input_structure(model)
    except ki.PrivateApiChanged as e:
        logger.warning("%s", e)
        return None


def _packed(struct: Any, xs: Sequence[Any]) -> Any:
    """Inputs in the structure the model was built with (a bare tensor for one input)."""
    if struct is not None:
        return keras.tree.pack_sequence_as(struct, list(xs))
    return xs[0] if len(xs) == 1 else list(xs)


class TFForward:
    """``tf.function`` inference wrapper with the PredictFn interface."""

    backend = "tf"

    def __init__(self, model: Any) -> None:
        import tensorflow as tf

        self.model = model
        struct = _input_structure(model)
        try:
            self._dtypes: list[Any] | None = [np.dtype(t.dtype) for t in model.inputs]
        except Exception:  # unbuilt Sequential / subclassed model
            self._dtypes = None

        @tf.function(reduce_retracing=True)
        def forward(*xs: Any) -> list[Any]:
            return keras.tree.flatten(model(_packed(struct, xs), training=False))

        self._forward = forward

    def refresh(self, values: nl.Values = None) -> None:
        """No-op: the traced function reads the live variables."""

    def __call__(self, *inputs: Any) -> list[np.ndarray]:
        """Forward a batch; returns one array per flattened model output."""
        if self._dtypes is not None:
            xs = [np.asarray(x, dtype=d) for x, d in zip(inputs, self._dtypes)]
        else:  # fixed float32 keeps float64 callers from forcing a retrace
            xs = [np.asarray(x, dtype=np.float32) for x in inputs]
        return [t.numpy() for t in self._forward(*xs)]


def _dummy_batch(plan: NumpyForward) -> list[np.ndarray] | None:
    """One random input per model input (batch 1), or None when a shape is not fixed."""
    shapes = [tuple(t.shape[1:]) for t in ki.functional_graph(plan.model).inputs]
    if any(d is None for s in shapes for d in s):
        return None
    rng = np.random.default_rng(0)
    return [rng.random((1,) + s, dtype=np.float32) for s in shapes]


def _agrees(plan: NumpyForward, reference: Callable[..., Any], xs: list[np.ndarray]) -> bool:
    """Whether the plan gives the reference's outputs on `xs` (warns naming the model if not)."""
    try:
        ref = reference(*xs)
        got = plan(*xs)
    except Exception as e:  # e.g. a shape the plan mishandles: TF is the safe side
        logger.warning("NumPy plan of %r failed on a dummy batch: %r", plan.model.name, e)
        return False
    for g, r in zip(got, ref):
        r = np.asarray(r)
        scale = max(1.0, float(np.abs(r).max(initial=0.0)))
        if g.shape != r.shape or not np.allclose(g, r, rtol=1e-4, atol=1e-4 * scale):
            warnings.warn(f"NumPy plan of {plan.model.name!r} disagrees with the Keras model; "
                          f"acting through tf.function instead (slower, exact)",
                          RuntimeWarning, stacklevel=4)
            return False
    return len(got) == len(ref)


def _keras_reference(model: Any) -> Callable[..., list]:
    """The model itself, called eagerly with its inputs in the structure it was built with:
    what the plan must reproduce."""
    struct = _input_structure(model)

    def call(*xs: np.ndarray) -> list:
        out = model(_packed(struct, xs), training=False)
        return [np.asarray(o) for o in keras.tree.flatten(out)]

    return call


def _checked(plan: NumpyForward, model: Any) -> PredictFn:
    """The plan if it reproduces the model on a dummy batch, else tf.function. Checked once
    for every model: the plan reads Keras internals that a Keras release may change."""
    xs = _dummy_batch(plan)
    if xs is None or _agrees(plan, _keras_reference(model), xs):
        return plan
    return TFForward(model)


def _pick_faster(plan: NumpyForward, tf_fn: TFForward) -> PredictFn:
    xs = _dummy_batch(plan)
    if xs is None:
        return tf_fn  # cannot build a dummy batch: keep the general path
    if not _agrees(plan, tf_fn, xs):      # its first call traces
        return tf_fn

    def best_of_5(f: Callable[..., Any]) -> float:
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            f(*xs)
            times.append(time.perf_counter() - t0)
        return min(times)

    t_np, t_tf = best_of_5(plan), best_of_5(tf_fn)
    logger.info("%r at batch 1: numpy %.0f us, tf.function %.0f us",
                plan.model.name, t_np * 1e6, t_tf * 1e6)
    return plan if t_np < t_tf else tf_fn


def make_predict_fn(model: Any, prefer: str = "auto") -> PredictFn:
    """Fastest exact inference callable for ``model``: NumPy plan or tf.function.

    ``prefer='auto'``: NumPy for conv-free models once it reproduces the model on a dummy
    batch, else benchmark both once at batch 1 (after the same check). ``'numpy'`` raises
    ValueError if the model cannot be compiled; ``'tf'`` always uses tf.function.
    """
    if prefer not in ("auto", "numpy", "tf"):
        raise ValueError(f"prefer must be 'auto', 'numpy' or 'tf', got {prefer!r}")
    if prefer == "tf":
        return TFForward(model)
    plan = compile_numpy_forward(model)
    if plan is None:
        if prefer == "numpy":
            raise ValueError(f"model {model.name!r} cannot be compiled to a NumPy plan")
        return TFForward(model)
    if prefer == "numpy":
        return plan
    if plan.conv_params == 0:
        return _checked(plan, model)
    return _pick_faster(plan, TFForward(model))
