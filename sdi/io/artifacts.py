"""Artifacts on disk: files written atomically, Parquet tables with fixed-size vector columns.

Every artifact is written to a temporary name in its folder and renamed into place, so a
killed job never leaves a half-written file that a later run would trust.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from sdi.io.lazy import lazy_import

np = lazy_import("numpy")  # loaded on first use: planning imports this module
pd = lazy_import("pandas")
pa = lazy_import("pyarrow")

TMP_SUFFIX = ".tmp"  # every temporary file ends so, and no finished artifact does
_TMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<host>[^.]+)-(?P<pid>\d+)\.tmp$")


def _host() -> str:
    return socket.gethostname().replace(".", "_") or "localhost"


def temp_sibling(path: str | os.PathLike) -> Path:
    """The temporary name under which ``path`` is written: ``.<name>.<host>-<pid>.tmp``.

    Hidden, and ending in ``.tmp`` rather than the artifact's suffix, so no glob of finished
    outputs (``*.parquet``, ``*.png``) matches it; host and pid say whose it is, so a later run
    can remove what a killed process left behind (:func:`remove_stale_temps`).
    """
    path = Path(path)
    return path.with_name(f".{path.name}.{_host()}-{os.getpid()}{TMP_SUFFIX}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temps(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Remove the temporary files in ``folder`` (of the artifact ``name``, or all) that a process
    of this host left behind when it was killed; returns them. Temporary files of live
    processes, and of other hosts (whose processes cannot be checked from here), are kept."""
    folder, host, removed = Path(folder), _host(), []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        m = _TMP_NAME.match(entry.name)
        if not m or (name is not None and m["name"] != name) or m["host"] != host or _alive(int(m["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object], clean: bool = True) -> Path:
    """Call write(tmp) on a temporary sibling of path (:func:`temp_sibling`), then rename it
    to path. Temporary files of this artifact left by killed processes are removed first
    (``clean``; callers that write many files to one folder clean it once instead)."""
    from sdi.io.faults import kill_point

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if clean:
        remove_stale_temps(path.parent, path.name)
    tmp = temp_sibling(path)
    try:
        write(tmp)
        if path.suffix == ".png":
            kill_point("png_write")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Fill a folder atomically: ``with atomic_dir(path) as tmp:`` yields an empty temporary
    sibling folder (:func:`temp_sibling`); when the block ends without an exception it replaces
    ``path`` by two renames (an older ``path`` is moved aside first, then removed), so ``path``
    is never half-written nor a mix of old and new; on an exception the temporary folder is
    removed and ``path`` is left as it was. Temporary folders of this artifact left by killed
    processes are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    old_name = f"{path.name}.old"
    for name in (path.name, old_name):
        remove_stale_temps(path.parent, name)
    tmp = temp_sibling(path)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        old = None
        if path.exists() or path.is_symlink():
            old = temp_sibling(path.with_name(old_name))
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_parquet(table: pd.DataFrame | pa.Table, path: str | os.PathLike) -> Path:
    """Write a DataFrame (without its index) or an Arrow table to Parquet atomically."""
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    import pyarrow.parquet as pq

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
