"""`python -m drlbox.launch.role ROLE JSON_ARGS`: run one role process (the local launcher's way).

Roles start as fresh interpreters rather than multiprocessing children, so the user's script is
never re-imported: it needs no `if __name__ == "__main__"` guard. The parameter server reads its
job (cloudpickled config) from standard input. `fork-server` is the warm start of a local run
(drlbox.launch.forkserver): it forks the other roles.
"""
from __future__ import annotations

import json
import sys

from drlbox.launch import processes

ROLES = {
    "parameter-server": processes.run_parameter_server,
    "ps-shard": processes.run_shard,
    "worker": processes.run_worker,
    "replay": processes.run_replay,
    "evaluator": processes.run_evaluator,
}


def main(argv: list[str]) -> int:
    """Run the named role with keyword arguments given as a JSON object."""
    if len(argv) != 2 or argv[0] not in (*ROLES, "fork-server"):
        print(f"usage: python -m drlbox.launch.role {{{'|'.join(ROLES)}|fork-server}} "
              f"JSON_ARGS", file=sys.stderr)
        return 2
    kwargs = json.loads(argv[1])
    if argv[0] == "fork-server":      # forks the roles above on the launcher's request
        from drlbox.launch.forkserver import serve

        serve(kwargs["reply_fd"], ROLES)
        return 0
    if argv[0] == "parameter-server":
        kwargs["job_bytes"] = sys.stdin.buffer.read()
    ROLES[argv[0]](**kwargs)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
