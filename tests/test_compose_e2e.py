"""End to end with real Docker: `make images`, `make up WORKERS=2 PS_SHARDS=2`, the SDK and the
`drlbox` job commands, `make tensorboard`, a killed worker and a killed parameter-server shard,
`make down`. Skipped where no Docker engine answers, except in CI (CI=true) or with
DRLBOX_E2E=1, where a missing engine is a failure. Prints how long each step took.

The cluster runs as its own compose project on its own loopback port, so a developer's
`make up` cluster is left alone.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROJECT = "drlbox-e2e"
pytestmark = pytest.mark.slow


def docker_works() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def required() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("DRLBOX_E2E") == "1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Steps:
    """Runs and times each step, printing the time it took (past pytest's capture)."""

    def __init__(self, capsys):
        self.capsys = capsys
        self.times: list[tuple[str, float]] = []

    def say(self, line: str) -> None:
        with self.capsys.disabled():
            print(line, flush=True)

    def __call__(self, name: str, fn, *args, **kwargs):
        start = time.monotonic()
        try:
            return fn(*args, **kwargs)
        finally:
            seconds = time.monotonic() - start
            self.times.append((name, seconds))
            self.say(f"e2e: {name}: {seconds:.1f} s")


def make(target: str, env: dict, timeout: float = 1800) -> str:
    done = subprocess.run(["make", "-s", target, *[f"{k}={v}" for k, v in env.items()]],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **env))
    assert done.returncode == 0, f"make {target} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout


def project_containers(all_states: bool = True) -> list[str]:
    args = ["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}"]
    out = subprocess.run(args + (["-a"] if all_states else []), capture_output=True, text=True,
                         check=True).stdout
    return out.split()


def service_containers(service: str = "worker") -> list[str]:
    out = subprocess.run(["docker", "ps", "-q", "--filter",
                          f"label=com.docker.compose.project={PROJECT}", "--filter",
                          f"label=com.docker.compose.service={service}"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def features(space):
    import keras

    inp = keras.Input(space.shape)
    return inp, keras.layers.Dense(64, activation="tanh")(inp)


def test_compose_cluster_trains_survives_a_killed_worker_and_comes_down(tmp_path, capsys):
    if not docker_works():
        if required():
            pytest.fail("no Docker engine answers `docker info`; CI must install and start it "
                        "(images/ensure-docker.sh, run by .ci/run)")
        pytest.skip("no Docker engine here (run `make docker-setup`, or set DRLBOX_E2E=1)")
    import gymnasium
    import keras

    from drlbox.client import Client
    from drlbox.evaluator import make_evaluator

    token = secrets.token_urlsafe(16)
    env = {"CLUSTER_PROJECT": PROJECT, "WORKERS": "2", "PS_SHARDS": "2", "DRLBOX_TOKEN": token,
           "DRLBOX_SDK_PORT": str(free_port())}
    step = Steps(capsys)
    step("make images (cached layers reused)", make, "images", env)
    try:
        step("make up WORKERS=2 PS_SHARDS=2 (until healthy)", make, "up", env)
        assert len(service_containers()) == 2
        assert len(service_containers("ps-shard")) == 1
        address = f"127.0.0.1:{env['DRLBOX_SDK_PORT']}"
        client = Client(address, token=token, retry_seconds=120)
        settings = dict(env_maker=lambda: gymnasium.make("CartPole-v1"), feature_maker=features,
                        rollout_maxlen=8, batch_size=4, opt_kwargs={"learning_rate": 2e-3},
                        save_interval=5000)

        job = step("submit", client.submit, "a3c", train_steps=20_000, **settings)
        status = step("train 20k steps (A3C CartPole)", job.wait, timeout=900)
        assert status.state == "done", status.message
        path = step("fetch the latest checkpoint", job.fetch_checkpoint, path=str(tmp_path))
        model = keras.models.load_model(path, compile=False)
        assert model.count_params() > 0
        result = step("evaluate it", make_evaluator("a3c", load_model=path, num_episodes=5,
                                                    env_maker=lambda: gymnasium.make(
                                                        "CartPole-v1")).run)
        assert len(result.returns) == 5

        # The same from the shell: `drlbox jobs/status/fetch` with the cluster's address+token.
        cli_env = {"DRLBOX_ADDRESS": address, "DRLBOX_TOKEN": token}
        listed = step("drlbox jobs", drlbox_cli, cli_env, "jobs")
        assert any(line.split()[:3] == [job.job_id, "a3c", "done"]
                   for line in listed.splitlines()), listed
        shown = step("drlbox status JOB", drlbox_cli, cli_env, "status", job.job_id)
        assert "done: reached train_steps=20000" in shown, shown
        fetched = step("drlbox fetch JOB", drlbox_cli, cli_env, "fetch", job.job_id, "-o",
                       str(tmp_path / "from-cli.keras")).strip()
        assert fetched == str(tmp_path / "from-cli.keras") and os.path.getsize(fetched) > 0
        refused = subprocess.run([sys.executable, "-m", "drlbox.cli", "jobs", "--token", "wrong"],
                                 cwd=ROOT, env=dict(os.environ, **cli_env), capture_output=True,
                                 text=True, timeout=120)
        assert refused.returncode == 2 and refused.stderr.startswith("drlbox: "), refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr

        # `make tensorboard`: every job's scalars, the one above included, on loopback.
        runs = step("make tensorboard lists the job's run", _tensorboard_runs, env, job.job_id)
        assert any(run.startswith(job.job_id) for run in runs), runs

        # Unbounded, so the job cannot finish before the faults below (it once did in 10 s).
        job = step("submit again", client.submit, "a3c", train_steps=10**9, **settings)
        step("wait for progress", _wait_for_steps, job, 5000)
        victim = service_containers()[0]
        step("kill one worker container", subprocess.run, ["docker", "kill", victim],
             check=True, capture_output=True)
        killed_at = job.status().global_steps
        step("more progress with one worker", _wait_for_steps, job, killed_at + 5000)
        # `docker kill` counts as a manual stop (no automatic restart): start it again by hand.
        step("restart the killed worker; it rejoins", _restart_and_rejoin, victim, job.job_id)
        (shard,) = service_containers("ps-shard")
        step("kill the parameter-server shard", subprocess.run, ["docker", "kill", shard],
             check=True, capture_output=True)
        step("restart it; it takes its slice back and training goes on", _restart_shard, shard,
             job)
        cancelled = step("drlbox cancel JOB", drlbox_cli, cli_env, "cancel", job.job_id)
        assert cancelled.startswith(f"{job.job_id}: cancelled"), cancelled
        status = job.wait(timeout=300)
        assert status.state == "cancelled", status.message
        assert status.global_steps >= killed_at + 10_000
        client.close()
    finally:
        step("make down VOLUMES=1", make, "down", {**env, "VOLUMES": "1"})
    assert project_containers() == [], "containers left after make down"
    total = sum(seconds for _, seconds in step.times)
    step.say(f"e2e: total {total:.1f} s")


def drlbox_cli(env: dict, *args: str) -> str:
    """`drlbox ARGS` from this machine, as a user runs it; its standard output."""
    done = subprocess.run([sys.executable, "-m", "drlbox.cli", *args], cwd=ROOT,
                          env=dict(os.environ, **env), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, f"drlbox {' '.join(args)} failed:\n{done.stderr[-2000:]}"
    return done.stdout


def _tensorboard_runs(env: dict, job_id: str, timeout: float = 180) -> list[str]:
    """Start `make tensorboard` on a free port, read its list of runs once the job's is there,
    and stop it as Ctrl-C does."""
    port = free_port()
    server = subprocess.Popen(["make", "-s", "tensorboard", f"PORT={port}",
                               *[f"{k}={v}" for k, v in env.items()]], cwd=ROOT,
                              env=dict(os.environ, **env), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + timeout
    runs: list[str] = []
    try:
        while not any(run.startswith(job_id) for run in runs):
            assert server.poll() is None, f"make tensorboard exited:\n{server.stdout.read()}"
            assert time.monotonic() < deadline, "TensorBoard did not list the job's run"
            time.sleep(2.0)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs",
                                            timeout=5) as reply:
                    runs = json.loads(reply.read())
            except OSError:
                continue
        return runs
    finally:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def _restart_and_rejoin(container: str, job_id: str, timeout: float = 300) -> None:
    subprocess.run(["docker", "start", container], check=True, capture_output=True)
    deadline = time.monotonic() + timeout
    while True:
        logs = subprocess.run(["docker", "logs", container], capture_output=True, text=True)
        if (logs.stdout + logs.stderr).count(f"joined job {job_id}") >= 2:
            return
        assert time.monotonic() < deadline, f"the restarted worker did not rejoin {job_id}"
        time.sleep(1.0)


def _restart_shard(container: str, job, timeout: float = 300) -> None:
    subprocess.run(["docker", "start", container], check=True, capture_output=True)
    deadline = time.monotonic() + timeout
    while "serving slice 1 of job" not in _logs(container).rsplit("parameter-server shard", 1)[-1]:
        assert time.monotonic() < deadline, "the restarted shard did not take its slice back"
        time.sleep(1.0)
    _wait_for_steps(job, job.status().global_steps + 5000)


def _logs(container: str) -> str:
    done = subprocess.run(["docker", "logs", container], capture_output=True, text=True)
    return done.stdout + done.stderr


def _wait_for_steps(job, steps: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while job.status().global_steps < steps:
        assert time.monotonic() < deadline, f"job did not reach {steps} steps"
        time.sleep(0.5)
