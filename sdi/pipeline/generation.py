"""Generation (docs/method.md section 5): Stable Diffusion images for sampled embeddings, by shard.

One generator (:class:`sdi.models.generator.ImageGenerator`: the loaded pipeline, per-image
seeds, batch sizing) is loaded per job and called on batches of samples. Which samples share
a batch changes nothing but floating point summation order; for bit-exact regeneration the
manifest records the batch each image was generated in
(:func:`sdi.pipeline.regenerate.regenerate_image` reruns that batch).

Each PNG carries its own provenance (the manifest row, as JSON in a ``sdi`` text chunk).
A rerun keeps an existing PNG only if it decodes fully and its provenance matches the
current settings; a missing, truncated or stale image is generated again. The manifest also
records each PNG's ``sha256`` and ``file_size`` as written, which the later stages check
(:func:`sdi.pipeline.provenance.verify_generated`).

Background threads turn the pipeline's float images into 8-bit pixels and PNG files, so
that encoding overlaps the next batch's denoising.

The samples table (one shard of ``samples.parquet``) has a row per image to generate:
``sample_id`` (str), ``label`` (int), ``class_name`` (str), ``sample_index`` (int),
``seed`` (int), ``shard`` (int, optional here) and ``vector`` (float32 list of length
d_cross, the sampled conditioning vector; null for the text-only baseline).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sdi import PROMPT
from sdi.io.artifacts import remove_stale_temps, write_parquet
from sdi.io.faults import kill_point
from sdi.io.schemas import GENERATION_INPUT_COLUMNS, SHARD_COLUMNS, require_columns
from sdi.models.generator import (
    MODES,
    TEXT_PROMPT,
    GenerationError,
    GenerationSettings,
    ImageGenerator,
    to_pil,
)
from sdi.pipeline.provenance import (
    CHECKSUM_COLUMNS,
    _matches,
    _versions,
    image_relpath,
    read_provenance_and_digest,
    vector_sha256,
    write_png,
)

logger = logging.getLogger(__name__)


def _check_samples(samples: pd.DataFrame, mode: str, d_cross: int | None = None,
                   what: str = "samples table") -> None:
    if mode not in MODES:
        raise GenerationError(f"generation mode {mode!r} must be one of {MODES}")
    need = [*GENERATION_INPUT_COLUMNS, "vector"] if mode == "sei" else list(GENERATION_INPUT_COLUMNS)
    require_columns(samples, need, what, f"it must have {', '.join(need)} (write it with the SEI sampling stage)",
                    GenerationError)
    dup = samples.sample_id[samples.sample_id.duplicated()].tolist()
    if dup:
        raise GenerationError(f"{what}: duplicate sample_id(s) {dup[:5]}; sample ids must be unique")
    bad = [s for s in samples.sample_id if not s or s.startswith(".") or "/" in s or os.sep in s]
    if bad:
        raise GenerationError(f"{what}: sample_id(s) {bad[:5]} cannot be file names (empty, leading '.', or '/')")
    if mode == "sei":
        for sid, vec in zip(samples.sample_id, samples.vector, strict=True):
            if vec is None or (np.ndim(vec) == 0 and pd.isna(vec)):
                raise GenerationError(f"{what}: sample {sid} has no vector; mode 'sei' needs one per sample "
                                      "(use mode 'text' for the text-only baseline)")
            arr = np.asarray(vec, dtype=np.float32)
            if d_cross is not None and arr.shape != (d_cross,):
                raise GenerationError(f"{what}: sample {sid} has a vector of shape {arr.shape}, the UNet needs "
                                      f"({d_cross},) (cross_attention_dim); were the samples made for another model?")
            if not np.isfinite(arr).all():
                raise GenerationError(f"{what}: sample {sid} has a vector with NaN/inf values")


def _save_array(image: np.ndarray, path: Path, provenance: Mapping) -> tuple[str, int]:
    """Encode and write one image; (sha256, size) of the bytes written."""
    return write_png(to_pil(image), path, provenance)[1:]


def _provenance(row, settings: GenerationSettings, made_by: Mapping, size: int) -> dict:
    """The manifest row of one sample, less path, shard, batch and versions (made_by: ImageGenerator.settings())."""
    mode = settings.mode
    return {
        "sample_id": str(row.sample_id), "label": int(row.label), "class_name": str(row.class_name),
        "sample_index": int(row.sample_index), "seed": int(row.seed), "mode": mode,
        "prompt": PROMPT if mode == "sei" else TEXT_PROMPT.format(class_name=row.class_name),
        "negative_prompt": settings.negative_prompt,
        "vector_sha256": vector_sha256(row.vector) if mode == "sei" else "",
        **made_by, "steps": int(settings.steps), "guidance_scale": float(settings.guidance_scale),
        "eta": float(settings.eta), "height": size, "width": size,
    }


def _existing(paths: list[Path], expected: list[dict]) -> tuple[list[dict | None], list[tuple[str, int] | None]]:
    """Each sample's provenance if its PNG is there, decodes fully and was made as ``expected``, else None;
    and for those kept, (sha256, size) of the bytes that were checked."""
    from tqdm import tqdm

    for folder in sorted({p.parent for p in paths}):  # what killed writers left behind
        remove_stale_temps(folder)
    with ThreadPoolExecutor(min(16, os.cpu_count() or 1)) as pool:  # decoding releases the GIL
        read = list(tqdm(pool.map(read_provenance_and_digest, paths), total=len(paths),
                         desc="checking existing images", unit="img", mininterval=2, disable=len(paths) == 0))
    stored = [r[0] for r in read]
    records = [s if _matches(s, e) else None for s, e in zip(stored, expected, strict=True)]
    digests = [r[1:] if rec is not None else None for r, rec in zip(read, records, strict=True)]
    todo = [i for i, r in enumerate(records) if r is None]
    logger.info("%d samples: %d already generated, %d to generate (%d existing file(s) with other settings)",
                len(paths), len(paths) - len(todo), len(todo), sum(1 for i in todo if stored[i] is not None))
    return records, digests


def _generate_missing(samples: pd.DataFrame, generator: ImageGenerator, settings: GenerationSettings,
                      records: list[dict | None], expected: list[dict], paths: list[Path], batch_size: int,
                      save_threads: int, digests: list[tuple[str, int] | None]) -> int:
    """Generate every sample whose record is None, fill in its record and its digest (sha256, size of the
    PNG written) and save its PNG; returns how many.

    Batches are fixed groups of the shard's samples (positions k*B .. k*B+B-1), whatever was
    generated before: a resumed shard regenerates each group that misses an image as a whole
    (saving only the missing ones), so its pixels and provenance are those of an uninterrupted run.
    A batch that runs out of GPU memory is halved and the groups are formed again.
    """
    from tqdm import tqdm

    versions, pending, generated = _versions(), [], 0
    groups = _batch_groups(len(samples), batch_size, [i for i, r in enumerate(records) if r is None])
    with ThreadPoolExecutor(max(1, save_threads)) as pool, \
            tqdm(total=sum(r is None for r in records), desc=f"generating ({settings.mode})", unit="img",
                 mininterval=2) as bar:
        while groups:
            idx = groups[0]
            batch = samples.iloc[idx]
            try:
                images = generator.generate(batch, settings, output_type="np")
            except torch.OutOfMemoryError:
                if batch_size == 1:
                    raise
                batch_size = max(1, batch_size // 2)
                logger.warning("out of memory with a batch of %d images; continuing with batches of %d "
                               "(set generation.batch_size to avoid the retry)", len(idx), batch_size)
                torch.cuda.empty_cache()
                groups = _batch_groups(len(samples), batch_size, [i for g in groups for i in g if records[i] is None])
                continue
            groups.pop(0)
            ids = batch.sample_id.astype(str).tolist()
            missing = [(i, image) for i, image in zip(idx, images, strict=True) if records[i] is None]
            for i, image in missing:
                records[i] = {**expected[i], "batch": ids, "versions": versions}
                pending.append((i, pool.submit(_save_array, image, paths[i], records[i])))
            while len(pending) > 2 * batch_size:  # about two batches wait for encoding at most
                i, future = pending.pop(0)
                digests[i] = future.result()
            bar.update(len(missing))
            generated += len(missing)
            kill_point("mid_shard")
        wait([f for _, f in pending])
        for i, future in pending:
            digests[i] = future.result()  # re-raises a failed write
    return generated


def generate_shard(samples: pd.DataFrame, generator: ImageGenerator, out_dir: str | Path,
                   settings: GenerationSettings = GenerationSettings(),  # noqa: B008 (a frozen dataclass)
                   *, batch_size: int | str = "auto", save_threads: int = 2) -> pd.DataFrame:
    """Generate the images of one shard of samples; resumable. Returns the shard's manifest.

    samples: rows of samples.parquet (see module docstring). Images are written to
    ``out_dir/images/{label:04d}_{class_name}/{sample_id}.png``. An existing PNG that decodes
    fully and whose embedded provenance matches the generator and settings is kept; every other
    sample is generated.
    batch_size and save_threads say how, not what (see :class:`GenerationSettings`): batch_size
    samples per pipeline call (an int, or ``'auto'``: see
    :func:`sdi.models.generator.auto_batch_size`; a batch that runs out of GPU memory is
    halved and retried), 8-bit conversion and PNG encoding in save_threads background threads.

    The manifest (one row per sample, in the order of samples) has :data:`SHARD_COLUMNS`.
    """
    mode = settings.mode
    _check_samples(samples, mode, generator.d_cross if mode == "sei" else None)
    if batch_size != "auto" and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise GenerationError(f"generation.batch_size: {batch_size!r} must be an integer >= 1 or 'auto'")
    size = int(settings.resolution or generator.native_resolution)
    out_dir = Path(out_dir)
    samples = samples.reset_index(drop=True)
    if "vector" not in samples.columns:
        samples = samples.assign(vector=None)
    made_by = generator.settings()
    expected = [_provenance(r, settings, made_by, size) for r in samples.itertuples(index=False)]
    paths = [out_dir / image_relpath(r.label, r.class_name, r.sample_id) for r in samples.itertuples(index=False)]
    records, digests = _existing(paths, expected)
    if any(r is None for r in records) and batch_size == "auto":
        batch_size = generator.auto_batch_size(size, size)
        logger.info("batch_size auto: %d on %s", batch_size, generator.device)
    t_start = time.monotonic()
    generated = _generate_missing(samples, generator, settings, records, expected, paths, batch_size, save_threads,
                                  digests)
    if generated:
        logger.info("generated %d images in %.1f s (%.2f img/s)", generated, time.monotonic() - t_start,
                    generated / max(time.monotonic() - t_start, 1e-9))
    columns = [c for c in SHARD_COLUMNS if c not in ("path", "shard", *CHECKSUM_COLUMNS)]  # the PNG's provenance
    manifest = pd.DataFrame(records, columns=columns)
    manifest.insert(5, "shard", samples["shard"].astype("int64") if "shard" in samples.columns else -1)
    manifest.insert(6, "path", [str(p) for p in paths])
    manifest.insert(7, "sha256", [d[0] for d in digests])
    manifest.insert(8, "file_size", pd.Series([d[1] for d in digests], dtype="int64"))
    return manifest[SHARD_COLUMNS]


def _batch_groups(n: int, batch_size: int, todo: list[int]) -> list[list[int]]:
    """The fixed batches (positions k*B .. k*B+B-1 of a shard's n samples) that hold a sample of todo."""
    wanted = {i // batch_size for i in todo}
    return [list(range(k * batch_size, min(n, (k + 1) * batch_size))) for k in sorted(wanted)]


def write_manifest(manifest: pd.DataFrame, path: str | Path) -> None:
    """Write a generation manifest to Parquet atomically, after checking its columns."""
    require_columns(manifest, SHARD_COLUMNS, f"{path}: manifest", "build it with generate_shard", GenerationError)
    write_parquet(manifest[SHARD_COLUMNS], path)
