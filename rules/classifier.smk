# Downstream evaluation (METHOD sections 7-8; README "Choosing an evaluation protocol"): one job per
# dataset x method x seed of config.experiments (see sdi/evaluation/summary.py). Methods of protocol
# scratch (ResNet50 from scratch, the paper's) or finetune (local pretrained weights) train a network
# here; linear_probe methods fit a logistic regression on stored CLIP embeddings. Both write the same
# metrics.json fields in the same run folder.


rule train_classifier:
    input:
        unpack(classifier_synthetic),
        split="results/{dataset}/split",
    output:
        metrics="results/{dataset}/classifier/{method}/seed{seed}/metrics.json",
        log_csv="results/{dataset}/classifier/{method}/seed{seed}/log.csv",
        run_config="results/{dataset}/classifier/{method}/seed{seed}/config.yaml",
    log:
        "logs/{dataset}/classifier/{method}/seed{seed}.log",
    benchmark:
        "benchmarks/{dataset}/classifier/{method}/seed{seed}.tsv"
    wildcard_constraints:
        method=methods_of("scratch", "finetune"),
    params:
        out_dir="results/{dataset}/classifier/{method}/seed{seed}",
        settings=run_settings,
        training_set=training_set_settings,
        snapshot=run_config_snapshot,
    threads: job_threads("train_classifier")
    resources:
        **job_resources("train_classifier"),
    conda:
        "../envs/sdi.yaml"
    script:
        "../workflow_scripts/train_classifier.py"


# The probe runs on CPU cores in minutes, from embeddings stored by the filter and image_embeddings.
rule linear_probe:
    input:
        unpack(probe_inputs),
    output:
        metrics="results/{dataset}/classifier/{method}/seed{seed}/metrics.json",
        log_csv="results/{dataset}/classifier/{method}/seed{seed}/log.csv",
        run_config="results/{dataset}/classifier/{method}/seed{seed}/config.yaml",
    log:
        "logs/{dataset}/classifier/{method}/seed{seed}.log",
    benchmark:
        "benchmarks/{dataset}/classifier/{method}/seed{seed}.tsv"
    wildcard_constraints:
        method=methods_of("linear_probe"),
    params:
        out_dir="results/{dataset}/classifier/{method}/seed{seed}",
        settings=run_settings,
        training_set=training_set_settings,
        snapshot=run_config_snapshot,
    threads: job_threads("linear_probe")
    resources:
        **job_resources("linear_probe"),
    conda:
        "../envs/sdi.yaml"
    script:
        "../workflow_scripts/linear_probe.py"
