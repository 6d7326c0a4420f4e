# Filtering (METHOD section 6): CLIP score per generated image, keep the top per class.
# One rule for every variant; the default variant's copy only writes to results/<dataset>/filtered.


rule filter:
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
        filter_clip=config["models"]["filter_clip"],
        keep_ratio=lambda w: variant_settings(config, filtered_variant(w))["keep_ratio"],
        score=lambda w: variant_settings(config, filtered_variant(w))["score"],
        dtype=config["generation"]["dtype"],
    threads: job_threads("filter")
    resources:
        **job_resources("filter"),
    conda:
        "../envs/sdi.yaml"
    script:
        "../workflow_scripts/filter.py"


use rule filter as filter_default with:
    output:
        directory("results/{dataset}/filtered"),
    log:
        "logs/{dataset}/filter.log",
    benchmark:
        "benchmarks/{dataset}/filter.tsv"
