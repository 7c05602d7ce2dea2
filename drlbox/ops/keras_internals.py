"""Every private Keras and TensorFlow API drlbox reads, behind plain functions.

The fast acting path (:mod:`drlbox.ops.fast_forward`) walks a model's layer graph, the hot
training calls (:mod:`drlbox.ops.compiled`) enter a traced function without argument matching,
and :func:`drlbox.layers.noisy_layers` finds layers nested in plain layers. None of that has a
public API, so a Keras or TensorFlow release may move it. Each function here names the private
API it wraps and raises :class:`PrivateApiChanged` when that API is gone; callers fall back to a
slower public path, and ``tests/test_keras_internals.py`` fails on the new release first.
No other drlbox module may touch ``keras.src``, ``tensorflow.python`` or the attributes read here
(a test checks).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import keras

try:  # the class every keras.Model(inputs, outputs) becomes; not exported publicly
    from keras.src.models.functional import Functional as _Functional
except ImportError:  # pragma: no cover - a future Keras layout change
    _Functional = None  # type: ignore[assignment,misc]

__all__ = [
    "LayerCall",
    "PrivateApiChanged",
    "flat_call",
    "functional_graph",
    "input_structure",
    "layer_call",
    "layer_calls",
    "nodes_by_depth",
    "sublayers",
]


def _library_version(library: str) -> str:
    if library == "TensorFlow":
        import tensorflow as tf

        return f"TensorFlow {tf.__version__}"
    return f"Keras {keras.version()}"


class PrivateApiChanged(RuntimeError):
    """A private Keras/TensorFlow API drlbox relies on is gone or changed in this release."""

    def __init__(self, api: str, problem: str, library: str = "Keras") -> None:
        self.api = api
        super().__init__(
            f"{_library_version(library)}: {api} {problem}; drlbox.ops.keras_internals "
            f"needs updating for this release (drlbox falls back to slower public paths)")


def _attribute(obj: Any, name: str, api: str, library: str = "Keras") -> Any:
    try:
        return getattr(obj, name)
    except AttributeError:
        raise PrivateApiChanged(api, f"is missing on {type(obj).__name__}", library) from None


def functional_graph(model: Any) -> Any | None:
    """The Functional graph that computes ``model``, or None when there is none to read.

    None for a subclassed model, an unbuilt Sequential, or a subclass that overrides ``call``
    (then the graph does not describe what the model computes).
    Wraps ``keras.src.models.functional.Functional`` (the class of ``keras.Model(inputs,
    outputs)``) and ``keras.Sequential._functional`` (the graph a built Sequential runs).
    """
    if isinstance(model, keras.Sequential):
        if type(model).call is not keras.Sequential.call:
            return None
        return _attribute(model, "_functional", "keras.Sequential._functional")
    if _Functional is None:
        raise PrivateApiChanged("keras.src.models.functional.Functional", "cannot be imported")
    if isinstance(model, _Functional):
        return model if type(model).call is _Functional.call else None
    return None


def nodes_by_depth(graph: Any) -> dict[int, list[Any]]:
    """A Functional graph's nodes grouped by depth (the highest depth holds the input nodes).

    Wraps ``Functional._nodes_by_depth`` (``keras.src.ops.function.Function``).
    """
    by_depth = _attribute(graph, "_nodes_by_depth", "Functional._nodes_by_depth")
    if not isinstance(by_depth, dict):
        raise PrivateApiChanged("Functional._nodes_by_depth",
                                f"is a {type(by_depth).__name__}, not a dict of node lists")
    return by_depth


class LayerCall(NamedTuple):
    """One call of a layer (or nested model) inside a graph."""

    layer: Any                   # the Operation called: a keras Layer or a nested model
    inputs: tuple[Any, ...]      # the KerasTensors among its call arguments
    outputs: tuple[Any, ...]     # the KerasTensors it produced, flattened
    args: tuple[Any, ...]        # positional call arguments as written (tensors in place)
    kwargs: dict[str, Any]       # keyword call arguments (e.g. training=None)


def layer_call(node: Any) -> LayerCall | None:
    """A graph node as a LayerCall; None for an input node (nothing to compute).

    Wraps ``keras.src.ops.node.Node``: ``operation``, ``is_input``, ``input_tensors``,
    ``outputs``, ``arguments.args`` and ``arguments.kwargs``.
    """
    operation = _attribute(node, "operation", "keras Node.operation")
    if operation is None or _attribute(node, "is_input", "keras Node.is_input"):
        return None
    arguments = _attribute(node, "arguments", "keras Node.arguments")
    return LayerCall(
        layer=operation,
        inputs=tuple(_attribute(node, "input_tensors", "keras Node.input_tensors")),
        outputs=tuple(_attribute(node, "outputs", "keras Node.outputs")),
        args=tuple(_attribute(arguments, "args", "keras Node.arguments.args")),
        kwargs=dict(_attribute(arguments, "kwargs", "keras Node.arguments.kwargs")),
    )


def layer_calls(graph: Any) -> list[LayerCall]:
    """Every layer call of a Functional graph, in an order where inputs come first.

    Wraps ``Functional._nodes_by_depth`` and the ``Node`` attributes listed in ``layer_call``.
    """
    by_depth = nodes_by_depth(graph)
    calls = []
    for depth in sorted(by_depth, reverse=True):  # deepest = closest to the inputs
        calls.extend(c for c in map(layer_call, by_depth[depth]) if c is not None)
    return calls


def input_structure(model: Any) -> Any | None:
    """The structure (tensor, list or dict) ``model``'s inputs were declared in; None when
    ``model`` has no Functional graph.

    Wraps ``Functional._inputs_struct``.
    """
    graph = functional_graph(model)
    if graph is None:
        return None
    return _attribute(graph, "_inputs_struct", "Functional._inputs_struct")


def sublayers(layer: Any) -> list[Any]:
    """The layers tracked directly inside ``layer`` (one level; works for plain layers too,
    where ``Model.layers`` does not exist). Empty for anything that is not a Keras layer.

    Wraps ``keras.layers.Layer._layers``.
    """
    if not isinstance(layer, keras.layers.Layer):
        return []
    return list(_attribute(layer, "_layers", "keras.layers.Layer._layers"))


def flat_call(concrete: Any) -> Callable[[Sequence[Any]], Any]:
    """A call of a TensorFlow concrete function taking its tensors in signature order, with no
    argument matching (the public call spends about 0.3 ms matching).

    Wraps ``ConcreteFunction._call_flat(tensor_inputs, captured_inputs)``
    (``tensorflow.python.eager.polymorphic_function.concrete_function``).
    """
    entry = _attribute(concrete, "_call_flat", "ConcreteFunction._call_flat", "TensorFlow")
    if not callable(entry):
        raise PrivateApiChanged("ConcreteFunction._call_flat", "is not callable", "TensorFlow")

    def call(tensors: Sequence[Any]) -> Any:
        return entry(tensors, concrete.captured_inputs)

    return call
