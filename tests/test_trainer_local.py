"""make_trainer(...).run() end to end: real role processes talking gRPC on loopback."""
import contextlib
import glob
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import gymnasium
import keras
import numpy as np
import pytest

from conftest import cartpole, small_features, wait_until
from drlbox.evaluator import make_evaluator
from drlbox.rpc.server import PortInUseError
from drlbox.trainer import make_trainer

pytestmark = pytest.mark.timeout(300)


def role_pids(port_begin: int) -> list[int]:
    """Pids of drlbox role processes whose arguments mention ports of this run."""
    pids = []
    for path in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            cmd = open(path, "rb").read().decode(errors="replace")
        except OSError:
            continue
        if "drlbox.launch.role" in cmd and any(str(p) in cmd for p in range(port_begin,
                                                                          port_begin + 8)):
            pids.append(int(path.split("/")[2]))
    return pids


@pytest.mark.parametrize("algorithm", ["a3c", "acer", "impala", "dqn"])
def test_every_algorithm_runs_with_two_workers(algorithm, port_base, tmp_path):
    base = port_base()
    result = make_trainer(algorithm, env_maker=cartpole, feature_maker=small_features,
                          num_parallel=2, train_steps=600, port_begin=base, seed=1,
                          replay_kwargs=dict(maxlen=100, minlen=4), batch_size=2,
                          save_dir=str(tmp_path), save_interval=200).run()
    assert result.state == "done"
    assert result.global_steps >= 600
    assert result.updates > 0
    assert result.failed_roles == []
    assert role_pids(base) == []                 # nothing left running
    steps = sorted(int(os.path.basename(p)[6:-6]) for p in glob.glob(str(tmp_path / "model_*"))
                   if "final" not in p)
    assert steps and all(s >= 200 for s in steps)
    model = keras.models.load_model(str(tmp_path / "model_final.keras"), compile=False)
    assert len(model.outputs) == (1 if algorithm == "dqn" else 2)


def test_saved_model_evaluates_and_tensorboard_scalars_exist(port_base, tmp_path):
    make_trainer("a3c", env_maker=cartpole, feature_maker=small_features, num_parallel=1,
                 train_steps=400, port_begin=port_base(), save_dir=str(tmp_path)).run()
    assert glob.glob(str(tmp_path / "tensorboard" / "events.out.tfevents.*"))
    result = make_evaluator("a3c", env_maker=cartpole, load_model=str(tmp_path / "model_final.keras"),
                            num_episodes=3, policy_type="greedy", seed=0).run()
    assert len(result.returns) == 3 and all(r >= 1 for r in result.returns)


def test_training_continues_from_load_model(port_base, tmp_path):
    first = tmp_path / "first"
    make_trainer("dqn", env_maker=cartpole, feature_maker=small_features, num_parallel=1,
                 train_steps=200, port_begin=port_base(), save_dir=str(first)).run()
    saved = keras.models.load_model(str(first / "model_final.keras"), compile=False)
    second = tmp_path / "second"
    make_trainer("dqn", env_maker=cartpole, load_model=str(first / "model_final.keras"),
                 num_parallel=1, train_steps=1, port_begin=port_base(), save_dir=str(second),
                 opt_kwargs=dict(learning_rate=1e-12)).run()
    resumed = keras.models.load_model(str(second / "model_final.keras"), compile=False)
    for a, b in zip(saved.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_following_evaluator_reports_and_target_return_stops_early(port_base):
    result = make_trainer("a3c", env_maker=cartpole, feature_maker=small_features,
                          num_parallel=1, train_steps=100_000, port_begin=port_base(),
                          eval_interval=300, eval_episodes=3, target_return=5.0).run()
    assert result.evaluations, "the evaluator reported nothing"
    assert result.evaluations[-1].mean_return >= 5.0
    assert result.global_steps < 100_000
    assert "target_return" in result.message


class KillOnceAfter(gymnasium.Wrapper):
    """Kills its own process (SIGKILL) after some steps; only the first process to claim
    the marker file does, so exactly one worker dies."""

    def __init__(self, env, marker, steps):
        super().__init__(env)
        self.marker, self.left = marker, steps

    def step(self, action):
        self.left -= 1
        if self.left == 0:
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
                os.kill(os.getpid(), signal.SIGKILL)
            except FileExistsError:
                pass
        return self.env.step(action)


class SleepOnceAfter(gymnasium.Wrapper):
    """Sleeps `seconds` after some steps; only the first process to claim the marker does."""

    def __init__(self, env, marker, steps, seconds):
        super().__init__(env)
        self.marker, self.left, self.seconds = marker, steps, seconds

    def step(self, action):
        self.left -= 1
        if self.left == 0:
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
                time.sleep(self.seconds)
            except FileExistsError:
                pass
        return self.env.step(action)


def test_a_push_that_arrives_after_the_end_still_counts(port_base, tmp_path, capfd,
                                                        monkeypatch):
    """One worker stalls mid-batch while the other ends the job; the stalled one's batch
    arrives seconds after the end and is applied and counted all the same."""
    import re

    monkeypatch.setenv("DRLBOX_VERBOSE", "1")       # the workers log their pushes at the end
    marker = str(tmp_path / "slept")
    result = make_trainer("a3c", env_maker=lambda: SleepOnceAfter(cartpole(), marker, 100, 4.0),
                          feature_maker=small_features, num_parallel=2, train_steps=1000,
                          rollout_maxlen=8, batch_size=4, port_begin=port_base()).run()
    assert os.path.exists(marker) and result.state == "done"
    pushes = [int(n) for n in re.findall(r"worker \d done after \d+ env steps, (\d+) pushes",
                                         capfd.readouterr().err)]
    assert len(pushes) == 2, "a worker did not end normally: its last push was refused"
    assert result.updates == sum(pushes)


def test_a_killed_worker_does_not_stop_the_run(port_base, tmp_path, capfd):
    marker = str(tmp_path / "killed")
    result = make_trainer("a3c", env_maker=lambda: KillOnceAfter(cartpole(), marker, 300),
                          feature_maker=small_features, num_parallel=2, train_steps=3000,
                          port_begin=port_base()).run()
    assert os.path.exists(marker)
    assert result.state == "done" and result.global_steps >= 3000
    assert len(result.failed_roles) == 1
    assert "died" in capfd.readouterr().err


class KillShardOnceAfter(gymnasium.Wrapper):
    """After some steps, the first worker to claim the marker file SIGKILLs this run's role
    process whose arguments name `role` (a parameter-server shard by default)."""

    def __init__(self, env, marker, steps, port_begin, role=b"ps-shard"):
        super().__init__(env)
        self.marker, self.left, self.port_begin, self.role = marker, steps, port_begin, role

    def step(self, action):
        self.left -= 1
        if self.left == 0:
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return self.env.step(action)
            for pid in role_pids(self.port_begin):
                # Forked roles show their command line as one string (setproctitle).
                if self.role in open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0",
                                                                                   b" ").split():
                    os.kill(pid, signal.SIGKILL)
        return self.env.step(action)


def test_a_killed_shard_is_replaced_and_the_run_finishes(port_base, tmp_path, capfd):
    base, marker = port_base(), str(tmp_path / "killed")
    result = make_trainer("a3c", env_maker=lambda: KillShardOnceAfter(cartpole(), marker, 600,
                                                                      base),
                          feature_maker=small_features, num_parallel=2, ps_shards=2,
                          train_steps=4000, port_begin=base, save_dir=str(tmp_path),
                          save_interval=500).run()
    assert os.path.exists(marker)
    assert result.state == "done" and result.global_steps >= 4000
    assert result.failed_roles == []
    assert "ps-shard-1 died" in capfd.readouterr().err
    model = keras.models.load_model(str(tmp_path / "model_final.keras"), compile=False)
    assert len(model.outputs) == 2
    assert role_pids(base) == []


def test_a_killed_parameter_server_resumes_from_its_last_checkpoint(port_base, tmp_path, capfd):
    base, marker = port_base(), str(tmp_path / "killed")
    result = make_trainer("a3c", env_maker=lambda: KillShardOnceAfter(
                              cartpole(), marker, 2500, base, role=b"parameter-server"),
                          feature_maker=small_features, num_parallel=2, train_steps=8000,
                          port_begin=base, save_dir=str(tmp_path), save_interval=1000).run()
    assert os.path.exists(marker)
    assert "parameter-server died (killed by SIGKILL)" in capfd.readouterr().err
    assert result.state == "done" and result.global_steps >= 8000
    assert result.failed_roles == []
    assert 1000 <= result.resumed_from_steps < 8000
    steps = [c.global_steps for c in result.checkpoints]
    assert steps == sorted(steps) and steps[0] >= 1000     # checkpoints from before the kill kept
    assert keras.models.load_model(str(tmp_path / "model_final.keras"), compile=False)
    assert not glob.glob(str(tmp_path / ".resume-*")) and not glob.glob(str(tmp_path / ".saving-*"))
    assert role_pids(base) == []


def test_a_killed_replay_server_is_replaced_and_the_run_finishes(port_base, tmp_path, capfd):
    base, marker = port_base(), str(tmp_path / "killed")
    result = make_trainer("dqn", env_maker=lambda: KillShardOnceAfter(
                              cartpole(), marker, 400, base, role=b"replay"),
                          feature_maker=small_features, num_parallel=2, train_steps=3000,
                          port_begin=base, replay_type="uniform", batch_size=2,
                          replay_kwargs=dict(maxlen=200, minlen=8)).run()
    assert os.path.exists(marker)
    assert "replay-server died (killed by SIGKILL); starting a new one" in capfd.readouterr().err
    assert result.state == "done" and result.global_steps >= 3000
    assert result.failed_roles == []


def test_a_killed_evaluator_is_replaced_and_evaluations_go_on(port_base, tmp_path, capfd):
    base, marker = port_base(), str(tmp_path / "killed")
    result = make_trainer("a3c", env_maker=lambda: KillShardOnceAfter(
                              cartpole(), marker, 1500, base, role=b"evaluator"),
                          feature_maker=small_features, num_parallel=1, train_steps=40_000,
                          port_begin=base, eval_interval=1000, eval_episodes=2).run()
    assert os.path.exists(marker)
    assert "evaluator died (killed by SIGKILL); starting a new one" in capfd.readouterr().err
    assert result.state == "done" and result.failed_roles == []
    # The new evaluator (a few seconds to start) evaluates the rest of the run.
    assert result.evaluations and result.evaluations[-1].global_steps >= 20_000


def test_leftovers_of_interrupted_saves_are_removed(port_base, tmp_path):
    for name in (".saving-abc123.keras", ".saving-zz.h5"):
        (tmp_path / name).write_bytes(b"half a model")
    make_trainer("a3c", env_maker=cartpole, feature_maker=small_features, num_parallel=1,
                 train_steps=300, port_begin=port_base(), save_dir=str(tmp_path),
                 save_interval=100).run()
    assert not glob.glob(str(tmp_path / ".saving-*"))
    assert (tmp_path / "model_final.keras").exists()


def test_taken_port_is_a_clear_error(port_base):
    base = port_base()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", base + 3))
        sock.listen()
        with pytest.raises(PortInUseError, match=f"port {base + 3}.*worker 0.*port_begin"):
            make_trainer("a3c", env_maker=cartpole, feature_maker=small_features,
                         num_parallel=1, train_steps=100, port_begin=base).run()


def test_bad_makers_fail_in_the_users_process(port_base):
    def wrong_input(space):
        inp = keras.Input(shape=(7,))
        return inp, keras.layers.Dense(4)(inp)

    with pytest.raises(ValueError, match=r"inputs of shape \(7,\)"):
        make_trainer("a3c", env_maker=cartpole, feature_maker=wrong_input,
                     port_begin=port_base()).run()
    with pytest.raises(ValueError, match="q_values"):
        make_trainer("dqn", env_maker=cartpole, port_begin=port_base(),
                     model_maker=lambda env: keras.Sequential([keras.Input((4,)),
                                                               keras.layers.Dense(5)])).run()


@pytest.mark.parametrize("sig,whole_group", [(signal.SIGINT, False), (signal.SIGTERM, False),
                                              (signal.SIGINT, True), (signal.SIGTERM, True)])
def test_catch_signal_stops_every_process_and_saves(sig, whole_group, port_base, tmp_path):
    """To the launcher alone (`kill PID`) or to every process of the run at once (Ctrl-C in
    a terminal; `timeout`, systemd and `kill -TERM -PGID` for SIGTERM)."""
    base = port_base()
    script = tmp_path / "train.py"
    # No __main__ guard on purpose: role processes never re-import the user's script.
    script.write_text(textwrap.dedent(f"""
        import gymnasium, keras
        from drlbox.trainer import make_trainer

        def features(space):
            inp = keras.Input(shape=space.shape)
            return inp, keras.layers.Dense(16, activation='relu')(inp)

        result = make_trainer('a3c', env_maker=lambda: gymnasium.make('CartPole-v1'),
                              feature_maker=features, num_parallel=2, train_steps=10**8,
                              port_begin={base}, save_dir={str(tmp_path)!r}, catch_signal=True
                              ).run()
        print('STATE', result.state, result.global_steps, flush=True)
        print('LAST', result.checkpoints[-1].path, flush=True)
        """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    # The fork server, the parameter server and two workers.
    while len(role_pids(base)) < 4 and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(3.0)                                 # let the workers train a little
    if whole_group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "STATE stopped" in out
    assert f"LAST {tmp_path / 'model_final.keras'}" in out
    assert (tmp_path / "model_final.keras").exists()
    assert role_pids(base) == []


def test_killing_the_launcher_leaves_no_orphan(port_base, tmp_path):
    base = port_base()
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(f"""
        import gymnasium, keras
        from drlbox.trainer import make_trainer
        make_trainer('dqn', env_maker=lambda: gymnasium.make('CartPole-v1'),
                     feature_maker=lambda s: (lambda i: (i, keras.layers.Dense(8)(i)))(
                         keras.Input(shape=s.shape)),
                     num_parallel=1, train_steps=10**8, port_begin={base}).run()
        """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(role_pids(base)) < 3 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len(role_pids(base)) == 3      # the fork server, the parameter server, a worker
    finally:            # a run of 10**8 steps must not outlive a failed test
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 30
    while role_pids(base) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert role_pids(base) == []


def pendulum():
    """A continuous-action env (module-level so role processes unpickle it by reference)."""
    return gymnasium.make("Pendulum-v1")


@pytest.mark.parametrize("algorithm,extra", [
    ("a3c", dict(noisynet="ig", a3c_entropy_weight=0.0)),
    ("dqn", dict(noisynet="fg", dqn_dueling=True, replay_type="prioritized",
                 replay_kwargs=dict(maxlen=100, minlen=4))),
    ("impala", dict(env_maker=pendulum, replay_kwargs=dict(maxlen=100, minlen=4))),
    ("acer", dict(optimizer=keras.optimizers.RMSprop(learning_rate=1e-3),
                  online_learning=False, replay_kwargs=dict(maxlen=100, minlen=4))),
])
def test_options_train_and_save(algorithm, extra, port_base, tmp_path):
    kwargs = dict(env_maker=cartpole, feature_maker=small_features, num_parallel=1,
                  train_steps=400, port_begin=port_base(), save_dir=str(tmp_path), batch_size=2)
    result = make_trainer(algorithm, **{**kwargs, **extra}).run()
    assert result.state == "done" and result.updates > 0
    import drlbox.layers  # noqa: F401  (NoisyDense / DuelingCombine for plain Keras loading)

    model = keras.models.load_model(str(tmp_path / "model_final.keras"), compile=False)
    noisy = [layer for layer in model.layers if type(layer).__name__ == "NoisyDense"]
    assert bool(noisy) == ("noisynet" in extra)


def test_a_dead_parameter_server_is_a_clear_error(port_base):
    import threading

    base = port_base()

    def kill_parameter_server():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            pids = role_pids(base)
            if len(pids) >= 2:                  # the worker runs: we are past start-up
                time.sleep(3.0)
                for pid in pids:
                    if "parameter-server" in open(f"/proc/{pid}/cmdline", "rb").read().decode():
                        os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_parameter_server, daemon=True)
    killer.start()
    with pytest.raises(RuntimeError, match="parameter server died"):
        make_trainer("a3c", env_maker=cartpole, feature_maker=small_features, num_parallel=1,
                     train_steps=10**8, port_begin=base).run()
    killer.join()
    deadline = time.monotonic() + 30
    while role_pids(base) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert role_pids(base) == []


def _running_job_id(client) -> str | None:
    """The id of the job the client's parameter server runs, None while it has none yet."""
    import grpc

    try:
        return client.status().job_id
    except grpc.RpcError as err:
        if err.code() != grpc.StatusCode.NOT_FOUND:
            raise
        return None


def test_a_local_run_answers_only_its_own_roles(port_base):
    """Another local user can read every process's command line, not its environment: the
    run's token travels in the environment and every call without it is refused."""
    import threading

    import grpc

    from drlbox.rpc.generated import parameter_server_pb2 as pb
    from drlbox.rpc.generated import parameter_server_pb2_grpc as pb_grpc
    from drlbox.rpc.parameter_client import ParameterClient
    from drlbox.rpc.security import Security
    from drlbox.rpc.server import make_channel, wait_healthy

    base = port_base()
    trainer = make_trainer("a3c", env_maker=cartpole, feature_maker=small_features,
                           num_parallel=1, train_steps=10**8, port_begin=base)
    results = []
    runner = threading.Thread(target=lambda: results.append(trainer.run()))
    runner.start()
    tokens = set()
    try:
        deadline = time.monotonic() + 120
        # The fork server, the parameter server and the worker.
        while len(role_pids(base)) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert wait_healthy(f"127.0.0.1:{base}", 60.0)      # health checks need no token
        for pid in role_pids(base):
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
            token = dict(line.split(b"=", 1) for line in
                         open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
                         if b"=" in line).get(b"DRLBOX_TOKEN")
            assert token and token not in cmdline
            tokens.add(token)
        with make_channel(f"127.0.0.1:{base}") as channel:
            stub = pb_grpc.ParameterServerStub(channel)
            for call in (lambda: stub.GetStatus(pb.StatusRequest(), timeout=10),
                         lambda: stub.Stop(pb.StopRequest(job_id="x"), timeout=10),
                         lambda: stub.GetRunningJob(pb.RunningJobRequest(), timeout=10),
                         lambda: list(stub.JoinJob(pb.JoinJobRequest(
                             job_id="x", python_version="3.11",
                             role=pb.JOINING_ROLE_WORKER), timeout=10))):
                with pytest.raises(grpc.RpcError) as info:
                    call()
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert len(tokens) == 1         # one token for the whole run; with it, calls work
    finally:
        for token in tokens:            # end the run (of 10**8 steps) however the test went
            security = Security(token=token.decode())
            with contextlib.closing(ParameterClient(f"127.0.0.1:{base}", timeout=10,
                                                    security=security)) as anyone:
                # The server answers before it has built the job it was handed.
                job_id = wait_until(lambda: _running_job_id(anyone), 120, "the run's job")
            with contextlib.closing(ParameterClient(f"127.0.0.1:{base}", job_id, timeout=10,
                                                    security=security)) as owner:
                owner.stop("the test is done")
        runner.join(300)
    # Stopped by the owner's call (the token works), however far the run had got.
    assert results and results[0].state == "stopped"
    assert results[0].message == "the test is done"
