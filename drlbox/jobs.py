"""A job: an id plus the trainer config, and how it crosses process and container boundaries.

Makers are ordinary callables (lambdas too), so the config travels with cloudpickle; a Keras
optimizer instance travels as its serialized config. Pickles only load on the Python minor
version that wrote them, which `check_python_version` states plainly.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import uuid
from dataclasses import dataclass
from typing import Any

import cloudpickle


def python_version() -> str:
    """This interpreter's 'major.minor'."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def check_python_version(theirs: str, who: str = "the parameter server") -> None:
    """Refuse to exchange pickled makers across Python minor versions."""
    if theirs != python_version():
        raise RuntimeError(f"Python version mismatch: this process runs Python "
                           f"{python_version()}, {who} runs Python {theirs}; makers are "
                           f"pickled and only load on the same Python minor version")


@dataclass(frozen=True)
class Job:
    """A training job as the roles see it."""

    job_id: str
    config: Any

    @staticmethod
    def new(config: Any) -> "Job":
        """A job with a fresh id."""
        return Job(f"{config.algorithm}-{uuid.uuid4().hex[:8]}", config)

    def settings_json(self) -> str:
        """The config's plain settings as JSON (readable without unpickling anything)."""
        return json.dumps(self.config.plain_settings(), default=str)

    def encode(self) -> bytes:
        """The config (makers included) as bytes."""
        config = self.config
        if not isinstance(config.optimizer, str):
            import keras

            config = dataclasses.replace(
                config, optimizer={"keras": keras.optimizers.serialize(config.optimizer)})
        return cloudpickle.dumps(config)

    @staticmethod
    def decode(job_id: str, data: bytes) -> "Job":
        """Inverse of `encode`."""
        config = cloudpickle.loads(data)
        if isinstance(config.optimizer, dict):
            import keras

            optimizer = keras.optimizers.deserialize(config.optimizer["keras"])
            config = dataclasses.replace(config, optimizer=optimizer)
        return Job(job_id, config)
