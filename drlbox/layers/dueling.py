"""The dueling head's combination Q = V + A - mean(A) (Wang et al. 2016) as a saveable layer."""
from __future__ import annotations

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="drlbox")
class DuelingCombine(keras.layers.Layer):
    """Combine a state value [B, 1] and advantages [B, A] into Q-values [B, A]."""

    def call(self, inputs):
        value, advantages = inputs
        return value + advantages - ops.mean(advantages, axis=-1, keepdims=True)

    def numpy_call(self, value: np.ndarray, advantages: np.ndarray) -> np.ndarray:
        """The same in NumPy, for the fast acting path."""
        return value + advantages - advantages.mean(axis=-1, keepdims=True)

    def compute_output_shape(self, input_shapes):
        return input_shapes[1]
