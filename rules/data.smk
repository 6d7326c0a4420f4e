# Dataset stage: the embedded demo dataset, MedMNIST arrays as PNG files and the
# train/val/test manifests.


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
        directory("results/{dataset}/images"),
    log:
        "logs/{dataset}/medmnist_images.log",
    benchmark:
        "benchmarks/{dataset}/medmnist_images.tsv"
    wildcard_constraints:
        dataset=_alternation(
            name for name, e in config["datasets"].items() if e["format"] == "medmnist"
        ),
    params:
        flag=lambda w: dataset_entry(w)["flag"],
        size=lambda w: dataset_entry(w)["size"],
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
        directory("results/{dataset}/split"),
    log:
        "logs/{dataset}/split.log",
    benchmark:
        "benchmarks/{dataset}/split.tsv"
    params:
        format=lambda w: dataset_entry(w)["format"],
        root=split_root,
        options=dataset_options,
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
