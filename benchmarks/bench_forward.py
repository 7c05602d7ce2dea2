"""Microbenchmark: NumPy plan vs tf.function vs eager Keras call, in µs per forward pass."""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from drlbox.ops.fast_forward import compile_numpy_forward, make_predict_fn  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "examples"))
from nature_cnn import nature_cnn as nature_cnn_trunk  # noqa: E402

L = keras.layers
BATCHES = (1, 8, 32)


def mlp() -> keras.Model:
    """[200, 100] ReLU MLP, input 4, heads: 2 logits + 1 value."""
    inp = keras.Input((4,))
    h = L.Dense(100, activation="relu")(L.Dense(200, activation="relu")(inp))
    return keras.Model(inp, [L.Dense(2)(h), L.Dense(1)(h)], name="mlp_200_100")


def nature_cnn(n_actions: int = 6) -> keras.Model:
    """DQN Nature CNN on 84x84x4 with Rescaling(1/255), heads: logits + value."""
    inp = keras.Input((84, 84, 4))
    h = nature_cnn_trunk(inp)
    return keras.Model(inp, [L.Dense(n_actions)(h), L.Dense(1)(h)], name="nature_cnn")


def us_per_call(fn: Callable[[], Any], budget_s: float = 0.3, repeats: int = 5) -> float:
    """Best-of-``repeats`` mean time of ``fn`` in µs, each repeat running ~budget_s/repeats."""
    fn()  # warm-up (tracing, allocator)
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-6)
    n = max(1, int(budget_s / repeats / one))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6


def bench(model: keras.Model, make_input: Callable[[int], np.ndarray]) -> None:
    """Print one row per batch size for the three ways of running ``model``."""
    plan = compile_numpy_forward(model)
    assert plan is not None, "benchmark models must be NumPy-compilable"
    tf_fn = make_predict_fn(model, prefer="tf")
    auto = make_predict_fn(model)
    print(f"\n{model.name} ({model.count_params():,} params); auto picks: {auto.backend}")
    print(f"{'batch':>5} {'numpy':>10} {'tf.function':>12} {'eager':>10}   (µs/call)")
    for b in BATCHES:
        x = make_input(b)
        t_np = us_per_call(lambda: plan(x))
        t_tf = us_per_call(lambda: tf_fn(x))
        t_eager = us_per_call(lambda: [np.asarray(o) for o in model(x, training=False)])
        print(f"{b:>5} {t_np:>10.1f} {t_tf:>12.1f} {t_eager:>10.1f}")


def main() -> None:
    """Run both benchmarks."""
    rng = np.random.default_rng(0)
    bench(mlp(), lambda b: rng.standard_normal((b, 4)).astype(np.float32))
    bench(nature_cnn(), lambda b: rng.integers(0, 256, (b, 84, 84, 4)).astype(np.float32))


if __name__ == "__main__":
    main()
