"""`drlbox submit|jobs|status|cancel|fetch`: drive a drlbox cluster's jobs from the shell.

A submission file is plain Python that sets `make_trainer`'s arguments as module-level names:

    # cartpole.py
    import gymnasium

    algorithm = "a3c"                       # required: a3c, acer, impala or dqn
    train_steps = 200_000

    def env_maker():
        return gymnasium.make("CartPole-v1")

    def feature_maker(observation_space):
        import keras                        # inside the maker: `drlbox submit` stays fast
        inp = keras.Input(observation_space.shape)
        return inp, keras.layers.Dense(64, activation="relu")(inp)

`drlbox submit cartpole.py` runs the file (as `python cartpole.py` would, except that its
`if __name__ == "__main__":` block does not run), takes every module-level name that is a
`make_trainer` argument, and queues the job; `--set NAME=VALUE` overrides one (VALUE is a Python
literal, else a string). Other names are the file's own helpers and are left alone, unless one
looks like a misspelt argument (`train_step`, `envmaker`): that is an error naming the argument
meant; start a helper's name with `_` to keep it. Makers defined in the file travel to the
cluster by value, so they may be lambdas or nested functions; modules they use must be installed
in the cluster's images (modules beside the file travel by value too).

The cluster is found at --address (DRLBOX_ADDRESS, default 127.0.0.1:50051) with --token
(DRLBOX_TOKEN) or --token-file (DRLBOX_TOKEN_FILE); `make -s token` prints the compose cluster's.
Exit status: 0 on success (`status -f` and `submit -f`: the job ended done), 1 when a followed
job ended failed, stopped or cancelled, 2 when the command could not do its work (cluster
unreachable, unknown job, refused token, bad submission file).
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import difflib
import math
import os
import runpy
import sys
import time
import traceback
import types
from typing import Any

DEFAULT_ADDRESS = "127.0.0.1:50051"
RETRY_SECONDS = 10.0            # a mistyped address fails fast
FOLLOW_RETRY_SECONDS = 180.0    # while following, ride out a restarting parameter server
EXIT_OK, EXIT_JOB_NOT_DONE, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130

COMMAND_HELP = {
    "submit": "queue a job defined by a Python file; prints its id",
    "jobs": "list the cluster's jobs: state, steps, steps/s, recent return",
    "status": "a job's state, progress, returns, evaluations and checkpoints (-f: follow)",
    "cancel": "drop a queued job or stop a running one",
    "fetch": "download a job's saved model (.keras); prints where it went",
}


class CommandError(Exception):
    """A problem the user can fix: printed as one `drlbox: ...` line, exit status 2."""


# --- arguments ---------------------------------------------------------------------------
def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"DRLBOX_{name}", default)


def _add_cluster_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default=_env("ADDRESS", DEFAULT_ADDRESS),
                        help=f"the cluster's parameter server, host:port (DRLBOX_ADDRESS, "
                             f"default {DEFAULT_ADDRESS})")
    parser.add_argument("--token", default=_env("TOKEN"),
                        help="the cluster's token (DRLBOX_TOKEN; `make -s token` prints the "
                             "compose cluster's)")
    parser.add_argument("--token-file", default=_env("TOKEN_FILE"),
                        help="file holding the token (DRLBOX_TOKEN_FILE)")
    parser.add_argument("--tls-ca", default=_env("TLS_CA"),
                        help="PEM CA bundle: talk TLS to a cluster whose certificate it signed "
                             "(DRLBOX_TLS_CA)")
    parser.add_argument("--retry-seconds", type=float, default=None,
                        help=f"keep trying an unreachable cluster this long (default "
                             f"{RETRY_SECONDS:.0f}; {FOLLOW_RETRY_SECONDS:.0f} while following)")


def add_job_commands(commands: argparse._SubParsersAction) -> None:
    """Add the job commands to the `drlbox` command's subparsers."""
    def command(name: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=COMMAND_HELP[name], description=COMMAND_HELP[name],
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_cluster_flags(sub)
        return sub

    submit = command("submit")
    submit.description = __doc__.split("\n\n", 1)[1].split("\nThe cluster is found")[0]
    submit.add_argument("file", metavar="FILE.py", help="the job's arguments, as Python")
    submit.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="NAME=VALUE",
                        help="override (or add) one argument, e.g. --set train_steps=50000")
    submit.add_argument("-f", "--follow", action="store_true",
                        help="then follow the job until it ends, as `status -f` does")
    command("jobs")
    status = command("status")
    status.add_argument("job", metavar="JOB", help="job id (from `drlbox jobs`)")
    status.add_argument("-f", "--follow", action="store_true",
                        help="show a live progress bar until the job ends; exit 0 if it ended "
                             "done, 1 otherwise")
    cancel = command("cancel")
    cancel.add_argument("job", metavar="JOB", help="job id")
    fetch = command("fetch")
    fetch.add_argument("job", metavar="JOB", help="job id")
    fetch.add_argument("--step", type=int, default=None, metavar="N",
                       help="the checkpoint saved at N env steps (default: the newest)")
    fetch.add_argument("-o", "--output", default=".", metavar="DIR_OR_FILE",
                       help="an existing directory, where the file is named "
                            "JOB_model_final.keras or JOB_model_<steps>.keras, or a file path "
                            "(default: the current directory)")


# --- the submission file -----------------------------------------------------------------
def argument_names() -> set[str]:
    """Every name a submission file may set: `make_trainer`'s arguments and `algorithm`."""
    from drlbox.config import TrainerConfig

    return {f.name for f in dataclasses.fields(TrainerConfig)}


def _near_miss(name: str, known: set[str]) -> str | None:
    """The argument `name` probably meant (a misspelling or a case slip), or None."""
    match = difflib.get_close_matches(name.lower(), known, n=1, cutoff=0.8)
    return match[0] if match else None


def _run_file(path: str) -> tuple[dict, list[types.ModuleType]]:
    """Run the submission file as `python FILE` would (its directory importable), not as main;
    its module-level names, and the modules it imported from beside it."""
    if not os.path.isfile(path):
        raise CommandError(f"no submission file {path!r}")
    directory = os.path.dirname(os.path.abspath(path))
    if directory not in sys.path:
        sys.path.insert(0, directory)       # so `import helpers` beside the file works
    before = set(sys.modules)
    try:
        # run_path's module name "<run_path>" is not importable: cloudpickle then sends the
        # file's functions by value, and the cluster needs no copy of the file.
        namespace = runpy.run_path(path)
    except SystemExit as err:
        raise CommandError(f"{path} called exit({err.code}) while being read") from None
    except Exception as err:  # noqa: BLE001 - any error in the user's file, said in one line
        raise CommandError(f"{_where(path, err)}{type(err).__name__}: {err}") from None
    from drlbox.client import _is_installed

    beside = [module for name, module in list(sys.modules.items())
              if name not in before and _is_under(getattr(module, "__file__", None), directory)
              and not _is_installed(module)]     # e.g. drlbox itself, run from its checkout
    return namespace, beside


def _is_under(path: str | None, directory: str) -> bool:
    return bool(path) and os.path.abspath(path).startswith(directory + os.sep)


def _where(path: str, err: BaseException) -> str:
    """'FILE:LINE: ' of the deepest frame of the error inside the submission file."""
    lines = [f.lineno for f in traceback.extract_tb(err.__traceback__)
             if os.path.abspath(f.filename) == os.path.abspath(path)]
    return f"{path}:{lines[-1]}: " if lines else f"{path}: "


def _parse_override(text: str, known: set[str]) -> tuple[str, Any]:
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise CommandError(f"--set takes NAME=VALUE, got {text!r}")
    if name not in known:
        guess = _near_miss(name, known)
        raise CommandError(f"--set {name}: not a make_trainer argument"
                           + (f"; did you mean {guess!r}?" if guess else ""))
    try:
        return name, ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return name, raw                    # a bare word: a string, e.g. replay_type=uniform


@dataclasses.dataclass
class Submission:
    """What a submission file asks for."""

    algorithm: str
    arguments: dict                         # make_trainer's other arguments
    modules_beside: list                    # modules imported from the file's directory

    @contextlib.contextmanager
    def modules_by_value(self):
        """Pickle the modules beside the file by value: the cluster has no copy of them."""
        import cloudpickle

        registered = [m for m in self.modules_beside
                      if m.__name__ not in cloudpickle.list_registry_pickle_by_value()]
        for module in registered:
            cloudpickle.register_pickle_by_value(module)
        try:
            yield
        finally:
            for module in registered:
                cloudpickle.unregister_pickle_by_value(module)


def load_submission(path: str, overrides: list[str] = ()) -> Submission:
    """What the submission file and the `--set` overrides ask for."""
    known = argument_names()
    namespace, beside = _run_file(path)
    for name, value in namespace.items():
        if name.startswith("_") or name in known or isinstance(value, types.ModuleType):
            continue
        guess = _near_miss(name, known)
        if guess:
            raise CommandError(f"{path}: {name!r} is not a make_trainer argument; did you mean "
                               f"{guess!r}? (a helper of your own: start its name with _)")
    arguments = {name: value for name, value in namespace.items() if name in known}
    arguments.update(_parse_override(text, known) for text in overrides)
    algorithm = arguments.pop("algorithm", None)
    if algorithm is None:
        from drlbox.config import ALGORITHMS

        raise CommandError(f"{path} sets no `algorithm`: add e.g. algorithm = \"a3c\" "
                           f"(one of {', '.join(ALGORITHMS)}), or pass --set algorithm=a3c")
    return Submission(algorithm, arguments, beside)


# --- showing jobs --------------------------------------------------------------------------
def _number(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:,.1f}"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _state(status: Any) -> str:
    if status.state == "queued" and status.queue_position:
        return f"queued #{status.queue_position}"
    return status.state


def jobs_table(statuses: list) -> str:
    """The `drlbox jobs` table: one line per job, oldest first."""
    # RETURN: the mean over the last (<= 100) training episodes.
    header = ("JOB", "ALGO", "STATE", "STEPS", "STEPS/S", "RETURN", "TRAIN TIME")
    rows = [(s.job_id, s.algorithm or "?", _state(s), f"{s.global_steps:,}/{s.train_steps:,}",
             f"{s.steps_per_sec:,.0f}" if s.global_steps else "-", _number(s.recent_return),
             _duration(s.train_seconds) if s.global_steps else "-") for s in statuses]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    right = {3, 4, 5, 6}        # numbers line up on the right
    return "\n".join("  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                               for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
                     for row in [header, *rows])


def status_text(s: Any) -> str:
    """A job's status as `drlbox status` prints it."""
    lines = [("job", s.job_id), ("algorithm", s.algorithm or "?"),
             ("state", _state(s) + (f": {s.message}" if s.message else ""))]
    if s.global_steps or s.state not in ("queued", "cancelled", "failed"):
        share = 100.0 * s.global_steps / s.train_steps if s.train_steps else 0.0
        lines.append(("progress", f"{s.global_steps:,} / {s.train_steps:,} env steps "
                                  f"({share:.0f}%), {s.steps_per_sec:,.0f} steps/s, "
                                  f"{s.updates:,} updates"))
        lines.append(("train time", _duration(s.train_seconds)
                      + (f" (resumed at {s.resumed_from_steps:,} steps)"
                         if s.resumed_from_steps else "")))
        returns = list(s.recent_returns)
        lines.append(("episodes", f"{s.episodes:,}" + (
            f"; return over the last {len(returns)}: mean {_number(s.recent_return)}, "
            f"min {min(returns):,.1f}, max {max(returns):,.1f}" if returns else "")))
    if s.evaluations:
        shown = ", ".join(f"{e.mean_return:,.1f} at {e.global_steps:,}"
                          for e in s.evaluations[-5:])
        more = f" (last 5 of {len(s.evaluations)})" if len(s.evaluations) > 5 else ""
        lines.append(("evaluations", f"mean return {shown} steps{more}"))
    if s.checkpoints:
        latest = s.checkpoints[-1]          # the last saved (a finished job's final model)
        lines.append(("checkpoint", f"{os.path.basename(latest.path)} at "
                                    f"{latest.global_steps:,} steps ({len(s.checkpoints)} saved; "
                                    f"`drlbox fetch {s.job_id}` downloads it)"))
    width = max(len(k) for k, _ in lines)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in lines)


# --- the commands ------------------------------------------------------------------------
def _client(args: argparse.Namespace, follow: bool = False):
    from drlbox.client import Client
    from drlbox.rpc.security import Security

    token = Security.from_files(token=args.token, token_file=args.token_file).token
    retry = args.retry_seconds
    if retry is None:
        retry = FOLLOW_RETRY_SECONDS if follow else RETRY_SECONDS
    return Client(args.address, token=token, tls_ca=args.tls_ca, retry_seconds=retry)


def _follow(job: Any) -> int:
    """A live progress bar until the job ends; its final status; exit 0 if it ended done."""
    try:
        status = job.status()
        if not status.finished:         # an ended job needs no bar
            status = job.wait(progress=True)
    except KeyboardInterrupt:
        print(f"drlbox: stopped following {job.job_id}; the job goes on "
              f"(`drlbox cancel {job.job_id}` stops it)", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(status_text(status))
    return EXIT_OK if status.state == "done" else EXIT_JOB_NOT_DONE


def cmd_submit(args: argparse.Namespace) -> int:
    submission = load_submission(args.file, args.overrides)
    with _client(args, follow=args.follow) as client:
        try:
            with submission.modules_by_value():
                job = client.submit(submission.algorithm, **submission.arguments)
        except (TypeError, ValueError) as err:     # the arguments' own checks, or the cluster's
            raise CommandError(f"{args.file}: {err}") from None
        print(job.job_id, flush=True)
        if args.follow:
            return _follow(job)
        status = job.status()
        where = f"position {status.queue_position} in the queue" if status.queue_position \
            else status.state
        print(f"drlbox: {job.job_id} queued ({where}); follow it with "
              f"`drlbox status {job.job_id} -f`", file=sys.stderr)
    return EXIT_OK


def cmd_jobs(args: argparse.Namespace) -> int:
    with _client(args) as client:
        statuses = client.jobs()
    if not statuses:
        print("no jobs yet: `drlbox submit FILE.py` queues one")
    else:
        print(jobs_table(statuses))
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args, follow=args.follow) as client:
        job = client.job(args.job)
        if args.follow:
            return _follow(job)
        print(status_text(job.status()))
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        status = client.job(args.job).cancel()
    print(f"{status.job_id}: {status.state}" + (f" ({status.message})" if status.message else ""))
    return EXIT_OK


def cmd_fetch(args: argparse.Namespace) -> int:
    if args.step is not None and args.step < 0:
        raise CommandError(f"--step must be a number of env steps >= 0, got {args.step}")
    parent = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(args.output) and not os.path.isdir(parent):
        raise CommandError(f"-o {args.output}: there is no directory {parent}; give an existing "
                           f"directory or a file in one")
    with _client(args) as client:
        job = client.job(args.job)
        path = job.fetch_checkpoint("latest" if args.step is None else args.step, args.output)
    print(path)
    return EXIT_OK


COMMANDS = {"submit": cmd_submit, "jobs": cmd_jobs, "status": cmd_status,
            "cancel": cmd_cancel, "fetch": cmd_fetch}


def run(args: argparse.Namespace) -> int:
    """Run a job command; any error it expects becomes one line on stderr and exit status 2."""
    from drlbox.client import ClusterUnavailable

    start = time.monotonic()
    try:
        return COMMANDS[args.role](args)
    except (CommandError, ClusterUnavailable, PermissionError, LookupError, ValueError,
            RuntimeError, OSError) as err:
        print(f"drlbox: {_plain(err)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"drlbox: interrupted after {time.monotonic() - start:.0f} s", file=sys.stderr)
        return EXIT_INTERRUPTED


def _plain(err: BaseException) -> str:
    """The error's message, on one line."""
    text = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, OSError) and err.filename and err.strerror:
        text = f"{err.filename}: {err.strerror}"
    return text
