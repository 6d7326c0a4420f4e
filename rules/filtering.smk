# Filtering (docs/method.md section 6): CLIP score per generated image, keep the top per class.
# One rule for every variant; the default variant's copy only writes to results/<dataset>/filtered.
from sdi.config.settings import variant_settings


def filtered_variant(wildcards):
    """The variant a filter job keeps images of: rule filter's other_variant, or for rule
    filter_default (results/<dataset>/filtered) the default variant."""
    return getattr(wildcards, "other_variant", None) or DEFAULT_VARIANT


def filter_settings(wildcards):
    return variant_settings(config, filtered_variant(wildcards))


rule filter:
    input:
        unpack(lambda w: model_input("clip")),
        shards=lambda w: [
            paths.shard(w.dataset, filtered_variant(w), i) for i in SHARDS
        ],
    output:
        directory(paths.filtered_dir(variant="{other_variant}")),
    log:
        "logs/{dataset}/{other_variant}/filter.log",
    benchmark:
        "benchmarks/{dataset}/{other_variant}/filter.tsv"
    params:
        models=MODELS,
        filter_clip=config["models"]["filter_clip"],
        keep_ratio=lambda w: filter_settings(w)["keep_ratio"],
        score=lambda w: filter_settings(w)["score"],
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
        directory(paths.filtered_dir(variant=None)),
    log:
        "logs/{dataset}/filter.log",
    benchmark:
        "benchmarks/{dataset}/filter.tsv"


# The real images' CLIP embeddings (train, val, test), with the filter's CLIP, once per dataset:
# with the filter's stored embeddings of the generated images they are all the linear probe reads.
rule image_embeddings:
    input:
        unpack(lambda w: model_input("clip")),
        split=paths.split(),
    output:
        paths.image_embeddings(),
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
