# SEI sampling (METHOD section 4): conditioning vectors per class, one table per sampler.
# Variants that share a sampler (e.g. two guidance scales) share its samples.


rule sample:
    input:
        unpack(sampler_input),
    output:
        "results/{dataset}/samples/{sampler}.parquet",
    log:
        "logs/{dataset}/sample_{sampler}.log",
    benchmark:
        "benchmarks/{dataset}/sample_{sampler}.tsv"
    params:
        sampler=lambda w: config["samplers"][w.sampler],
        shards=config["generation"]["shards"],
        run_seed=config["generation"]["seed"],
    threads: job_threads("sample")
    resources:
        **job_resources("sample"),
    conda:
        "../envs/sdi.yaml"
    script:
        "../workflow_scripts/sample.py"
