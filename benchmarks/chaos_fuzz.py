"""Chaos fuzzer: attack every gRPC method of drlbox's real role processes, print a table.

    python benchmarks/chaos_fuzz.py [--cases 10000] [--seed 0] [--deadline 10]
                                    [--out benchmarks/results/chaos_fuzz]

Starts cluster-mode roles on loopback with a token (parameter server with 2 shards, one
ps-shard, replay, evaluator; no worker, so nothing trains), submits a small DQN job, fills its
replay memory, then sends `--cases` raw calls to every method (random bytes, mutations of a
valid request, structured boundary values; see chaos_cases.py). Oracles per method: role
processes that die, calls that hit the deadline, UNKNOWN/INTERNAL answers, every status code,
invalid requests accepted, and state changes around batches of refused calls (or any call of a
read-only method). Writes OUT.md (the table and findings) and OUT.json (the raw counts).
"""
from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chaos_cases import BUDGET, METHODS, Case, Target, make_case  # noqa: E402

from drlbox.client import Client  # noqa: E402
from drlbox.config import trainer_config  # noqa: E402
from drlbox.jobs import Job, python_version  # noqa: E402
from drlbox.ops.rollout import make_list  # noqa: E402
from drlbox.rpc.generated import job_control_pb2 as jc_pb  # noqa: E402
from drlbox.rpc.generated import job_control_pb2_grpc as jc_grpc  # noqa: E402
from drlbox.rpc.generated import parameter_server_pb2 as ps_pb  # noqa: E402
from drlbox.rpc.generated import parameter_server_pb2_grpc as ps_grpc  # noqa: E402
from drlbox.rpc.generated import replay_pb2 as rp_pb  # noqa: E402
from drlbox.rpc.generated import replay_pb2_grpc as rp_grpc  # noqa: E402
from drlbox.rpc.parameter_client import ParameterClient  # noqa: E402
from drlbox.rpc.replay import ReplayClient  # noqa: E402
from drlbox.rpc.security import Security  # noqa: E402
from drlbox.rpc.server import (PROTOCOL_KEY, PROTOCOL_VERSION, make_channel,  # noqa: E402
                               wait_healthy)
from drlbox.rpc.states import JOB_STATE  # noqa: E402

TOKEN = "chaos-fuzz-token-5d1e"
START_TIMEOUT = 180.0
# The replay server gets an address-space limit, so that a huge allocation (Sample of 2**31-1
# lists) fails with MemoryError instead of filling this shared machine's memory.
REPLAY_MEMORY_LIMIT = 6 << 30

BATCH = 100
THREADS = 4
ATTRIBUTIONS_PER_METHOD = 2
CODES = ["INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION", "UNAUTHENTICATED",
         "RESOURCE_EXHAUSTED", "OUT_OF_RANGE"]
METADATA = {
    "ok": [(PROTOCOL_KEY, PROTOCOL_VERSION), ("authorization", f"Bearer {TOKEN}")],
    "none": [],
    "bad-token": [(PROTOCOL_KEY, PROTOCOL_VERSION), ("authorization", "Bearer wrong-token")],
    "bad-protocol": [(PROTOCOL_KEY, "2"), ("authorization", f"Bearer {TOKEN}")],
    "token-only": [("authorization", f"Bearer {TOKEN}")],
}
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 256 << 20),
                   ("grpc.max_send_message_length", -1), ("grpc.enable_http_proxy", 0)]


def send(callable_, kind: str, case: Case, deadline: float) -> tuple:
    """One raw call; (status code name, details, replies received)."""
    metadata = METADATA[case.metadata]
    replies = 0
    try:
        if kind == "uu":
            callable_(case.messages[0], timeout=deadline, metadata=metadata)
            replies = 1
        elif kind == "su":
            callable_(iter(case.messages), timeout=deadline, metadata=metadata)
            replies = 1
        else:
            request = case.messages[0] if kind == "us" else iter(case.messages)
            for _ in callable_(request, timeout=deadline, metadata=metadata):
                replies += 1
        return "OK", "", replies
    except grpc.RpcError as err:
        return err.code().name, err.details() or "", replies


class MethodRun:
    """Counts and findings of one (role, method)."""

    def __init__(self, role: str, service: str, name: str):
        self.role, self.service, self.name = role, service, name
        self.cases = 0
        self.codes: collections.Counter = collections.Counter()
        self.examples: dict = {"UNKNOWN": [], "INTERNAL": []}
        self.hangs: list = []
        self.hung_cases: list = []          # a few, sent again alone at the end
        self.crashes: list = []
        self.state_changes: list = []
        self.invalid_accepted: list = []
        self.invalid_accepted_count = 0
        self.notes: collections.Counter = collections.Counter()
        self.rss_mb: dict = {}
        self.seconds = 0.0

    def record(self, case: Case, code: str, details: str) -> None:
        """Tally one call's outcome."""
        self.cases += 1
        self.codes[code] += 1
        # Examples of the answers worth reading: UNKNOWN, INTERNAL and the rarer codes.
        if code not in ("OK", "DEADLINE_EXCEEDED", "INVALID_ARGUMENT", "NOT_FOUND",
                        "FAILED_PRECONDITION", "UNAUTHENTICATED"):
            seen = self.examples.setdefault(code, [])
            if len(seen) < 3 and details[:200] not in [d for _, d in seen]:
                seen.append((f"{case.kind}: {case.desc} [metadata {case.metadata}]",
                             details[:200]))
        if code == "DEADLINE_EXCEEDED" and len(self.hung_cases) < 3:
            if case.desc not in [c.desc for c in self.hung_cases]:
                self.hung_cases.append(case)
        # Health checks are open to all; every other call needs the token and protocol.
        bad_metadata = case.metadata != "ok" and not self.service.startswith("grpc.health")
        if code == "OK" and ((case.invalid and case.metadata == "ok") or bad_metadata):
            self.invalid_accepted_count += 1
            desc = case.desc + (f" [metadata {case.metadata}]" if bad_metadata else "")
            if desc not in self.invalid_accepted and len(self.invalid_accepted) < 6:
                self.invalid_accepted.append(desc)

    def row(self) -> dict:
        """The raw counts for the JSON file."""
        return {"role": self.role, "method": f"{self.service}/{self.name}", "cases": self.cases,
                "codes": dict(self.codes), "hangs": self.codes["DEADLINE_EXCEEDED"],
                "crashes": self.crashes, "state_changes": self.state_changes,
                "invalid_accepted": self.invalid_accepted_count,
                "invalid_accepted_examples": self.invalid_accepted,
                "hang_examples": self.hangs, "examples": self.examples,
                "notes": dict(self.notes), "rss_mb_after": self.rss_mb,
                "seconds": round(self.seconds, 1)}


class Fuzzer:
    """Runs every method's cases against the cluster, batch by batch."""

    def __init__(self, cluster: Cluster, cases: int, seed: int, deadline: float):
        self.cluster, self.total, self.deadline = cluster, cases, deadline
        self.rng = np.random.default_rng(seed)
        self.pool = ThreadPoolExecutor(THREADS)
        self.channels: dict = {}

    def channel(self, role: str) -> grpc.Channel:
        """A plain channel to a role (re-made after a cluster restart)."""
        address = self.cluster.addresses[role]
        if role not in self.channels or self.channels[role][0] != address:
            self.channels[role] = (address, grpc.insecure_channel(address, CHANNEL_OPTIONS))
        return self.channels[role][1]

    def run_method(self, role, service, name, kind, gen, changes_state) -> MethodRun:
        """All cases of one method, in batches with state snapshots around them."""
        run = MethodRun(role, service, name)
        start = time.monotonic()
        self.cluster.target.budget = dict(BUDGET)
        self.cluster.fresh_job(run.notes)
        baseline = self.cluster.settle()
        sent = 0
        while sent < self.total:
            batch_cases = [make_case(gen, self.cluster.target, self.rng)
                           for _ in range(min(BATCH, self.total - sent))]
            outcomes = self.send_batch(role, service, name, kind, batch_cases)
            for case, (code, details, _) in zip(batch_cases, outcomes):
                run.record(case, code, details)
            sent += len(batch_cases)
            dead = self.cluster.dead_roles()
            if dead:
                self.note_crash(run, dead, batch_cases, sent)
                baseline = self.cluster.settle()
                continue
            baseline = self.check_state(run, baseline, batch_cases, outcomes, changes_state,
                                        (role, service, name, kind), sent)
        dead = self.cluster.dead_roles(health=True)
        if dead:
            self.note_crash(run, dead, [], sent)
        self.recheck_hangs(run, (role, service, name, kind))
        run.rss_mb = self.cluster.rss_mb()
        run.seconds = time.monotonic() - start
        return run

    def callable(self, role, service, name, kind):
        """The raw multi-callable of a method (bytes in, bytes out)."""
        channel = self.channel(role)
        make = {"uu": channel.unary_unary, "us": channel.unary_stream,
                "su": channel.stream_unary, "ss": channel.stream_stream}[kind]
        return make(f"/{service}/{name}")

    def send_batch(self, role, service, name, kind, cases) -> list:
        """Send a batch on THREADS threads; outcomes in case order."""
        callable_ = self.callable(role, service, name, kind)
        return list(self.pool.map(lambda c: send(callable_, kind, c, self.deadline), cases))

    def recheck_hangs(self, run, method) -> None:
        """Send a few timed-out cases again, alone on an idle cluster: a case that answers
        quickly then was only stuck behind slower calls."""
        if not run.hung_cases:
            return
        callable_ = self.callable(*method)
        for case in run.hung_cases:
            self.cluster.ensure_job(collections.Counter())
            self.cluster.settle()
            start = time.monotonic()
            code, _, _ = send(callable_, method[3], case, self.deadline)
            run.hangs.append(f"{case.kind}: {case.desc} (alone: {code} after "
                             f"{time.monotonic() - start:.1f} s)")

    def check_state(self, run, baseline, cases, outcomes, changes_state, method, sent):
        """Compare snapshots around the batch; returns the next baseline."""
        # A call that got replies before failing (an exchange stream) or ran out of time may
        # have done its work on the server: such calls count as accepted here.
        accepted = any(code == "OK" or replies or code == "DEADLINE_EXCEEDED"
                       for code, _, replies in outcomes)
        hung = any(code == "DEADLINE_EXCEEDED" for code, _, _ in outcomes)
        if changes_state and accepted:
            self.cluster.ensure_job(run.notes)
            return self.cluster.settle() if hung else self.cluster.snapshot()
        after = self.cluster.settle() if hung else self.cluster.snapshot()
        if after == baseline:
            return after
        changed = sorted(k for k in set(after) | set(baseline) if after.get(k) != baseline.get(k))
        finding = {"batch_ending_at_case": sent, "all_refused": not accepted, "changed": changed,
                   "before": {k: baseline.get(k) for k in changed},
                   "after": {k: after.get(k) for k in changed}}
        if len(run.state_changes) < ATTRIBUTIONS_PER_METHOD:
            finding["culprits"] = self.attribute(method, cases)
        run.state_changes.append(finding)
        self.cluster.ensure_job(run.notes)
        return self.cluster.snapshot()

    def attribute(self, method, cases) -> list:
        """Re-send a batch's cases one at a time with snapshots around each; which changed?"""
        callable_ = self.callable(*method)
        culprits = []
        self.cluster.ensure_job(collections.Counter())
        before = self.cluster.snapshot()
        for case in cases:
            code, _, _ = send(callable_, method[3], case, self.deadline)
            hung = code == "DEADLINE_EXCEEDED"
            after = self.cluster.settle() if hung else self.cluster.snapshot()
            if after != before:
                culprits.append(f"{case.kind}: {case.desc} -> {code}")
                self.cluster.ensure_job(collections.Counter())
                after = self.cluster.snapshot()
            before = after
            if len(culprits) >= 3:
                break
        return culprits or ["not reproduced one case at a time"]

    def note_crash(self, run, dead, cases, sent) -> None:
        """Record dead roles with the batch that preceded, restart the cluster."""
        kinds = collections.Counter(c.kind for c in cases)
        run.crashes.append({"roles": dead, "batch_ending_at_case": sent,
                            "batch_kinds": dict(kinds),
                            "batch_sample": [f"{c.kind}: {c.desc}" for c in cases[:5]],
                            "log_tail": {r: self.cluster.log_tail(r) for r in dead}})
        run.notes[f"cluster restarted after {', '.join(dead)} died"] += 1
        self.cluster.restart()


# --- the job and the cluster -------------------------------------------------------------
def cartpole_env():
    """The job's env (pickled by value: this script is __main__)."""
    import gymnasium

    return gymnasium.make("CartPole-v1")


def small_features(space):
    """The job's feature layers: one Dense(16)."""
    import keras

    inp = keras.Input(space.shape)
    return inp, keras.layers.Dense(16, activation="relu")(inp)


JOB = dict(env_maker=cartpole_env, feature_maker=small_features, replay_type="uniform",
           replay_kwargs=dict(maxlen=1000, minlen=10), train_steps=10**9)


def collect_rollouts(count: int = 24, maxlen: int = 32, seed: int = 0) -> list:
    """Real CartPole rollout lists, as a DQN worker inserts them (random actions)."""
    env, rng = cartpole_env(), np.random.default_rng(seed)
    lists, (obs, _) = [], env.reset(seed=seed)
    track = ([obs], [], [])
    while len(lists) < count:
        action = int(rng.integers(2))
        obs, reward, terminated, truncated, _ = env.step(action)
        track[0].append(obs)
        track[1].append(action)
        track[2].append(float(reward))
        if terminated or truncated or len(track[2]) == maxlen:
            lists.append(make_list(track[0], track[1], track[2], [], bool(terminated), 0))
            if terminated or truncated:
                obs, _ = env.reset()
            track = ([obs], [], [])
    return lists


def free_ports(count: int) -> list:
    """Ports nobody listens on now (bound to 0, then released)."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (REPLAY_MEMORY_LIMIT, REPLAY_MEMORY_LIMIT))


class Cluster:
    """The role processes on loopback, the job they run, and snapshots of its state."""

    ROLES = ("parameter-server", "ps-shard", "replay", "evaluator")

    def __init__(self):
        self.workdir = tempfile.mkdtemp(prefix="chaos-fuzz-")
        self.security = Security(token=TOKEN)
        self.config = trainer_config("dqn", **JOB)
        self.rollouts = collect_rollouts()
        self.procs: dict = {}
        self.generation = 0
        self.target: Target | None = None
        self.start()

    # --- processes ---------------------------------------------------------------------
    def start(self) -> None:
        """Start every role (fresh data dir and ports), then a job."""
        self.generation += 1
        ports = dict(zip(self.ROLES, free_ports(len(self.ROLES))))
        self.addresses = {role: f"127.0.0.1:{port}" for role, port in ports.items()}
        ps = self.addresses["parameter-server"]
        data_dir = os.path.join(self.workdir, f"data-{self.generation}")
        self.spawn("parameter-server", ["--port", str(ports["parameter-server"]),
                                        "--data-dir", data_dir, "--shards", "2"])
        for role in self.ROLES[1:]:
            self.spawn(role, ["--port", str(ports[role]), "--ps", ps])
        for role in self.ROLES:
            if not wait_healthy(self.addresses[role], START_TIMEOUT):
                raise RuntimeError(f"{role} did not start; see {self.log_path(role)}")
        self.client = Client(ps, token=TOKEN, retry_seconds=30)
        self.control = make_channel(ps, self.security)
        self.ps_stub = ps_grpc.ParameterServerStub(self.control)
        self.jc_stub = jc_grpc.JobControlStub(self.control)
        self.replay_channel = make_channel(self.addresses["replay"], self.security)
        self.replay_stub = rp_grpc.ReplayServerStub(self.replay_channel)
        self.job_id = self.spare_id = None
        self.weights_client: ParameterClient | None = None
        self.ensure_job(collections.Counter())

    def spawn(self, role: str, args: list) -> None:
        env = dict(os.environ, DRLBOX_TOKEN=TOKEN, DRLBOX_HOST="127.0.0.1",
                   TF_CPP_MIN_LOG_LEVEL="2")
        with open(self.log_path(role), "ab") as log:
            self.procs[role] = subprocess.Popen(
                [sys.executable, "-m", "drlbox.cli", role, *args], env=env, stdout=log,
                stderr=subprocess.STDOUT, preexec_fn=_limit_memory if role == "replay" else None)

    def log_path(self, role: str) -> str:
        return os.path.join(self.workdir, f"{role}-{self.generation}.log")

    def log_tail(self, role: str, lines: int = 6) -> list:
        """The last lines a role wrote (for crash reports)."""
        try:
            with open(self.log_path(role), errors="replace") as f:
                return [line.rstrip()[:200] for line in f.readlines()[-lines:]]
        except OSError:
            return []

    def dead_roles(self, health: bool = False) -> list:
        """Roles whose process exited (or, with health, that do not answer a health check)."""
        dead = [f"{role} (exit {p.returncode})" for role, p in self.procs.items()
                if p.poll() is not None]
        if health and not dead:
            dead = [f"{role} (no health answer)" for role in self.ROLES
                    if not wait_healthy(self.addresses[role], 10.0)]
        return dead

    def rss_mb(self) -> dict:
        """Resident memory of each role process, in MB (to spot leaks across the run)."""
        sizes = {}
        for role, proc in self.procs.items():
            try:
                with open(f"/proc/{proc.pid}/status") as f:
                    kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
                sizes[role] = kb // 1024
            except (OSError, StopIteration):
                sizes[role] = None
        return sizes

    def stop_processes(self) -> None:
        """Terminate every role process (kill those that linger)."""
        for closer in ("client", "control", "replay_channel", "weights_client"):
            if getattr(self, closer, None) is not None:
                getattr(self, closer).close()
                setattr(self, closer, None)
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = {}

    def restart(self) -> None:
        """A fresh cluster (new ports and data dir), after a crash or a broken job table."""
        self.stop_processes()
        self.start()

    def close(self) -> None:
        """Stop everything and remove the work directory."""
        self.stop_processes()
        shutil.rmtree(self.workdir, ignore_errors=True)

    # --- the job -----------------------------------------------------------------------
    def fresh_job(self, notes: collections.Counter) -> None:
        """A new job for the next method (so methods do not see each other's leftovers):
        cancel ours and let the spare take over."""
        self.ensure_job(notes)
        self.jc_stub.Cancel(jc_pb.JobRef(job_id=self.job_id), timeout=30)
        self.ensure_job(collections.Counter())

    def ensure_job(self, notes: collections.Counter) -> None:
        """Make sure our job runs with both slices served and replay lists in its memory,
        with a spare job queued behind it; replace it if a call ended it."""
        for attempt in range(4):
            try:
                self._ensure_job(notes)
                return
            except (grpc.RpcError, TimeoutError) as err:
                busy = isinstance(err, grpc.RpcError) and err.code() in (
                    grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
                if busy and attempt < 2:      # e.g. still working on a timed-out call
                    time.sleep(5)
                    continue
                reason = (f"{err.code().name}: {err.details()}" if isinstance(err, grpc.RpcError)
                          else str(err))
                notes[f"cluster restarted: job control failed ({reason[:160]})"] += 1
                self.restart()
        raise RuntimeError("the cluster could not run a job four times in a row")

    def _ensure_job(self, notes: collections.Counter) -> None:
        jobs = self.jc_stub.ListJobs(jc_pb.ListJobsRequest(), timeout=30).jobs
        states = {j.job_id: JOB_STATE.from_proto(j.state) for j in jobs}
        for job_id, state in states.items():
            # Jobs a fuzzed Submit queued, or one of them that started: not ours.
            if state in ("queued", "running") and job_id not in (self.job_id, self.spare_id):
                self.jc_stub.Cancel(jc_pb.JobRef(job_id=job_id), timeout=30)
        if states.get(self.job_id) == "running" and self._wait_ready(self.job_id, 10):
            self._ensure_spare(states)
            return
        if self.job_id is not None:
            notes[f"job replaced (it was {states.get(self.job_id, 'unknown')})"] += 1
            if states.get(self.job_id) == "running":
                self.jc_stub.Cancel(jc_pb.JobRef(job_id=self.job_id), timeout=30)
        if self.spare_id is None or states.get(self.spare_id) not in ("queued", "running"):
            self.spare_id = self.client.submit("dqn", **JOB).job_id
        self.job_id, self.spare_id = self.spare_id, None
        if not self._wait_ready(self.job_id, 120):
            raise TimeoutError(f"job {self.job_id} did not start with both slices served")
        self._use_job()
        self._ensure_spare({})

    def _ensure_spare(self, states: dict) -> None:
        if self.spare_id is None or states.get(self.spare_id, "queued") != "queued":
            self.spare_id = self.client.submit("dqn", **JOB).job_id

    def _wait_ready(self, job_id: str, seconds: float) -> bool:
        """Wait until job_id runs and every slice of its weights is served."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                status = self.ps_stub.GetStatus(ps_pb.StatusRequest(job_id=job_id), timeout=10)
                state = JOB_STATE.from_proto(status.state)
                if state == "running" and self.ps_stub.GetShards(
                        ps_pb.ShardsRequest(job_id=job_id), timeout=10).complete:
                    return True
                if state not in ("running", "queued"):
                    return False
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.NOT_FOUND:
                    raise
            time.sleep(0.1)
        return False

    def _use_job(self) -> None:
        """Fill the new job's replay memory and describe the job to the case generators."""
        replay = ReplayClient(self.addresses["replay"], self.job_id, timeout=30,
                              security=self.security)
        replay.insert(self.rollouts[:16])
        replay.close()
        shards = self.ps_stub.GetShards(ps_pb.ShardsRequest(job_id=self.job_id), timeout=10)
        if self.weights_client is not None:
            self.weights_client.close()
        self.weights_client = ParameterClient(self.addresses["parameter-server"], self.job_id,
                                              timeout=10, security=self.security)
        budget = self.target.budget if self.target else dict(BUDGET)
        self.target = Target(self.job_id, [s.stop - s.start for s in shards.shards],
                             shards.shards[1].address, python_version(), self.config,
                             Job("", self.config).encode(), self.rollouts, budget)

    # --- state snapshots ---------------------------------------------------------------
    def snapshot(self) -> dict:
        """The job's observable state through ordinary calls that change nothing."""
        state = {}
        parts = {
            "status": lambda: _status_key(self.ps_stub.GetStatus(
                ps_pb.StatusRequest(job_id=self.job_id), timeout=10)),
            "jobs": lambda: tuple((j.job_id, j.state) for j in self.jc_stub.ListJobs(
                jc_pb.ListJobsRequest(), timeout=30).jobs),
            "shards": lambda: tuple(s.address for s in self.ps_stub.GetShards(
                ps_pb.ShardsRequest(job_id=self.job_id), timeout=10).shards),
            "replay": lambda: _replay_key(self.replay_stub.UpdatePriorities(
                rp_pb.PriorityUpdate(job_id=self.job_id), timeout=10)),
            "weights": self._weights_key,
        }
        for name, read in parts.items():
            try:
                state[name] = read()
            except grpc.RpcError as err:
                state[name] = f"error {err.code().name}: {(err.details() or '')[:80]}"
            except Exception as err:  # noqa: BLE001 - a malformed answer is state too
                state[name] = f"error {type(err).__name__}: {str(err)[:80]}"
        return state

    def _weights_key(self) -> str:
        update = self.weights_client.get_weights(-1)
        if update is None:
            return "no weights (job stopped)"
        digest = hashlib.sha1(np.asarray(update.weights).tobytes())
        if update.aux is not None:
            digest.update(np.asarray(update.aux).tobytes())
        return f"v{update.version}/{update.aux_version} {digest.hexdigest()[:12]}"

    def settle(self, seconds: float = 60.0) -> dict:
        """A snapshot once two in a row agree and none of its calls timed out (the work of
        timed-out calls may still be landing)."""
        previous = self.snapshot()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.3)
            current = self.snapshot()
            if current == previous and "DEADLINE_EXCEEDED" not in repr(current):
                return current
            previous = current
        return previous


def _status_key(s) -> tuple:
    return (s.state, s.global_steps, s.updates, s.version, s.episodes, len(s.evaluations),
            len(s.checkpoints))


def _replay_key(info) -> tuple:
    return (info.size, info.ready)


# --- the report ----------------------------------------------------------------------------
HEADER = (["role", "method", "cases", "OK", "refused"] + CODES
          + ["other codes", "UNKNOWN", "INTERNAL", "hangs", "crashes",
             "state changes on refused", "invalid accepted", "seconds"])
_SHOWN = set(CODES) | {"OK", "UNKNOWN", "INTERNAL", "DEADLINE_EXCEEDED"}


def table_row(run: MethodRun) -> list:
    """One Markdown row of the table."""
    other = ", ".join(f"{code} {n}" for code, n in sorted(run.codes.items())
                      if code not in _SHOWN) or "-"
    return ([run.role, f"{run.service.split('.')[-1]}/{run.name}", run.cases, run.codes["OK"],
             run.cases - run.codes["OK"]] + [run.codes[c] for c in CODES]
            + [other, run.codes["UNKNOWN"], run.codes["INTERNAL"],
               run.codes["DEADLINE_EXCEEDED"], len(run.crashes), len(run.state_changes),
               run.invalid_accepted_count, f"{run.seconds:.0f}"])


def findings(runs: list) -> list:
    """Markdown lines: crashes, hangs, state changes, invalid requests accepted, notes, then
    the example answers (UNKNOWN, INTERNAL, rarer codes), each kind once with its methods."""
    lines, answers = [], {}
    for run in runs:
        name = f"{run.role} {run.service.split('.')[-1]}/{run.name}"
        for crash in run.crashes:
            lines.append(f"- **crash** {name}: {', '.join(crash['roles'])} after the batch "
                         f"ending at case {crash['batch_ending_at_case']} (kinds "
                         f"{crash['batch_kinds']}; e.g. {crash['batch_sample'][:2]}); log tail: "
                         f"{crash['log_tail']}")
        if run.codes["DEADLINE_EXCEEDED"]:
            lines.append(f"- **hang** {name}: {run.codes['DEADLINE_EXCEEDED']} call(s) hit the "
                         f"deadline; sent again alone: {run.hangs}")
        for change in run.state_changes:
            lines.append(f"- **state change** {name}: batch ending at case "
                         f"{change['batch_ending_at_case']} (all refused: "
                         f"{change['all_refused']}) changed {change['changed']}: "
                         f"{change['before']} -> {change['after']}; one by one: "
                         f"{change.get('culprits', 'not attributed')}")
        if run.invalid_accepted_count:
            lines.append(f"- **invalid accepted** {name}: {run.invalid_accepted_count} "
                         f"request(s) invalid by construction answered OK, e.g. "
                         f"{run.invalid_accepted}")
        for note, count in run.notes.items():
            lines.append(f"- note {name}: {note} (x{count})")
        for code, examples in run.examples.items():
            for case, details in examples:
                # The same answer from many methods (parse failures, ...) is listed once.
                key = (code, re.sub(r"\d+", "N", details)[:100])
                answers.setdefault(key, (details, case, []))[2].append(name)
    if runs:
        first, last = runs[0].rss_mb, runs[-1].rss_mb
        lines.append("- memory (RSS MB) after the first and the last method: " + ", ".join(
            f"{role} {first.get(role)} -> {last.get(role)}" for role in last))
    lines.append("")
    for (code, _), (details, case, names) in answers.items():
        methods = ", ".join(sorted(set(names)))
        lines.append(f"- {code} `{details[:160]}` from {methods} (e.g. {case[:120]})")
    return lines


def write_report(runs: list, args, seconds: float) -> str:
    """The Markdown table and findings (printed and written to OUT.md), and OUT.json."""
    rows = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    rows += ["| " + " | ".join(str(v) for v in table_row(run)) + " |" for run in runs]
    text = "\n".join(
        [f"# drlbox chaos fuzz: {args.cases} cases per method, seed {args.seed}, deadline "
         f"{args.deadline:g} s, {seconds / 60:.1f} min", ""] + rows
        + ["", "## Findings", ""] + (findings(runs) or ["- none"])) + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".md", "w") as f:
        f.write(text)
    with open(args.out + ".json", "w") as f:
        json.dump({"cases_per_method": args.cases, "seed": args.seed, "deadline": args.deadline,
                   "seconds": round(seconds, 1), "budget": BUDGET,
                   "methods": [run.row() for run in runs]}, f, indent=1, default=str)
    return text


def main() -> None:
    """Start the cluster, fuzz every method, report, stop everything."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000, help="cases per method")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--deadline", type=float, default=10.0, help="seconds per call")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(
        __file__)), "results", "chaos_fuzz"), help="OUT.md and OUT.json are written")
    parser.add_argument("--only", default="", help="comma-separated method names (debugging)")
    args = parser.parse_args()
    start = time.monotonic()
    cluster = Cluster()
    runs = []
    try:
        fuzzer = Fuzzer(cluster, args.cases, args.seed, args.deadline)
        for i, spec in enumerate(METHODS, 1):
            if args.only and spec[2] not in args.only.split(","):
                continue
            run = fuzzer.run_method(*spec)
            runs.append(run)
            print(f"[{i}/{len(METHODS)}] {run.role} {run.service.split('.')[-1]}/{run.name}: "
                  f"{run.cases} cases, {run.codes['OK']} OK, UNKNOWN {run.codes['UNKNOWN']}, "
                  f"INTERNAL {run.codes['INTERNAL']}, hangs {run.codes['DEADLINE_EXCEEDED']}, "
                  f"crashes {len(run.crashes)}, state changes {len(run.state_changes)}, "
                  f"invalid accepted {run.invalid_accepted_count}, {run.seconds:.0f} s",
                  flush=True)
    finally:
        cluster.close()
    print(write_report(runs, args, time.monotonic() - start), flush=True)


if __name__ == "__main__":
    main()
