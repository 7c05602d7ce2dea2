"""Trainer and evaluator settings: every user-facing argument, its default and its check.

`trainer_config(algorithm, **kwargs)` is the front door shared by `make_trainer` and the SDK: an
unknown argument, an argument of another algorithm, or a bad value raises with its name.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

ALGORITHMS = ("a3c", "acer", "impala", "dqn")
REPLAY_TYPES = (None, "uniform", "prioritized")
NOISYNET_TYPES = (None, "ig", "fg")
POLICY_TYPES = ("stochastic", "greedy")
ADAM_DEFAULTS = {"learning_rate": 1e-4, "epsilon": 1e-4}
REPLAY_DEFAULTS = {"maxlen": 1000, "minlen": 100}

# Which algorithm-specific arguments belong to which algorithm. ACER and IMPALA are actor-critic
# methods like A3C and take its entropy weight too, as in the original drlbox.
ALGORITHM_ARGS = {
    "a3c": ("a3c_entropy_weight",),
    "acer": ("a3c_entropy_weight", "acer_kl_weight", "acer_trunc_max", "acer_soft_update_ratio"),
    "impala": ("a3c_entropy_weight", "impala_trunc_rho_max", "impala_trunc_c_max"),
    "dqn": ("dqn_double", "dqn_dueling", "policy_eps_start", "policy_eps_end",
            "policy_eps_decay_steps", "sync_target_interval"),
}


@dataclass(frozen=True)
class SharedConfig:
    """The arguments trainer and evaluator share."""

    algorithm: str
    env_maker: Callable | None = None
    state_to_input: Callable | None = None
    load_model: str | None = None
    load_model_custom: dict | None = None
    verbose: bool = False


@dataclass(frozen=True)
class TrainerConfig(SharedConfig):
    """Every trainer argument (see README, "Arguments"); build it with `trainer_config`."""

    feature_maker: Callable | None = None
    model_maker: Callable | None = None
    num_parallel: int = field(default_factory=lambda: os.cpu_count() or 1)
    port_begin: int = 2220
    discount: float = 0.99
    train_steps: int = 1_000_000
    rollout_maxlen: int = 32
    batch_size: int = 1
    online_learning: bool = True
    replay_type: str | None = None
    replay_ratio: float = 4
    replay_kwargs: dict = field(default_factory=dict)
    optimizer: Any = "adam"
    opt_clip_norm: float = 40.0
    opt_kwargs: dict = field(default_factory=dict)
    noisynet: str | None = None
    save_dir: str | None = None
    save_interval: int = 10_000
    catch_signal: bool = False
    a3c_entropy_weight: float = 1e-2
    acer_kl_weight: float = 1e-1
    acer_trunc_max: float = 10.0
    acer_soft_update_ratio: float = 0.05
    impala_trunc_rho_max: float = 1.0
    impala_trunc_c_max: float = 1.0
    dqn_double: bool = True
    dqn_dueling: bool = False
    policy_eps_start: float = 1.0
    policy_eps_end: float = 0.01
    policy_eps_decay_steps: int = 1_000_000
    sync_target_interval: int = 1000
    # drlbox additions, not in the original API.
    seed: int | None = None
    eval_interval: int | None = None
    eval_episodes: int = 20
    target_return: float | None = None
    ps_shards: int = 1
    max_staleness: int = 0
    compress_gradients: bool = False

    @property
    def uses_replay(self) -> bool:
        """Whether rollouts go through a replay server."""
        return self.replay_type is not None

    @property
    def merged_replay_kwargs(self) -> dict:
        """replay_kwargs over the defaults."""
        return {**REPLAY_DEFAULTS, **self.replay_kwargs}

    @property
    def merged_opt_kwargs(self) -> dict:
        """opt_kwargs over Adam's defaults."""
        return {**ADAM_DEFAULTS, **self.opt_kwargs}

    def plain_settings(self) -> dict:
        """Every setting that is not a callable or an object, for JSON and logs."""
        skip = {"env_maker", "state_to_input", "feature_maker", "model_maker", "optimizer",
                "load_model_custom"}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in skip}


@dataclass(frozen=True)
class EvaluatorConfig(SharedConfig):
    """Every evaluator argument; build it with `evaluator_config`."""

    render_timestep: float | None = None
    render_end: bool = False
    num_episodes: int = 20
    policy_type: str = "stochastic"
    policy_eps: float = 0.0
    seed: int | None = None


def check_algorithm(algorithm: Any) -> str:
    """The algorithm's canonical (lower-case) name, or ValueError listing the valid ones."""
    name = algorithm.lower() if isinstance(algorithm, str) else algorithm
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
    return name


def _reject_unknown(kwargs: dict, allowed: set, what: str) -> None:
    unknown = sorted(set(kwargs) - allowed)
    if not unknown:
        return
    hints = []
    for name in unknown:
        owners = [alg for alg, names in ALGORITHM_ARGS.items() if name in names]
        hints.append(f"{name!r} (an argument of {'/'.join(owners)})" if owners else repr(name))
    raise TypeError(f"unknown argument{'s' if len(unknown) > 1 else ''} for {what}: "
                    f"{', '.join(hints)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_number(value: Any) -> bool:
    return (isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
            and math.isfinite(value))


def _plain_numbers(kwargs: dict) -> dict:
    """NumPy scalars become Python ints/floats, so configs pickle and print plainly."""
    out = {}
    for key, value in kwargs.items():
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            value = int(value)
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            value = float(value)
        out[key] = value
    return out


def _need(ok: bool, name: str, value: Any, rule: str) -> None:
    if not ok:
        raise ValueError(f"{name} must be {rule}, got {value!r}")


def _check_common(cfg: SharedConfig) -> None:
    _need(callable(cfg.env_maker), "env_maker", cfg.env_maker,
          "a callable returning a Gymnasium environment")
    _need(cfg.state_to_input is None or callable(cfg.state_to_input), "state_to_input",
          cfg.state_to_input, "None or a callable mapping an observation to the model's input")
    if cfg.load_model is not None:
        _need(isinstance(cfg.load_model, (str, os.PathLike)), "load_model", cfg.load_model,
              "a path to a .keras or .h5 file")
        path = os.fspath(cfg.load_model)
        _need(path.endswith((".keras", ".h5")), "load_model", path,
              "a path ending in .keras or .h5")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"load_model: no such file {path!r}")
    _need(cfg.load_model_custom is None or isinstance(cfg.load_model_custom, dict),
          "load_model_custom", cfg.load_model_custom, "None or a dict of custom objects")
    _need(isinstance(cfg.verbose, bool), "verbose", cfg.verbose, "True or False")


def _check_trainer(cfg: TrainerConfig) -> None:
    _check_common(cfg)
    if cfg.model_maker is None and cfg.feature_maker is None and cfg.load_model is None:
        raise ValueError("give a feature_maker (observation_space -> (input, feature)), a "
                         "model_maker (env -> keras.Model) or a load_model path")
    for name in ("feature_maker", "model_maker"):
        value = getattr(cfg, name)
        _need(value is None or callable(value), name, value, "None or a callable")
    for name, low in (("num_parallel", 1), ("train_steps", 1), ("rollout_maxlen", 1),
                      ("batch_size", 1), ("save_interval", 1), ("policy_eps_decay_steps", 1),
                      ("sync_target_interval", 1), ("eval_episodes", 1), ("ps_shards", 1),
                      ("max_staleness", 0)):
        value = getattr(cfg, name)
        _need(_is_int(value) and value >= low, name, value, f"an integer >= {low}")
    _need(_is_int(cfg.port_begin) and 1024 <= cfg.port_begin <= 65000, "port_begin",
          cfg.port_begin, "an integer port between 1024 and 65000")
    _need(_is_number(cfg.discount) and 0.0 <= cfg.discount <= 1.0, "discount", cfg.discount,
          "a number in [0, 1]")
    for name in ("online_learning", "catch_signal", "dqn_double", "dqn_dueling",
                 "compress_gradients"):
        _need(isinstance(getattr(cfg, name), bool), name, getattr(cfg, name), "True or False")
    _need(cfg.replay_type in REPLAY_TYPES, "replay_type", cfg.replay_type,
          f"one of {REPLAY_TYPES}")
    _need(_is_number(cfg.replay_ratio) and cfg.replay_ratio >= 0, "replay_ratio",
          cfg.replay_ratio, "a number >= 0 (the Poisson mean of replayed batches)")
    _need(isinstance(cfg.replay_kwargs, dict), "replay_kwargs", cfg.replay_kwargs, "a dict")
    _check_replay_kwargs(cfg)
    if not cfg.online_learning and not cfg.uses_replay:
        raise ValueError("online_learning=False needs a replay_type, or nothing would be learned")
    _need(_is_number(cfg.opt_clip_norm) and cfg.opt_clip_norm > 0, "opt_clip_norm",
          cfg.opt_clip_norm, "a number > 0")
    _need(isinstance(cfg.opt_kwargs, dict), "opt_kwargs", cfg.opt_kwargs, "a dict")
    _check_optimizer(cfg.optimizer, cfg.opt_kwargs)
    _need(cfg.noisynet in NOISYNET_TYPES, "noisynet", cfg.noisynet, f"one of {NOISYNET_TYPES}")
    _need(cfg.save_dir is None or isinstance(cfg.save_dir, (str, os.PathLike)), "save_dir",
          cfg.save_dir, "None or a directory path")
    for name in ("a3c_entropy_weight", "acer_kl_weight"):
        _need(_is_number(getattr(cfg, name)) and getattr(cfg, name) >= 0, name,
              getattr(cfg, name), "a number >= 0")
    for name in ("acer_trunc_max", "impala_trunc_rho_max", "impala_trunc_c_max"):
        _need(_is_number(getattr(cfg, name)) and getattr(cfg, name) > 0, name,
              getattr(cfg, name), "a number > 0")
    for name in ("acer_soft_update_ratio", "policy_eps_start", "policy_eps_end"):
        _need(_is_number(getattr(cfg, name)) and 0 <= getattr(cfg, name) <= 1, name,
              getattr(cfg, name), "a number in [0, 1]")
    _need(cfg.seed is None or (_is_int(cfg.seed) and cfg.seed >= 0), "seed", cfg.seed,
          "None or an integer >= 0")
    _need(cfg.eval_interval is None or (_is_int(cfg.eval_interval) and cfg.eval_interval >= 1),
          "eval_interval", cfg.eval_interval, "None or an integer >= 1 (env steps)")
    _need(cfg.target_return is None or _is_number(cfg.target_return), "target_return",
          cfg.target_return, "None or a number")
    if cfg.target_return is not None and cfg.eval_interval is None:
        raise ValueError("target_return needs eval_interval: it is checked by evaluations")


def _check_replay_kwargs(cfg: TrainerConfig) -> None:
    """The replay's own rules on replay_kwargs, without building it (a server checks a
    submitted job with this before it allocates anything)."""
    if not cfg.uses_replay:
        return
    from drlbox.replay import check_replay

    if "seed" in cfg.replay_kwargs:
        raise ValueError(f"replay_kwargs={cfg.replay_kwargs!r}: the replay memory is seeded "
                         f"from the job's seed; set seed= instead of replay_kwargs['seed']")
    try:
        check_replay(cfg.replay_type, seed=cfg.seed, **cfg.merged_replay_kwargs)
    except ValueError as err:
        raise ValueError(f"replay_kwargs={cfg.replay_kwargs!r} (merged over the defaults "
                         f"{REPLAY_DEFAULTS}): {err}") from None


def _check_optimizer(optimizer: Any, opt_kwargs: dict) -> None:
    if isinstance(optimizer, str):
        _need(optimizer.lower() == "adam", "optimizer", optimizer,
              "'adam' or a keras.optimizers.Optimizer instance")
        return
    import keras  # only when the user passed an object: the SDK imports this module without TF

    _need(isinstance(optimizer, keras.optimizers.Optimizer), "optimizer", optimizer,
          "'adam' or a keras.optimizers.Optimizer instance")
    if opt_kwargs:
        raise ValueError(f"opt_kwargs {opt_kwargs!r} only apply to optimizer='adam'; set them on "
                         f"the optimizer instance you pass instead")


def trainer_config(algorithm: str, **kwargs: Any) -> TrainerConfig:
    """Validated TrainerConfig for `algorithm` from the user's keyword arguments."""
    name = check_algorithm(algorithm)
    specific = {n for names in ALGORITHM_ARGS.values() for n in names}
    shared = {f.name for f in dataclasses.fields(TrainerConfig)} - specific - {"algorithm"}
    _reject_unknown(kwargs, shared | set(ALGORITHM_ARGS[name]), f"make_trainer({name!r})")
    if "replay_type" not in kwargs and name in ("acer", "impala"):
        kwargs["replay_type"] = "uniform"
    if isinstance(kwargs.get("replay_type"), str):
        kwargs["replay_type"] = kwargs["replay_type"].lower()
    cfg = TrainerConfig(algorithm=name, **_plain_numbers(kwargs))
    _check_trainer(cfg)
    return cfg


def evaluator_config(algorithm: str, **kwargs: Any) -> EvaluatorConfig:
    """Validated EvaluatorConfig for `algorithm` from the user's keyword arguments."""
    name = check_algorithm(algorithm)
    allowed = {f.name for f in dataclasses.fields(EvaluatorConfig)} - {"algorithm"}
    _reject_unknown(kwargs, allowed, f"make_evaluator({name!r})")
    cfg = EvaluatorConfig(algorithm=name, **_plain_numbers(kwargs))
    _check_common(cfg)
    if cfg.load_model is None:
        raise ValueError("make_evaluator needs load_model: the path of a saved .keras/.h5 model")
    _need(cfg.render_timestep is None or (_is_number(cfg.render_timestep)
                                          and cfg.render_timestep >= 0),
          "render_timestep", cfg.render_timestep, "None or a number of seconds >= 0")
    _need(isinstance(cfg.render_end, bool), "render_end", cfg.render_end, "True or False")
    _need(_is_int(cfg.num_episodes) and cfg.num_episodes >= 1, "num_episodes", cfg.num_episodes,
          "an integer >= 1")
    _need(cfg.policy_type in POLICY_TYPES, "policy_type", cfg.policy_type,
          f"one of {POLICY_TYPES}")
    _need(_is_number(cfg.policy_eps) and 0 <= cfg.policy_eps <= 1, "policy_eps", cfg.policy_eps,
          "a number in [0, 1]")
    _need(cfg.seed is None or (_is_int(cfg.seed) and cfg.seed >= 0), "seed", cfg.seed,
          "None or an integer >= 0")
    return cfg


def check_trainer_config(cfg: Any) -> None:
    """Re-check a TrainerConfig that crossed a process boundary (e.g. submitted to a cluster)."""
    if not isinstance(cfg, TrainerConfig):
        raise TypeError(f"expected a drlbox TrainerConfig, got {type(cfg).__name__}")
    # Unpickled from untrusted bytes, it may lack fields that its class declares.
    missing = [f.name for f in dataclasses.fields(TrainerConfig) if f.name not in vars(cfg)]
    if missing:
        raise TypeError(f"the TrainerConfig lacks the field(s) {', '.join(missing)}; was it "
                        f"made by another drlbox version?")
    check_algorithm(cfg.algorithm)
    _check_trainer(cfg)
