"""Provenance of generated images: the file layout and PNG metadata that let a shard resume
and any image be regenerated bit for bit (the models' id: :func:`sdi.models.generator.model_id`),
and the checksums that let a later stage trust them (:func:`verify_generated`).

A shard manifest records each PNG's ``sha256`` and ``file_size`` as written. A PNG changed after its
shard finished (truncated by a full disk, edited in place) no longer matches, and Snakemake cannot
see it: the shard manifest, the rule's declared output, is still there and up to date. The stages
that read generated images check them first; a bad one is removed with the manifests that list it,
so the next ``snakemake`` call reruns those shard jobs, which regenerate just the images that are
gone (a shard resumes per image).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, PngImagePlugin

from sdi.io.artifacts import atomic_write

# Provenance fields that describe how an image was made but not what it should look like:
# a stored image whose other fields match the current settings is kept on resume.
_NOT_COMPARED = ("batch", "versions")
PNG_KEY = "sdi"
CHECKSUM_COLUMNS = ("sha256", "file_size")  # of the PNG's bytes, in the shard manifest, not in the PNG itself


class GeneratedImageError(ValueError):
    """Generated images listed by a manifest are missing or differ from what was written."""


def class_folder(label: int, class_name: str) -> str:
    """``7, 'digit seven'`` -> ``0007_digit_seven`` (anything but letters, digits, ``._-`` -> ``_``)."""
    return f"{int(label):04d}_{re.sub(r'[^A-Za-z0-9._-]+', '_', str(class_name))}"


def image_relpath(label: int, class_name: str, sample_id: str) -> str:
    """Path of an image below the generation folder: ``images/{label:04d}_{class}/{sample_id}.png``."""
    return f"images/{class_folder(label, class_name)}/{sample_id}.png"


def vector_sha256(vector) -> str:
    """SHA-256 of a conditioning vector's little-endian float32 bytes; '' for no vector."""
    if vector is None:
        return ""
    return hashlib.sha256(np.ascontiguousarray(vector, dtype="<f4").tobytes()).hexdigest()


def _versions() -> str:
    import diffusers
    import torch  # here, not at the top: the export checks images (verify_generated) without torch

    return f"torch {torch.__version__}, diffusers {diffusers.__version__}"


def save_png(image: Image.Image, path: str | Path, provenance: Mapping) -> Path:
    """Write image as PNG atomically (temp name in the same folder, then rename), with
    provenance as JSON in its ``sdi`` text chunk. Same pixels + provenance -> same bytes."""
    return write_png(image, path, provenance)[0]


def write_png(image: Image.Image, path: str | Path, provenance: Mapping) -> tuple[Path, str, int]:
    """:func:`save_png`, returning (path, sha256, size) of the bytes written (hashed from the temporary
    file before its rename, so they are the bytes that became ``path``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    info.add_text(PNG_KEY, json.dumps(dict(provenance), sort_keys=True))
    digest: list = []

    def write(tmp: Path) -> None:
        image.save(tmp, format="PNG", pnginfo=info)
        data = tmp.read_bytes()
        digest.extend((hashlib.sha256(data).hexdigest(), len(data)))

    atomic_write(path, write, clean=False)
    return path, digest[0], digest[1]


def _decode(data: bytes) -> dict | None:
    """The provenance of PNG bytes ({} if none), or None if they do not decode fully."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()  # chunk CRCs up to IEND
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # full pixel decode: verify() misses truncated image data
            text = getattr(img, "text", {}).get(PNG_KEY)  # PNG text chunks; other formats have none
        return json.loads(text) if text else {}
    except Exception:  # noqa: BLE001 - any failure means the file cannot be trusted
        return None


def read_provenance(path: str | Path) -> dict | None:
    """The provenance stored in a generated PNG, or None if the file is missing, does not
    decode fully (truncated, corrupt) or carries none."""
    return read_provenance_and_digest(path)[0]


def read_provenance_and_digest(path: str | Path) -> tuple[dict | None, str, int]:
    """(:func:`read_provenance`, sha256, size) of a PNG's bytes, read once; ('', 0) for a missing file."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None, "", 0
    return _decode(data) or None, hashlib.sha256(data).hexdigest(), len(data)


def image_problem(path: str | Path, sha256: str | None = None, size: int | None = None) -> str | None:
    """What is wrong with a generated image, or None: ``missing``, another content than the manifest's
    ``sha256`` (and ``size``), or, for a manifest without a checksum, bytes that do not decode fully."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return "missing"
    except OSError as err:
        return f"unreadable ({err.strerror or err})"
    if isinstance(sha256, str) and sha256:
        actual = hashlib.sha256(data).hexdigest()
        if actual == sha256:
            return None
        expected = f"{int(size)} bytes" if size is not None and not pd.isna(size) else "other bytes"
        return f"expected {expected} (sha256 {sha256[:12]}...), found {len(data)} bytes (sha256 {actual[:12]}...)"
    # A manifest written before the checksum columns: the bytes cannot be compared, so the image is
    # decoded in full instead. That costs one decode per image (only for such manifests), and it is what
    # the reader would fail on anyway, without naming the file.
    if _decode(data) is None:
        return f"{len(data)} bytes that do not decode as a full image (truncated or corrupt)"
    return None


def shard_manifest_of(image: str | Path, shard: int) -> Path:
    """The shard manifest that lists a generated image, by the layout: ``<variant>/images/<class>/<id>.png`` ->
    ``<variant>/shards/<shard>.parquet``."""
    return Path(image).parents[2] / "shards" / f"{int(shard)}.parquet"


def verify_generated(manifest: pd.DataFrame, *, what: str = "generation manifest",
                     error: type[Exception] = GeneratedImageError) -> None:
    """Check every image of a manifest (rows with ``path`` and, from shards written with checksums,
    :data:`CHECKSUM_COLUMNS`) against what generation wrote; raise ``error`` naming the bad ones.

    Before raising, the bad images and the shard manifests that list them are deleted (both are the
    workflow's outputs): each row's ``<variant>/shards/<shard>.parquet`` (:func:`shard_manifest_of`), where
    that file exists and lists the image. The next ``snakemake`` call then reruns those shards, which
    regenerate only the missing images.
    An image that no such manifest lists is not known to be the workflow's and is left as it is.
    """
    rows = manifest.drop_duplicates("path")
    paths = rows.path.astype(str).tolist()
    sums = rows.sha256.tolist() if "sha256" in rows else [None] * len(rows)
    sizes = rows.file_size.tolist() if "file_size" in rows else [None] * len(rows)
    with ThreadPoolExecutor(min(16, os.cpu_count() or 1)) as pool:  # hashing and decoding release the GIL
        problems = {p: e for p, e in zip(paths, pool.map(image_problem, paths, sums, sizes), strict=True) if e}
    if not problems:
        return
    shard_files = {}
    if "shard" in rows:
        for p, shard in zip(paths, rows["shard"], strict=True):
            candidate = shard_manifest_of(p, shard)
            if p in problems and candidate not in shard_files and candidate.is_file():
                shard_files[candidate] = pd.read_parquet(candidate, columns=["path"])
    stale = {str(f): set(table.path.astype(str)) & set(problems) for f, table in shard_files.items()}
    stale = {f: listed for f, listed in sorted(stale.items()) if listed}
    removed = sorted(set().union(*stale.values()))
    for p in removed:
        Path(p).unlink(missing_ok=True)
    for f in stale:
        Path(f).unlink(missing_ok=True)
    listed = "; ".join(f"{p}: {e}" for p, e in list(problems.items())[:20])
    more = f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""
    if stale and len(removed) == len(problems):
        fix = (f"removed them and the shard manifest(s) that list them ({', '.join(stale)}): rerun snakemake to "
               "regenerate them (their shards resume: only these images are generated again)")
    else:
        kept = [p for p in problems if p not in removed]
        fix = (f"{len(kept)} of them are listed by no shard manifest found here and were left as they are "
               f"(e.g. {kept[0]})" + (f"; removed the others and the shard manifest(s) that list them "
                                       f"({', '.join(stale)})" if stale else "")
               + ": delete the shards/<i>.parquet of the generation that wrote them and rerun snakemake to "
               "regenerate them")
    raise error(f"{what}: {len(problems)} generated image(s) changed or missing since they were written: "
                f"{listed}{more}; {fix}")


def _matches(stored: dict | None, expected: Mapping) -> bool:
    if stored is None:
        return False
    strip = lambda d: {k: v for k, v in d.items() if k not in _NOT_COMPARED}  # noqa: E731
    return strip(stored) == strip(expected)
