# Downstream classifier (METHOD sections 7-8): ResNet50 from scratch on real (+ copies, + synthetic).
# One job per dataset x method x seed of config.experiments (see sdi/evaluation/summary.py).


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
    params:
        out_dir="results/{dataset}/classifier/{method}/seed{seed}",
        settings=classifier_settings,
        training_set=training_set_settings,
        snapshot=run_config_snapshot,
    threads: job_threads("train_classifier")
    resources:
        **job_resources("train_classifier"),
    conda:
        "../envs/sdi.yaml"
    script:
        "../workflow_scripts/train_classifier.py"
