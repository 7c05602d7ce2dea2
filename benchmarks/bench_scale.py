"""How many workers can the parameter server feed? The real role against simulated workers.

    python benchmarks/bench_scale.py [--models mlp,cnn] [--workers 1,2,4,8,16,32]
                                     [--seconds 6] [--rate PUSHES_PER_S] [--quick]

The parameter server runs as the real role process(es), started the way a local run starts
them. Each simulated worker is a process that does no env or TensorFlow work: it pulls the
weights once, then pushes gradient arrays of the model's real size through the same client a
rollout worker uses and takes the weights back exactly as a worker does, flat out or at
`--rate` pushes per second. Each push reports 256 env steps (one batch of 8 lists x 32 steps).

Per configuration and worker count it prints updates/s absorbed, the env steps/s they stand
for, push latency p50/p99, server CPU-seconds per update (summed over the server processes, and
the busiest one's alone: the figures that hold best on a busy machine), the weights' staleness
at push (updates by others between the worker's pull and its push), and how often the weights
came back with the reply. Results go to benchmarks/results/bench_scale.{md,json}
and, with matplotlib, bench_scale.png.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from dataclasses import dataclass

import gymnasium
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
STEPS_PER_PUSH = 256
WARMUP_SECONDS = 2.0


# --- the job the parameter server runs -----------------------------------------------------
class ImageEnv(gymnasium.Env):
    """A stand-in env with Atari's observation and action spaces; only its spaces are used."""

    observation_space = gymnasium.spaces.Box(0, 255, (84, 84, 4), np.uint8)
    action_space = gymnasium.spaces.Discrete(6)

    def reset(self, *, seed=None, options=None):
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


def cartpole():
    """CartPole-v1 (the MLP configuration's spaces)."""
    return gymnasium.make("CartPole-v1")


def mlp_features(space):
    """The CartPole examples' 200/100 ReLU trunk (21k parameters with A3C's heads)."""
    import keras

    inp = keras.Input(space.shape)
    x = keras.layers.Dense(200, activation="relu")(inp)
    return inp, keras.layers.Dense(100, activation="relu")(x)


def nature_cnn(env):
    """The Nature CNN with A3C's (logits, value) heads (1.69M parameters, 6.7 MB)."""
    sys.path.insert(0, HERE)
    from drlbox_side import nature_cnn_a3c

    return nature_cnn_a3c(env)


MODELS = {
    "mlp": dict(env_maker=cartpole, feature_maker=mlp_features),
    "cnn": dict(env_maker=ImageEnv, model_maker=nature_cnn),
}


def job_config(model: str, extra: dict):
    """An A3C job that never ends on its own and saves nothing."""
    from drlbox.config import trainer_config

    return trainer_config("a3c", train_steps=10**15, **MODELS[model], **extra)


# --- the parameter server role(s) ------------------------------------------------------------
def start_servers(config, port_begin: int):
    """Start the parameter-server role process(es) as a local run does (the coordinator and
    ps_shards - 1 shard processes); returns the run, the server pids and the address."""
    from drlbox.launch.local import LocalRun
    from drlbox.rpc.parameter_client import ParameterClient

    from drlbox.rpc.job_control import JobControlClient

    run = LocalRun(config)
    address = run.start_parameter_server(port_begin)
    run.submit()
    jobs = JobControlClient(address, run_security(run))
    while jobs.status(run.job_id, timeout=30.0).state == "queued":    # being built
        time.sleep(0.1)
    jobs.close()
    client = ParameterClient(address, run.job_id, timeout=120.0, security=run_security(run))
    client.get_weights(-1)          # waits until every shard serves
    client.close()
    return run, [p.pid for p in run.procs.values()], address


def run_security(run):
    """The local run's private token, which its roles demand."""
    from drlbox.rpc.security import Security

    return Security(token=run.token)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- simulated workers --------------------------------------------------------------------------
def simulated_worker(address: str, job_id: str, token: str, index: int, rate: float | None,
                     start_at: float, stop_at: float, shards: int, compress: bool,
                     out: "mp.Queue") -> None:
    """Push real-size gradients and take weights back as a rollout worker does; no TF here."""
    from drlbox.launch.processes import keep_freed_memory
    from drlbox.roles.interfaces import WorkerReport
    from drlbox.rpc.parameter_client import ParameterClient
    from drlbox.rpc.security import Security

    keep_freed_memory()                 # as a worker process does
    params = ParameterClient(address, job_id, timeout=60.0, security=Security(token=token))
    params.compress_gradients = compress      # what join_job sets from the job
    first = params.get_weights(-1, -1)
    rng = np.random.default_rng(index)
    gradient = (rng.standard_normal(first.weights.shape) * 1e-4).astype(np.float32)
    version, aux_version = first.version, first.aux_version
    records = []
    while time.time() < start_at - WARMUP_SECONDS:
        time.sleep(0.01)
    next_push = time.perf_counter()
    while time.time() < stop_at:
        if rate:
            delay = next_push - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            next_push = max(next_push + 1.0 / rate, time.perf_counter() - 1.0 / rate)
        sent = time.time()
        t0 = time.perf_counter()
        result, update = params.push_and_pull(gradient, version,
                                              WorkerReport(index, STEPS_PER_PUSH),
                                              version, aux_version)
        latency = time.perf_counter() - t0
        records.append((sent, latency, (result.version - version) / shards - 1,
                        update is not None))
        if update is not None:
            version, aux_version = update.version, update.aux_version
    params.close()
    out.put(records)


@dataclass
class Point:
    """One measurement: a configuration at one worker count."""

    config: str
    workers: int
    updates_per_s: float
    env_steps_per_s: float
    p50_ms: float
    p99_ms: float
    cpu_ms_per_update: float
    shard_cpu_ms_per_update: float       # the busiest server process alone
    staleness_mean: float
    staleness_p99: float
    pulls_per_push: float
    cpu_cores: int


def measure(address: str, run, pids: list[int], workers: int, seconds: float,
            rate: float | None, config) -> Point:
    """Run `workers` simulated workers; measure over the window after the warm-up."""
    from drlbox.rpc.parameter_client import ParameterClient

    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    spawn_allowance = 2.0 + 0.15 * workers
    start_at = time.time() + spawn_allowance + WARMUP_SECONDS
    stop_at = start_at + seconds
    procs = [ctx.Process(target=simulated_worker, daemon=True,
                         args=(address, run.job_id, run.token, i, rate, start_at, stop_at,
                               config.ps_shards, config.compress_gradients, out))
             for i in range(workers)]
    for proc in procs:
        proc.start()
    status = ParameterClient(address, run.job_id, timeout=30.0, security=run_security(run))
    time.sleep(max(0.0, start_at - time.time()))
    updates0, cpu0 = status.status().updates, [cpu_seconds(p) for p in pids]
    t0 = time.time()
    time.sleep(max(0.0, stop_at - time.time()))
    updates1, cpu1 = status.status().updates, [cpu_seconds(p) for p in pids]
    elapsed = time.time() - t0
    status.close()
    records = [r for _ in procs for r in out.get(timeout=120)]
    for proc in procs:
        proc.join(timeout=30)
    window = [r for r in records if start_at <= r[0] < stop_at]
    latencies = np.array([r[1] for r in window]) * 1e3
    staleness = np.array([r[2] for r in window], np.float64)
    updates = updates1 - updates0
    per_s = updates / elapsed
    used = [after - before for before, after in zip(cpu0, cpu1)]
    return Point("", workers, per_s, per_s * STEPS_PER_PUSH,
                 float(np.percentile(latencies, 50)), float(np.percentile(latencies, 99)),
                 1e3 * sum(used) / max(updates, 1), 1e3 * max(used) / max(updates, 1),
                 float(staleness.mean()),
                 float(np.percentile(staleness, 99)),
                 float(np.mean([r[3] for r in window])), os.cpu_count() or 1)


def run_config(name: str, model: str, extra: dict, workers: list[int], seconds: float,
               rate: float | None, port_begin: int) -> list[Point]:
    """Start the server(s) for one configuration and measure each worker count."""
    config = job_config(model, extra)
    run, pids, address = start_servers(config, port_begin)
    points = []
    try:
        for n in workers:
            point = measure(address, run, pids, n, seconds, rate, config)
            point.config = name
            points.append(point)
            print(format_row(point), flush=True)
    finally:
        run.close()
    return points


# --- reporting -------------------------------------------------------------------------------
HEADER = ("| configuration | workers | updates/s | env steps/s | push p50 ms | push p99 ms | "
          "server CPU ms/update | busiest shard's | staleness mean | staleness p99 | "
          "pulls/push |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")


def format_row(p: Point) -> str:
    """One table row."""
    return (f"| {p.config} | {p.workers} | {p.updates_per_s:.0f} | {p.env_steps_per_s:.0f} | "
            f"{p.p50_ms:.1f} | {p.p99_ms:.1f} | {p.cpu_ms_per_update:.2f} | "
            f"{p.shard_cpu_ms_per_update:.2f} | "
            f"{p.staleness_mean:.1f} | {p.staleness_p99:.0f} | {p.pulls_per_push:.2f} |")


def saturation(points: list[Point]) -> str:
    """Where adding workers stopped adding updates/s (< 10% more from doubling them)."""
    for before, after in zip(points, points[1:]):
        if after.updates_per_s < 1.1 * before.updates_per_s:
            return (f"saturates at {before.workers} workers ({before.updates_per_s:.0f} "
                    f"updates/s; {after.workers} give {after.updates_per_s:.0f})")
    return f"still growing at {points[-1].workers} workers"


def plot(points: list[Point], path: str, before: list[Point] = ()) -> bool:
    """updates/s against workers, one line per configuration (needs matplotlib); a `before`
    run's configurations dashed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(9, 4.5))
    names = list(dict.fromkeys(p.config for p in list(points) + list(before)))
    colors = {name: f"C{i}" for i, name in enumerate(names)}
    for run, style, suffix in ((points, "-", ""), (before, "--", " (before)")):
        for name in dict.fromkeys(p.config for p in run):
            mine = [p for p in run if p.config == name]
            ax.plot([p.workers for p in mine], [p.updates_per_s for p in mine], marker="o",
                    linestyle=style, color=colors[name], label=name + suffix)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("simulated workers")
    ax.set_ylabel("updates/s absorbed")
    ax.set_title(f"parameter server throughput ({os.cpu_count()} cores)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


OPTIONS = {"shards": "ps_shards", "staleness": "max_staleness", "half": "compress_gradients"}
# The defaults, then bounded staleness, bfloat16 pushes, and two shards.
DEFAULT_CONFIGS = ["mlp", "cnn", "cnn:staleness=16", "cnn:staleness=16:half=1",
                   "cnn:shards=2:staleness=16:half=1"]


def load_points(path: str) -> list[Point]:
    """Points written by an earlier run (fields it lacks are NaN)."""
    with open(path) as f:
        rows = json.load(f)
    names = [field.name for field in dataclasses.fields(Point)]
    return [Point(**{n: row.get(n, float("nan")) for n in names}) for row in rows]


def parse_configs(text: str) -> list[tuple[str, str, dict]]:
    """'mlp,cnn,cnn:shards=2:staleness=8:half=1' -> [(name, model, extra job settings)]."""
    configs = []
    for item in text.split(","):
        model, *options = item.split(":")
        if model not in MODELS:
            raise SystemExit(f"unknown model {model!r}; choose from {sorted(MODELS)}")
        extra = {}
        for option in options:
            key, _, value = option.partition("=")
            if key not in OPTIONS:
                raise SystemExit(f"unknown option {key!r} in {item!r}; use {sorted(OPTIONS)}")
            extra[OPTIONS[key]] = bool(int(value)) if key == "half" else int(value)
        configs.append((item, model, extra))
    return configs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS),
                        help="MODEL[:shards=K][:staleness=S][:half=1], comma-separated; "
                             "models: mlp, cnn; half=1 pushes float16 gradients")
    parser.add_argument("--workers", default="1,2,4,8,16,32")
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per point")
    parser.add_argument("--rate", type=float, default=None,
                        help="pushes/s per simulated worker (default: flat out)")
    parser.add_argument("--quick", action="store_true", help="1, 2 and 4 workers, 3 s each")
    parser.add_argument("--port-begin", type=int, default=4620)
    parser.add_argument("--out", default=os.path.join(RESULTS, "bench_scale"))
    parser.add_argument("--before", default=os.path.join(RESULTS, "bench_scale_before.json"),
                        help="an earlier run's .json to draw dashed in the plot")
    parser.add_argument("--replot", action="store_true",
                        help="only draw the plot again from OUT.json (and --before)")
    args = parser.parse_args()
    before = load_points(args.before) if os.path.exists(args.before) else []
    if args.replot:
        plot(load_points(args.out + ".json"), args.out + ".png", before)
        return 0
    workers = [1, 2, 4] if args.quick else [int(n) for n in args.workers.split(",")]
    seconds = 3.0 if args.quick else args.seconds
    print(f"bench-scale: {os.cpu_count()} cores, {platform.python_version()}, "
          f"{'flat out' if not args.rate else f'{args.rate} pushes/s per worker'}, "
          f"{seconds:.0f} s per point\n{HEADER}", flush=True)
    points: list[Point] = []
    for i, (name, model, extra) in enumerate(parse_configs(args.configs)):
        points += run_config(name, model, extra, workers, seconds, args.rate,
                             args.port_begin + 10 * i)
    print()
    for name in dict.fromkeys(p.config for p in points):
        print(f"{name}: {saturation([p for p in points if p.config == name])}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump([p.__dict__ for p in points], f, indent=1)
    with open(args.out + ".md", "w") as f:
        f.write(HEADER + "\n" + "\n".join(format_row(p) for p in points) + "\n")
    if plot(points, args.out + ".png", before):
        print(f"plot: {args.out}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
