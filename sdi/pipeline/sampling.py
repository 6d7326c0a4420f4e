"""SEI sampling: model each class's projected embeddings and draw new conditioning vectors.

docs/method.md section 4. Per class c with n_c embeddings X_c (n_c x d, the projected d_cross
vectors of the ``embedding`` column), fit a Gaussian (mean of X_c, covariance
``np.cov(X_c, rowvar=False) + cov_eps * I``) or a scikit-learn ``GaussianMixture``, and draw
``round_half_up(expansion * n_c)`` vectors. Each drawn vector becomes one generated image.

The output table (one row per image to generate) is the contract with generation:

=============  ==========================  ==================================================
column         dtype                       meaning
=============  ==========================  ==================================================
sample_id      str                         ``f"{label:04d}-{sample_index:06d}"``, unique
label          int64                       class label
class_name     str                         class name (prompts, filter text)
sample_index   int64                       k = 0..n_gen(c)-1 within the class
seed           int64                       per-image generation seed in [0, 2**63), a pure
                                           function of (run seed, label, k): seed one
                                           ``torch.Generator`` per image with it
shard          int64                       in [0, n_shards); ``row % n_shards`` over the table
                                           sorted by (label, sample_index)
vector         fixed-size list<float32>[d] the sampled d_cross vector; null for method 'text'
n_components   int64                       components of the distribution the row was drawn
                                           from: 1 for 'gauss', the mixture's k for 'gmm'
                                           (below n_components where the class is smaller),
                                           0 for 'text'
=============  ==========================  ==================================================

Seeding. With ``per_class_seed=True`` (default) each class's sampler is seeded from
``SeedSequence([seed, 0, label])``, so classes draw independent noise. The reference seeds
every class with the same constant (42): the standard-normal draws are then identical
across classes. ``per_class_seed=False`` reproduces that scheme (every class's sampler is
seeded with 42, whatever ``seed``). Generation seeds come from
``SeedSequence([image_seed, 1, label, k])`` (``image_seed`` defaults to ``seed``) either
way, so any image can be regenerated alone, and changing only ``image_seed`` changes the
images but not the vectors.

Degenerate classes. n_c is far below d, so ``np.cov`` is rank deficient; ``cov_eps * I``
makes it positive definite and sampling factorises it with ``eigh`` (no Cholesky failure,
no warning). A class with one embedding has no sample covariance (``np.cov`` would divide by
zero): its covariance is defined as ``cov_eps * I``, i.e. the samples are copies of the
single embedding plus N(0, cov_eps) jitter per dimension (for 'gmm' too, which scikit-learn
cannot fit on one observation). The mixture uses ``k = min(n_components, n_c)`` components:
a class with fewer images than ``n_components`` gets fewer, which the ``n_components`` column
records and a warning per class reports (each of its components then sits on one image).

One-image classes. With 'gauss' or 'gmm', every sample of a class with one embedding is that
embedding plus jitter: the generated images are near copies of one conditioning. Each such
class is a warning in the job's log and is recorded in the samples file (its Parquet metadata,
:func:`single_image_classes`), which results/summary.md shows as a note. ``min_images``
(``samplers.<name>.min_images``) makes it an error instead: a class with fewer embeddings fails.
The count is the one after the validation split, known only in this job, not at planning.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from sdi.io.artifacts import vector_array, write_parquet
from sdi.io.schemas import SAMPLE_COLUMNS, require_columns

METHODS = ("gauss", "gmm", "text")
DISTRIBUTION_METHODS = ("gauss", "gmm")  # those that model the embeddings (min_images applies to them)
SINGLE_IMAGE_META = b"sdi.single_image_classes"  # samples file metadata: JSON list of {label, class_name, n_samples}
REFERENCE_SEED = 42  # the reference seeds every class's sampler with this constant
_SAMPLER_STREAM, _GENERATION_STREAM = 0, 1  # keep the two seed families apart


log = logging.getLogger(__name__)


class SamplingError(ValueError):
    """The embeddings table or the sampling options cannot be used."""


def n_generated(n_c: int, expansion: float) -> int:
    """Images to generate for a class of n_c real images: expansion x n_c, rounded half up,
    and at least 1 when expansion and n_c are positive.

    Half up (not Python's half-to-even ``round``) so that e.g. 1.5 x 1 gives 2 and 2.5 x 1 gives 3.
    The floor of one keeps a small expansion (0.1 x 3 = 0.3) from silently generating nothing
    for a class.
    """
    n = int(math.floor(expansion * n_c + 0.5))
    return max(n, 1) if expansion > 0 and n_c > 0 else n


def class_sampler_seed(seed: int, label: int, per_class_seed: bool = True) -> int:
    """Seed (in [0, 2**32), usable by numpy and scikit-learn) of one class's sampler.

    per_class_seed=False: the reference's constant 42 for every class (``seed`` is ignored).
    """
    if not per_class_seed:
        return REFERENCE_SEED
    return int(np.random.SeedSequence([seed, _SAMPLER_STREAM, label]).generate_state(1, np.uint32)[0])


def generation_seed(seed: int, label: int, sample_index: int) -> int:
    """Per-image generation seed in [0, 2**63): a pure function of (run seed, label, k)."""
    word = np.random.SeedSequence([seed, _GENERATION_STREAM, label, sample_index]).generate_state(1, np.uint64)[0]
    return int(word >> np.uint64(1))


def stack_vectors(column: pd.Series, name: str = "vector") -> np.ndarray:
    """A column of equal-length 1-D arrays (Parquet fixed-size lists) -> (N, d) float32 array."""
    if len(column) == 0:
        return np.zeros((0, 0), np.float32)
    if column.isna().any():
        raise SamplingError(f"column {name!r} has {int(column.isna().sum())} null row(s); "
                            "every row needs a vector (method 'text' samples have none)")
    try:
        return np.stack([np.asarray(v, dtype=np.float32) for v in column])
    except ValueError as exc:
        raise SamplingError(f"column {name!r}: rows have different lengths ({exc})") from None


def sample_gaussian(x: np.ndarray, n: int, rng: np.random.Generator, cov_eps: float = 1e-6) -> np.ndarray:
    """n draws (n, d) float64 from N(mean(x), cov(x) + cov_eps I); x is (n_c, d), n_c >= 1."""
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=0)
    d = x.shape[1]
    # np.cov of one observation divides by n_c - 1 = 0: define it as zero (jitter only).
    cov = np.cov(x, rowvar=False).reshape(d, d) if len(x) > 1 else np.zeros((d, d))
    cov += cov_eps * np.eye(d)
    # eigh handles the rank-deficient (n_c << d) covariance where a Cholesky may fail.
    return rng.multivariate_normal(mean, cov, size=n, method="eigh", check_valid="raise")


def gmm_components(n_components: int, n_c: int) -> int:
    """Components a mixture gets for a class of n_c images: ``min(n_components, n_c)``."""
    return min(n_components, n_c)


def sample_gmm(x: np.ndarray, n: int, n_components: int, class_seed: int, cov_eps: float = 1e-6) -> np.ndarray:
    """n draws (n, d) float64 from a full-covariance GaussianMixture fitted on x (n_c, d).

    ``k = min(n_components, n_c)``. ``GaussianMixture.sample`` returns the draws grouped by
    component; they are shuffled (seeded) so that sample_index carries no component order.
    scikit-learn cannot fit one observation: a one-image class falls back to
    :func:`sample_gaussian`, i.e. the embedding plus N(0, cov_eps) jitter, as for 'gauss'.
    """
    from sklearn.mixture import GaussianMixture

    x = np.asarray(x, dtype=np.float64)
    if len(x) == 1:
        return sample_gaussian(x, n, np.random.default_rng(class_seed), cov_eps)
    k = gmm_components(n_components, len(x))
    gmm = GaussianMixture(n_components=k, covariance_type="full", reg_covar=cov_eps, random_state=class_seed)
    gmm.fit(x)
    if n == 0:
        return np.zeros((0, x.shape[1]))
    draws, _ = gmm.sample(n)
    return draws[np.random.default_rng(class_seed).permutation(n)]


def _check_table(embeddings: pd.DataFrame, method: str) -> None:
    if method not in METHODS:
        raise SamplingError(f"samplers.<name>.method: {method!r} is not one of {list(METHODS)}")
    require_columns(embeddings, ["label", "class_name"] + (["embedding"] if method != "text" else []),
                    "embeddings table", "expected the output of the embedding stage (image_id, label, class_name, "
                    "clip_embedding, embedding)", SamplingError)
    names = embeddings.groupby("label")["class_name"].nunique()
    if (names > 1).any():
        raise SamplingError(f"embeddings table: label(s) {names[names > 1].index.tolist()} have more than one "
                            "class_name; labels and class names must map one to one")


def _check_arguments(embeddings: pd.DataFrame, method: str, n_components: int, expansion: float, seed: int,
                     image_seed: int, n_shards: int, min_images: int, key: str) -> None:
    _check_table(embeddings, method)
    if min_images < 1:
        raise SamplingError(f"{key}.min_images: {min_images} must be >= 1")
    if expansion < 0:
        raise SamplingError(f"samplers.<name>.expansion: {expansion} must be >= 0")
    if n_shards < 1:
        raise SamplingError(f"generation.shards (n_shards): {n_shards} must be >= 1")
    if seed < 0 or image_seed < 0:
        raise SamplingError(f"samplers.<name>.seed / generation.seed: {seed}, {image_seed} must be >= 0")
    if method == "gmm" and n_components < 1:
        raise SamplingError(f"samplers.<name>.n_components: {n_components} must be >= 1")
    if len(embeddings) == 0:
        raise SamplingError("embeddings table: no rows; the embedding stage wrote an empty table")
    if method in DISTRIBUTION_METHODS:
        counts = embeddings.groupby("label").agg(n=("class_name", "size"), class_name=("class_name", "first"))
        few = counts[counts["n"] < min_images]
        if len(few):
            listed = ", ".join(f"{r['class_name']!r} (label {label}): {r['n']}" for label, r in few.iterrows())
            raise SamplingError(f"{key}.min_images is {min_images}, but {len(few)} class(es) have fewer training "
                                f"images after the validation split ({listed}); add images, lower "
                                f"config.split.val_fraction, or lower {key}.min_images (1 samples them anyway, "
                                "with a warning)")


def _class_vectors(label: int, group: pd.DataFrame, n: int, method: str, n_components: int, class_seed: int,
                   cov_eps: float) -> tuple[list, int]:
    """(n vectors of one class, the components fitted); the text baseline has no vectors."""
    if method == "text":
        return [None] * n, 0
    x = stack_vectors(group["embedding"], "embedding")
    if not np.isfinite(x).all():
        raise SamplingError(f"embeddings table: class {label} has non-finite embedding values")
    if method == "gauss":
        return list(sample_gaussian(x, n, np.random.default_rng(class_seed), cov_eps).astype(np.float32)), 1
    fitted = gmm_components(n_components, len(x))
    draws = sample_gmm(x, n, n_components, class_seed, cov_eps)
    if fitted < n_components:
        log.warning("class %d (%s): %d image(s), so the mixture has %d component(s), not the n_components %d "
                    "asked for; each component sits on one image", label, group["class_name"].iloc[0], len(x),
                    fitted, n_components)
    return list(draws.astype(np.float32)), fitted


def _warn_single_image(label: int, class_name: str, n: int, method: str, key: str) -> dict:
    """Log that a one-image class's samples are copies of its embedding; returns its record."""
    log.warning("class %d (%s): 1 training image, so all %d samples (method %s) are copies of its one embedding "
                "(plus N(0, cov_eps) jitter); add training images (or lower config.split.val_fraction), or set "
                "%s.min_images: 2 to make this an error", label, class_name, n, method, key)
    return {"label": label, "class_name": class_name, "n_samples": n}


def _class_samples(label: int, group: pd.DataFrame, *, method: str, n_components: int, expansion: float,
                   class_seed: int, image_seed: int, cov_eps: float) -> pd.DataFrame:
    """The sample rows of one class (every column of SAMPLE_COLUMNS but shard)."""
    n = n_generated(len(group), expansion)
    vectors, fitted = _class_vectors(label, group, n, method, n_components, class_seed, cov_eps)
    k = np.arange(n)
    return pd.DataFrame({
        "sample_id": [f"{label:04d}-{i:06d}" for i in k],
        "label": label,
        "class_name": str(group["class_name"].iloc[0]),
        "sample_index": k,
        "seed": [generation_seed(image_seed, label, int(i)) for i in k],
        "vector": pd.Series(vectors, dtype=object),
        "n_components": fitted,
    })


def sample_class_embeddings(
    embeddings: pd.DataFrame,
    *,
    method: Literal["gauss", "gmm", "text"],
    n_components: int = 1,
    expansion: float,
    seed: int,
    n_shards: int,
    cov_eps: float = 1e-6,
    per_class_seed: bool = True,
    image_seed: int | None = None,
    min_images: int = 1,
    key: str = "samplers.<name>",
) -> pd.DataFrame:
    """Draw the conditioning vectors of every image to generate (see the module docstring).

    Args:
        embeddings: one row per real training image with ``label`` (int), ``class_name`` (str)
            and ``embedding`` (equal-length float vectors, the projected d_cross embedding;
            not needed for method 'text'). Rows are used in (label, image_id) order when an
            ``image_id`` column exists, so the result does not depend on the input row order.
        method: 'gauss' (one Gaussian per class), 'gmm' (GaussianMixture with n_components)
            or 'text' (the text-only SD baseline: same counts and seeds, ``vector`` is null).
        n_components: mixture components for 'gmm' (clamped to n_c per class).
        expansion: images generated per real image (40 for CUB in the paper).
        seed: run seed (>= 0).
        n_shards: number of generation shards (>= 1).
        cov_eps: ridge added to the covariance diagonal (GMM: ``reg_covar``).
        per_class_seed: False seeds every class's sampler with 42 (the reference scheme).
        image_seed: run seed of the per-image generation seeds (``seed`` column); None: ``seed``.
        min_images: 'gauss' and 'gmm' fail (SamplingError naming ``<key>.min_images``) when a class has
            fewer embeddings; with 1 a one-image class is sampled, with a warning.
        key: the sampler's config key, for messages (``config.samplers.<name>``).

    Returns:
        DataFrame with columns SAMPLE_COLUMNS, sorted by (label, sample_index). ``attrs["single_image_classes"]``:
        ``[{label, class_name, n_samples}]`` of the 'gauss' / 'gmm' classes sampled from one embedding
        (:func:`write_samples` stores it in the file).
    """
    image_seed = seed if image_seed is None else image_seed
    _check_arguments(embeddings, method, n_components, expansion, seed, image_seed, n_shards, min_images, key)
    order = ["label", "image_id"] if "image_id" in embeddings.columns else ["label"]
    table = embeddings.sort_values(order, kind="stable")

    groups = table.groupby("label", sort=True)
    parts = [_class_samples(int(label), group, method=method, n_components=n_components, expansion=expansion,
                            class_seed=class_sampler_seed(seed, int(label), per_class_seed), image_seed=image_seed,
                            cov_eps=cov_eps)
             for label, group in tqdm(groups, total=groups.ngroups, desc=f"sampling ({method})", unit="class",
                                      mininterval=2)]
    samples = pd.concat(parts, ignore_index=True)
    samples["shard"] = np.arange(len(samples)) % n_shards
    samples = samples.astype({"sample_id": str, "label": "int64", "class_name": str, "sample_index": "int64",
                              "seed": "int64", "shard": "int64", "n_components": "int64"})
    samples = samples[SAMPLE_COLUMNS]
    samples.attrs["single_image_classes"] = [
        _warn_single_image(int(label), str(group["class_name"].iloc[0]), n_generated(1, expansion), method, key)
        for label, group in groups if len(group) == 1 and method in DISTRIBUTION_METHODS]
    return samples


def write_samples(samples: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write the samples table atomically; ``vector`` becomes a fixed-size list<float32> (or null).
    ``samples.attrs["single_image_classes"]`` goes to the file's metadata (:func:`single_image_classes`)."""
    table = pa.Table.from_pandas(samples.drop(columns=["vector"], errors="ignore"), preserve_index=False)
    if "vector" in samples.columns:
        table = table.append_column("vector", vector_array(samples["vector"]))
    meta = dict(table.schema.metadata or {})
    meta[SINGLE_IMAGE_META] = json.dumps(samples.attrs.get("single_image_classes", [])).encode()
    write_parquet(table.replace_schema_metadata(meta), path)


def single_image_classes(path: str | os.PathLike) -> list[dict]:
    """The classes a samples file drew from one embedding each (``[{label, class_name, n_samples}]``);
    [] for a file written before this was recorded."""
    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta[SINGLE_IMAGE_META]) if SINGLE_IMAGE_META in meta else []


def read_samples(path: str | os.PathLike, shard: int | None = None) -> pd.DataFrame:
    """Read a samples table (``vector`` as 1-D float32 arrays, or None); optionally one shard."""
    path = Path(path)
    if not path.is_file():
        raise SamplingError(f"{path}: samples table does not exist; run the sampling stage first")
    filters = [("shard", "==", int(shard))] if shard is not None else None
    samples = pq.read_table(path, filters=filters).to_pandas()
    # n_components is a record for the user, not an input of generation: tables written before it
    # existed still generate.
    require_columns(samples, [c for c in SAMPLE_COLUMNS if c != "n_components"], str(path),
                    "rebuild it with the sampling stage", SamplingError)
    return samples.reset_index(drop=True)
