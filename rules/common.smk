# Shared helpers: config validation, wildcard constraints, input functions.
import re

import sdi  # sets the Hugging Face libraries offline before anything imports them

from sdi.config.validation import ConfigError, TINY_MODELS, device_problem, enabled_datasets, mini_world_paths, model_paths, validate_config, variant_settings, without_execution
from sdi.data.readers.cub import CUB_FILES
from sdi.data.readers.base import DatasetError
from sdi.data.readers import dataset_listing
from sdi.io.fingerprints import ListingError, list_files, write_listing
from sdi.data.readers.medmnist import npz_path
from sdi.models.folders import filter_clip_errors, projector_fit_errors
from sdi.config.experiments import TRAINING_SET_KEYS, experiment_errors, methods, run_snapshot
from sdi.config.tracking import tracking_problem

# Once, before anything reads config: the schema's checks (each problem named with its key),
# its defaults filled in, then references between keys and folders (sdi.config.validation).
try:
    validate_config(config, workflow.source_path("../config/schema.yaml"))
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None
_method_problems = experiment_errors(config)
if _method_problems:
    raise WorkflowError("invalid configuration:\n  " + "\n  ".join(_method_problems))
if tracking_problem(config):  # e.g. tracking.wandb set without the wandb package
    raise WorkflowError(tracking_problem(config))


onstart:
    # Before any job (not in dry runs): a GPU device that this machine lacks fails here,
    # not in the middle of the pipeline.
    if device_problem(config, workflow.local_exec):
        raise WorkflowError(device_problem(config, workflow.local_exec))


DATASETS = list(config["datasets"])
MODELS = model_paths(config)
# the mini world's cache folder and working-directory marker (sdi.config.validation.mini_world_paths), once
MINI_WORLD = mini_world_paths(config) if config["models"]["mini"] else None
# A trained projector fixes d_clip and d_cross: models of other sizes fail here, not in a job;
# so does a models.filter_clip entry whose files are missing or cut short.
_misfits = projector_fit_errors(
    MODELS, {d: f"results/{d}/projector/final" for d in DATASETS}
) + [f"config.{e}" for e in filter_clip_errors(config["models"]["filter_clip"])]
if _misfits:
    raise WorkflowError("invalid configuration:\n  " + "\n  ".join(_misfits))


VARIANTS = list(config["variants"])
DEFAULT_VARIANT = config["default_variant"]
TEXT_VARIANTS = [
    v
    for v in VARIANTS
    if config["samplers"][config["variants"][v]["sampler"]]["method"] == "text"
]
SHARDS = list(range(config["generation"]["shards"]))
METHODS = methods(config)
SEEDS = config["experiments"]["seeds"]


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


def dataset_entry(wildcards):
    entry = config["datasets"][wildcards.dataset]
    if not entry.get("root"):
        raise WorkflowError(
            f"config.datasets.{wildcards.dataset}.root is null: set it to the dataset folder "
            f"to build results/{wildcards.dataset}/"
        )
    return entry


# Input listings of user folders (sdi.io.fingerprints), written while planning.
LISTINGS = ".snakemake/sdi/listings"


def dataset_listing_path(dataset):
    return f"{LISTINGS}/{dataset}.tsv"


def model_listing_path(name):
    return f"{LISTINGS}/models/{name}.tsv"


def entry_options(entry):
    """The format's own keys of a dataset entry (e.g. partition for dtd)."""
    return {k: v for k, v in entry.items() if k not in ("format", "root", "builtin")}


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
            f"config.datasets.{wildcards.dataset}.root",
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


def write_listings():
    """Write the listing of every user folder a job may read, before Snakemake builds the DAG.

    Snakemake caches what it has seen of a folder while it builds the DAG, so a listing that an
    input function writes then can be reported missing (MissingInputException) on the first
    call. Written here, every listing is in place however the DAG is entered (all, a targeted
    results/<dataset>/..., -n). Each is rewritten only when its folder changed. A dataset whose
    folder cannot be listed fails only the targets that need it (dataset_files raises its error).
    Jobs started by a cluster executor skip this: the main process wrote the listings already.
    """
    errors = {}
    for name, entry in config["datasets"].items():
        if (
            not entry.get("root")
            or entry.get("builtin")
            or entry["format"] == "medmnist"
        ):
            continue
        key = f"config.datasets.{name}.root"
        try:
            write_listing(
                dataset_listing_path(name),
                dataset_listing(
                    entry["format"], entry["root"], key, entry_options(entry)
                ),
            )
        except DatasetError as exc:
            errors[name] = str(exc)
        except ListingError as exc:
            errors[name] = f"{key}: {exc}"
    if not config["models"]["tiny"] and not config["models"]["mini"]:
        for name, folder in MODELS.items():
            if folder:
                try:
                    write_listing(model_listing_path(name), list_files(folder))
                except ListingError as exc:
                    raise WorkflowError(f"config.models.{name}: {exc}") from None
    return errors


LISTING_ERRORS = (
    {} if workflow.remote_exec or workflow.subprocess_exec else write_listings()
)


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
    """
    return method_synthetic(wildcards.dataset, METHODS[wildcards.method])


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


def classifier_settings(wildcards):
    """config.classifier with the method's augmentation and the run's seed."""
    m = METHODS[wildcards.method]
    return {
        **without_execution("classifier", config["classifier"]),
        "augment": m["augment"],
        "augment_at": m["augment_at"],
        "seed": int(wildcards.seed),
    }


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


def classifier_runs(dataset):
    """[(method, seed, run folder)] of a dataset, in config order."""
    return [
        (m, s, f"results/{dataset}/classifier/{m}/seed{s}")
        for m in METHODS
        for s in SEEDS
    ]


def stage_benchmarks(dataset, method):
    """Benchmark files of the upstream stages a method needs, named after their logs
    (logs/X.log -> benchmarks/X.tsv); the summary counts those that exist."""
    v = METHODS[method]["variant"]
    if v is None:
        return []
    files = [f"benchmarks/{dataset}/split.tsv"]
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


# --- Job resources: config.resources (what a job needs) and config.cluster (where it runs).
# Local runs use threads and the gpu resource; the SLURM profile turns all of them into
# sbatch options (profiles/slurm/, README "Run on a cluster").


def job_threads(rule_name):
    return config["resources"][rule_name]["cpus"]


def job_mem_mb(rule_name):
    """config.resources.<rule>.mem_mb on the first attempt, n times it on attempt n (--retries)."""
    base = config["resources"][rule_name]["mem_mb"]
    return lambda wildcards, attempt: base * attempt


def job_runtime(rule_name):
    return config["resources"][rule_name]["runtime"]


def job_gpus(rule_name):
    return config["resources"][rule_name]["gpus"]


def job_placement(rule_name):
    """SLURM placement from config.cluster (account, partition, qos and, for jobs with
    GPUs, GPU model and constraint); unset keys are left out of the sbatch call."""
    cluster = config["cluster"]
    gpu = config["resources"][rule_name].get("gpus", 0) > 0
    placement = {
        "slurm_account": cluster["account"],
        "slurm_partition": (gpu and cluster["gpu_partition"]) or cluster["partition"],
        "qos": cluster["qos"],
        "gpu_model": cluster["gpu_model"] if gpu else None,
        "constraint": cluster["gpu_constraint"] if gpu else None,
    }
    return {k: v for k, v in placement.items() if v is not None}
