"""drlbox and Stable-Baselines3 side by side on this machine (`make bench`).

Measures, in one run:
  1. CartPole-v1 training throughput (env steps/s): drlbox A3C vs SB3 A2C (Tanh and ReLU),
     [200, 100] layers, 2 and 8 envs in total.
  2. Time to solve CartPole-v1 (first greedy evaluation of 20 episodes with mean >= 475):
     drlbox A3C vs SB3 A2C with 8 envs, drlbox DQN vs SB3 DQN (rl-zoo hyperparameters);
     env steps and training seconds from the first env step (start-up and evaluation excluded),
     median over seeds, capped.
  3. Atari Pong throughput with the Nature CNN: drlbox A3C vs SB3 A2C, 8 envs.
drlbox evaluates the models its parameter server saved every `--eval-every` steps after the run
(each stamped with its training time), so no evaluator competes for the CPU while it trains;
SB3 trains in chunks of the same size and evaluates between them, off the clock.
Results go to stdout, benchmarks/results/compare_sb3.json and benchmarks/results/solve_curves.png.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "examples"))
sys.path.insert(0, HERE)

import sb3_side  # noqa: E402  (torch and SB3; imported before TensorFlow on purpose)
from cartpole_presets import PRESETS, cartpole, cartpole_trainer  # noqa: E402
from drlbox_side import pong_trainer, solved_at  # noqa: E402

from drlbox.trainer import make_trainer  # noqa: E402

RESULTS = os.path.join(HERE, "results")


def a3c_cartpole_throughput(n_envs: int, steps: int, port_begin: int) -> dict:
    """drlbox A3C steps/s with n_envs in total: the solving preset (one worker stepping the
    envs in lockstep, separate 200/100 Tanh policy and value networks, 32-step lists)."""
    settings = {**PRESETS["a3c"], "batch_size": n_envs}
    result = make_trainer("a3c", env_maker=cartpole, train_steps=steps,
                          port_begin=port_begin, seed=0, **settings).run()
    return {"steps": result.global_steps, "steps_per_second": result.global_steps /
            result.train_seconds, "startup_seconds": result.wall_seconds - result.train_seconds}


def drlbox_time_to_solve(algorithm: str, seed: int, cap: int, eval_every: int,
                         port_begin: int) -> dict:
    """Train with the CartPole preset to `cap`, then find the first saved model that solves."""
    with tempfile.TemporaryDirectory() as save_dir:
        result = cartpole_trainer(algorithm, seed, cap, save_dir=save_dir,
                                  save_interval=eval_every, eval_interval=None,
                                  target_return=None, verbose=False,
                                  port_begin=port_begin).run()
        first, evals = solved_at(result.checkpoints, seed)
    return {"solved": first is not None, "steps": first[0] if first else result.global_steps,
            "train_seconds": first[2] if first else result.train_seconds, "evals": evals,
            "startup_seconds": result.wall_seconds - result.train_seconds}


def median_of(runs: list[dict], key: str) -> float:
    """Median of a key over runs; unsolved runs count at their cap (the median says so)."""
    return statistics.median(run[key] for run in runs)


def solve_row(name: str, runs: list[dict]) -> str:
    solved = sum(r["solved"] for r in runs)
    steps = " ".join(f"{r['steps']}" + ("" if r["solved"] else "*") for r in runs)
    secs = " ".join(f"{r['train_seconds']:.1f}" + ("" if r["solved"] else "*") for r in runs)
    return (f"| {name} | {solved}/{len(runs)} | {median_of(runs, 'steps'):.0f} | "
            f"{median_of(runs, 'train_seconds'):.1f} | {steps} | {secs} |")


def plot_curves(curves: dict, path: str) -> None:
    """Greedy evaluation return against training wall-clock seconds, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, group in zip(axes, ("actor-critic (8 envs)", "DQN")):
        for (label, color), runs in curves[group].items():
            for i, run in enumerate(runs):
                xs = [e[2] for e in run["evals"]]
                ys = [e[1] for e in run["evals"]]
                ax.plot(xs, ys, color=color, alpha=0.8, label=label if i == 0 else None)
        ax.axhline(475, color="grey", linestyle=":")
        ax.set_title(f"CartPole-v1, {group}")
        ax.set_xlabel("training wall-clock seconds (evaluation excluded)")
        ax.set_ylabel("greedy mean return (20 episodes)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--throughput-steps", type=int, default=60_000)
    parser.add_argument("--a3c-cap", type=int, default=200_000)
    parser.add_argument("--dqn-cap", type=int, default=150_000)
    parser.add_argument("--eval-every", type=int, default=5000)
    parser.add_argument("--pong-steps", type=int, default=10_000)
    parser.add_argument("--port-begin", type=int, default=3520)
    parser.add_argument("--skip", nargs="*", default=[], choices=["throughput", "solve", "pong"])
    args = parser.parse_args()
    os.makedirs(RESULTS, exist_ok=True)
    report: dict = {"command": " ".join(sys.argv), "started": time.strftime("%Y-%m-%d %H:%M"),
                    "sb3_version": sb3_side.SB3_VERSION}
    lines: list[str] = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    if "throughput" not in args.skip:
        say("## CartPole-v1 training throughput (env steps/s)")
        say("| envs | drlbox A3C | SB3 A2C tanh | SB3 A2C relu | drlbox / best SB3 |")
        say("| --- | --- | --- | --- | --- |")
        rows = []
        for n_envs in (2, 8):
            ours = a3c_cartpole_throughput(n_envs, args.throughput_steps, args.port_begin)
            tanh = sb3_side.a2c_throughput(n_envs, "tanh", args.throughput_steps // 2, 0)
            relu = sb3_side.a2c_throughput(n_envs, "relu", args.throughput_steps // 2, 0)
            best = max(tanh["steps_per_second"], relu["steps_per_second"])
            rows.append({"n_envs": n_envs, "drlbox": ours, "sb3_tanh": tanh, "sb3_relu": relu})
            say(f"| {n_envs} | {ours['steps_per_second']:.0f} | {tanh['steps_per_second']:.0f} | "
                f"{relu['steps_per_second']:.0f} | {ours['steps_per_second'] / best:.2f}x |")
        report["throughput"] = rows
        say()

    if "solve" not in args.skip:
        runs: dict = {"a3c": [], "a2c_tanh": [], "a2c_relu": [], "dqn": [], "sb3_dqn": []}
        for seed in args.seeds:
            runs["a3c"].append(drlbox_time_to_solve("a3c", seed, args.a3c_cap, args.eval_every,
                                                    args.port_begin))
            runs["a2c_tanh"].append(sb3_side.a2c_time_to_solve(8, "tanh", seed, args.a3c_cap,
                                                               args.eval_every))
            runs["a2c_relu"].append(sb3_side.a2c_time_to_solve(8, "relu", seed, args.a3c_cap,
                                                               args.eval_every))
            runs["dqn"].append(drlbox_time_to_solve("dqn", seed, args.dqn_cap, args.eval_every,
                                                    args.port_begin))
            runs["sb3_dqn"].append(sb3_side.dqn_time_to_solve(seed, args.dqn_cap,
                                                              args.eval_every))
        say(f"## Time to solve CartPole-v1 (seeds {args.seeds}; * = not solved by the cap)")
        say("| run | solved | median steps | median train s | steps per seed | "
            "train s per seed |")
        say("| --- | --- | --- | --- | --- | --- |")
        for name, key in (("drlbox A3C, 1x8 envs", "a3c"), ("SB3 A2C tanh, 8 envs", "a2c_tanh"),
                          ("SB3 A2C relu, 8 envs", "a2c_relu"), ("drlbox DQN", "dqn"),
                          ("SB3 DQN (zoo)", "sb3_dqn")):
            say(solve_row(name, runs[key]))
        report["solve"] = runs
        plot_curves({"actor-critic (8 envs)": {("drlbox A3C", "tab:red"): runs["a3c"],
                                               ("SB3 A2C tanh", "tab:blue"): runs["a2c_tanh"],
                                               ("SB3 A2C relu", "tab:cyan"): runs["a2c_relu"]},
                     "DQN": {("drlbox DQN", "tab:red"): runs["dqn"],
                             ("SB3 DQN", "tab:blue"): runs["sb3_dqn"]}},
                    os.path.join(RESULTS, "solve_curves.png"))
        say()

    if "pong" not in args.skip:
        say("## Atari Pong throughput, Nature CNN, 8 envs (agent steps/s; 1 step = 4 frames)")
        ours = pong_trainer(args.pong_steps, args.port_begin).run()
        sb3 = sb3_side.a2c_pong_throughput(8, args.pong_steps // 2, 0)
        ours_rate = ours.global_steps / ours.train_seconds
        report["pong"] = {"drlbox": ours_rate, "sb3": sb3}
        say(f"| drlbox A3C | {ours_rate:.0f} |")
        say(f"| SB3 A2C | {sb3['steps_per_second']:.0f} |")
        say(f"| ratio | {ours_rate / sb3['steps_per_second']:.2f}x |")

    with open(os.path.join(RESULTS, "compare_sb3.json"), "w") as out:
        json.dump(report, out, indent=1, default=str)
    with open(os.path.join(RESULTS, "compare_sb3.md"), "w") as out:
        out.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
