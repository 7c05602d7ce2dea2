"""Job and role states, and joining roles: lowercase strings in Python, enums on the wire.

Users compare strings (`status.state == "done"`); messages carry the JobState, RoleState and
JoiningRole enums. The tuples in drlbox.roles.interfaces are the one list of names: each name
maps to the enum value `<PREFIX><NAME>` (JOB_STATE_DONE), and this is the only place that
converts. A name outside the tuple is refused both ways, never sent or shown as a guess.
"""
from __future__ import annotations

from typing import Any

from drlbox.roles.interfaces import JOB_STATES, JOINING_ROLES, ROLE_STATES
from drlbox.rpc.generated import parameter_server_pb2 as ps_pb
from drlbox.rpc.generated import status_pb2 as status_pb


class StateEnum:
    """One state tuple and the proto enum that carries it."""

    def __init__(self, what: str, states: tuple[str, ...], enum: Any, prefix: str):
        self.what, self.states, self.enum, self.prefix = what, states, enum, prefix
        # enum.Value raises here, at import, if a state has no enum value.
        self._numbers = {state: enum.Value(prefix + state.upper()) for state in states}
        self._names = {number: state for state, number in self._numbers.items()}

    def to_proto(self, state: str) -> int:
        """The enum value of a state string; ValueError naming it if it is not a state."""
        try:
            return self._numbers[state]
        except (KeyError, TypeError):
            raise ValueError(f"unknown {self.what} {state!r}: a {self.what} is one of "
                             f"{', '.join(self.states)}") from None

    def from_proto(self, number: int) -> str:
        """The state string of an enum value; ValueError naming it if this drlbox has none."""
        try:
            return self._names[number]
        except (KeyError, TypeError):
            pass
        if number == 0:
            raise ValueError(f"the message carries no {self.what} ({self.prefix}UNSPECIFIED): "
                             f"its sender is not a drlbox of this protocol version")
        raise ValueError(f"unknown {self.what} {number!r} in the message: this drlbox knows "
                         f"{', '.join(self.states)}; run the same drlbox version everywhere")


JOB_STATE = StateEnum("job state", JOB_STATES, ps_pb.JobState, "JOB_STATE_")
ROLE_STATE = StateEnum("role state", ROLE_STATES, status_pb.RoleState, "ROLE_STATE_")
JOINING_ROLE = StateEnum("joining role", JOINING_ROLES, ps_pb.JoiningRole, "JOINING_ROLE_")

