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
)

try:
    validate_config(config, workflow.source_path("../config/schema.yaml"))
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None
validate(config, "../config/schema.yaml")  # fills in schema defaults

DATASETS = list(config["datasets"])
MODELS = model_paths(config)


wildcard_constraints:
    dataset="|".join(DATASETS),


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
        names = ["images.txt", "classes.txt", "image_class_labels.txt", "train_test_split.txt"]
        return {"meta": [f"{root}/{n}" for n in names]}
    return {"root": root}


def model_input(*names):
    """Model folders built by the workflow (tiny models) are inputs; user folders are params."""
    if config["models"]["tiny"]:
        return {name: TINY_MODELS[name] for name in names}
    return {}


def all_targets():
    targets = [f"results/{d}/split" for d in enabled_datasets(config)]
    targets += list(model_input("sd", "clip").values())
    return targets
