# Semantic projector (METHOD section 2) and embedding extraction (section 3).


rule train_projector:
    input:
        unpack(lambda w: model_input("sd", "clip")),
        split="results/{dataset}/split",
    output:
        projector=directory("results/{dataset}/projector/final"),
        loss="results/{dataset}/projector/loss.csv",
    log:
        "logs/{dataset}/train_projector.log",
    conda:
        "../envs/sdi.yaml"
    threads: 2
    params:
        models=MODELS,
        # Checkpoints live beside the outputs but are not outputs, so a killed or
        # requeued job resumes from them instead of Snakemake deleting them.
        checkpoint_dir="results/{dataset}/projector/checkpoints",
        settings=config["projector"],
        device=config["device"],
    script:
        "../workflow_scripts/train_projector.py"


rule embeddings:
    input:
        unpack(lambda w: model_input("clip")),
        split="results/{dataset}/split",
        projector="results/{dataset}/projector/final",
    output:
        "results/{dataset}/embeddings.parquet",
    log:
        "logs/{dataset}/embeddings.log",
    conda:
        "../envs/sdi.yaml"
    threads: 2
    params:
        models=MODELS,
        batch_size=config["embeddings"]["batch_size"],
        device=config["device"],
    script:
        "../workflow_scripts/embeddings.py"
