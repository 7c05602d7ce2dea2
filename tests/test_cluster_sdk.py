"""The SDK against real cluster-mode roles on loopback (`python -m drlbox.cli ...` processes).

Covers what a user of a running cluster does: submit (lambda makers), wait, read metrics,
fetch and load a checkpoint, queue two jobs, cancel, and get refused without the token. The
parameter-server restart test kills it mid-job and checks the job resumes and completes.
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time

import cloudpickle
import grpc
import pytest

from drlbox.client import Client, ClusterUnavailable, _user_modules_by_value
from drlbox.config import trainer_config
from drlbox.jobs import python_version
from drlbox.rpc.generated import job_control_pb2 as jc_pb
from drlbox.rpc.generated import job_control_pb2_grpc as jc_grpc
from drlbox.rpc.security import Security
from drlbox.rpc.server import make_channel, wait_healthy
from tests.conftest import START_TIMEOUT, TOKEN, Cluster, free_cluster_ports, wait_until

pytestmark = pytest.mark.slow


def features(space):
    import keras

    inp = keras.Input(space.shape)
    return inp, keras.layers.Dense(32, activation="tanh")(inp)


def cartpole_job(**overrides):
    """Small A3C CartPole settings; the env maker is a lambda (pickled by value)."""
    import gymnasium

    settings = dict(env_maker=lambda: gymnasium.make("CartPole-v1"), feature_maker=features,
                    train_steps=4000, save_interval=1000, rollout_maxlen=8, batch_size=4,
                    opt_kwargs={"learning_rate": 2e-3})
    settings.update(overrides)
    return settings


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    running = Cluster(free_cluster_ports(), str(tmp_path_factory.mktemp("cluster-data")),
                      workers=2, replay=True, evaluator=True)
    yield running
    running.close()


@pytest.fixture
def client(cluster):
    with Client(cluster.ps_address, token=TOKEN, retry_seconds=30) as c:
        yield c


def test_sdk_imports_without_tensorflow():
    code = ("import sys, drlbox.client; "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_bad_arguments_fail_in_the_users_process_with_the_local_message():
    client = Client("127.0.0.1:1", retry_seconds=0.1)   # nothing listens: nothing is sent
    for bad in ({"train_steps": 0}, {"acer_kl_weight": 0.1}, {"discount": 2}):
        with pytest.raises((TypeError, ValueError)) as local:
            trainer_config("a3c", **cartpole_job(**bad))
        with pytest.raises(type(local.value)) as remote:
            client.submit("a3c", **cartpole_job(**bad))
        assert str(remote.value) == str(local.value)
    with pytest.raises(ClusterUnavailable, match="did not answer"):
        client.submit("a3c", **cartpole_job())


def test_job_trains_and_its_checkpoint_loads_and_evaluates(client, tmp_path):
    import keras

    import drlbox.layers  # noqa: F401  (registers drlbox's layers with Keras)
    from drlbox.evaluator import make_evaluator

    # The job ends on its first evaluation (any CartPole return reaches 1), so it cannot end
    # before the evaluator, which joins a second or so after the workers, has played.
    job = client.submit("a3c", **cartpole_job(train_steps=1_000_000, eval_interval=2000,
                                              eval_episodes=2, target_return=1.0))
    status = job.wait(timeout=300, progress=True)
    assert status.state == "done", status.message
    assert "target_return" in status.message and status.global_steps >= 2000
    metrics = job.metrics()
    assert metrics["evaluations"], "the cluster's evaluator reported nothing"
    assert metrics["episodes"] > 0 and metrics["episode_returns"]
    assert metrics["steps_per_sec"] > 0 and "policy_loss" in metrics["losses"]
    # Two workers push in turn: each one's weights lag by about the other's update.
    assert 0.0 <= metrics["staleness"] <= 4.0 and "staleness" not in metrics["losses"]
    saved = job.checkpoints()
    steps = [c.global_steps for c in saved]
    # Periodic checkpoints in step order, then the final model: the weights the evaluation
    # judged, which may be older than the last periodic checkpoint saved while it played.
    assert steps[:-1] == sorted(steps[:-1]) and steps[0] >= 1000
    assert os.path.basename(saved[-1].path) == "model_final.keras"
    # (No older than the evaluation that ended the job: its weights, or newer ones.)
    assert metrics["evaluations"][-1][0] <= steps[-1] <= status.global_steps
    path = job.fetch_checkpoint(path=str(tmp_path))     # the newest save: the final model
    assert os.path.basename(path) == f"{job.job_id}_model_final.keras"
    model = keras.models.load_model(path, compile=False)
    assert model.count_params() > 0
    earlier = job.fetch_checkpoint(step=steps[0], path=str(tmp_path / "early.keras"))
    assert os.path.getsize(earlier) > 0
    import gymnasium

    result = make_evaluator("a3c", env_maker=lambda: gymnasium.make("CartPole-v1"),
                            load_model=path, num_episodes=2).run()
    assert len(result.returns) == 2
    with pytest.raises(LookupError, match="no checkpoint at 7 steps"):
        job.fetch_checkpoint(step=7, path=str(tmp_path))


def test_the_same_job_submitted_twice_runs_twice_in_turn(client):
    # DQN with replay: the second job also gets a fresh memory on the same replay server.
    dqn = cartpole_job(replay_type="uniform", replay_kwargs={"maxlen": 500, "minlen": 20},
                       policy_eps_decay_steps=2000, sync_target_interval=50)
    first = client.submit("dqn", **dqn)
    second = client.submit("dqn", **dqn)
    assert first.job_id != second.job_id
    assert second.status().state == "queued" and second.status().queue_position >= 1
    done_first = first.wait(timeout=300)
    done_second = second.wait(timeout=300)
    assert done_first.state == done_second.state == "done", (done_first.message,
                                                              done_second.message)
    assert done_second.global_steps >= 4000 and done_second.updates > 0
    ids = [s.job_id for s in client.jobs()]
    assert ids.index(first.job_id) < ids.index(second.job_id)


def test_cancel_stops_the_job_and_its_workers_go_idle(client, cluster):
    job = client.submit("a3c", **cartpole_job(train_steps=10_000_000))
    wait_until(lambda: job.status().global_steps > 500, 120, "the job to make progress")
    wait_until(lambda: all(s == ("running", job.job_id) for s in cluster.worker_states()), 60,
               "both workers to join")
    status = job.cancel()
    assert status.state == "cancelled"
    wait_until(lambda: all(s[0] == "idle" for s in cluster.worker_states()), 60,
               "the workers to go idle")
    steps = job.status().global_steps
    time.sleep(1.0)
    assert job.status().global_steps == steps
    assert job.status().state == "cancelled"


def test_calls_without_the_right_token_are_refused_and_change_nothing(client, cluster):
    before = [s.job_id for s in client.jobs()]
    for token in (None, "wrong"):
        with Client(cluster.ps_address, token=token, retry_seconds=5) as stranger:
            with pytest.raises(PermissionError, match="token"):
                stranger.submit("a3c", **cartpole_job())
            with pytest.raises(PermissionError):
                stranger.jobs()
    assert [s.job_id for s in client.jobs()] == before
    # Health stays open so probes need no secret.
    assert wait_healthy(cluster.ps_address, 5.0)


def _raw_submit(address: str, chunks: list) -> grpc.RpcError:
    with make_channel(address, Security(token=TOKEN)) as channel:
        with pytest.raises(grpc.RpcError) as err:
            jc_grpc.JobControlStub(channel).Submit(iter(chunks), timeout=30)
    return err.value


def test_malformed_oversized_and_wrong_python_jobs_are_refused(client, cluster):
    before = [s.job_id for s in client.jobs()]
    err = _raw_submit(cluster.ps_address, [jc_pb.SubmitChunk(
        python_version=python_version(), algorithm="a3c", config=b"not a pickle")])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "could not be loaded" in err.details()
    err = _raw_submit(cluster.ps_address, [jc_pb.SubmitChunk(
        python_version=python_version(), algorithm="a3c", config=b"x" * (17 << 20))])
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    err = _raw_submit(cluster.ps_address, [jc_pb.SubmitChunk(
        python_version="3.9", algorithm="a3c", config=b"x")])
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "3.9" in err.details() and python_version() in err.details()
    # A config built around the SDK's checks is checked again before anything is allocated.
    config = dataclasses.replace(trainer_config("dqn", **cartpole_job(replay_type="uniform")),
                                 replay_kwargs={"maxlen": 10**12})
    with _user_modules_by_value(config):       # as the SDK sends this test's feature maker
        data = cloudpickle.dumps(config)
    err = _raw_submit(cluster.ps_address, [jc_pb.SubmitChunk(
        python_version=python_version(), algorithm="dqn", config=data)])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "maxlen" in err.details()
    # The algorithm the submission names is checked before anything is unpickled, and again
    # against the config it carries.
    err = _raw_submit(cluster.ps_address, [jc_pb.SubmitChunk(
        python_version=python_version(), algorithm="ppo", config=b"not even read")])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "algorithm" in err.details()
    assert "ppo" in err.details()
    with _user_modules_by_value(config):
        data = cloudpickle.dumps(trainer_config("dqn", **cartpole_job()))
    err = _raw_submit(cluster.ps_address, [jc_pb.SubmitChunk(
        python_version=python_version(), algorithm="a3c", config=data)])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "'a3c'" in err.details()
    assert "'dqn'" in err.details()
    assert [s.job_id for s in client.jobs()] == before


def test_roles_refuse_to_listen_beyond_loopback_without_a_token():
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRLBOX_")}
    done = subprocess.run([sys.executable, "-m", "drlbox.cli", "worker", "--host", "0.0.0.0",
                           "--ps", "127.0.0.1:1"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and "without a token" in done.stderr
    done = subprocess.run([sys.executable, "-m", "drlbox.cli", "worker", "--ps", "127.0.0.1:1",
                           "--token", "REPLACE-ME-drlbox-placeholder-token-not-secret"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "placeholder token" in done.stderr


def test_parameter_server_restart_resumes_the_job_and_workers_rejoin(port_base, tmp_path):
    cluster = Cluster(port_base(6), str(tmp_path / "data"), workers=2)
    try:
        client = Client(cluster.ps_address, token=TOKEN, retry_seconds=120)
        job = client.submit("a3c", **cartpole_job(train_steps=30_000, save_interval=2000))
        wait_until(lambda: job.status().global_steps > 8000, 180, "progress past a checkpoint")
        cluster.kill("parameter-server")
        with pytest.raises(ClusterUnavailable):
            Client(cluster.ps_address, token=TOKEN, retry_seconds=1).jobs()
        # A worker started while the parameter server is down joins the resumed job too. (Not
        # started after the parameter server: the job could end before a slow start joined.)
        cluster.kill("worker-1")
        cluster.start("worker-1", "worker", cluster.worker_ports[1])
        cluster.start_parameter_server()
        status = job.wait(timeout=300)
        assert status.state == "done", status.message
        assert status.resumed_from_steps >= 2000
        assert status.global_steps >= 30_000
        assert status.checkpoints[-1].global_steps == status.global_steps
        assert all(job_id == job.job_id for _, job_id in cluster.worker_states())
        client.close()
    finally:
        cluster.close()


def _evaluated_since_the_last_checkpoint(job, save_interval):
    """The job's status once an evaluation was reported after its last checkpoint, well
    before the next one (so that a kill now loses that evaluation unless it was saved)."""
    s = job.status()
    evaluated, saved = [e.global_steps for e in s.evaluations], s.checkpoints
    if evaluated and saved and max(evaluated) > saved[-1].global_steps and \
            s.global_steps < saved[-1].global_steps + save_interval // 2:
        return s
    return None


def test_what_a_job_reported_before_its_parameter_server_was_killed_is_in_its_final_status(
        port_base, tmp_path):
    cluster = Cluster(port_base(6), str(tmp_path / "data"), workers=2, evaluator=True)
    try:
        client = Client(cluster.ps_address, token=TOKEN, retry_seconds=120)
        job = client.submit("a3c", **cartpole_job(train_steps=40_000, save_interval=8000,
                                                  eval_interval=1000, eval_episodes=2))
        before = wait_until(lambda: _evaluated_since_the_last_checkpoint(job, 8000), 240,
                            "an evaluation after a checkpoint")
        cluster.kill("parameter-server")
        cluster.start_parameter_server()
        status = job.wait(timeout=300)
        assert status.state == "done", status.message
        assert 0 < status.resumed_from_steps < max(e.global_steps for e in before.evaluations)
        # Every evaluation reported before the kill is kept, the one the resumed job went back
        # from included, and no step is evaluated twice (the rejoining evaluator goes on).
        steps = [e.global_steps for e in status.evaluations]
        assert set(e.global_steps for e in before.evaluations) <= set(steps), (before, steps)
        assert len(steps) == len(set(steps)), f"an evaluation appears twice: {steps}"
        assert [s for s, _ in job.metrics()["evaluations"]] == steps
        client.close()
    finally:
        cluster.close()


def test_a_sharded_job_survives_a_killed_shard_and_a_restarted_parameter_server(port_base,
                                                                               tmp_path):
    cluster = Cluster(port_base(6), str(tmp_path / "data"), workers=2, shards=2)
    try:
        client = Client(cluster.ps_address, token=TOKEN, retry_seconds=120)
        job = client.submit("a3c", **cartpole_job(train_steps=40_000, save_interval=2000))
        wait_until(lambda: job.status().global_steps > 6000, 180, "progress past a checkpoint")
        # A shard process dies: a new one takes its slice from the last snapshot.
        cluster.kill("ps-shard-1")
        killed_at = job.status().global_steps
        cluster.start("ps-shard-1", "ps-shard", cluster.shard_ports[0])
        wait_until(lambda: job.status().global_steps > killed_at + 6000, 180,
                   "progress after the shard came back")
        # The parameter server dies: it resumes the job with every slice restored.
        cluster.kill("parameter-server")
        cluster.start_parameter_server()
        status = job.wait(timeout=300)
        assert status.state == "done", status.message
        assert status.resumed_from_steps >= 6000
        assert status.global_steps >= 40_000
        path = job.fetch_checkpoint(path=str(tmp_path))
        import keras

        assert keras.models.load_model(path, compile=False).count_params() > 0
        client.close()
    finally:
        cluster.close()


def test_tls_with_a_token_serves_tls_clients_only(port_base, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    port = port_base(1)
    env = dict(os.environ, DRLBOX_TOKEN=TOKEN, DRLBOX_TLS_CERT=str(cert), DRLBOX_TLS_KEY=str(key),
               TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen([sys.executable, "-m", "drlbox.cli", "parameter-server", "--host",
                             "127.0.0.1", "--port", str(port), "--data-dir",
                             str(tmp_path / "data")], env=env)
    address = f"127.0.0.1:{port}"
    try:
        assert wait_healthy(address, START_TIMEOUT, Security(tls_ca=cert.read_bytes()))
        with Client(address, token=TOKEN, tls_ca=str(cert)) as client:
            assert client.jobs() == []
        with Client(address, token=TOKEN, retry_seconds=2) as plain:
            with pytest.raises(ClusterUnavailable):
                plain.jobs()
        health = subprocess.run([sys.executable, "-m", "drlbox.cli", "health", address,
                                 "--tls-ca", str(cert)], env=env, capture_output=True,
                                text=True, timeout=60)
        assert health.returncode == 0 and "SERVING" in health.stdout
    finally:
        proc.terminate()
        proc.wait(30)
