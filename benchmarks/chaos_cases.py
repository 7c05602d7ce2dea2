"""Case generators for benchmarks/chaos_fuzz.py: raw request bytes for every drlbox gRPC method.

A case is the list of serialized request messages one call sends (one message for a unary
request), the metadata it carries, its kind and a short description. Kinds come in thirds:
random bytes, mutations of a valid request, and structured boundary values built with the
generated protobuf classes. Structured cases that are invalid by construction (negative env
steps, non-finite returns, rollout lists of the wrong shape, ...) are flagged `invalid`, so the
fuzzer can count the ones a server accepts anyway.
"""
from __future__ import annotations

import copy
import pickle
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from grpc_health.v1 import health_pb2

from drlbox.rpc import serde
from drlbox.rpc.generated import job_control_pb2 as jc_pb
from drlbox.rpc.generated import parameter_server_pb2 as ps_pb
from drlbox.rpc.generated import replay_pb2 as rp_pb
from drlbox.rpc.generated import status_pb2 as st_pb
from drlbox.rpc.generated import tensor_pb2

INT32 = [0, -1, 1, 2, 2**31 - 1, -2**31]
INT64 = INT32 + [2**63 - 1, -2**63]
FLOATS = [0.0, -0.0, 1.0, -1.0, float("nan"), float("inf"), float("-inf"), 3.4e38, 1e-45]
LONG = "x" * 100_000
NOT_UTF8 = b"\xff\xfe\xc3\x28 job \xed\xa0\x80"
# Expensive or job-ending variants: uses per method, so the run time stays bounded.
BUDGET = {"huge-stream": 2, "end-job": 4, "int64-steps": 3, "steal-shard": 2,
          "huge-sample": 6, "100k-returns": 4, "200k-priorities": 8, "huge-insert": 8}


@dataclass
class Target:
    """What the generators know of the running cluster (refreshed when the job changes)."""

    job_id: str
    slice_sizes: list                 # weights per slice: [slice 0, slice 1]
    shard_address: str                # host:port of the ps-shard process
    python_version: str
    submit_config: object             # the job's TrainerConfig (for Submit cases)
    submit_bytes: bytes               # ... pickled as the SDK sends it
    rollouts: list                    # valid DQN rollout lists (dicts of arrays)
    budget: dict = field(default_factory=dict)   # uses left of the BUDGET variants

    def spend(self, tag: str) -> bool:
        """True (and one use fewer) while the variant `tag` has uses left."""
        if self.budget.get(tag, 0) <= 0:
            return False
        self.budget[tag] -= 1
        return True


@dataclass
class Case:
    """One call: the request messages, the metadata variant, and how it was made."""

    kind: str                          # random | mutation | structured
    desc: str
    messages: list
    metadata: str = "ok"               # ok | none | bad-token | bad-protocol | token-only
    invalid: bool = False              # invalid by construction: must not be accepted


@dataclass
class Valid:
    """A valid request: its messages, and optionally an inner payload plus how to wrap it
    again (a rollout batch, a pickle, a frame header), so mutations reach the inner parser."""

    messages: list
    inner: bytes | None = None
    rewrap: Callable[[bytes], list] | None = None


@dataclass
class Gen:
    """A method's generators: valid(target, rng) -> Valid, and
    structured(target, rng) -> (description, messages, invalid)."""

    valid: Callable
    structured: Callable
    streaming: bool = False


# --- raw protobuf helpers ----------------------------------------------------------------
def varint(value: int) -> bytes:
    """Protobuf varint (negative values as 64-bit two's complement, as protobuf does)."""
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def raw_field(number: int, payload: bytes) -> bytes:
    """A length-delimited field written by hand (e.g. a string that is not UTF-8)."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def not_utf8(message: bytes, number: int = 1) -> bytes:
    """`message` with string field `number` set (last value wins) to bytes that are not UTF-8."""
    return message + raw_field(number, NOT_UTF8)


def field_spans(data: bytes) -> list:
    """(start, end) of each top-level field of a protobuf encoding; [] if it does not parse."""
    spans, pos = [], 0
    try:
        while pos < len(data):
            start = pos
            key, pos = _read_varint(data, pos)
            wire = key & 7
            if wire == 0:
                _, pos = _read_varint(data, pos)
            elif wire in (1, 5):
                pos += 8 if wire == 1 else 4
            elif wire == 2:
                length, pos = _read_varint(data, pos)
                pos += length
            else:
                return []
            if pos > len(data):
                return []
            spans.append((start, pos))
    except IndexError:
        return []
    return spans


def _read_varint(data: bytes, pos: int) -> tuple:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80 or shift > 70:
            return value, pos


def pick(rng: np.random.Generator, values: list):
    """A uniformly chosen element (for lists of mixed types, which rng.choice mangles)."""
    return values[int(rng.integers(len(values)))]


def unary(message) -> list:
    """The one serialized request of a unary-request method."""
    return [message.SerializeToString()]


# --- the three kinds -----------------------------------------------------------------------
def random_bytes(rng: np.random.Generator) -> bytes:
    """0 to a few KB mostly; sometimes up to 64 KB or ~1 MB."""
    roll = rng.random()
    size = (0 if roll < 0.08 else int(rng.integers(1, 4096)) if roll < 0.85
            else int(rng.integers(4096, 65536)) if roll < 0.97
            else int(rng.integers(65536, 1 << 20)))
    return rng.bytes(size)


def mutate_bytes(data: bytes, rng: np.random.Generator) -> tuple:
    """1 to 3 of: bit flips, truncation, insertion, deletion, a duplicated field."""
    data, done = bytearray(data), []
    for _ in range(int(rng.integers(1, 4))):
        op = int(rng.integers(5))
        if op == 0 and data:
            for _ in range(int(rng.integers(1, 9))):
                data[int(rng.integers(len(data)))] ^= 1 << int(rng.integers(8))
            done.append("bitflip")
        elif op == 1 and data:
            data = data[:int(rng.integers(len(data)))]
            done.append("truncate")
        elif op == 2:
            at = int(rng.integers(len(data) + 1))
            data[at:at] = rng.bytes(int(rng.integers(1, 17)))
            done.append("insert")
        elif op == 3 and data:
            at = int(rng.integers(len(data)))
            del data[at:at + int(rng.integers(1, 17))]
            done.append("delete")
        elif spans := field_spans(bytes(data)):
            lo, hi = pick(rng, spans)
            at = pick(rng, [lo, hi, len(data)])
            data[at:at] = data[lo:hi]
            done.append("dupfield")
    return bytes(data), "+".join(done) or "unchanged"


def mutate_stream(messages: list, rng: np.random.Generator) -> tuple:
    """Mutate one message of a request stream, or drop/duplicate/reorder whole messages."""
    messages, roll = list(messages), rng.random()
    if not messages:
        return [rng.bytes(int(rng.integers(0, 64)))], "message from nothing"
    at = int(rng.integers(len(messages)))
    if roll < 0.75:
        messages[at], how = mutate_bytes(messages[at], rng)
        return messages, f"msg{at}:{how}"
    if roll < 0.85:
        del messages[at]
        return messages, f"drop msg{at}"
    if roll < 0.95:
        messages.insert(at, messages[at])
        return messages, f"duplicate msg{at}"
    return messages[::-1], "reversed stream"


def make_case(gen: Gen, target: Target, rng: np.random.Generator) -> Case:
    """One case of a method: random, mutation or structured in thirds; 5% odd metadata."""
    kind = int(rng.integers(3))
    if kind == 0:
        count = int(rng.integers(0, 4)) if gen.streaming else 1
        messages = [random_bytes(rng) for _ in range(count)]
        case = Case("random", f"{count} message(s), {sum(map(len, messages))} B", messages)
    elif kind == 1:
        valid = gen.valid(target, rng)
        if valid.inner is not None and rng.random() < 0.5:
            inner, how = mutate_bytes(valid.inner, rng)
            case = Case("mutation", f"inner payload {how}", valid.rewrap(inner))
        elif gen.streaming:
            messages, how = mutate_stream(valid.messages, rng)
            case = Case("mutation", how, messages)
        else:
            message, how = mutate_bytes(valid.messages[0], rng)
            case = Case("mutation", how, [message])
    else:
        desc, messages, invalid = gen.structured(target, rng)
        case = Case("structured", desc, messages, invalid=invalid)
    if rng.random() < 0.05:
        case.metadata = pick(rng, ["none", "bad-token", "bad-protocol", "token-only"])
    return case


def job_id_choice(target: Target, rng: np.random.Generator, real: float = 0.5) -> tuple:
    """(description, job id): the real one with probability `real`, else a wrong one."""
    if rng.random() < real:
        return "real-job", target.job_id
    return pick(rng, [
        ("empty-job", ""), ("unknown-job", "dqn-00000000"), ("job+x", target.job_id + "x"),
        ("100KB-job", LONG), ("unicode-job", "j\u00f8b-\u2603-\U0001F600"),
        ("nul-job", target.job_id[:3] + "\x00" + target.job_id[3:]),
        ("upper-job", target.job_id.upper())])


# --- the parameter server's own methods --------------------------------------------------
_ROLES = [ps_pb.JOINING_ROLE_WORKER, ps_pb.JOINING_ROLE_EVALUATOR]


def _join_job_request(t, rng) -> ps_pb.JoinJobRequest:
    """A valid JoinJob request: the running job, this Python, a worker or the evaluator."""
    return ps_pb.JoinJobRequest(job_id=t.job_id, python_version=t.python_version,
                                role=pick(rng, _ROLES))


def _join_job(t, rng):
    """One field of a JoinJob request wrong at a time (sometimes several), or none."""
    roll = rng.random()
    if roll < 0.1:
        number, name = pick(rng, [(1, "job_id"), (2, "python_version")])
        data = _join_job_request(t, rng).SerializeToString()
        return f"{name} not UTF-8", [not_utf8(data, number)], True
    desc, job_id = job_id_choice(t, rng, 0.6)
    version = t.python_version
    if rng.random() < 0.3:
        version = pick(rng, ["", "2.7", "3.12", t.python_version + ".0", "4.0", LONG])
    role = pick(rng, _ROLES * 3 + [ps_pb.JOINING_ROLE_UNSPECIFIED, 3, 99, -1, 2**31 - 1])
    message = ps_pb.JoinJobRequest(job_id=job_id, python_version=version, role=role)
    invalid = desc != "real-job" or version != t.python_version or role not in _ROLES
    return f"{desc} version={version[:8]!r} role={role}", unary(message), invalid


def _by_job(make: Callable, real: float = 0.5, empty_ok: bool = False) -> Callable:
    """The structured generator of a request that names a job only."""
    def structured(t, rng):
        if rng.random() < 0.05:
            return "job id not UTF-8", [not_utf8(make(t.job_id).SerializeToString())], True
        desc, job_id = job_id_choice(t, rng, real)
        fine = desc == "real-job" or (empty_ok and desc == "empty-job")
        return desc, unary(make(job_id)), not fine
    return structured


def _report_evaluation(t, rng):
    desc, job_id = job_id_choice(t, rng, 0.7)
    steps = pick(rng, INT64 + [100, 5000])
    roll, invalid = rng.random(), desc != "real-job" or steps < 0
    if roll < 0.3:
        returns, what = list(rng.normal(size=int(rng.integers(1, 21)))), "normal returns"
    elif roll < 0.8:
        value = pick(rng, FLOATS)
        returns, what = [value] * int(rng.integers(1, 4)), f"returns {value!r}"
        invalid = invalid or not np.isfinite(value)
    elif roll < 0.9 or not t.spend("100k-returns"):
        returns, what, invalid = [], "no returns", True
    else:
        returns, what = list(rng.normal(size=100_000)), "100k returns"
    message = ps_pb.EvaluationReport(job_id=job_id, global_steps=steps, returns=returns)
    return f"{desc} global_steps={steps} {what}", unary(message), invalid


def _stop(t, rng):
    desc, job_id = job_id_choice(t, rng, 0.4)
    reason = pick(rng, ["", "fuzz", LONG, "r\u00e9ason \U0001F600"])
    message = ps_pb.StopRequest(job_id=job_id, reason=reason)
    return f"{desc} reason of {len(reason)} chars", unary(message), desc != "real-job"


def _join_shard(t, rng):
    host, port = t.shard_address.rsplit(":", 1)
    if rng.random() < 0.01 and t.spend("steal-shard"):
        how = pick(rng, ["address", "port"])
        message = (ps_pb.JoinShardRequest(address=t.shard_address) if how == "address"
                   else ps_pb.JoinShardRequest(port=int(port)))
        return f"the serving shard's own {how}", unary(message), False
    address = pick(rng, ["", "127.0.0.1:1", "bogus", "[::1]:80", LONG, f"{host}:{port}0"])
    number = pick(rng, INT32 + [65535, 65536])
    message = ps_pb.JoinShardRequest(address=address, port=number)
    invalid = not address and not 0 < number < 65536
    return f"address={address[:16]!r} port={number}", unary(message), invalid


def _shard_ready(t, rng):
    desc, job_id = job_id_choice(t, rng, 0.6)
    shard = pick(rng, INT32)
    address = pick(rng, [t.shard_address, "", "127.0.0.1:1", LONG])
    message = ps_pb.ShardReadyRequest(job_id=job_id, shard=shard, address=address)
    return f"{desc} shard={shard} address={address[:16]!r}", unary(message), desc != "real-job"


def _snapshot(served: int) -> Callable:
    def structured(t, rng):
        desc, job_id = job_id_choice(t, rng, 0.6)
        shard = served if rng.random() < 0.5 else pick(rng, INT32)
        message = ps_pb.SnapshotRequest(job_id=job_id, shard=shard)
        return f"{desc} shard={shard}", unary(message), desc != "real-job" or shard != served
    return structured


# --- exchanges ---------------------------------------------------------------------------
def _header(t, shard: int, **fields) -> ps_pb.RequestHeader:
    return ps_pb.RequestHeader(**{**dict(job_id=t.job_id, shard=shard, newer_than=-1,
                                         aux_newer_than=-1), **fields})


def _frames(header: ps_pb.RequestHeader, data=b"") -> list:
    return serde.data_frames(header.SerializeToString(), data)


def _gradient(size: int, rng) -> np.ndarray:
    return (rng.normal(size=size) * 1e-3).astype(np.float32)


def _report(rng, env_steps: int, returns=None, lengths=None, stats=None) -> ps_pb.WorkerReport:
    returns = [float(rng.normal() * 20 + 20)] if returns is None else returns
    lengths = [int(rng.integers(1, 500))] * len(returns) if lengths is None else lengths
    return ps_pb.WorkerReport(worker=0, env_steps=env_steps, episode_returns=returns,
                              episode_lengths=lengths, stats=stats or {"loss": 0.5})


def _exchange_valid(shard: int) -> Callable:
    def valid(t, rng):
        size, roll, data = t.slice_sizes[shard], rng.random(), b""
        if roll < 0.4:
            header = _header(t, shard, pull=True)
        elif roll < 0.7 or shard != 0:
            data = serde.float_bytes(_gradient(size, rng))
            header = _header(t, shard, gradient_values=size, base_version=0)
        else:
            header = _header(t, shard, report=_report(rng, int(rng.integers(0, 16))))
        return Valid(_frames(header, data), header.SerializeToString(),
                     lambda raw: serde.data_frames(raw, data))
    return valid


def _env_steps(t, rng) -> tuple:
    """(value, note): mostly small, sometimes negative, rarely job-ending or int64 extremes."""
    if rng.random() < 0.02:
        if t.spend("end-job"):
            return 10**9, " (ends the job)"
        if t.spend("int64-steps"):
            return pick(rng, [2**63 - 1, -2**63]), ""
    return pick(rng, [0, 1, 7, 100, 1000, -1, -100, -2**31]), ""


def _exchange_report(t, rng, shard: int) -> tuple:
    steps, note = _env_steps(t, rng)
    roll, bad = rng.random(), False
    if roll < 0.1 and t.spend("100k-returns"):
        report, what = _report(rng, steps, list(rng.normal(size=100_000))), "100k returns"
    elif roll < 0.5:
        value = pick(rng, FLOATS)
        report, what = _report(rng, steps, [value]), f"return {value!r}"
        bad = not np.isfinite(value)
    elif roll < 0.6:
        length = pick(rng, INT64)
        report, what, bad = _report(rng, steps, lengths=[length]), f"length {length}", length < 0
    elif roll < 0.7:
        key = pick(rng, ["", LONG, "loss"])
        report, what = _report(rng, steps, stats={key: float("nan")}), f"stats {key[:8]!r}: nan"
    else:
        report, what = _report(rng, steps), "normal"
    # Slices other than 0 ignore reports: only slice 0 must refuse a bad one.
    invalid = shard == 0 and (steps < 0 or bad)
    header = _header(t, shard, report=report)
    return f"report env_steps={steps}{note}, {what}", _frames(header), invalid


def _exchange_gradient(t, rng, shard: int, variant: str) -> tuple:
    size = t.slice_sizes[shard]
    grad = _gradient(size, rng)
    header = _header(t, shard, gradient_values=size, base_version=pick(rng, INT64))
    data = serde.float_bytes(grad).tobytes()
    if variant == "grad-ok" and rng.random() < 0.5:
        header.gradient_bfloat16 = True
        raw = serde.to_bfloat16(grad).view(np.uint16).tobytes()
        return "gradient ok (bfloat16)", _frames(header, raw), False
    if variant == "grad-ok":
        return "gradient ok", _frames(header, data), False
    if variant == "grad-nonfinite":
        value = pick(rng, [float("nan"), float("inf"), float("-inf"), 1e20, 3.4e38])
        grad[rng.integers(size, size=int(rng.integers(1, 4)))] = value
        return f"gradient with {value!r}", _frames(header, serde.float_bytes(grad)), True
    if variant == "grad-count":
        header.gradient_values = pick(rng, [size - 1, size + 1, -1, 1, 2**31 - 1, 2**63 - 1])
        return f"gradient_values={header.gradient_values} for {size}", _frames(header, data), True
    if variant == "zero-count":
        header.gradient_values = 0
        return "gradient_values=0 with data", _frames(header, data), True
    if variant == "short":
        return "half the announced gradient", _frames(header, data[:len(data) // 2]), True
    if variant == "extra":
        return "more data than announced", _frames(header, data + b"\0" * 32), True
    if variant == "bf16-mismatch":
        header.gradient_bfloat16 = True
        return "bfloat16 flag with float32 data", _frames(header, data), True
    cut = sorted(int(c) for c in rng.integers(0, len(data), size=2))
    first = serde.encode_frame(header.SerializeToString(), data[:cut[0]])
    if variant == "split":
        rest = [serde.encode_frame(None, data[cut[0]:cut[1]]),
                serde.encode_frame(None, data[cut[1]:])]
        return "gradient split over 3 frames", [first] + rest, False
    again = serde.encode_frame(header.SerializeToString(), data[cut[0]:])
    return "a second header before the gradient ended", [first, again], True


def _exchange_misc(t, rng, shard: int, variant: str) -> tuple:
    size = t.slice_sizes[shard]
    if variant == "no-header":
        return "data frame without a header", [serde.encode_frame(None, rng.bytes(size * 4))], True
    if variant == "wrong-shard":
        other = pick(rng, [1 - shard, -1, 2, 2**31 - 1, -2**31])
        return f"pull of slice {other}", _frames(_header(t, other, pull=True)), True
    if variant == "wrong-job":
        desc, job_id = job_id_choice(t, rng, 0.0)
        return f"pull of {desc}", _frames(_header(t, shard, pull=True, job_id=job_id)), True
    if variant == "empty-stream":
        return "no frames at all", [], False
    if variant == "bad-frame":
        frame = pick(rng, [b"\x0b\x01", b"\x0a" + b"\xff" * 10 + b"\x01", b"\x0a\x10ab", b"\x12",
                           b"\x0f" + rng.bytes(8), b"\x0a\x00" * 3 + b"\x8a"])
        return f"malformed frame {frame[:6]!r}", [frame], True
    frames = []
    for _ in range(int(rng.integers(2, 5))):
        if rng.random() < 0.5:
            frames += _frames(_header(t, shard, pull=True))
        else:
            data = serde.float_bytes(_gradient(size, rng))
            frames += _frames(_header(t, shard, gradient_values=size), data)
    return f"{len(frames)} exchanges in one stream", frames, False


def _exchange_structured(shard: int) -> Callable:
    def structured(t, rng):
        variant = pick(rng, ["pull", "report", "report", "grad-ok", "grad-ok", "grad-nonfinite",
                             "grad-count", "zero-count", "short", "extra", "bf16-mismatch",
                             "split", "header-again", "no-header", "wrong-shard", "wrong-job",
                             "multi", "empty-stream", "bad-frame"])
        if variant == "pull":
            header = _header(t, shard, pull=True, newer_than=pick(rng, INT64),
                             aux_newer_than=pick(rng, INT64))
            return f"pull newer_than={header.newer_than}", _frames(header), False
        if variant == "report":
            return _exchange_report(t, rng, shard)
        if variant in ("no-header", "wrong-shard", "wrong-job", "multi", "empty-stream",
                       "bad-frame"):
            return _exchange_misc(t, rng, shard, variant)
        return _exchange_gradient(t, rng, shard, variant)
    return structured


# --- job control -------------------------------------------------------------------------
def _submit_chunks(t, data: bytes, version: str | None = None, size: int = serde.CHUNK_BYTES,
                   algorithm: str = "dqn") -> list:
    pieces = list(serde.split_chunks(data, size))
    first = jc_pb.SubmitChunk(python_version=t.python_version if version is None else version,
                              algorithm=algorithm, config=pieces[0])
    return unary(first) + [jc_pb.SubmitChunk(config=p).SerializeToString() for p in pieces[1:]]


def _submit_valid(t, rng):
    return Valid(_submit_chunks(t, t.submit_bytes), t.submit_bytes,
                 lambda data: _submit_chunks(t, data))


def _bad_config(t, rng) -> tuple:
    """The job's config with one bad setting, pickled as the SDK would (its checks bypassed)."""
    import cloudpickle

    name, value = pick(rng, [
        ("train_steps", -5), ("train_steps", 0), ("train_steps", "many"), ("batch_size", 0),
        ("discount", float("nan")), ("rollout_maxlen", -1), ("replay_type", "bogus"),
        ("replay_kwargs", {"maxlen": -1}), ("optimizer", "sgd"), ("algorithm", "bogus"),
        ("opt_clip_norm", float("inf")), ("env_maker", None)])
    config = copy.copy(t.submit_config)
    object.__setattr__(config, name, value)      # the config is a frozen dataclass
    return f"config {name}={value!r}", cloudpickle.dumps(config)


def _submit(t, rng):
    variant = pick(rng, ["ok", "tiny-chunks", "version", "non-utf8", "algorithm", "garbage",
                         "truncated", "bad-config", "bad-config", "empty-stream", "no-config",
                         "huge"])
    own = t.submit_bytes
    if variant == "ok":
        return "the job's own config", _submit_chunks(t, own), False
    if variant == "tiny-chunks":
        return "the job's config in 100-byte chunks", _submit_chunks(t, own, size=100), False
    if variant == "version":
        version = pick(rng, ["", "2.7", "3.12", t.python_version + ".0", LONG])
        return f"python_version={version[:8]!r}", _submit_chunks(t, own, version), True
    if variant == "non-utf8":
        first, *rest = _submit_chunks(t, own)
        return "python_version not UTF-8", [not_utf8(first)] + rest, True
    if variant == "algorithm":
        algorithm = pick(rng, ["a3c", "", LONG])
        return f"algorithm={algorithm[:8]!r}", _submit_chunks(t, own, algorithm=algorithm), False
    if variant == "garbage":
        value = pick(rng, [None, 42, "dqn", {"algorithm": "dqn"}, [1, 2, 3], b"x" * 1000])
        return f"pickle of a {type(value).__name__}", _submit_chunks(t, pickle.dumps(value)), True
    if variant == "truncated":
        cut = int(rng.integers(len(own)))
        return f"pickle cut at byte {cut}", _submit_chunks(t, own[:cut]), True
    if variant == "bad-config":
        desc, data = _bad_config(t, rng)
        return desc, _submit_chunks(t, data), True
    if variant == "empty-stream":
        return "no chunks at all", [], True
    if variant == "no-config":
        return "a first chunk without config", _submit_chunks(t, b""), True
    if t.spend("huge-stream"):
        piece = jc_pb.SubmitChunk(config=bytes(serde.CHUNK_BYTES)).SerializeToString()
        return "65 MiB stream (over the 64 MiB job limit)", \
            _submit_chunks(t, own) + [piece] * 65, True
    return "a 17 MiB chunk (over the message limit)", \
        _submit_chunks(t, own) + [raw_field(3, bytes(17 << 20))], True


def _fetch_checkpoint(t, rng):
    desc, job_id = job_id_choice(t, rng, 0.6)
    message = jc_pb.CheckpointRequest(job_id=job_id, latest=bool(rng.integers(2)),
                                      global_steps=pick(rng, INT64))
    return f"{desc} latest={message.latest} global_steps={message.global_steps}", \
        unary(message), desc != "real-job"


def _empty_request(t, rng):
    """Structured cases of a request without fields: unknown fields of all sorts."""
    extra = pick(rng, [b"", b"\x08\x01", raw_field(99, b"x" * 1000), not_utf8(b""),
                       varint(2**61) + b"\x00", b"\x0d\x00\x00\x80\x7f"])
    return f"{len(extra)} B of unknown fields", [extra], False


def _health(t, rng):
    if rng.random() < 0.1:
        return "service name not UTF-8", [not_utf8(b"")], False
    service = pick(rng, ["", "drlbox.v1.ParameterServer", "grpc.health.v1.Health", LONG])
    return f"service={service[:24]!r}", unary(health_pb2.HealthCheckRequest(service=service)), False


# --- the replay server -------------------------------------------------------------------
def _insert_chunks(job_id: str, data: bytes, size: int = serde.CHUNK_BYTES) -> list:
    pieces = list(serde.split_chunks(data, size))
    return (unary(rp_pb.ReplayChunk(job_id=job_id, data=pieces[0]))
            + [rp_pb.ReplayChunk(data=p).SerializeToString() for p in pieces[1:]])


def _some_lists(t, rng, count: int | None = None) -> list:
    count = int(rng.integers(1, 5)) if count is None else count
    return [t.rollouts[int(i)] for i in rng.integers(len(t.rollouts), size=count)]


def _insert_valid(t, rng):
    data = serde.encode_rollouts(_some_lists(t, rng))
    return Valid(_insert_chunks(t.job_id, data), data, lambda raw: _insert_chunks(t.job_id, raw))


def _broken_list(t, rng) -> tuple:
    """One rollout list with a wrong shape, dtype, key or value: (description, list)."""
    item = dict(_some_lists(t, rng, 1)[0])
    n, obs = len(item["rewards"]), item["obs"]
    name, value = pick(rng, [
        ("obs [n+1, 5]", np.zeros((n + 1, 5), np.float32)), ("obs [n, 4]", obs[:-1]),
        ("obs 1-D", obs.ravel()), ("obs scalar", np.float32(1.0)),
        ("obs float64", obs.astype(np.float64)), ("obs int8", obs.astype(np.int8)),
        ("obs inf", np.full_like(obs, np.inf)), ("actions [n, 2]", np.zeros((n, 2), np.int64)),
        ("actions float", item["actions"].astype(np.float32)), ("actions 7", np.full(n, 7)),
        ("rewards [n+3]", np.zeros(n + 3, np.float32)),
        ("rewards nan", np.full(n, np.nan, np.float32)), ("terminated [2]", np.zeros(2, np.uint8)),
        ("behaviour [n, 3]", np.zeros((n, 3), np.float32)), ("no obs", None),
        ("extra key", np.zeros(3)), ("no keys at all", "empty")])
    if value is None:
        del item["obs"]
    elif isinstance(value, str):
        item = {}
    else:
        item["extra" if name == "extra key" else name.split()[0]] = value
    return name, item


def _bad_tensor(rng) -> tuple:
    """A rollout batch whose one tensor contradicts itself: (description, bytes)."""
    def tensor(dtype, shape, data=b""):
        return tensor_pb2.Tensor(name="obs", dtype=dtype, shape=shape, data=data)

    name, bad = pick(rng, [
        ("data too short", tensor("float32", [4], bytes(8))),
        ("negative dim", tensor("float32", [-1, 4])),
        ("dtype object", tensor("object", [1], bytes(8))),
        ("dtype float128", tensor("float128", [1])), ("shape 2**62", tensor("float32", [2**62])),
        ("shape 2**32 x 2**32", tensor("uint8", [2**32, 2**32]))])
    batch = tensor_pb2.RolloutBatch(lists=[tensor_pb2.TensorList(tensors=[bad])])
    return name, batch.SerializeToString()


def _long_list() -> dict:
    steps = 200_000
    return {"obs": np.zeros((steps + 1, 4), np.float32), "actions": np.zeros(steps, np.int64),
            "rewards": np.ones(steps, np.float32), "behaviour": np.zeros((steps, 0), np.float32),
            "terminated": np.zeros(1, np.uint8)}


def _insert(t, rng):
    variant = pick(rng, ["ok", "chunked", "empty-batch", "wrong-job", "empty-stream", "broken",
                         "broken", "broken", "tensor", "many", "long-list"])
    if variant == "chunked":
        data = serde.encode_rollouts(_some_lists(t, rng))
        return "valid lists in 50-byte chunks", _insert_chunks(t.job_id, data, 50), False
    if variant == "empty-batch":
        return "a batch of no lists", _insert_chunks(t.job_id, b""), False
    if variant == "wrong-job":
        desc, job_id = job_id_choice(t, rng, 0.0)
        return desc, _insert_chunks(job_id, serde.encode_rollouts(_some_lists(t, rng))), True
    if variant == "empty-stream":
        return "no chunks at all", [], True
    if variant == "broken":
        name, item = _broken_list(t, rng)
        return f"a list with {name}", _insert_chunks(t.job_id, serde.encode_rollouts([item])), True
    if variant == "tensor":
        name, data = _bad_tensor(rng)
        return f"a tensor with {name}", _insert_chunks(t.job_id, data), True
    if variant == "many" and t.spend("huge-insert"):
        data = serde.encode_rollouts(_some_lists(t, rng, 5000))
        return "5,000 valid lists", _insert_chunks(t.job_id, data), False
    if variant == "long-list" and t.spend("huge-insert"):
        # rollout_maxlen is 32: no worker of this job makes such a list.
        data = serde.encode_rollouts([_long_list()])
        return "one list of 200k steps", _insert_chunks(t.job_id, data), True
    return "valid lists", _insert_valid(t, rng).messages, False


def _sample(t, rng):
    desc, job_id = job_id_choice(t, rng, 0.7)
    size = pick(rng, [1, 2, 32, 256, 1000, 0, -1, -2**31])
    if rng.random() < 0.05 and t.spend("huge-sample"):
        size = pick(rng, [2**31 - 1, 100_000])
    message = rp_pb.SampleRequest(job_id=job_id, batch_size=size)
    invalid = desc != "real-job" or not 1 <= size <= 100_000
    return f"{desc} batch_size={size}", unary(message), invalid


def _update_priorities(t, rng):
    desc, job_id = job_id_choice(t, rng, 0.7)
    keys, priorities = pick(rng, [([], []), ([0], [1.0]), ([-1], [1.0]), ([2**63 - 1], [0.5]),
                                  ([-2**63], [float("nan")]), ([0, 1], [float("inf"), -1.0]),
                                  ([0, 1, 2], [1.0]), ([], [1.0] * 10)])
    what = f"keys={keys} priorities={priorities}"
    if rng.random() < 0.05 and t.spend("200k-priorities"):
        keys, priorities, what = list(range(200_000)), [1.0] * 200_000, "200k keys and priorities"
    # Uniform replay ignores priorities by design: only a wrong job counts as invalid.
    message = rp_pb.PriorityUpdate(job_id=job_id, keys=keys, priorities=priorities)
    return f"{desc} {what}", unary(message), desc != "real-job"


# --- the method table --------------------------------------------------------------------
def _plain(make: Callable) -> Callable:
    """The valid generator of a unary-request method from `make(target, rng) -> message`."""
    return lambda t, rng: Valid(unary(make(t, rng)))


PS, JC = "drlbox.v1.ParameterServer", "drlbox.v1.JobControl"
# (role, service, method, call kind, generators, whether an accepted call may change state)
METHODS = [
    ("parameter-server", PS, "GetRunningJob", "uu", Gen(
        _plain(lambda t, r: ps_pb.RunningJobRequest()), _empty_request), False),
    # A worker's join uses up a worker index, which no snapshot shows.
    ("parameter-server", PS, "JoinJob", "us", Gen(_plain(_join_job_request), _join_job), True),
    ("parameter-server", PS, "Exchange", "ss",
     Gen(_exchange_valid(0), _exchange_structured(0), streaming=True), True),
    ("parameter-server", PS, "GetShards", "uu", Gen(_plain(
        lambda t, r: ps_pb.ShardsRequest(job_id=t.job_id)),
        _by_job(lambda j: ps_pb.ShardsRequest(job_id=j))), False),
    ("parameter-server", PS, "ReportEvaluation", "uu", Gen(_plain(
        lambda t, r: ps_pb.EvaluationReport(job_id=t.job_id, global_steps=int(r.integers(1000)),
                                            returns=list(r.normal(size=5)))),
        _report_evaluation), True),
    ("parameter-server", PS, "GetStatus", "uu", Gen(_plain(
        lambda t, r: ps_pb.StatusRequest(job_id=t.job_id)),
        _by_job(lambda j: ps_pb.StatusRequest(job_id=j), empty_ok=True)), False),
    ("parameter-server", PS, "Stop", "uu", Gen(_plain(
        lambda t, r: ps_pb.StopRequest(job_id=t.job_id, reason="fuzz")), _stop), True),
    ("parameter-server", PS, "JoinShard", "us", Gen(_plain(
        lambda t, r: ps_pb.JoinShardRequest(address="127.0.0.1:1")), _join_shard), True),
    ("parameter-server", PS, "ShardReady", "uu", Gen(_plain(
        lambda t, r: ps_pb.ShardReadyRequest(job_id=t.job_id, shard=1,
                                             address=t.shard_address)), _shard_ready), True),
    ("parameter-server", PS, "Snapshot", "us", Gen(_plain(
        lambda t, r: ps_pb.SnapshotRequest(job_id=t.job_id, shard=0)), _snapshot(0)), False),
    ("parameter-server", JC, "Submit", "su",
     Gen(_submit_valid, _submit, streaming=True), True),
    ("parameter-server", JC, "GetJobStatus", "uu", Gen(_plain(
        lambda t, r: jc_pb.JobRef(job_id=t.job_id)), _by_job(lambda j: jc_pb.JobRef(job_id=j))),
     False),
    ("parameter-server", JC, "ListJobs", "uu", Gen(
        _plain(lambda t, r: jc_pb.ListJobsRequest()), _empty_request), False),
    ("parameter-server", JC, "Cancel", "uu", Gen(_plain(
        lambda t, r: jc_pb.JobRef(job_id=t.job_id)),
        _by_job(lambda j: jc_pb.JobRef(job_id=j), real=0.4)), True),
    ("parameter-server", JC, "FetchCheckpoint", "us", Gen(_plain(
        lambda t, r: jc_pb.CheckpointRequest(job_id=t.job_id, latest=True)), _fetch_checkpoint),
     False),
    ("parameter-server", "grpc.health.v1.Health", "Check", "uu", Gen(
        _plain(lambda t, r: health_pb2.HealthCheckRequest()), _health), False),
    ("ps-shard", PS, "Exchange", "ss",
     Gen(_exchange_valid(1), _exchange_structured(1), streaming=True), True),
    ("ps-shard", PS, "Snapshot", "us", Gen(_plain(
        lambda t, r: ps_pb.SnapshotRequest(job_id=t.job_id, shard=1)), _snapshot(1)), False),
    ("replay", "drlbox.v1.ReplayServer", "Insert", "su",
     Gen(_insert_valid, _insert, streaming=True), True),
    ("replay", "drlbox.v1.ReplayServer", "Sample", "us", Gen(_plain(
        lambda t, r: rp_pb.SampleRequest(job_id=t.job_id, batch_size=int(r.integers(1, 33)))),
        _sample), False),
    ("replay", "drlbox.v1.ReplayServer", "UpdatePriorities", "uu", Gen(_plain(
        lambda t, r: rp_pb.PriorityUpdate(job_id=t.job_id, keys=[0, 1], priorities=[1.0, 2.0])),
        _update_priorities), True),
    ("evaluator", "drlbox.v1.RoleStatus", "Get", "uu", Gen(
        _plain(lambda t, r: st_pb.RoleStatusRequest()), _empty_request), False),
]
