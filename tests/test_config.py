"""trainer_config / evaluator_config against the user contract: the original drlbox's
arguments and defaults, as the README's "Arguments" tables list them.

The default tables below are written from that contract by hand, not read from the library, so
a silently changed default fails here.
"""
import os

import pytest

from drlbox.config import (EvaluatorConfig, TrainerConfig, evaluator_config, trainer_config)

ALGS = ("a3c", "acer", "impala", "dqn")


def env_maker():  # never called by the config checks
    raise AssertionError("config validation must not build an env")


def feature_maker(space):  # never called by the config checks
    raise AssertionError("config validation must not build a model")


BASE = dict(env_maker=env_maker, feature_maker=feature_maker)

# name -> (documented default, a valid non-default value). None as the non-default means the
# argument needs special handling (a file or an object) and gets its own test.
SHARED = {
    "env_maker": (None, None),
    "state_to_input": (None, lambda obs: obs),
    "load_model": (None, None),
    "load_model_custom": (None, {"Thing": object}),
    "verbose": (False, True),
}
TRAINER = {
    "feature_maker": (None, None),
    "model_maker": (None, lambda env: None),
    "port_begin": (2220, 3330),
    "discount": (0.99, 0.9),
    "train_steps": (1_000_000, 500),
    "rollout_maxlen": (32, 5),
    "batch_size": (1, 4),
    "online_learning": (True, None),
    "replay_ratio": (4, 2),
    "replay_kwargs": ({}, dict(maxlen=50, minlen=10)),
    "optimizer": ("adam", None),
    "opt_clip_norm": (40.0, 5.0),
    "opt_kwargs": ({}, dict(learning_rate=3e-3)),
    "noisynet": (None, "fg"),
    "save_dir": (None, "/tmp/drlbox-save-dir-not-created"),
    "save_interval": (10_000, 100),
    "catch_signal": (False, True),
    # drlbox additions for scale (README, "Scaling the parameter server").
    "ps_shards": (1, 2),
    "max_staleness": (0, 8),
    "compress_gradients": (False, True),
}
SPECIFIC = {
    "a3c": {"a3c_entropy_weight": (1e-2, 0.0)},
    "acer": {"acer_kl_weight": (1e-1, 0.5), "acer_trunc_max": (10.0, 5.0),
             "acer_soft_update_ratio": (0.05, 0.1)},
    "impala": {"impala_trunc_rho_max": (1.0, 2.0), "impala_trunc_c_max": (1.0, 0.5)},
    "dqn": {"dqn_double": (True, False), "dqn_dueling": (False, True),
            "policy_eps_start": (1.0, 0.5), "policy_eps_end": (0.01, 0.1),
            "policy_eps_decay_steps": (1_000_000, 1000), "sync_target_interval": (1000, 10)},
}
EVALUATOR = {
    "render_timestep": (None, 0.01),
    "render_end": (False, True),
    "num_episodes": (20, 3),
    "policy_type": ("stochastic", "greedy"),
    "policy_eps": (0.0, 0.05),
}


def _table(alg):
    return {**SHARED, **TRAINER, **SPECIFIC[alg]}


DEFAULT_CASES = [(alg, name, default) for alg in ALGS
                 for name, (default, _) in _table(alg).items()]
ACCEPT_CASES = [(alg, name, value) for alg in ALGS
                for name, (_, value) in _table(alg).items() if value is not None]


@pytest.fixture
def model_file(tmp_path):
    """A file with a model's name: the config only checks that the path exists."""
    path = tmp_path / "model.keras"
    path.write_bytes(b"not really a model")
    return str(path)


def _ids(case):
    return "-".join(str(c) for c in case[:2])


# --- defaults and acceptance ------------------------------------------------------------------
@pytest.mark.parametrize("alg,name,default", DEFAULT_CASES,
                         ids=[_ids(c) for c in DEFAULT_CASES])
def test_documented_default(alg, name, default):
    cfg = trainer_config(alg, **BASE)
    if name in BASE:
        return  # given in BASE; its default (None) is checked on the dataclass below
    value = getattr(cfg, name)
    assert value == default and type(value) is type(default), (name, value)


def test_dataclass_defaults_of_makers_are_none():
    fields = TrainerConfig.__dataclass_fields__
    assert fields["env_maker"].default is None
    assert fields["feature_maker"].default is None


@pytest.mark.parametrize("alg,name,value", ACCEPT_CASES, ids=[_ids(c) for c in ACCEPT_CASES])
def test_argument_accepted_and_stored(alg, name, value):
    kwargs = dict(BASE, **{name: value})
    if name == "replay_kwargs":
        kwargs["replay_type"] = "uniform"
    cfg = trainer_config(alg, **kwargs)
    assert getattr(cfg, name) == value


@pytest.mark.parametrize("alg", ALGS)
def test_special_arguments_accepted(alg, model_file):
    cfg = trainer_config(alg, env_maker=env_maker, load_model=model_file)
    assert cfg.load_model == model_file and cfg.feature_maker is None
    cfg = trainer_config(alg, env_maker=env_maker, model_maker=lambda env: None)
    assert cfg.feature_maker is None and callable(cfg.model_maker)
    cfg = trainer_config(alg, **BASE, online_learning=False, replay_type="uniform")
    assert cfg.online_learning is False and cfg.uses_replay


@pytest.mark.parametrize("alg,expected", [("a3c", None), ("acer", "uniform"),
                                          ("impala", "uniform"), ("dqn", None)])
def test_replay_type_default(alg, expected):
    cfg = trainer_config(alg, **BASE)
    assert cfg.replay_type == expected
    assert cfg.uses_replay == (expected is not None)
    # Explicit None turns replay off for acer/impala, explicit 'uniform' turns it on for a3c.
    assert trainer_config(alg, **BASE, replay_type=None).replay_type is None
    assert trainer_config(alg, **BASE, replay_type="Uniform").replay_type == "uniform"


def test_num_parallel_defaults_to_cpu_count():
    assert trainer_config("a3c", **BASE).num_parallel == os.cpu_count()
    assert trainer_config("dqn", **BASE, num_parallel=3).num_parallel == 3


def test_replay_kwargs_merge_over_defaults():
    cfg = trainer_config("acer", **BASE)
    assert cfg.merged_replay_kwargs == dict(maxlen=1000, minlen=100)
    cfg = trainer_config("acer", **BASE, replay_kwargs=dict(minlen=5))
    assert cfg.merged_replay_kwargs == dict(maxlen=1000, minlen=5)
    cfg = trainer_config("impala", **BASE, replay_kwargs=dict(maxlen=5000))
    assert cfg.merged_replay_kwargs == dict(maxlen=5000, minlen=100)


def test_opt_kwargs_merge_over_adam_defaults():
    cfg = trainer_config("a3c", **BASE)
    assert cfg.merged_opt_kwargs == dict(learning_rate=1e-4, epsilon=1e-4)
    cfg = trainer_config("a3c", **BASE, opt_kwargs=dict(learning_rate=1e-3))
    assert cfg.merged_opt_kwargs == dict(learning_rate=1e-3, epsilon=1e-4)
    cfg = trainer_config("a3c", **BASE, opt_kwargs=dict(beta_1=0.8))
    assert cfg.merged_opt_kwargs == dict(learning_rate=1e-4, epsilon=1e-4, beta_1=0.8)


def test_user_dicts_are_not_mutated():
    replay_kwargs, opt_kwargs = dict(minlen=5), dict(learning_rate=1e-3)
    trainer_config("acer", **BASE, replay_kwargs=replay_kwargs, opt_kwargs=opt_kwargs)
    assert replay_kwargs == dict(minlen=5) and opt_kwargs == dict(learning_rate=1e-3)


# --- algorithm names --------------------------------------------------------------------------
@pytest.mark.parametrize("given,canonical", [("A3C", "a3c"), ("Acer", "acer"),
                                             ("IMPALA", "impala"), ("dQn", "dqn")])
def test_algorithm_name_case_insensitive(given, canonical):
    assert trainer_config(given, **BASE).algorithm == canonical


@pytest.mark.parametrize("bad", ["ppo", "", None, 3])
def test_unknown_algorithm_lists_all_names(bad):
    with pytest.raises(ValueError) as info:
        trainer_config(bad, **BASE)
    for name in ALGS:
        assert name in str(info.value)
    with pytest.raises(ValueError) as info:
        evaluator_config(bad, env_maker=env_maker, load_model="x.keras")
    for name in ALGS:
        assert name in str(info.value)


# --- unknown and misplaced arguments ----------------------------------------------------------
def test_unknown_argument_named():
    with pytest.raises(TypeError, match="learning_rat"):
        trainer_config("a3c", **BASE, learning_rat=1e-3)
    with pytest.raises(TypeError) as info:
        trainer_config("dqn", **BASE, foo=1, bar=2)
    assert "foo" in str(info.value) and "bar" in str(info.value)


@pytest.mark.parametrize("alg,name,value,owner", [
    ("a3c", "acer_kl_weight", 0.1, "acer"),
    ("impala", "dqn_double", True, "dqn"),
    ("dqn", "a3c_entropy_weight", 0.01, "a3c"),
    ("a3c", "impala_trunc_rho_max", 1.0, "impala"),
    ("acer", "policy_eps_start", 1.0, "dqn"),
    ("dqn", "acer_trunc_max", 10.0, "acer"),
])
def test_argument_of_other_algorithm_named_with_owner(alg, name, value, owner):
    with pytest.raises(TypeError) as info:
        trainer_config(alg, **BASE, **{name: value})
    assert name in str(info.value) and owner in str(info.value)


def test_trainer_only_argument_rejected_by_evaluator(model_file):
    with pytest.raises(TypeError, match="num_parallel"):
        evaluator_config("a3c", env_maker=env_maker, load_model=model_file, num_parallel=2)


# --- bad values -------------------------------------------------------------------------------
BAD_VALUES = [
    ("a3c", "ps_shards", 0),
    ("a3c", "max_staleness", -1),
    ("a3c", "compress_gradients", "yes"),
    ("a3c", "num_parallel", 0),
    ("a3c", "train_steps", -1),
    ("a3c", "discount", 1.5),
    ("a3c", "batch_size", 2.5),
    ("a3c", "rollout_maxlen", 0),
    ("a3c", "replay_type", "fancy"),
    ("a3c", "noisynet", "xx"),
    ("a3c", "optimizer", "sgd"),
    ("a3c", "opt_clip_norm", 0),
    ("a3c", "save_interval", 0),
    ("a3c", "port_begin", 80),
    ("a3c", "a3c_entropy_weight", -0.1),
    ("acer", "acer_soft_update_ratio", 1.5),
    ("impala", "impala_trunc_c_max", 0),
    ("dqn", "policy_eps_start", 2),
    ("dqn", "policy_eps_decay_steps", 0),
    ("dqn", "dqn_double", "yes"),
    ("dqn", "seed", -1),
]


@pytest.mark.parametrize("alg,name,value", BAD_VALUES, ids=[f"{a}-{n}" for a, n, _ in BAD_VALUES])
def test_bad_value_names_argument_and_value(alg, name, value):
    with pytest.raises(ValueError) as info:
        trainer_config(alg, **BASE, **{name: value})
    message = str(info.value)
    assert name in message
    assert repr(value) in message or str(value) in message, message


def test_replay_maxlen_below_default_minlen():
    with pytest.raises(ValueError) as info:
        trainer_config("acer", **BASE, replay_kwargs=dict(maxlen=10))
    message = str(info.value)
    assert "minlen" in message and "100" in message, message
    # With a fitting minlen the same maxlen is fine.
    cfg = trainer_config("acer", **BASE, replay_kwargs=dict(maxlen=10, minlen=2))
    assert cfg.merged_replay_kwargs == dict(maxlen=10, minlen=2)


def test_replay_kwargs_unknown_key():
    with pytest.raises(ValueError, match="bogus"):
        trainer_config("impala", **BASE, replay_kwargs=dict(bogus=1))
    with pytest.raises(ValueError, match="bogus"):
        trainer_config("a3c", **BASE, replay_type="uniform", replay_kwargs=dict(bogus=1))


@pytest.mark.parametrize("replay_kwargs,named", [
    (dict(maxlen=-1), "maxlen"), (dict(maxlen=10**8), "maxlen"), (dict(maxlen="big"), "maxlen"),
    (dict(minlen=-3), "minlen"), (dict(alpha=float("nan")), "alpha"), (dict(beta=2.0), "beta"),
    (dict(seed=3), "seed=")])
def test_bad_replay_kwargs_are_refused_without_building_a_memory(replay_kwargs, named):
    import dataclasses

    from drlbox.config import check_trainer_config

    kwargs = dict(BASE, replay_type="prioritized")
    with pytest.raises(ValueError) as info:
        trainer_config("dqn", **kwargs, replay_kwargs=replay_kwargs)
    assert named in str(info.value)
    # A config that crossed a process boundary (a cluster's Submit) is checked alike.
    config = dataclasses.replace(trainer_config("dqn", **kwargs), replay_kwargs=replay_kwargs)
    with pytest.raises(ValueError, match=named):
        check_trainer_config(config)


def test_the_largest_replay_memory_is_accepted():
    from drlbox.replay import MAX_REPLAY_LEN

    cfg = trainer_config("dqn", **BASE, replay_type="uniform",
                         replay_kwargs=dict(maxlen=MAX_REPLAY_LEN))
    assert cfg.merged_replay_kwargs["maxlen"] == MAX_REPLAY_LEN


def test_offline_learning_needs_replay():
    with pytest.raises(ValueError, match="online_learning"):
        trainer_config("a3c", **BASE, online_learning=False)
    with pytest.raises(ValueError, match="online_learning"):
        trainer_config("acer", **BASE, online_learning=False, replay_type=None)


def test_optimizer_instance():
    keras = pytest.importorskip("keras")
    rmsprop = keras.optimizers.RMSprop(learning_rate=1e-3)
    cfg = trainer_config("a3c", **BASE, optimizer=rmsprop)
    assert cfg.optimizer is rmsprop
    with pytest.raises(ValueError, match="opt_kwargs"):
        trainer_config("a3c", **BASE, optimizer=keras.optimizers.RMSprop(),
                       opt_kwargs=dict(learning_rate=1e-3))
    with pytest.raises(ValueError, match="optimizer"):
        trainer_config("a3c", **BASE, optimizer=object())


def test_optimizer_name_case_insensitive():
    assert trainer_config("a3c", **BASE, optimizer="Adam").optimizer == "Adam"


def test_missing_env_maker():
    with pytest.raises(ValueError, match="env_maker"):
        trainer_config("a3c", feature_maker=feature_maker)
    with pytest.raises(ValueError, match="env_maker"):
        trainer_config("a3c", env_maker="CartPole-v1", feature_maker=feature_maker)


def test_missing_model_source():
    with pytest.raises(ValueError) as info:
        trainer_config("a3c", env_maker=env_maker)
    message = str(info.value)
    assert "feature_maker" in message and "model_maker" in message and "load_model" in message


def test_load_model_missing_file(tmp_path):
    missing = str(tmp_path / "nope" / "model.keras")
    with pytest.raises(FileNotFoundError, match="nope"):
        trainer_config("a3c", env_maker=env_maker, load_model=missing)
    with pytest.raises(FileNotFoundError):
        evaluator_config("a3c", env_maker=env_maker, load_model=missing)


def test_load_model_h5_accepted(tmp_path):
    path = tmp_path / "model.h5"
    path.write_bytes(b"")
    assert trainer_config("dqn", env_maker=env_maker, load_model=str(path)).load_model == str(path)


def test_config_is_frozen():
    cfg = trainer_config("a3c", **BASE)
    with pytest.raises(Exception):
        cfg.discount = 0.5


# --- evaluator --------------------------------------------------------------------------------
EVAL_DEFAULTS = [(name, default) for name, (default, _) in {**SHARED, **EVALUATOR}.items()
                 if name not in ("env_maker", "load_model")]


@pytest.mark.parametrize("name,default", EVAL_DEFAULTS, ids=[n for n, _ in EVAL_DEFAULTS])
def test_evaluator_default(name, default, model_file):
    cfg = evaluator_config("a3c", env_maker=env_maker, load_model=model_file)
    value = getattr(cfg, name)
    assert value == default and type(value) is type(default), (name, value)


EVAL_VALUES = [(name, value) for name, (_, value) in {**SHARED, **EVALUATOR}.items()
               if value is not None]


@pytest.mark.parametrize("name,value", EVAL_VALUES, ids=[n for n, _ in EVAL_VALUES])
def test_evaluator_argument_accepted(name, value, model_file):
    for alg in ("A3C", "acer", "impala", "dqn"):
        cfg = evaluator_config(alg, env_maker=env_maker, load_model=model_file, **{name: value})
        assert getattr(cfg, name) == value and cfg.algorithm == alg.lower()
        assert isinstance(cfg, EvaluatorConfig)


@pytest.mark.parametrize("name,value", [("policy_type", "bogus"), ("num_episodes", 0),
                                        ("policy_eps", 1.5), ("render_timestep", -1.0)])
def test_evaluator_bad_value(name, value, model_file):
    with pytest.raises(ValueError) as info:
        evaluator_config("a3c", env_maker=env_maker, load_model=model_file, **{name: value})
    message = str(info.value)
    assert name in message and (repr(value) in message or str(value) in message), message


def test_evaluator_needs_load_model():
    with pytest.raises(ValueError, match="load_model"):
        evaluator_config("a3c", env_maker=env_maker)


def test_evaluator_needs_env_maker(model_file):
    with pytest.raises(ValueError, match="env_maker"):
        evaluator_config("dqn", load_model=model_file)


def test_numpy_scalars_accepted():
    np = pytest.importorskip("numpy")
    cfg = trainer_config("a3c", **BASE, train_steps=np.int64(1000), discount=np.float32(0.9),
                         batch_size=np.int32(2))
    assert cfg.train_steps == 1000 and cfg.batch_size == 2


def test_a_config_unpickled_without_some_fields_is_refused_by_name():
    from drlbox.config import check_trainer_config

    config = trainer_config("a3c", **BASE)
    broken = object.__new__(TrainerConfig)
    object.__setattr__(broken, "__dict__", {k: v for k, v in vars(config).items()
                                            if k not in ("algorithm", "discount")})
    with pytest.raises(TypeError, match="algorithm, discount"):
        check_trainer_config(broken)
