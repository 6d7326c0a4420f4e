# Generation (METHOD section 5): one job per shard of a variant's samples.


rule generate:
    input:
        unpack(lambda w: model_input("sd")),
        samples=lambda w: f"results/{w.dataset}/samples/{sampler_of(w.variant)}.parquet",
    output:
        "results/{dataset}/sei/{variant}/shards/{shard}.parquet",
    log:
        "logs/{dataset}/{variant}/generate_{shard}.log",
    params:
        models=MODELS,
        # Images are a per-image resumable cache next to the shard manifests; the
        # manifest (the declared output) lists the images of this shard.
        image_dir="results/{dataset}/sei/{variant}/images",
        shard=lambda w: int(w.shard),
        mode=lambda w: variant(w)["mode"],
        settings=lambda w: variant(w)["generation"],
        device=config["device"],
    threads: 2
    script:
        "../workflow_scripts/generate.py"
