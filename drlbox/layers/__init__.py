"""drlbox.layers: Keras layers used by drlbox models (NoisyNet dense layers)."""
from drlbox.layers.noisy import (
    NoisyDense,
    noise_variable_ids,
    noisy_layers,
    resample_noise,
    synced_weights,
)

__all__ = [
    "NoisyDense",
    "noise_variable_ids",
    "noisy_layers",
    "resample_noise",
    "synced_weights",
]
