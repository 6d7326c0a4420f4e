# Semantic projector (docs/method.md section 2) and embedding extraction (section 3).


rule train_projector:
    input:
        unpack(lambda w: model_input("sd", "clip")),
        split=paths.split(),
    output:
        projector=directory(paths.projector_dir()),
        loss=paths.projector_loss(),
    log:
        "logs/{dataset}/train_projector.log",
    benchmark:
        "benchmarks/{dataset}/train_projector.tsv"
    params:
        models=MODELS,
        # Checkpoints live beside the outputs but are not outputs, so a killed or
        # requeued job resumes from them instead of Snakemake deleting them.
        checkpoint_dir=paths.projector_checkpoints(),
        settings=config["projector"],
    threads: job_threads("train_projector")
    resources:
        **job_resources("train_projector"),
    conda:
        "../envs/sdi.yaml"
    script:
        "../workflow_scripts/train_projector.py"


rule embeddings:
    input:
        unpack(lambda w: model_input("clip")),
        split=paths.split(),
        projector=paths.projector_dir(),
    output:
        paths.embeddings(),
    log:
        "logs/{dataset}/embeddings.log",
    benchmark:
        "benchmarks/{dataset}/embeddings.tsv"
    params:
        models=MODELS,
    threads: job_threads("embeddings")
    resources:
        **job_resources("embeddings"),
    conda:
        "../envs/sdi.yaml"
    script:
        "../workflow_scripts/embeddings.py"
