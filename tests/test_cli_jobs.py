"""`drlbox submit|jobs|status|cancel|fetch` as a user runs them, against real cluster roles.

The CLI runs as `python -m drlbox.cli ...` subprocesses against a parameter server and one
worker started as processes on loopback (tests/conftest.py's Cluster). Also checks that each
cluster job leaves TensorBoard event files in its own directory under the data dir.
"""
from __future__ import annotations

import glob
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import TOKEN, Cluster, free_cluster_ports, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "cluster_cartpole_a3c.py")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    running = Cluster(free_cluster_ports(), str(tmp_path_factory.mktemp("cli-cluster-data")),
                      workers=1)
    yield running
    running.close()


def python(cluster, *args: str, token: str | None = TOKEN, timeout: float = 180):
    """Run `python ARGS` with the cluster's address (and a token) in the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRLBOX_")}
    env["DRLBOX_ADDRESS"] = cluster.ps_address
    if token is not None:
        env["DRLBOX_TOKEN"] = token
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def drlbox(cluster, *args: str, token: str | None = TOKEN):
    """Run `drlbox ARGS` against the cluster, as a user would."""
    return python(cluster, "-m", "drlbox.cli", *args, token=token)


def fields(status_text: str) -> dict:
    """`drlbox status` output as {"state": "done: ...", "progress": "...", ...}."""
    pairs = (line.split(None, 1) for line in status_text.splitlines() if line.strip())
    return {pair[0]: pair[1] if len(pair) > 1 else "" for pair in pairs}


def steps_done(cluster, job_id: str) -> int:
    """The env steps `drlbox status` reports for the job."""
    progress = fields(drlbox(cluster, "status", job_id).stdout).get("progress", "0")
    return int(progress.split()[0].replace(",", ""))


def assert_one_line_error(done, *words: str) -> None:
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("drlbox: "), done.stderr
    assert "Traceback" not in done.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_submit_the_example_follow_it_to_done_and_fetch_its_model(cluster, tmp_path):
    submitted = drlbox(cluster, "submit", EXAMPLE, "--set", "train_steps=3000")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    assert job_id.startswith("a3c-") and f"drlbox status {job_id} -f" in submitted.stderr

    listed = drlbox(cluster, "jobs")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split()[:3] == ["JOB", "ALGO", "STATE"]
    (row,) = [r for r in rows if r.startswith(job_id)]
    assert row.split()[1] == "a3c" and "/3,000" in row

    followed = drlbox(cluster, "status", job_id, "-f")
    assert followed.returncode == 0, (followed.stdout, followed.stderr)
    status = fields(followed.stdout)
    assert status["state"] == "done: reached train_steps=3000", followed.stdout
    assert status["checkpoint"].startswith("model_final.keras at "), followed.stdout
    assert "/3000 [" in followed.stderr           # the progress bar, full

    fetched = drlbox(cluster, "fetch", job_id, "-o", str(tmp_path))
    assert fetched.returncode == 0, fetched.stderr
    path = fetched.stdout.strip()
    assert path == str(tmp_path / f"{job_id}_model_final.keras") and os.path.getsize(path) > 0
    import keras

    assert keras.models.load_model(path, compile=False).count_params() > 0
    assert_one_line_error(drlbox(cluster, "fetch", job_id, "--step", "7"),
                          "no checkpoint at 7 steps")

    # TensorBoard: the job's scalars, in a run directory of its own under the data dir.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = os.path.join(cluster.data_dir, "jobs", job_id, "checkpoints", "tensorboard")
    assert glob.glob(os.path.join(run, "events.out.tfevents.*")), os.listdir(cluster.data_dir)
    events = EventAccumulator(run)
    events.Reload()
    assert {"episode_return", "loss/policy_loss"} <= set(events.Tags()["tensors"])


def test_cancel_a_queued_and_a_running_job_defined_with_a_helper_module(cluster, tmp_path):
    # Makers from the file (a lambda) and from a module beside it must reach the worker by
    # value: the worker has neither file.
    (tmp_path / "job_helpers.py").write_text(textwrap.dedent("""
        import gymnasium

        def cartpole():
            return gymnasium.make("CartPole-v1")
        """))
    (tmp_path / "long_job.py").write_text(textwrap.dedent("""
        import job_helpers

        algorithm = "a3c"
        train_steps = 10_000_000
        env_maker = lambda: job_helpers.cartpole()
        rollout_maxlen = 8

        def feature_maker(space):
            import keras
            inp = keras.Input(space.shape)
            return inp, keras.layers.Dense(16, activation="tanh")(inp)
        """))
    ids = []
    for _ in range(2):
        submitted = drlbox(cluster, "submit", str(tmp_path / "long_job.py"))
        assert submitted.returncode == 0, submitted.stderr
        ids.append(submitted.stdout.strip())
    running, queued = ids

    done = drlbox(cluster, "cancel", queued)
    assert done.returncode == 0 and done.stdout.strip() == \
        f"{queued}: cancelled (cancelled before it started)", done.stdout + done.stderr
    wait_until(lambda: steps_done(cluster, running) > 0, 120, "the running job to make progress")
    done = drlbox(cluster, "cancel", running)
    assert done.returncode == 0 and done.stdout.startswith(f"{running}: cancelled"), done.stdout

    # Following a job that ended cancelled says so, and exits non-zero.
    followed = drlbox(cluster, "status", running, "--follow")
    assert followed.returncode == 1
    assert fields(followed.stdout)["state"] == "cancelled: cancelled on request"
    states = {r.split()[0]: r.split()[2] for r in drlbox(cluster, "jobs").stdout.splitlines()[1:]}
    assert states[running] == states[queued] == "cancelled"


def test_errors_are_one_clear_line_and_a_non_zero_exit(cluster, tmp_path):
    assert_one_line_error(drlbox(cluster, "jobs", token="wrong"), "the token is wrong")
    assert_one_line_error(drlbox(cluster, "jobs", token=None), "needs a token")
    assert_one_line_error(drlbox(cluster, "status", "a3c-00000000"),
                          "no job 'a3c-00000000'")
    assert_one_line_error(drlbox(cluster, "cancel", "nope"), "no job 'nope'")
    assert_one_line_error(drlbox(cluster, "jobs", "--address", "127.0.0.1:1",
                                 "--retry-seconds", "1"), "127.0.0.1:1 did not answer")
    misspelt = tmp_path / "misspelt.py"
    misspelt.write_text("algorithm = 'a3c'\ntrain_step = 100\n")
    assert_one_line_error(drlbox(cluster, "submit", str(misspelt)),
                          "'train_step' is not a make_trainer argument",
                          "did you mean 'train_steps'?")
    no_algorithm = tmp_path / "no_algorithm.py"
    no_algorithm.write_text("train_steps = 100\n")
    assert_one_line_error(drlbox(cluster, "submit", str(no_algorithm)), "sets no `algorithm`")
    assert_one_line_error(drlbox(cluster, "submit", EXAMPLE, "--set", "dqn_double=False"),
                          "'dqn_double' (an argument of dqn)")


def test_help_lists_roles_and_job_commands_and_job_commands_load_no_tensorflow(cluster):
    usage = drlbox(cluster, "--help").stdout
    for command in ("parameter-server", "worker", "health", "submit", "jobs", "status",
                    "cancel", "fetch"):
        assert f"\n    {command}" in usage, usage
    code = ("import sys; from drlbox import cli; rc = cli.main(['jobs']); "
            "print(rc, sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    done = python(cluster, "-c", code)
    assert done.stdout.strip().splitlines()[-1] == "0 []", done.stdout + done.stderr
