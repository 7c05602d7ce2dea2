"""The replay role over real gRPC on loopback: insert, sample, priorities, limits, bad input."""
from __future__ import annotations

import types

import grpc
import numpy as np
import pytest

from drlbox.replay import PrioritizedReplay, UniformReplay
from drlbox.ops.rollout import list_spec
from drlbox.roles.limits import Refused
from drlbox.roles.replay import ReplayService, ReplayTable
from drlbox.rpc import serde
from drlbox.rpc.generated import replay_pb2 as pb
from drlbox.rpc.generated import replay_pb2_grpc as pb_grpc
from drlbox.rpc.generated import tensor_pb2
from drlbox.rpc.replay import ReplayClient, add_replay
from drlbox.rpc.server import make_channel, make_server

JOB_ID = "acer-replay01"
TIMEOUT = 30.0


def start(memory, spec=None, rollout_maxlen=8):
    table = ReplayTable(lambda other_job: None, JOB_ID,
                        ReplayService(memory, spec, rollout_maxlen, max_lists=512))
    service = table.for_job(JOB_ID)
    server, port = make_server(0, [add_replay(table)])
    address = f"127.0.0.1:{port}"
    channel = make_channel(address)
    return types.SimpleNamespace(
        service=service, server=server, address=address,
        client=ReplayClient(address, JOB_ID, timeout=TIMEOUT),
        stub=pb_grpc.ReplayServerStub(channel), channel=channel)


@pytest.fixture
def make_replay_server():
    started = []

    def make(memory, **checks):
        setup = start(memory, **checks)
        started.append(setup)
        return setup

    yield make
    for setup in started:
        setup.client.close()
        setup.channel.close()
        setup.server.stop(0)


def rollout(n, seed):
    """One rollout list as a worker makes it (n steps, 2 actions)."""
    rng = np.random.default_rng(seed)
    behaviour = rng.random((n, 2), dtype=np.float32)
    return {
        "obs": rng.standard_normal((n + 1, 4)).astype(np.float32),
        "actions": rng.integers(0, 2, size=n, dtype=np.int64),
        "rewards": rng.standard_normal(n).astype(np.float32),
        "behaviour": behaviour / behaviour.sum(axis=1, keepdims=True),
        "terminated": np.array([seed % 2], np.uint8),
    }


def assert_same_list(got, expected):
    assert list(got) == list(expected)
    for key, value in expected.items():
        assert got[key].dtype == value.dtype, key
        assert got[key].shape == value.shape, key
        assert got[key].tobytes() == value.tobytes(), key


def rpc_error(call):
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def test_sample_is_none_until_minlen(make_replay_server):
    r = make_replay_server(UniformReplay(maxlen=20, minlen=3, seed=0))
    assert r.client.sample(4) is None
    r.client.insert([rollout(5, 0), rollout(5, 1)])
    assert len(r.service) == 2 and not r.service.ready
    assert r.client.sample(4) is None
    r.client.insert([rollout(5, 2)])
    assert r.service.ready
    sample = r.client.sample(4)
    assert sample is not None and len(sample.lists) == 4


def test_rollout_lists_round_trip_exactly(make_replay_server):
    r = make_replay_server(UniformReplay(maxlen=20, minlen=1, seed=0))
    lists = [rollout(n, seed) for seed, n in enumerate([1, 3, 8, 32, 5])]
    r.client.insert(lists[:2])
    r.client.insert(lists[2:])
    assert len(r.service) == len(lists)
    sample = r.client.sample(64)
    assert sample.keys.dtype == np.int64 and sample.keys.shape == (64,)
    assert sample.weights.dtype == np.float32 and np.all(sample.weights == 1.0)
    assert set(sample.keys.tolist()) == set(range(len(lists)))   # 64 draws from 5 lists
    for got, key in zip(sample.lists, sample.keys):
        assert_same_list(got, lists[key])
        n = got["actions"].shape[0]
        assert got["obs"].shape == (n + 1, 4) and got["behaviour"].shape == (n, 2)
        assert got["rewards"].shape == (n,) and got["terminated"].shape == (1,)


def test_insert_reply_reports_size_and_ready(make_replay_server):
    r = make_replay_server(UniformReplay(maxlen=3, minlen=2, seed=0))
    chunk = lambda lists: pb.ReplayChunk(job_id=JOB_ID, data=serde.encode_rollouts(lists))
    info = r.stub.Insert(iter([chunk([rollout(2, 0)])]), timeout=TIMEOUT)
    assert (info.size, info.ready) == (1, False)
    info = r.stub.Insert(iter([chunk([rollout(2, 1), rollout(2, 2), rollout(2, 3)])]),
                         timeout=TIMEOUT)
    assert (info.size, info.ready) == (3, True)      # maxlen 3: the oldest was evicted
    sample = r.client.sample(30)
    assert set(sample.keys.tolist()) == {1, 2, 3}


def test_prioritized_update_over_grpc_shifts_sampling(make_replay_server):
    r = make_replay_server(PrioritizedReplay(maxlen=16, minlen=4, alpha=1.0, beta=0.5,
                                             eps=1e-6, seed=0))
    lists = [rollout(3, seed) for seed in range(4)]
    r.client.insert(lists)
    before = r.client.sample(400)
    assert set(before.keys.tolist()) == {0, 1, 2, 3}, "fresh lists share the max priority"

    r.client.update_priorities(np.array([0, 1, 2, 3]), np.array([0.0, 0.0, 0.0, 5.0]))
    after = r.client.sample(400)
    assert np.mean(after.keys == 3) > 0.99
    for got, key in zip(after.lists, after.keys):
        assert_same_list(got, lists[key])
    # Importance weights are normalised to a max of 1 and favour the rare draws.
    assert after.weights.dtype == np.float32
    assert after.weights.max() == pytest.approx(1.0)
    assert np.all(after.weights[after.keys == 3] < 1.0) or np.all(after.keys == 3)

    r.client.update_priorities(np.array([3, 1]), np.array([0.0, 5.0]))
    shifted = r.client.sample(400)
    assert np.mean(shifted.keys == 1) > 0.99


def test_bad_priority_updates_are_invalid_argument(make_replay_server):
    r = make_replay_server(PrioritizedReplay(maxlen=8, minlen=1, seed=0))
    r.client.insert([rollout(2, 0)])
    def update(keys, priorities):         # the status codes on the wire
        return r.stub.UpdatePriorities(pb.PriorityUpdate(job_id=JOB_ID, keys=keys,
                                                         priorities=priorities), timeout=TIMEOUT)

    err = rpc_error(lambda: update([99], [1.0]))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "99" in err.details()
    err = rpc_error(lambda: update([0], [-1.0]))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and ">= 0" in err.details()
    err = rpc_error(lambda: update([0, 0], [1.0]))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(Refused, match="99"):        # the client says it in drlbox's words
        r.client.update_priorities(np.array([99]), np.array([1.0]))


def test_uniform_replay_ignores_priorities(make_replay_server):
    r = make_replay_server(UniformReplay(maxlen=8, minlen=1, seed=0))
    r.client.insert([rollout(2, 0), rollout(2, 1)])
    r.client.update_priorities(np.array([0, 1]), np.array([0.0, 9.0]))
    assert set(r.client.sample(200).keys.tolist()) == {0, 1}


def test_sample_batch_size_must_be_positive(make_replay_server):
    r = make_replay_server(UniformReplay(maxlen=8, minlen=1, seed=0))
    r.client.insert([rollout(2, 0)])
    for size in (0, -3):
        err = rpc_error(lambda: r.client.sample(size))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert str(size) in err.details()


def test_unknown_job_is_not_found(make_replay_server):
    r = make_replay_server(UniformReplay(maxlen=8, minlen=1, seed=0))
    r.client.insert([rollout(2, 0)])
    stranger = ReplayClient(r.address, "dqn-otherjob", timeout=TIMEOUT)
    try:
        calls = {"insert": lambda: stranger.insert([rollout(2, 1)]),
                 "sample": lambda: stranger.sample(2),
                 "update_priorities": lambda: stranger.update_priorities([0], [1.0])}
        for name, call in calls.items():
            err = rpc_error(call)
            assert err.code() == grpc.StatusCode.NOT_FOUND, name
            assert "dqn-otherjob" in err.details() and JOB_ID in err.details(), name
    finally:
        stranger.close()
    assert len(r.service) == 1


def test_payload_over_one_mib_is_chunked_and_inserted(make_replay_server):
    r = make_replay_server(UniformReplay(maxlen=8, minlen=1, seed=0))
    lists = [rollout(10_000, seed) for seed in range(4)]
    data = serde.encode_rollouts(lists)
    assert len(data) > serde.CHUNK_BYTES
    assert len(list(serde.split_chunks(data))) >= 2
    r.client.insert(lists)
    assert len(r.service) == 4
    sample = r.client.sample(8)       # the sample stream is chunked too
    assert len(serde.encode_rollouts(sample.lists)) > serde.CHUNK_BYTES
    for got, key in zip(sample.lists, sample.keys):
        assert_same_list(got, lists[key])


def test_malformed_insert_is_invalid_argument_and_changes_nothing(make_replay_server):
    r = make_replay_server(UniformReplay(maxlen=8, minlen=1, seed=0))
    r.client.insert([rollout(2, 0)])
    good = serde.encode_rollouts([rollout(50_000, 1)])
    pieces = list(serde.split_chunks(good))
    assert len(pieces) >= 2
    mismatched = tensor_pb2.RolloutBatch(lists=[tensor_pb2.TensorList(tensors=[
        tensor_pb2.Tensor(name="obs", dtype="float32", shape=[2, 4], data=b"\0" * 31)])])
    bad_dtype = tensor_pb2.RolloutBatch(lists=[tensor_pb2.TensorList(tensors=[
        tensor_pb2.Tensor(name="obs", dtype="object", shape=[1], data=b"\0" * 8)])])
    streams = {
        "garbage": [b"\xff\xff\xff\xff"],
        "garbage in a later chunk": [pieces[0], b"\xff" * 100] + pieces[2:],
        "truncated": pieces[:-1] + [pieces[-1][:-7]] if len(pieces[-1]) > 7 else pieces[:-1],
        "byte count": [mismatched.SerializeToString()],
        "dtype": [bad_dtype.SerializeToString()],
    }
    for name, datas in streams.items():
        chunks = [pb.ReplayChunk(job_id=JOB_ID, data=datas[0])]
        chunks += [pb.ReplayChunk(data=d) for d in datas[1:]]
        err = rpc_error(lambda: r.stub.Insert(iter(chunks), timeout=TIMEOUT))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, name
        assert "rollouts refused" in err.details(), name
        assert len(r.service) == 1, name
    # The server is still fine afterwards.
    r.client.insert([rollout(3, 2)])
    assert len(r.service) == 2


def test_empty_insert_stream_is_invalid_argument(make_replay_server):
    r = make_replay_server(UniformReplay(maxlen=8, minlen=1, seed=0))
    err = rpc_error(lambda: r.stub.Insert(iter([]), timeout=TIMEOUT))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(r.service) == 0


# --- a job's inserts are checked against its rollout spec -----------------------------------
def test_inserts_that_do_not_fit_the_job_are_refused_and_change_nothing(make_replay_server):
    spec = list_spec(rollout(3, 0), num_actions=2)
    r = make_replay_server(UniformReplay(maxlen=8, minlen=1, seed=0), spec=spec,
                           rollout_maxlen=8)
    r.client.insert([rollout(8, 0), rollout(1, 1)])

    def spoiled(**changes):
        good = rollout(4, 2)
        good.update(changes)
        return good

    cases = {
        "obs shape": ([spoiled(obs=np.zeros((5, 3), np.float32))], "obs: must be float32 (5, 4)"),
        "obs dtype": ([spoiled(obs=np.zeros((5, 4), np.float64))], "obs: must be float32"),
        "missing key": ([{k: v for k, v in rollout(4, 2).items() if k != "behaviour"}],
                        "holds"),
        "too many steps": ([rollout(9, 3)], "1 to 8 steps"),
        "non-finite reward": ([spoiled(rewards=np.array([0, np.nan, 0, 0], np.float32))],
                              "rewards: must be finite"),
        "second list bad": ([rollout(2, 4), spoiled(actions=np.zeros(4, np.int32))],
                            "lists[1]: actions"),
        "action 7 of 2": ([spoiled(actions=np.array([0, 1, 7, 0]))],
                          "actions: values must be 0 to 1, got 0 to 7"),
        "negative action": ([spoiled(actions=np.array([0, -1, 0, 0]))],
                            "actions: values must be 0 to 1"),
        "terminated 3": ([spoiled(terminated=np.array([3], np.uint8))],
                         "terminated: values must be 0 to 1"),
    }
    for name, (lists, expected) in cases.items():
        err = rpc_error(lambda: r.client.insert(lists))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, name
        assert expected in err.details(), (name, err.details())
    err = rpc_error(lambda: r.client.insert([rollout(2, s) for s in range(513)]))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "1 to 512 lists" in err.details()
    assert len(r.service) == 2


def test_an_insert_stream_past_what_the_job_can_send_is_refused_before_it_ends(
        make_replay_server):
    spec = list_spec(rollout(3, 0))
    r = make_replay_server(UniformReplay(maxlen=8, minlen=1, seed=0), spec=spec,
                           rollout_maxlen=8)
    limit = r.service.max_insert_bytes
    sent = []

    def chunks():
        for i in range(10_000):                      # ~10 GB if it were read to the end
            sent.append(i)
            yield pb.ReplayChunk(job_id=JOB_ID, data=b"\0" * (1 << 20))

    err = rpc_error(lambda: r.stub.Insert(chunks(), timeout=TIMEOUT))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and str(limit) in err.details()
    assert len(sent) < 200, "the server read the stream far past its limit"
    assert len(r.service) == 0


def test_sample_and_priority_sizes_are_bounded_by_the_memory(make_replay_server):
    r = make_replay_server(PrioritizedReplay(maxlen=8, minlen=1, seed=0))
    r.client.insert([rollout(2, 0)])
    err = rpc_error(lambda: r.client.sample(2**31 - 1))
    assert err.code() == grpc.StatusCode.OUT_OF_RANGE and "1 and 512" in err.details()
    err = rpc_error(lambda: r.client.update_priorities(np.zeros(9, np.int64), np.ones(9)))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(r.client.sample(8).lists) == 8


def test_a_call_the_replay_server_died_under_is_made_again_on_its_replacement():
    import threading

    setup = start(UniformReplay(maxlen=20, minlen=1, seed=0))
    setup.client.insert([rollout(3, 0)])
    held, entered = threading.Event(), threading.Event()
    sample = setup.service.sample

    def held_sample(batch_size):        # the real sample, held until the server is gone
        entered.set()
        held.wait(10)
        return sample(batch_size)

    setup.service.sample = held_sample
    got = {}
    caller = threading.Thread(target=lambda: got.update(sample=setup.client.sample(1)))
    caller.start()
    assert entered.wait(10)
    setup.server.stop(0).wait(10)
    port = int(setup.address.rsplit(":", 1)[1])
    fresh = ReplayTable(lambda other_job: None, JOB_ID, ReplayService(
        PrioritizedReplay(maxlen=20, minlen=1), None, 8, max_lists=512))
    server, _ = make_server(port, [add_replay(fresh)])
    try:
        held.set()
        caller.join(30)
        assert got == {"sample": None}          # asked again: the new memory is still empty
        setup.client.insert([rollout(3, 1)])
        assert len(setup.client.sample(2).lists) == 2
        with pytest.raises(Refused, match="never issued"):       # keys of the old memory
            setup.client.update_priorities(np.array([5]), np.array([1.0]))
    finally:
        setup.client.close()
        setup.channel.close()
        server.stop(0)
