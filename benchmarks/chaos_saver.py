"""For benchmarks/chaos.py: save a real Keras model over and over, as the parameter server
does at checkpoints, until killed. `python chaos_saver.py SAVE_DIR`; prints "ready" first."""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

from drlbox.roles.checkpoints import save_model_atomically  # noqa: E402

inputs = keras.Input((512,))
hidden = keras.layers.Dense(1024)(keras.layers.Dense(1024)(inputs))
model = keras.Model(inputs, keras.layers.Dense(6)(hidden))     # ~1.6M weights, 6.3 MB
print("ready", flush=True)
for i in range(10**9):
    save_model_atomically(model, os.path.join(sys.argv[1], f"model_{i % 4}.keras"))
