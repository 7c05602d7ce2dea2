"""How long a local run takes to start: from `make_trainer(...).run()` to the first env step.

    python benchmarks/startup.py [--runs 3] [--workers 2] [--steps 2000]

Each run is a fresh interpreter, as a user's script is: it imports drlbox, builds the trainer
and calls run() on CartPole-v1 (A3C, the original example's 200/100 ReLU features). The env
maker writes the wall-clock time of its first step to a file of its own, so the figures need no
help from drlbox:

- import: interpreter start to `make_trainer` imported (the user's own import cost);
- to first step: `run()` called to the first env step taken in any worker;
- run(): `run()` called to `run()` returned (`--steps` env steps);
- process: the whole interpreter, start to exit.

It prints each run and the medians; wall-clock figures, so run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

SCRIPT = """
import time, json, sys
began = time.time()
sys.path.insert(0, {here!r})
from drlbox.trainer import make_trainer
from startup import FirstStep, features
imported = time.time()
trainer = make_trainer("a3c", env_maker=FirstStep({directory!r}), feature_maker=features,
                       num_parallel={workers}, train_steps={steps}, port_begin={port})
called = time.time()
trainer.run()
returned = time.time()
print(json.dumps(dict(began=began, imported=imported, called=called, returned=returned)))
"""


class FirstStep:
    """CartPole whose first step writes the time it happened to `directory` (picklable)."""

    def __init__(self, directory: str):
        self.directory = directory

    def __call__(self):
        import gymnasium

        directory = self.directory

        class Timed(gymnasium.Wrapper):
            stepped = False

            def step(self, action):
                if not self.stepped:
                    self.stepped = True
                    with open(os.path.join(directory, f"{os.getpid()}-{id(self)}"), "w") as f:
                        f.write(repr(time.time()))
                return self.env.step(action)

        return Timed(gymnasium.make("CartPole-v1"))


def features(space):
    """The original example's 200/100 ReLU features."""
    import keras

    inputs = keras.Input(space.shape)
    hidden = keras.layers.Dense(200, activation="relu")(inputs)
    return inputs, keras.layers.Dense(100, activation="relu")(hidden)


def one_run(workers: int, steps: int, port: int) -> dict:
    directory = tempfile.mkdtemp(prefix="drlbox-startup-")
    script = SCRIPT.format(here=HERE, directory=directory, workers=workers, steps=steps,
                           port=port)
    started = time.time()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=os.path.dirname(HERE), timeout=600)
    ended = time.time()
    if done.returncode != 0:
        raise RuntimeError(f"the run failed:\n{done.stderr[-3000:]}")
    marks = json.loads(done.stdout.strip().splitlines()[-1])
    firsts = [float(open(p).read()) for p in glob.glob(os.path.join(directory, "*"))]
    return {"import": marks["imported"] - started,
            "to first step": min(firsts) - marks["called"],
            "run()": marks["returned"] - marks["called"],
            "process": ended - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--port-begin", type=int, default=6400)
    args = parser.parse_args()
    print(f"startup: {os.cpu_count()} cores, Python {sys.version.split()[0]}, A3C CartPole, "
          f"{args.workers} workers, {args.steps} env steps")
    rows = []
    for i in range(args.runs):
        row = one_run(args.workers, args.steps, args.port_begin + 20 * i)
        rows.append(row)
        print(f"run {i + 1}: " + ", ".join(f"{k} {v:.2f} s" for k, v in row.items()),
              flush=True)
    print("median: " + ", ".join(f"{k} {statistics.median(r[k] for r in rows):.2f} s"
                                 for k in rows[0]))


if __name__ == "__main__":
    main()
