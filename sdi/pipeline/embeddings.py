"""Embedding extraction (docs/method.md section 3): one projected CLIP embedding per image.

For every image: ``CLIPImageProcessor`` -> ``CLIPVisionModelWithProjection(...).image_embeds``
(not normalised) -> :class:`~sdi.models.projector.SemanticProjector` -> one d_cross vector.

The table (Parquet) has one row per image::

    image_id        string
    label           int64
    class_name      string
    clip_embedding  fixed_size_list<float32>[d_clip]   raw CLIP image_embeds
    embedding       fixed_size_list<float32>[d_cross]  projector output (what SEI models)
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from sdi.io.artifacts import vector_array, write_parquet
from sdi.io.images import load_rgb
from sdi.io.schemas import MANIFEST_COLUMNS, require_columns
from sdi.models.devices import resolve_device
from sdi.models.loaders import count_image_encodings, load_clip_vision
from sdi.models.projector import SemanticProjector

logger = logging.getLogger(__name__)

VECTOR_COLUMNS = ("clip_embedding", "embedding")


class ClipPixelDataset(Dataset):
    """Image paths -> CLIP ``pixel_values`` [3, H, W] float32 (``CLIPImageProcessor``)."""

    def __init__(self, paths: list[str], processor):
        self.paths = list(paths)
        self.processor = processor

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = load_rgb(self.paths[index])
        return self.processor(images=image, return_tensors="pt").pixel_values[0]


@torch.no_grad()
def clip_image_embeddings(paths: list[str], model, processor, *, batch_size: int = 32, num_workers: int = 0,
                          desc: str = "CLIP image embeddings") -> torch.Tensor:
    """CLIP ``image_embeds`` of images, in order: [N, d_clip] float32 on the CPU, not normalised.

    ``model`` is a ``CLIPVisionModelWithProjection`` (in eval mode) on its device.
    """
    loader = DataLoader(ClipPixelDataset(paths, processor), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers)
    param = next(model.parameters())
    chunks = []
    for pixels in tqdm(loader, desc=desc, unit="batch", mininterval=2):
        count_image_encodings(len(pixels))
        out = model(pixel_values=pixels.to(device=param.device, dtype=param.dtype))
        chunks.append(out.image_embeds.float().cpu())
    if not chunks:
        return torch.empty(0, model.config.projection_dim)
    return torch.cat(chunks)


class _PreprocessedFiles(Dataset):
    """Image paths -> preprocessed pixels [3, H, W] float32 of any CLIP (a ``ClipEmbedder.preprocessor()``)."""

    def __init__(self, paths: list[str], preprocess):
        self.paths, self.preprocess = list(paths), preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.preprocess(load_rgb(self.paths[index]))


def embed_image_files(paths: list[str], clip, *, batch_size: int = 32, num_workers: int = 0,
                      desc: str = "CLIP image embeddings") -> np.ndarray:
    """Projected image embeddings of a :class:`sdi.models.loaders.ClipEmbedder` (transformers or open_clip):
    [N, D] float32, not normalised, in the order of paths."""
    loader = DataLoader(_PreprocessedFiles(paths, clip.preprocessor()), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers)
    chunks = [clip.image_embeds(pixels).cpu() for pixels in tqdm(loader, desc=desc, unit="batch", mininterval=2)]
    return torch.cat(chunks).numpy() if chunks else np.zeros((0, clip.projection_dim), np.float32)


def check_loaded_projector(projector: SemanticProjector, clip_model, projector_dir, clip_path) -> None:
    d_clip = clip_model.config.projection_dim
    if projector.config.d_clip != d_clip:
        raise ValueError(f"{projector_dir}/config.json: d_clip={projector.config.d_clip} but the CLIP model in "
                         f"{clip_path} has projection_dim={d_clip}; use the CLIP folder the projector was trained with")


@torch.no_grad()
def extract_embeddings(manifest: pd.DataFrame, projector_dir: str | Path, clip_path: str | Path, *,
                       batch_size: int = 32, device: str = "auto", num_workers: int = 0) -> pd.DataFrame:
    """One row per manifest image: image_id, label, class_name, clip_embedding, embedding.

    Vectors are float32 numpy arrays (``clip_embedding`` [d_clip], ``embedding`` [d_cross]);
    :func:`write_embeddings` stores them as fixed-size lists. Models are loaded once and
    run in fp32 in batches of ``batch_size``.
    """
    require_columns(manifest, MANIFEST_COLUMNS, "manifest",
                    "pass a split manifest (results/<dataset>/split/train.parquet)")
    t_start = time.monotonic()
    dev = resolve_device(device)
    clip_model, processor = load_clip_vision(clip_path, device=dev)
    projector = SemanticProjector.from_pretrained(projector_dir).to(dev).eval()
    check_loaded_projector(projector, clip_model, projector_dir, clip_path)

    clip = clip_image_embeddings(manifest["path"].tolist(), clip_model, processor, batch_size=batch_size,
                                 num_workers=num_workers)
    projected = torch.cat([projector(chunk.to(dev)).float().cpu() for chunk in clip.split(batch_size)]
                          ) if len(clip) else torch.empty(0, projector.config.d_cross)
    table = pd.DataFrame({
        "image_id": manifest["image_id"].astype(str).to_numpy(),
        "label": manifest["label"].astype("int64").to_numpy(),
        "class_name": manifest["class_name"].astype(str).to_numpy(),
    })
    table["clip_embedding"] = list(clip.numpy().astype(np.float32))
    table["embedding"] = list(projected.numpy().astype(np.float32))
    elapsed = time.monotonic() - t_start
    logger.info("embeddings done: %d images in %.1f s (%.1f images/s), d_clip=%d, d_cross=%d", len(table), elapsed,
                len(table) / max(elapsed, 1e-9), clip.shape[1], projected.shape[1])
    return table


def embeddings_table(df: pd.DataFrame) -> pa.Table:
    """The Arrow table of :func:`write_embeddings` (fixed-size float32 vector columns)."""
    columns = {
        "image_id": pa.array(df["image_id"].astype(str).tolist(), type=pa.string()),
        "label": pa.array(df["label"].astype("int64").to_numpy(), type=pa.int64()),
        "class_name": pa.array(df["class_name"].astype(str).tolist(), type=pa.string()),
    }
    if len(df) == 0:
        raise ValueError("embeddings: the table is empty; there is nothing to write")
    columns.update({c: vector_array(df[c].tolist(), c) for c in VECTOR_COLUMNS})
    return pa.table(columns)


def write_embeddings(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write the embeddings table to Parquet atomically (temp name, then rename)."""
    write_parquet(embeddings_table(df), path)


def read_embeddings(path: str | os.PathLike, column: str = "embedding") -> tuple[pd.DataFrame, np.ndarray]:
    """(table, matrix): the table as written, and ``column`` as a float32 [N, d] matrix."""
    table = pq.read_table(path)
    if column not in table.column_names:
        raise ValueError(f"{path}: no column {column!r} (has {table.column_names}); "
                         "is it an embeddings file written by sdi.pipeline.embeddings.write_embeddings?")
    vectors = table.column(column).combine_chunks()
    if not pa.types.is_fixed_size_list(vectors.type):
        raise ValueError(f"{path}: column {column!r} has type {vectors.type}, expected a fixed-size float32 list")
    matrix = vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    matrix = matrix.reshape(len(vectors), vectors.type.list_size)
    return table.to_pandas(), matrix


def embed_split_images(split_dir: str | Path, clip_path: str | Path, out_path: str | Path, *,
                       filter_clip: dict | None = None, batch_size: int = 32, device: str = "auto",
                       dtype: str = "fp32", num_workers: int = 0) -> pd.DataFrame:
    """CLIP image embeddings of every real image of a split (train, val, test), with the filter's CLIP
    (``filter_clip``, else the CLIPModel of ``clip_path``), as the filter embeds the generated ones:
    ``out_path`` gets ``image_id, split, path, label, image_embedding`` (float32 [D], not normalised), one row per
    image; the linear probe (:mod:`sdi.training.linear_probe`) reads it. Each image is encoded once."""
    from sdi.models.devices import resolve_dtype
    from sdi.models.loaders import image_encodings, load_filter_clip
    from sdi.pipeline.filtering import write_image_embeddings

    t_start, encoded_before = time.monotonic(), image_encodings()
    tables = []
    for name in ("train", "val", "test"):
        table = pd.read_parquet(Path(split_dir) / f"{name}.parquet")
        require_columns(table, ["image_id", "path", "label"], f"{split_dir}/{name}.parquet", "rebuild the split")
        tables.append(table[["image_id", "path", "label"]].astype({"image_id": str, "path": str}).assign(split=name))
    rows = pd.concat(tables, ignore_index=True)[["image_id", "split", "path", "label"]]
    dev = resolve_device(device)
    clip = load_filter_clip(clip_path, filter_clip, device=dev, dtype=resolve_dtype(dtype, dev))
    matrix = embed_image_files(rows.path.tolist(), clip, batch_size=batch_size, num_workers=num_workers,
                               desc=f"CLIP real images ({clip.name})")
    write_image_embeddings(rows, matrix, out_path)
    logger.info("%d real images (%s) embedded with %s in %.1f s: %d CLIP image encodings -> %s", len(rows),
                ", ".join(f"{n} {s}" for s, n in rows.split.value_counts(sort=False).items()), clip.name,
                time.monotonic() - t_start, image_encodings() - encoded_before, out_path)
    return rows
