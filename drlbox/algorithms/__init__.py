"""The four algorithms, one module each, and the model each one trains."""
from __future__ import annotations

from typing import Any

import keras

from drlbox.algorithms.a3c import A3C
from drlbox.algorithms.acer import ACER
from drlbox.algorithms.base import Algorithm
from drlbox.algorithms.dqn import DQN
from drlbox.algorithms.impala import IMPALA

ALGORITHM_CLASSES = {cls.name: cls for cls in (A3C, ACER, IMPALA, DQN)}


def make_algorithm(config: Any, action_space: Any) -> Algorithm:
    """The algorithm object named by config.algorithm for this action space."""
    return ALGORITHM_CLASSES[config.algorithm](config, action_space)


def load_keras_model(path: str, custom_objects: dict | None = None) -> keras.Model:
    """Load a saved .keras or .h5 model (drlbox's own layers are always known)."""
    import drlbox.layers  # noqa: F401  (registers NoisyDense and DuelingCombine)

    return keras.models.load_model(path, custom_objects=custom_objects, compile=False)


def make_model(config: Any, env: Any, algorithm: Algorithm) -> keras.Model:
    """The model to train: loaded from load_model, made by model_maker, or heads on features."""
    if config.load_model is not None:
        model = load_keras_model(config.load_model, config.load_model_custom)
    elif config.model_maker is not None:
        model = config.model_maker(env)
    else:
        inputs, feature = config.feature_maker(env.observation_space)
        model = algorithm.build_model(inputs, feature)
    if not isinstance(model, keras.Model):
        raise TypeError(f"expected a keras.Model, got {type(model).__name__}")
    algorithm.check_model(model)
    return model
