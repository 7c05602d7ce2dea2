"""Faults and poisonous calls against real drlbox roles: what happens, what is lost, how fast
it heals. `make chaos` runs this, then the RPC fuzzer (benchmarks/chaos_fuzz.py).

    python benchmarks/chaos.py [--only NAME[,NAME...]] [--kills 200] [--seeds 0,1,2]

Every scenario starts real role processes on loopback (local runs, or cluster-mode roles) and
prints one row: what happened, env steps and updates lost, seconds to recover, checkpoints
that load, and whether drlbox's promise held. Results also go to
benchmarks/results/chaos.{md,json}.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [HERE, ROOT]

from chaos_runs import (Run, counted_steps, counting_maker, rss_mb, running,  # noqa: E402
                        temp_dir, wait_for)

from drlbox.roles.interfaces import WorkerReport  # noqa: E402
from drlbox.roles.limits import Refused  # noqa: E402
from drlbox.rpc import serde  # noqa: E402
from drlbox.rpc.generated import parameter_server_pb2 as pb  # noqa: E402
from drlbox.rpc.replay import ReplayClient  # noqa: E402
from drlbox.rpc.server import make_channel  # noqa: E402
from drlbox.rpc.sessions import EXCHANGE_METHOD  # noqa: E402

PORT = 5600


@dataclass
class Row:
    """One scenario's outcome."""

    scenario: str
    happened: str
    steps_lost: str = "-"
    updates_lost: str = "-"
    recover_s: str = "-"
    loadable: str = "-"
    ok: bool = True


def code_of(call) -> str:
    """The status code a call ends with ('OK' when it succeeds); the client raises some
    refusals as drlbox's own errors, which carry the code's name."""
    try:
        call()
    except grpc.RpcError as err:
        return err.code().name
    except Refused as err:
        return err.code
    return "OK"


# --- poisonous calls (issue rows 1-9) --------------------------------------------------------
def poisonous_pushes() -> list[Row]:
    rows = []
    with running("a3c", PORT, num_parallel=1, batch_size=4, rollout_maxlen=8) as run:
        client = run.client()
        before = client.status()
        size = client.get_weights(-1).weights.size
        bad = np.full(size, 1e-3, np.float32)
        bad[0] = 1e20
        code = code_of(lambda: client.push_and_pull(bad, -1, WorkerReport(env_steps=1), -1))
        weights = client.get_weights(-1).weights
        rows.append(Row("1 gradient with one 1e20 entry", f"{code}; weights finite: "
                        f"{bool(np.isfinite(weights).all())}; run goes on",
                        ok=code == "INVALID_ARGUMENT" and bool(np.isfinite(weights).all())))
        code = code_of(lambda: client.push_and_pull(None, -1, WorkerReport(env_steps=-2**63),
                                                    -1))
        status = client.status()
        rows.append(Row("2 report of -2**63 env steps", f"{code}; global steps "
                        f"{before.global_steps} -> {status.global_steps}, GetStatus fine",
                        ok=code == "OUT_OF_RANGE" and status.global_steps >= 0))
        start = time.monotonic()
        code = code_of(lambda: client.push_and_pull(None, -1, WorkerReport(
            env_steps=1, episode_returns=[1.0] * 100_000), -1))
        seconds = time.monotonic() - start
        rows.append(Row("7 report of 100,000 episode returns", f"{code} in {seconds:.2f} s",
                        ok=code == "RESOURCE_EXHAUSTED" and seconds < 1.0))
        codes = [code_of(lambda r=r: client.report_evaluation(*r))
                 for r in ((10, [float("inf")]), (10, []), (-5, [1.0]))]
        status = client.status()
        rows.append(Row("8 evaluations [inf], [], negative steps", f"{', '.join(codes)}; "
                        f"job {status.state}", ok="OK" not in codes and status.running))
        rows.append(_huge_upload(run, size))
        rows.append(_strangers(run))
        client.close()
    return rows


def _huge_upload(run: Run, size: int) -> Row:
    """A gradient stream announcing the right size, then 200 MiB of frames."""
    pid = run.pid("parameter-server")
    before = rss_mb(pid)
    header = pb.RequestHeader(job_id=run.local.job_id, gradient_values=size, newer_than=-1)
    sent = []

    def frames():
        yield serde.encode_frame(header.SerializeToString(), b"\0" * (size * 4))
        for _ in range(25):
            sent.append(1)
            yield serde.encode_frame(None, b"\0" * (8 << 20))

    with make_channel(run.address, run.security) as channel:
        code = code_of(lambda: list(channel.stream_stream(EXCHANGE_METHOD)(frames(),
                                                                           timeout=60)))
    grown = rss_mb(pid) - before
    return Row("5 gradient stream of 200 MiB", f"{code} after {len(sent)} extra frames; "
               f"server RSS +{grown:.0f} MB", ok=code != "OK" and grown < 100)


def _strangers(run: Run) -> Row:
    """Calls from another local user, who has no token."""
    with make_channel(run.address) as channel:
        calls = {"GetStatus": lambda: channel.unary_unary(
                     "/drlbox.v1.ParameterServer/GetStatus")(b"", timeout=10),
                 "Stop": lambda: channel.unary_unary("/drlbox.v1.ParameterServer/Stop")(
                     pb.StopRequest(job_id=run.local.job_id).SerializeToString(),
                     timeout=10),
                 "GetRunningJob": lambda: channel.unary_unary(
                     "/drlbox.v1.ParameterServer/GetRunningJob")(b"", timeout=10),
                 "JoinJob": lambda: list(channel.unary_stream(
                     "/drlbox.v1.ParameterServer/JoinJob")(b"", timeout=10))}
        codes = {name: code_of(call) for name, call in calls.items()}
    return Row("9 another local user calls a local run", ", ".join(
        f"{n} {c}" for n, c in codes.items()), ok=set(codes.values()) == {"UNAUTHENTICATED"})


def poisonous_replay() -> list[Row]:
    with running("dqn", PORT + 20, num_parallel=2, batch_size=4, rollout_maxlen=4,
                 replay_type="uniform", replay_kwargs=dict(maxlen=500, minlen=20)) as run:
        replay = ReplayClient(f"127.0.0.1:{PORT + 21}", run.local.job_id, timeout=30,
                              security=run.security)
        lists = [{"obs": np.zeros((3, 5), np.float32), "actions": np.zeros(2, np.int64),
                  "rewards": np.zeros(2, np.float32), "behaviour": np.zeros((2, 0), np.float32),
                  "terminated": np.zeros(1, np.uint8)}]
        shape_code = code_of(lambda: replay.insert(lists))
        pid = run.pid("replay-server")
        before = rss_mb(pid)
        sample_code = code_of(lambda: replay.sample(2**31 - 1))
        grown = rss_mb(pid) - before
        big = [{**lists[0], "obs": np.zeros(((95 << 20) // 20, 5), np.float32)}]   # 95 MiB
        big_code = code_of(lambda: replay.insert(big))
        time.sleep(3.0)
        alive = all(run.local.procs[f"worker-{i}"].poll() is None for i in range(2))
        replay.close()
    return [Row("3 replay insert of another shape", f"{shape_code}; workers alive: {alive}",
                ok=shape_code == "INVALID_ARGUMENT" and alive),
            Row("4 replay Sample(2**31-1)", f"{sample_code}; replay RSS +{grown:.0f} MB",
                ok=sample_code == "OUT_OF_RANGE" and grown < 50),
            Row("5 a 95 MiB rollout list", big_code, ok=big_code != "OK")]


def idle_streams() -> list[Row]:
    """200 idle streams (half without the token) against every role of a run."""
    rows = []
    with running("dqn", PORT + 40, num_parallel=1, batch_size=4, rollout_maxlen=4, ps_shards=2,
                 replay_type="uniform", replay_kwargs=dict(maxlen=500, minlen=20)) as run:
        roles = {"parameter server": run.address, "replay": f"127.0.0.1:{PORT + 41}",
                 "worker status": f"127.0.0.1:{PORT + 43}"}
        for role, address in roles.items():
            worst = _flood(address, run)
            rows.append(Row(f"6 200 idle streams against the {role}",
                            f"health and status answer in {worst * 1e3:.0f} ms at worst",
                            ok=worst < 1.0))
    return rows


def _flood(address: str, run: Run) -> float:
    channels = [make_channel(address, run.security), grpc.insecure_channel(address)]
    held = []
    try:
        for i in range(200):
            requests = queue.SimpleQueue()
            call = channels[i % 2].stream_stream(EXCHANGE_METHOD)(iter(requests.get, None),
                                                                  timeout=120)
            held.append((requests, call))
        time.sleep(1.0)
        health = health_pb2_grpc.HealthStub(channels[0])
        status = run.client()
        worst = 0.0
        for call in (lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=5),
                     status.status):
            start = time.perf_counter()
            call()
            worst = max(worst, time.perf_counter() - start)
        status.close()
        return worst
    finally:
        for requests, call in held:
            requests.put(None)
            call.cancel()
        for channel in channels:
            channel.close()


# --- faults (rows 10-13, the README's promises) ----------------------------------------------
def replay_killed() -> Row:
    with running("dqn", PORT + 60, num_parallel=2, batch_size=4, rollout_maxlen=4,
                 replay_type="uniform", replay_kwargs=dict(maxlen=500, minlen=20)) as run:
        client = run.client()
        old = run.pid("replay-server")
        killed = run.kill("replay-server")
        replay = ReplayClient(f"127.0.0.1:{PORT + 61}", run.local.job_id, timeout=5,
                              security=run.security)
        wait_for(lambda: run.pid("replay-server") != old and _replay_answers(replay), 120,
                 "a new replay server")
        seconds = time.monotonic() - killed
        at = client.status().global_steps
        wait_for(lambda: client.status().global_steps > at + 500, 300, "progress")
        alive = all(run.local.procs[f"worker-{i}"].poll() is None for i in range(2))
        replay.close()
        client.close()
    return Row("10 replay server killed (DQN)", f"a new one serves, training goes on; workers "
               f"alive: {alive}", recover_s=f"{seconds:.1f}", ok=alive and seconds < 60)


def _replay_answers(replay: ReplayClient) -> bool:
    try:
        replay.sample(1)
    except grpc.RpcError:
        return False
    return True


def worker_killed() -> Row:
    directory = temp_dir()
    run = Run("a3c", env_maker=counting_maker(directory), num_parallel=2, batch_size=4,
              rollout_maxlen=8, train_steps=20_000, port_begin=PORT + 80).start(min_steps=2000)
    run.kill("worker-1")
    result = run.join()
    skip = (os.getpid(), run.pid("parameter-server"))
    lost = counted_steps(directory, skip) - result.global_steps
    batch = 4 * 8
    return Row("worker killed mid-run", f"run {result.state} with 1 worker",
               steps_lost=f"{lost} ({lost / batch:.2f} batches)",
               ok=result.state == "done" and lost <= batch)


def graceful_stop() -> Row:
    """SIGTERM a run started with catch_signal=True: its last batches still count."""
    directory = temp_dir()
    script = (f"import sys; sys.path.insert(0, {HERE!r}); from chaos_runs import counting_maker,"
              f" mlp; from drlbox.trainer import make_trainer; import json; r = make_trainer("
              f"'a3c', env_maker=counting_maker({directory!r}), feature_maker=mlp, "
              f"num_parallel=2, batch_size=4, rollout_maxlen=8, train_steps=10**9, "
              f"port_begin={PORT + 100}, catch_signal=True, save_dir={directory + '/save'!r})"
              f".run(); print(json.dumps([r.state, r.global_steps]))")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: counted_steps(directory) > 5000, 300, "progress")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:          # the scenario failed: end the run it started
            proc.send_signal(signal.SIGINT)
            proc.wait(60)
    state, steps = json.loads(out.strip().splitlines()[-1])
    lost = counted_steps(directory, skip_pids=(proc.pid,)) - steps
    # A batch's steps are counted in the exchange that applies its gradient: no step lost
    # means no update lost.
    return Row("12 SIGTERM with catch_signal=True", f"run {state}", steps_lost=str(lost),
               updates_lost="0" if lost == 0 else "-", ok=state == "stopped" and lost == 0)


def ps_killed_local(save_interval: int = 1000) -> Row:
    directory = temp_dir()
    run = Run("a3c", env_maker=counting_maker(directory), num_parallel=2, batch_size=4,
              rollout_maxlen=8, train_steps=12_000, port_begin=PORT + 120,
              save_dir=os.path.join(directory, "save"), save_interval=save_interval
              ).start(min_steps=4000)
    client = run.client()
    before = client.status()
    killed = run.kill("parameter-server")
    saved = _resume_counters(os.path.join(directory, "save",
                                          f".resume-{run.local.job_id}.npz"))
    status = wait_for(lambda: _resumed(client), 300, "the parameter server to come back")
    seconds = time.monotonic() - killed
    lost = before.global_steps - status.resumed_from_steps
    client.close()
    result = run.join()
    loadable = _loadable(os.path.join(directory, "save"))
    return Row("13 parameter server killed (local, save_dir)", f"restarted from its last "
               f"checkpoint; run {result.state}", steps_lost=f"{lost} (save interval "
               f"{save_interval})", updates_lost=str(before.updates - saved["updates"]),
               recover_s=f"{seconds:.1f}", loadable=loadable,
               ok=result.state == "done" and lost <= save_interval + 64)


def _resume_counters(path: str) -> dict:
    """The counters a resume restores, read off the resume file the killed server left."""
    from drlbox.roles.job_journal import ResumeJournal

    position, _ = ResumeJournal(path).load()
    return {"global_steps": position.global_steps, "updates": position.updates}


def _resumed(client):
    try:
        status = client.status()
    except grpc.RpcError:
        return None
    return status if status.resumed_from_steps > 0 else None


def _loadable(save_dir: str) -> str:
    good, total = _load_counts(save_dir)
    return f"{good}/{total}"


def _load_counts(save_dir: str) -> tuple[int, int]:
    """(final-named .keras files under save_dir that load, all of them)."""
    import keras

    paths = [os.path.join(root, n) for root, _, names in os.walk(save_dir) for n in names
             if n.endswith(".keras") and not n.startswith(".")]
    good = 0
    for path in paths:
        with contextlib.suppress(Exception):
            keras.models.load_model(path, compile=False)
            good += 1
    return good, len(paths)


def kill_during_save(kills: int) -> Row:
    """A process saving a real Keras model over and over is SIGKILLed at a random moment, in
    a fresh directory each time; then the cleanup a restarting parameter server does runs,
    and every final-named file must load. Two kills at a time (this machine has two cores)."""
    rng = random.Random(0)
    delays = [rng.uniform(0.0, 1.5) for _ in range(kills)]
    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(_kill_one_save, delays))
    interrupted = sum(o[0] for o in outcomes)
    good = sum(o[1] for o in outcomes)
    total = sum(o[2] for o in outcomes)
    left = sum(o[3] for o in outcomes)
    clean = sum(o[1] == o[2] and o[3] == 0 for o in outcomes)
    return Row(f"11 SIGKILL during checkpoint saves ({kills}x)",
               f"{interrupted} kills interrupted a save; {clean}/{kills} left only loadable "
               f"files; {left} temp files left", loadable=f"{good}/{total}",
               ok=clean == kills and left == 0)


def _kill_one_save(delay: float) -> tuple[int, int, int, int]:
    """(a temp file was there at the kill, final files that load, final files, temp files
    left after the cleanup)."""
    from drlbox.roles.param_server import remove_leftovers

    save_dir = temp_dir()
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "chaos_saver.py"), save_dir],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    proc.stdout.readline()                       # "ready": the model is built
    time.sleep(delay)
    proc.kill()
    proc.wait()
    interrupted = any(n.startswith(".saving-") for n in os.listdir(save_dir))
    remove_leftovers(save_dir, None)
    left = sum(n.startswith(".") for n in os.listdir(save_dir))
    good, total = _load_counts(save_dir)
    shutil.rmtree(save_dir)
    return int(interrupted), good, total, left


def ps_killed_cluster(save_interval: int = 2000) -> Row:
    """Cluster mode: the parameter server is SIGKILLed and started again (what docker's
    restart policy or Kubernetes does); it resumes the job, the workers rejoin."""
    from drlbox.client import Client
    from tests.test_cluster_sdk import TOKEN, Cluster, cartpole_job

    data_dir = temp_dir()
    cluster = Cluster(PORT + 140, data_dir, workers=2)
    try:
        client = Client(cluster.ps_address, token=TOKEN, retry_seconds=120)
        job = client.submit("a3c", **cartpole_job(train_steps=60_000,
                                                  save_interval=save_interval))
        wait_for(lambda: job.status().global_steps > 8000, 300, "progress past a checkpoint")
        before = job.status()
        cluster.kill("parameter-server")
        killed = time.monotonic()
        saved = _resume_counters(os.path.join(data_dir, "jobs", job.job_id, "checkpoints",
                                              "resume.npz"))
        cluster.start_parameter_server()
        wait_for(lambda: job.status().global_steps > before.global_steps, 300,
                 "progress after the restart")
        # Recovered once both workers train the resumed job again (a worker that asked while
        # the job was still being restored went idle and joins on its next poll).
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: _rejoined(cluster, job.job_id) == 2, 60, "both workers")
        seconds = time.monotonic() - killed
        rejoined = _rejoined(cluster, job.job_id)
        status = job.wait(timeout=600)
        client.close()
    finally:
        cluster.close()
    lost = before.global_steps - status.resumed_from_steps
    return Row("13 parameter server killed (cluster, restarted by the orchestrator)",
               f"job resumed from its last checkpoint, {rejoined}/2 workers rejoined; job "
               f"{status.state}",
               steps_lost=f"{lost} (save interval {save_interval})",
               updates_lost=str(before.updates - saved["updates"]), recover_s=f"{seconds:.1f}",
               loadable=_loadable(data_dir),
               ok=status.state == "done" and lost <= save_interval + 64 and rejoined == 2)


def _rejoined(cluster, job_id: str) -> int:
    return sum(s == ("running", job_id) for s in cluster.worker_states())


def learning_under_faults(seeds: list[int]) -> Row:
    """The CartPole A3C preset (two workers) with a worker killed and the parameter server
    killed once, against the same runs without faults: env steps to a greedy 475."""
    clean = [_solve(seed, faults=False) for seed in seeds]
    faulty = [_solve(seed, faults=True) for seed in seeds]
    ratio = float(np.median(faulty) / np.median(clean))
    return Row("learning under faults (A3C CartPole, worker and parameter server killed)",
               f"steps to solve per seed {seeds}: fault-free {' '.join(map(str, clean))}; "
               f"with faults {' '.join(map(str, faulty))}; median ratio {ratio:.2f}x",
               ok=all(s < NOT_SOLVED for s in faulty + clean) and ratio <= 1.25)


NOT_SOLVED = 10**9


def _solve(seed: int, faults: bool) -> int:
    """Env steps to the first greedy evaluation >= 475 (NOT_SOLVED if none); with faults,
    the steps the killed parameter server lost are added."""
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    from cartpole_presets import PRESETS, cartpole, first_solved

    settings = {**PRESETS["a3c"], "num_parallel": 2}
    run = Run("a3c", env_maker=cartpole, seed=seed, train_steps=300_000, eval_interval=1000,
              eval_episodes=20, target_return=475.0, save_dir=temp_dir(), save_interval=1000,
              port_begin=PORT + 160, **settings).start(min_steps=1)
    lost = 0
    if faults:
        client = run.client()
        wait_for(lambda: client.status().global_steps >= 1000, 300, "1000 env steps")
        run.kill("worker-1")
        wait_for(lambda: client.status().global_steps >= 2500, 300, "2500 env steps")
        before = client.status().global_steps
        run.kill("parameter-server")
        client.close()
    result = run.join()
    if faults:
        lost = before - result.resumed_from_steps
    solved = first_solved(result)
    return solved.global_steps + lost if solved else NOT_SOLVED


SCENARIOS = {"pushes": poisonous_pushes, "replay": poisonous_replay, "floods": idle_streams,
             "replay-killed": replay_killed, "worker-killed": worker_killed,
             "graceful": graceful_stop, "ps-local": ps_killed_local,
             "ps-cluster": ps_killed_cluster, "saves": kill_during_save,
             "learning": learning_under_faults}


def table(rows: list[Row]) -> str:
    head = ("| scenario | what happened | env steps lost | updates lost | seconds to recover | "
            "checkpoints loadable | held |\n| --- | --- | --- | --- | --- | --- | --- |")
    return head + "".join(f"\n| {r.scenario} | {r.happened} | {r.steps_lost} | "
                          f"{r.updates_lost} | {r.recover_s} | {r.loadable} | "
                          f"{'yes' if r.ok else 'NO'} |" for r in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SCENARIOS))
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--seeds", default=",".join(map(str, range(20))))
    parser.add_argument("--out", default=os.path.join(HERE, "results", "chaos"))
    args = parser.parse_args()
    rows: list[Row] = []
    for name in args.only.split(","):
        fn = SCENARIOS[name]
        start = time.monotonic()
        try:
            got = (fn(args.kills) if name == "saves" else
                   fn([int(x) for x in args.seeds.split(",")]) if name == "learning" else fn())
        except Exception as err:  # noqa: BLE001 - a scenario that breaks is a finding
            got = Row(name, f"the scenario failed: {type(err).__name__}: {err}", ok=False)
        for row in got if isinstance(got, list) else [got]:
            rows.append(row)
            print(table([row]).splitlines()[-1], flush=True)
        print(f"  ({name}: {time.monotonic() - start:.0f} s)", flush=True)
    print("\n" + table(rows))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".md", "w") as f:
        f.write(table(rows) + "\n")
    with open(args.out + ".json", "w") as f:
        json.dump([asdict(r) for r in rows], f, indent=1)
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
