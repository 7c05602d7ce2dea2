"""What the role processes share: logging, quiet TensorFlow, thread limits, and the builders
of a job's parameter server, evaluator and replay memory (drlbox.launch.entrypoints runs them).

Nothing here imports TensorFlow at module level: the replay process must stay free of it, and
every TF-using role first caps TF's thread pools for small machines.
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
import time
from typing import Any, Callable

log = logging.getLogger(__name__)
# Exchange sessions hold a server thread each: room for many workers, shards and callers.
PS_THREADS = 256
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3      # glibc's mallopt parameters


# Between INFO and WARNING: what a cluster role says of its life (listening, joined a job).
# A cluster's logs show it; a local run's roles keep it out of the progress bar.
NOTICE = logging.INFO + 5
logging.addLevelName(NOTICE, "NOTICE")


def setup_logging(role: str, verbose: bool, notices: bool = False) -> None:
    """One log line format for every role process, local or in a cluster: INFO and up when
    verbose, else warnings (and NOTICE lines with `notices`)."""
    level = logging.INFO if verbose else NOTICE if notices else logging.WARNING
    logging.basicConfig(level=level, stream=sys.stderr,
                        format=f"%(asctime)s drlbox {role} %(levelname)s %(message)s")


def keep_freed_memory() -> None:
    """Have glibc keep freed multi-megabyte buffers for reuse instead of unmapping them.

    Every exchange moves whole weight slices (6.7 MB for the Nature CNN). By default glibc
    maps such buffers afresh and unmaps them when freed, and the ~1,700 page faults of filling
    a fresh one cost the parameter server ~0.7 ms of its ~6 ms per update. Only glibc has
    mallopt; elsewhere this does nothing.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)     # glibc's largest allowed value
        libc.mallopt(M_TRIM_THRESHOLD, 256 << 20)
    except (OSError, AttributeError):
        pass


TOKEN_VARIABLE = "DRLBOX_TOKEN"


def private_security() -> Any:
    """The run's private token, which the launcher hands its roles in their environment (other
    users can read a process's command line, not its environment)."""
    from drlbox.rpc.security import Security

    return Security(token=os.environ.get(TOKEN_VARIABLE) or None)


TF_LOGS_VARIABLE = "DRLBOX_TF_LOGS"


def env_flag(name: str, env: Any = os.environ) -> bool:
    """Whether a DRLBOX_* switch is on (set, and not empty or 0)."""
    return env.get(name, "0") not in ("", "0")


def quiet_tensorflow_logs(env: Any = os.environ) -> None:
    """Keep TensorFlow's C++ log lines (e.g. a CUDA probe's error on a machine without a GPU,
    which reads like a failure) out of the user's terminal, unless DRLBOX_TF_LOGS=1 asks for
    them or TF_CPP_MIN_LOG_LEVEL is set already. Only takes effect before TensorFlow is
    imported; errors still raise as exceptions."""
    if not env_flag(TF_LOGS_VARIABLE, env):
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextlib.contextmanager
def quiet_stderr():
    """Mute file descriptor 2 (C++ libraries write there directly) unless DRLBOX_TF_LOGS=1.

    TensorFlow's start-up lines (oneDNN, CUDA probing) ignore TF_CPP_MIN_LOG_LEVEL: they are
    written while TensorFlow loads, so the load itself is muted.
    """
    if env_flag(TF_LOGS_VARIABLE):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow and start its runtime without its C++ log lines (see quiet_stderr),
    for drlbox code that runs in the user's own process (e.g. make_evaluator)."""
    if "tensorflow" in sys.modules:
        return              # the user's own import: their terminal, their settings
    quiet_tensorflow_logs()
    with quiet_stderr():
        import tensorflow as tf

        tf.constant(0.0) + 1.0


def child_setup(verbose: bool, role: str) -> None:
    """Common start of every role process: quiet logs, leave Ctrl-C to the launcher."""
    quiet_tensorflow_logs()
    keep_freed_memory()
    setup_logging(role, verbose)
    # The launcher owns Ctrl-C and stops the roles in order; a child that took the SIGINT
    # sent to the whole terminal's process group would die mid-write instead.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _watch_parent()


def _watch_parent() -> None:
    """Exit when the launcher is gone (e.g. killed), so no role is ever orphaned."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def limit_tf_threads() -> None:
    """Import TF with one thread per pool (roles run side by side on few cores), quietly: its
    runtime is initialised here, with stderr muted (see quiet_stderr)."""
    with quiet_stderr():
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        tf.constant(0.0) + 1.0


def build_parameter_server(job: Any, resume_file: str | None = None, shards: int = 1,
                           security: Any = None) -> Any:
    """The job's ParameterServer role: its model built from the job's makers, its weights cut
    into `shards` slices (slices 1.. are served by shard processes that join it)."""
    import keras

    from drlbox.algorithms import make_algorithm, make_model
    from drlbox.envs import make_env
    from drlbox.roles.param_server import ParameterServer
    from drlbox.rpc.parameter_client import ShardPeer

    config = job.config
    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
    env = make_env(config.env_maker)
    try:
        algorithm = make_algorithm(config, env.action_space)
        model = make_model(config, env, algorithm)
        check_model_fits(config, env, model)
        spec = rollout_spec(config, env, algorithm, model) if config.uses_replay else None
        return ParameterServer(job.job_id, config, model, resume_file=resume_file,
                               shards=shards, connect=lambda address: ShardPeer(address, security),
                               rollout_spec=spec)
    finally:
        env.close()


def check_model_fits(config: Any, env: Any, model: Any) -> None:
    """Run the model on a real observation, so that a mistake in the makers is reported as
    what to fix (state_to_input maps an observation to the model's input) rather than a role
    dying later."""
    import numpy as np

    from drlbox.layers.noisy import synced_weights
    from drlbox.ops.flat_weights import WeightLayout, shard_bounds

    obs, _ = env.reset(seed=config.seed)
    x = obs if config.state_to_input is None else config.state_to_input(obs)
    x = np.asarray(x, np.float32)[np.newaxis]
    expected = tuple(model.inputs[0].shape[1:])
    if len(model.inputs) != 1 or tuple(x.shape[1:]) != expected:
        raise ValueError(f"the model takes inputs of shape {expected} but an observation "
                         f"becomes {tuple(x.shape[1:])} after state_to_input; make them "
                         f"agree (state_to_input maps observation -> model input)")
    model(x)
    shard_bounds(WeightLayout(synced_weights(model)).size, config.ps_shards)


def save_start_error(path: str, err: BaseException) -> None:
    """Hand the launcher the error that stopped this role from starting: it raises it in the
    user's process, with this process's traceback as a note."""
    import traceback

    import cloudpickle

    where = "".join(traceback.format_exception(err))
    try:
        data = cloudpickle.dumps(err)
        cloudpickle.loads(data)
    except Exception:       # noqa: BLE001 -- not every exception pickles; its words do
        data = cloudpickle.dumps(RuntimeError(f"{type(err).__name__}: {err}"))
    with open(path, "wb") as f:
        f.write(cloudpickle.dumps((data, where)))


def load_start_error(path: str) -> BaseException | None:
    """The error a role saved with save_start_error, if it saved one."""
    import cloudpickle

    try:
        with open(path, "rb") as f:
            data, where = cloudpickle.loads(f.read())
    except (OSError, EOFError):
        return None
    err = cloudpickle.loads(data)
    err.add_note(f"(raised while the parameter server built the job:)\n{where}")
    return err


def rollout_spec(config: Any, env: Any, algorithm: Any, model: Any) -> dict:
    """What the job's rollout lists look like, read off one list collected as workers do."""
    import numpy as np

    from drlbox.ops.rollout import list_spec
    from drlbox.roles.collector import example_list

    def predict(inputs: np.ndarray) -> list:
        outputs = model(inputs, training=False)
        return [np.asarray(outputs[0] if isinstance(outputs, (list, tuple)) else outputs)]

    rng = np.random.default_rng(0)
    example = example_list(env, config.state_to_input or (lambda obs: obs), predict,
                           lambda outputs, steps: algorithm.act(outputs, rng, steps),
                           config.rollout_maxlen, algorithm.behaviour_size)
    return list_spec(example, getattr(env.action_space, "n", None))


def status_server(port: int, role: str, state: dict, host: str = "127.0.0.1",
                  security: Any = None):
    """Serve the role's status ({'state', 'job_id', 'counters'}, updated in place) and health."""
    from drlbox.rpc.server import make_server
    from drlbox.rpc.status import add_role_status

    server, _ = make_server(port, [add_role_status(
        lambda: (role, state["state"], state["job_id"], state["counters"]))],
        host=host, security=security)
    return server


def replay_services(params: Any) -> Callable[[str], Any]:
    """`make_service(job_id)` for a ReplayTable: a fresh service when job_id is the job the
    parameter server runs (its settings and rollout spec fetched from it), else None."""
    import grpc

    from drlbox.roles.replay import service_for

    def make_service(job_id: str) -> Any:
        try:
            running = params.running_job()      # the settings are enough: it joins nothing
        except grpc.RpcError:
            return None
        settings = running.settings
        if running.job_id != job_id or not settings.get("replay_type"):
            return None
        log.info("replay memory for job %s (%s)", job_id, settings["replay_type"])
        return service_for(settings)

    return make_service


def make_following_evaluator(params: Any, job: Any) -> Any:
    """A FollowingEvaluator for the job, pulling weights from `params`."""
    from drlbox.algorithms import make_algorithm, make_model
    from drlbox.envs import make_env
    from drlbox.layers.noisy import synced_weights
    from drlbox.ops.fast_forward import make_predict_fn
    from drlbox.ops.flat_weights import WeightLayout
    from drlbox.roles.evaluator import FollowingEvaluator, evaluation_policy
    from drlbox.roles.worker import WeightAssigner

    config = job.config
    env = make_env(config.env_maker)
    algorithm = make_algorithm(config, env.action_space)
    model = make_model(config, env, algorithm)
    policy = evaluation_policy(env.action_space, "greedy", 0.0)
    layout = WeightLayout(synced_weights(model))
    assigner = WeightAssigner(layout.variables)
    return FollowingEvaluator(params, env, make_predict_fn(model),
                              lambda update: assigner(layout.merge(update.weights,
                                                                   update.others)),
                              policy, config, None if config.seed is None else config.seed + 7)
