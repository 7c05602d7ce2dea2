"""One status schema: the JobStatus dataclass and its message carry the same fields, and job
and role states are lowercase strings in Python and enums on the wire, with one mapping."""
from __future__ import annotations

import dataclasses
import json
import math

import grpc
import pytest

from drlbox.roles.interfaces import (FINISHED_STATES, JOB_STATES, ROLE_STATES, Checkpoint,
                                     Evaluation, JobStatus)
from drlbox.rpc.generated import parameter_server_pb2 as pb
from drlbox.rpc.generated import status_pb2
from drlbox.rpc.parameter_server import status_from_proto, status_to_proto
from drlbox.rpc.server import make_server
from drlbox.rpc.states import JOB_STATE, ROLE_STATE
from drlbox.rpc.status import add_role_status, get_role_status


def full_status() -> JobStatus:
    """A status with a distinct, non-default value in every field (exact in float32)."""
    return JobStatus(
        job_id="job-7", state="stopped", message="test says stop", global_steps=1001,
        train_steps=1002, updates=1003, version=1004, episodes=1005, recent_return=12.5,
        steps_per_sec=250.25, wall_seconds=61.125, train_seconds=59.0625,
        evaluations=[Evaluation(500, 9.5, 3, 30.5), Evaluation(1000, 11.75, 4, 60.25)],
        checkpoints=[Checkpoint("/models/model_1000.keras", 1000, 58.5)],
        stats={"policy_loss": 0.5, "value_loss": 0.25}, recent_returns=[10.0, 12.5, 15.0],
        resumed_from_steps=256, queue_position=2, algorithm="a3c")


def message_names(message_class) -> set[str]:
    return set(message_class.DESCRIPTOR.fields_by_name)


def dataclass_names(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


# --- fields --------------------------------------------------------------------------------

@pytest.mark.parametrize("cls,message_class", [(JobStatus, pb.JobStatus),
                                               (Evaluation, pb.Evaluation),
                                               (Checkpoint, pb.Checkpoint)],
                         ids=["JobStatus", "Evaluation", "Checkpoint"])
def test_dataclass_and_message_have_the_same_fields(cls, message_class):
    ours, wire = dataclass_names(cls), message_names(message_class)
    assert ours == wire, (
        f"{cls.__name__}: only in the dataclass {sorted(ours - wire)}, only in "
        f"parameter_server.proto {sorted(wire - ours)}; add the field to both, then `make protos`")


def test_the_test_status_sets_every_field():
    # Keeps the round trips below honest when a field is added: a default would pass unseen.
    defaults = JobStatus(job_id="", state="queued")
    same = [f.name for f in dataclasses.fields(JobStatus)
            if getattr(full_status(), f.name) == getattr(defaults, f.name)]
    assert not same, f"full_status() leaves {same} at their defaults: give them a value"


def test_a_full_status_survives_the_wire():
    status = full_status()
    wire = status_to_proto(status).SerializeToString()
    assert status_from_proto(pb.JobStatus.FromString(wire)) == status


def test_a_full_message_survives_the_dataclass():
    # Filled from the proto descriptor: a field added to the message only is lost here.
    message = filled_message(pb.JobStatus)
    message.state = pb.JOB_STATE_CANCELLED
    assert status_to_proto(status_from_proto(message)) == message


def test_a_full_status_survives_a_job_record():
    # How a cluster's job host keeps ended jobs on disk (record.json).
    status = full_status()
    assert JobStatus.from_dict(json.loads(json.dumps(status.to_dict()))) == status


def test_an_empty_status_keeps_its_nan_return():
    back = status_from_proto(status_to_proto(JobStatus(job_id="j", state="queued")))
    assert back.state == "queued" and math.isnan(back.recent_return)
    assert back.evaluations == [] and back.checkpoints == [] and back.stats == {}


def filled_message(message_class):
    """A message with a distinct non-default value in every field, nested ones included."""
    message = message_class()
    fill(message, seed=1)
    return message


def fill(message, seed: int) -> None:
    for k, field in enumerate(message.DESCRIPTOR.fields, start=seed):
        value = _value_for(field, k)
        target = getattr(message, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            target.update({f"key{k}": value, f"key{k + 1}": value + 1})
        elif field.is_repeated and field.message_type is not None:
            fill(target.add(), seed=10 * k)
            fill(target.add(), seed=10 * k + 1)
        elif field.is_repeated:
            target.extend([value, value + 1])
        else:
            setattr(message, field.name, value)


def _value_for(field, k: int):
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        return _value_for(field.message_type.fields_by_name["value"], k)
    kind = field.type
    if kind == field.TYPE_STRING:
        return f"text{k}"
    if kind == field.TYPE_ENUM:
        return field.enum_type.values[-1].number
    if kind in (field.TYPE_FLOAT, field.TYPE_DOUBLE):
        return k + 0.5
    return k


# --- states --------------------------------------------------------------------------------

@pytest.mark.parametrize("states,enum,prefix", [(JOB_STATES, pb.JobState, "JOB_STATE_"),
                                                (ROLE_STATES, status_pb2.RoleState, "ROLE_STATE_")],
                         ids=["job", "role"])
def test_the_state_tuples_name_every_enum_value(states, enum, prefix):
    names = {name for name in enum.keys() if name != prefix + "UNSPECIFIED"}
    assert names == {prefix + state.upper() for state in states}
    assert enum.Value(prefix + "UNSPECIFIED") == 0


def test_finished_states_are_job_states():
    assert set(FINISHED_STATES) < set(JOB_STATES) and "running" not in FINISHED_STATES


@pytest.mark.parametrize("state", JOB_STATES)
def test_every_job_state_round_trips(state):
    number = JOB_STATE.to_proto(state)
    assert pb.JobState.Name(number) == "JOB_STATE_" + state.upper()
    assert JOB_STATE.from_proto(number) == state
    status = status_from_proto(status_to_proto(JobStatus(job_id="j", state=state)))
    assert status.state == state and status.finished == (state in FINISHED_STATES)


@pytest.mark.parametrize("state", ROLE_STATES)
def test_every_role_state_round_trips(state):
    assert ROLE_STATE.from_proto(ROLE_STATE.to_proto(state)) == state


@pytest.mark.parametrize("bad", ["Done", "finished", "", None])
def test_an_unknown_state_is_refused_by_name(bad):
    with pytest.raises(ValueError, match=f"unknown job state {bad!r}: a job state is one of "
                                         "queued, running, done"):
        status_to_proto(JobStatus(job_id="j", state=bad))
    with pytest.raises(ValueError, match=f"unknown role state {bad!r}"):
        ROLE_STATE.to_proto(bad)


def test_a_message_without_a_state_or_with_a_newer_one_is_refused():
    with pytest.raises(ValueError, match="carries no job state .JOB_STATE_UNSPECIFIED."):
        status_from_proto(pb.JobStatus(job_id="j"))
    with pytest.raises(ValueError, match="unknown job state 42 in the message: this drlbox "
                                         "knows queued, running"):
        status_from_proto(pb.JobStatus.FromString(pb.JobStatus(job_id="j", state=42)
                                                  .SerializeToString()))
    with pytest.raises(ValueError, match="unknown role state 9"):
        ROLE_STATE.from_proto(9)


# --- a role's status over gRPC -------------------------------------------------------------

@pytest.fixture
def role_server():
    """Serve RoleStatus from a dict the test changes, as a worker process does."""
    state = {"state": "starting", "job_id": "job-3", "counters": {"env_steps": 40}}
    server, port = make_server(0, [add_role_status(
        lambda: ("worker-1", state["state"], state["job_id"], state["counters"]))])
    yield state, f"127.0.0.1:{port}"
    server.stop(0)


def test_a_role_status_arrives_with_its_state_as_a_string(role_server):
    state, address = role_server
    first = get_role_status(address)
    assert (first.role, first.state, first.job_id, first.counters) == \
        ("worker-1", "starting", "job-3", {"env_steps": 40.0})
    state["state"] = "idle"
    assert get_role_status(address).state == "idle"


def test_a_role_in_an_unknown_state_answers_with_an_error_naming_it(role_server):
    state, address = role_server
    state["state"] = "paused"
    with pytest.raises(grpc.RpcError) as err:
        get_role_status(address)
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "unknown role state 'paused'" in err.value.details()
