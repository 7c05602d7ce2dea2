"""The parameter server over real gRPC on loopback: weights, gradients, jobs, protocol, status,
and a job whose weights are cut into two shards served by two servers."""
from __future__ import annotations

import contextlib
import dataclasses
import queue
import shutil
import tempfile
import threading
import time
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
from drlbox.launch.entrypoints import _new_job
from drlbox.launch.processes import replay_services
from drlbox.launch.shard import serve_shards
from drlbox.layers.noisy import synced_weights
from drlbox.ops.flat_weights import WeightLayout
from drlbox.roles.interfaces import WorkerReport
from drlbox.roles.job_host import JobHost
from drlbox.roles.param_server import ParameterServer
from drlbox.rpc import serde
from drlbox.rpc.generated import parameter_server_pb2 as pb
from drlbox.rpc.generated import parameter_server_pb2_grpc as pb_grpc
from drlbox.rpc.parameter_client import ParameterClient, ShardPeer
from drlbox.rpc.job_control import add_job_control
from drlbox.rpc.parameter_server import add_parameter_server
from drlbox.rpc.server import PROTOCOL_KEY, make_channel, make_server
from drlbox.rpc.sessions import EXCHANGE_METHOD

TIMEOUT = 30.0


def small_features(space):
    inputs = keras.Input(space.shape)
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    return inputs, keras.layers.Dense(16, activation="relu")(hidden)


def wide_features(space):
    """~2.1M weights (8.4 MB): more than one 8 MiB exchange frame."""
    inputs = keras.Input(space.shape)
    hidden = keras.layers.Dense(2048, activation="relu")(inputs)
    return inputs, keras.layers.Dense(1024, activation="relu")(hidden)


def start(algorithm="a3c", shards=1, resume_file=None, **kwargs):
    """A real parameter server on an ephemeral loopback port (and, with shards > 1, shard
    servers in this process), and a client for it."""
    kwargs.setdefault("train_steps", 10_000)
    if "model_maker" not in kwargs:
        kwargs.setdefault("feature_maker", small_features)
    cfg = trainer_config(algorithm, env_maker=lambda: gymnasium.make("CartPole-v1"), **kwargs)
    env = make_env(cfg.env_maker)
    keras.utils.set_random_seed(0)          # twins start from the same weights
    model = make_model(cfg, env, make_algorithm(cfg, env.action_space))
    env.close()
    initial = WeightLayout(synced_weights(model)).flat([v.numpy() for v in model.weights])
    # The job goes through a job host, as every job does, local or in a cluster.
    data_dir = tempfile.mkdtemp(prefix="drlbox-test-jobs-")
    host = JobHost(data_dir, lambda job, _: ParameterServer(
        job.job_id, job.config, model, resume_file=resume_file, shards=shards,
        connect=ShardPeer), keep_save_dir=True)
    host.submit(Job("", cfg).encode(), cfg.algorithm)
    host.step()
    ps = host.current()
    job = Job(ps.job_id, ps.config)
    server, port = make_server(0, [add_parameter_server(host), add_job_control(host)],
                               max_workers=32)
    address = f"127.0.0.1:{port}"
    stop_shards = threading.Event()
    threads = [threading.Thread(target=serve_shards, args=(address, "127.0.0.1", 0),
                                kwargs={"stop": stop_shards}, daemon=True)
               for _ in range(shards - 1)]
    for thread in threads:
        thread.start()
    client = ParameterClient(address, job.job_id, timeout=TIMEOUT)
    return types.SimpleNamespace(cfg=cfg, model=model, job=job, ps=ps, server=server,
                                 port=port, address=address, client=client, initial=initial,
                                 stop_shards=stop_shards, threads=threads, data_dir=data_dir,
                                 host=host)


def stop(setup):
    setup.client.close()
    setup.stop_shards.set()
    for thread in setup.threads:
        thread.join(10)
    setup.server.stop(0)
    shutil.rmtree(setup.data_dir, ignore_errors=True)


@pytest.fixture
def a3c():
    setup = start("a3c")
    yield setup
    stop(setup)


def small_gradient(size, scale=0.01, seed=0):
    return (scale * np.random.default_rng(seed).standard_normal(size)).astype(np.float32)


def rpc_error(call):
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def raw_exchange(address, frames, metadata=None):
    """Send raw Exchange frames and return the decoded reply headers (or raise RpcError)."""
    channel = make_channel(address) if metadata is None else grpc.insecure_channel(address)
    try:
        call = channel.stream_stream(EXCHANGE_METHOD)(iter(frames), timeout=TIMEOUT,
                                                      metadata=metadata)
        replies = []
        for raw in call:
            header, _ = serde.decode_frame(raw)
            if header is not None:
                replies.append(pb.ReplyHeader.FromString(header))
        return replies
    finally:
        channel.close()


def request(job_id, gradient=None, **fields):
    header = pb.RequestHeader(job_id=job_id, newer_than=-1, aux_newer_than=-1, **fields)
    if gradient is not None and "gradient_values" not in fields:
        header.gradient_values = len(gradient)
    data = b"" if gradient is None else serde.float_bytes(gradient)
    return serde.data_frames(header.SerializeToString(), data)


# --- weights -------------------------------------------------------------------------------

def test_weights_round_trip_exactly(a3c):
    update = a3c.client.get_weights(newer_than=-1)
    assert update is not None
    assert update.version == 0 and update.aux is None
    assert update.weights.dtype == np.float32
    assert update.weights.tobytes() == a3c.initial.tobytes()


def test_get_weights_newer_than_current_is_none_until_a_push(a3c):
    current = a3c.client.get_weights(-1).version
    assert a3c.client.get_weights(newer_than=current) is None
    result, _ = a3c.client.push_and_pull(small_gradient(a3c.ps.size), current,
                                         WorkerReport(env_steps=1), current)
    assert result.version == current + 1
    update = a3c.client.get_weights(newer_than=current)
    assert update is not None and update.version == current + 1
    assert update.weights.tobytes() == a3c.ps.shard0.weights().tobytes()
    assert a3c.client.get_weights(newer_than=update.version) is None


def test_caller_ahead_of_the_server_gets_its_weights(a3c):
    """A worker that outlived a parameter server restart holds a newer version than the resumed
    server: it must be sent the server's weights, not told nothing changed."""
    current = a3c.client.get_weights(-1).version
    update = a3c.client.get_weights(newer_than=current + 5)
    assert update is not None and update.version == current
    assert update.weights.tobytes() == a3c.initial.tobytes()


def test_push_applies_the_gradient_and_bumps_version(a3c):
    before = a3c.client.get_weights(-1)
    result, after = a3c.client.push_and_pull(small_gradient(a3c.ps.size), before.version,
                                             WorkerReport(worker=3, env_steps=5), before.version)
    assert result.version == before.version + 1
    assert result.global_steps == 5 and not result.stop
    assert after.version == result.version
    assert np.all(after.weights != before.weights), "every weight moves after an Adam step"
    assert after.weights.tobytes() == a3c.ps.shard0.weights().tobytes()
    status = a3c.client.status()
    assert status.updates == 1 and status.version == result.version
    assert status.stats["staleness"] == 0.0


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, 1e20],
                         ids=["nan", "inf", "-inf", "overflowing"])
def test_a_gradient_that_is_not_finite_is_refused_and_changes_nothing(a3c, value):
    before = a3c.client.get_weights(-1)
    before_status = a3c.client.status()
    gradient = small_gradient(a3c.ps.size)
    gradient[7] = value
    err = rpc_error(lambda: a3c.client.push_and_pull(gradient, 0, WorkerReport(env_steps=9),
                                                     0))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details().startswith("gradient:") and "NaN or infinite" in err.details()
    after = a3c.client.get_weights(-1)
    assert after.version == before.version
    assert after.weights.tobytes() == before.weights.tobytes()
    status = a3c.client.status()
    assert (status.version, status.updates, status.global_steps) == (
        before_status.version, before_status.updates, before_status.global_steps)


def test_a_gradient_above_the_clip_norm_is_scaled_down_to_it(a3c):
    """Workers clip; the server still bounds each slice, so one huge push moves the weights no
    further than a clipped one would."""
    big = small_gradient(a3c.ps.size) * 1e6
    clipped = big * np.float32(a3c.cfg.opt_clip_norm / np.linalg.norm(big))
    twin = start("a3c")
    try:
        a3c.client.push_and_pull(big, 0, WorkerReport(), 0)
        twin.client.push_and_pull(clipped, 0, WorkerReport(), 0)
        np.testing.assert_allclose(a3c.ps.shard0.weights(), twin.ps.shard0.weights(),
                                   rtol=0, atol=1e-6)
    finally:
        stop(twin)


def test_wrong_gradient_sizes_and_malformed_frames_are_refused(a3c):
    job_id, size = a3c.job.job_id, a3c.ps.size
    cases = {
        "too few values": (request(job_id, small_gradient(size - 1)), "has %d weights" % size),
        "announced more than sent": (
            request(job_id, small_gradient(size), gradient_values=size + 1),
            "has %d weights" % size),
        "stream ends early": ([serde.encode_frame(
            pb.RequestHeader(job_id=job_id, gradient_values=size).SerializeToString(),
            serde.float_bytes(small_gradient(9)))], "ended before the gradient was complete"),
        "data without a header": ([serde.encode_frame(None, b"\0" * 8)], "header"),
        "garbage": ([b"\xff\xff\xff"], "malformed frame"),
    }
    for name, (frames, expected) in cases.items():
        err = rpc_error(lambda: raw_exchange(a3c.address, frames))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, name
        assert expected in err.details(), (name, err.details())
    status = a3c.client.status()
    assert status.version == 0 and status.updates == 0


def test_progress_only_push_keeps_weights(a3c):
    before = a3c.client.get_weights(-1)
    result, update = a3c.client.push_and_pull(None, before.version, WorkerReport(env_steps=4),
                                              before.version)
    assert result.version == before.version and result.global_steps == 4
    assert update is None
    assert a3c.client.get_weights(before.version) is None


def test_frames_of_any_size_carry_a_model_bigger_than_one_frame():
    setup = start("a3c", feature_maker=wide_features)
    try:
        assert setup.ps.size * 4 > serde.FRAME_DATA_BYTES
        update = setup.client.get_weights(-1)
        assert update.weights.tobytes() == setup.initial.tobytes()
        result, after = setup.client.push_and_pull(small_gradient(setup.ps.size, 1e-3),
                                                   update.version, WorkerReport(env_steps=1),
                                                   update.version)
        assert result.version == after.version == update.version + 1
        assert after.weights.tobytes() == setup.ps.shard0.weights().tobytes()
    finally:
        stop(setup)


def test_compressed_gradients_travel_as_half_the_bytes_and_apply_alike():
    setup, twin = start("a3c", compress_gradients=True), start("a3c")
    try:
        fresh = ParameterClient(setup.address, timeout=TIMEOUT)
        fresh.join_job(fresh.running_job().job_id)
        assert fresh.compress_gradients and not twin.client.compress_gradients
        gradient = small_gradient(setup.ps.size)
        headers = []
        original = fresh._encode
        fresh._encode = lambda piece, header: headers.append(header) or original(piece, header)
        fresh.push_and_pull(gradient, -1, WorkerReport(env_steps=1), -1)
        twin.client.push_and_pull(gradient, -1, WorkerReport(env_steps=1), -1)
        assert headers[0].gradient_bfloat16
        np.testing.assert_allclose(setup.ps.shard0.weights(), twin.ps.shard0.weights(),
                                   rtol=0, atol=1e-6)
        fresh.close()
        # bfloat16 data announced as float32 is half what the header promises: refused.
        half = serde.to_bfloat16(gradient).view(np.uint16)
        header = pb.RequestHeader(job_id=setup.job.job_id, newer_than=-1,
                                  gradient_values=setup.ps.size)
        frames = serde.data_frames(header.SerializeToString(), memoryview(half).cast("B"))
        err = rpc_error(lambda: raw_exchange(setup.address, frames))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        stop(setup)
        stop(twin)


# --- staleness -----------------------------------------------------------------------------

def test_max_staleness_sends_weights_only_once_the_caller_lags_beyond_it():
    setup = start("a3c", max_staleness=2)
    try:
        held = setup.client.get_weights(-1).version
        sent = []
        for _ in range(6):
            _, update = setup.client.push_and_pull(small_gradient(setup.ps.size), held,
                                                   WorkerReport(env_steps=1), held)
            sent.append(update is not None)
            if update is not None:
                held = update.version
        # Lag after each push: 1, 2, 3 (sent, holds 3), 1, 2, 3 (sent).
        assert sent == [False, False, True, False, False, True]
        # A plain pull sends whatever changed, whatever the rule.
        setup.client.push_and_pull(small_gradient(setup.ps.size), held, WorkerReport(), held)
        assert setup.client.get_weights(held) is not None
    finally:
        stop(setup)


# --- jobs and protocol ---------------------------------------------------------------------

def test_unknown_job_is_not_found_naming_both_ids(a3c):
    stranger = ParameterClient(a3c.address, "a3c-nosuchjob", timeout=TIMEOUT)
    try:
        calls = {
            "push": lambda: stranger.push_and_pull(small_gradient(a3c.ps.size), 0,
                                                   WorkerReport(), 0),
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
    err = rpc_error(lambda: raw_exchange(a3c.address, request("a3c-nosuchjob")))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "a3c-nosuchjob" in err.details()
    err = rpc_error(lambda: raw_exchange(a3c.address, request(a3c.job.job_id, shard=1)))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "no slice 1" in err.details()
    status = a3c.client.status()
    assert status.running and status.global_steps == 0 and status.version == 0


def test_call_without_protocol_metadata_is_refused_but_health_answers(a3c):
    with grpc.insecure_channel(a3c.address) as channel:
        stub = pb_grpc.ParameterServerStub(channel)
        job_id = a3c.job.job_id
        calls = {
            "GetStatus": lambda: stub.GetStatus(pb.StatusRequest(job_id=job_id),
                                                timeout=TIMEOUT),
            "GetRunningJob": lambda: stub.GetRunningJob(pb.RunningJobRequest(),
                                                        timeout=TIMEOUT),
            "JoinJob": lambda: list(stub.JoinJob(join_request(job_id), timeout=TIMEOUT)),
            "Exchange": lambda: raw_exchange(a3c.address, request(
                job_id, small_gradient(a3c.ps.size), report=pb.WorkerReport(env_steps=3)),
                metadata=()),
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


def join_request(job_id, role=pb.JOINING_ROLE_WORKER, version=None):
    return pb.JoinJobRequest(job_id=job_id, role=role,
                             python_version=python_version() if version is None else version)


def join_as_worker(address, job_id):
    """A fresh client joins job_id as a worker: its worker index."""
    with contextlib.closing(ParameterClient(address, timeout=TIMEOUT)) as joiner:
        joiner.join_job(job_id, "worker")
        return joiner.worker_index


def test_join_job_round_trips_config_with_lambda_env_maker(a3c):
    with contextlib.closing(ParameterClient(a3c.address, timeout=TIMEOUT)) as fresh:
        running = fresh.running_job()
        job = fresh.join_job(running.job_id)
    assert running.job_id == job.job_id == fresh.job_id == a3c.job.job_id
    assert running.shards == [("", 0, a3c.ps.size)]
    assert running.settings["algorithm"] == "a3c" and running.settings["rollout_spec"] is None
    assert job.config.plain_settings() == a3c.cfg.plain_settings()
    env = job.config.env_maker()
    try:
        obs, _ = env.reset(seed=0)
        assert env.action_space.n == 2 and np.asarray(obs).shape == (4,)
    finally:
        env.close()
    inputs, feature = job.config.feature_maker(env.observation_space)
    assert tuple(feature.shape) == (None, 16)


def test_polling_the_running_job_joins_nothing_and_ships_no_makers():
    """Idle roles poll every second: the answer is the job's settings only, however big its
    makers, and however often they ask, the first worker to join is still worker 0."""
    ballast = np.ones(1 << 20, np.uint8)        # 1 MiB that the makers carry

    def heavy_features(space):
        assert ballast.size
        return small_features(space)

    setup = start("a3c", feature_maker=heavy_features)
    job_id = setup.job.job_id
    try:
        with make_channel(setup.address) as channel:
            stub = pb_grpc.ParameterServerStub(channel)
            answers = [stub.GetRunningJob(pb.RunningJobRequest(), timeout=TIMEOUT)
                       for _ in range(50)]
            assert {a.job_id for a in answers} == {job_id}
            assert max(a.ByteSize() for a in answers) < 4096
            # Neither the evaluator's joins nor the replay server's look-ups use up an index.
            evaluator = list(stub.JoinJob(join_request(job_id, pb.JOINING_ROLE_EVALUATOR),
                                          timeout=TIMEOUT))
            assert evaluator[0].job.job_id == job_id and evaluator[0].worker_index == 0
            assert sum(len(c.makers) for c in evaluator) > ballast.size
        assert replay_services(setup.client)(job_id) is None   # A3C keeps no replay memory
        assert [join_as_worker(setup.address, job_id) for _ in range(3)] == [0, 1, 2]
    finally:
        stop(setup)


def test_the_replay_server_builds_memory_from_the_running_jobs_settings_alone():
    setup = start("dqn", replay_type="uniform", replay_kwargs=dict(maxlen=100, minlen=10))
    try:
        replay = replay_services(setup.client)
        assert replay(setup.job.job_id) is not None
        assert replay("dqn-00000000") is None
        assert join_as_worker(setup.address, setup.job.job_id) == 0
    finally:
        stop(setup)


def test_a_role_that_finished_a_job_does_not_join_it_again(a3c):
    """The idle loop's step: join the running job once; after its work on it is done, polls
    see the same job and join nothing (no download, no worker index)."""
    with contextlib.closing(ParameterClient(a3c.address, timeout=TIMEOUT)) as role:
        job = _new_job(role, "worker", finished=set())
        assert job.job_id == a3c.job.job_id and role.worker_index == 0
        for _ in range(20):
            assert _new_job(role, "worker", finished={job.job_id}) is None
    assert join_as_worker(a3c.address, a3c.job.job_id) == 1
    # Once the job is over nothing runs: polls find nothing to join.
    a3c.client.stop("the test is done")
    err = rpc_error(lambda: a3c.client.running_job())
    assert err.code() == grpc.StatusCode.NOT_FOUND and "no job runs" in err.details()
    with contextlib.closing(ParameterClient(a3c.address, timeout=TIMEOUT)) as role:
        assert _new_job(role, "worker", finished=set()) is None


def test_join_job_refusals_name_the_field_and_use_up_no_worker_index(a3c):
    job_id = a3c.job.job_id
    cases = [  # (the field named, request, code, what the message says)
        ("python_version", join_request(job_id, version="2.7"),
         grpc.StatusCode.FAILED_PRECONDITION, ["2.7", python_version()]),
        ("job_id", join_request(""), grpc.StatusCode.INVALID_ARGUMENT, ["empty"]),
        ("job_id", join_request("a3c-" + "x" * 100_000), grpc.StatusCode.INVALID_ARGUMENT,
         ["64 characters", "100004"]),
        ("job_id", join_request("a3c-nosuchjob"), grpc.StatusCode.NOT_FOUND,
         ["'a3c-nosuchjob'", job_id]),
        ("role", join_request(job_id, pb.JOINING_ROLE_UNSPECIFIED),
         grpc.StatusCode.INVALID_ARGUMENT, ["UNSPECIFIED"]),
        ("role", join_request(job_id, 99), grpc.StatusCode.INVALID_ARGUMENT,
         ["99", "worker, evaluator"]),
    ]
    with make_channel(a3c.address) as channel:
        stub = pb_grpc.ParameterServerStub(channel)
        for field, message, code, expected in cases:
            err = rpc_error(lambda: list(stub.JoinJob(message, timeout=TIMEOUT)))
            assert err.code() == code, (field, err.details())
            assert err.details().startswith(f"{field}: "), err.details()
            for text in expected:
                assert text in err.details(), (text, err.details())
    with pytest.raises(ValueError, match="'learner'.*worker, evaluator"):
        a3c.client.join_job(job_id, "learner")
    assert join_as_worker(a3c.address, job_id) == 0


def test_nothing_runs_before_the_first_job(tmp_path):
    host = JobHost(str(tmp_path), lambda job, _: None)
    server, port = make_server(0, [add_parameter_server(host)])
    try:
        with contextlib.closing(ParameterClient(f"127.0.0.1:{port}", timeout=TIMEOUT)) as role:
            err = rpc_error(role.running_job)
            assert err.code() == grpc.StatusCode.NOT_FOUND
            err = rpc_error(lambda: role.join_job("a3c-12345678"))
            assert err.code() == grpc.StatusCode.NOT_FOUND
            assert "'a3c-12345678' is not running; no job runs here now" in err.details()
    finally:
        server.stop(0)


# --- the final model of a job that reaches target_return -----------------------------------

def _saved_flat(path):
    model = keras.models.load_model(path, compile=False)
    return WeightLayout(synced_weights(model)).flat([v.numpy() for v in model.weights])


@pytest.mark.parametrize("reported", ["pulled", "older", "none"])
def test_reaching_target_return_saves_the_weights_that_were_judged(reported, tmp_path):
    """Training goes on while the evaluator plays; the job's final model must be the weights
    it judged (when it says which: the version it pulled last), not the newer ones."""
    setup = start("a3c", save_dir=str(tmp_path), eval_interval=100, target_return=400.0)
    try:
        judged = setup.client.get_weights(-1)                 # the evaluator's pull
        for i in range(3):                                    # training goes on meanwhile
            setup.client.push_and_pull(small_gradient(setup.ps.size, seed=i), judged.version + i,
                                       WorkerReport(worker=0, env_steps=50), -1)
        if reported == "older":                               # a later pull replaced it
            setup.client.get_weights(-1)
        version = {"pulled": judged.version, "older": judged.version, "none": None}[reported]
        assert setup.client.report_evaluation(100, [500.0] * 3, version).stop
        saved = _saved_flat(str(tmp_path / "model_final.keras"))
        final = setup.client.status().checkpoints[-1]
        if reported == "pulled":
            np.testing.assert_array_equal(saved, judged.weights)
            assert final.global_steps == 100
        else:        # not the last pull's version, or no version: the current weights
            current = setup.ps.snapshot().weights
            np.testing.assert_array_equal(saved, current)
            assert not np.array_equal(saved, judged.weights)
            assert final.global_steps == 150
    finally:
        stop(setup)


def test_a_negative_weights_version_is_refused(a3c):
    err = rpc_error(lambda: a3c.client.report_evaluation(0, [1.0], -3))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "weights_version" in err.details()


# --- status --------------------------------------------------------------------------------

def test_status_round_trip_after_reports(a3c):
    a3c.client.push_and_pull(small_gradient(a3c.ps.size), 0,
                             WorkerReport(worker=0, env_steps=10, episode_returns=[1.0, 3.0],
                                          episode_lengths=[4, 6], stats={"loss": 0.5}), 0)
    a3c.client.push_and_pull(None, 1, WorkerReport(worker=1, env_steps=7, episode_returns=[5.0]),
                             1)
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
    result, update = a3c.client.push_and_pull(None, 1, WorkerReport(env_steps=10_000), -1)
    assert result.stop and update is None
    done = a3c.client.status()
    assert done.state == "done" and not done.running and "train_steps" in done.message


def test_stop_over_grpc(a3c):
    status = a3c.client.stop("test says stop")
    assert status.state == "stopped" and status.message == "test says stop"
    result, update = a3c.client.push_and_pull(None, 0, WorkerReport(env_steps=1), -1)
    assert result.stop and update is None


@pytest.mark.timeout(120)
def test_a_local_role_whose_job_ended_before_it_joined_leaves(a3c):
    """A local run's evaluator (one job) that starts too late to join its job must not poll
    for ever: the launcher waits for it before it ends the run."""
    import signal

    from drlbox.launch.entrypoints import Endpoint, run_evaluator
    from drlbox.rpc.security import Security

    a3c.client.stop("over before the evaluator joined")
    a3c.host.step()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    started = time.monotonic()
    try:
        run_evaluator(Endpoint("127.0.0.1", 0, Security(), a3c.address), one_job=True)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert time.monotonic() - started < 30


def test_pushes_in_flight_at_a_graceful_stop_count_and_reach_the_final_model(tmp_path):
    setup = start("a3c", save_dir=str(tmp_path))
    try:
        setup.client.stop("graceful stop")
        gradient = small_gradient(setup.ps.size)
        result, update = setup.client.push_and_pull(gradient, 0, WorkerReport(env_steps=32), -1)
        assert result.stop and update is None
        status = setup.client.status()
        assert status.state == "stopped" and status.global_steps == 32 and status.updates == 1
        setup.ps.save_final()
        saved = keras.models.load_model(tmp_path / "model_final.keras", compile=False)
        flat = WeightLayout(synced_weights(saved)).flat([v.numpy() for v in saved.weights])
        np.testing.assert_array_equal(flat, setup.ps.shard0.weights())
        assert not np.array_equal(flat, setup.initial)
    finally:
        stop(setup)


def test_a_gradient_stream_past_its_announced_size_is_refused_before_it_is_buffered(a3c):
    size, sent = a3c.ps.size, []
    header = pb.RequestHeader(job_id=a3c.job.job_id, gradient_values=size, newer_than=-1)

    def frames():           # an honest header, then 25 frames of 8 MiB of gradient data
        yield serde.encode_frame(header.SerializeToString(), b"")
        for _ in range(25):
            sent.append(1)
            yield serde.encode_frame(None, b"\0" * (8 << 20))

    err = rpc_error(lambda: raw_exchange(a3c.address, frames()))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "gradient_values" in err.details()
    assert len(sent) < 10, f"the client got to send {len(sent)} extra frames of 8 MiB"
    status = a3c.client.status()
    assert status.version == 0 and status.updates == 0


# --- aux weight sets -----------------------------------------------------------------------

def test_acer_average_weights_follow_the_new_weights():
    setup = start("acer", acer_soft_update_ratio=0.05)
    try:
        first = setup.client.get_weights(-1)
        assert first.aux is not None and first.aux_version == 0
        assert first.aux.tobytes() == first.weights.tobytes()
        assert setup.client.get_weights(0, 0) is None

        _, second = setup.client.push_and_pull(small_gradient(setup.ps.size), 0,
                                               WorkerReport(env_steps=1), 0, 0)
        assert second.version == 1 and second.aux_version == 1
        expected = (1.0 - 0.05) * first.aux + 0.05 * second.weights
        assert second.aux.tobytes() == expected.astype(np.float32).tobytes()
        assert not np.array_equal(second.aux, second.weights)
        assert setup.client.get_weights(1, 1) is None
        # An up-to-date online set but an old average set: the average set comes anyway.
        aux_only = setup.client.get_weights(1, 0)
        assert aux_only is not None and aux_only.aux.tobytes() == second.aux.tobytes()
    finally:
        stop(setup)


def test_dqn_target_weights_are_sent_only_when_they_changed():
    setup = start("dqn", sync_target_interval=2)
    try:
        initial = setup.client.get_weights(-1, -1)
        assert initial.aux is not None and initial.aux_version == 0
        assert initial.aux.tobytes() == initial.weights.tobytes()

        _, one = setup.client.push_and_pull(small_gradient(setup.ps.size, seed=1), 0,
                                            WorkerReport(env_steps=1), 0, 0)
        assert one.version == 1 and one.aux_version == 0
        assert one.aux is None, "the target set did not change, so it must not be sent"
        with_aux = setup.client.get_weights(0, -1)
        assert with_aux.aux.tobytes() == initial.weights.tobytes()

        _, two = setup.client.push_and_pull(small_gradient(setup.ps.size, seed=2), 1,
                                            WorkerReport(env_steps=1), 1, 0)
        assert two.version == 2 and two.aux_version == 2
        assert two.aux.tobytes() == two.weights.tobytes()
        assert setup.client.get_weights(2, 2) is None
        # In process, the role answers the same way.
        _, three = setup.ps.push_and_pull(small_gradient(setup.ps.size, seed=3), 2,
                                          WorkerReport(env_steps=1), 2, 2)
        assert three.version == 3 and three.aux is None
    finally:
        stop(setup)


# --- shards --------------------------------------------------------------------------------

def test_two_shards_serve_one_job_as_one_parameter_server(tmp_path):
    setup = start("acer", shards=2, save_dir=str(tmp_path), save_interval=10**9)
    twin = start("acer")
    try:
        first = setup.client.get_weights(-1, -1)     # waits until the shard has joined
        assert len(setup.client.get_shards().shards) == 2
        lo, hi = setup.ps.bounds[1]
        assert 0 < lo < hi == setup.ps.layout.size == first.weights.size
        assert first.weights.tobytes() == setup.initial.tobytes()
        # The same pushes on a 2-shard and a 1-shard server give the same weights, as the
        # worker clips the whole gradient and Adam is elementwise.
        held, twin_held = first.version, twin.client.get_weights(-1).version
        for seed in range(3):
            gradient = small_gradient(first.weights.size, seed=seed)
            result, update = setup.client.push_and_pull(gradient, held, WorkerReport(env_steps=2),
                                                        held, held)
            _, twin_update = twin.client.push_and_pull(gradient, twin_held, WorkerReport(
                env_steps=2), twin_held, twin_held)
            held, twin_held = update.version, twin_update.version
            assert result.global_steps == 2 * (seed + 1)
            np.testing.assert_array_equal(update.weights, twin_update.weights)
            np.testing.assert_array_equal(update.aux, twin_update.aux)
        # A checkpoint gathers both slices into one .keras model.
        setup.ps.save_now()
        path = setup.client.status().checkpoints[-1].path
        saved = keras.models.load_model(path, compile=False)
        flat = WeightLayout(synced_weights(saved)).flat([v.numpy() for v in saved.weights])
        np.testing.assert_array_equal(flat, update.weights)
    finally:
        stop(setup)
        stop(twin)


def test_a_sharded_client_remembers_the_weights_it_handed_out_however_many_pushes_follow():
    """The version a worker holds stands for one version per slice; pushes in between must not
    make the client forget it (it would then ask every shard for all of its weights)."""
    setup = start("a3c", shards=2, max_staleness=1000)
    try:
        first = setup.client.get_weights(-1)
        for seed in range(40):
            result, update = setup.client.push_and_pull(
                small_gradient(first.weights.size, seed=seed), first.version,
                WorkerReport(env_steps=1), first.version)
            assert update is None, f"weights came back after push {seed + 1}"
        assert result.version == first.version + 2 * 40     # both slices moved 40 times
    finally:
        stop(setup)


def test_a_lost_shard_is_served_again_from_its_last_snapshot():
    setup = start("a3c", shards=2)
    try:
        first = setup.client.get_weights(-1)
        lo, hi = setup.ps.bounds[1]
        setup.client.push_and_pull(small_gradient(first.weights.size), first.version,
                                   WorkerReport(env_steps=1), first.version)
        snapshot = setup.ps.slots.snapshot()[0]
        assert snapshot.version == 1
        setup.client.push_and_pull(small_gradient(first.weights.size, seed=1), -1,
                                   WorkerReport(env_steps=1), -1)
        # The shard's process goes away; a new one joins and resumes from the snapshot.
        setup.stop_shards.set()
        setup.threads[0].join(10)
        setup.stop_shards.clear()
        replacement = threading.Thread(target=serve_shards, args=(setup.address, "127.0.0.1", 0),
                                       kwargs={"stop": setup.stop_shards}, daemon=True)
        setup.threads.append(replacement)
        replacement.start()
        errors = queue.SimpleQueue()

        def push():
            try:
                setup.client.push_and_pull(small_gradient(first.weights.size, seed=2), -1,
                                           WorkerReport(env_steps=1), -1)
            except Exception as err:  # noqa: BLE001
                errors.put(err)

        pusher = threading.Thread(target=push)
        pusher.start()
        pusher.join(60)
        assert errors.empty(), errors.get()
        update = setup.client.get_weights(-1)
        restored = setup.ps.slots.snapshot()[0]
        assert restored.version == snapshot.version + 1   # the snapshot plus the last push
        assert update.weights[lo:hi].tobytes() == restored.weights.tobytes()
    finally:
        stop(setup)


def test_a_resumed_job_restores_every_slice(tmp_path):
    resume = str(tmp_path / "resume.npz")
    setup = start("dqn", shards=2, resume_file=resume, save_dir=str(tmp_path),
                  save_interval=10**9, sync_target_interval=2)
    try:
        first = setup.client.get_weights(-1, -1)
        held = first.version
        for seed in range(3):
            _, update = setup.client.push_and_pull(small_gradient(first.weights.size, seed=seed),
                                                   held, WorkerReport(env_steps=5), held, held)
            held = update.version
        setup.client.report_evaluation(15, [3.0])
        setup.ps.save_now()
        saved = [setup.ps.snapshot()] + setup.ps.slots.snapshot()
    finally:
        stop(setup)
    # A new parameter server on the same files: every slice as it was, optimizer included.
    resumed = ParameterServer("job", setup.cfg, setup.model, resume_file=resume, shards=2,
                              connect=ShardPeer)
    try:
        states = [resumed.snapshot()] + resumed.slots.snapshot()
        for before, after in zip(saved, states):
            assert after.weights.tobytes() == before.weights.tobytes()
            assert after.aux.tobytes() == before.aux.tobytes()
            assert (after.version, after.aux_version, after.updates) == (
                before.version, before.aux_version, before.updates) == (3, 2, 3)
            for a, b in zip(after.optimizer, before.optimizer, strict=True):
                assert a.tobytes() == b.tobytes()
        status = resumed.status()
        assert status.resumed_from_steps == status.global_steps == 15
        assert [(e.global_steps, e.mean_return) for e in status.evaluations] == [(15, 3.0)]
    finally:
        resumed.slots.close()


def test_a_killed_server_resumes_with_what_was_reported_after_its_last_checkpoint(tmp_path):
    resume = str(tmp_path / "resume.npz")
    setup = start("a3c", resume_file=resume, save_dir=str(tmp_path), save_interval=10**9)
    try:
        client = setup.client
        client.push_and_pull(None, 0, WorkerReport(env_steps=10, episode_returns=[1.0, 2.0]), 0)
        client.report_evaluation(10, [5.0])
        setup.ps.save_now()
        client.push_and_pull(None, 0, WorkerReport(env_steps=6, episode_returns=[3.0]), 0)
        client.report_evaluation(16, [7.0])
        # Not saved anywhere: a kill now loses it, as it loses the steps since the checkpoint.
        client.push_and_pull(None, 0, WorkerReport(env_steps=4, episode_returns=[4.0]), 0)
    finally:
        stop(setup)         # no final save: as if the process had been killed
    resumed = ParameterServer("job", setup.cfg, setup.model, resume_file=resume)
    status = resumed.status()
    # The weights and the steps go back to the checkpoint; what the job reported does not.
    assert status.resumed_from_steps == status.global_steps == 10
    assert [(e.global_steps, e.mean_return) for e in status.evaluations] == [(10, 5.0), (16, 7.0)]
    assert status.episodes == 3 and status.recent_returns == [1.0, 2.0, 3.0]
    # An evaluator that rejoins and reports a step the job has evaluated changes nothing.
    resumed.report_evaluation(10, [9.0])
    resumed.push_and_pull(None, 0, WorkerReport(env_steps=3, episode_returns=[6.0]), 0)
    resumed.report_evaluation(13, [8.0])
    again = ParameterServer("job", setup.cfg, setup.model, resume_file=resume).status()
    assert [(e.global_steps, e.mean_return) for e in again.evaluations] == [
        (10, 5.0), (16, 7.0), (13, 8.0)]
    assert again.episodes == 4 and again.global_steps == 10


# --- refusals: every bad value is refused with a proper code and changes nothing -----------

def test_bad_reports_are_refused_before_the_gradient_is_applied(a3c):
    before = a3c.client.get_weights(-1)
    cases = {
        "negative env_steps": (WorkerReport(env_steps=-2**63), grpc.StatusCode.OUT_OF_RANGE,
                               "report.env_steps"),
        "huge env_steps": (WorkerReport(env_steps=2**62), grpc.StatusCode.OUT_OF_RANGE,
                           "report.env_steps"),
        "100,000 returns": (WorkerReport(env_steps=1, episode_returns=[1.0] * 100_000),
                            grpc.StatusCode.RESOURCE_EXHAUSTED, "report.episode_returns"),
        "infinite return": (WorkerReport(env_steps=1, episode_returns=[float("inf")]),
                            grpc.StatusCode.INVALID_ARGUMENT, "report.episode_returns"),
        "NaN loss": (WorkerReport(env_steps=1, stats={"loss": float("nan")}),
                     grpc.StatusCode.INVALID_ARGUMENT, "report.stats['loss']"),
        "negative length": (WorkerReport(env_steps=1, episode_returns=[1.0],
                                         episode_lengths=[-1]),
                            grpc.StatusCode.OUT_OF_RANGE, "report.episode_lengths"),
    }
    for name, (report, code, field) in cases.items():
        err = rpc_error(lambda: a3c.client.push_and_pull(small_gradient(a3c.ps.size), 0,
                                                         report, 0))
        assert err.code() == code, (name, err.details())
        assert err.details().startswith(field), (name, err.details())
    status = a3c.client.status()
    assert (status.version, status.updates, status.global_steps, status.episodes) == (0, 0, 0, 0)
    assert a3c.client.get_weights(-1).weights.tobytes() == before.weights.tobytes()


def test_bad_evaluations_are_refused_and_cannot_end_the_job(a3c):
    a3c.client.push_and_pull(None, 0, WorkerReport(env_steps=100), 0)
    cases = {"infinite return": (50, [float("inf")], grpc.StatusCode.INVALID_ARGUMENT),
             "no returns": (50, [], grpc.StatusCode.INVALID_ARGUMENT),
             "negative steps": (-5, [1.0], grpc.StatusCode.OUT_OF_RANGE),
             "steps not reached yet": (10_000, [1.0], grpc.StatusCode.OUT_OF_RANGE)}
    with make_channel(a3c.address) as channel:       # the status codes on the wire
        stub = pb_grpc.ParameterServerStub(channel)
        for name, (steps, returns, code) in cases.items():
            err = rpc_error(lambda: stub.ReportEvaluation(pb.EvaluationReport(
                job_id=a3c.job.job_id, global_steps=steps, returns=returns), timeout=TIMEOUT))
            assert err.code() == code, name
    status = a3c.client.status()
    assert status.running and status.evaluations == []
    assert not a3c.client.report_evaluation(100, [1.0, 2.0]).stop
    assert len(a3c.client.status().evaluations) == 1


class ResumedWhileEvaluating:
    """A parameter client whose first status is 5,000 steps ahead of the server: as if the
    server resumed from an earlier checkpoint while the evaluator ran its episodes. Its second
    status stops the job, so that the evaluator returns."""

    def __init__(self, client):
        self.client, self.calls = client, 0

    def status(self):
        self.calls += 1
        status = self.client.status()
        if self.calls == 1:
            return dataclasses.replace(status, global_steps=status.global_steps + 5000)
        return self.client.stop("test over")

    def __getattr__(self, name):
        return getattr(self.client, name)


def test_an_evaluation_the_job_has_gone_back_from_is_dropped_and_the_evaluator_goes_on(caplog):
    from drlbox.launch.processes import make_following_evaluator
    from drlbox.roles.limits import OutOfRange

    setup = start("a3c", eval_interval=1000, eval_episodes=1)
    try:
        setup.client.push_and_pull(None, 0, WorkerReport(env_steps=1500), -1)
        with pytest.raises(OutOfRange, match="global_steps"):     # over gRPC, as in process
            setup.client.report_evaluation(9000, [1.0])
        evaluator = make_following_evaluator(ResumedWhileEvaluating(setup.client), setup.job)
        with caplog.at_level("WARNING", logger="drlbox.roles.evaluator"):
            assert evaluator.run() == 1
        assert "evaluation at 6500 steps dropped" in caplog.text
        assert setup.client.status().evaluations == []
    finally:
        stop(setup)


class TrainsOnThenStops:
    """A parameter client for a job that stays put for two status reads, is then 600 steps on,
    and stops at the fourth read, so that the evaluator returns."""

    def __init__(self, client):
        self.client, self.calls = client, 0

    def status(self):
        self.calls += 1
        if self.calls == 3:
            self.client.push_and_pull(None, 0, WorkerReport(env_steps=600), -1)
        return self.client.stop("test over") if self.calls == 4 else self.client.status()

    def __getattr__(self, name):
        return getattr(self.client, name)


def test_an_evaluator_joining_an_evaluated_job_goes_on_after_its_last_evaluation():
    from drlbox.launch.processes import make_following_evaluator

    setup = start("a3c", eval_interval=1000, eval_episodes=1)
    try:
        # As after a parameter-server restart: the job was evaluated at the step it is at.
        setup.client.push_and_pull(None, 0, WorkerReport(env_steps=1500), -1)
        setup.client.report_evaluation(1500, [1.0])
        evaluator = make_following_evaluator(TrainsOnThenStops(setup.client), setup.job)
        assert evaluator.run() == 1
        assert [e.global_steps for e in setup.client.status().evaluations] == [1500, 2100]
    finally:
        stop(setup)


def test_requests_that_do_not_parse_or_overflow_are_refused_by_name(a3c):
    channel = make_channel(a3c.address)
    try:
        call = channel.unary_unary("/drlbox.v1.ParameterServer/GetStatus")
        err = rpc_error(lambda: call(b"\xff\xff\xff", timeout=TIMEOUT))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "GetStatus" in err.details() and "StatusRequest" in err.details()
        stub = pb_grpc.ParameterServerStub(channel)
        err = rpc_error(lambda: stub.Stop(pb.StopRequest(job_id=a3c.job.job_id,
                                                         reason="x" * 10_000), timeout=TIMEOUT))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "reason" in err.details()
        err = rpc_error(lambda: list(stub.JoinShard(
            pb.JoinShardRequest(address="not an address"), timeout=TIMEOUT)))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "address" in err.details()
    finally:
        channel.close()
    assert a3c.client.status().running
