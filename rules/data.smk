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
    wildcard_constraints:
        root="|".join(
            re.escape(e["root"])
            for e in config["datasets"].values()
            if e.get("builtin") == "sklearn_digits"
        )
        or "(?!x)x",
    conda:
        "../envs/sdi.yaml"
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
    conda:
        "../envs/sdi.yaml"
    threads: 4
    params:
        format=lambda w: dataset_entry(w)["format"],
        root=lambda w: dataset_entry(w)["root"],
        val_fraction=config["split"]["val_fraction"],
        val_source=config["split"]["val_source"],
        seed=config["split"]["seed"],
    script:
        "../workflow_scripts/split.py"
