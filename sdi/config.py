"""Config validation with messages that name the key and the fix.

The schema (config/schema.yaml) is the single description of every key; this module
turns jsonschema's errors into one readable report and adds the checks a schema cannot
express (folders that must exist, models that must fit together).
"""

from __future__ import annotations

from pathlib import Path

import jsonschema
import yaml

from sdi.models import ModelFolderError, model_dims

TINY_MODELS = {"sd": "resources/models/tiny/sd", "clip": "resources/models/tiny/clip"}


class ConfigError(ValueError):
    """The configuration is invalid; the message lists every problem with its key."""


def _dotted(path) -> str:
    return ".".join(["config", *(str(p) for p in path)])


def _describe(error: jsonschema.ValidationError) -> str:
    where = _dotted(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        if allowed:
            return "; ".join(f"{where}.{k}: unknown key; allowed keys here: {', '.join(allowed)}" for k in extra)
    if error.validator == "required":
        return f"{where}: {error.message}; add it (see config/schema.yaml)"
    if error.validator in ("type", "enum"):
        return f"{where}: {error.message}; expected {error.validator_value}"
    return f"{where}: {error.message}"


def schema_errors(config: dict, schema: dict) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    return [_describe(e) for e in errors]


def enabled_datasets(config: dict) -> list[str]:
    """Datasets that `all` builds: those with a root (builtin ones always have one)."""
    return [name for name, entry in config["datasets"].items() if entry.get("root")]


def model_paths(config: dict) -> dict[str, str | None]:
    """{'sd', 'vae', 'clip'} folders in use: the tiny models or the configured ones."""
    models = config["models"]
    if models["tiny"]:
        return {"sd": TINY_MODELS["sd"], "vae": None, "clip": TINY_MODELS["clip"]}
    return {k: models.get(k) for k in ("sd", "vae", "clip")}


def path_errors(config: dict) -> list[str]:
    problems = []
    for name, entry in config["datasets"].items():
        root = entry.get("root")
        if root and not entry.get("builtin") and not Path(root).is_dir():
            problems.append(f"config.datasets.{name}.root: folder {root} does not exist; set it to the "
                            f"dataset folder ({entry.get('format')} layout) or to null to leave it out")
    models = config["models"]
    if not models["tiny"]:
        missing = [k for k in ("sd", "clip") if not models.get(k)]
        for k in missing:
            problems.append(f"config.models.{k}: not set; with models.tiny: false, point it at a local folder")
        if not missing:
            try:
                model_dims(models["sd"], models["clip"], models.get("vae"))
            except ModelFolderError as exc:
                problems.append(f"config.{exc}")
    return problems


def reference_errors(config: dict) -> list[str]:
    """Names that must refer to other entries: samplers, the default variant, classifier runs."""
    problems = []
    for name, entry in config["variants"].items():
        if entry["sampler"] not in config["samplers"]:
            problems.append(f"config.variants.{name}.sampler: {entry['sampler']!r} is not a key of samplers "
                            f"({', '.join(config['samplers'])})")
    if config["default_variant"] not in config["variants"]:
        problems.append(f"config.default_variant: {config['default_variant']!r} is not a key of variants "
                        f"({', '.join(config['variants'])})")
    for run in config.get("classifier", {}).get("runs", []):
        if run != "real" and run not in config["variants"]:
            problems.append(f"config.classifier.runs: {run!r} is neither 'real' nor a key of variants")
    return problems


GENERATION_OVERRIDES = ("guidance_scale", "steps", "scheduler")


def variant_settings(config: dict, name: str) -> dict:
    """A variant's resolved settings: sampler entry, generation keys (with the variant's
    overrides), keep_ratio and the filter score. Everything a variant's artifacts depend on is in here."""
    entry = config["variants"][name]
    generation = dict(config["generation"])
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


def validate_config(config: dict, schema_path: str | Path) -> None:
    """Raise ConfigError listing every schema violation and missing path in config."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    problems = schema_errors(config, schema)
    if not problems:
        problems = reference_errors(config) + path_errors(config)
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
