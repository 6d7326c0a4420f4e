"""Distribution diagnostics: do the samples infill the real semantic distribution, copy it, or leave it?

Two embedding spaces are checked, per class:

- ``conditioning``: the projected embeddings of the real training images (what SEI models,
  ``embeddings.parquet`` column ``embedding``) vs the sampled conditioning vectors
  (``samples/<sampler>.parquet`` column ``vector``). Only SEI samplers have vectors.
- ``clip_image``: CLIP image embeddings (``image_embeds``) of the real training images
  (``embeddings.parquet`` column ``clip_embedding``) vs those of the KEPT generated images.
  Every variant has these, the text-only baseline included.

Per class and space (:func:`class_diagnostics`):

- ``real_nn_median``: median over real points of the distance to their nearest OTHER real
  point (the spacing of the real data); ``sample_nn_median``: median over samples of the
  distance to their nearest real point; ``nn_ratio`` = sample / real. About 1: samples sit
  among the real points as densely as the real points sit among themselves; near 0: samples
  copy real points; much above 1: samples leave the real distribution.
- ``precision``, ``recall``, ``density``, ``coverage``: the k-NN definitions of Naeem et al.
  2020 ("Reliable Fidelity and Diversity Metrics for Generative Models"), with k clamped
  to n - 1 for small classes. Euclidean distances throughout.

Near-duplicates (:func:`near_duplicates`): cosine of each kept generated image's CLIP
embedding to its nearest training image and to its nearest test image; above
``threshold`` it is flagged (``train`` copies, and any ``test`` overlap, which would leak
test images into training).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

from sdi.io.artifacts import atomic_write
from sdi.io.schemas import require_columns

OUTPUT_FILES = {"per_class": "per_class.csv", "summary": "summary.json", "duplicates": "near_duplicates.csv",
                "distances": "distances.png", "projection": "projection.png"}
PER_CLASS_COLUMNS = ["space", "label", "class_name", "n_real", "n_samples", "k", "real_nn_median",
                     "sample_nn_median", "nn_ratio", "precision", "recall", "density", "coverage"]


class DiagnosticsError(ValueError):
    """Inputs of the diagnostics cannot be used."""


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) Euclidean distances, in float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(sq, 0.0))


def kth_neighbour_radii(x: np.ndarray, k: int) -> np.ndarray:
    """(n,) distance from each row of x to its k-th nearest OTHER row (k >= 1, k < n)."""
    nn = NearestNeighbors(n_neighbors=k + 1).fit(x)
    dist, _ = nn.kneighbors(x)
    return dist[:, k]  # column 0 is the point itself


def nearest_distances(queries: np.ndarray, reference: np.ndarray, exclude_self: bool = False) -> np.ndarray:
    """(n_queries,) distance to the nearest reference row; exclude_self when queries is reference."""
    k = 2 if exclude_self else 1
    if len(reference) < k:
        return np.full(len(queries), np.nan)
    dist, _ = NearestNeighbors(n_neighbors=k).fit(reference).kneighbors(queries)
    return dist[:, k - 1]


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 5) -> dict[str, float]:
    """Precision, recall, density and coverage (Naeem et al. 2020), k-NN balls in Euclidean space.

    Args:
        real: (N, d) real embeddings; fake: (M, d) generated/sampled embeddings.
        k: neighbourhood size; clamped to N - 1 (real balls) and M - 1 (fake balls).
    Returns:
        {precision, recall, density, coverage, k}; NaN where a set is too small (N < 2, or
        M < 2 for recall).
    """
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    nan = {"precision": np.nan, "recall": np.nan, "density": np.nan, "coverage": np.nan, "k": 0}
    if len(real) < 2 or len(fake) < 1:
        return nan
    k_real = min(k, len(real) - 1)
    real_radii = kth_neighbour_radii(real, k_real)
    d_real_fake = _pairwise(real, fake)  # (N, M)
    inside = d_real_fake <= real_radii[:, None]  # fake j inside real i's ball
    out = {
        "precision": float(inside.any(axis=0).mean()),
        "density": float(inside.sum() / (k_real * len(fake))),
        "coverage": float((d_real_fake.min(axis=1) <= real_radii).mean()),
        "recall": np.nan,
        "k": k_real,
    }
    if len(fake) >= 2:
        fake_radii = kth_neighbour_radii(fake, min(k, len(fake) - 1))
        out["recall"] = float((d_real_fake <= fake_radii[None, :]).any(axis=1).mean())
    return out


def class_diagnostics(real: np.ndarray, real_labels: np.ndarray, samples: np.ndarray, sample_labels: np.ndarray,
                      class_names: dict[int, str], *, space: str, k: int = 5) -> pd.DataFrame:
    """One row per class with the columns of ``PER_CLASS_COLUMNS`` (see the module docstring)."""
    real_labels, sample_labels = np.asarray(real_labels), np.asarray(sample_labels)
    rows = []
    for label in np.unique(np.concatenate([real_labels, sample_labels])):
        r, s = real[real_labels == label], samples[sample_labels == label]
        real_nn = nearest_distances(r, r, exclude_self=True) if len(r) else np.array([np.nan])
        sample_nn = nearest_distances(s, r) if len(s) and len(r) else np.array([np.nan])
        real_med = float(np.nanmedian(real_nn)) if np.isfinite(real_nn).any() else np.nan
        sample_med = float(np.nanmedian(sample_nn)) if np.isfinite(sample_nn).any() else np.nan
        rows.append({"space": space, "label": int(label), "class_name": class_names.get(int(label), str(label)),
                     "n_real": len(r), "n_samples": len(s), "real_nn_median": real_med,
                     "sample_nn_median": sample_med,
                     "nn_ratio": sample_med / real_med if real_med and np.isfinite(real_med) else np.nan,
                     **prdc(r, s, k)})
    return pd.DataFrame(rows, columns=PER_CLASS_COLUMNS)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def near_duplicates(generated: np.ndarray, reference: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(max cosine, index of the nearest reference row) for each generated row; cosine of raw vectors."""
    if len(reference) == 0 or len(generated) == 0:
        return np.full(len(generated), np.nan), np.full(len(generated), -1)
    cos = _unit(generated) @ _unit(reference).T
    return cos.max(axis=1), cos.argmax(axis=1)


def duplicate_table(kept: pd.DataFrame, kept_clip: np.ndarray, train: pd.DataFrame, train_clip: np.ndarray,
                    test: pd.DataFrame, test_clip: np.ndarray, threshold: float) -> pd.DataFrame:
    """Per kept generated image: nearest train/test image and cosine, and the flags ``copies_train``
    and ``overlaps_test`` (cosine > threshold)."""
    table = kept[["sample_id", "label", "path"]].reset_index(drop=True).copy()
    for name, ref, ref_clip in (("train", train, train_clip), ("test", test, test_clip)):
        cos, idx = near_duplicates(kept_clip, ref_clip, threshold)
        table[f"nearest_{name}"] = [str(ref["image_id"].iloc[i]) if i >= 0 else "" for i in idx]
        table[f"{name}_cosine"] = cos
    table["copies_train"] = table["train_cosine"] > threshold
    table["overlaps_test"] = table["test_cosine"] > threshold
    return table


# --------------------------------------------------------------------------- figures
def distance_figure(spaces: dict[str, tuple[np.ndarray, np.ndarray]], path: str | os.PathLike) -> None:
    """Histograms, one panel per space: real-to-real vs sample-to-real nearest distances.

    spaces: {space: (real_nn distances, sample_nn distances)} (pooled over classes).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, max(1, len(spaces)), figsize=(5 * max(1, len(spaces)), 3.6), squeeze=False)
    for ax, (space, (real_nn, sample_nn)) in zip(axes[0], spaces.items(), strict=False):
        values = np.concatenate([real_nn, sample_nn])
        values = values[np.isfinite(values)]
        bins = np.linspace(0, values.max() if len(values) else 1, 30)
        ax.hist(real_nn[np.isfinite(real_nn)], bins=bins, alpha=0.6, label="real -> nearest other real")
        ax.hist(sample_nn[np.isfinite(sample_nn)], bins=bins, alpha=0.6, label="sample -> nearest real")
        ax.set_title(f"{space} space (per class)")
        ax.set_xlabel("Euclidean distance")
        ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)


def projection_figure(real: np.ndarray, real_labels: np.ndarray, samples: np.ndarray, sample_labels: np.ndarray,
                      class_names: dict[int, str], path: str | os.PathLike, *, n_classes: int = 4,
                      title: str = "", seed: int = 0) -> None:
    """PCA (fit on the real and sampled points of the shown classes) of a seeded choice of classes:
    real points as circles, samples as crosses, one colour per class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = np.unique(real_labels)
    if len(labels) > n_classes:
        labels = np.sort(np.random.default_rng(seed).choice(labels, n_classes, replace=False))
    r_mask, s_mask = np.isin(real_labels, labels), np.isin(sample_labels, labels)
    points = np.concatenate([real[r_mask], samples[s_mask]])
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    if len(points) >= 2:
        xy = PCA(n_components=2, random_state=seed).fit_transform(points)
        r_xy, s_xy = xy[: r_mask.sum()], xy[r_mask.sum():]
        for i, label in enumerate(labels):
            colour = f"C{i % 10}"
            name = class_names.get(int(label), str(label))
            ax.scatter(*s_xy[sample_labels[s_mask] == label].T, marker="x", s=14, alpha=0.5, color=colour)
            ax.scatter(*r_xy[real_labels[r_mask] == label].T, marker="o", s=36, edgecolor="black",
                       color=colour, label=name)
    ax.set_title(title or "PCA: real (o) vs samples (x)")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.legend(fontsize=8, title="class (o real, x sample)", title_fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)


# --------------------------------------------------------------------------- entry point
def run_diagnostics(real: pd.DataFrame, real_conditioning: np.ndarray | None, real_clip: np.ndarray,
                    samples: pd.DataFrame | None, sample_vectors: np.ndarray | None,
                    kept: pd.DataFrame, kept_clip: np.ndarray, test: pd.DataFrame, test_clip: np.ndarray,
                    out_dir: str | os.PathLike, *, k: int = 5, duplicate_threshold: float = 0.95,
                    projection_classes: int = 4) -> dict:
    """Write the diagnostics of one variant into ``out_dir`` (files of ``OUTPUT_FILES``).

    Args:
        real: training images (image_id, label, class_name), rows aligned with real_conditioning
            (N, d_cross; None for a variant without vectors) and real_clip (N, d_clip).
        samples, sample_vectors: the variant's samples (label) and their (M, d_cross) vectors; None
            for the text-only baseline.
        kept: the kept generated images (sample_id, label, path), rows aligned with kept_clip.
        test, test_clip: test images (image_id) and their CLIP embeddings.
        k: neighbourhood size of precision/recall/density/coverage.
        duplicate_threshold: CLIP cosine above which a kept image counts as a copy of a train
            image or an overlap with a test image.
        projection_classes: classes shown in the PCA plot.
    Returns:
        The content of summary.json: per space the class means of the per-class columns, and
        the duplicate counts.
    """
    if len(real) != len(real_clip) or len(kept) != len(kept_clip) or len(test) != len(test_clip):
        raise DiagnosticsError("run_diagnostics: tables and embedding matrices differ in length (real "
                               f"{len(real)}/{len(real_clip)}, kept {len(kept)}/{len(kept_clip)}, test "
                               f"{len(test)}/{len(test_clip)}); pass one embedding row per table row")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    per_class, hist = _space_diagnostics(real, real_conditioning, real_clip, samples, sample_vectors, kept, kept_clip,
                                         out_dir, k=k, projection_classes=projection_classes)
    dup = duplicate_table(kept, kept_clip, real, real_clip, test, test_clip, duplicate_threshold)
    summary = _summary(per_class, dup, n_kept=len(kept), k=k, duplicate_threshold=duplicate_threshold)
    _write_outputs(out_dir, per_class, dup, summary, hist)
    return summary


def _space_diagnostics(real: pd.DataFrame, real_conditioning: np.ndarray | None, real_clip: np.ndarray,
                       samples: pd.DataFrame | None, sample_vectors: np.ndarray | None, kept: pd.DataFrame,
                       kept_clip: np.ndarray, out_dir: Path, *, k: int,
                       projection_classes: int) -> tuple[pd.DataFrame, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Per-class diagnostics of each space (conditioning where the variant has vectors, then
    clip_image) and their pooled nearest distances; draws the PCA projection (of the conditioning
    space, or without vectors of the CLIP image space) into out_dir."""
    names = dict(zip(real["label"].astype(int), real["class_name"].astype(str), strict=False))
    real_labels = real["label"].to_numpy()
    tables, hist = [], {}
    if real_conditioning is not None and sample_vectors is not None and samples is not None:
        s_labels = samples["label"].to_numpy()
        tables.append(class_diagnostics(real_conditioning, real_labels, sample_vectors, s_labels, names,
                                        space="conditioning", k=k))
        hist["conditioning"] = _pooled_nn(real_conditioning, real_labels, sample_vectors, s_labels)
        projection_figure(real_conditioning, real_labels, sample_vectors, s_labels, names,
                          out_dir / OUTPUT_FILES["projection"], n_classes=projection_classes,
                          title="conditioning space, PCA: real (o) vs SEI samples (x)")
    k_labels = kept["label"].to_numpy()
    tables.append(class_diagnostics(real_clip, real_labels, kept_clip, k_labels, names, space="clip_image", k=k))
    hist["clip_image"] = _pooled_nn(real_clip, real_labels, kept_clip, k_labels)
    if "conditioning" not in hist:  # no vectors (text baseline): project the CLIP image embeddings
        projection_figure(real_clip, real_labels, kept_clip, k_labels, names, out_dir / OUTPUT_FILES["projection"],
                          n_classes=projection_classes, title="CLIP image space, PCA: real (o) vs kept (x)")
    return pd.concat(tables, ignore_index=True), hist


def _summary(per_class: pd.DataFrame, dup: pd.DataFrame, *, n_kept: int, k: int, duplicate_threshold: float) -> dict:
    """The content of summary.json: per space the class means of the per-class columns, and the duplicate counts."""
    return {
        "k": k,
        "duplicate_threshold": duplicate_threshold,
        "spaces": {space: {c: _nanmean(group[c]) for c in ("nn_ratio", "precision", "recall", "density", "coverage")}
                   for space, group in per_class.groupby("space", sort=False)},
        "n_kept": n_kept,
        "n_copies_train": int(dup["copies_train"].sum()),
        "n_overlaps_test": int(dup["overlaps_test"].sum()),
        "max_train_cosine": _nanmax(dup["train_cosine"]),
        "max_test_cosine": _nanmax(dup["test_cosine"]),
    }


def _write_outputs(out_dir: Path, per_class: pd.DataFrame, dup: pd.DataFrame, summary: dict,
                   hist: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """per_class.csv, near_duplicates.csv (highest train cosine first), summary.json and the distance figure."""
    atomic_write(out_dir / OUTPUT_FILES["per_class"], lambda tmp: per_class.to_csv(tmp, index=False))
    atomic_write(out_dir / OUTPUT_FILES["duplicates"],
                 lambda tmp: dup.sort_values("train_cosine", ascending=False).to_csv(tmp, index=False))
    atomic_write(out_dir / OUTPUT_FILES["summary"], lambda tmp: tmp.write_text(json.dumps(summary, indent=2) + "\n"))
    distance_figure(hist, out_dir / OUTPUT_FILES["distances"])


def diagnose_variant(embeddings_path: str | os.PathLike, samples_path: str | os.PathLike | None,
                     filtered_dir: str | os.PathLike, split_dir: str | os.PathLike, clip_path: str | os.PathLike,
                     out_dir: str | os.PathLike, *, device: str = "auto", batch_size: int = 32,
                     num_workers: int = 0, filter_clip: dict | None = None, **options) -> dict:
    """Load a variant's artifacts, embed its kept images and the test images with CLIP, and call
    :func:`run_diagnostics` (``options``: k, duplicate_threshold, projection_classes).

    The CLIP image space is that of clip_path (the embeddings' ``clip_embedding``), or with
    filter_clip (``models.filter_clip``, an open_clip model) that model's, the training images
    (split_dir/train.parquet) then being embedded with it too.

    embeddings_path: ``embeddings.parquet`` (clip_embedding, embedding per training image);
    samples_path: ``samples/<sampler>.parquet`` or None (text baseline: no vectors);
    filtered_dir: the variant's filter output (manifest.parquet with path, label, kept);
    split_dir: the split (test.parquet); clip_path: the CLIP folder the embeddings were made with.
    """
    from sdi.models.devices import resolve_device
    from sdi.models.loaders import load_clip_vision, load_filter_clip
    from sdi.pipeline.embeddings import clip_image_embeddings, embed_image_files, read_embeddings
    from sdi.pipeline.sampling import read_samples, stack_vectors

    real, real_clip = read_embeddings(embeddings_path, "clip_embedding")
    _, real_conditioning = read_embeddings(embeddings_path, "embedding")
    samples = vectors = None
    if samples_path is not None:
        samples = read_samples(samples_path)
        vectors = stack_vectors(samples["vector"])
    manifest_path = Path(filtered_dir) / "manifest.parquet"
    manifest = pd.read_parquet(manifest_path)
    require_columns(manifest, ["sample_id", "label", "path", "kept"], str(manifest_path),
                    "rebuild it with the filter stage", DiagnosticsError)
    kept = manifest[manifest["kept"].astype(bool)].reset_index(drop=True)
    test = pd.read_parquet(Path(split_dir) / "test.parquet")
    dev = resolve_device(device)
    if filter_clip:
        clip = load_filter_clip(clip_path, filter_clip, device=dev)
        train = pd.read_parquet(Path(split_dir) / "train.parquet").astype({"image_id": str}).set_index("image_id")
        absent = sorted(set(real["image_id"].astype(str)) - set(train.index))
        if absent:
            raise DiagnosticsError(f"{embeddings_path}: image ids {absent[:3]} are not in {split_dir}/train.parquet; "
                                   "rebuild the embeddings from this split")
        tables = (("train", train.loc[real["image_id"].astype(str)]), ("kept", kept), ("test", test))
        embed = {name: embed_image_files(table["path"].astype(str).tolist(), clip, batch_size=batch_size,
                                         num_workers=num_workers, desc=f"CLIP {name} images ({clip.name})")
                 for name, table in tables}
        return run_diagnostics(real, real_conditioning, embed["train"], samples, vectors, kept, embed["kept"], test,
                               embed["test"], out_dir, **options)
    model, processor = load_clip_vision(clip_path, device=dev)
    if model.config.projection_dim != real_clip.shape[1]:
        raise DiagnosticsError(f"{embeddings_path}: clip_embedding has {real_clip.shape[1]} dims but the CLIP model "
                               f"{clip_path} has projection_dim {model.config.projection_dim}; use the CLIP folder "
                               "the embeddings were extracted with")
    embed = {name: clip_image_embeddings(table["path"].astype(str).tolist(), model, processor,
                                         batch_size=batch_size, num_workers=num_workers,
                                         desc=f"CLIP {name} images").numpy()
             for name, table in (("kept", kept), ("test", test))}
    return run_diagnostics(real, real_conditioning, real_clip, samples, vectors, kept, embed["kept"], test,
                           embed["test"], out_dir, **options)


def _pooled_nn(real, real_labels, samples, sample_labels) -> tuple[np.ndarray, np.ndarray]:
    """Per-class nearest distances pooled over classes: (real -> other real, sample -> real)."""
    real_nn, sample_nn = [], []
    for label in np.unique(real_labels):
        r, s = real[real_labels == label], samples[sample_labels == label]
        real_nn.append(nearest_distances(r, r, exclude_self=True))
        if len(s):
            sample_nn.append(nearest_distances(s, r))
    return np.concatenate(real_nn), np.concatenate(sample_nn) if sample_nn else np.zeros(0)


def _nanmean(values) -> float | None:
    values = np.asarray(values, np.float64)
    return float(np.nanmean(values)) if np.isfinite(values).any() else None


def _nanmax(values) -> float | None:
    values = np.asarray(values, np.float64)
    return float(np.nanmax(values)) if np.isfinite(values).any() else None
