"""Figures for the Snakemake report (``snakemake --report report.html``).

- :func:`filter_figures`, per dataset and variant: a sample grid (per class a row of real
  training images, a row of the best kept and a row of the worst dropped generated images,
  each with its CLIP score), CLIP score histograms per class with the keep threshold (the
  lowest kept score of the class), and generated vs kept counts per class.
- :func:`training_curves`, per dataset: validation top-1 and training loss per epoch of
  every classifier run (one line per method and seed).

All figures are PNGs written atomically; the rules mark them with ``report(...)``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from sdi.io.artifacts import atomic_write
from sdi.io.images import load_rgb
from sdi.io.schemas import FILTER_COLUMNS, require_columns


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> None:
    plt = _plt()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)


def _shown_classes(labels, n_classes: int, seed: int = 0) -> np.ndarray:
    labels = np.sort(np.unique(labels))
    if len(labels) > n_classes:
        labels = np.sort(np.random.default_rng(seed).choice(labels, n_classes, replace=False))
    return labels


def sample_grid(real: pd.DataFrame, scored: pd.DataFrame, *, n_classes: int = 4, per_row: int = 6,
                thumb: int = 80, seed: int = 0) -> Image.Image:
    """Per class (a seeded choice of n_classes): a row of real training images, a row of the
    best kept and a row of the worst dropped generated images (with CLIP scores).

    real: path, label, class_name (the training split); scored: the filter manifest (path,
    label, class_name, score, rank, kept).
    """
    rows = []
    for label in _shown_classes(scored["label"], n_classes, seed):
        group = scored[scored["label"] == label].sort_values("rank")
        name = str(group["class_name"].iloc[0])
        rows.append((f"{name}\nreal", real[real["label"] == label].head(per_row), False))
        rows.append((f"{name}\nkept (best)", group[group["kept"]].head(per_row), True))
        rows.append((f"{name}\ndropped (worst)", group[~group["kept"]].iloc[::-1].head(per_row), True))
    margin, caption = 130, 12
    cell = thumb + caption
    grid = Image.new("RGB", (margin + per_row * (thumb + 4), max(1, len(rows)) * (cell + 4)), "white")
    draw = ImageDraw.Draw(grid)
    for r, (title, items, scores) in enumerate(rows):
        y = r * (cell + 4)
        draw.text((4, y + 4), title if len(items) else f"{title}\n(none)", fill=(0, 0, 0))
        for c, item in enumerate(items.itertuples()):
            x = margin + c * (thumb + 4)
            grid.paste(load_rgb(item.path).resize((thumb, thumb), Image.Resampling.BICUBIC), (x, y))
            if scores:
                draw.text((x + 2, y + thumb), f"{item.score:.1f}", fill=(0, 0, 0))
    return grid


def overview_grid(real: pd.DataFrame, sdi: pd.DataFrame, text: pd.DataFrame | None = None, *, per_group: int = 4,
                  n_classes: int = 10, thumb: int = 48, seed: int = 0) -> Image.Image:
    """One row per class (a seeded choice of n_classes), four groups of per_group images side by side:
    real training images, SDI's kept images (best first), SDI's dropped images (worst first) and,
    when text is given, the text-only baseline's kept images (best first).

    real: path, label, class_name (the training split); sdi, text: filter manifests (path, label,
    class_name, score, rank, kept).
    """
    groups = [("real", lambda g, label: real[real["label"] == label].head(per_group)),
              ("SDI kept", lambda g, label: g[g["kept"]].sort_values("rank").head(per_group)),
              ("SDI dropped", lambda g, label: g[~g["kept"]].sort_values("rank").iloc[::-1].head(per_group))]
    if text is not None:
        groups.append(("text-only kept", lambda g, label: text[(text["label"] == label) & text["kept"]]
                       .sort_values("rank").head(per_group)))
    margin, header, gap = 110, 18, 12
    width = margin + len(groups) * (per_group * (thumb + 2) + gap)
    labels = _shown_classes(sdi["label"], n_classes, seed)
    grid = Image.new("RGB", (width, header + len(labels) * (thumb + 2)), "white")
    draw = ImageDraw.Draw(grid)
    for k, (title, _) in enumerate(groups):
        draw.text((margin + k * (per_group * (thumb + 2) + gap), 3), title, fill=(0, 0, 0))
    for r, label in enumerate(labels):
        group = sdi[sdi["label"] == label]
        y = header + r * (thumb + 2)
        draw.text((4, y + thumb // 2 - 6), str(group["class_name"].iloc[0]), fill=(0, 0, 0))
        for k, (_, pick) in enumerate(groups):
            for c, item in enumerate(pick(group, label).itertuples()):
                x = margin + k * (per_group * (thumb + 2) + gap) + c * (thumb + 2)
                grid.paste(load_rgb(item.path).resize((thumb, thumb), Image.Resampling.NEAREST), (x, y))
    return grid


def overview_figure(split_dir: str | os.PathLike, sdi_dir: str | os.PathLike, text_dir: str | os.PathLike | None,
                    path: str | os.PathLike, **options) -> None:
    """Write :func:`overview_grid` of a split, the default variant's filter folder and a text-only one."""
    def scored(folder):
        table = pd.read_parquet(Path(folder) / "manifest.parquet")
        table["kept"] = table["kept"].astype(bool)
        return table

    real = pd.read_parquet(Path(split_dir) / "train.parquet")
    grid = overview_grid(real, scored(sdi_dir), scored(text_dir) if text_dir else None, **options)
    atomic_write(path, lambda tmp: grid.save(tmp, format="PNG"))


def score_histograms(scored: pd.DataFrame, path: str | os.PathLike, *, n_classes: int = 8, seed: int = 0) -> None:
    """Per class (a seeded choice): histogram of CLIP scores, kept vs dropped, with the keep threshold."""
    plt = _plt()
    labels = _shown_classes(scored["label"], n_classes, seed)
    cols = min(4, len(labels))
    rows = int(np.ceil(len(labels) / max(cols, 1)))
    fig, axes = plt.subplots(max(rows, 1), max(cols, 1), figsize=(3.2 * max(cols, 1), 2.4 * max(rows, 1)),
                             squeeze=False)
    for ax in axes.flat[len(labels):]:
        ax.axis("off")
    for ax, label in zip(axes.flat, labels, strict=False):
        group = scored[scored["label"] == label]
        bins = np.linspace(group["score"].min(), group["score"].max() + 1e-6, 15)
        ax.hist(group.loc[group["kept"], "score"], bins=bins, alpha=0.7, label="kept")
        ax.hist(group.loc[~group["kept"], "score"], bins=bins, alpha=0.7, label="dropped")
        if group["kept"].any():
            ax.axvline(group.loc[group["kept"], "score"].min(), color="black", linestyle="--", label="threshold")
        ax.set_title(str(group["class_name"].iloc[0]), fontsize=9)
        ax.set_xlabel("CLIP score", fontsize=8)
    axes.flat[0].legend(fontsize=7)
    _save(fig, path)


def counts_figure(counts: pd.DataFrame, path: str | os.PathLike) -> None:
    """Generated vs kept images per class (the filter's counts.csv)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * len(counts) + 2), 3.2))
    x = np.arange(len(counts))
    ax.bar(x - 0.2, counts["generated"], 0.4, label="generated")
    ax.bar(x + 0.2, counts["kept"], 0.4, label="kept")
    ax.set_xticks(x, counts["class_name"].astype(str), rotation=90 if len(counts) > 12 else 0, fontsize=7)
    ax.set_ylabel("images")
    ax.legend(fontsize=8)
    _save(fig, path)


def filter_figures(split_dir: str | os.PathLike, filtered_dir: str | os.PathLike, out: dict[str, str], *,
                   n_classes: int = 4, per_row: int = 6) -> None:
    """Write out["grid"], out["scores"], out["counts"] from a split and a filter output folder."""
    manifest_path = Path(filtered_dir) / "manifest.parquet"
    scored = pd.read_parquet(manifest_path)
    require_columns(scored, ["path", "label", "class_name", *FILTER_COLUMNS], str(manifest_path),
                    "rebuild it with the filter stage")
    scored["kept"] = scored["kept"].astype(bool)
    real = pd.read_parquet(Path(split_dir) / "train.parquet")
    grid = sample_grid(real, scored, n_classes=n_classes, per_row=per_row)
    atomic_write(out["grid"], lambda tmp: grid.save(tmp, format="PNG"))
    score_histograms(scored, out["scores"], n_classes=2 * n_classes)
    counts_figure(pd.read_csv(Path(filtered_dir) / "counts.csv"), out["counts"])


def training_curves(logs: dict[str, str | os.PathLike], path: str | os.PathLike) -> None:
    """Validation top-1 and training loss per epoch; logs: {run label: log.csv of sdi.training.classifier}."""
    plt = _plt()
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(10, 3.6))
    for i, (name, log_path) in enumerate(logs.items()):
        log = pd.read_csv(log_path)
        style = {"color": f"C{i % 10}", "marker": "o", "markersize": 3, "label": name}
        acc.plot(log["epoch"], log["val_top1"], **style)
        loss.plot(log["epoch"], log["train_loss"], **style)
    acc.set(xlabel="epoch", ylabel="validation top-1 (%)", title="validation accuracy")
    loss.set(xlabel="epoch", ylabel="cross-entropy", title="training loss")
    acc.legend(fontsize=7)
    _save(fig, path)
