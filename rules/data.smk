# Dataset stage: the embedded demo dataset, MedMNIST arrays as PNG files and the
# train/val/test manifests.
from sdi.data.readers.base import DatasetError
from sdi.data.readers.cub import CUB_FILES
from sdi.data.readers.medmnist import npz_path


def dataset_entry(wildcards):
    entry = config["datasets"][wildcards.dataset]
    if not entry.get("root"):
        raise WorkflowError(
            f"{dataset_key(wildcards.dataset)} is null: set it to the dataset folder "
            f"to build results/{wildcards.dataset}/"
        )
    return entry


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
        return {"images": paths.medmnist_images(wildcards.dataset)}
    if wildcards.dataset in LISTING_ERRORS:
        raise WorkflowError(LISTING_ERRORS[wildcards.dataset])
    return {"listing": dataset_listing_path(wildcards.dataset)}


def split_root(wildcards):
    """The folder the split reads: the dataset root, or for MedMNIST its PNG folder."""
    if dataset_entry(wildcards)["format"] == "medmnist":
        return paths.medmnist_images(wildcards.dataset)
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


rule demo_dataset:
    output:
        meta=[
            "{root}/images.txt",
            "{root}/classes.txt",
            "{root}/image_class_labels.txt",
            "{root}/train_test_split.txt",
        ],
        images=directory("{root}/images"),
    log:
        "logs/demo_dataset/{root}.log",
    benchmark:
        "benchmarks/demo_dataset/{root}.tsv"
    wildcard_constraints:
        root=_alternation(
            e["root"]
            for e in config["datasets"].values()
            if e.get("builtin") == "sklearn_digits" and e.get("root")
        ),
    params:
        options=config["demo_data"],
    threads: job_threads("demo_dataset")
    resources:
        **job_resources("demo_dataset"),
    conda:
        "../envs/sdi.yaml"
    script:
        "../workflow_scripts/demo_dataset.py"


rule mini_dataset:
    output:
        meta=[
            "{root}/images.txt",
            "{root}/classes.txt",
            "{root}/image_class_labels.txt",
            "{root}/train_test_split.txt",
        ],
        images=directory("{root}/images"),
    log:
        "logs/mini_dataset/{root}.log",
    benchmark:
        "benchmarks/mini_dataset/{root}.tsv"
    wildcard_constraints:
        root=_alternation(
            e["root"]
            for e in config["datasets"].values()
            if e.get("builtin") == "mini_world" and e.get("root")
        ),
    params:
        options=config["mini_data"],
    threads: job_threads("mini_dataset")
    resources:
        **job_resources("mini_dataset"),
    conda:
        "../envs/sdi.yaml"
    script:
        "../workflow_scripts/mini_dataset.py"


rule medmnist_images:
    input:
        npz=medmnist_npz,
    output:
        directory(paths.medmnist_images()),
    log:
        "logs/{dataset}/medmnist_images.log",
    benchmark:
        "benchmarks/{dataset}/medmnist_images.tsv"
    wildcard_constraints:
        dataset=_alternation(
            name for name, e in config["datasets"].items() if e["format"] == "medmnist"
        ),
    params:
        flag=lookup(dpath="datasets/{dataset}/flag", within=config),
        size=lookup(dpath="datasets/{dataset}/size", within=config),
    threads: job_threads("medmnist_images")
    resources:
        **job_resources("medmnist_images"),
    conda:
        "../envs/sdi.yaml"
    script:
        "../workflow_scripts/medmnist_images.py"


rule split:
    input:
        unpack(dataset_files),
    output:
        directory(paths.split()),
    log:
        "logs/{dataset}/split.log",
    benchmark:
        "benchmarks/{dataset}/split.tsv"
    params:
        format=lookup(dpath="datasets/{dataset}/format", within=config),
        root=split_root,
        options=lambda w: entry_options(dataset_entry(w)),
        val_fraction=config["split"]["val_fraction"],
        val_source=config["split"]["val_source"],
        seed=config["split"]["seed"],
    threads: job_threads("split")
    resources:
        **job_resources("split"),
    conda:
        "../envs/sdi.yaml"
    script:
        "../workflow_scripts/split.py"
