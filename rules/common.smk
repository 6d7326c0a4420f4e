# Shared helpers: config validation, wildcard constraints, input functions.
import re

import sdi  # sets the Hugging Face libraries offline before anything imports them
from snakemake.utils import validate

from sdi.config import (
    ConfigError,
    TINY_MODELS,
    enabled_datasets,
    model_paths,
    validate_config,
    variant_settings,
)

try:
    validate_config(config, workflow.source_path("../config/schema.yaml"))
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None
validate(config, "../config/schema.yaml")  # fills in schema defaults

DATASETS = list(config["datasets"])
MODELS = model_paths(config)


VARIANTS = list(config["variants"])
DEFAULT_VARIANT = config["default_variant"]
SHARDS = list(range(config["generation"]["shards"]))


def _alternation(names):
    return "|".join(re.escape(n) for n in names) or "(?!x)x"


wildcard_constraints:
    dataset=_alternation(DATASETS),
    variant=_alternation(VARIANTS),
    other_variant=_alternation(v for v in VARIANTS if v != DEFAULT_VARIANT),
    sampler=_alternation(config["samplers"]),
    run=_alternation(["real", *VARIANTS]),
    shard=r"\d+",


def dataset_entry(wildcards):
    entry = config["datasets"][wildcards.dataset]
    if not entry.get("root"):
        raise WorkflowError(
            f"config.datasets.{wildcards.dataset}.root is null: set it to the dataset folder "
            f"to build results/{wildcards.dataset}/"
        )
    return entry


def dataset_files(wildcards):
    """The metadata files of a dataset, so that editing them reruns the split."""
    entry = dataset_entry(wildcards)
    root = entry["root"]
    if entry["format"] == "cub":
        names = [
            "images.txt",
            "classes.txt",
            "image_class_labels.txt",
            "train_test_split.txt",
        ]
        return {"meta": [f"{root}/{n}" for n in names]}
    return {"root": root}


def model_input(*names):
    """Model folders built by the workflow (tiny models) are inputs; user folders are params."""
    if config["models"]["tiny"]:
        return {name: TINY_MODELS[name] for name in names}
    return {}


def variant(wildcards):
    """Resolved settings of a variant: its sampler plus generation/filter keys."""
    return variant_settings(config, wildcards.variant)


def sampler_of(variant_name):
    return config["variants"][variant_name]["sampler"]


def sampler_input(wildcards):
    """SEI samplers read the projected embeddings; the text baseline only the split."""
    if config["samplers"][wildcards.sampler]["method"] == "text":
        return {"split": f"results/{wildcards.dataset}/split"}
    return {"embeddings": f"results/{wildcards.dataset}/embeddings.parquet"}


def filtered_dir(dataset, variant_name):
    """The default variant's filtered set is results/<dataset>/filtered."""
    if variant_name == DEFAULT_VARIANT:
        return f"results/{dataset}/filtered"
    return f"results/{dataset}/sei/{variant_name}/filtered"


def shard_manifests(wildcards):
    v = (
        getattr(wildcards, "variant", None)
        or getattr(wildcards, "other_variant", None)
        or DEFAULT_VARIANT
    )
    return [f"results/{wildcards.dataset}/sei/{v}/shards/{i}.parquet" for i in SHARDS]


def classifier_synthetic(wildcards):
    if wildcards.run == "real":
        return {}
    return {"filtered": filtered_dir(wildcards.dataset, wildcards.run)}


def all_targets():
    targets = []
    for d in enabled_datasets(config):
        targets.append(f"results/{d}/split")
        targets += [filtered_dir(d, v) for v in VARIANTS]
        targets += [
            f"results/{d}/classifier/{run}/metrics.json"
            for run in config["classifier"]["runs"]
        ]
    return targets
