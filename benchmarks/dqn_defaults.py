"""DQN with the original drlbox's defaults on CartPole-v1: does the final model solve it?

The configuration is the original's DQN as a user would first run it: no replay, batch_size 1
(online asynchronous n-step Q-learning, Mnih et al. 2016), the original example's 200/100 ReLU
feature net, Adam with learning rate 1e-3, two workers, 300k env steps; every DQN argument at
its default. Each seed runs after the previous one (they would share the cores otherwise). The
final model is then played greedily (epsilon 0) for 20 episodes by `make_evaluator`.

    python benchmarks/dqn_defaults.py [--seeds 0 1 2] [--steps 300000] [--eval-interval 50000]
    python benchmarks/dqn_defaults.py --set policy_eps_decay_steps=50000   # try an override

Prints one row per seed: the final model's greedy mean return, how its greedy episodes ended
(pole angle, cart off the track, or the 500-step time limit), wall seconds, and the greedy
evaluations made during training (every --eval-interval env steps; 0 turns them off).
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import tempfile
import time

import gymnasium
import keras
import numpy as np

# This checkout's drlbox, not whichever one is installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SOLVED = 475.0


def cartpole():
    """The environment."""
    return gymnasium.make("CartPole-v1")


def features(observation_space):
    """The original example's feature net: Dense 200 and Dense 100, ReLU."""
    inp = keras.Input(shape=observation_space.shape)
    hidden = keras.layers.Dense(200, activation="relu")(inp)
    return inp, keras.layers.Dense(100, activation="relu")(hidden)


def episode_ends(model_path: str, episodes: int = 20, seed: int = 0) -> dict:
    """How the final model's greedy episodes end: 'angle' (the pole fell), 'track' (the cart
    left the track: the policy drifts) or 'time limit' (500 steps, solved)."""
    from drlbox.algorithms import load_keras_model
    from drlbox.ops.fast_forward import make_predict_fn

    predict = make_predict_fn(load_keras_model(model_path))
    env, ends = cartpole(), {"angle": 0, "track": 0, "time limit": 0}
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        while True:
            action = int(np.argmax(predict(np.asarray(obs, np.float32)[np.newaxis])[0][0]))
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                break
        ends["time limit" if truncated else "track" if abs(obs[0]) > 2.4 else "angle"] += 1
    return ends


def train_and_evaluate(seed: int, steps: int, eval_interval: int, port_begin: int,
                       overrides: dict) -> dict:
    """One training run from the defaults, then 20 greedy episodes of its final model."""
    from drlbox.evaluator import make_evaluator
    from drlbox.trainer import make_trainer

    with tempfile.TemporaryDirectory(prefix="dqn-defaults-") as save_dir:
        settings = dict(env_maker=cartpole, feature_maker=features, num_parallel=2,
                        train_steps=steps, opt_kwargs=dict(learning_rate=1e-3), seed=seed,
                        save_dir=save_dir, save_interval=steps, port_begin=port_begin)
        if eval_interval:
            settings.update(eval_interval=eval_interval, eval_episodes=20)
        settings.update(overrides)
        start = time.monotonic()
        result = make_trainer("dqn", **settings).run()
        seconds = time.monotonic() - start
        final = result.checkpoints[-1].path
        evaluation = make_evaluator("dqn", env_maker=cartpole, load_model=final,
                                    policy_type="greedy", policy_eps=0.0, num_episodes=20,
                                    seed=1000 + seed).run()
        ends = episode_ends(final, seed=2000 + seed)
    return {"seed": seed, "final_greedy": evaluation.mean_return, "ends": ends,
            "seconds": seconds,
            "global_steps": result.global_steps, "updates": result.updates,
            "curve": [(e.global_steps, round(e.mean_return, 1)) for e in result.evaluations]}


def parse_overrides(pairs: list[str]) -> dict:
    """name=value pairs (values as Python literals) -> make_trainer keyword arguments."""
    overrides = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set {pair!r}: write name=value, e.g. sync_target_interval=100")
        try:
            overrides[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[name] = value
    return overrides


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=300_000)
    parser.add_argument("--eval-interval", type=int, default=50_000,
                        help="env steps between greedy evaluations during training (0: none)")
    parser.add_argument("--port-begin", type=int, default=4220)
    parser.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE",
                        help="make_trainer arguments over the defaults (for experiments)")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    overrides = parse_overrides(args.set)
    if overrides:
        print(f"overrides: {overrides}", flush=True)
    rows = []
    print(f"{'seed':>4} {'final greedy':>12} {'angle/track/limit':>17} {'wall s':>7}  "
          f"evaluations during training (env steps: greedy mean)", flush=True)
    for seed in args.seeds:
        row = train_and_evaluate(seed, args.steps, args.eval_interval, args.port_begin,
                                 overrides)
        rows.append(row)
        curve = ", ".join(f"{s // 1000}k: {r:.0f}" for s, r in row["curve"])
        ends = "/".join(str(n) for n in row["ends"].values())
        print(f"{seed:>4} {row['final_greedy']:>12.1f} {ends:>17} {row['seconds']:>7.0f}  "
              f"{curve}", flush=True)
    solved = sum(r["final_greedy"] >= SOLVED for r in rows)
    print(f"solved (final greedy mean >= {SOLVED:.0f}): {solved} of {len(rows)} seeds")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"overrides": overrides, "steps": args.steps, "rows": rows}, f, indent=1)
    return 0 if solved * 2 > len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
