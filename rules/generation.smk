# Generation (docs/method.md section 5): one job per shard of a variant's samples.
from sdi.config.settings import variant_settings


def variant(wildcards):
    """Resolved settings of a variant: its sampler plus generation/filter keys."""
    return variant_settings(config, wildcards.variant)


rule generate:
    input:
        unpack(lambda w: model_input("sd", "vae")),
        samples=lambda w: paths.samples(w.dataset, variant(w)["sampler"]),
    output:
        paths.shard(),
    log:
        "logs/{dataset}/{variant}/generate_{shard}.log",
    benchmark:
        "benchmarks/{dataset}/{variant}/generate_{shard}.tsv"
    params:
        models=MODELS,
        # Images go to <out_dir>/images/: a per-image resumable cache (each PNG carries
        # its provenance and is reused only if it matches); the declared output is the
        # shard manifest that lists them, with each PNG's sha256: a later job that finds a
        # PNG changed removes it and this manifest, so that this job reruns for it.
        out_dir=paths.variant_dir(),
        shard=lambda w: int(w.shard),
        mode=lambda w: variant(w)["mode"],
        options=lambda w: variant(w)["generation"],
    threads: job_threads("generate")
    resources:
        **job_resources("generate"),
    conda:
        "../envs/sdi.yaml"
    script:
        "../workflow_scripts/generate.py"
