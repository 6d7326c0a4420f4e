"""What rules and jobs read from a validated config: the model folders in use, a variant's resolved
settings, a dataset's config key, and which keys say how a job runs (execution-only) or whether it may go on
(check-only) rather than what it computes, so that params and run snapshots leave them out.

Nothing here checks anything: the checks are in :mod:`sdi.config.validation` (the schema and what it cannot
express) and :mod:`sdi.config.planning` (everything planning checks, in one call).
"""

from __future__ import annotations

from pathlib import Path

import yaml

TINY_MODELS = {"sd": "resources/models/tiny/sd", "clip": "resources/models/tiny/clip"}


# Execution-only settings: how and where a job runs, not what it computes. Changing them
# reruns nothing: rules do not pass them as params, jobs read them from the config, and
# run snapshots leave them out (config/schema.yaml marks each with `x-execution-only`).
# Inference batch sizes are here because a batch changes no result beyond float summation
# order (generation: at most 1 level in under 0.1% of 8-bit values); the training batch
# sizes (projector.batch_size, classifier.batch_size) are hyperparameters and are not.
EXECUTION_ONLY = {
    "device": None,
    "resources": None,
    "cluster": None,
    "tracking": None,
    "embeddings": ("batch_size",),
    "generation": ("batch_size", "compile"),
    "filter": ("batch_size",),
    "diagnostics": ("batch_size",),
    "classifier": ("num_workers",),
}


# Check-only settings: whether a job may go on with an input that it then warns about (a class without
# test images, a class sampled from one image), not what the job computes. Like the execution-only settings
# they are in no params and no run snapshot, so that setting one, or the default it gets, reruns nothing;
# jobs read them from the config. Keyed by section, "sampler" for each entry of samplers.
CHECK_ONLY = {"split": ("allow_missing_test_classes",), "sampler": ("min_images",)}


def without_checks(kind: str, values: dict) -> dict:
    """A config section (or, for ``sampler``, one sampler's entry) without its check-only keys."""
    return {k: v for k, v in values.items() if k not in CHECK_ONLY.get(kind, ())}


def execution_only_paths() -> list[str]:
    """Dotted config paths of the execution-only settings (``device``, ``generation.batch_size``, ...)."""
    return [k if keys is None else f"{k}.{sub}" for k, keys in EXECUTION_ONLY.items() for sub in (keys or [None])]


def without_execution(section: str, values: dict) -> dict:
    """A config section without its execution-only keys (what params and snapshots may carry)."""
    drop = EXECUTION_ONLY.get(section) or ()
    return {k: v for k, v in values.items() if k not in drop}


def execution_settings(config: dict, section: str | None = None) -> dict:
    """The execution-only settings a job reads from the config at run time: ``device`` and,
    for a section, its execution-only keys (e.g. ``generation`` -> batch_size, compile)."""
    settings = {"device": config.get("device", "auto")}
    for key in EXECUTION_ONLY.get(section) or ():
        if key in config.get(section, {}):
            settings[key] = config[section][key]
    return settings


def dataset_key(name: str, field: str = "root") -> str:
    """The config key of a dataset entry's field, as messages name it: ``config.datasets.<name>.<field>``."""
    return f"config.datasets.{name}.{field}"


def enabled_datasets(config: dict) -> list[str]:
    """Datasets that `all` builds: those with a root (builtin ones always have one)."""
    return [name for name, entry in config["datasets"].items() if entry.get("root")]


def mini_world_paths(config: dict) -> dict[str, str]:
    """{'world', 'sd', 'clip', 'marker'}: the mini world that ``models.mini`` selects.

    The world is ``{models.mini_root}/{first 16 hex of the recipe hash}`` (sdi.models.mini_world.world_folder),
    a cache shared by working directories. Jobs take the marker, a file in the working directory
    named by the same hash, as their input, never the cache folders: Snakemake deletes a rule's
    outputs before it reruns the rule, and the cache is not the working directory's to delete. A new
    recipe or library version is a new hash, so every job that used the old world reruns.
    """
    from sdi.models.mini_world import Recipe, world_folder

    world = world_folder(Path(config["models"]["mini_root"]).expanduser(), Recipe())
    return {"world": world.as_posix(), "sd": f"{world.as_posix()}/sd", "clip": f"{world.as_posix()}/clip",
            "marker": f"resources/models/mini-world-{world.name}.json"}


def model_paths(config: dict) -> dict[str, str | None]:
    """{'sd', 'vae', 'clip'} folders in use: the mini world, the tiny models or the configured ones."""
    models = config["models"]
    if models.get("mini"):
        world = mini_world_paths(config)
        return {"sd": world["sd"], "vae": None, "clip": world["clip"]}
    if models["tiny"]:
        return {"sd": TINY_MODELS["sd"], "vae": None, "clip": TINY_MODELS["clip"]}
    return {k: models.get(k) for k in ("sd", "vae", "clip")}


GENERATION_OVERRIDES = ("guidance_scale", "steps", "scheduler")


def variant_settings(config: dict, name: str) -> dict:
    """A variant's resolved settings: sampler entry, generation keys (with the variant's
    overrides), keep_ratio and the filter score. Everything a variant's artifacts depend on is in here."""
    entry = config["variants"][name]
    generation = without_execution("generation", config["generation"])
    generation.update({k: entry[k] for k in GENERATION_OVERRIDES if k in entry})
    generation.pop("shards")
    generation.pop("seed")  # enters through the samples' per-image seeds
    sampler = config["samplers"][entry["sampler"]]
    return {
        "sampler": entry["sampler"],
        "mode": "text" if sampler["method"] == "text" else "sei",
        "generation": generation,
        "keep_ratio": entry.get("keep_ratio", config["filter"]["keep_ratio"]),
        "score": entry.get("score", config["filter"].get("score", "cosine")),
    }


def merged_config_files(*files: str | Path) -> dict:
    """Config files merged key by key, later files winning, as Snakemake merges ``--configfile``
    over the Snakefile's ``configfile:`` (e.g. config/config.yaml then config/paper/cub.yaml)."""
    def merge(base: dict, new: dict) -> dict:
        for k, v in new.items():
            base[k] = merge(base.get(k) or {}, v) if isinstance(v, dict) else v
        return base

    config: dict = {}
    for f in files:
        merge(config, yaml.safe_load(Path(f).read_text()) or {})
    return config
