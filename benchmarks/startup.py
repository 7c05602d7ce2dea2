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

`--vs-sb3 STEPS` then times whole processes side by side, alternating (a user's view: start
Python, train STEPS CartPole env steps, exit): drlbox A3C with the original's defaults (2
workers, the 200/100 ReLU features) against Stable-Baselines3 A2C with its defaults, 2 envs and
the same 200/100 ReLU layers (`make bench` installs SB3). Besides wall seconds it prints the CPU
seconds of each process and its children, a figure that holds on a busy machine too.
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


DRLBOX_WHOLE = """
import sys
sys.path.insert(0, {here!r})
import gymnasium
from drlbox.trainer import make_trainer
from startup import features
make_trainer("a3c", env_maker=lambda: gymnasium.make("CartPole-v1"), feature_maker=features,
             num_parallel=2, train_steps={steps}, port_begin={port}).run()
"""

# An SB3-only install has no TensorBoard, whose presence here would make SB3's logger import
# all of TensorFlow (see sb3_side._import_sb3): SB3 is timed without it.
SB3_WHOLE = """
import sys
sys.modules["torch.utils.tensorboard"] = None
import torch
from stable_baselines3 import A2C
from stable_baselines3.common.env_util import make_vec_env
torch.set_num_threads(1)
env = make_vec_env("CartPole-v1", n_envs=2)
A2C("MlpPolicy", env, device="cpu",
    policy_kwargs=dict(net_arch=[200, 100], activation_fn=torch.nn.ReLU)).learn({steps})
"""


def whole_process(script: str) -> tuple[float, float]:
    """Wall and CPU seconds (the process and its children) of `python -c script`."""
    before = os.times()
    started = time.time()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=os.path.dirname(HERE), timeout=1800)
    wall = time.time() - started
    after = os.times()
    if done.returncode != 0:
        raise RuntimeError(f"the run failed:\n{done.stderr[-3000:]}")
    return wall, (after.children_user - before.children_user
                  + after.children_system - before.children_system)


def versus_sb3(steps: int, runs: int, port: int) -> None:
    """Whole-process wall and CPU seconds, drlbox A3C and SB3 A2C alternating; the medians."""
    rows: dict[str, list] = {"drlbox A3C": [], "SB3 A2C": []}
    for i in range(runs):
        for name, script in (("drlbox A3C", DRLBOX_WHOLE.format(here=HERE, steps=steps,
                                                                 port=port + 20 * i)),
                             ("SB3 A2C", SB3_WHOLE.format(steps=steps))):
            wall, cpu = whole_process(script)
            rows[name].append((wall, cpu))
            print(f"{name} run {i + 1}: {steps} env steps, process {wall:.2f} s, "
                  f"CPU {cpu:.2f} s", flush=True)
    medians = {name: (statistics.median(w for w, _ in r), statistics.median(c for _, c in r))
               for name, r in rows.items()}
    for name, (wall, cpu) in medians.items():
        print(f"median {name}: process {wall:.2f} s, CPU {cpu:.2f} s")
    (dw, dc), (sw, sc) = medians["drlbox A3C"], medians["SB3 A2C"]
    print(f"drlbox is {sw / dw:.2f}x faster than SB3 A2C (whole process, {steps} steps); "
          f"{sc / dc:.2f}x less CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--port-begin", type=int, default=6400)
    parser.add_argument("--vs-sb3", type=int, default=0, metavar="STEPS",
                        help="then time whole processes of STEPS env steps against SB3 A2C")
    parser.add_argument("--vs-runs", type=int, default=3)
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
    if args.vs_sb3:
        versus_sb3(args.vs_sb3, args.vs_runs, args.port_begin + 20 * args.runs)


if __name__ == "__main__":
    main()
