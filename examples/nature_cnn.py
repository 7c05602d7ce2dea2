"""The Nature CNN (Mnih et al. 2015) trunk that the Atari example, tests and benchmarks share."""
import keras


def nature_cnn(inputs):
    """84x84x4 uint8 frames -> the 512-unit ReLU feature: scaled to [0, 1], three convolutions
    (32 8x8 /4, 64 4x4 /2, 64 3x3 /1), flattened, one Dense layer."""
    x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    x = keras.layers.Conv2D(32, 8, strides=4, activation="relu")(x)
    x = keras.layers.Conv2D(64, 4, strides=2, activation="relu")(x)
    x = keras.layers.Conv2D(64, 3, strides=1, activation="relu")(x)
    return keras.layers.Dense(512, activation="relu")(keras.layers.Flatten()(x))
