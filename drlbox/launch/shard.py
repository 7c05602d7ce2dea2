"""A parameter-server shard process: take a slice of whichever job needs one, serve it, repeat.

The process holds nothing of its own: it asks the coordinator (the parameter server) for a free
slice, gets the slice's plain settings and starting state (no user code), serves exchanges and
snapshots for it, and goes back to asking when the job ends or the slice is given to another
process (e.g. after the coordinator restarted). Local runs and clusters run the same loop.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

import grpc

log = logging.getLogger(__name__)
POLL_SECONDS = 1.0
_QUIET = (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE,
          grpc.StatusCode.DEADLINE_EXCEEDED)


def serve_shards(ps_address: str, host: str, port: int, security: Any = None,
                 advertise: str = "", stop: threading.Event | None = None,
                 metrics_port: int = 0) -> None:
    """Serve slices for the coordinator at ps_address until `stop` is set (or forever)."""
    from drlbox.launch.processes import PS_THREADS
    from drlbox.metrics import ShardCollector, serve_metrics
    from drlbox.roles.param_shard import shard_from_settings
    from drlbox.rpc.parameter_client import ParameterClient
    from drlbox.roles.job_tables import ShardTable
    from drlbox.rpc.parameter_server import add_parameter_server
    from drlbox.rpc.server import make_server

    stop = stop or threading.Event()
    table = ShardTable()
    server, bound = make_server(port, [add_parameter_server(table)], host=host,
                                max_workers=PS_THREADS, security=security)
    coordinator = ParameterClient(ps_address, timeout=30.0, security=security)
    serve_metrics(metrics_port, host, ShardCollector(table), "ps-shard")
    log.info("parameter-server shard on %s:%d, joining %s", host, bound, ps_address)
    try:
        while not stop.is_set():
            try:
                job_id, settings, state, address = coordinator.join_shard(bound, advertise)
            except grpc.RpcError as err:
                if err.code() not in _QUIET:
                    log.warning("cannot join a job: %s", err.details())
                stop.wait(POLL_SECONDS)
                continue
            index = settings["index"]
            table.serve(job_id, index, shard_from_settings(settings, state))
            if coordinator.shard_ready(job_id, index, address):
                log.info("serving slice %d of job %s as %s", index, job_id, address)
                _serve_while_booked(coordinator, job_id, index, address, stop)
                log.info("slice %d of job %s released", index, job_id)
            table.clear()
    finally:
        coordinator.close()
        server.stop(grace=1.0).wait()


def _serve_while_booked(coordinator: Any, job_id: str, index: int, address: str,
                        stop: threading.Event) -> None:
    """Return once the job ends, the coordinator is gone, or the slice is booked elsewhere."""
    coordinator.job_id = job_id
    while not stop.wait(POLL_SECONDS):
        try:
            shard_map = coordinator.get_shards()
        except grpc.RpcError:
            return          # the job ended, or the coordinator restarts and books anew
        if shard_map.shards[index].address != address:
            return
