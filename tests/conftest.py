"""Shared test helpers: free port ranges and small CartPole makers."""
import os
import socket

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _range_free(base: int, count: int) -> bool:
    for port in range(base, base + count):
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


@pytest.fixture
def port_base():
    """A function giving the start of `count` consecutive free loopback ports."""
    state = {"next": 20000 + (os.getpid() % 200) * 50}

    def find(count: int = 8) -> int:
        while not _range_free(state["next"], count):
            state["next"] += count
        base = state["next"]
        state["next"] += count
        return base

    return find


def cartpole():
    """CartPole-v1 (module-level so it pickles by reference in role processes too)."""
    import gymnasium

    return gymnasium.make("CartPole-v1")


def small_features(observation_space):
    """A 32-unit ReLU feature layer."""
    import keras

    inp = keras.Input(shape=observation_space.shape)
    return inp, keras.layers.Dense(32, activation="relu")(inp)
