"""What one classifier run trains on: real images, repeated real copies and drawn synthetic images.

The reference code (docs/method.md section 8) builds its training set from three knobs, which an
experiment method sets (``experiments.methods.<name>``):

- ``multiples: N``: per class c, ``round(N x n_c)`` synthetic images drawn at random from a pool,
  without replacement unless the pool holds fewer (then with replacement, as the reference);
  n_c is the class's real training count. Without ``multiples`` the whole pool is used.
- ``pool: kept | generated``: the pool is the filter's kept images or every generated image.
- ``real_copies: K``: K more copies of the real training set, each augmented independently
  on the fly (the reference's augmentation baselines use 20, so an epoch has 21 x n images).

:func:`build_training_set` returns one row per training example of one epoch, with columns
``path``, ``label``, ``source`` (``real``, ``real_copy`` or ``synthetic``) and ``variant`` (the
variant a synthetic image comes from; None for real rows). The classifier trains on exactly
these rows and writes them to ``train_set.parquet`` next to ``metrics.json``.

Nothing here imports torch, so the training set of any configuration can be computed (and its
steps per epoch counted) without a GPU or a model.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sdi.config.experiments import TRAINING_SET_KEYS
from sdi.io.schemas import TRAINING_SET_COLUMNS, require_columns

SOURCES = ("real", "real_copy", "synthetic")
COLUMNS = TRAINING_SET_COLUMNS
METHOD_KEYS = TRAINING_SET_KEYS  # the keywords of method_training_set (sdi.config.experiments.methods resolves them)
log = logging.getLogger(__name__)


def _rows(table: pd.DataFrame, source: str, variant: str | None) -> pd.DataFrame:
    out = table[["path", "label"]].astype({"path": str, "label": "int64"}).reset_index(drop=True)
    out["source"] = source
    out["variant"] = variant
    return out


def keep_counts(labels: pd.Series, keep_ratio: float, key: str = "keep_ratio", error: type[Exception] = ValueError
                ) -> pd.Series:
    """The one selection rule of the filter and of the keep-ratio ablation: per row, how many of its class are
    kept, ``int(n_c x keep_ratio)`` (truncated, as in the reference: 0.333 x 3 keeps 0, 0.667 x 3 keeps 2).
    ``keep_ratio`` in [0, 1] (0 keeps nothing; config/schema.yaml asks for more than 0); ``key`` names it in
    the error."""
    if not 0.0 <= keep_ratio <= 1.0:
        raise error(f"{key}: {keep_ratio} must be in [0, 1]")
    n = labels.groupby(labels).transform("size")
    return n.map(lambda n_c: int(n_c * keep_ratio))


def select_kept(pool: pd.DataFrame, keep_ratio: float | None = None) -> pd.DataFrame:
    """Rows of a filter manifest that are kept: its ``kept`` column, or with ``keep_ratio`` the
    top ``int(n_c x keep_ratio)`` of each class by the filter's ``rank`` (1 = best), which is the
    filter's own selection at another ratio (the keep-ratio ablation re-selects, it does not regenerate)."""
    if keep_ratio is None:
        return pool[pool["kept"].astype(bool)]
    return pool[pool["rank"] <= keep_counts(pool["label"], keep_ratio, "experiments.methods.<name>.keep_ratio")]


def synthetic_pool(generated: pd.DataFrame, pool: str, keep_ratio: float | None = None,
                   source: str = "generation manifest") -> pd.DataFrame:
    """The images a method may train on: every generated image (``pool='generated'``) or the kept
    ones of a filter manifest (``pool='kept'``, see :func:`select_kept`)."""
    need = ["path", "label"] + (["kept", "rank"] if pool == "kept" else [])
    require_columns(generated, need, source, f"pool {pool!r} needs {', '.join(need)} (the filter stage writes kept "
                    "and rank)")
    if pool == "generated":
        return generated
    if pool == "kept":
        return select_kept(generated, keep_ratio)
    raise ValueError(f"pool {pool!r} must be 'kept' or 'generated'")


def draw_per_class(pool: pd.DataFrame, real_counts: pd.Series, multiples: float, seed: int = 0) -> pd.DataFrame:
    """Per class c, ``round(multiples x n_c)`` rows of ``pool`` (label c) drawn at random.

    Without replacement when the class's pool holds enough rows, with replacement otherwise
    (the reference's rule). A class absent from the pool contributes nothing. Each class has its
    own generator seeded from (seed, label), so a class's draw does not depend on the others;
    the pool is put in a canonical order (by ``sample_id`` if present, else ``path``) first, so
    the draw does not depend on the order the manifests were read in.

    Args:
        pool: candidate synthetic rows with ``label`` and ``path``.
        real_counts: n_c per label (index: label).
        multiples: N > 0.
        seed: the draw's seed (the reference seeds numpy with 0).
    """
    if not multiples > 0:
        raise ValueError(f"multiples must be > 0, got {multiples}")
    key = "sample_id" if "sample_id" in pool.columns else "path"
    pool = pool.sort_values(["label", key], kind="stable")
    parts = []
    for label, group in pool.groupby("label", sort=True):
        want = int(round(multiples * int(real_counts.get(label, 0))))
        if want == 0:
            continue
        rng = np.random.default_rng([seed, int(label)])
        idx = rng.choice(len(group), size=want, replace=len(group) < want)
        parts.append(group.iloc[np.sort(idx)])
    return pd.concat(parts, ignore_index=True) if parts else pool.iloc[:0]


def build_training_set(real: pd.DataFrame, *, synthetic: pd.DataFrame | None = None, multiples: float | None = None,
                       real_copies: int = 0, variant: str | None = None, seed: int = 0) -> pd.DataFrame:
    """One epoch's training examples: real, then ``real_copies`` copies of real, then synthetic.

    Args:
        real: the real training manifest (``path``, ``label``).
        synthetic: the synthetic pool (``path``, ``label``; e.g. kept or all generated images), or None.
        multiples: draw ``round(multiples x n_c)`` per class from the pool (:func:`draw_per_class`);
            None uses the whole pool.
        real_copies: K >= 0 extra copies of ``real``.
        variant: the variant name recorded on synthetic rows.
        seed: seed of the draw.

    Returns:
        DataFrame with :data:`COLUMNS`, one row per example of an epoch.
    """
    if real_copies < 0:
        raise ValueError(f"real_copies must be >= 0, got {real_copies}")
    parts = [_rows(real, "real", None)] + [_rows(real, "real_copy", None)] * real_copies
    if synthetic is not None and len(synthetic):
        if multiples is not None:
            synthetic = draw_per_class(synthetic, real.groupby("label").size(), multiples, seed)
        parts.append(_rows(synthetic, "synthetic", variant))
    return pd.concat(parts, ignore_index=True)[COLUMNS]


def read_generated(filtered: str | os.PathLike | None = None,
                   shards: Sequence[str | os.PathLike] | None = None) -> tuple[pd.DataFrame | None, str]:
    """The synthetic images a method's rule reads: the filter folder's ``manifest.parquet`` (pool kept)
    or the variant's generation shard manifests (pool generated); (None, '') for neither.
    Returns (table, what it was read from, for messages)."""
    if filtered:
        path = Path(filtered) / "manifest.parquet"
        return pd.read_parquet(path), str(path)
    if shards:
        return pd.concat([pd.read_parquet(f) for f in shards], ignore_index=True), \
            f"{len(shards)} generation shard manifest(s) in {Path(shards[0]).parent}"
    return None, ""


def method_training_set(real: pd.DataFrame, generated: pd.DataFrame | None = None, *, variant: str | None = None,
                        pool: str | None = "kept", multiples: float | None = None, real_copies: int = 0,
                        keep_ratio: float | None = None, draw_seed: int = 0,
                        source: str = "generation manifest") -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The training set of an experiment method, from its resolved settings (:func:`sdi.config.experiments.methods`).

    The one place that turns a method into rows: the classifier trains on its result and the export
    (:mod:`sdi.pipeline.export`) writes it, so the two cannot differ.

    Args:
        real: the real training manifest (``path``, ``label``).
        generated: the variant's filter manifest (``pool='kept'``) or its concatenated generation shard
            manifests (``pool='generated'``); ignored, and may be None, for a method without a variant.
        variant, pool, multiples, real_copies, keep_ratio, draw_seed: the method's settings.
        source: how ``generated`` is named in errors (e.g. its file).

    Returns:
        (training set as :func:`build_training_set` returns it, the synthetic pool it drew from or None).
    """
    synthetic = None
    if variant is not None:
        if generated is None:
            raise ValueError(f"method with variant {variant!r}: no generated images given ({source}); pass the "
                             "filter manifest (pool kept) or the generation shard manifests (pool generated)")
        synthetic = synthetic_pool(generated, pool, keep_ratio if pool == "kept" else None, source=source)
    train = build_training_set(real, synthetic=synthetic, multiples=multiples, real_copies=real_copies,
                               variant=variant, seed=draw_seed)
    if variant is not None:
        with_synthetic = set(train.label[train.source == "synthetic"].tolist())
        bare = sorted(set(real.label.tolist()) - with_synthetic)
        if bare:
            log.warning("variant %r gives %d of %d class(es) no synthetic image (%s: %d rows); they train on real "
                        "images only: labels %s", variant, len(bare), real.label.nunique(), source,
                        0 if synthetic is None else len(synthetic), bare[:20] + (["..."] if len(bare) > 20 else []))
    return train, synthetic


@dataclass
class MethodInputs:
    """What a method's run reads (rules train_classifier and linear_probe, :func:`read_method_inputs`):
    ``split``: the split's ``train``, ``val`` and ``test`` tables; ``num_classes`` (the largest label + 1) and
    ``class_names`` (by label; a label without a row is named by its number); ``train``: the method's training
    set and ``pool`` the synthetic pool it drew from (:func:`method_training_set`); ``generated``, ``source``:
    the generated images and what they were read from (:func:`read_generated`)."""

    split: dict[str, pd.DataFrame]
    num_classes: int
    class_names: list[str]
    train: pd.DataFrame
    pool: pd.DataFrame | None
    generated: pd.DataFrame | None
    source: str


def read_method_inputs(split: str | os.PathLike, method: dict, *, filtered: str | os.PathLike | None = None,
                       shards: Sequence[str | os.PathLike] | None = None) -> MethodInputs:
    """The preamble of a method's classifier or probe job: the ``split`` folder's train/val/test.parquet,
    the class count and names, the generated images (``filtered`` or ``shards``, :func:`read_generated`)
    and the training set of ``method`` (:func:`method_training_set` keywords)."""
    tables = {name: pd.read_parquet(Path(split) / f"{name}.parquet") for name in ("train", "val", "test")}
    names = pd.concat(tables.values()).drop_duplicates("label").sort_values("label")
    num_classes = int(names.label.max()) + 1
    name_of = dict(zip(names.label, names.class_name, strict=True))
    generated, source = read_generated(filtered, shards)
    train, pool = method_training_set(tables["train"], generated, source=source, **method)
    return MethodInputs(tables, num_classes, [name_of.get(c, str(c)) for c in range(num_classes)], train, pool,
                        generated, source)


def steps_per_epoch(n_examples: int, batch_size: int, world_size: int = 1) -> int:
    """Optimizer steps of one epoch for a global ``batch_size`` over ``world_size`` processes.

    One process: ``ceil(n / batch)`` (the classifier drops only a last batch of a single image).
    Several: each process gets ``ceil(n / W)`` examples (DistributedSampler pads) in batches of
    ``batch // W``.
    """
    if world_size == 1:
        steps = math.ceil(n_examples / batch_size)
        return steps - 1 if n_examples % batch_size == 1 and n_examples > 1 else steps
    return math.ceil(math.ceil(n_examples / world_size) / max(1, batch_size // world_size))


def counts(train_set: pd.DataFrame) -> dict[str, int]:
    """{'n_real', 'n_real_copies', 'n_synthetic', 'n_train'} of a training set."""
    by_source = train_set["source"].value_counts()
    return {"n_real": int(by_source.get("real", 0)), "n_real_copies": int(by_source.get("real_copy", 0)),
            "n_synthetic": int(by_source.get("synthetic", 0)), "n_train": len(train_set)}
