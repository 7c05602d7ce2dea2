"""drlbox.layers: Keras layers used by drlbox models (NoisyNet dense layers, dueling head)."""
from drlbox.layers.dueling import DuelingCombine
from drlbox.layers.noisy import (
    NoisyDense,
    noise_variable_ids,
    noisy_layers,
    resample_noise,
    synced_weights,
)

__all__ = [
    "DuelingCombine",
    "NoisyDense",
    "noise_variable_ids",
    "noisy_layers",
    "resample_noise",
    "synced_weights",
]
