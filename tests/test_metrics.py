"""Prometheus metrics of real cluster roles (`python -m drlbox.cli ...` processes on loopback).

One ACER job with replay, an evaluator and a second parameter-server shard exercises every
role; each role's `/metrics` is scraped over HTTP while the job runs and after it ends, and
read with prometheus_client's own parser, as Prometheus would.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import wait_until
from drlbox.client import Client
from drlbox.rpc.server import wait_healthy

TOKEN = "test-token-metrics"
START_TIMEOUT = 120.0
ROLES = ("parameter-server", "ps-shard", "replay", "evaluator", "worker")


def features(space):
    import keras

    inp = keras.Input(space.shape)
    return inp, keras.layers.Dense(16, activation="tanh")(inp)


def scrape(port: int) -> dict:
    """{(sample name, frozenset of labels): value} of the role's /metrics page."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"{name}{labels} not scraped; got {sorted(n for n, _ in samples)}"
    return samples[key]


class MeteredCluster:
    """One process per role, each serving metrics on a port of its own."""

    def __init__(self, base: int, data_dir: str):
        self.ports = {role: base + i for i, role in enumerate(ROLES)}
        self.metrics = {role: base + len(ROLES) + i for i, role in enumerate(ROLES)}
        self.ps_address = f"127.0.0.1:{self.ports['parameter-server']}"
        self.procs: list[subprocess.Popen] = []
        self._spawn("parameter-server", "--data-dir", data_dir, "--shards", "2")
        assert wait_healthy(self.ps_address, START_TIMEOUT), "parameter server did not start"
        self._spawn("ps-shard", "--ps", self.ps_address)
        self._spawn("replay", "--ps", self.ps_address)
        self._spawn("evaluator", "--ps", self.ps_address)
        self._spawn("worker", "--ps", self.ps_address,
                    "--replay", f"127.0.0.1:{self.ports['replay']}")
        for role in ROLES[1:]:
            assert wait_healthy(f"127.0.0.1:{self.ports[role]}", START_TIMEOUT), role

    def _spawn(self, role: str, *args: str) -> None:
        env = dict(os.environ, DRLBOX_TOKEN=TOKEN, DRLBOX_HOST="127.0.0.1",
                   DRLBOX_METRICS_PORT=str(self.metrics[role]), TF_CPP_MIN_LOG_LEVEL="2")
        self.procs.append(subprocess.Popen(
            [sys.executable, "-m", "drlbox.cli", role, "--port", str(self.ports[role]), *args],
            env=env))

    def scrape(self, role: str) -> dict:
        return scrape(self.metrics[role])

    def close(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def cluster(port_base, tmp_path):
    running = MeteredCluster(port_base(2 * len(ROLES)), str(tmp_path / "data"))
    yield running
    running.close()


@pytest.mark.slow
def test_every_role_reports_what_the_job_did(cluster):
    import gymnasium

    with Client(cluster.ps_address, token=TOKEN, retry_seconds=30) as client:
        idle = cluster.scrape("parameter-server")
        assert value(idle, "drlbox_job_queue_length") == 0
        assert not any(name.startswith("drlbox_env_steps") for name, _ in idle)
        # It ends on its first evaluation (any return reaches 1), at 3000 steps or more: a job
        # ending on train_steps could end before the evaluator joined, with nothing to report.
        job = client.submit("acer", env_maker=lambda: gymnasium.make("CartPole-v1"),
                            feature_maker=features, train_steps=1_000_000, rollout_maxlen=8,
                            batch_size=4, replay_type="uniform", replay_ratio=1,
                            replay_kwargs={"maxlen": 200, "minlen": 8}, eval_interval=3000,
                            eval_episodes=2, target_return=1.0,
                            opt_kwargs={"learning_rate": 2e-3})
        jid = job.job_id

        # While it runs: the step counter moves, and each weight slice applies updates.
        def steps() -> float:
            samples = cluster.scrape("parameter-server")
            return samples.get(("drlbox_env_steps_total", frozenset({("job", jid)})), 0)

        wait_until(lambda: steps() > 0, 120, "env steps in the parameter server's metrics")
        running = cluster.scrape("parameter-server")
        assert value(running, "drlbox_job_running", job=jid) == 1
        assert value(running, "drlbox_jobs", state="running") == 1
        shard = wait_until(lambda: cluster.scrape("ps-shard").get(
            ("drlbox_slice_updates_total", frozenset({("job", jid), ("slice", "1")}))), 60,
            "updates in the shard's metrics")
        assert shard > 0
        shard_samples = cluster.scrape("ps-shard")
        applied = value(shard_samples, "drlbox_slice_apply_seconds_count", job=jid, slice="1")
        assert applied >= shard
        status = job.wait(timeout=240)
        assert status.state == "done", status.message

    ps = cluster.scrape("parameter-server")
    assert value(ps, "drlbox_env_steps_total", job=jid) == status.global_steps >= 3000
    updates = value(ps, "drlbox_gradient_updates_total", job=jid)
    assert updates == status.updates > 0
    assert value(ps, "drlbox_train_steps", job=jid) == 1_000_000
    assert value(ps, "drlbox_job_running", job=jid) == 0
    assert value(ps, "drlbox_jobs", state="done") == 1
    assert value(ps, "drlbox_env_steps_per_second", job=jid) > 0
    assert value(ps, "drlbox_episodes_total", job=jid) == status.episodes > 0
    assert value(ps, "drlbox_slice_apply_seconds_count", job=jid, slice="0") == updates
    assert value(ps, "drlbox_slice_apply_seconds_bucket", job=jid, slice="0", le="+Inf") == \
        updates
    assert 0 < value(ps, "drlbox_staleness_count", job=jid) <= updates
    assert value(ps, "drlbox_evaluations_total", job=jid) == len(status.evaluations) >= 1
    # (The SDK's status carries returns as float32.)
    last_eval = pytest.approx(status.evaluations[-1].mean_return, rel=1e-6)
    assert value(ps, "drlbox_evaluation_mean_return", job=jid) == last_eval
    assert value(ps, "process_cpu_seconds_total") > 0

    # The one worker reported every step the job counted (and perhaps a last batch that
    # arrived once the job had ended), and timed each exchange.
    worker = cluster.scrape("worker")
    batch_steps = 4 * 8
    assert status.global_steps <= value(worker, "drlbox_worker_env_steps_total", job=jid) <= \
        status.global_steps + batch_steps
    pushes = value(worker, "drlbox_worker_pushes_total", job=jid)
    assert pushes >= updates
    # An exchange is timed once answered: the last one may have found the job gone.
    assert value(worker, "drlbox_worker_push_seconds_count", job=jid) >= pushes - 1
    assert value(worker, "drlbox_worker_push_seconds_sum", job=jid) > 0
    assert value(worker, "drlbox_worker_episodes_total", job=jid) >= status.episodes
    assert value(worker, "drlbox_worker_episode_return_mean", job=jid) > 0

    replay = cluster.scrape("replay")
    size = value(replay, "drlbox_replay_size", job=jid)
    assert 0 < size <= value(replay, "drlbox_replay_capacity", job=jid) == 200
    assert value(replay, "drlbox_replay_inserted_lists_total", job=jid) >= size
    assert value(replay, "drlbox_replay_sampled_batches_total", job=jid) > 0

    evaluator = cluster.scrape("evaluator")
    assert value(evaluator, "drlbox_evaluator_evaluations_total", job=jid) == \
        len(status.evaluations)
    assert value(evaluator, "drlbox_evaluator_mean_return", job=jid) == last_eval


def test_bucket_counts_follow_prometheus_le_buckets():
    from drlbox.metrics import BucketCounts

    counts = BucketCounts((0, 1, 4))
    for staleness in (0, 0, 1, 2, 4, 5, 100):
        counts.observe(staleness)
    assert counts.cumulative() == [("0.0", 2), ("1.0", 3), ("4.0", 5), ("+Inf", 7)]
    assert counts.sum == 112


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _replay_role(*args: str, metrics: str | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRLBOX_")}
    if metrics is not None:
        env["DRLBOX_METRICS_PORT"] = metrics
    return subprocess.Popen([sys.executable, "-m", "drlbox.cli", "replay", "--host", "127.0.0.1",
                             "--ps", "127.0.0.1:1", *args], env=env, text=True,
                            stderr=subprocess.PIPE)


def test_a_bad_metrics_port_is_refused_naming_it():
    done = _replay_role("--port", str(_free_port()), metrics="ninety")
    _, err = done.communicate(timeout=60)
    assert done.returncode == 2 and "DRLBOX_METRICS_PORT" in err and "'ninety'" in err


def test_a_taken_metrics_port_leaves_the_role_serving_without_metrics():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = _free_port()
        role = _replay_role("--port", str(port), "--metrics-port",
                            str(taken.getsockname()[1]))
        try:
            assert wait_healthy(f"127.0.0.1:{port}", START_TIMEOUT)
        finally:
            role.terminate()
            _, err = role.communicate(timeout=30)
    assert "metrics off" in err and "--metrics-port" in err


@pytest.mark.slow
def test_a_local_run_serves_metrics_when_given_a_port_base(port_base, monkeypatch):
    from conftest import cartpole, small_features
    from drlbox.metrics import PORT_BASE_VARIABLE
    from drlbox.trainer import make_trainer

    metrics = port_base(4)
    monkeypatch.setenv(PORT_BASE_VARIABLE, str(metrics))
    seen: dict = {}
    done = threading.Event()

    def watch(role: str, port: int) -> None:    # the roles exit with the run: read them now
        while not done.is_set():
            try:
                seen[role] = scrape(port)
            except OSError:
                pass
            time.sleep(0.1)

    watchers = [threading.Thread(target=watch, args=args, daemon=True)
                for args in (("parameter-server", metrics), ("worker", metrics + 3))]
    for watcher in watchers:
        watcher.start()
    try:
        result = make_trainer("a3c", env_maker=cartpole, feature_maker=small_features,
                              # long enough to be scraped while it runs (it starts in ~2 s)
                              num_parallel=1, train_steps=20_000, rollout_maxlen=8, batch_size=4,
                              port_begin=port_base(4)).run()
    finally:
        done.set()
        for watcher in watchers:
            watcher.join()
    job = {"job": result.job_id}
    assert 0 < value(seen["parameter-server"], "drlbox_env_steps_total", **job) <= \
        result.global_steps
    assert 0 < value(seen["worker"], "drlbox_worker_env_steps_total", **job) <= \
        result.global_steps
