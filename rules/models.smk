# Model backbones: tiny random SD and CLIP folders for the demo and the tests.


rule tiny_models:
    output:
        sd=directory(TINY_MODELS["sd"]),
        clip=directory(TINY_MODELS["clip"]),
    log:
        "logs/models/tiny_models.log",
    benchmark:
        "benchmarks/models/tiny_models.tsv"
    params:
        seed=0,
    threads: job_threads("tiny_models")
    resources:
        **job_placement("tiny_models"),
        mem_mb=job_mem_mb("tiny_models"),
        runtime=job_runtime("tiny_models"),
    conda:
        "../envs/sdi.yaml"
    script:
        "../workflow_scripts/tiny_models.py"
