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


# The real images' CLIP embeddings (train, val, test), with the filter's CLIP, once per dataset:
# with the filter's stored embeddings of the generated images they are all the linear probe reads.
rule image_embeddings:
    input:
        unpack(lambda w: model_input("clip")),
        split="results/{dataset}/split",
    output:
        "results/{dataset}/image_embeddings.parquet",
    log:
        "logs/{dataset}/image_embeddings.log",
    benchmark:
        "benchmarks/{dataset}/image_embeddings.tsv"
    params:
        models=MODELS,
        filter_clip=config["models"]["filter_clip"],
        dtype=config["generation"]["dtype"],
    threads: job_threads("image_embeddings")
    resources:
        **job_resources("image_embeddings"),
    conda:
        "../envs/sdi.yaml"
    script:
        "../workflow_scripts/image_embeddings.py"
