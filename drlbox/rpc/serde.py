"""Conversion between NumPy arrays and protobuf messages, and cutting payloads into chunks.

Arrays travel as raw bytes with their dtype and shape, so a round trip is exact. Payloads of any
size are cut into chunks well under gRPC's message limit, so no model is ever too large to move.
Weight and gradient slices travel in exchange frames (`encode_frame`/`decode_frame`): protobuf
messages {header = 1, data = 2} whose data field is read in place, not copied.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

from drlbox.roles.interfaces import ShardState
from drlbox.rpc.generated import tensor_pb2

CHUNK_BYTES = 1 << 20
FRAME_DATA_BYTES = 8 << 20        # data per exchange frame (a Nature CNN's slice fits one)
FLOAT32 = np.dtype("<f4")
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


# --- exchange frames -------------------------------------------------------------------------
_HEADER_FIELD, _DATA_FIELD, _PAD_FIELD = 1, 2, 3
_LENGTH_DELIMITED = 2
# Data starts on a 16-byte boundary of the frame (and of the bytes object that holds it): NumPy
# and BLAS slow down several-fold on float32 arrays that are not even 4-byte aligned.
DATA_ALIGN = 16


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _read_varint(view: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(view) or shift > 63:
            raise ValueError("malformed frame: truncated or oversized varint")
        byte = view[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _field(number: int, payload: bytes | memoryview) -> list:
    return [_varint(number << 3 | _LENGTH_DELIMITED), _varint(len(payload)), payload]


def encode_frame(header: bytes | None, data: bytes | memoryview = b"") -> bytes:
    """One frame: a serialized header message (or none) and a piece of raw data, padded so
    that the data starts at a multiple of DATA_ALIGN bytes."""
    parts: list = [] if header is None else _field(_HEADER_FIELD, header)
    if not len(data):
        return b"".join(parts)
    prefix = _field(_DATA_FIELD, data)[:2]
    used = sum(len(p) for p in parts + prefix)
    if used % DATA_ALIGN:
        # A pad field costs two bytes (tag, length) plus its payload.
        parts = _field(_PAD_FIELD, bytes((-used - 2) % DATA_ALIGN)) + parts
    return b"".join(parts + prefix + [data])


def decode_frame(raw: bytes) -> tuple[bytes | None, memoryview]:
    """(serialized header or None, data view into `raw`) of a frame; ValueError if malformed.

    Reads the top-level fields of the protobuf encoding itself, so the data is never copied;
    unknown fields are skipped as protobuf does.
    """
    view = memoryview(raw)
    header: list = []
    data = view[0:0]
    pos = 0
    while pos < len(view):
        key, pos = _read_varint(view, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _read_varint(view, pos)
            continue
        if wire in (1, 5):
            pos += 8 if wire == 1 else 4
            continue
        if wire != _LENGTH_DELIMITED:
            raise ValueError(f"malformed frame: wire type {wire} in field {field}")
        length, pos = _read_varint(view, pos)
        if pos + length > len(view):
            raise ValueError("malformed frame: a field runs past the end of the frame")
        if field == _HEADER_FIELD:  # (a pad field, or any other, is skipped)
            header.append(view[pos:pos + length])
        elif field == _DATA_FIELD:
            data = view[pos:pos + length]
        pos += length
    if pos != len(view):
        raise ValueError("malformed frame: truncated field")
    return (b"".join(header) if header else None), data


def data_frames(header: bytes, data: memoryview | bytes) -> list[bytes]:
    """A header and data cut into frames of at most FRAME_DATA_BYTES (always one frame)."""
    view = memoryview(data).cast("B")
    frames = [encode_frame(header, view[:FRAME_DATA_BYTES])]
    for start in range(FRAME_DATA_BYTES, len(view), FRAME_DATA_BYTES):
        frames.append(encode_frame(None, view[start:start + FRAME_DATA_BYTES]))
    return frames


def float_bytes(*arrays: np.ndarray | None) -> memoryview:
    """The float32 arrays given (None skipped), back to back, as little-endian bytes."""
    present = [np.ascontiguousarray(a, FLOAT32) for a in arrays if a is not None]
    if len(present) == 1:
        return memoryview(present[0]).cast("B")
    return memoryview(np.concatenate(present) if present else np.zeros(0, FLOAT32)).cast("B")


def bfloat16() -> np.dtype:
    """NumPy's bfloat16 (from ml_dtypes, which TensorFlow installs; imported on first use)."""
    import ml_dtypes

    return np.dtype(ml_dtypes.bfloat16)


def to_bfloat16(values: np.ndarray) -> np.ndarray:
    """float32 values rounded to bfloat16: float32's range, 8 significant bits, half the bytes."""
    return values.astype(bfloat16())


class ValueReader:
    """Collects `count` values of `dtype` arriving as data pieces; no copy for a single piece."""

    def __init__(self, count: int, dtype: np.dtype = FLOAT32):
        self.count, self.dtype, self._pieces, self._bytes = count, np.dtype(dtype), [], 0

    def add(self, piece: memoryview) -> None:
        """Take the next piece; ValueError if it runs past `count` values."""
        self._bytes += len(piece)
        if self._bytes > self.count * self.dtype.itemsize:
            raise ValueError(f"more data than the {self.count} {self.dtype.name} values "
                             f"announced")
        if len(piece):
            self._pieces.append(piece)

    @property
    def done(self) -> bool:
        """Whether every value has arrived."""
        return self._bytes == self.count * self.dtype.itemsize

    def values(self) -> np.ndarray:
        """The values as one read-only vector."""
        if len(self._pieces) == 1:
            return np.frombuffer(self._pieces[0], self.dtype)
        out = np.empty(self.count, self.dtype)
        buffer, pos = memoryview(out).cast("B"), 0
        for piece in self._pieces:
            buffer[pos:pos + len(piece)] = piece
            pos += len(piece)
        return out


# --- shard states ----------------------------------------------------------------------------
def encode_state(state: ShardState) -> bytes:
    """A shard's state as the bytes of a named TensorList."""
    arrays = {"weights": state.weights, "version": np.int64(state.version),
              "aux_version": np.int64(state.aux_version), "updates": np.int64(state.updates)}
    if state.aux is not None:
        arrays["aux"] = state.aux
    for i, value in enumerate(state.optimizer or []):
        arrays[f"optimizer_{i}"] = value
    return dict_to_proto(arrays).SerializeToString()


def decode_state(data: bytes) -> ShardState:
    """Inverse of `encode_state`; ValueError when malformed."""
    message = tensor_pb2.TensorList()
    try:
        message.ParseFromString(data)
    except Exception as err:
        raise ValueError(f"malformed shard state: {err}") from err
    arrays = proto_to_dict(message)
    count = sum(name.startswith("optimizer_") for name in arrays)
    try:
        return ShardState(arrays["weights"], int(arrays["version"]), arrays.get("aux"),
                          int(arrays["aux_version"]), [arrays[f"optimizer_{i}"]
                                                       for i in range(count)] or None,
                          int(arrays["updates"]))
    except KeyError as err:
        raise ValueError(f"shard state lacks {err}") from None
