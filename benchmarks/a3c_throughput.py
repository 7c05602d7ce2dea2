"""Env steps per second of A3C on CartPole-v1 with the 200/100 ReLU network.

    python benchmarks/a3c_throughput.py [--steps 60000]
Runs the real local cluster (parameter server + workers over gRPC) for num_parallel 1 and 2,
with the default batch_size=1 and with 8 env copies per worker (batch_size=8); steps/s counts
from the first env step, so process start-up is reported apart.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))

from cartpole_presets import cartpole, mlp_features  # noqa: E402

from drlbox.trainer import make_trainer  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60_000)
    parser.add_argument("--port-begin", type=int, default=3420)
    args = parser.parse_args()
    print(f"{'num_parallel':>12} {'batch_size':>10} {'env steps':>10} {'steps/s':>9} "
          f"{'updates/s':>9} {'start-up s':>10}", flush=True)
    for num_parallel in (1, 2):
        for batch_size in (1, 8):
            r = make_trainer("a3c", env_maker=cartpole, feature_maker=mlp_features,
                             num_parallel=num_parallel, batch_size=batch_size,
                             train_steps=args.steps, port_begin=args.port_begin, seed=0).run()
            print(f"{num_parallel:>12} {batch_size:>10} {r.global_steps:>10} "
                  f"{r.global_steps / r.train_seconds:>9.0f} {r.updates / r.train_seconds:>9.0f} "
                  f"{r.wall_seconds - r.train_seconds:>10.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
