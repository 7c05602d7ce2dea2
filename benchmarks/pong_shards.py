"""Does cutting the parameter server into shards change learning? A3C on Pong, 1 vs 2 shards.

    python benchmarks/pong_shards.py [--steps 400000] [--window 50000]

Runs drlbox's Pong setup (benchmarks/drlbox_side.py: Nature CNN, one worker stepping 8 envs,
32-step lists, seed 0) once with one parameter-server shard and once with two, one after the
other, and prints the mean training-episode return and the mean losses per window of env
steps, side by side. Sharding should change nothing but noise: the worker clips the whole
gradient and Adam is elementwise, so two shards apply the same updates as one.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from drlbox_side import pong_trainer  # noqa: E402


def scalars(save_dir: str) -> dict[str, list[tuple[int, float]]]:
    """TensorBoard scalars written by the parameter server: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    out: dict[str, list] = {}
    for path in glob.glob(os.path.join(save_dir, "tensorboard", "events.out.tfevents.*")):
        events = EventAccumulator(path, size_guidance={"tensors": 0})
        events.Reload()
        for tag in events.Tags()["tensors"]:
            out.setdefault(tag, []).extend((e.step, float(make_ndarray(e.tensor_proto)))
                                           for e in events.Tensors(tag))
    return out


def windows(points: list[tuple[int, float]], window: int, steps: int) -> list[float]:
    """Mean value in each window of env steps (nan where none fell)."""
    values = []
    for start in range(0, steps, window):
        inside = [v for s, v in points if start <= s < start + window]
        values.append(float(np.mean(inside)) if inside else float("nan"))
    return values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400_000)
    parser.add_argument("--window", type=int, default=50_000)
    parser.add_argument("--port-begin", type=int, default=5300)
    args = parser.parse_args()
    curves = {}
    for shards in (1, 2):
        with tempfile.TemporaryDirectory() as save_dir:
            result = pong_trainer(args.steps, args.port_begin, ps_shards=shards,
                                  save_dir=save_dir, save_interval=10**9).run()
            print(f"{shards} shard(s): {result.global_steps} steps, {result.episodes} episodes, "
                  f"{result.global_steps / result.train_seconds:.0f} steps/s", flush=True)
            tags = scalars(save_dir)
            curves[shards] = {tag: windows(tags.get(tag, []), args.window, args.steps)
                              for tag in ("episode_return", "loss/policy_loss",
                                          "loss/entropy", "staleness")}
    names = ["episode_return", "loss/entropy", "loss/policy_loss", "staleness"]
    print("\n| env steps | " + " | ".join(f"{n} (1 / 2 shards)" for n in names) + " |")
    print("| --- |" + " --- |" * len(names))
    for i, start in enumerate(range(0, args.steps, args.window)):
        cells = [f"{curves[1][n][i]:.3g} / {curves[2][n][i]:.3g}" for n in names]
        print(f"| {start // 1000}k-{(start + args.window) // 1000}k | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
