# Dataset stage: the embedded demo dataset and the train/val/test manifests.


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
    conda:
        "../envs/sdi.yaml"
    threads: job_threads("demo_dataset")
    resources:
        **job_placement("demo_dataset"),
        mem_mb=job_mem_mb("demo_dataset"),
        runtime=job_runtime("demo_dataset"),
    params:
        options=config["demo_data"],
    script:
        "../workflow_scripts/demo_dataset.py"


rule split:
    input:
        unpack(dataset_files),
    output:
        directory("results/{dataset}/split"),
    log:
        "logs/{dataset}/split.log",
    benchmark:
        "benchmarks/{dataset}/split.tsv"
    conda:
        "../envs/sdi.yaml"
    threads: job_threads("split")
    resources:
        **job_placement("split"),
        mem_mb=job_mem_mb("split"),
        runtime=job_runtime("split"),
    params:
        format=lambda w: dataset_entry(w)["format"],
        root=lambda w: dataset_entry(w)["root"],
        val_fraction=config["split"]["val_fraction"],
        val_source=config["split"]["val_source"],
        seed=config["split"]["seed"],
    script:
        "../workflow_scripts/split.py"
