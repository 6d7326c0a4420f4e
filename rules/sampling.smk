# SEI sampling (docs/method.md section 4): conditioning vectors per class, one table per sampler.
# Variants that share a sampler (e.g. two guidance scales) share its samples. SEI samplers read the
# projected embeddings; the text baseline only the split.
from sdi.config.settings import without_checks


rule sample:
    input:
        unpack(
            branch(
                lookup(dpath="samplers/{sampler}/method", within=config),
                cases={"text": {"split": paths.split()}},
                otherwise={"embeddings": paths.embeddings()},
            )
        ),
    output:
        paths.samples(),
    log:
        "logs/{dataset}/sample_{sampler}.log",
    benchmark:
        "benchmarks/{dataset}/sample_{sampler}.tsv"
    params:
        # less its check-only min_images (sdi.config.settings.CHECK_ONLY), which the job reads
        sampler=lambda w: without_checks("sampler", config["samplers"][w.sampler]),
        shards=config["generation"]["shards"],
        run_seed=config["generation"]["seed"],
    threads: job_threads("sample")
    resources:
        **job_resources("sample"),
    conda:
        "../envs/sdi.yaml"
    script:
        "../workflow_scripts/sample.py"
