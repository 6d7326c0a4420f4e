# Downstream classifier (METHOD section 7): ResNet50 from scratch on real (+ kept synthetic).


rule train_classifier:
    input:
        unpack(classifier_synthetic),
        split="results/{dataset}/split",
    output:
        metrics="results/{dataset}/classifier/{run}/metrics.json",
        log_csv="results/{dataset}/classifier/{run}/log.csv",
    log:
        "logs/{dataset}/classifier_{run}.log",
    conda:
        "../envs/sdi.yaml"
    threads: 2
    params:
        out_dir="results/{dataset}/classifier/{run}",
        settings={k: v for k, v in config["classifier"].items() if k != "runs"},
        device=config["device"],
    script:
        "../workflow_scripts/train_classifier.py"
