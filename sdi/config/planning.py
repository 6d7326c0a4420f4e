"""Every check the workflow makes while it plans, in one call: ``check_config``.

``rules/config.smk`` calls it once, before any rule reads the config. Each problem names its key
and the fix; one ConfigError lists them all. Nothing here imports torch or pandas (but for a
classifier.weights file), so a dry run of a bad config fails in about a second. In order, each stage
only when the one before passed:

1. the schema (config/schema.yaml), then its defaults filled in, then references between keys,
   folders that must exist and ``mini_data`` against the mini world's held-out digits
   (:func:`sdi.config.validation.validate_config`);
2. the experiment matrix (:func:`sdi.config.experiments.experiment_errors`) and ``tracking``
   (:func:`sdi.config.tracking.tracking_problem`: wandb set but not installed);
3. the models against what is already built: a trained projector fixes the CLIP and SD widths
   (:func:`sdi.models.folders.projector_fit_errors`), ``models.filter_clip`` must be complete, and
   ``classifier.weights`` must fit ``classifier.arch`` (:func:`backbone_errors`, which imports torch,
   only when weights are set).

:func:`device_problem` (a GPU device this machine lacks) is not here: it holds only for jobs run on
this machine, so the workflow checks it when it starts jobs, not in dry runs or on a login node.
"""

from __future__ import annotations

from pathlib import Path

from sdi.config.experiments import experiment_errors, methods
from sdi.config.paths import projector_dir
from sdi.config.protocols import WEIGHTED
from sdi.config.settings import model_paths
from sdi.config.tracking import tracking_problem
from sdi.config.validation import ConfigError, device_problem, validate_config
from sdi.models.folders import filter_clip_errors, projector_fit_errors

__all__ = ["ConfigError", "check_config", "device_problem"]


def _raise(problems: list[str]) -> None:
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))


def check_config(config: dict, schema_path: str | Path) -> None:
    """Validate ``config`` (filling in the schema's defaults, in place) and every planning-time check;
    raise ConfigError listing every problem, each with its key."""
    validate_config(config, schema_path)
    problem = tracking_problem(config)
    _raise(experiment_errors(config) + ([problem] if problem else []))
    projectors = {d: projector_dir(d) for d in config["datasets"]}
    _raise(projector_fit_errors(model_paths(config), projectors)
           + [f"config.{e}" for e in filter_clip_errors(config["models"]["filter_clip"])]
           + backbone_errors(config))


def backbone_errors(config: dict) -> list[str]:
    """``classifier.weights`` against ``classifier.arch`` (tensor names and shapes, read without loading the
    file), and ``classifier.finetune.frozen`` against the architecture's modules, when a method fine-tunes
    (the weights file whenever it is set). Imports torch only then."""
    classifier = config["classifier"]
    finetune = any(m["protocol"] in WEIGHTED for m in methods(config).values())
    if not classifier.get("weights") and not finetune:
        return []
    from sdi.models.backbones import frozen_problems, weights_problems

    arch = classifier.get("arch", "resnet50")
    weights = classifier.get("weights")
    problems = [f"config.classifier.weights: {p}" for p in (weights_problems(arch, weights) if weights else [])]
    if finetune:
        problems += [f"config.classifier.finetune.frozen: {p}"
                     for p in frozen_problems(arch, classifier["finetune"]["frozen"])]
    return problems


def target_errors(targets, config: dict) -> list[str]:
    """Targets under ``results/`` whose dataset, variant, method or sampler this config does not have, each
    with the names it does have. Without this a mistyped ``results/cubb/filtered`` is Snakemake's bare
    MissingRuleException, as the rules' wildcards only match the config's names. Other targets (rule
    names, other files) are Snakemake's to judge."""
    datasets, problems = config["datasets"], []
    variants, samplers = list(config["variants"]), list(config["samplers"])
    method_names = list(methods(config))
    for target in sorted(map(str, targets)):
        parts = target.removeprefix("./").split("/")
        if parts[0] != "results" or len(parts) < 3:
            continue
        name = parts[1]
        if name not in datasets:
            problems.append(f"target {target}: {name!r} is not a dataset of this config (config.datasets: "
                            f"{', '.join(datasets)}); fix the name or add the dataset under datasets:")
            continue
        if not datasets[name].get("root"):
            problems.append(f"target {target}: config.datasets.{name}.root is null; set it to the dataset "
                            "folder (in your config file or with --config)")
            continue
        kind, item = parts[2], parts[3] if len(parts) > 3 else None
        # results/<dataset>/export/<name>: rules/export.smk names the methods and 'default' itself
        allowed = {"sei": variants, "diagnostics": variants, "classifier": method_names, "samples": samplers}.get(kind)
        if kind == "report" and len(parts) > 4:
            allowed = variants
        if kind == "samples" and item:
            item = item.removesuffix(".parquet")
        if allowed is not None and item and item not in allowed:
            key = {"classifier": "experiments.methods", "samples": "samplers"}.get(kind, "variants")
            problems.append(f"target {target}: {item!r} is not a key of config.{key} ({', '.join(allowed)})")
    return problems
