# Filtering (METHOD section 6): CLIP score per generated image, keep the top per class.


rule filter_default:
    input:
        unpack(lambda w: model_input("clip")),
        shards=shard_manifests,
    output:
        directory("results/{dataset}/filtered"),
    log:
        "logs/{dataset}/filter.log",
    benchmark:
        "benchmarks/{dataset}/filter.tsv"
    params:
        models=MODELS,
        filter_clip=config["models"].get("filter_clip"),
        keep_ratio=lambda w: variant_settings(config, DEFAULT_VARIANT)["keep_ratio"],
        score=lambda w: variant_settings(config, DEFAULT_VARIANT)["score"],
        dtype=config["generation"]["dtype"],
    threads: job_threads("filter")
    resources:
        **job_placement("filter"),
        mem_mb=job_mem_mb("filter"),
        runtime=job_runtime("filter"),
        gpu=job_gpus("filter"),
    conda:
        "../envs/sdi.yaml"
    script:
        "../workflow_scripts/filter.py"


use rule filter_default as filter with:
    input:
        unpack(lambda w: model_input("clip")),
        shards=shard_manifests,
    output:
        directory("results/{dataset}/sei/{other_variant}/filtered"),
    log:
        "logs/{dataset}/{other_variant}/filter.log",
    benchmark:
        "benchmarks/{dataset}/{other_variant}/filter.tsv"
    params:
        models=MODELS,
        filter_clip=config["models"].get("filter_clip"),
        keep_ratio=lambda w: variant_settings(config, w.other_variant)["keep_ratio"],
        score=lambda w: variant_settings(config, w.other_variant)["score"],
        dtype=config["generation"]["dtype"],
