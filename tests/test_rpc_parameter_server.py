"""The parameter server over real gRPC on loopback: weights, gradients, jobs, protocol, status."""
from __future__ import annotations

import types

import grpc
import gymnasium
import keras
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from drlbox.algorithms import make_algorithm, make_model
from drlbox.config import trainer_config
from drlbox.envs import make_env
from drlbox.jobs import Job, python_version
from drlbox.layers.noisy import synced_weights
from drlbox.roles.interfaces import WorkerReport
from drlbox.roles.param_server import ParameterServer
from drlbox.rpc import serde
from drlbox.rpc.generated import parameter_server_pb2 as pb
from drlbox.rpc.generated import parameter_server_pb2_grpc as pb_grpc
from drlbox.rpc.parameter_server import ParameterClient, SingleJob, add_parameter_server
from drlbox.rpc.server import PROTOCOL_KEY, make_channel, make_server

TIMEOUT = 30.0


def small_features(space):
    inputs = keras.Input(space.shape)
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    return inputs, keras.layers.Dense(16, activation="relu")(hidden)


def nature_cnn(env):
    """The DQN Nature CNN (~1.7M parameters, ~6.7 MB of float32); ignores env's observations."""
    inputs = keras.Input((84, 84, 4))
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.Conv2D(32, 8, strides=4, activation="relu")(x)
    x = keras.layers.Conv2D(64, 4, strides=2, activation="relu")(x)
    x = keras.layers.Conv2D(64, 3, strides=1, activation="relu")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(512, activation="relu")(x)
    logits = keras.layers.Dense(int(env.action_space.n))(x)
    value = keras.layers.Dense(1)(x)
    return keras.Model(inputs, [logits, value])


def cartpole():
    return gymnasium.make("CartPole-v1")


def start(algorithm="a3c", **kwargs):
    """A real parameter server on an ephemeral loopback port, and a client for it."""
    kwargs.setdefault("train_steps", 10_000)
    if "model_maker" not in kwargs:
        kwargs.setdefault("feature_maker", small_features)
    cfg = trainer_config(algorithm, env_maker=lambda: gymnasium.make("CartPole-v1"), **kwargs)
    env = make_env(cfg.env_maker)
    alg = make_algorithm(cfg, env.action_space)
    model = make_model(cfg, env, alg)
    env.close()
    job = Job.new(cfg)
    ps = ParameterServer(job.job_id, cfg, model, alg.aux_kind)
    server, port = make_server(0, [add_parameter_server(SingleJob(job, ps))])
    address = f"127.0.0.1:{port}"
    client = ParameterClient(address, job.job_id, timeout=TIMEOUT)
    return types.SimpleNamespace(cfg=cfg, model=model, job=job, ps=ps, server=server,
                                 port=port, address=address, client=client, alg=alg)


def stop(setup):
    setup.client.close()
    setup.server.stop(0)


@pytest.fixture
def a3c():
    setup = start("a3c")
    yield setup
    stop(setup)


def model_weights(model):
    return [v.numpy() for v in synced_weights(model)]


def assert_bitwise_equal(got, expected):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.dtype == e.dtype and g.shape == e.shape
        assert g.tobytes() == e.tobytes()


def small_gradients(model, scale=0.01, seed=0):
    rng = np.random.default_rng(seed)
    return [(scale * rng.standard_normal(tuple(v.shape))).astype(np.float32)
            for v in model.trainable_variables]


def rpc_error(call):
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


# --- weights -------------------------------------------------------------------------------

def test_weights_round_trip_exactly(a3c):
    update = a3c.client.get_weights(newer_than=-1)
    assert update is not None
    assert update.version == 0 and update.aux is None
    assert_bitwise_equal(update.weights, model_weights(a3c.model))


def test_get_weights_newer_than_current_is_none_until_a_push(a3c):
    current = a3c.client.get_weights(-1).version
    assert a3c.client.get_weights(newer_than=current) is None
    result = a3c.client.push(small_gradients(a3c.model), current, WorkerReport(env_steps=1))
    assert result.version == current + 1
    update = a3c.client.get_weights(newer_than=current)
    assert update is not None and update.version == current + 1
    assert_bitwise_equal(update.weights, model_weights(a3c.model))
    assert a3c.client.get_weights(newer_than=update.version) is None


def test_caller_ahead_of_the_server_gets_its_weights(a3c):
    """A worker that outlived a parameter server restart holds a newer version than the resumed
    server: it must be sent the server's weights, not told nothing changed."""
    current = a3c.client.get_weights(-1).version
    update = a3c.client.get_weights(newer_than=current + 5)
    assert update is not None and update.version == current
    assert_bitwise_equal(update.weights, model_weights(a3c.model))


def test_push_of_correct_gradients_changes_weights_and_bumps_version(a3c):
    before = a3c.client.get_weights(-1)
    result = a3c.client.push(small_gradients(a3c.model), before.version,
                             WorkerReport(worker=3, env_steps=5))
    assert result.version == before.version + 1
    assert result.global_steps == 5 and not result.stop
    after = a3c.client.get_weights(before.version)
    assert after.version == result.version
    changed = [not np.array_equal(a, b) for a, b in zip(before.weights, after.weights)]
    assert all(changed), "every trainable array should move after an Adam step"
    assert_bitwise_equal(after.weights, model_weights(a3c.model))
    status = a3c.client.status()
    assert status.updates == 1 and status.version == result.version
    assert "grad_norm" in status.stats and np.isfinite(status.stats["grad_norm"])


def _wrong_shape(grads):
    grads[0] = np.zeros(grads[0].shape[::-1] + (1,), np.float32)
    return grads, "must be float32"


def _wrong_dtype(grads):
    grads[1] = grads[1].astype(np.float64)
    return grads, "float64"


def _wrong_count(grads):
    n = len(grads)
    return grads[:-1], f"expected {n} gradient arrays, got {n - 1}"


def _nan(grads):
    grads[2] = grads[2].copy()
    grads[2].flat[0] = np.nan
    return grads, "NaN"


def _inf(grads):
    grads[0] = grads[0].copy()
    grads[0].flat[-1] = np.inf
    return grads, "infinite"


@pytest.mark.parametrize("spoil", [_wrong_shape, _wrong_dtype, _wrong_count, _nan, _inf],
                         ids=["shape", "dtype", "count", "nan", "inf"])
def test_bad_gradients_are_refused_and_change_nothing(a3c, spoil):
    before = a3c.client.get_weights(-1)
    before_status = a3c.client.status()
    grads, expected = spoil(small_gradients(a3c.model))
    err = rpc_error(lambda: a3c.client.push(grads, before.version, WorkerReport(env_steps=9)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "gradients refused" in err.details()
    assert expected in err.details()
    after = a3c.client.get_weights(-1)
    assert after.version == before.version
    assert_bitwise_equal(after.weights, before.weights)
    assert_bitwise_equal(model_weights(a3c.model), before.weights)
    status = a3c.client.status()
    assert (status.version, status.updates, status.global_steps) == (
        before_status.version, before_status.updates, before_status.global_steps)


def test_wrong_shape_message_names_both_shapes(a3c):
    grads = small_gradients(a3c.model)
    var = a3c.model.trainable_variables[0]
    grads[0] = np.zeros((7, 7), np.float32)
    err = rpc_error(lambda: a3c.client.push(grads, 0, WorkerReport()))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(tuple(var.shape)) in err.details() and "(7, 7)" in err.details()


def test_progress_only_push_keeps_weights(a3c):
    before = a3c.client.get_weights(-1)
    result = a3c.client.push(None, before.version, WorkerReport(env_steps=4))
    assert result.version == before.version and result.global_steps == 4
    assert a3c.client.get_weights(before.version) is None


# --- jobs and protocol ---------------------------------------------------------------------

def test_unknown_job_is_not_found_naming_both_ids(a3c):
    stranger = ParameterClient(a3c.address, "a3c-nosuchjob", timeout=TIMEOUT)
    try:
        calls = {
            "push": lambda: stranger.push(small_gradients(a3c.model), 0, WorkerReport()),
            "progress push": lambda: stranger.push(None, 0, WorkerReport(env_steps=1)),
            "get_weights": lambda: stranger.get_weights(-1),
            "status": stranger.status,
            "report_evaluation": lambda: stranger.report_evaluation(0, [1.0]),
            "stop": stranger.stop,
        }
        for name, call in calls.items():
            err = rpc_error(call)
            assert err.code() == grpc.StatusCode.NOT_FOUND, name
            assert "a3c-nosuchjob" in err.details(), name
            assert a3c.job.job_id in err.details(), name
    finally:
        stranger.close()
    status = a3c.client.status()
    assert status.running and status.global_steps == 0 and status.version == 0


def test_call_without_protocol_metadata_is_refused_but_health_answers(a3c):
    with grpc.insecure_channel(a3c.address) as channel:
        stub = pb_grpc.ParameterServerStub(channel)
        job_id = a3c.job.job_id
        calls = {
            "GetStatus": lambda: stub.GetStatus(pb.StatusRequest(job_id=job_id),
                                                timeout=TIMEOUT),
            "GetWeights": lambda: list(stub.GetWeights(
                pb.WeightsRequest(job_id=job_id, newer_than=-1), timeout=TIMEOUT)),
            "GetJob": lambda: list(stub.GetJob(
                pb.JobRequest(python_version=python_version()), timeout=TIMEOUT)),
            "PushGradients": lambda: stub.PushGradients(
                iter([pb.GradientsChunk(job_id=job_id, report=pb.WorkerReport(env_steps=3))]),
                timeout=TIMEOUT),
        }
        for name, call in calls.items():
            err = rpc_error(call)
            assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, name
            assert "protocol" in err.details() and "sent none" in err.details(), name
        # Another protocol version is refused the same way, naming it.
        err = rpc_error(lambda: stub.GetStatus(pb.StatusRequest(), timeout=TIMEOUT,
                                               metadata=[(PROTOCOL_KEY, "0")]))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "'0'" in err.details()

        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    # The refused push did no work.
    assert a3c.client.status().global_steps == 0


def test_get_job_round_trips_config_with_lambda_env_maker(a3c):
    fresh = ParameterClient(a3c.address, timeout=TIMEOUT)
    try:
        job = fresh.fetch_job()
    finally:
        fresh.close()
    assert job.job_id == a3c.job.job_id
    assert fresh.job_id == a3c.job.job_id
    assert job.config.plain_settings() == a3c.cfg.plain_settings()
    env = job.config.env_maker()
    try:
        obs, _ = env.reset(seed=0)
        assert env.action_space.n == 2 and np.asarray(obs).shape == (4,)
    finally:
        env.close()
    inputs, feature = job.config.feature_maker(env.observation_space)
    assert tuple(feature.shape) == (None, 16)


def test_get_job_refuses_another_python_version(a3c):
    channel = make_channel(a3c.address)
    try:
        stub = pb_grpc.ParameterServerStub(channel)
        err = rpc_error(lambda: list(stub.GetJob(pb.JobRequest(python_version="2.7"),
                                                 timeout=TIMEOUT)))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "2.7" in err.details() and python_version() in err.details()
        # With the right version the same stub gets the job, in one or more chunks.
        chunks = list(stub.GetJob(pb.JobRequest(python_version=python_version()),
                                  timeout=TIMEOUT))
        assert chunks[0].job_id == a3c.job.job_id
        assert '"algorithm": "a3c"' in chunks[0].config_json
    finally:
        channel.close()


# --- status --------------------------------------------------------------------------------

def test_status_round_trip_after_reports(a3c):
    a3c.client.push(small_gradients(a3c.model), 0,
                    WorkerReport(worker=0, env_steps=10, episode_returns=[1.0, 3.0],
                                 episode_lengths=[4, 6], stats={"loss": 0.5}))
    a3c.client.push(None, 1, WorkerReport(worker=1, env_steps=7, episode_returns=[5.0]))
    a3c.client.report_evaluation(17, [2.0, 4.0])
    status = a3c.client.status()
    assert status.job_id == a3c.job.job_id
    assert status.state == "running" and status.running
    assert status.global_steps == 17
    assert status.episodes == 3
    assert status.recent_return == pytest.approx(3.0)
    assert status.updates == 1 and status.version == 1
    assert status.train_steps == 10_000
    assert status.stats["loss"] == pytest.approx(0.5)
    assert len(status.evaluations) == 1
    assert status.evaluations[0].global_steps == 17
    assert status.evaluations[0].mean_return == pytest.approx(3.0)
    assert status.evaluations[0].episodes == 2
    # Reaching train_steps ends the job and the push reply says so.
    result = a3c.client.push(None, 1, WorkerReport(env_steps=10_000))
    assert result.stop
    done = a3c.client.status()
    assert done.state == "done" and not done.running and "train_steps" in done.message


def test_stop_over_grpc(a3c):
    status = a3c.client.stop("test says stop")
    assert status.state == "stopped" and status.message == "test says stop"
    assert a3c.client.push(None, 0, WorkerReport(env_steps=1)).stop


# --- a model bigger than gRPC's default 4 MB message limit -----------------------------------

def test_large_model_moves_both_ways():
    setup = start("a3c", model_maker=nature_cnn)
    try:
        expected = model_weights(setup.model)
        assert len(serde.encode_arrays(expected)) > 4 << 20
        update = setup.client.get_weights(-1)
        assert_bitwise_equal(update.weights, expected)

        grads = small_gradients(setup.model, scale=1e-3)
        assert len(serde.encode_arrays(grads)) > 4 << 20
        result = setup.client.push(grads, update.version, WorkerReport(env_steps=1))
        assert result.version == update.version + 1
        after = setup.client.get_weights(update.version)
        assert after.version == result.version
        assert_bitwise_equal(after.weights, model_weights(setup.model))
        assert not np.array_equal(after.weights[0], update.weights[0])
    finally:
        stop(setup)


# --- aux weight sets -----------------------------------------------------------------------

def test_acer_average_weights_arrive_with_weights():
    setup = start("acer", acer_soft_update_ratio=0.05)
    try:
        first = setup.client.get_weights(-1)
        assert first.aux is not None and first.aux_version == 0
        assert_bitwise_equal(first.aux, first.weights)
        assert setup.client.get_weights(0, 0) is None

        setup.client.push(small_gradients(setup.model), 0, WorkerReport(env_steps=1))
        second = setup.client.get_weights(0, 0)
        assert second.version == 1 and second.aux_version == 1
        assert_bitwise_equal(second.weights, model_weights(setup.model))
        expected = [(1.0 - 0.05) * avg + 0.05 * new
                    for avg, new in zip(first.aux, second.weights)]
        assert_bitwise_equal(second.aux, expected)
        assert not np.array_equal(second.aux[0], second.weights[0])
        assert setup.client.get_weights(1, 1) is None
        # An up-to-date online set but an old average set: the average set comes anyway.
        aux_only = setup.client.get_weights(1, 0)
        assert aux_only is not None and aux_only.aux is not None
        assert_bitwise_equal(aux_only.aux, second.aux)
    finally:
        stop(setup)


def test_dqn_target_weights_sent_only_when_newer():
    setup = start("dqn", sync_target_interval=2)
    try:
        initial = setup.client.get_weights(-1, -1)
        assert initial.aux is not None and initial.aux_version == 0
        assert_bitwise_equal(initial.aux, initial.weights)

        setup.client.push(small_gradients(setup.model, seed=1), 0, WorkerReport(env_steps=1))
        one = setup.client.get_weights(0, 0)
        assert one.version == 1 and one.aux_version == 0
        assert one.aux is None, "the target set did not change, so it must not be sent"
        assert_bitwise_equal(one.weights, model_weights(setup.model))
        with_aux = setup.client.get_weights(0, -1)
        assert with_aux.aux is not None
        assert_bitwise_equal(with_aux.aux, initial.weights)
        assert setup.client.get_weights(1, 0) is None

        setup.client.push(small_gradients(setup.model, seed=2), 1, WorkerReport(env_steps=1))
        two = setup.client.get_weights(1, 0)
        assert two.version == 2 and two.aux_version == 2
        assert two.aux is not None
        assert_bitwise_equal(two.weights, model_weights(setup.model))
        assert_bitwise_equal(two.aux, two.weights)
        assert setup.client.get_weights(2, 2) is None
        no_aux = setup.client.get_weights(1, 2)
        assert no_aux is not None and no_aux.version == 2 and no_aux.aux is None
    finally:
        stop(setup)


# --- push and pull in one call -------------------------------------------------------------

def test_push_and_pull_returns_the_weights_the_push_made(a3c):
    first = a3c.client.get_weights(-1)
    result, update = a3c.client.push_and_pull(small_gradients(a3c.model), first.version,
                                              WorkerReport(env_steps=3), first.version)
    assert result.version == update.version == first.version + 1
    assert result.global_steps == 3 and not result.stop
    assert_bitwise_equal(update.weights, model_weights(a3c.model))
    # A progress-only push changes nothing, so nothing comes back.
    result, update = a3c.client.push_and_pull(None, result.version, WorkerReport(env_steps=2),
                                              result.version)
    assert update is None and result.global_steps == 5
    # A stopped job sends no weights either, whatever the caller holds.
    a3c.ps.stop("test")
    result, update = a3c.client.push_and_pull(None, 0, WorkerReport(), -1)
    assert result.stop and update is None


def test_push_and_pull_of_a_large_model_goes_in_chunks():
    setup = start("a3c", model_maker=nature_cnn)
    try:
        # Weights over one chunk with a small (progress-only) push: pulled by GetWeights.
        _, first = setup.client.push_and_pull(None, -1, WorkerReport(env_steps=1), -1)
        assert_bitwise_equal(first.weights, model_weights(setup.model))
        # Gradients over one chunk: pushed by PushGradients, then pulled.
        result, update = setup.client.push_and_pull(small_gradients(setup.model, scale=1e-3),
                                                    first.version, WorkerReport(env_steps=1),
                                                    first.version)
        assert result.version == update.version == first.version + 1
        assert_bitwise_equal(update.weights, model_weights(setup.model))
    finally:
        stop(setup)


def test_push_and_pull_sends_the_target_set_only_when_the_caller_lacks_it():
    setup = start("dqn", sync_target_interval=2)
    try:
        _, one = setup.client.push_and_pull(small_gradients(setup.model, seed=1), 0,
                                            WorkerReport(env_steps=1), 0, 0)
        assert one.version == 1 and one.aux_version == 0 and one.aux is None
        _, two = setup.client.push_and_pull(small_gradients(setup.model, seed=2), 1,
                                            WorkerReport(env_steps=1), 1, 0)
        assert two.version == 2 and two.aux_version == 2
        assert_bitwise_equal(two.aux, two.weights)
        # In process, the role answers the same way.
        _, three = setup.ps.push_and_pull(small_gradients(setup.model, seed=3), 2,
                                          WorkerReport(env_steps=1), 2, 2)
        assert three.version == 3 and three.aux is None
    finally:
        stop(setup)
