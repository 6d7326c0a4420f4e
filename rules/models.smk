# Model backbones: tiny random SD and CLIP folders for the demo and the tests.


rule tiny_models:
    output:
        sd=directory(TINY_MODELS["sd"]),
        clip=directory(TINY_MODELS["clip"]),
    log:
        "logs/models/tiny_models.log",
    conda:
        "../envs/sdi.yaml"
    params:
        seed=0,
    script:
        "../workflow_scripts/tiny_models.py"
