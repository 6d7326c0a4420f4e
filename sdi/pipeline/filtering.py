"""CLIP filtering of generated images (docs/method.md section 6).

Each generated image is scored by ``100 x cos(image_embeds, text_embeds)`` of a ``CLIPModel``
(L2-normalised projected embeddings; the text is ``"a photo of a {class_name}"``), and per
class the top ``int(n x keep_ratio)`` images are kept. ``score="reference"`` reproduces the
reference code instead (docs/method.md section 8): only the text embedding is normalised, so the
score is ``100 x ||image_embeds|| x cos``, which ranks differently. Filtering writes tables and a
preview; it never moves or alters a generated file. It first checks each image against the checksum
its shard manifest recorded (:func:`sdi.pipeline.provenance.verify_generated`): an image missing or
changed since generation fails the job naming it, after deleting the image and that shard manifest
(both the workflow's own outputs) so that the next ``snakemake`` call regenerates it.

Outputs of :func:`filter_generated` (in ``out_dir``):

- ``manifest.parquet``: every generated image (the input columns) + ``score`` (float32),
  ``rank`` (int64, 1 = best within its class) and ``kept`` (bool).
- ``counts.csv``: per class ``label, class_name, generated, kept, score_min, score_mean,
  score_max`` (scores of the kept images; empty when none is kept).
- ``grid.png``: for a few classes, a row of the best kept and a row of the worst dropped images.
- ``image_embeddings.parquet``: every generated image's CLIP image embedding, as the score used it
  (``sample_id``, ``path``, ``label``, ``image_embedding``: float32 [D], not normalised), so that the
  linear probe (:mod:`sdi.training.linear_probe`) reads them instead of encoding the images again.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageDraw
from tqdm import tqdm

from sdi.io.artifacts import atomic_write, vector_array, write_parquet
from sdi.io.faults import kill_point
from sdi.io.images import load_rgb
from sdi.io.schemas import FILTER_INPUT_COLUMNS, require_columns
from sdi.models.devices import resolve_device, resolve_dtype
from sdi.models.loaders import ClipEmbedder, image_encodings, load_filter_clip
from sdi.pipeline.provenance import verify_generated
from sdi.pipeline.training_set import keep_counts

logger = logging.getLogger(__name__)

FILTER_PROMPT = "a photo of a {class_name}"
SCORES = ("cosine", "reference")
OUTPUT_FILES = {"manifest": "manifest.parquet", "counts": "counts.csv", "grid": "grid.png",
                "embeddings": "image_embeddings.parquet"}
EMBEDDING_COLUMN = "image_embedding"


class FilterError(ValueError):
    """The generation manifest or the filter options cannot be used."""


class _ImageFiles(torch.utils.data.Dataset):
    """Decode + CLIP-preprocess images in DataLoader workers: (3, H, W) float32 per path."""

    def __init__(self, paths: list[str], preprocess):
        self.paths, self.preprocess = paths, preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.preprocess(load_rgb(self.paths[i]))


@torch.inference_mode()
def class_text_embeds(clip: ClipEmbedder, class_names: list[str]) -> torch.Tensor:
    """(C, D) float32 L2-normalised projected text embeddings of ``"a photo of a {name}"``."""
    prompts = [FILTER_PROMPT.format(class_name=name) for name in class_names]
    return torch.nn.functional.normalize(clip.text_embeds(prompts), dim=-1)


def score_embeddings(image_embeds: torch.Tensor, text_embeds: torch.Tensor, score: str = "cosine") -> torch.Tensor:
    """CLIP score of each image for its own class: (N,) float32.

    Args:
        image_embeds: (N, D) projected image embeddings as the model returns them (not normalised).
        text_embeds: (N, D) L2-normalised text embedding of each image's class.
        score: 'cosine': ``100 x cos`` in [-100, 100] (docs/method.md section 6, the paper's definition);
            'reference': ``100 x image . text`` with only the text normalised, i.e. ``100 x ||img|| x cos``
            (what the reference code computed).
    """
    if score not in SCORES:
        raise FilterError(f"filter.score: {score!r} is not one of {list(SCORES)}")
    image_embeds = image_embeds.float()
    if score == "cosine":
        image_embeds = torch.nn.functional.normalize(image_embeds, dim=-1)
    return 100.0 * (image_embeds * text_embeds.float()).sum(-1)


def clip_scores(images: pd.DataFrame, clip_path: str | os.PathLike, **options) -> np.ndarray:
    """CLIP score of every image for its own class: (N,) float32 (see :func:`score_embeddings`);
    :func:`clip_scores_and_embeddings` (the same ``options``) without the embeddings."""
    return clip_scores_and_embeddings(images, clip_path, **options)[0]


@torch.inference_mode()
def clip_scores_and_embeddings(
    images: pd.DataFrame,
    clip_path: str | os.PathLike,
    *,
    batch_size: int = 32,
    device: str = "auto",
    dtype: str = "fp32",
    num_workers: int = 0,
    score: str = "cosine",
    filter_clip: dict | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(CLIP score of every image for its own class: (N,) float32, see :func:`score_embeddings`; the image
    embeddings it was computed from: (N, D) float32, not normalised), each image encoded once.

    Args:
        images: rows with ``path`` (an image file), ``label`` and ``class_name``.
        clip_path: CLIP folder (CLIPModel + CLIPImageProcessor + tokenizer), loaded once.
        batch_size: images per forward pass.
        device: 'auto' (cuda when present), 'cpu', 'cuda:1', ...
        dtype: 'fp32', 'fp16' or 'bf16' for the model (fp16 falls back to fp32 on CPU);
            the cosine is computed in float32.
        num_workers: DataLoader processes that decode and preprocess images.
        score: 'cosine' (in [-100, 100]) or 'reference', see :func:`score_embeddings`.
        filter_clip: ``models.filter_clip`` (an open_clip architecture + weights file) to score with
            instead of the CLIPModel of clip_path; None: clip_path.
    """
    if score not in SCORES:
        raise FilterError(f"filter.score: {score!r} is not one of {list(SCORES)}")
    require_columns(images, ["path", "label", "class_name"], "images table", "expected path, label, class_name",
                    FilterError)
    dev = resolve_device(device)
    clip = load_filter_clip(clip_path, filter_clip, device=dev, dtype=resolve_dtype(dtype, dev))
    if len(images) == 0:
        return np.zeros(0, np.float32), np.zeros((0, clip.projection_dim), np.float32)

    classes = images[["label", "class_name"]].drop_duplicates().sort_values("label")
    if classes.label.duplicated().any():
        raise FilterError(f"images table: label(s) {classes.label[classes.label.duplicated()].tolist()} have "
                          "more than one class_name; labels and class names must map one to one")
    text = class_text_embeds(clip, classes.class_name.tolist())  # once per class
    row_of_label = {int(label): i for i, label in enumerate(classes.label)}
    text_rows = torch.tensor([row_of_label[int(label)] for label in images.label], device=dev)

    loader = torch.utils.data.DataLoader(_ImageFiles(images.path.astype(str).tolist(), clip.preprocessor()),
                                         batch_size=batch_size, num_workers=num_workers,
                                         pin_memory=dev.type == "cuda")
    scores, embeddings, start = [], [], 0
    for pixels in tqdm(loader, desc="CLIP scores", unit="batch", mininterval=5):
        embeds = clip.image_embeds(pixels)
        scores.append(score_embeddings(embeds, text[text_rows[start:start + len(pixels)]], score).cpu())
        embeddings.append(embeds.float().cpu())
        start += len(pixels)
    return torch.cat(scores).numpy().astype(np.float32), torch.cat(embeddings).numpy().astype(np.float32)


def select_top(table: pd.DataFrame, keep_ratio: float) -> pd.Series:
    """Per class, keep the ``int(n_c * keep_ratio)`` best-scored rows; bool Series on table.index.

    Ties in ``score`` are broken by ``sample_id`` (ascending) when that column exists, else by
    row order; NaN scores rank last.
    """
    return rank_within_class(table) <= keep_counts(table["label"], keep_ratio, "filter.keep_ratio", FilterError)


def rank_within_class(table: pd.DataFrame) -> pd.Series:
    """1-based rank of each row's ``score`` within its ``label`` (1 = highest), on table.index."""
    require_columns(table, ["label", "score"], "scored table", "score it first (clip_scores)", FilterError)
    if not table.index.is_unique:
        raise FilterError("scored table: index is not unique; call reset_index(drop=True) first")
    order = pd.DataFrame({"label": table["label"].to_numpy(), "score": table["score"].to_numpy(dtype=float),
                          "tie": table["sample_id"].astype(str).to_numpy() if "sample_id" in table.columns
                          else np.arange(len(table))}, index=table.index)
    order = order.sort_values(["label", "score", "tie"], ascending=[True, False, True],
                              na_position="last", kind="stable")
    rank = order.groupby("label", sort=False).cumcount() + 1
    return rank.reindex(table.index).astype("int64")


def kept_counts(scored: pd.DataFrame) -> pd.DataFrame:
    """Per class: label, class_name, generated, kept, score_min/mean/max of the kept images."""
    kept = scored[scored.kept]
    counts = scored.groupby("label").agg(class_name=("class_name", "first"), generated=("label", "size"))
    counts["kept"] = kept.groupby("label").size().reindex(counts.index, fill_value=0)
    stats = kept.groupby("label")["score"].agg(["min", "mean", "max"]).add_prefix("score_")
    counts = counts.join(stats)
    return counts.reset_index()[["label", "class_name", "generated", "kept", "score_min", "score_mean", "score_max"]]


def _label(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str) -> None:
    draw.text(xy, text, fill=(0, 0, 0))


def preview_grid(scored: pd.DataFrame, *, n_classes: int = 4, per_row: int = 6, thumb: int = 96,
                 seed: int = 0) -> Image.Image:
    """A labelled PIL grid: per class (a seeded choice of n_classes), a row of the top-scored kept
    images and a row of the lowest-scored dropped images, each with its score."""
    labels = np.sort(scored.label.unique())
    if len(labels) > n_classes:
        labels = np.sort(np.random.default_rng(seed).choice(labels, n_classes, replace=False))
    margin, caption = 160, 14
    rows = []
    for label in labels:
        group = scored[scored.label == label].sort_values("rank")
        name = str(group.class_name.iloc[0])
        rows.append((f"{name}\nkept (best)", group[group.kept].head(per_row)))
        rows.append((f"{name}\ndropped (worst)", group[~group.kept].iloc[::-1].head(per_row)))
    cell = thumb + caption
    grid = Image.new("RGB", (margin + per_row * (thumb + 4), max(1, len(rows)) * (cell + 4)), "white")
    draw = ImageDraw.Draw(grid)
    for r, (title, items) in enumerate(rows):
        y = r * (cell + 4)
        _label(draw, (4, y + 4), title if len(items) else f"{title}\n(none)")
        for c, item in enumerate(items.itertuples()):
            x = margin + c * (thumb + 4)
            grid.paste(load_rgb(item.path).resize((thumb, thumb), Image.Resampling.BICUBIC), (x, y))
            _label(draw, (x + 2, y + thumb + 1), f"{item.score:.1f}")
    return grid


def write_image_embeddings(rows: pd.DataFrame, embeddings: np.ndarray, path: str | os.PathLike) -> None:
    """``rows`` with an ``image_embedding`` column of fixed-size float32 lists (one per row), atomically."""
    import pyarrow as pa

    if len(rows) != len(embeddings):
        raise ValueError(f"{path}: {len(rows)} rows but {len(embeddings)} embeddings")
    table = pa.Table.from_pandas(rows.reset_index(drop=True), preserve_index=False)
    write_parquet(table.append_column(EMBEDDING_COLUMN, vector_array(embeddings, EMBEDDING_COLUMN)), path)


def check_manifest(manifest: pd.DataFrame) -> None:
    """Raise FilterError unless the generation manifest has the columns, unique ids and files, each file as
    generation wrote it (:func:`sdi.pipeline.provenance.verify_generated`: a bad one is removed, with the
    shard manifest that lists it)."""
    require_columns(manifest, FILTER_INPUT_COLUMNS, "generation manifest", "expected the generation stage's shard "
                    "manifests (sample_id, label, class_name, path)", FilterError)
    dup = manifest.sample_id[manifest.sample_id.duplicated()].tolist()
    if dup:
        raise FilterError(f"generation manifest: {len(dup)} duplicated sample_id(s), e.g. {dup[:3]}; "
                          "a shard manifest is listed twice or two runs were mixed")
    verify_generated(manifest, what="generation manifest", error=FilterError)


def filter_generated(
    manifest: pd.DataFrame,
    clip_path: str | os.PathLike,
    keep_ratio: float,
    out_dir: str | os.PathLike,
    *,
    batch_size: int = 32,
    device: str = "auto",
    dtype: str = "fp32",
    num_workers: int = 0,
    grid_classes: int = 4,
    grid_per_row: int = 6,
    score: str = "cosine",
    filter_clip: dict | None = None,
) -> pd.DataFrame:
    """Score, rank and select generated images; write manifest.parquet, counts.csv, grid.png.

    Args:
        manifest: the concatenated generation shard manifests (sample_id, label, class_name, path, ...).
        clip_path: CLIP ViT-L/14 folder (or the tiny CLIP).
        keep_ratio: fraction kept per class, ``int(n_c * keep_ratio)`` (0.5 in the paper).
        out_dir: folder for the three outputs (each written atomically).
        batch_size, device, dtype, num_workers, score, filter_clip: see :func:`clip_scores`.
        grid_classes, grid_per_row: size of the preview grid.

    Returns:
        The scored manifest (input columns + score, rank, kept), sorted by (label, sample_id).
    """
    t_start, encoded_before = time.monotonic(), image_encodings()
    check_manifest(manifest)
    keep_counts(manifest["label"], keep_ratio, "filter.keep_ratio", FilterError)  # checked before scoring
    scored = manifest.sort_values(["label", "sample_id"], kind="stable").reset_index(drop=True)
    scored["score"], embeddings = clip_scores_and_embeddings(
        scored, clip_path, batch_size=batch_size, device=device, dtype=dtype, num_workers=num_workers, score=score,
        filter_clip=filter_clip)
    scored["rank"] = rank_within_class(scored)
    scored["kept"] = select_top(scored, keep_ratio)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_parquet(scored, out_dir / OUTPUT_FILES["manifest"])
    write_image_embeddings(scored[["sample_id", "path", "label"]], embeddings, out_dir / OUTPUT_FILES["embeddings"])
    kill_point("filtering")  # tests: a job killed with its output folder half written
    counts = kept_counts(scored)
    atomic_write(out_dir / OUTPUT_FILES["counts"], lambda p: counts.to_csv(p, index=False))
    grid = preview_grid(scored, n_classes=grid_classes, per_row=grid_per_row)
    atomic_write(out_dir / OUTPUT_FILES["grid"], lambda p: grid.save(p, format="PNG"))
    none_kept = sorted(set(scored.label) - set(scored.label[scored.kept]))
    if none_kept:
        logger.warning("%d class(es) keep no image: int(n x keep_ratio %s) is 0 for their n generated images; "
                       "raise expansion or keep_ratio. Labels: %s", len(none_kept), keep_ratio, none_kept[:20])
    elapsed = time.monotonic() - t_start
    logger.info("filter done: %d images scored in %.1f s (%.1f images/s), %d kept in %d classes (keep_ratio %s); "
                "%d CLIP image encodings in this process, embeddings kept in %s", len(scored), elapsed,
                len(scored) / max(elapsed, 1e-9), int(scored.kept.sum()), scored.label.nunique(), keep_ratio,
                image_encodings() - encoded_before, OUTPUT_FILES["embeddings"])
    return scored
