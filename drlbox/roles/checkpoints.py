"""Saving models atomically, and TensorBoard scalars beside them."""
from __future__ import annotations

import importlib.util
import logging
import os
import tempfile

import keras

log = logging.getLogger(__name__)


def save_model_atomically(model: keras.Model, path: str) -> str:
    """Save to a temporary file in the same directory, then rename: never a half-written model."""
    directory = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(directory, exist_ok=True)
    suffix = ".keras" if path.endswith(".keras") else ".h5"
    fd, tmp = tempfile.mkstemp(prefix=".saving-", suffix=suffix, dir=directory)
    os.close(fd)
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def checkpoint_path(save_dir: str, global_steps: int | None) -> str:
    """`model_<steps>.keras`, or `model_final.keras` for the end of training."""
    name = "model_final.keras" if global_steps is None else f"model_{global_steps}.keras"
    return os.path.join(save_dir, name)


class ScalarLog:
    """TensorBoard scalars under save_dir/tensorboard; does nothing without a save_dir."""

    def __init__(self, save_dir: str | None):
        self._writer = None
        if not save_dir:
            return
        if importlib.util.find_spec("tensorboard") is None:
            # tf.summary needs the tensorboard package; training must not fail for its lack.
            log.warning("TensorBoard scalars are off: the tensorboard package is not installed")
            return
        import tensorflow as tf

        self._writer = tf.summary.create_file_writer(os.path.join(save_dir, "tensorboard"))

    def write(self, step: int, scalars: dict) -> None:
        """Write name -> value scalars at `step`."""
        if self._writer is None or not scalars:
            return
        import tensorflow as tf

        with self._writer.as_default(step=step):
            for name, value in scalars.items():
                tf.summary.scalar(name, float(value))

    def write_all(self, scalars: list[tuple[int, dict]]) -> None:
        """Write several (step, scalars) pairs."""
        for step, values in scalars:
            self.write(step, values)

    def flush(self) -> None:
        """Push pending scalars to disk."""
        if self._writer is not None:
            self._writer.flush()
