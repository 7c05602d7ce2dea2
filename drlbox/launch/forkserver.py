"""A warm start for local runs: one interpreter imports TensorFlow once, then forks every role.

A fresh interpreter spends ~2.5 s of CPU importing TensorFlow and Keras; a run of a parameter
server, two workers and an evaluator on a two-core machine paid that four times over before the
first env step. The fork server pays it once: it imports what the roles need (and nothing that
starts a thread or initialises the TensorFlow runtime, so forking it is safe), then forks a child
per role on request. Children share the imported pages copy-on-write.

The launcher talks to it over two pipes: requests on its stdin (a JSON line each), replies on
`reply_fd` ("started NAME PID" / "exited PID CODE" lines). The server ignores SIGINT and
SIGTERM (the launcher decides how a run stops) and ends when its stdin closes, terminating any
child still running.
"""
from __future__ import annotations

import importlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from typing import Any, Callable

# Thread pools of the numerical libraries would be running threads at fork time; the roles
# share a few cores and use one thread each anyway.
SINGLE_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
REAP_INTERVAL = 0.05


# --- the fork server process --------------------------------------------------------------

# What the roles import: loaded once here, shared by every child.
PRELOAD = ("drlbox.algorithms", "drlbox.launch.entrypoints", "drlbox.launch.shard",
           "drlbox.ops.fast_forward", "drlbox.roles.evaluator", "drlbox.roles.job_host",
           "drlbox.roles.param_server", "drlbox.roles.replay", "drlbox.roles.worker",
           "drlbox.rpc.job_control", "drlbox.rpc.parameter_client",
           "drlbox.rpc.parameter_server", "drlbox.rpc.replay", "drlbox.metrics", "gymnasium")


def _preload() -> None:
    """Import what every role needs, without initialising TensorFlow's runtime."""
    from drlbox.launch.processes import quiet_stderr

    with quiet_stderr():        # TensorFlow's C++ start-up lines
        importlib.import_module("tensorflow")
        importlib.import_module("keras")
    for name in PRELOAD:
        importlib.import_module(name)


def _name_process(role: str, kwargs: dict) -> None:
    """Show the command line the role would have had as a fresh interpreter (in ps, top, and
    to tools that find a run's roles by their arguments)."""
    try:
        from setproctitle import setproctitle
    except ImportError:
        return
    setproctitle(f"{sys.executable} -m drlbox.launch.role {role} {json.dumps(kwargs)}")


def _run_child(run_role: Callable[[str, dict], None], role: str, kwargs: dict) -> None:
    """The forked child: become the role, and never return into the server's loop."""
    code = 0
    try:
        _name_process(role, kwargs)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        run_role(role, kwargs)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    except BaseException:       # noqa: B036 -- a role's crash is reported by its exit code
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class _Requests:
    """Requests from the launcher on a pipe: a JSON line each."""

    def __init__(self, fd: int):
        self.fd, self.buffer, self.closed = fd, b"", False

    def fill(self) -> None:
        """Read what the pipe holds now (call when it is readable)."""
        chunk = os.read(self.fd, 1 << 20)
        self.closed = not chunk
        self.buffer += chunk

    def pop(self) -> dict | None:
        """The next complete request, if the buffer holds one."""
        line_end = self.buffer.find(b"\n")
        if line_end < 0:
            return None
        line, self.buffer = self.buffer[:line_end], self.buffer[line_end + 1:]
        return json.loads(line)


def serve(reply_fd: int, run_role: Callable[[str, dict], None]) -> None:
    """The fork server's loop: fork on request, report children's exits; exit at EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _preload()
    replies = os.fdopen(reply_fd, "w", buffering=1)
    requests = _Requests(sys.stdin.fileno())
    children: set[int] = set()
    replies.write("ready\n")
    while not requests.closed:
        readable, _, _ = select.select([requests.fd], [], [], REAP_INTERVAL)
        if readable:
            requests.fill()
        while (request := requests.pop()) is not None:
            pid = _fork_role(run_role, request, replies)
            children.add(pid)
            replies.write(f"started {request['name']} {pid}\n")
        _reap(children, replies)
    _end_children(children, replies)
    replies.close()
    # Nothing to clean up, and unloading TensorFlow at exit takes about a second.
    os._exit(0)


def _fork_role(run_role: Callable[[str, dict], None], request: dict, replies: Any) -> int:
    """Fork a child that runs the requested role; its pid."""
    pid = os.fork()
    if pid == 0:
        replies.close()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)       # the request pipe is the server's alone
        os.close(devnull)
        _run_child(run_role, request["role"], request["kwargs"])
    return pid


def _reap(children: set[int], replies: Any, block: bool = False) -> None:
    for pid in list(children):
        done, status = os.waitpid(pid, 0 if block else os.WNOHANG)
        if done:
            children.discard(pid)
            replies.write(f"exited {pid} {os.waitstatus_to_exitcode(status)}\n")


def _end_children(children: set[int], replies: Any) -> None:
    """The launcher is gone or done: no child may outlive the run."""
    for pid in children:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30.0
    while children and time.monotonic() < deadline:
        _reap(children, replies)
        time.sleep(REAP_INTERVAL)
    for pid in children:
        os.kill(pid, signal.SIGKILL)
    _reap(children, replies, block=True)


# --- the launcher's side --------------------------------------------------------------------

class ForkedRole:
    """A role process forked by the fork server: the parts of subprocess.Popen a launcher uses."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None
        self._ended = threading.Event()

    def _exited(self, code: int) -> None:
        self.returncode = code
        self._ended.set()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired(f"role process {self.pid}", timeout)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass        # it ended; the fork server reports it in a moment

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkServerGone(RuntimeError):
    """The fork server is not running; roles must be started as fresh interpreters."""


class ForkServer:
    """The launcher's handle on a fork server process: `fork` roles, follow their exits."""

    def __init__(self, env: dict, argv_tag: str):
        read_fd, write_fd = os.pipe()
        env = dict(env, **{name: env.get(name, "1") for name in SINGLE_THREAD_VARIABLES})
        # argv_tag (the run's ports) lets tools find every process of a run by its arguments.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "drlbox.launch.role", "fork-server",
             json.dumps({"reply_fd": write_fd, "run": argv_tag})],
            stdin=subprocess.PIPE, env=env, pass_fds=(write_fd,))
        os.close(write_fd)
        self._replies = os.fdopen(read_fd, "r")
        self._roles: dict[int, ForkedRole] = {}
        self._started: dict[str, Any] = {}
        self._lock = threading.Condition()
        self._ready = False
        threading.Thread(target=self._read_replies, daemon=True, name="fork-server").start()

    def _read_replies(self) -> None:
        for line in self._replies:
            kind, *rest = line.split()
            with self._lock:
                if kind == "ready":
                    self._ready = True
                elif kind == "started":
                    self._started[rest[0]] = ForkedRole(int(rest[1]))
                    self._roles[int(rest[1])] = self._started[rest[0]]
                elif kind == "exited" and int(rest[0]) in self._roles:
                    self._roles[int(rest[0])]._exited(int(rest[1]))
                self._lock.notify_all()
        with self._lock:        # the server ended: nothing more will be reported or started
            for role in self._roles.values():
                if role.returncode is None:
                    role._exited(-signal.SIGKILL)
            self._lock.notify_all()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def fork(self, name: str, role: str, kwargs: dict, timeout: float = 180.0) -> ForkedRole:
        """Start `role` as a child of the fork server; its handle once it runs."""
        request = dict(name=name, role=role, kwargs=kwargs)
        with self._lock:
            self._started.pop(name, None)
            try:
                self.proc.stdin.write(json.dumps(request).encode() + b"\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                raise ForkServerGone("the fork server has ended") from None
            if not self._lock.wait_for(lambda: name in self._started or not self.alive,
                                       timeout):
                raise ForkServerGone(f"the fork server did not start {name} in {timeout:.0f} s")
            if name not in self._started:
                raise ForkServerGone(f"the fork server ended ({self.proc.returncode}) before "
                                     f"starting {name}")
            return self._started[name]

    def close(self, timeout: float = 35.0) -> None:
        """End the server (it terminates children still running) and wait for it."""
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
