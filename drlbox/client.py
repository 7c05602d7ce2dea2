"""The drlbox SDK: submit training jobs to a running cluster and fetch the models they save.

    from drlbox.client import Client
    client = Client("127.0.0.1:50051", token="...")
    job = client.submit("a3c", env_maker=lambda: gymnasium.make("CartPole-v1"),
                        feature_maker=..., train_steps=100_000)
    job.wait()
    path = job.fetch_checkpoint()          # a .keras file: keras.models.load_model(path)

Imports no TensorFlow. The makers travel with cloudpickle and run on the cluster: submitting a
job runs your code there, with the cluster's permissions.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import os
import sys
import time
import types
from typing import Any, Callable

import cloudpickle
import grpc

from drlbox.config import trainer_config
from drlbox.jobs import Job as _JobSpec
from drlbox.roles.interfaces import Checkpoint, JobStatus
from drlbox.rpc.job_control import JobControlClient
from drlbox.rpc.security import Security

__all__ = ["Client", "Job", "JobStatus", "Checkpoint", "ClusterUnavailable"]

# Codes a restarting or briefly overloaded parameter server answers with: worth retrying.
_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class ClusterUnavailable(ConnectionError):
    """The cluster did not answer within the client's retry window."""


class Client:
    """A connection to a drlbox cluster's parameter server.

    `address` is "host:port"; `token` the cluster's token (`make token` prints the compose
    cluster's); `tls_ca` a PEM file of the CA that signed the cluster's certificate, or
    `tls=True` to trust the system's CAs. Calls retry with backoff for `retry_seconds` while
    the cluster is unreachable (e.g. its parameter server restarting), then raise
    ClusterUnavailable.
    """

    def __init__(self, address: str, token: str | None = None, *, tls_ca: str | None = None,
                 tls: bool = False, timeout: float = 60.0, retry_seconds: float = 120.0):
        security = Security.from_files(token=token, tls_ca=tls_ca, tls=tls)
        self.address = address
        self.timeout, self.retry_seconds = timeout, retry_seconds
        self._rpc = JobControlClient(address, security)

    def call(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run one call with retries on an unreachable cluster; other errors raise at once."""
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.5
        while True:
            try:
                return fn(*args, timeout=self.timeout)
            except grpc.RpcError as err:
                if err.code() not in _RETRYABLE:
                    raise _plain_error(err, what) from None
                if time.monotonic() + delay > deadline:
                    raise ClusterUnavailable(
                        f"could not {what}: the drlbox cluster at {self.address} did not answer "
                        f"for {self.retry_seconds:.0f} s ({err.details()}); is it up "
                        f"(`make ps`)?") from None
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def submit(self, algorithm: str, **kwargs: Any) -> "Job":
        """Queue a training job; takes exactly `make_trainer`'s arguments, checked here first.

        In the cluster, `num_parallel` and `port_begin` have no effect (the cluster's worker
        count applies) and checkpoints go to the cluster's volume, whatever `save_dir` says.
        """
        config = trainer_config(algorithm, **kwargs)
        with _user_modules_by_value(config):
            data = _JobSpec(job_id="", config=config).encode()
        status = self.call("submit the job", self._rpc.submit, data, config.algorithm)
        return Job(self, status.job_id)

    def job(self, job_id: str) -> "Job":
        """A handle on a job submitted earlier (by anyone)."""
        self.call("find the job", self._rpc.status, job_id)
        return Job(self, job_id)

    def jobs(self) -> list[JobStatus]:
        """Every job the cluster knows, oldest first."""
        return self.call("list the jobs", self._rpc.list)

    def close(self) -> None:
        """Close the connection."""
        self._rpc.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Job:
    """A submitted job: follow it, read its metrics, fetch its checkpoints, cancel it."""

    def __init__(self, client: Client, job_id: str):
        self.client, self.job_id = client, job_id

    def __repr__(self) -> str:
        return f"Job({self.job_id!r})"

    def status(self) -> JobStatus:
        """State ('queued', 'running', 'done', 'stopped', 'cancelled', 'failed') and progress."""
        return self.client.call("read the job's status", self.client._rpc.status, self.job_id)

    def wait(self, timeout: float | None = None, poll: float = 1.0,
             progress: bool = False) -> JobStatus:
        """Block until the job finishes; TimeoutError after `timeout` seconds.

        `progress=True` shows a bar of env steps with steps/s and returns meanwhile.
        """
        from drlbox.launch.progress import Progress

        deadline = None if timeout is None else time.monotonic() + timeout
        status = self.status()
        bar = Progress(progress, status.train_steps, self.job_id, status.global_steps)
        try:
            while True:
                bar.update(status)
                if status.finished:
                    return status
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"job {self.job_id} is still {status.state} after "
                                       f"{timeout:.0f} s ({status.global_steps} of "
                                       f"{status.train_steps} env steps)")
                time.sleep(poll)
                status = self.status()
        finally:
            bar.close()

    def metrics(self) -> dict:
        """Steps, steps/s, training episode returns, evaluator returns, the latest losses and
        the weights' mean staleness (updates by other workers between a worker's weight pull and
        its push, over the last 100 pushes)."""
        s = self.status()
        staleness = {k: v for k, v in s.stats.items() if k.startswith("staleness")}
        return {"state": s.state, "global_steps": s.global_steps,
                "train_steps": s.train_steps, "steps_per_sec": s.steps_per_sec,
                "updates": s.updates, "episodes": s.episodes,
                "recent_return": s.recent_return, "episode_returns": list(s.recent_returns),
                "evaluations": [(e.global_steps, e.mean_return) for e in s.evaluations],
                "train_seconds": s.train_seconds,
                "staleness": staleness.get("staleness_mean", float("nan")),
                "losses": {k: v for k, v in s.stats.items() if k not in staleness}}

    def checkpoints(self) -> list[Checkpoint]:
        """Saved models, oldest first (`path` is the file's name on the cluster)."""
        return [Checkpoint(os.path.basename(c.path), c.global_steps, c.train_seconds)
                for c in self.status().checkpoints]

    def fetch_checkpoint(self, step: int | str = "latest", path: str | None = None) -> str:
        """Download a saved model (the newest, or the one at `step` env steps); its path.

        `path` may be a file or an existing directory (default: the current one). The file
        loads with `keras.models.load_model` (custom objects from drlbox.layers) and with
        `make_evaluator(load_model=...)`.
        """
        if step != "latest" and not isinstance(step, int):
            raise ValueError(f"step must be 'latest' or an int number of env steps, got {step!r}")

        def path_for(name: str, global_steps: int) -> str:
            target = path or "."
            if os.path.isdir(target):
                target = os.path.join(target, f"{self.job_id}_{name}")
            return target

        saved, _ = self.client.call("fetch the checkpoint", self.client._rpc.fetch_checkpoint,
                                    self.job_id, None if step == "latest" else step, path_for)
        return saved

    def cancel(self) -> JobStatus:
        """Drop the job if queued, stop it if running; returns its status."""
        return self.client.call("cancel the job", self.client._rpc.cancel, self.job_id)


MAKER_FIELDS = ("env_maker", "feature_maker", "model_maker", "state_to_input")


def _is_installed(module: types.ModuleType) -> bool:
    """True for the standard library and installed distributions (the cluster has those)."""
    top = module.__name__.split(".")[0]
    return (getattr(module, "__file__", None) is None or top in sys.stdlib_module_names
            or top in importlib.metadata.packages_distributions())


@contextlib.contextmanager
def _user_modules_by_value(config: Any):
    """Pickle the makers' own modules by value: the cluster has the user's packages, not files.

    A maker defined in the submitting script travels by value anyway; one imported from a
    module beside it would otherwise travel as a reference the cluster cannot import.
    """
    registered = []
    for name in MAKER_FIELDS:
        module = sys.modules.get(getattr(getattr(config, name), "__module__", None) or "")
        if module is None or _is_installed(module) or module.__name__ == "__main__":
            continue
        if module.__name__ not in cloudpickle.list_registry_pickle_by_value():
            cloudpickle.register_pickle_by_value(module)
            registered.append(module)
    try:
        yield
    finally:
        for module in registered:
            cloudpickle.unregister_pickle_by_value(module)


def _plain_error(err: grpc.RpcError, what: str) -> Exception:
    """A Python exception that says what the cluster refused and why."""
    message = f"could not {what}: {err.details()}"
    code = err.code()
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return PermissionError(message)
    if code == grpc.StatusCode.NOT_FOUND:
        return LookupError(message)
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
                grpc.StatusCode.RESOURCE_EXHAUSTED):
        return ValueError(message)
    return RuntimeError(f"{message} ({code.name})")
