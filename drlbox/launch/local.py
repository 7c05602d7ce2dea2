"""Run a training job on this machine, as a one-machine cluster: gRPC over 127.0.0.1.

The roles are the cluster's own entry points (drlbox.launch.entrypoints), each a process, with
a private token: the parameter server hosts a job queue in a temporary directory, the launcher
submits the run's one job through job control, and the workers and evaluator find it as they
would in a cluster and leave when it is over.

Ports: the parameter server on `port_begin`, replay on +1, the evaluator on +2, worker i on
+3+i. The launcher watches the job, shows progress, restarts the roles that can come back,
reports workers that die (training goes on with the others) and stops every process on the way
out, whatever happened.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from typing import Any

import grpc

from drlbox.jobs import Job
from drlbox.launch.forkserver import ForkServer, ForkServerGone
from drlbox.launch.processes import (TOKEN_VARIABLE, env_flag, load_start_error,
                                     quiet_tensorflow_logs)
from drlbox.launch.progress import Progress
from drlbox.metrics import local_metrics_port
from drlbox.roles.interfaces import Checkpoint, JobStatus
from drlbox.roles.job_host import resume_file
from drlbox.roles.job_journal import ResumeJournal
from drlbox.rpc.security import Security
from drlbox.rpc.server import PortInUseError, wait_healthy

HOST = "127.0.0.1"
START_TIMEOUT = 180.0
MAX_RESTARTS = 5
# What happens when a role that can come back dies (by name, without its number).
RESTARTS = {
    "parameter-server": "starting a new one, which resumes the run from its last checkpoint",
    "ps-shard-": "starting a new one, which resumes its slice from the last checkpoint",
    "replay-server": "starting a new one (its memory starts empty; workers wait for it)",
    "evaluator": "starting a new one",
}


@dataclass
class TrainResult(JobStatus):
    """How a training run ended: the job's final status, and the roles that died for good."""

    failed_roles: list = field(default_factory=list)   # e.g. ['worker-1']


def how_it_ended(returncode: int) -> str:
    """A role process's end in words: killed by a signal, or its exit code."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exit code {returncode}; its error, if it printed one, is above"


def check_ports_free(ports: dict[str, int]) -> None:
    """Raise PortInUseError naming the role and port when one cannot be bound."""
    for role, port in ports.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # As gRPC binds: a port left in TIME_WAIT by a previous run is free to reuse.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((HOST, port))
            except OSError as err:
                raise PortInUseError(
                    f"port {port} for the {role} is taken ({err.strerror}); pass another "
                    f"port_begin (this run needs ports {min(ports.values())}-"
                    f"{max(ports.values())})") from None


def plan_ports(config: Any) -> dict[str, int]:
    """role name -> port for this run."""
    base = config.port_begin
    ports = {"parameter server": base}
    if config.uses_replay:
        ports["replay server"] = base + 1
    if config.eval_interval:
        ports["evaluator"] = base + 2
    for i in range(config.num_parallel):
        ports[f"worker {i}"] = base + 3 + i
    return ports


def roles_log_progress() -> bool:
    """Whether role processes log their INFO lines: only with DRLBOX_VERBOSE=1, as in a
    cluster. The progress bar (verbose=True) shows what they say (evaluations, the job's end),
    and lines from other processes would only break it. Warnings and errors always show."""
    return env_flag("DRLBOX_VERBOSE")


class _StoppedFromOutside(Exception):
    """The parameter server ended cleanly while the run was being followed."""


class LocalRun:
    """One local training run; `run()` blocks until it ends and returns a TrainResult."""

    def __init__(self, config: Any):
        self.config = config
        self.job_id = ""            # given by the parameter server's job host at submission
        # Only this run's roles know it: no other local user can stop the run, read its
        # makers or push to it (the roles get it in their environment, not their arguments).
        self.token = secrets.token_urlsafe(24)
        self.security = Security(token=self.token)
        self.procs: dict[str, subprocess.Popen] = {}
        self._restart: dict = {}
        self._restarts: dict[str, int] = {}
        self._last_restart = -float("inf")
        self._interrupted = False
        self._forks: ForkServer | None = None
        self._error_file = ""
        self._data_dir = ""

    def _role_env(self) -> dict:
        """The environment of every role process."""
        # The user's makers may live in modules importable only through this process's
        # sys.path (e.g. beside their script): the roles get the same path.
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p or os.getcwd() for p in sys.path))
        env[TOKEN_VARIABLE] = self.token
        quiet_tensorflow_logs(env)
        return env

    def _spawn(self, name: str, role: str, /, **kwargs: Any) -> None:
        """Start a role: forked by the fork server, or else as a fresh interpreter (the user's
        script is never re-imported either way)."""
        kwargs["verbose"] = roles_log_progress()
        if self._forks is not None and self._forks.alive:
            try:
                self.procs[name] = self._forks.fork(name, role, kwargs)
                return
            except ForkServerGone:
                pass
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "drlbox.launch.role", role, json.dumps(kwargs)],
            stdin=subprocess.DEVNULL, env=self._role_env())

    def start_parameter_server(self, port: int) -> str:
        """Start the parameter server (the job host) and its shards; its address once it
        serves."""
        address = self._spawn_parameter_server(port)
        self._wait_started("parameter-server", address)
        return address

    def _spawn_parameter_server(self, port: int) -> str:
        """Start the parameter server (the job host) and its shards; its address."""
        if not self._data_dir:
            self._make_run_files()
        ps_address = f"{HOST}:{port}"
        self._ps_address = ps_address
        self._restart["parameter-server"] = lambda: self._spawn(
            "parameter-server", "parameter-server", port=port, data_dir=self._data_dir,
            shards=self.config.ps_shards, error_file=self._error_file,
            metrics_port=local_metrics_port(0))
        self._restart["parameter-server"]()
        for k in range(1, self.config.ps_shards):
            self._spawn_shard(k)
        return ps_address

    def submit(self) -> str:
        """Hand the run's job to the parameter server, as the SDK does; its job id."""
        from drlbox.rpc.job_control import JobControlClient

        jobs = JobControlClient(self._ps_address, self.security)
        try:
            status = jobs.submit(Job("", self.config).encode(), self.config.algorithm,
                                 timeout=START_TIMEOUT)
        finally:
            jobs.close()
        self.job_id = status.job_id
        return self.job_id

    def _start_roles(self, ports: dict[str, int]) -> str:
        cfg = self.config
        ps_address = self._spawn_parameter_server(ports["parameter server"])
        # Every role starts at once: the others find the job as they would in a cluster,
        # polling until the parameter server is up and has built it.
        replay_address = f"{HOST}:{ports['replay server']}" if cfg.uses_replay else None
        self._restart.update({
            "replay-server": lambda: self._spawn(
                "replay-server", "replay", ps_address=ps_address,
                port=ports.get("replay server"), metrics_port=local_metrics_port(1)),
            "evaluator": lambda: self._spawn(
                "evaluator", "evaluator", ps_address=ps_address, port=ports.get("evaluator"),
                metrics_port=local_metrics_port(2))})
        if replay_address:
            self._restart["replay-server"]()
        for i in range(cfg.num_parallel):
            self._spawn(f"worker-{i}", "worker", name=f"worker-{i}", ps_address=ps_address,
                        replay_address=replay_address, port=ports[f"worker {i}"],
                        metrics_port=local_metrics_port(3 + i))
        if cfg.eval_interval:
            self._restart["evaluator"]()
        self._wait_started("parameter-server", ps_address)
        self.submit()
        if replay_address:
            self._wait_started("replay-server", replay_address)
        return ps_address

    def _spawn_shard(self, k: int) -> None:
        """A parameter-server shard process (it takes whichever slice needs serving)."""
        self._spawn(f"ps-shard-{k}", "ps-shard", ps_address=self._ps_address)

    def _wait_started(self, name: str, address: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.procs[name].poll() is not None:
                error = load_start_error(self._error_file) if self._error_file else None
                if error is not None:
                    raise error
                raise RuntimeError(f"the {name} exited during start-up "
                                   f"({how_it_ended(self.procs[name].returncode)})")
            if wait_healthy(address, timeout=1.0):
                return
        raise RuntimeError(f"the {name} did not start within {START_TIMEOUT:.0f} s")

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._interrupted = True

    def run(self) -> TrainResult:
        """Start the roles, follow the job to its end, stop everything."""
        ports = plan_ports(self.config)
        check_ports_free(ports)
        previous = {}
        if self.config.catch_signal:
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, self._on_signal)
        try:
            # The run's ports in its arguments: every process of the run can be told apart.
            self._forks = ForkServer(self._role_env(), f"ports {min(ports.values())}-"
                                                       f"{max(ports.values())}")
            self._start_roles(ports)
            return self._follow()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.close()

    def close(self) -> None:
        """Stop every role of the run and remove its files."""
        self._shutdown()
        self._remove_run_files()

    def _make_run_files(self) -> None:
        """The job host's directory (job records, so that a restarted parameter server finds
        the job again) and the path where a start error comes back."""
        self._data_dir = tempfile.mkdtemp(prefix="drlbox-run-")
        self._error_file = os.path.join(self._data_dir, "start-error")

    def _remove_run_files(self) -> None:
        """The run ended: nothing to resume any more."""
        if self._data_dir:
            shutil.rmtree(self._data_dir, ignore_errors=True)
        resume = resume_file(Job(self.job_id, self.config)) if self.job_id else None
        if resume:
            ResumeJournal(resume).remove()

    def _follow(self) -> TrainResult:
        from drlbox.rpc.job_control import JobControlClient
        from drlbox.rpc.parameter_client import ParameterClient

        # Not waiting for a server that is not there: the launcher must see it die and
        # start a new one, not wait on the address until the call's deadline.
        client = ParameterClient(self._ps_address, self.job_id, timeout=10.0,
                                 security=self.security, wait_for_ready=False)
        jobs = JobControlClient(self._ps_address, self.security)
        progress = Progress(self.config.verbose, self.config.train_steps,
                            f"{self.config.algorithm} x{self.config.num_parallel}")
        failed: list[str] = []
        status, answered = None, time.monotonic()
        try:
            while True:
                self._check_roles(failed, progress, client)
                try:
                    status = jobs.status(self.job_id, timeout=10.0)
                except grpc.RpcError:
                    # The server may have died after the check above (the next check restarts
                    # or reports it), be starting again, or be busy: give it a while.
                    if time.monotonic() - max(answered, self._last_restart) > START_TIMEOUT:
                        raise
                    time.sleep(0.25)
                    continue
                answered = time.monotonic()
                if status.state == "failed":
                    raise load_start_error(self._error_file) or RuntimeError(status.message)
                if status.state != "queued":
                    progress.update(status)
                if status.finished:
                    break
                if self._interrupted:
                    with contextlib.suppress(grpc.RpcError):   # it may be ending already
                        client.stop("interrupted by a signal")
                    continue
                time.sleep(0.25)
            self._join_workers(timeout=60.0)
            try:
                status = jobs.status(self.job_id, timeout=10.0)
            except grpc.RpcError:
                # The parameter server may have ended right after saying the job stopped
                # (SIGTERM to every process of the run): once its end is known, say how.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.procs["parameter-server"].wait(10.0)
                self._check_roles(failed, progress, client)
                raise
        except _StoppedFromOutside as stopped:
            if status is None or not self._interrupted:
                raise RuntimeError(str(stopped)) from None
            # SIGTERM reached every process of the run at once (`timeout`, systemd): the
            # parameter server saved its final model; report the last figures it gave.
            status = replace(status, state="stopped", message=str(stopped),
                             checkpoints=status.checkpoints + self._final_model(status))
        finally:
            progress.close()
            client.close()
            jobs.close()
        return TrainResult(**vars(status), failed_roles=failed)

    def _final_model(self, status: Any) -> list[Checkpoint]:
        """The final model the parameter server saved on its way out, if it did."""
        path = os.path.join(self.config.save_dir or "", "model_final.keras")
        if not self.config.save_dir or not os.path.exists(path):
            return []
        return [Checkpoint(path, status.global_steps, status.train_seconds)]

    def _check_roles(self, failed: list, progress: Progress, client: Any) -> bool:
        """Restart the roles that can be restarted, report the others; stop when no worker is
        left. True when something was restarted."""
        workers = [name for name in self.procs if name.startswith("worker-")]
        restarted = False
        for name, proc in list(self.procs.items()):
            code = proc.poll()
            if name in failed or code is None or (code == 0 and name != "parameter-server"):
                continue
            if self._interrupted and code == -signal.SIGTERM and name != "parameter-server":
                continue      # the SIGTERM that stops the run reached it too (`timeout`, systemd)
            if code == 0:     # it ends on its own only when terminated from outside the run
                raise _StoppedFromOutside(
                    "the parameter server was terminated from outside the run (SIGTERM) and "
                    "saved its final model" + (" in save_dir" if self.config.save_dir else
                                                " (no save_dir: nothing was written)"))
            how = how_it_ended(proc.returncode)
            if self._may_restart(name):
                then = RESTARTS[name.rstrip("0123456789")]
                progress.write(f"drlbox: {name} died ({how}); {then}")
                self._restart_role(name)
                restarted = True
                continue
            failed.append(name)
            if name == "parameter-server":
                raise RuntimeError(f"the parameter server died ({how}); training cannot go on"
                                   + ("" if self.config.save_dir else " (with save_dir it would "
                                      "be restarted from its last checkpoint)"))
            alive = sum(self.procs[w].poll() is None for w in workers)
            going_on = {"evaluator": "training goes on without evaluations",
                        "replay-server": "it died too often; workers cannot replay and will "
                                         "stop"}.get(
                name, f"training goes on with {alive} worker(s)" if alive
                else "no worker is left, so the run stops")
            progress.write(f"drlbox: {name} died ({how}); {going_on}")
        if all(name in failed for name in workers):
            with contextlib.suppress(grpc.RpcError):   # the next check tells why it is gone
                client.stop(f"all {len(workers)} workers died")
        return restarted

    def _may_restart(self, name: str) -> bool:
        """Shards, the replay server and the evaluator always come back; the parameter server
        when it has checkpoints to resume from; none of them more than MAX_RESTARTS times."""
        if name == "parameter-server" and not self.config.save_dir:
            return False
        restartable = name.startswith("ps-shard-") or name in self._restart
        return restartable and self._restarts.get(name, 0) < MAX_RESTARTS

    def _restart_role(self, name: str) -> None:
        self._restarts[name] = self._restarts.get(name, 0) + 1
        self._last_restart = time.monotonic()
        if name.startswith("ps-shard-"):
            self._spawn_shard(int(name.rsplit("-", 1)[1]))
        else:
            self._restart[name]()

    def _join_workers(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for name, proc in self.procs.items():
            if name.startswith(("worker-", "evaluator")):
                try:
                    proc.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass

    def _shutdown(self) -> None:
        """SIGTERM every role still running (the parameter server saves a final model first)."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 30.0
        for proc in self.procs.values():
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._forks is not None:
            self._forks.close()
