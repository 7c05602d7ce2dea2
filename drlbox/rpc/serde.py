"""Conversion between NumPy arrays and protobuf messages, and cutting payloads into chunks.

Arrays travel as raw bytes with their dtype and shape, so a round trip is exact. Payloads of any
size are cut into chunks well under gRPC's message limit, so no model is ever too large to move.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

from drlbox.rpc.generated import tensor_pb2

CHUNK_BYTES = 1 << 20
# Only plain numeric dtypes cross the wire; anything else is refused when decoding.
_WIRE_DTYPES = frozenset(
    ["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16",
     "uint32", "uint64", "bool"])


def array_to_proto(array: np.ndarray, name: str = "") -> tensor_pb2.Tensor:
    """One array as a Tensor message (little-endian raw bytes)."""
    array = np.asarray(array)
    if array.dtype.name not in _WIRE_DTYPES:
        raise ValueError(f"cannot send an array of dtype {array.dtype} ({name or 'unnamed'}); "
                         f"use one of {sorted(_WIRE_DTYPES)}")
    array = array.astype(array.dtype.newbyteorder("<"), copy=False)
    return tensor_pb2.Tensor(name=name, dtype=array.dtype.name, shape=array.shape,
                             data=array.tobytes())


def proto_to_array(tensor: tensor_pb2.Tensor) -> np.ndarray:
    """Decode a Tensor message; raises ValueError when it is malformed."""
    if tensor.dtype not in _WIRE_DTYPES:
        raise ValueError(f"tensor {tensor.name!r} has unsupported dtype {tensor.dtype!r}")
    dtype = np.dtype(tensor.dtype).newbyteorder("<")
    shape = tuple(tensor.shape)
    if any(dim < 0 for dim in shape):
        raise ValueError(f"tensor {tensor.name!r} has a negative dimension in {shape}")
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if expected != len(tensor.data):
        raise ValueError(f"tensor {tensor.name!r}: shape {shape} of {tensor.dtype} needs "
                         f"{expected} bytes, got {len(tensor.data)}")
    return np.frombuffer(tensor.data, dtype=dtype).reshape(shape)


def arrays_to_proto(arrays: Sequence[np.ndarray]) -> tensor_pb2.TensorList:
    """An ordered list of arrays (weights or gradients)."""
    return tensor_pb2.TensorList(tensors=[array_to_proto(a) for a in arrays])


def proto_to_arrays(tensors: tensor_pb2.TensorList) -> list[np.ndarray]:
    """Inverse of `arrays_to_proto`."""
    return [proto_to_array(t) for t in tensors.tensors]


def dict_to_proto(arrays: Mapping[str, np.ndarray]) -> tensor_pb2.TensorList:
    """Named arrays (one rollout list) as a TensorList."""
    return tensor_pb2.TensorList(tensors=[array_to_proto(a, k) for k, a in arrays.items()])


def proto_to_dict(tensors: tensor_pb2.TensorList) -> dict[str, np.ndarray]:
    """Inverse of `dict_to_proto`."""
    return {t.name: proto_to_array(t) for t in tensors.tensors}


def encode_arrays(arrays: Sequence[np.ndarray]) -> bytes:
    """Arrays to the bytes that travel in chunks."""
    return arrays_to_proto(arrays).SerializeToString()


def decode_arrays(data: bytes) -> list[np.ndarray]:
    """Inverse of `encode_arrays`; raises ValueError on malformed bytes."""
    message = tensor_pb2.TensorList()
    try:
        message.ParseFromString(data)
    except Exception as err:  # protobuf raises its own DecodeError
        raise ValueError(f"malformed tensor payload: {err}") from err
    return proto_to_arrays(message)


def encode_rollouts(lists: Sequence[Mapping[str, np.ndarray]],
                    keys: Sequence[int] = (), weights: Sequence[float] = ()) -> bytes:
    """Rollout lists (with optional replay keys and importance weights) to bytes."""
    batch = tensor_pb2.RolloutBatch(lists=[dict_to_proto(r) for r in lists], keys=list(keys),
                                    weights=list(weights))
    return batch.SerializeToString()


def decode_rollouts(data: bytes) -> tuple[list[dict[str, np.ndarray]], np.ndarray, np.ndarray]:
    """Inverse of `encode_rollouts`: (lists, keys int64, weights float32)."""
    batch = tensor_pb2.RolloutBatch()
    try:
        batch.ParseFromString(data)
    except Exception as err:
        raise ValueError(f"malformed rollout payload: {err}") from err
    lists = [proto_to_dict(r) for r in batch.lists]
    return (lists, np.asarray(batch.keys, np.int64), np.asarray(batch.weights, np.float32))


def split_chunks(data: bytes, size: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Cut a payload into pieces of at most `size` bytes; always at least one piece."""
    view = memoryview(data)
    yield bytes(view[:size])
    for start in range(size, len(data), size):
        yield bytes(view[start:start + size])


def join_chunks(pieces: Iterable[bytes]) -> bytes:
    """Inverse of `split_chunks`."""
    return b"".join(pieces)
