"""FlatFunction: traced once, called with arrays, whatever Python the function holds."""
import numpy as np
import tensorflow as tf

from drlbox.ops.compiled import FlatFunction


def test_a_function_that_branches_on_a_tensor_still_traces():
    # Traced without AutoGraph first (faster); branching on a tensor needs AutoGraph.
    def branchy(x):
        if tf.reduce_sum(x) > 0:
            return x * 2.0
        return x - 1.0

    f = FlatFunction(branchy, [tf.TensorSpec([None], tf.float32)])
    assert f(np.array([1.0, 2.0], np.float32)).numpy().tolist() == [2.0, 4.0]
    assert f(np.array([-1.0, -2.0], np.float32)).numpy().tolist() == [-2.0, -3.0]


def test_plain_function_and_argument_count():
    f = FlatFunction(lambda a, b: a + b, [tf.TensorSpec([2], tf.float32)] * 2)
    assert f(np.ones(2, np.float32), np.ones(2, np.float32)).numpy().tolist() == [2.0, 2.0]
    try:
        f(np.ones(2, np.float32))
    except TypeError as err:
        assert "expected 2 arrays" in str(err)
    else:
        raise AssertionError("a missing argument was accepted")
