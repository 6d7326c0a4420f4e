# Export (README "Using the augmented dataset"): a method's exact training set, with the split's
# val and test images, as a dataset folder (ImageFolder + Hugging Face metadata, optional
# WebDataset shards). On demand only: `snakemake results/<dataset>/export/<method>`.
import os

from sdi.config.experiments import methods, run_snapshot
from sdi.config.settings import variant_settings

# `default`: real + the kept images of default_variant, unless a method is named so.
DEFAULT_EXPORT = {"variant": DEFAULT_VARIANT}


def export_method(wildcards):
    """The resolved method (sdi.config.experiments.methods) that results/<dataset>/export/<name> writes."""
    name = wildcards.export
    if name in METHODS:
        return METHODS[name]
    if name == "default":
        return methods({**config, "experiments": {"methods": {name: DEFAULT_EXPORT}}})[
            name
        ]
    raise WorkflowError(
        f"results/{wildcards.dataset}/export/{name}: {name!r} is not a key of config.experiments.methods; "
        f"export one of: {', '.join(METHODS)}, or 'default' (real + the kept images of default_variant "
        f"{DEFAULT_VARIANT!r})"
    )


def export_input(wildcards):
    return {
        **method_synthetic(wildcards.dataset, export_method(wildcards)),
        "split": paths.split(wildcards.dataset),
    }


def export_training_set(wildcards):
    return training_set_of(export_method(wildcards))


def export_settings(wildcards):
    """What the export came from (its README and export.json): the run snapshot less the classifier."""
    name = wildcards.export
    entry = config["experiments"]["methods"].get(name) if name in METHODS else None
    cfg = {**config, "experiments": {"methods": {name: entry or DEFAULT_EXPORT}}}
    variant_name = export_method(wildcards)["variant"]
    snapshot = run_snapshot(
        cfg,
        wildcards.dataset,
        name,
        0,
        None if variant_name is None else variant_settings(config, variant_name),
    )
    return {k: v for k, v in snapshot.items() if k not in ("seed", "classifier")}


def export_command(wildcards):
    """The command that rebuilds the export, with the config files given on the command line."""
    files = [os.path.relpath(f) for f in workflow.overwrite_configfiles]
    command = (
        f"snakemake --cores all results/{wildcards.dataset}/export/{wildcards.export}"
    )
    return command + (f" --configfile {' '.join(files)}" if files else "")


rule export:
    input:
        unpack(export_input),
    output:
        directory("results/{dataset}/export/{export}"),
    log:
        "logs/{dataset}/export/{export}.log",
    benchmark:
        "benchmarks/{dataset}/export/{export}.tsv"
    wildcard_constraints:
        export=r"[^/]+",
    params:
        training_set=export_training_set,
        settings=export_settings,
        # webdataset, shard_size and link (copy | hardlink | symlink): each changes what is
        # written, so as params a change reruns the export
        options=config["export"],
        command=export_command,
    threads: job_threads("export")
    resources:
        **job_resources("export"),
    conda:
        "../envs/sdi.yaml"
    script:
        "../workflow_scripts/export.py"
