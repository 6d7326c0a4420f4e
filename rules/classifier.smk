# Downstream evaluation (docs/method.md sections 7-8; README "Choosing an evaluation protocol"): one job per
# dataset x method x seed of config.experiments (see sdi/evaluation/summary.py). Methods of protocol
# scratch (ResNet50 from scratch, the paper's) or finetune (local pretrained weights) train a network
# here; linear_probe methods fit a logistic regression on stored CLIP embeddings. Both write the same
# metrics.json fields in the same run folder. Which protocol runs where: sdi/config/protocols.py.
from sdi.config.experiments import classifier_settings, run_snapshot
from sdi.config.protocols import PROBED, PROTOCOLS, TRAINED
from sdi.config.settings import variant_settings


def methods_of(protocols):
    """Constraint of a rule's method wildcard: the methods evaluated with one of ``protocols``."""
    return _alternation(m for m in METHODS if METHODS[m]["protocol"] in protocols)


def classifier_synthetic(wildcards):
    """Synthetic images of a method: the variant's filtered set (pool kept) or its shard
    manifests (pool generated, which needs no filtering); nothing for real-only methods.
    A protocol that starts from pretrained weights (finetune) reads classifier.weights too.
    """
    m = METHODS[wildcards.method]
    inputs = method_synthetic(wildcards.dataset, m)
    if PROTOCOLS[m["protocol"]].uses_weights:
        inputs["weights"] = config["classifier"]["weights"]
    return inputs


def probe_inputs(wildcards):
    """A linear probe's embeddings: the real images' and, with a variant, the filter's (which
    stores every generated image's), plus the shard manifests for pool generated."""
    m = METHODS[wildcards.method]
    inputs = {
        "split": paths.split(wildcards.dataset),
        "real_embeddings": paths.image_embeddings(wildcards.dataset),
    }
    if m["variant"] is not None:
        inputs.update(method_synthetic(wildcards.dataset, m))
        inputs["filtered"] = filtered_dir(wildcards.dataset, m["variant"])
    return inputs


def run_settings(wildcards):
    """What the run trains with, by its protocol (sdi.config.experiments.classifier_settings)."""
    return classifier_settings(config, METHODS[wildcards.method], int(wildcards.seed))


def run_config_snapshot(wildcards):
    v = METHODS[wildcards.method]["variant"]
    settings = None if v is None else variant_settings(config, v)
    return run_snapshot(
        config, wildcards.dataset, wildcards.method, int(wildcards.seed), settings
    )


rule train_classifier:
    input:
        unpack(classifier_synthetic),
        split=paths.split(),
    output:
        metrics=f"{paths.run_dir()}/metrics.json",
        log_csv=f"{paths.run_dir()}/log.csv",
        run_config=f"{paths.run_dir()}/config.yaml",
    log:
        "logs/{dataset}/classifier/{method}/seed{seed}.log",
    benchmark:
        "benchmarks/{dataset}/classifier/{method}/seed{seed}.tsv"
    wildcard_constraints:
        method=methods_of(TRAINED),
    params:
        out_dir=paths.run_dir(),
        settings=run_settings,
        training_set=lambda w: training_set_of(METHODS[w.method]),
        snapshot=run_config_snapshot,
    threads: job_threads("train_classifier")
    resources:
        **job_resources("train_classifier"),
    conda:
        "../envs/sdi.yaml"
    script:
        "../workflow_scripts/train_classifier.py"


# The probe runs on CPU cores in minutes, from embeddings stored by the filter and image_embeddings.
rule linear_probe:
    input:
        unpack(probe_inputs),
    output:
        metrics=f"{paths.run_dir()}/metrics.json",
        log_csv=f"{paths.run_dir()}/log.csv",
        run_config=f"{paths.run_dir()}/config.yaml",
    log:
        "logs/{dataset}/classifier/{method}/seed{seed}.log",
    benchmark:
        "benchmarks/{dataset}/classifier/{method}/seed{seed}.tsv"
    wildcard_constraints:
        method=methods_of(PROBED),
    params:
        out_dir=paths.run_dir(),
        settings=run_settings,
        training_set=lambda w: training_set_of(METHODS[w.method]),
        snapshot=run_config_snapshot,
    threads: job_threads("linear_probe")
    resources:
        **job_resources("linear_probe"),
    conda:
        "../envs/sdi.yaml"
    script:
        "../workflow_scripts/linear_probe.py"
