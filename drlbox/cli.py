"""`drlbox COMMAND`: run a role of a drlbox cluster, check a role's health, or drive its jobs.

The job commands (submit, jobs, status, cancel, fetch) live in `drlbox.cli_jobs`. Every flag
has a DRLBOX_* environment variable (the flag wins), so containers are configured by their
environment alone. Roles bound to anything but loopback need a token.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import sys

from drlbox import cli_jobs
from drlbox.metrics import DEFAULT_METRICS_PORTS

DEFAULT_PORTS = {"parameter-server": 50051, "worker": 50052, "replay": 50053,
                 "evaluator": 50054, "ps-shard": 50055}
PLACEHOLDER_TOKEN_PREFIX = "REPLACE-ME"     # k8s/base ships one; no role may run with it
ROLE_HELP = {
    "parameter-server": "hold weights and the job queue; serve the SDK (job control)",
    "worker": "collect experience and push gradients for whichever job runs",
    "replay": "hold the running job's replay memory (no TensorFlow)",
    "evaluator": "evaluate the running job's newest weights every eval_interval steps",
    "ps-shard": "serve a slice of the running job's weights (parameter-server shard)",
}


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"DRLBOX_{name}", default)


def _add_security_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--token", default=_env("TOKEN"),
                        help="shared secret every call must carry (DRLBOX_TOKEN)")
    parser.add_argument("--token-file", default=_env("TOKEN_FILE"),
                        help="file holding the token, e.g. a mounted secret (DRLBOX_TOKEN_FILE)")
    parser.add_argument("--tls-ca", default=_env("TLS_CA"),
                        help="PEM CA bundle to trust for TLS to peers (DRLBOX_TLS_CA)")


def build_parser() -> argparse.ArgumentParser:
    """The `drlbox` command line."""
    parser = argparse.ArgumentParser(prog="drlbox", description=__doc__.splitlines()[0])
    roles = parser.add_subparsers(dest="role", required=True, metavar="COMMAND")
    for role, port in DEFAULT_PORTS.items():
        sub = roles.add_parser(role, help=ROLE_HELP[role], description=ROLE_HELP[role])
        sub.add_argument("--host", default=_env("HOST", "0.0.0.0"),
                         help="address to listen on (DRLBOX_HOST, default 0.0.0.0)")
        sub.add_argument("--port", type=int, default=int(_env("PORT", str(port))),
                         help=f"port to listen on (DRLBOX_PORT, default {port})")
        metrics_port = DEFAULT_METRICS_PORTS[role]
        sub.add_argument("--metrics-port", default=_env("METRICS_PORT", str(metrics_port)),
                         help=f"serve Prometheus metrics at http://HOST:PORT/metrics, no token "
                              f"(DRLBOX_METRICS_PORT, default {metrics_port}; 0 or empty: off)")
        _add_security_flags(sub)
        sub.add_argument("--tls-cert", default=_env("TLS_CERT"),
                         help="PEM certificate: serve TLS only (DRLBOX_TLS_CERT)")
        sub.add_argument("--tls-key", default=_env("TLS_KEY"),
                         help="PEM key of --tls-cert (DRLBOX_TLS_KEY)")
        sub.add_argument("--verbose", action="store_true",
                         default=_env("VERBOSE", "0") not in ("0", "", "false"),
                         help="log progress (DRLBOX_VERBOSE=1)")
        if role == "parameter-server":
            sub.add_argument("--data-dir", default=_env("DATA_DIR", "/data"),
                             help="jobs and checkpoints; keep it on a volume (DRLBOX_DATA_DIR)")
            sub.add_argument("--shards", type=int, default=int(_env("PS_SHARDS", "1")),
                             help="cut each job's weights into this many slices; slices 1.. "
                                  "are served by `drlbox ps-shard` processes (DRLBOX_PS_SHARDS, "
                                  "default 1)")
        else:
            sub.add_argument("--ps", default=_env("PS_ADDRESS"),
                             help="parameter server host:port (DRLBOX_PS_ADDRESS)")
        if role == "ps-shard":
            sub.add_argument("--advertise", default=_env("ADVERTISE", ""),
                             help="host:port workers reach this shard at (DRLBOX_ADVERTISE; "
                                  "default: its address as the parameter server sees it)")
        if role == "worker":
            sub.add_argument("--replay", default=_env("REPLAY_ADDRESS"),
                             help="replay server host:port (DRLBOX_REPLAY_ADDRESS)")
    health = roles.add_parser("health", help="exit 0 when the role at ADDRESS is serving")
    health.add_argument("address", nargs="?",
                        default=f"127.0.0.1:{_env('PORT', str(DEFAULT_PORTS['parameter-server']))}",
                        help="host:port (default 127.0.0.1:$DRLBOX_PORT)")
    health.add_argument("--timeout", type=float, default=5.0)
    health.add_argument("--tls", action="store_true", default=bool(_env("TLS_CERT")),
                        help="the role serves TLS (default: when DRLBOX_TLS_CERT is set)")
    _add_security_flags(health)
    cli_jobs.add_job_commands(roles)
    return parser


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _endpoint(args: argparse.Namespace):
    from drlbox.launch.entrypoints import Endpoint
    from drlbox.metrics import check_metrics_port
    from drlbox.rpc.security import Security

    security = Security.from_files(token=args.token, token_file=args.token_file,
                                   tls_cert=args.tls_cert, tls_key=args.tls_key,
                                   tls_ca=args.tls_ca)
    if not security.token and not _is_loopback(args.host):
        raise ValueError(f"drlbox {args.role} would listen on {args.host} without a token: set "
                         f"DRLBOX_TOKEN (or DRLBOX_TOKEN_FILE, or --token), or listen on "
                         f"127.0.0.1 only")
    if security.token and security.token.startswith(PLACEHOLDER_TOKEN_PREFIX):
        raise ValueError(f"drlbox {args.role} was given the placeholder token from k8s/base; "
                         f"replace the drlbox-token Secret with a real one (k8s/README.md)")
    if args.role != "parameter-server" and not args.ps:
        raise ValueError(f"drlbox {args.role} needs the parameter server's address: set "
                         f"DRLBOX_PS_ADDRESS or pass --ps host:port")
    return Endpoint(args.host, args.port, security, getattr(args, "ps", None),
                    getattr(args, "replay", None),
                    check_metrics_port(args.metrics_port, "--metrics-port (DRLBOX_METRICS_PORT)"))


def _health(args: argparse.Namespace) -> int:
    from drlbox.rpc.security import Security
    from drlbox.rpc.server import wait_healthy

    security = Security.from_files(tls_ca=args.tls_ca, tls=args.tls)
    healthy = wait_healthy(args.address, args.timeout, security)
    print(f"{args.address}: {'SERVING' if healthy else 'NOT SERVING'}")
    return 0 if healthy else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `drlbox` console command."""
    args = build_parser().parse_args(argv)
    if args.role == "health":
        return _health(args)
    if args.role in cli_jobs.COMMANDS:
        return cli_jobs.run(args)
    from drlbox.launch import entrypoints

    try:
        endpoint = _endpoint(args)
    except ValueError as err:
        print(f"drlbox: {err}", file=sys.stderr)
        return 2
    from drlbox.launch.processes import (keep_freed_memory, limit_tf_threads,
                                         quiet_tensorflow_logs, setup_logging)

    quiet_tensorflow_logs()
    keep_freed_memory()
    setup_logging(args.role, args.verbose, notices=True)
    if args.role != "replay":
        limit_tf_threads()
    if args.role == "parameter-server":
        if args.shards < 1:
            print(f"drlbox: --shards must be >= 1, got {args.shards}", file=sys.stderr)
            return 2
        entrypoints.run_parameter_server(endpoint, args.data_dir, args.shards)
    elif args.role == "ps-shard":
        entrypoints.run_shard(endpoint, args.advertise)
    elif args.role == "worker":
        entrypoints.run_worker(endpoint)
    elif args.role == "evaluator":
        entrypoints.run_evaluator(endpoint)
    else:
        entrypoints.run_replay(endpoint)
    return 0


if __name__ == "__main__":
    sys.exit(main())
