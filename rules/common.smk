# Wildcard constraints and the input functions that several stages share (the names they use come
# from rules/config.smk); each stage's own functions sit in its .smk file, above its rules.
import re

from sdi.config import paths
from sdi.config.experiments import TRAINING_SET_KEYS
from sdi.config.settings import TINY_MODELS, enabled_datasets


def _alternation(names):
    return "|".join(re.escape(n) for n in names) or "(?!x)x"


wildcard_constraints:
    dataset=_alternation(DATASETS),
    variant=_alternation(VARIANTS),
    other_variant=_alternation(v for v in VARIANTS if v != DEFAULT_VARIANT),
    sampler=_alternation(config["samplers"]),
    method=_alternation(METHODS),
    seed=r"\d+",
    shard=r"\d+",


def model_input(*names):
    """The model folders a job reads, as inputs: the mini world's marker (rule mini_world), the
    tiny models (rule tiny_models), or for a user's folder a listing of its files (path, size,
    mtime), rewritten at planning time only when the folder changes, so that swapped weights rerun
    every job that used them.
    """
    if config["models"]["mini"]:
        return {"mini_world": MINI_WORLD["marker"]}
    if config["models"]["tiny"]:
        return {name: TINY_MODELS[name] for name in names if name in TINY_MODELS}
    return {
        f"{name}_listing": model_listing_path(name)
        for name in names
        if MODELS.get(name)
    }


def filtered_dir(dataset, variant_name):
    """The default variant's filtered set is results/<dataset>/filtered."""
    return paths.filtered_dir(
        dataset, None if variant_name == DEFAULT_VARIANT else variant_name
    )


def method_synthetic(dataset, m):
    """The synthetic input of a resolved method (sdi.config.experiments.methods): shards, filtered or none."""
    if m["variant"] is None:
        return {}
    if m["pool"] == "generated":
        return {"shards": [paths.shard(dataset, m["variant"], i) for i in SHARDS]}
    return {"filtered": filtered_dir(dataset, m["variant"])}


def training_set_of(method):
    """How a resolved method's training set is built (sdi.pipeline.training_set.method_training_set)."""
    return {k: method[k] for k in TRAINING_SET_KEYS}


def classifier_runs(dataset, protocols=None):
    """[(method, seed, run folder)] of a dataset, in config order; only methods of ``protocols`` if given."""
    return [
        (m, s, paths.run_dir(dataset, m, s))
        for m in METHODS
        if protocols is None or METHODS[m]["protocol"] in protocols
        for s in SEEDS
    ]


def all_targets():
    """What `all` builds per enabled dataset: the split, every variant's filtered set, every
    classifier run, the report figures and diagnostics (rules/report.smk); then the summary.
    """
    targets = []
    for d in enabled_datasets(config):
        targets.append(paths.split(d))
        targets += [filtered_dir(d, v) for v in VARIANTS]
        targets += [f"{r}/metrics.json" for _, _, r in classifier_runs(d)]
        targets += report_targets(d)
    if enabled_datasets(config):
        targets += collect(paths.summary(), ext=["csv", "md", "html", "png"])
    return targets
