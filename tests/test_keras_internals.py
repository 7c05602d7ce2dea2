"""The private Keras/TensorFlow APIs drlbox reads still exist and still mean what drlbox assumes.

A failure here names the Keras (or TensorFlow) version and the private API that moved: update
drlbox/ops/keras_internals.py for that release. Until then drlbox acts through tf.function and
calls traced functions through their public (slower) entry.
"""
from __future__ import annotations

import pathlib
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from drlbox.layers import NoisyDense, noisy_layers
from drlbox.ops import keras_internals as ki
from drlbox.ops.fast_forward import make_predict_fn

DRLBOX = pathlib.Path(__file__).resolve().parents[1] / "drlbox"


def moved(api: str, what: str, library: str = "Keras") -> str:
    version = f"TensorFlow {tf.__version__}" if library == "TensorFlow" else f"Keras {keras.version()}"
    return (f"{version}: {api} {what}; update drlbox/ops/keras_internals.py for this release")


# --- small real models ------------------------------------------------------------------------

def sequential() -> keras.Model:
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                             keras.layers.Dense(2)], name="seq")


def two_branches() -> keras.Model:
    x = keras.Input((4,), name="obs")
    a = keras.layers.Dense(6, activation="tanh", name="left")(x)
    b = keras.layers.Dense(3, activation="relu", name="right")(x)
    b = keras.layers.Dropout(0.5, name="drop")(b, training=False)
    joined = keras.layers.Concatenate(name="join")([a, b])
    return keras.Model(x, keras.layers.Dense(2, name="head")(joined), name="two_branches")


def nested() -> tuple[keras.Model, keras.Model]:
    inner_in = keras.Input((4,))
    inner = keras.Model(inner_in, keras.layers.Dense(5, activation="relu")(inner_in), name="trunk")
    x = keras.Input((4,))
    outer = keras.Model(x, keras.layers.Dense(3)(inner(x)), name="outer")
    return outer, inner


class NoisyBlock(keras.layers.Layer):
    """A plain (non-model) layer holding a NoisyDense: only the tracked sub-layers show it."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.noisy = NoisyDense(3, noise="fg", seed=1)

    def call(self, x):
        return self.noisy(x)


def noisy() -> tuple[keras.Model, NoisyBlock]:
    x = keras.Input((4,))
    h = NoisyDense(6, noise="ig", activation="relu", seed=0, name="noisy_trunk")(x)
    block = NoisyBlock(name="block")
    return keras.Model(x, block(h), name="noisy"), block


def noisy_mlp() -> keras.Model:
    """What drlbox's NoisyNet agents act with: a graph of NoisyDense layers only."""
    x = keras.Input((4,))
    h = NoisyDense(6, noise="ig", activation="relu", seed=0)(x)
    return keras.Model(x, NoisyDense(2, noise="fg", seed=1)(h), name="noisy_mlp")


def layers_called(model: keras.Model) -> list[str]:
    return [c.layer.name for c in ki.layer_calls(ki.functional_graph(model))]


# --- functional_graph ---------------------------------------------------------------------------

def test_functional_graph_of_sequential_and_functional_models():
    seq = sequential()
    graph = ki.functional_graph(seq)
    assert graph is not None and len(graph.inputs) == 1 and len(graph.outputs) == 1, moved(
        "keras.Sequential._functional", "no longer holds the graph of a built Sequential")
    for model in (two_branches(), nested()[0], noisy()[0]):
        assert ki.functional_graph(model) is model, moved(
            "keras.src.models.functional.Functional",
            f"is no longer the class of keras.Model(inputs, outputs) ({type(model).__mro__})")


def test_functional_graph_is_none_where_no_graph_describes_the_model():
    unbuilt = keras.Sequential([keras.layers.Dense(2)])
    assert ki.functional_graph(unbuilt) is None, moved(
        "keras.Sequential._functional", "is set before the Sequential is built")

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    class Overriding(type(two_branches())):  # a Functional whose call() is not its graph
        def call(self, inputs, training=None, mask=None):
            return super().call(inputs, training=training, mask=mask) * 2

    x = keras.Input((4,))
    assert ki.functional_graph(Subclassed()) is None
    assert ki.functional_graph(Overriding(x, keras.layers.Dense(2)(x))) is None
    assert ki.functional_graph(keras.layers.Dense(2)) is None


# --- nodes_by_depth / layer_calls ---------------------------------------------------------------

@pytest.mark.parametrize("make", [sequential, two_branches, lambda: nested()[0],
                                  lambda: noisy()[0]])
def test_nodes_by_depth_holds_every_layer_with_the_inputs_deepest(make):
    model = make()
    by_depth = ki.nodes_by_depth(ki.functional_graph(model))
    ops_at = {d: {ki.layer_call(n) is None for n in nodes} for d, nodes in by_depth.items()}
    assert ops_at[max(by_depth)] == {True}, moved(
        "Functional._nodes_by_depth", "no longer puts the input nodes at the highest depth")
    assert sorted(layers_called(model)) == sorted(
        layer.name for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)), \
        moved("Functional._nodes_by_depth / Node.operation", "no longer lists every layer call")


@pytest.mark.parametrize("make", [sequential, two_branches, lambda: nested()[0],
                                  lambda: noisy()[0]])
def test_layer_calls_come_after_the_calls_that_feed_them(make):
    graph = ki.functional_graph(make())
    known = {id(t) for t in graph.inputs}
    for call in ki.layer_calls(graph):
        assert all(id(t) in known for t in call.inputs), moved(
            "Functional._nodes_by_depth / Node.input_tensors",
            f"gives {call.layer.name!r} before the call producing its input")
        assert call.outputs and all(isinstance(t, keras.KerasTensor) for t in call.outputs), moved(
            "Node.outputs", f"no longer holds the KerasTensors {call.layer.name!r} produced")
        known.update(id(t) for t in call.outputs)
    assert all(id(t) in known for t in graph.outputs)


def test_layer_calls_keep_the_call_arguments_as_written():
    calls = {c.layer.name: c for c in ki.layer_calls(ki.functional_graph(two_branches()))}
    join = calls["join"]
    assert (len(join.args) == 1 and isinstance(join.args[0], list)
            and [id(t) for t in join.args[0]] == [id(t) for t in join.inputs]), moved(
        "Node.arguments.args", f"no longer holds a merge's list of inputs (got {join.args!r})")
    assert calls["drop"].kwargs.get("training") is False, moved(
        "Node.arguments.kwargs", f"lost training=False (got {calls['drop'].kwargs!r})")
    assert len(calls["left"].args) == 1 and calls["left"].inputs[0] is calls["left"].args[0]


def test_nested_model_appears_as_one_layer_call_with_its_own_graph():
    outer, inner = nested()
    assert "trunk" in layers_called(outer)
    assert ki.functional_graph(inner) is inner
    assert len(layers_called(inner)) == 1


def test_a_missing_private_api_is_named_with_the_keras_version():
    with pytest.raises(ki.PrivateApiChanged) as err:
        ki.nodes_by_depth(keras.layers.Dense(2))
    assert f"Keras {keras.version()}" in str(err.value)
    assert "Functional._nodes_by_depth" in str(err.value)
    assert err.value.api == "Functional._nodes_by_depth"


# --- input_structure ----------------------------------------------------------------------------

def test_input_structure_is_the_structure_the_inputs_were_declared_in():
    single = two_branches()
    declared = keras.tree.flatten(ki.input_structure(single))
    assert [id(t) for t in declared] == [id(t) for t in single.inputs], moved(
        "Functional._inputs_struct", "no longer holds the declared inputs")
    a, b = keras.Input((2,), name="a"), keras.Input((3,), name="b")
    joined = keras.layers.Concatenate()([a, b])
    listed = keras.Model([a, b], joined)
    assert isinstance(ki.input_structure(listed), list)
    by_name = keras.Model({"a": a, "b": b}, joined)
    struct = ki.input_structure(by_name)
    assert isinstance(struct, dict) and set(struct) == {"a", "b"}, moved(
        "Functional._inputs_struct", f"no longer keeps dict inputs as a dict (got {struct!r})")
    assert ki.input_structure(sequential()) is not None
    assert ki.input_structure(keras.Sequential([keras.layers.Dense(2)])) is None


# --- sublayers ----------------------------------------------------------------------------------

def test_sublayers_reach_a_noisy_layer_inside_a_plain_layer():
    model, block = noisy()
    assert block.noisy in ki.sublayers(block), moved(
        "keras.layers.Layer._layers", "no longer tracks the layers a plain layer holds")
    assert {layer.name for layer in ki.sublayers(model)} >= {"noisy_trunk", "block"}
    assert ki.sublayers("not a layer") == []
    assert {layer.name for layer in noisy_layers(model)} == {"noisy_trunk", block.noisy.name}


# --- the fast path on every model above ---------------------------------------------------------

@pytest.mark.parametrize("make", [sequential, two_branches, lambda: nested()[0], noisy_mlp])
def test_each_model_compiles_to_a_numpy_plan_matching_keras(make):
    model = make()
    plan = make_predict_fn(model, prefer="numpy")  # ValueError if the graph could not be read
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_allclose(plan(x)[0], np.asarray(model(x, training=False)),
                               rtol=1e-5, atol=1e-5)


# --- flat_call (TensorFlow) ---------------------------------------------------------------------

def test_flat_call_runs_a_concrete_function_reading_live_variables():
    scale = tf.Variable(2.0)
    concrete = tf.function(lambda x, y: x * scale + y).get_concrete_function(
        tf.TensorSpec([None], tf.float32), tf.TensorSpec([None], tf.float32))
    call = ki.flat_call(concrete)
    x, y = tf.constant([1.0, 2.0]), tf.constant([10.0, 20.0])
    out = call([x, y])
    out = out[0] if isinstance(out, (list, tuple)) else out
    np.testing.assert_allclose(np.asarray(out), [12.0, 24.0], err_msg=moved(
        "ConcreteFunction._call_flat", "no longer takes (tensors, captured_inputs)", "TensorFlow"))
    scale.assign(3.0)
    out = call([x, y])
    out = out[0] if isinstance(out, (list, tuple)) else out
    np.testing.assert_allclose(np.asarray(out), [13.0, 26.0])


# --- no private API outside the one module ------------------------------------------------------

# Private imports and every private attribute keras_internals wraps (as an attribute or a
# getattr string); Node attribute names are public-looking but belong to a private class.
PRIVATE_USES = re.compile(
    r"keras\.src\b|tensorflow\.python\b|\btf\.python\b"
    r"|[.\"'](_nodes_by_depth|_inputs_struct|_functional|_layers|_call_flat|_channels_first)\b"
    r"|\.(is_input|input_tensors|operation)\b|\.arguments\.(args|kwargs)\b")


def test_no_private_keras_or_tensorflow_api_outside_keras_internals():
    allowed = DRLBOX / "ops" / "keras_internals.py"
    hits = []
    for path in sorted(DRLBOX.rglob("*.py")):
        if path == allowed:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if PRIVATE_USES.search(line):
                hits.append(f"{path.relative_to(DRLBOX.parent)}:{number}: {line.strip()}")
    assert not hits, ("private Keras/TensorFlow API used outside drlbox/ops/keras_internals.py; "
                      "add a wrapper there and call it instead:\n" + "\n".join(hits))
