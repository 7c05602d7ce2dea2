"""Train each algorithm on CartPole-v1 until a greedy evaluation (20 episodes) averages >= 475.

Prints, per algorithm and seed, the env steps and wall-clock seconds at which it got there.
    python benchmarks/cartpole_solve.py --algorithms a3c acer impala dqn --seeds 0 1 2
The hyperparameters live in `PRESETS`; examples/cartpole_<algorithm>.py use the same ones.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))

from cartpole_presets import cartpole_trainer, first_solved  # noqa: E402


def solve(algorithm: str, seed: int, max_steps: int, port_begin: int, eval_interval: int,
          verbose: bool) -> dict:
    """One run; returns steps, seconds, and whether it reached the target."""
    start = time.monotonic()
    result = cartpole_trainer(algorithm, seed, max_steps, port_begin=port_begin,
                              eval_interval=eval_interval, verbose=verbose).run()
    first = first_solved(result)
    return {"algorithm": algorithm, "seed": seed, "solved": first is not None,
            "steps": first.global_steps if first else result.global_steps,
            "train_seconds": first.wall_seconds if first else result.wall_seconds,
            "total_seconds": time.monotonic() - start,
            "best_eval": max((e.mean_return for e in result.evaluations), default=math.nan)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algorithms", nargs="+", default=["a3c", "acer", "impala", "dqn"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--max-steps", type=int, default=300_000)
    parser.add_argument("--eval-interval", type=int, default=5000)
    parser.add_argument("--port-begin", type=int, default=3220)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    rows = []
    print(f"{'algorithm':<9} {'seed':>4} {'solved':>6} {'env steps':>10} {'train s':>8} "
          f"{'total s':>8} {'best eval':>9}", flush=True)
    for algorithm in args.algorithms:
        for seed in args.seeds:
            row = solve(algorithm, seed, args.max_steps, args.port_begin, args.eval_interval,
                        args.verbose)
            rows.append(row)
            print(f"{algorithm:<9} {seed:>4} {str(row['solved']):>6} {row['steps']:>10} "
                  f"{row['train_seconds']:>8.1f} {row['total_seconds']:>8.1f} "
                  f"{row['best_eval']:>9.1f}", flush=True)
    return 0 if all(r["solved"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
