"""Artifacts on disk: files written atomically, Parquet tables with fixed-size vector columns.

Every artifact is written to a temporary name in its folder and renamed into place, so a
killed job never leaves a half-written file that a later run would trust.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call write(tmp) on a temporary sibling of path, then rename it to path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_parquet(table: pd.DataFrame | pa.Table, path: str | os.PathLike) -> Path:
    """Write a DataFrame (without its index) or an Arrow table to Parquet atomically."""
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    return atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def vector_array(vectors: Sequence | pd.Series, name: str = "vector") -> pa.Array:
    """Equal-length 1-D vectors -> fixed_size_list<float32>[d]; all-None -> a null list column."""
    values = list(vectors)
    if not values or all(v is None for v in values):
        return pa.nulls(len(values), type=pa.list_(pa.float32()))
    try:
        matrix = np.stack([np.asarray(v, dtype=np.float32) for v in values])
    except (ValueError, TypeError) as exc:
        raise ValueError(f"column {name!r}: every row needs a 1-D vector of one length ({exc})") from None
    if matrix.ndim != 2:
        raise ValueError(f"column {name!r}: expected 1-D vectors, got shape {matrix.shape[1:]} per row")
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1), type=pa.float32()), matrix.shape[1])
