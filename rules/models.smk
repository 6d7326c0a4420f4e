# Model backbones: tiny random SD and CLIP folders for the tests, and the mini world (a small
# SD and CLIP trained here from MNIST digits) for the demo.


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
        **job_resources("tiny_models"),
    conda:
        "../envs/sdi.yaml"
    script:
        "../workflow_scripts/tiny_models.py"


if config["models"]["mini"]:

    rule mini_world:
        output:
            # a marker in the working directory, not the cache folders (sdi.config.settings.mini_world_paths)
            MINI_WORLD["marker"],
        log:
            "logs/models/mini_world.log",
        benchmark:
            "benchmarks/models/mini_world.tsv"
        params:
            root=config["models"]["mini_root"],
            world=MINI_WORLD["world"],
        threads: job_threads("mini_world")
        resources:
            **job_resources("mini_world"),
        conda:
            "../envs/sdi.yaml"
        script:
            "../workflow_scripts/mini_world.py"
