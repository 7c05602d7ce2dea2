"""Weight sets as one flat vector (WeightLayout) and flat calls of compiled functions."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from drlbox.ops.compiled import FlatFunction
from drlbox.ops.flat_weights import WeightLayout


def mixed_variables():
    """float32 variables of several shapes with an int64 one in the middle."""
    return [keras.Variable(np.arange(6, dtype=np.float32).reshape(2, 3), name="kernel"),
            keras.Variable(np.array([7, 8], np.int64), name="counter"),
            keras.Variable(np.array([0.5, -1.5], np.float32), name="bias"),
            keras.Variable(np.float32(3.25), name="scale")]


def test_flat_and_merge_round_trip_bitwise_with_a_non_float32_variable():
    variables = mixed_variables()
    layout = WeightLayout(variables)
    arrays = [v.numpy() for v in variables]
    assert layout.size == 6 + 2 + 1
    assert [v.name for v in layout.other_variables] == ["counter"]

    flat = layout.flat(arrays)
    assert flat.dtype == np.float32 and flat.shape == (9,)
    np.testing.assert_array_equal(flat, [0, 1, 2, 3, 4, 5, 0.5, -1.5, 3.25])
    merged = layout.merge(flat, layout.others(arrays))
    for got, want in zip(merged, arrays):
        assert got.shape == want.shape and got.dtype == want.dtype
        assert got.tobytes() == want.tobytes()


def test_graph_split_and_graph_flat_agree_with_the_host():
    variables = mixed_variables()
    layout = WeightLayout(variables)
    host = layout.flat([v.numpy() for v in variables])

    split = tf.function(layout.graph_split)(tf.constant(host + 1.0))
    for part, var in zip(split, layout.flat_variables):
        np.testing.assert_array_equal(part.numpy(), var.numpy() + 1.0)
    np.testing.assert_array_equal(tf.function(layout.graph_flat)().numpy(), host)


def test_a_layout_without_float32_variables_is_empty():
    layout = WeightLayout([keras.Variable(np.array([1], np.int32))])
    assert layout.size == 0 and layout.flat([np.array([1], np.int32)]).shape == (0,)
    assert tf.function(layout.graph_flat)().shape == (0,)


def test_flat_function_matches_the_public_call_and_converts_dtypes():
    var = tf.Variable(np.ones(3, np.float32))

    def fn(x, n):
        var.assign_add(x)
        return {"sum": tf.reduce_sum(var) * tf.cast(n, tf.float32), "var": tf.identity(var)}

    specs = [tf.TensorSpec([3], tf.float32), tf.TensorSpec([], tf.int64)]
    flat = FlatFunction(fn, specs)
    out = flat(np.array([1.0, 2.0, 3.0]), 2)       # float64 and a Python int, converted
    assert set(out) == {"sum", "var"}
    np.testing.assert_allclose(out["var"].numpy(), [2.0, 3.0, 4.0])
    assert float(out["sum"]) == 18.0
    public = flat.concrete(tf.constant([0.0, 0.0, 1.0]), tf.constant(1, tf.int64))
    np.testing.assert_allclose(public["var"].numpy(), [2.0, 3.0, 5.0])


def test_flat_function_names_a_wrong_argument_count():
    flat = FlatFunction(lambda x: x * 2.0, [tf.TensorSpec([2], tf.float32)])
    with pytest.raises(TypeError, match="expected 1 arrays, got 2"):
        flat(np.zeros(2, np.float32), np.zeros(2, np.float32))
