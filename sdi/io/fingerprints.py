"""Cheap fingerprints of input folders, so that a job reruns exactly when its inputs change.

A folder's own mtime changes only when an entry directly inside it is added or removed,
not when a file deeper down is added or replaced. So a rule takes a *listing* of the
folder's files (relative path, size, mtime_ns) as its input instead of the folder. The
listing is written at planning time, and only when its content changes: an unchanged tree
leaves the listing's mtime alone and Snakemake has nothing to do.

A listing written where none existed (a fresh checkout, a deleted .snakemake/) gets the
mtime of the newest file or folder it covers, not the current time: a job that already
ran on that tree is not rerun, while one that ran before the tree last changed is.

No heavy imports: this runs while Snakemake plans the workflow.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

HEADER = "path\tsize\tmtime_ns\n"


class ListingError(ValueError):
    """A folder holds a file that cannot be listed (a name that is not valid UTF-8), or cannot be read."""


def _unreadable(path: str, exc: OSError) -> ListingError:
    return ListingError(f"cannot read {escaped(path)} ({exc.strerror or type(exc).__name__}); make it readable by "
                        f"this user (e.g. chmod -R u+rX {escaped(path)}) or move it out of the folder")


def escaped(path: str) -> str:
    """A path as printable text: bytes that are not UTF-8 as ``\\xNN`` (``caf\\xe9.jpg``)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def require_utf8(path: str, root: str | os.PathLike) -> str:
    """path itself, or a ListingError naming it (escaped) if its name is not valid UTF-8.

    Linux allows any bytes in a file name; Python gives the undecodable ones back as lone
    surrogates, which no text file or Parquet table can store. The file is named, not renamed:
    the user's folder is never modified.
    """
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise ListingError(
            f"{escaped(os.path.join(os.fspath(root), path))}: file name is not valid UTF-8 (the \\x.. "
            "bytes); sdi stores paths as UTF-8 text, so rename it (e.g. with convmv -f latin1 -t utf8) "
            "or move it out of the folder") from None
    return path


@dataclass
class Listing:
    """Files as (path, size, mtime_ns), sorted by path; newest_ns: the newest mtime of those
    files and of the folders walked (a removed file shows in its folder's mtime)."""

    entries: list[tuple[str, int, int]] = field(default_factory=list)
    newest_ns: int = 0

    def __add__(self, other: Listing) -> Listing:
        return Listing(sorted(self.entries + other.entries), max(self.newest_ns, other.newest_ns))

    def prefixed(self, prefix: str) -> Listing:
        return Listing([(f"{prefix}{p}", s, m) for p, s, m in self.entries], self.newest_ns)

    def text(self) -> str:
        """Tab-separated, with a header: one line per file."""
        return HEADER + "".join(f"{p}\t{size}\t{mtime}\n" for p, size, mtime in self.entries)


def list_files(root: str | os.PathLike, skip_hidden: bool = True) -> Listing:
    """Every file under root (recursively), paths relative to root. Symlinks are followed
    and each real folder is visited once; names starting with '.' are skipped when
    skip_hidden. A root that is a file gives one entry named after it."""
    root = Path(root)
    try:
        if root.is_file():
            st = root.stat()
            return Listing([(root.name, st.st_size, st.st_mtime_ns)], st.st_mtime_ns)
    except PermissionError as exc:
        raise _unreadable(os.fspath(root), exc) from None
    entries: list[tuple[str, int, int]] = []
    newest = 0
    seen: set[tuple[int, int]] = set()
    stack = [("", os.fspath(root))]
    while stack:
        prefix, folder = stack.pop()
        try:
            st = os.stat(folder)
            it = os.scandir(folder)
        except PermissionError as exc:
            raise _unreadable(folder, exc) from None
        if (st.st_dev, st.st_ino) in seen:
            it.close()
            continue
        seen.add((st.st_dev, st.st_ino))
        newest = max(newest, st.st_mtime_ns)
        with it:
            for entry in it:
                if skip_hidden and entry.name.startswith("."):
                    continue
                rel = require_utf8(f"{prefix}{entry.name}", root)
                try:
                    if entry.is_dir():
                        stack.append((rel + "/", entry.path))
                    elif entry.is_file():
                        st = entry.stat()
                        entries.append((rel, st.st_size, st.st_mtime_ns))
                        newest = max(newest, st.st_mtime_ns)
                except FileNotFoundError:  # a broken symlink or a file removed while listing
                    entries.append((rel, -1, 0))
    return Listing(sorted(entries), newest)


def stat_files(paths: Iterable[str], base: str | os.PathLike = ".") -> Listing:
    """Listed files, by the path as given (relative to base unless absolute); a missing
    file gets size -1."""
    base = Path(base)
    entries = []
    for p in paths:
        try:
            st = os.stat(base / p)
            entries.append((str(p), st.st_size, st.st_mtime_ns))
        except OSError:
            entries.append((str(p), -1, 0))
    return Listing(sorted(entries), max((m for _, _, m in entries), default=0))


def write_if_changed(path: str | os.PathLike, text: str, mtime_ns: int | None = None) -> bool:
    """Write text to path (atomically) only if the file does not hold it already; True if
    written. An unchanged file keeps its mtime, so the jobs that take it as input are not
    rerun. mtime_ns: the mtime to give a file written where none existed."""
    from sdi.io.artifacts import atomic_write

    path = Path(path)
    existed = path.exists()
    if existed:
        try:
            if path.read_text() == text:
                return False
        except UnicodeDecodeError:
            pass
    atomic_write(path, lambda tmp: tmp.write_text(text))
    if not existed and mtime_ns:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return True


def write_listing(path: str | os.PathLike, listing: Listing) -> bool:
    """write_if_changed for a Listing: a new listing file carries the tree's newest mtime."""
    return write_if_changed(path, listing.text(), mtime_ns=listing.newest_ns)
