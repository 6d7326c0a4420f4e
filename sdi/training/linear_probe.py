"""The CLIP linear probe: the quick evaluation protocol (``protocol: linear_probe``).

CLIP's paper (Radford et al. 2021, section 3.2 and appendix A.3) evaluates representations by
fitting a multinomial logistic regression on frozen image embeddings, with the L2 strength chosen
on a validation split. sdi does the same on a method's training set (real + its synthetic rows,
exactly the rows a from-scratch run would train on, :func:`sdi.pipeline.training_set.method_training_set`):

- the embeddings are those of the CLIP the filter uses, computed once per image: the generated
  images' by the filter (``<filtered>/image_embeddings.parquet``, :mod:`sdi.pipeline.filtering`), the
  real images' (train, val, test) by rule ``image_embeddings`` (``results/<dataset>/image_embeddings.parquet``,
  :func:`sdi.pipeline.embeddings.embed_split_images`); the probe encodes no image itself;
- features are standardised (scikit-learn's ``StandardScaler``, fitted on the training rows), then
  ``LogisticRegression`` (multinomial, L-BFGS, L2) is fitted once per ``C`` of ``c_values``; the ``C``
  with the best validation top-1 (ties: the smaller ``C``, the stronger regularisation) is evaluated
  on the test split once.

Outputs, in the run folder, as the other protocols: ``metrics.json`` (the same fields: top-1,
class-balanced, per-class, confusion, n_real, n_synthetic, wall time, device, plus ``best_c``),
``train_set.parquet`` (the rows fitted on) and ``log.csv`` (one row per C: c, iterations,
train_top1, val_top1, val_balanced). The fit is deterministic: every seed of a method gives the
same result (the seed names the run, as for the other protocols).
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from sdi.config.protocols import PROBED
from sdi.evaluation.metrics import classification_metrics
from sdi.io.artifacts import atomic_write, write_parquet
from sdi.models.loaders import image_encodings
from sdi.pipeline import training_set
from sdi.pipeline.embeddings import read_embeddings
from sdi.pipeline.filtering import EMBEDDING_COLUMN, OUTPUT_FILES

logger = logging.getLogger(__name__)

LOG_COLUMNS = ["c", "iterations", "train_top1", "val_top1", "val_balanced"]
DEFAULT_C_VALUES = (0.001, 0.01, 0.1, 1.0, 10.0)


class ProbeError(ValueError):
    """The probe's inputs cannot be used (embeddings missing for some rows, ...)."""


def fit_probe(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, *, num_classes: int,
              c_values=DEFAULT_C_VALUES, max_iter: int = 1000):
    """Fit one standardised logistic regression per C and keep the best on validation.

    Returns (the fitted scikit-learn pipeline of the chosen C, the chosen C, one log row per C).
    Classes absent from the training rows can never be predicted (logged by the caller).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(x_train) == 0 or len(x_val) == 0:
        raise ProbeError(f"linear probe: {len(x_train)} training and {len(x_val)} validation rows; it needs both")
    best, best_c, best_val, rows = None, None, -1.0, []
    for c in sorted(float(c) for c in c_values):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit(x_train, y_train)
        if any(issubclass(w.category, ConvergenceWarning) for w in caught):
            logger.warning("C=%g: L-BFGS stopped at max_iter=%d before converging; raise "
                           "classifier.linear_probe.max_iter", c, max_iter)
        val = classification_metrics(y_val, model.predict(x_val), num_classes)
        train_top1 = 100.0 * float((model.predict(x_train) == y_train).mean())
        iterations = int(np.max(model[-1].n_iter_))
        rows.append({"c": c, "iterations": iterations, "train_top1": train_top1, "val_top1": val["top1"],
                     "val_balanced": val["balanced"]})
        logger.info("C=%g: %d L-BFGS iterations, train top-1 %.2f%%, val top-1 %.2f%% (balanced %.2f%%)", c,
                    iterations, train_top1, val["top1"], val["balanced"])
        if val["top1"] > best_val:  # strict, ascending C: ties keep the stronger regularisation
            best, best_c, best_val = model, c, val["top1"]
    return best, best_c, rows


def lookup(embeddings: pd.DataFrame, matrix: np.ndarray, paths: pd.Series, what: str, source: str) -> np.ndarray:
    """The rows of ``matrix`` for ``paths`` (a table's ``path`` column), by path; ProbeError naming the
    first path without an embedding."""
    index = pd.Index(embeddings["path"].astype(str))
    if not index.is_unique:
        index = index.drop_duplicates()
        matrix = matrix[~pd.Index(embeddings["path"].astype(str)).duplicated()]
    at = index.get_indexer(paths.astype(str))
    if (at < 0).any():
        missing = paths.astype(str)[at < 0].tolist()
        raise ProbeError(f"{len(missing)} {what} image(s) have no CLIP embedding in {source}, e.g. {missing[:2]}; "
                         "it was written for other images: rerun the rule that writes it")
    return matrix[at]


def read_image_embeddings(path: str | os.PathLike) -> tuple[pd.DataFrame, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise ProbeError(f"{path} does not exist; the linear probe reads the CLIP image embeddings that "
                         "the filter and rule image_embeddings store: rerun them (snakemake --forcerun filter)")
    return read_embeddings(path, EMBEDDING_COLUMN)


def run_probe(train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame, out_dir: str | os.PathLike, *,
              real_embeddings: str | os.PathLike, generated_embeddings: str | os.PathLike | None = None,
              num_classes: int, class_names: list[str] | None = None, c_values=DEFAULT_C_VALUES,
              max_iter: int = 1000, seed: int = 0, protocol: str = PROBED[0]) -> dict:
    """Fit the probe on ``train`` (a training-set table, :data:`sdi.pipeline.training_set.COLUMNS`), choose C
    on ``val``, evaluate ``test``; write metrics.json, train_set.parquet, log.csv in ``out_dir`` and
    return metrics.json's content (see the module docstring).

    real_embeddings: the real images' embeddings (``path``, ``image_embedding``: every train, val and test
    path); generated_embeddings: the filter's (every synthetic path of ``train``), or None without one.
    """
    t_start, encoded_before = time.time(), image_encodings()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").unlink(missing_ok=True)  # rewritten at the end; never trusted from an older run
    rows = train[training_set.COLUMNS].reset_index(drop=True)
    write_parquet(rows, out_dir / "train_set.parquet")
    real_table, real_matrix = read_image_embeddings(real_embeddings)
    synthetic = rows.source == "synthetic"
    x_train = np.zeros((len(rows), real_matrix.shape[1]), np.float32)
    x_train[~synthetic.to_numpy()] = lookup(real_table, real_matrix, rows.path[~synthetic], "training",
                                            str(real_embeddings))
    if synthetic.any():
        if generated_embeddings is None:
            raise ProbeError("linear probe: the training set has synthetic rows but no generated embeddings are given")
        gen_table, gen_matrix = read_image_embeddings(generated_embeddings)
        if gen_matrix.shape[1] != real_matrix.shape[1]:
            raise ProbeError(f"{generated_embeddings} holds {gen_matrix.shape[1]}-d embeddings, {real_embeddings} "
                             f"{real_matrix.shape[1]}-d: they come from different CLIPs; rerun both with this config")
        x_train[synthetic.to_numpy()] = lookup(gen_table, gen_matrix, rows.path[synthetic], "synthetic",
                                               str(generated_embeddings))
    x_val = lookup(real_table, real_matrix, val.path, "validation", str(real_embeddings))
    x_test = lookup(real_table, real_matrix, test.path, "test", str(real_embeddings))
    y_train, y_val, y_test = (t.label.to_numpy(np.int64) for t in (rows, val, test))
    counts = training_set.counts(rows)
    absent = sorted(set(range(num_classes)) - set(y_train.tolist()))
    if absent:
        logger.warning("%d class(es) have no training row and can never be predicted: labels %s", len(absent),
                       absent[:20])
    logger.info("linear probe on %d-d CLIP embeddings: %d real + %d real copies + %d synthetic train, %d val, "
                "%d test rows, %d classes, C in %s", x_train.shape[1], counts["n_real"], counts["n_real_copies"],
                counts["n_synthetic"], len(x_val), len(x_test), num_classes, list(c_values))
    model, best_c, log_rows = fit_probe(x_train, y_train, x_val, y_val, num_classes=num_classes, c_values=c_values,
                                        max_iter=max_iter)
    atomic_write(out_dir / "log.csv", lambda tmp: pd.DataFrame(log_rows, columns=LOG_COLUMNS).to_csv(tmp, index=False))
    metrics = classification_metrics(y_test, model.predict(x_test), num_classes, class_names)
    best = next(r for r in log_rows if r["c"] == best_c)
    params = {"protocol": protocol, "num_classes": num_classes, "c_values": [float(c) for c in c_values],
              "max_iter": max_iter, "seed": seed, "embedding_dim": int(x_train.shape[1])}
    metrics.update({"split": "test", "protocol": protocol, "best_c": best_c, "best_val_top1": best["val_top1"],
                    **counts, "n_train_real": counts["n_real"] + counts["n_real_copies"],
                    "n_train_synthetic": counts["n_synthetic"], "n_val": len(x_val),
                    "wall_time_s": round(time.time() - t_start, 3), "device": "cpu", "processes": 1,
                    "image_encodings": image_encodings() - encoded_before, "params": params})
    atomic_write(out_dir / "metrics.json", lambda tmp: tmp.write_text(json.dumps(metrics, indent=2) + "\n"))
    logger.info("linear probe done: C=%g chosen on validation (top-1 %.2f%%), test top-1 %.2f%%, balanced %.2f%%; "
                "%d CLIP image encodings in this job -> %s", best_c, best["val_top1"], metrics["top1"],
                metrics["balanced"], metrics["image_encodings"], out_dir / "metrics.json")
    return metrics


def run_probe_job(job: dict) -> dict:
    """The workflow's probe run (rule linear_probe), from paths: ``split``, ``real_embeddings``, ``filtered`` (the
    variant's filter folder: its manifest for pool kept, its embeddings for both pools), ``shards`` (pool
    generated), ``training_set`` (method_training_set keywords), ``out_dir``, ``settings`` (c_values,
    max_iter, seed, protocol)."""
    shards = job.get("shards")
    inputs = training_set.read_method_inputs(job["split"], job["training_set"],
                                             filtered=None if shards else job.get("filtered"), shards=shards)
    filtered = job.get("filtered")
    return run_probe(inputs.train, inputs.split["val"], inputs.split["test"], job["out_dir"],
                     real_embeddings=job["real_embeddings"],
                     generated_embeddings=Path(filtered) / OUTPUT_FILES["embeddings"] if filtered else None,
                     num_classes=inputs.num_classes, class_names=inputs.class_names, **job["settings"])
