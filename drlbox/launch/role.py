"""`python -m drlbox.launch.role ROLE JSON_ARGS`: one role process of a local run.

A local run is a one-machine cluster: each process runs the role's cluster entry point
(drlbox.launch.entrypoints) on loopback, with the run's private token from the environment.
Roles start as fresh interpreters (or forks of the run's fork server) rather than
multiprocessing children, so the user's script is never re-imported: it needs no
`if __name__ == "__main__"` guard. `fork-server` is the warm start of a local run
(drlbox.launch.forkserver): it forks the other roles.
"""
from __future__ import annotations

import json
import sys
from typing import Any

from drlbox.launch import entrypoints
from drlbox.launch.processes import child_setup, limit_tf_threads, private_security

HOST = "127.0.0.1"


def _endpoint(port: int = 0, ps_address: str | None = None, replay_address: str | None = None,
              metrics_port: int = 0) -> entrypoints.Endpoint:
    return entrypoints.Endpoint(HOST, port, private_security(), ps_address, replay_address,
                                metrics_port)


def parameter_server(data_dir: str, shards: int, error_file: str, **where: Any) -> None:
    """The run's job host: its one job keeps its checkpoints in save_dir, ends with a final
    save when the run is torn down, and a start error goes back to the launcher."""
    entrypoints.run_parameter_server(_endpoint(**where), data_dir, shards, keep_save_dir=True,
                                     end_jobs_on_exit=True, error_file=error_file)


def ps_shard(**where: Any) -> None:
    entrypoints.run_shard(_endpoint(**where))


def worker(name: str, **where: Any) -> None:
    entrypoints.run_worker(_endpoint(**where), name, one_job=True)


def evaluator(**where: Any) -> None:
    entrypoints.run_evaluator(_endpoint(**where), one_job=True)


def replay(**where: Any) -> None:
    entrypoints.run_replay(_endpoint(**where))


ROLES = {"parameter-server": parameter_server, "ps-shard": ps_shard, "worker": worker,
         "replay": replay, "evaluator": evaluator}


def run(role: str, kwargs: dict) -> None:
    """Set the process up as a local role (quiet, Ctrl-C left to the launcher) and run it."""
    verbose = kwargs.pop("verbose", False)
    child_setup(verbose, kwargs.get("name", role))
    if role != "replay":
        limit_tf_threads()
    ROLES[role](**kwargs)


def main(argv: list[str]) -> int:
    """Run the named role with keyword arguments given as a JSON object."""
    if len(argv) != 2 or argv[0] not in (*ROLES, "fork-server"):
        print(f"usage: python -m drlbox.launch.role {{{'|'.join(ROLES)}|fork-server}} "
              f"JSON_ARGS", file=sys.stderr)
        return 2
    kwargs = json.loads(argv[1])
    if argv[0] == "fork-server":      # forks the roles above on the launcher's request
        from drlbox.launch.forkserver import serve

        serve(kwargs["reply_fd"], run)
        return 0
    run(argv[0], kwargs)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
