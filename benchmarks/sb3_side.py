"""The Stable-Baselines3 side of `make bench`: SB3 runs, timed the same way as drlbox's.

Importable; it never imports TensorFlow (see `_import_sb3` for how SB3's optional TensorBoard
import is kept from pulling TensorFlow in). Every function returns a plain dict.

    a2c_throughput(n_envs, activation, steps, seed)            SB3 A2C, CartPole-v1: env steps/s
    a2c_time_to_solve(n_envs, activation, seed, max_steps, eval_every)
    dqn_throughput(steps, seed)                                SB3 DQN (zoo hyperparameters)
    dqn_time_to_solve(seed, max_steps, eval_every)
    a2c_pong_throughput(n_envs, steps, seed)                   SB3 A2C + Nature CNN, ALE Pong

Conventions shared by all of them:
* torch runs on the CPU with one intra-op thread (`torch.set_num_threads(1)` at import).
* "startup_seconds" is environment + model construction; it is never in a training clock.
  `IMPORT_SECONDS` is the one-off cost of importing torch and SB3 in this process.
* Throughput is env steps (transitions summed over the vectorised envs) per second of wall
  clock spent inside `model.learn()`, computed from the model's own step counter: SB3 rounds
  `learn(n)` up to whole rollouts (n_steps * n_envs for A2C, train_freq for DQN).
* Time to solve: training runs in chunks of `eval_every` env steps, rounded *up* to a whole
  number of rollouts so that every chunk ends exactly on a rollout boundary. After each chunk
  the deterministic policy plays 20 episodes on a separate, seeded CartPole-v1; the first time
  their mean return is >= 475 the run stops. Evaluation time is excluded from
  "train_seconds". The reported "steps" is therefore the end of the first *chunk* after which
  the policy passed, an upper bound on the true first passing step that is at most one chunk
  ("eval_every_effective") late: the chunk size bounds the resolution of the measurement.
  "train_seconds" is the sum of the `learn()` calls up to that point, which includes SB3's
  small per-call setup (logger, callbacks) once per chunk.
"""
from __future__ import annotations

import math
import sys
import time

_IMPORT_START = time.perf_counter()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

torch.set_num_threads(1)


def _import_sb3():
    """Import SB3 without `torch.utils.tensorboard`.

    SB3's logger does `try: from torch.utils.tensorboard import SummaryWriter except ImportError`.
    In this venv TensorBoard is installed as a TensorFlow dependency and torch's tensorboard
    module touches `tf.io.gfile`, which imports all of TensorFlow (~6 s and a few hundred MB
    here). An SB3-only install would not pay that, so the import is made to fail for the
    duration of the SB3 import; SB3 then simply runs without TensorBoard logging (which these
    benchmarks never use). If torch's tensorboard module is already loaded it is left alone.
    """
    key = "torch.utils.tensorboard"
    block = key not in sys.modules
    if block:
        sys.modules[key] = None  # makes `import torch.utils.tensorboard` raise ImportError
    try:
        import stable_baselines3
        from stable_baselines3 import A2C, DQN
        from stable_baselines3.common.env_util import make_atari_env, make_vec_env
        from stable_baselines3.common.evaluation import evaluate_policy
        from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack
    finally:
        if block and key in sys.modules and sys.modules[key] is None:
            del sys.modules[key]
    return (stable_baselines3.__version__, A2C, DQN, make_atari_env, make_vec_env,
            evaluate_policy, DummyVecEnv, VecFrameStack)


(SB3_VERSION, A2C, DQN, make_atari_env, make_vec_env, evaluate_policy, DummyVecEnv,
 VecFrameStack) = _import_sb3()

IMPORT_SECONDS = time.perf_counter() - _IMPORT_START

CARTPOLE = "CartPole-v1"
PONG = "ALE/Pong-v5"
SOLVED_RETURN = 475.0
EVAL_EPISODES = 20
EVAL_SEED_OFFSET = 10_000   # the evaluation env's seed is seed + this

# A2C on CartPole: the policy/value networks of the comparison; everything else SB3 defaults
# (n_steps=5, lr=7e-4 RMSprop, gamma=0.99, ent_coef=0, vf_coef=0.5, max_grad_norm=0.5).
A2C_NET_ARCH = [200, 100]   # SB3: separate pi and vf MLPs, each 200 -> 100
_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}

# rl-baselines3-zoo, hyperparams/dqn.yml, entry "CartPole-v1" (marked "# Almost Tuned"),
# DLR-RM/rl-baselines3-zoo at commit ce95481b041fe5314c1b2f1a53940d169b9253fc.
DQN_ZOO_CARTPOLE = {
    "n_timesteps": 50_000,
    "policy": "MlpPolicy",
    "learning_rate": 2.3e-3,
    "batch_size": 64,
    "buffer_size": 100_000,
    "learning_starts": 1000,
    "gamma": 0.99,
    "target_update_interval": 10,
    "train_freq": 256,
    "gradient_steps": 128,
    "exploration_fraction": 0.16,
    "exploration_final_eps": 0.04,
    "policy_kwargs": {"net_arch": [256, 256]},
}
# The zoo decays epsilon linearly from 1.0 over exploration_fraction * n_timesteps = 8000 steps.
DQN_EPS_DECAY_STEPS = round(DQN_ZOO_CARTPOLE["exploration_fraction"]
                            * DQN_ZOO_CARTPOLE["n_timesteps"])


def _activation(name: str) -> type[nn.Module]:
    try:
        return _ACTIVATIONS[name.lower()]
    except KeyError:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {name!r}") from None


def _round_up(n: int, multiple: int) -> int:
    return max(1, math.ceil(n / multiple)) * multiple


# ----------------------------------------------------------------------------------------------
# A2C on CartPole-v1
# ----------------------------------------------------------------------------------------------

def _make_a2c_cartpole(n_envs: int, activation: str, seed: int):
    env = make_vec_env(CARTPOLE, n_envs=n_envs, seed=seed, vec_env_cls=DummyVecEnv)
    model = A2C("MlpPolicy", env, seed=seed, device="cpu", verbose=0,
                policy_kwargs=dict(net_arch=list(A2C_NET_ARCH),
                                   activation_fn=_activation(activation)))
    return model


def a2c_throughput(n_envs: int, activation: str, steps: int, seed: int) -> dict:
    """Env steps per second of SB3 A2C on CartPole-v1 with `n_envs` envs in a DummyVecEnv.

    Times the `learn()` call only; `steps` is rounded up by SB3 to whole rollouts of
    5 * n_envs steps and the rate uses the steps actually taken.
    """
    start = time.perf_counter()
    model = _make_a2c_cartpole(n_envs, activation, seed)
    startup = time.perf_counter() - start
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    learn_seconds = time.perf_counter() - start
    done = int(model.num_timesteps)
    model.env.close()
    return {"library": "sb3", "algorithm": "a2c", "env_id": CARTPOLE, "n_envs": n_envs,
            "activation": activation, "seed": seed, "steps": done,
            "learn_seconds": learn_seconds, "steps_per_second": done / learn_seconds,
            "startup_seconds": startup}


# ----------------------------------------------------------------------------------------------
# Time to solve (shared by A2C and DQN)
# ----------------------------------------------------------------------------------------------

def _train_until_solved(model, seed: int, max_steps: int, chunk: int, startup: float,
                        extra: dict) -> dict:
    eval_env = make_vec_env(CARTPOLE, n_envs=1, seed=seed + EVAL_SEED_OFFSET,
                            vec_env_cls=DummyVecEnv)
    evals: list[tuple[int, float, float]] = []      # (steps, mean return, train seconds)
    train_seconds = 0.0
    solved = False
    first_call = True
    while model.num_timesteps < max_steps:
        start = time.perf_counter()
        model.learn(total_timesteps=chunk, reset_num_timesteps=first_call)
        train_seconds += time.perf_counter() - start
        first_call = False
        returns, _ = evaluate_policy(model, eval_env, n_eval_episodes=EVAL_EPISODES,
                                     deterministic=True, return_episode_rewards=True)
        mean_return = float(np.mean(returns))
        evals.append((int(model.num_timesteps), mean_return, train_seconds))
        if mean_return >= SOLVED_RETURN:
            solved = True
            break
    eval_env.close()
    model.env.close()
    return {"library": "sb3", "env_id": CARTPOLE, "seed": seed, **extra,
            "solved": solved, "steps": int(model.num_timesteps),
            "train_seconds": train_seconds, "startup_seconds": startup,
            "eval_every_effective": chunk, "evals": evals}


def a2c_time_to_solve(n_envs: int, activation: str, seed: int, max_steps: int = 300_000,
                      eval_every: int = 2000) -> dict:
    """Train SB3 A2C on CartPole-v1 until 20 greedy episodes average >= 475.

    `eval_every` is rounded up to a multiple of the rollout size 5 * n_envs (see the module
    docstring: the chunk size bounds how precisely "steps" is measured).
    """
    start = time.perf_counter()
    model = _make_a2c_cartpole(n_envs, activation, seed)
    startup = time.perf_counter() - start
    chunk = _round_up(eval_every, model.n_steps * n_envs)
    return _train_until_solved(model, seed, max_steps, chunk, startup,
                               {"algorithm": "a2c", "n_envs": n_envs, "activation": activation})


# ----------------------------------------------------------------------------------------------
# DQN on CartPole-v1 (rl-baselines3-zoo hyperparameters)
# ----------------------------------------------------------------------------------------------

class _EpsilonByStep:
    """Epsilon as a function of the model's env step counter instead of SB3's "progress".

    SB3 computes progress from the current `learn()` call's total, which restarts with every
    chunk; this reproduces the zoo's 50k-step run instead: linear from 1.0 to 0.04 over the
    first 8000 steps, then constant, however the training is chunked.
    """

    def __init__(self, model, start: float, end: float, decay_steps: int):
        self.model, self.start, self.end, self.decay_steps = model, start, end, decay_steps

    def __call__(self, _progress_remaining: float) -> float:
        fraction = min(1.0, self.model.num_timesteps / self.decay_steps)
        return self.start + fraction * (self.end - self.start)


def _make_dqn_cartpole(seed: int):
    hp = dict(DQN_ZOO_CARTPOLE)
    hp.pop("n_timesteps")
    policy = hp.pop("policy")
    hp["policy_kwargs"] = {"net_arch": list(hp["policy_kwargs"]["net_arch"])}
    env = make_vec_env(CARTPOLE, n_envs=1, seed=seed, vec_env_cls=DummyVecEnv)
    model = DQN(policy, env, seed=seed, device="cpu", verbose=0, **hp)
    model.exploration_schedule = _EpsilonByStep(model, model.exploration_initial_eps,
                                                model.exploration_final_eps, DQN_EPS_DECAY_STEPS)
    return model


def dqn_throughput(steps: int = 10_000, seed: int = 0) -> dict:
    """Env steps per second of SB3 DQN (zoo CartPole-v1 hyperparameters) during `learn()`.

    With these hyperparameters no gradient step happens before step 1000 (learning_starts),
    and afterwards 128 gradient steps of batch 64 are taken every 256 env steps, so the rate
    depends on `steps`; use well over 1000 (the default 10k is mostly training).
    """
    start = time.perf_counter()
    model = _make_dqn_cartpole(seed)
    startup = time.perf_counter() - start
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    learn_seconds = time.perf_counter() - start
    done = int(model.num_timesteps)
    model.env.close()
    return {"library": "sb3", "algorithm": "dqn", "env_id": CARTPOLE, "n_envs": 1,
            "seed": seed, "steps": done, "learn_seconds": learn_seconds,
            "steps_per_second": done / learn_seconds, "startup_seconds": startup}


def dqn_time_to_solve(seed: int, max_steps: int = 100_000, eval_every: int = 2000) -> dict:
    """Train SB3 DQN (zoo hyperparameters) on CartPole-v1 until 20 greedy episodes average >= 475.

    `eval_every` is rounded up to a multiple of train_freq (256): 2000 -> 2048. Epsilon decays
    over the first 8000 env steps regardless of chunking or `max_steps`.
    """
    start = time.perf_counter()
    model = _make_dqn_cartpole(seed)
    startup = time.perf_counter() - start
    chunk = _round_up(eval_every, DQN_ZOO_CARTPOLE["train_freq"])
    return _train_until_solved(model, seed, max_steps, chunk, startup, {"algorithm": "dqn",
                                                                         "n_envs": 1})


# ----------------------------------------------------------------------------------------------
# A2C on Atari Pong
# ----------------------------------------------------------------------------------------------

def a2c_pong_throughput(n_envs: int, steps: int, seed: int, *,
                        repeat_action_probability: float = 0.0) -> dict:
    """Env steps per second of SB3 A2C + CnnPolicy (Nature CNN) on Pong during `learn()`.

    'ALE/Pong-v5' with frameskip=1 under SB3's AtariWrapper (noop reset, fire reset, max-and-
    skip 4 frames, 84x84 grayscale, clipped reward), VecFrameStack(4), DummyVecEnv. One step
    is one agent decision = 4 emulator frames; "frames_per_second" is 4x the step rate.
    Sticky actions are off by default (v5's own default is 0.25), as in drlbox's Atari example.
    SB3 A2C defaults otherwise (n_steps=5).
    """
    import ale_py  # local: only this benchmark needs the emulator
    import gymnasium
    gymnasium.register_envs(ale_py)

    frame_skip = 4
    start = time.perf_counter()
    env = make_atari_env(PONG, n_envs=n_envs, seed=seed, vec_env_cls=DummyVecEnv,
                         env_kwargs=dict(frameskip=1,
                                         repeat_action_probability=repeat_action_probability),
                         wrapper_kwargs=dict(frame_skip=frame_skip))
    env = VecFrameStack(env, n_stack=4)
    model = A2C("CnnPolicy", env, seed=seed, device="cpu", verbose=0)
    startup = time.perf_counter() - start
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    learn_seconds = time.perf_counter() - start
    done = int(model.num_timesteps)
    env.close()
    return {"library": "sb3", "algorithm": "a2c", "env_id": PONG, "n_envs": n_envs,
            "seed": seed, "steps": done, "learn_seconds": learn_seconds,
            "steps_per_second": done / learn_seconds,
            "frames_per_second": frame_skip * done / learn_seconds,
            "startup_seconds": startup}


# ----------------------------------------------------------------------------------------------
# Smoke mode
# ----------------------------------------------------------------------------------------------

def _smoke() -> int:
    """One small run of each function: checks that everything works, not a measurement."""
    def show(name: str, result: dict) -> None:
        parts = []
        for key, value in result.items():
            if key == "evals":
                value = [(s, round(r, 1)) for s, r in value]
            elif isinstance(value, float):
                value = round(value, 3)
            parts.append(f"{key}={value}")
        print(f"{name}: " + " ".join(parts), flush=True)

    print(f"sb3 {SB3_VERSION}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"import {IMPORT_SECONDS:.2f}s, tensorflow imported: {'tensorflow' in sys.modules}",
          flush=True)
    show("a2c_throughput", a2c_throughput(n_envs=4, activation="tanh", steps=4000, seed=0))
    show("a2c_throughput", a2c_throughput(n_envs=4, activation="relu", steps=4000, seed=0))
    show("a2c_time_to_solve", a2c_time_to_solve(n_envs=4, activation="tanh", seed=0,
                                                max_steps=4000, eval_every=2000))
    show("dqn_throughput", dqn_throughput(steps=3000, seed=0))
    show("dqn_time_to_solve", dqn_time_to_solve(seed=0, max_steps=4096, eval_every=2000))
    show("a2c_pong_throughput", a2c_pong_throughput(n_envs=2, steps=400, seed=0))
    return 0


if __name__ == "__main__":
    sys.exit(_smoke())
