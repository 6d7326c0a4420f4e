"""The tables the stages hand each other: one definition of each column set, and one check.

Each stage writes Parquet; the next one reads it. The column sets below are those contracts, in the
order the files hold them. :func:`require_columns` is the one check a reader makes: it names the
table, the missing columns and how to get a table that has them.
"""

from __future__ import annotations

from collections.abc import Iterable

# A dataset's manifest (readers, split, embeddings, export): one row per real image.
MANIFEST_COLUMNS = ["image_id", "path", "label", "class_name"]
# The sampling stage's table (samples/<sampler>.parquet): one row per image to generate.
SAMPLE_COLUMNS = ["sample_id", "label", "class_name", "sample_index", "seed", "shard", "vector", "n_components"]
# What generation reads of a sample (plus ``vector`` in SEI mode): the rest is a record for the user.
GENERATION_INPUT_COLUMNS = ("sample_id", "label", "class_name", "sample_index", "seed")
# A generation shard's manifest (sei/<variant>/shards/<i>.parquet): one row per generated image and its
# provenance (sdi.pipeline.provenance), enough to regenerate it, and the checksum of its PNG as written
# (sha256, file_size: manifests written before them lack them, and their images are checked by decoding).
SHARD_COLUMNS = [
    "sample_id", "label", "class_name", "sample_index", "seed", "shard", "path", "sha256", "file_size", "mode",
    "prompt", "negative_prompt", "vector_sha256", "scheduler", "scheduler_config", "steps", "guidance_scale",
    "eta", "dtype", "device", "height", "width", "model_id", "batch", "versions",
]
# What the filter reads of a shard manifest.
FILTER_INPUT_COLUMNS = ["sample_id", "label", "class_name", "path"]
# What the filter adds (filtered/manifest.parquet holds the shard columns and these).
FILTER_COLUMNS = ["score", "rank", "kept"]
# A classifier run's training set (train_set.parquet): one row per example of one epoch.
TRAINING_SET_COLUMNS = ["path", "label", "source", "variant"]


def require_columns(table, columns: Iterable[str], what: str, fix: str, error: type[Exception] = ValueError) -> None:
    """Raise ``error`` ("<what>: missing column(s) [...]; <fix>") unless ``table`` (a DataFrame) has every
    one of ``columns``."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise error(f"{what}: missing column(s) {missing}; {fix}")
