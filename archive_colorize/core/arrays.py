"""Arrays of any shape and dtype as one Arrow column: how pixels cross between stages.

No torch here: a stage that wants tensors wraps what `unpack_numpy` returns.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

# One array per row (null for a failed row). large_binary: a batch of full-resolution scans
# passes 2 GB.
ARRAY = pa.struct([("shape", pa.list_(pa.int32())), ("dtype", pa.string()), ("data", pa.large_binary())])


def pack(arrays: list[np.ndarray | None]) -> pa.Array:
    """One copy of the pixels, into one buffer (pa.array from Python bytes would make two)."""
    flat, sizes = [], []
    for a in arrays:  # each value padded to 64 bytes, so every view of it is aligned
        raw = np.empty(0, np.uint8) if a is None else np.ascontiguousarray(a).reshape(-1).view(np.uint8)
        pad = np.zeros(-raw.nbytes % 64, np.uint8)
        flat += [raw, pad]
        sizes.append(raw.nbytes + pad.nbytes)
    offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)
    data = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(),
        len(arrays),
        [None, pa.py_buffer(offsets), pa.py_buffer(np.concatenate(flat) if flat else np.empty(0, np.uint8))],
    )
    shape = pa.array([None if a is None else list(a.shape) for a in arrays], pa.list_(pa.int32()))
    dtype = pa.array([None if a is None else a.dtype.str for a in arrays], pa.string())
    mask = pa.array([a is None for a in arrays], pa.bool_())
    return pa.StructArray.from_arrays([shape, dtype, data], fields=list(ARRAY), mask=mask)


def unpack_numpy(column: pa.ChunkedArray | pa.Array) -> list[np.ndarray | None]:
    """Views of the Arrow buffers, no copy (read-only when they live in Ray's object store):
    for the full-resolution arrays."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    out: list[np.ndarray | None] = []
    for col in chunks:
        shape, dtype, data = col.flatten()  # children with the struct's own offset applied
        valid = col.is_valid().to_pylist()
        offsets = np.frombuffer(data.buffers()[1], np.int64)[data.offset : data.offset + len(data) + 1]
        buf = data.buffers()[2]
        for i, (ok, sh, dt) in enumerate(zip(valid, shape.to_pylist(), dtype.to_pylist())):
            if not ok:
                out.append(None)
                continue
            out.append(
                np.frombuffer(buf, np.dtype(dt), count=int(np.prod(sh)), offset=int(offsets[i])).reshape(sh)
            )
    return out
