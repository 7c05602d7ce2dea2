"""gRPC service and client for a role's own status (rollout workers, evaluator)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from drlbox.rpc.generated import status_pb2 as pb
from drlbox.rpc.generated import status_pb2_grpc as pb_grpc
from drlbox.rpc.handlers import service_handler
from drlbox.rpc.security import Security
from drlbox.rpc.server import make_channel
from drlbox.rpc.states import ROLE_STATE

StatusFn = Callable[[], tuple[str, str, str, dict]]   # -> (role, state, job_id, counters)


@dataclass
class RoleStatus:
    """A role's answer: its name, its state (one of interfaces.ROLE_STATES), its job, counters."""

    role: str
    state: str
    job_id: str
    counters: dict


class RoleStatusServicer:
    """Answers with whatever the role's status function says now."""

    def __init__(self, status_fn: StatusFn):
        self.status_fn = status_fn

    async def Get(self, request, context) -> pb.RoleStatusReply:
        role, state, job_id, counters = self.status_fn()
        return pb.RoleStatusReply(role=role, state=ROLE_STATE.to_proto(state), job_id=job_id,
                                  counters={k: float(v) for k, v in counters.items()})


def add_role_status(status_fn: StatusFn):
    """A `make_server` hook that serves the status service."""
    servicer = RoleStatusServicer(status_fn)
    service = pb.DESCRIPTOR.services_by_name["RoleStatus"]
    return lambda grpc_server: grpc_server.add_generic_rpc_handlers(
        (service_handler(service, servicer),))


def get_role_status(address: str, timeout: float = 10.0,
                    security: Security | None = None) -> RoleStatus:
    """Ask the role at address for its status."""
    with make_channel(address, security) as channel:
        reply = pb_grpc.RoleStatusStub(channel).Get(pb.RoleStatusRequest(), timeout=timeout)
    return RoleStatus(reply.role, ROLE_STATE.from_proto(reply.state), reply.job_id,
                      dict(reply.counters))
