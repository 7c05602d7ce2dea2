"""What a role accepts from its callers, checked before anything changes.

Every value that crosses the network is checked against bounds a real worker, evaluator or
shard never comes near, and against the job; a call that fails a check raises `Refused` (or a
subclass naming its gRPC status) with the field's name, and changes nothing. Pure Python: the
replay server, which has no TensorFlow, uses it too.
"""
from __future__ import annotations

import math
import re
from typing import Any, Sequence

# Per report: a worker reports the env steps, episodes and losses of one batch.
MAX_REPORT_STEPS = 10_000_000
MAX_REPORT_EPISODES = 10_000
MAX_STATS = 64
MAX_NAME_CHARS = 64
MAX_EVALUATION_EPISODES = 100_000
MAX_REASON_CHARS = 1_000
MAX_ADDRESS_CHARS = 255
MAX_JOB_ID_CHARS = 64           # drlbox makes ids like "dqn-1a2b3c4d"
_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})$")


class Refused(ValueError):
    """A request that does not fit; nothing was changed. `code` is its gRPC status name."""

    code = "INVALID_ARGUMENT"


class OutOfRange(Refused):
    """A value outside what the job allows (a step count, a batch size)."""

    code = "OUT_OF_RANGE"


class TooLarge(Refused):
    """More data than the job can need."""

    code = "RESOURCE_EXHAUSTED"


class NotFound(Refused):
    """A job, slice or checkpoint that is not here."""

    code = "NOT_FOUND"


class Mismatch(Refused):
    """A caller this server cannot work with (another Python version, say)."""

    code = "FAILED_PRECONDITION"


def need(ok: bool, field: str, message: str, kind: type[Refused] = Refused) -> None:
    """Raise `kind` naming `field` unless `ok`."""
    if not ok:
        raise kind(f"{field}: {message}")


def finite(values: Sequence[float]) -> bool:
    """Whether every value is a finite number."""
    return all(math.isfinite(v) for v in values)


def check_report(report: Any) -> None:
    """A worker's progress report: counts in range, every number finite."""
    need(0 <= report.env_steps <= MAX_REPORT_STEPS, "report.env_steps",
         f"must be between 0 and {MAX_REPORT_STEPS}, got {report.env_steps}", OutOfRange)
    need(len(report.episode_returns) <= MAX_REPORT_EPISODES, "report.episode_returns",
         f"at most {MAX_REPORT_EPISODES} per report, got {len(report.episode_returns)}",
         TooLarge)
    need(finite(report.episode_returns), "report.episode_returns",
         "must be finite numbers")
    need(len(report.episode_lengths) <= MAX_REPORT_EPISODES, "report.episode_lengths",
         f"at most {MAX_REPORT_EPISODES} per report, got {len(report.episode_lengths)}",
         TooLarge)
    need(all(0 <= n <= MAX_REPORT_STEPS for n in report.episode_lengths),
         "report.episode_lengths", f"must be between 0 and {MAX_REPORT_STEPS}", OutOfRange)
    need(len(report.stats) <= MAX_STATS, "report.stats",
         f"at most {MAX_STATS} entries, got {len(report.stats)}", TooLarge)
    for name, value in report.stats.items():
        need(0 < len(name) <= MAX_NAME_CHARS, "report.stats",
             f"names must have 1 to {MAX_NAME_CHARS} characters, got {name[:80]!r}")
        need(math.isfinite(value), f"report.stats[{name!r}]", f"must be finite, got {value}")


def check_evaluation(global_steps: int, returns: Sequence[float], current_steps: int,
                     weights_version: int | None = None) -> None:
    """An evaluator's report: some finite returns, measured at a step the job has reached,
    on weights of a version that can exist."""
    need(weights_version is None or weights_version >= 0, "weights_version",
         f"must be >= 0, got {weights_version}")
    need(0 <= global_steps <= current_steps, "global_steps",
         f"must be between 0 and the job's {current_steps} env steps, got {global_steps}",
         OutOfRange)
    need(1 <= len(returns) <= MAX_EVALUATION_EPISODES, "returns",
         f"must hold 1 to {MAX_EVALUATION_EPISODES} episode returns, got {len(returns)}")
    need(finite(returns), "returns", "must be finite numbers")


def check_reason(reason: str) -> None:
    """A stop reason a person can read."""
    need(len(reason) <= MAX_REASON_CHARS, "reason",
         f"at most {MAX_REASON_CHARS} characters, got {len(reason)}", TooLarge)


def check_address(address: str) -> None:
    """host:port (IPv6 hosts in brackets), port 1-65535."""
    need(len(address) <= MAX_ADDRESS_CHARS, "address",
         f"at most {MAX_ADDRESS_CHARS} characters, got {len(address)}")
    match = _HOST_PORT.match(address)
    need(match is not None and 1 <= int(match.group(2)) <= 65535, "address",
         f"must be host:port with a port from 1 to 65535, got {address[:80]!r}")


def check_job_id(job_id: str) -> None:
    """The id of a job a caller means to work on: given, and no longer than any drlbox makes."""
    need(job_id != "", "job_id", "is empty; GetRunningJob names the job that runs")
    need(len(job_id) <= MAX_JOB_ID_CHARS, "job_id",
         f"at most {MAX_JOB_ID_CHARS} characters, got {len(job_id)}")
