"""The committed generated code matches protos/, and serde moves arrays and payloads exactly."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest

from drlbox.rpc import protogen, serde
from drlbox.rpc.generated import tensor_pb2

GENERATED = pathlib.Path(protogen.__file__).resolve().parent / "generated"


# --- generated code drift ------------------------------------------------------------------

@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    # Also proves generate() is safe in a process that imported TensorFlow (the test session
    # has): grpc_tools' in-process protoc used to crash such a process.
    import tensorflow  # noqa: F401

    pytest.importorskip("grpc_tools", reason="grpcio-tools (a dev dependency) regenerates code")
    out = tmp_path_factory.mktemp("generated")
    return out, protogen.generate(out)


def _stubs(directory):
    return sorted(p.name for p in directory.iterdir()
                  if p.is_file() and p.suffix in (".py", ".pyi") and p.name != "__init__.py")


def test_generate_covers_every_proto(regenerated):
    out, written = regenerated
    stems = sorted(p.stem for p in protogen.PROTO_DIR.glob("drlbox/v1/*.proto"))
    assert stems, "no .proto files found"
    for stem in stems:
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            assert (out / f"{stem}{suffix}") in written


def test_committed_generated_code_matches_protos(regenerated):
    out, _ = regenerated
    assert protogen.OUT_DIR == GENERATED
    fresh, committed = _stubs(out), _stubs(GENERATED)
    assert fresh, "protogen wrote nothing"
    assert fresh == committed, (
        f"generated files differ from the committed set: missing {set(fresh) - set(committed)}, "
        f"stale {set(committed) - set(fresh)}; run `make protos`")
    drifted = [name for name in fresh
               if (out / name).read_bytes() != (GENERATED / name).read_bytes()]
    assert not drifted, f"{drifted} drifted from protos/; run `make protos` and commit the result"
    assert (out / "__init__.py").read_bytes() == (GENERATED / "__init__.py").read_bytes()


def test_generated_modules_import_flat():
    for path in GENERATED.glob("*_pb2*.py"):
        text = path.read_text()
        assert "from drlbox.v1 import" not in text, path.name


# --- arrays --------------------------------------------------------------------------------

WIRE_DTYPES = ["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8",
               "uint16", "uint32", "uint64", "bool"]


def sample_array(dtype, shape=(3, 5), seed=0):
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if dtype.kind == "f":
        return (rng.standard_normal(shape) * 100).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


def assert_same(got, expected):
    assert got.dtype == expected.dtype
    assert got.shape == expected.shape
    assert got.tobytes() == expected.tobytes()


@pytest.mark.parametrize("dtype", WIRE_DTYPES)
@pytest.mark.parametrize("shape", [(3, 5), (), (0,), (2, 0, 3), (1, 1, 1, 7)],
                         ids=["2d", "0d", "empty", "empty3d", "4d"])
def test_array_round_trip_every_dtype_and_shape(dtype, shape):
    array = sample_array(dtype, shape)
    tensor = serde.array_to_proto(array, "x")
    assert tensor.dtype == dtype and tensor.name == "x" and tuple(tensor.shape) == shape
    # Through the wire format too, not just the in-memory message.
    wire = tensor_pb2.Tensor.FromString(tensor.SerializeToString())
    assert_same(serde.proto_to_array(wire), array)


def test_float_specials_and_extremes_round_trip_bitwise():
    special = np.array([np.nan, -np.nan, np.inf, -np.inf, -0.0, 0.0, 5e-324,
                        np.finfo(np.float64).max], np.float64)
    assert_same(serde.proto_to_array(serde.array_to_proto(special)), special)
    half = np.array([np.nan, -np.nan, np.inf, -np.inf, -0.0, 0.0, 6e-8, 65504.0], np.float16)
    assert_same(serde.proto_to_array(serde.array_to_proto(half)), half)
    edges = np.array([np.iinfo(np.int64).min, -1, 0, np.iinfo(np.int64).max], np.int64)
    assert_same(serde.proto_to_array(serde.array_to_proto(edges)), edges)
    top = np.array([0, np.iinfo(np.uint64).max], np.uint64)
    assert_same(serde.proto_to_array(serde.array_to_proto(top)), top)


def test_big_endian_and_non_contiguous_arrays_keep_their_values():
    big = np.arange(12, dtype=">i4").reshape(3, 4)
    got = serde.proto_to_array(serde.array_to_proto(big))
    assert got.dtype == np.dtype("<i4") and np.array_equal(got, big)
    strided = np.arange(40, dtype=np.float32).reshape(5, 8)[::2, 1::3]
    got = serde.proto_to_array(serde.array_to_proto(strided))
    assert np.array_equal(got, strided) and got.shape == strided.shape


def test_python_scalars_and_lists_are_accepted():
    assert_same(serde.proto_to_array(serde.array_to_proto(np.float32(2.5))),
                np.array(2.5, np.float32))
    got = serde.proto_to_array(serde.array_to_proto([[1, 2], [3, 4]]))
    assert got.shape == (2, 2) and got.tolist() == [[1, 2], [3, 4]]


@pytest.mark.parametrize("array", [np.array(["a", "b"]), np.array([1 + 2j]),
                                   np.array([object()], dtype=object),
                                   np.array(["2020-01-01"], dtype="datetime64[D]")],
                         ids=["str", "complex", "object", "datetime"])
def test_unsupported_dtypes_are_refused_when_encoding(array):
    with pytest.raises(ValueError, match="cannot send an array of dtype"):
        serde.array_to_proto(array, "bad")


def test_decode_refuses_byte_count_that_mismatches_shape():
    tensor = tensor_pb2.Tensor(name="w", dtype="float32", shape=[2, 3], data=b"\0" * 20)
    with pytest.raises(ValueError, match=r"needs 24 bytes, got 20"):
        serde.proto_to_array(tensor)
    too_long = tensor_pb2.Tensor(name="w", dtype="int16", shape=[2], data=b"\0" * 6)
    with pytest.raises(ValueError, match="'w'"):
        serde.proto_to_array(too_long)
    scalar = tensor_pb2.Tensor(dtype="float64", shape=[], data=b"")
    with pytest.raises(ValueError, match="needs 8 bytes"):
        serde.proto_to_array(scalar)
    empty = tensor_pb2.Tensor(dtype="float32", shape=[0, 4], data=b"\0")
    with pytest.raises(ValueError, match="needs 0 bytes, got 1"):
        serde.proto_to_array(empty)


def test_decode_refuses_unknown_dtype_and_negative_dims():
    with pytest.raises(ValueError, match="unsupported dtype"):
        serde.proto_to_array(tensor_pb2.Tensor(dtype="complex64", shape=[1], data=b"\0" * 8))
    with pytest.raises(ValueError, match="unsupported dtype"):
        serde.proto_to_array(tensor_pb2.Tensor(dtype="", shape=[], data=b""))
    with pytest.raises(ValueError, match="negative"):
        serde.proto_to_array(tensor_pb2.Tensor(dtype="uint8", shape=[-2, -3], data=b"\0" * 6))


def test_array_lists_and_named_dicts_round_trip():
    arrays = [sample_array(d, (2, 3), seed=i) for i, d in enumerate(WIRE_DTYPES)]
    decoded = serde.decode_arrays(serde.encode_arrays(arrays))
    assert len(decoded) == len(arrays)
    for got, expected in zip(decoded, arrays):
        assert_same(got, expected)
    assert serde.decode_arrays(serde.encode_arrays([])) == []

    named = {"obs": sample_array("float32", (4, 2)), "done": np.array([1], np.uint8),
             "scalar": np.array(3, np.int64)}
    back = serde.proto_to_dict(serde.dict_to_proto(named))
    assert list(back) == list(named)
    for key in named:
        assert_same(back[key], named[key])


def test_rollouts_round_trip_with_keys_and_weights():
    lists = [{"obs": sample_array("float32", (n + 1, 4), seed=n),
              "actions": sample_array("int64", (n,), seed=n),
              "terminated": np.array([n % 2], np.uint8)} for n in (0, 1, 5)]
    data = serde.encode_rollouts(lists, keys=[7, 2**40, 0], weights=[1.0, 0.5, 0.25])
    back, keys, weights = serde.decode_rollouts(data)
    assert keys.dtype == np.int64 and keys.tolist() == [7, 2**40, 0]
    assert weights.dtype == np.float32 and weights.tolist() == [1.0, 0.5, 0.25]
    assert len(back) == len(lists)
    for got, expected in zip(back, lists):
        assert list(got) == list(expected)
        for key in expected:
            assert_same(got[key], expected[key])
    empty, keys, weights = serde.decode_rollouts(serde.encode_rollouts([]))
    assert empty == [] and keys.shape == (0,) and weights.shape == (0,)


@pytest.mark.parametrize("decode", [serde.decode_arrays, serde.decode_rollouts])
def test_malformed_payloads_raise_value_error(decode):
    with pytest.raises(ValueError, match="malformed"):
        decode(b"\xff\xff\xff\xff")
    good = serde.encode_arrays([np.arange(1000, dtype=np.float32)])
    with pytest.raises(ValueError):
        decode(good[:-10] if decode is serde.decode_arrays
               else serde.encode_rollouts([{"x": np.arange(1000.0)}])[:-10])


# --- chunks --------------------------------------------------------------------------------

def test_empty_payload_is_one_empty_chunk():
    assert list(serde.split_chunks(b"")) == [b""]
    assert serde.join_chunks(serde.split_chunks(b"")) == b""
    assert serde.join_chunks([]) == b""


@pytest.mark.parametrize("length,pieces", [(1, 1), (9, 1), (10, 1), (11, 2), (20, 2), (21, 3),
                                           (30, 3), (100, 10)])
def test_split_chunks_sizes(length, pieces):
    data = bytes(range(256)) * (length // 256 + 1)
    data = data[:length]
    chunks = list(serde.split_chunks(data, size=10))
    assert len(chunks) == pieces
    assert all(len(c) == 10 for c in chunks[:-1])
    assert 0 < len(chunks[-1]) <= 10
    assert all(isinstance(c, bytes) for c in chunks)
    assert serde.join_chunks(chunks) == data


@pytest.mark.parametrize("multiple", [1, 2, 3])
def test_split_chunks_at_exact_multiples_of_default_size(multiple):
    data = np.random.default_rng(multiple).bytes(multiple * serde.CHUNK_BYTES)
    chunks = list(serde.split_chunks(data))
    assert [len(c) for c in chunks] == [serde.CHUNK_BYTES] * multiple
    assert serde.join_chunks(chunks) == data
    one_more = list(serde.split_chunks(data + b"!"))
    assert [len(c) for c in one_more] == [serde.CHUNK_BYTES] * multiple + [1]
    assert serde.join_chunks(one_more) == data + b"!"


def test_chunks_stay_well_under_grpc_limit():
    from drlbox.rpc.server import MAX_MESSAGE_BYTES

    assert serde.CHUNK_BYTES * 4 <= MAX_MESSAGE_BYTES
    assert serde.CHUNK_BYTES < 4 << 20   # even gRPC's default 4 MB limit is never hit


def test_join_accepts_generators_and_memoryviews():
    data = b"abcdefghij" * 7
    assert serde.join_chunks(c for c in serde.split_chunks(data, 3)) == data
    assert serde.join_chunks([memoryview(b"ab"), b"cd"]) == b"abcd"
