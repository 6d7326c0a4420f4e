# Wildcard constraints and input functions (the names they use come from rules/config.smk).
import re

from sdi.config.experiments import TRAINING_SET_KEYS, classifier_settings, run_snapshot
from sdi.config.validation import (
    TINY_MODELS,
    dataset_key,
    enabled_datasets,
    variant_settings,
    without_execution,
)
from sdi.data.readers.base import DatasetError
from sdi.data.readers.cub import CUB_FILES
from sdi.data.readers.medmnist import npz_path


def _alternation(names):
    return "|".join(re.escape(n) for n in names) or "(?!x)x"


wildcard_constraints:
    dataset=_alternation(DATASETS),
    variant=_alternation(VARIANTS),
    other_variant=_alternation(v for v in VARIANTS if v != DEFAULT_VARIANT),
    sampler=_alternation(config["samplers"]),
    method=_alternation(METHODS),
    seed=r"\d+",
    shard=r"\d+",


def methods_of(*protocols):
    """Constraint of a rule's method wildcard: the methods evaluated with one of ``protocols``."""
    return _alternation(m for m in METHODS if METHODS[m]["protocol"] in protocols)


def dataset_entry(wildcards):
    entry = config["datasets"][wildcards.dataset]
    if not entry.get("root"):
        raise WorkflowError(
            f"{dataset_key(wildcards.dataset)} is null: set it to the dataset folder "
            f"to build results/{wildcards.dataset}/"
        )
    return entry


def dataset_options(wildcards):
    return entry_options(dataset_entry(wildcards))


def dataset_files(wildcards):
    """What the split reads, so that any change to the dataset reruns it.

    The demo is written by rule demo_dataset: its metadata files and images folder.
    MedMNIST: the PNG folder of rule medmnist_images. Every other format: a listing of the
    dataset's files (path, size, mtime), written before the DAG is built (write_listings).
    """
    entry = dataset_entry(wildcards)
    root, fmt = entry["root"], entry["format"]
    if entry.get("builtin"):
        return {
            "meta": [f"{root}/{n}" for n in CUB_FILES],
            "images": f"{root}/images",
        }
    if fmt == "medmnist":
        return {"images": f"results/{wildcards.dataset}/images"}
    if wildcards.dataset in LISTING_ERRORS:
        raise WorkflowError(LISTING_ERRORS[wildcards.dataset])
    return {"listing": dataset_listing_path(wildcards.dataset)}


def split_root(wildcards):
    """The folder the split reads: the dataset root, or for MedMNIST its PNG folder."""
    if dataset_entry(wildcards)["format"] == "medmnist":
        return f"results/{wildcards.dataset}/images"
    return dataset_entry(wildcards)["root"]


def medmnist_npz(wildcards):
    """The dataset's official .npz file (config keys root, flag, size)."""
    entry = dataset_entry(wildcards)
    try:
        return npz_path(
            entry["root"],
            entry["flag"],
            entry["size"],
            dataset_key(wildcards.dataset),
        )
    except DatasetError as exc:
        raise WorkflowError(str(exc)) from None


def model_input(*names):
    """The model folders a job reads, as inputs: the mini world's marker (rule mini_world), the
    tiny models (rule tiny_models), or for a user's folder a listing of its files (path, size,
    mtime), rewritten at planning time only when the folder changes, so that swapped weights rerun
    every job that used them.
    """
    if config["models"]["mini"]:
        return {"mini_world": MINI_WORLD["marker"]}
    if config["models"]["tiny"]:
        return {name: TINY_MODELS[name] for name in names if name in TINY_MODELS}
    return {
        f"{name}_listing": model_listing_path(name)
        for name in names
        if MODELS.get(name)
    }


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


def filtered_variant(wildcards):
    """The variant a filter job keeps images of: rule filter's other_variant, or for rule
    filter_default (results/<dataset>/filtered) the default variant."""
    return getattr(wildcards, "other_variant", None) or DEFAULT_VARIANT


def shard_manifests(wildcards):
    """The generation shard manifests that a filter job reads."""
    v = filtered_variant(wildcards)
    return [f"results/{wildcards.dataset}/sei/{v}/shards/{i}.parquet" for i in SHARDS]


def classifier_synthetic(wildcards):
    """Synthetic images of a method: the variant's filtered set (pool kept) or its shard
    manifests (pool generated, which needs no filtering); nothing for real-only methods.
    A fine-tuning run reads classifier.weights too.
    """
    inputs = method_synthetic(wildcards.dataset, METHODS[wildcards.method])
    if METHODS[wildcards.method]["protocol"] == "finetune":
        inputs["weights"] = config["classifier"]["weights"]
    return inputs


def probe_inputs(wildcards):
    """A linear probe's embeddings: the real images' and, with a variant, the filter's (which
    stores every generated image's), plus the shard manifests for pool generated."""
    m = METHODS[wildcards.method]
    inputs = {
        "split": f"results/{wildcards.dataset}/split",
        "real_embeddings": f"results/{wildcards.dataset}/image_embeddings.parquet",
    }
    if m["variant"] is not None:
        inputs.update(method_synthetic(wildcards.dataset, m))
        inputs["filtered"] = filtered_dir(wildcards.dataset, m["variant"])
    return inputs


def method_synthetic(dataset, m):
    """The synthetic input of a resolved method (sdi.config.experiments.methods): shards, filtered or none."""
    if m["variant"] is None:
        return {}
    if m["pool"] == "generated":
        return {
            "shards": [
                f"results/{dataset}/sei/{m['variant']}/shards/{i}.parquet"
                for i in SHARDS
            ]
        }
    return {"filtered": filtered_dir(dataset, m["variant"])}


def run_settings(wildcards):
    """What the run trains with, by its protocol (sdi.config.experiments.classifier_settings)."""
    return classifier_settings(config, METHODS[wildcards.method], int(wildcards.seed))


def training_set_of(method):
    """How a resolved method's training set is built (sdi.pipeline.training_set.method_training_set)."""
    return {k: method[k] for k in TRAINING_SET_KEYS}


def training_set_settings(wildcards):
    return training_set_of(METHODS[wildcards.method])


def run_config_snapshot(wildcards):
    v = METHODS[wildcards.method]["variant"]
    settings = None if v is None else variant_settings(config, v)
    return run_snapshot(
        config, wildcards.dataset, wildcards.method, int(wildcards.seed), settings
    )


def classifier_runs(dataset, protocols=None):
    """[(method, seed, run folder)] of a dataset, in config order; only methods of ``protocols`` if given."""
    return [
        (m, s, f"results/{dataset}/classifier/{m}/seed{s}")
        for m in METHODS
        if protocols is None or METHODS[m]["protocol"] in protocols
        for s in SEEDS
    ]


def stage_benchmarks(dataset, method):
    """Benchmark files of the upstream stages a method needs, named after their logs
    (logs/X.log -> benchmarks/X.tsv); the summary counts those that exist."""
    v = METHODS[method]["variant"]
    probe = (
        [f"benchmarks/{dataset}/image_embeddings.tsv"]
        if METHODS[method]["protocol"] == "linear_probe"
        else []
    )
    if v is None:
        return probe
    files = [f"benchmarks/{dataset}/split.tsv", *probe]
    if variant_settings(config, v)["mode"] == "sei":
        files += [
            f"benchmarks/{dataset}/train_projector.tsv",
            f"benchmarks/{dataset}/embeddings.tsv",
        ]
    files.append(f"benchmarks/{dataset}/sample_{sampler_of(v)}.tsv")
    files += [f"benchmarks/{dataset}/{v}/generate_{i}.tsv" for i in SHARDS]
    files.append(
        f"benchmarks/{dataset}/filter.tsv"
        if v == DEFAULT_VARIANT
        else f"benchmarks/{dataset}/{v}/filter.tsv"
    )
    return files


def diagnostics_samples(wildcards):
    """SEI variants: their sampler's vectors; the text baseline has none."""
    settings = variant_settings(config, wildcards.variant)
    if settings["mode"] != "sei":
        return {}
    return {
        "samples": f"results/{wildcards.dataset}/samples/{settings['sampler']}.parquet"
    }


def summary_runs():
    """Every classifier run of the enabled datasets: {dataset, method, seed, metrics}."""
    return [
        {"dataset": d, "method": m, "seed": s, "metrics": f"{r}/metrics.json"}
        for d in enabled_datasets(config)
        for m, s, r in classifier_runs(d)
    ]


def summary_metrics(wildcards):
    return [r["metrics"] for r in summary_runs()]


def report_targets(dataset):
    """Per-dataset report figures and diagnostics."""
    targets = [
        f"results/{dataset}/report/training_curves.png",
        f"results/{dataset}/report/overview.png",
    ]
    for v in VARIANTS:
        targets += [
            f"results/{dataset}/report/{v}/{name}.png"
            for name in ("grid", "scores", "counts")
        ]
        targets.append(f"results/{dataset}/diagnostics/{v}/summary.json")
    return targets


def all_targets():
    targets = []
    for d in enabled_datasets(config):
        targets.append(f"results/{d}/split")
        targets += [filtered_dir(d, v) for v in VARIANTS]
        targets += [f"{r}/metrics.json" for _, _, r in classifier_runs(d)]
        targets += report_targets(d)
    if enabled_datasets(config):
        targets += [f"results/summary.{ext}" for ext in ("csv", "md", "html", "png")]
    return targets
