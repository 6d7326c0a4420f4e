"""Config validation with messages that name the key and the fix.

The schema (config/schema.yaml) is the single description of every key; this module
turns jsonschema's errors into one readable report and adds the checks a schema cannot
express (folders that must exist, models that must fit together).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import jsonschema
import yaml

# Moved to sdi.config.settings (they read a config, they check nothing); importable from here as before.
from sdi.config.settings import (  # noqa: F401
    CHECK_ONLY,
    EXECUTION_ONLY,
    GENERATION_OVERRIDES,
    TINY_MODELS,
    dataset_key,
    enabled_datasets,
    execution_only_paths,
    execution_settings,
    merged_config_files,
    mini_world_paths,
    model_paths,
    variant_settings,
    without_checks,
    without_execution,
)


class ConfigError(ValueError):
    """The configuration is invalid; the message lists every problem with its key."""


def device_problem(config: dict, local: bool) -> str | None:
    """Why ``config.device`` cannot work for jobs run on this machine, or None.

    Only for local execution: a cluster's login node need not have the GPUs its jobs get.
    GPUs are counted from the NVIDIA driver without importing torch (this runs while
    Snakemake starts the workflow)."""
    device = str(config.get("device", "auto"))
    if not local or not device.startswith("cuda"):
        return None
    from sdi.io.jobs import visible_gpu_count

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    n = visible_gpu_count()
    if visible is not None:
        n = min(n, len([g for g in visible.split(",") if g.strip() not in ("", "-1")]))
    index = int(device.partition(":")[2] or 0)
    if index < n:
        return None
    return (f"config.device: {device!r} but this machine has {n} usable GPU(s); set device to auto or cpu "
            "(auto uses a GPU when the job sees one), or run on a machine or cluster with GPUs")


def _dotted(path) -> str:
    """jsonschema's path of an error as messages name keys: ``config.mini_data.looks[0][1]``."""
    return "config" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def _describe(error: jsonschema.ValidationError) -> str:
    """One line naming the key and what it may be; a schema's ``x-hint`` (e.g. what a mini_data look
    may hold) is appended to every error of the value it describes."""
    where = _dotted(error.absolute_path)
    hint = f" ({error.schema['x-hint']})" if isinstance(error.schema, dict) and "x-hint" in error.schema else ""
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        if allowed:
            return "; ".join(f"{where}.{k}: unknown key; allowed keys here: {', '.join(allowed)}" for k in extra)
    if error.validator == "required":
        return f"{where}: {error.message}; add it (see config/schema.yaml)"
    if error.validator == "enum":
        return f"{where}: {error.instance!r} is not one of {', '.join(map(str, error.validator_value))}{hint}"
    if error.validator == "type":
        return f"{where}: {error.message}; expected {error.validator_value}{hint}"
    return f"{where}: {error.message}{hint}"


def schema_errors(config: dict, schema: dict) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    return [_describe(e) for e in errors]


def mini_world_errors(config: dict) -> list[str]:
    """A mini world folder that is there but incomplete or corrupt (sdi.models.mini_world.verify_world).

    Snakemake trusts an output folder that exists, so a truncated or edited world would otherwise
    reach every job; a folder that is not there yet is built by rule mini_world.
    """
    from sdi.models.mini_world import MiniWorldError, Recipe, verify_world

    world = Path(mini_world_paths(config)["world"])
    if not world.exists():
        return []
    try:
        verify_world(world, Recipe())
    except MiniWorldError as exc:
        return [f"config.models.mini_root: {exc} (the next snakemake call builds it)"]
    return []


def mini_data_errors(config: dict) -> list[str]:
    """``config.mini_data`` against what the mini world's target dataset can hold, when a dataset is
    ``builtin: mini_world`` (and has a root): the checks of :func:`sdi.data.mini_corpus.target_problems`
    (numpy only), each line ``config.mini_data.<key>: ...`` with the valid values or the largest that fits."""
    if not any(e.get("builtin") == "mini_world" and e.get("root") for e in config["datasets"].values()):
        return []
    from sdi.data.mini_corpus import target_problems

    options = config["mini_data"]
    return [f"config.mini_data.{p}" for p in target_problems(
        looks=options["looks"], train_per_class=options["train_per_class"], test_per_class=options["test_per_class"],
        classes_by=options["classes_by"], look_names=options["look_names"], digits=options["digits"])]


# Keys that name a folder or file of the user's: ``~`` in them means the home folder, as in a shell.
USER_PATHS = (("models", "sd"), ("models", "vae"), ("models", "clip"), ("classifier", "weights"))


def expand_user_paths(config: dict) -> dict:
    """``~`` and ``~user`` expanded in place in every dataset's ``root`` and in :data:`USER_PATHS`, so that a
    config written as for a shell (``root: ~/data/pets``) names the folder the user means. The jobs read
    the same expanded values, so a path never differs between planning and a job."""
    for entry in config.get("datasets", {}).values():
        if isinstance(entry.get("root"), str):
            entry["root"] = os.path.expanduser(entry["root"])
    for section, key in USER_PATHS:
        value = config.get(section, {}).get(key)
        if isinstance(value, str):
            config[section][key] = os.path.expanduser(value)
    return config


def _ignored_folders(models: dict, switch: str, uses: str, instead: str) -> list[str]:
    """models.sd / vae / clip set while ``models.<switch>`` selects other models, which would ignore them."""
    given = [k for k in ("sd", "vae", "clip") if models.get(k)]
    if not given:
        return []
    return [f"config.models.{switch} is true, which uses {uses}, and "
            f"{', '.join(f'config.models.{k}' for k in given)} is set too; set models.{switch} "
            f"to false to use your folders, or {' and '.join(f'models.{k}' for k in given)} to null for {instead}"]


def path_errors(config: dict) -> list[str]:
    problems = []
    for name, entry in config["datasets"].items():
        root = entry.get("root")
        if not root or entry.get("builtin"):
            continue
        try:
            missing = not Path(root).is_dir()
        except OSError:  # a folder above it cannot be searched: its listing names the folder, for this dataset alone
            missing = False
        if missing:
            problems.append(f"{dataset_key(name)}: folder {root} does not exist; set it to the "
                            f"dataset folder ({entry.get('format')} layout) or to null to leave it out")
    models = config["models"]
    if models.get("mini"):
        problems += _ignored_folders(models, "mini", "the mini world's models", "the mini world")
        problems += mini_world_errors(config)
    elif models["tiny"]:
        # tiny: true is config/config.yaml's value, so an overlay that only sets its model folders would
        # otherwise run on the random tiny models and produce noise without a word.
        problems += _ignored_folders(models, "tiny", "tiny random models (config/config.yaml's smoke test)",
                                     "the smoke test")
    else:
        missing = [k for k in ("sd", "clip") if not models.get(k)]
        for k in missing:
            problems.append(f"config.models.{k}: not set; with models.tiny: false, point it at a local folder")
        if not missing:
            from sdi.models.folders import ModelFolderError, model_dims

            try:
                model_dims(models["sd"], models["clip"], models.get("vae"))
            except ModelFolderError as exc:
                problems.append(f"config.{exc}")
    return problems


def reference_errors(config: dict) -> list[str]:
    """Names that must refer to other entries: each variant's sampler, the default variant."""
    problems = []
    for name, entry in config["variants"].items():
        if entry["sampler"] not in config["samplers"]:
            problems.append(f"config.variants.{name}.sampler: {entry['sampler']!r} is not a key of samplers "
                            f"({', '.join(config['samplers'])})")
    if config["default_variant"] not in config["variants"]:
        problems.append(f"config.default_variant: {config['default_variant']!r} is not a key of variants "
                        f"({', '.join(config['variants'])})")
    return problems


# generation.scheduler: 'ddim' (the method's DDIMScheduler settings, docs/method.md section 5) or a
# diffusers scheduler class that StableDiffusionPipeline takes (its KarrasDiffusionSchedulers,
# less DPMSolverSDEScheduler, which needs the torchsde package). Listed here so that planning
# can check the name without importing diffusers; a test checks each against diffusers.
SCHEDULERS = ("ddim", "DDIMScheduler", "DDPMScheduler", "PNDMScheduler", "LMSDiscreteScheduler",
              "EulerDiscreteScheduler", "HeunDiscreteScheduler", "EulerAncestralDiscreteScheduler",
              "DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler", "KDPM2DiscreteScheduler",
              "KDPM2AncestralDiscreteScheduler", "DEISMultistepScheduler", "UniPCMultistepScheduler",
              "EDMEulerScheduler")


# classifier.arch: torchvision's classification models (torchvision.models.list_models(module=
# torchvision.models) of torchvision 0.29), listed so that planning needs no torchvision; a test
# checks the list against the installed torchvision.
CLASSIFIER_ARCHS = (
    "alexnet", "convnext_base", "convnext_large", "convnext_small", "convnext_tiny", "densenet121", "densenet161",
    "densenet169", "densenet201", "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3",
    "efficientnet_b4", "efficientnet_b5", "efficientnet_b6", "efficientnet_b7", "efficientnet_v2_l",
    "efficientnet_v2_m", "efficientnet_v2_s", "googlenet", "inception_v3", "maxvit_t", "mnasnet0_5", "mnasnet0_75",
    "mnasnet1_0", "mnasnet1_3", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "regnet_x_16gf",
    "regnet_x_1_6gf", "regnet_x_32gf", "regnet_x_3_2gf", "regnet_x_400mf", "regnet_x_800mf", "regnet_x_8gf",
    "regnet_y_128gf", "regnet_y_16gf", "regnet_y_1_6gf", "regnet_y_32gf", "regnet_y_3_2gf", "regnet_y_400mf",
    "regnet_y_800mf", "regnet_y_8gf", "resnet101", "resnet152", "resnet18", "resnet34", "resnet50",
    "resnext101_32x8d", "resnext101_64x4d", "resnext50_32x4d", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0",
    "shufflenet_v2_x1_5", "shufflenet_v2_x2_0", "squeezenet1_0", "squeezenet1_1", "swin_b", "swin_s", "swin_t",
    "swin_v2_b", "swin_v2_s", "swin_v2_t", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19",
    "vgg19_bn", "vit_b_16", "vit_b_32", "vit_h_14", "vit_l_16", "vit_l_32", "wide_resnet101_2", "wide_resnet50_2",
)


def scheduler_errors(config: dict) -> list[str]:
    """Names that must be one of a library's: generation.scheduler and each variant's override
    (SCHEDULERS), classifier.arch (CLASSIFIER_ARCHS)."""
    named = [("config.generation.scheduler", config["generation"]["scheduler"])]
    named += [(f"config.variants.{v}.scheduler", e["scheduler"]) for v, e in config["variants"].items()
              if "scheduler" in e]
    problems = [f"{key}: {name!r} is not a scheduler sdi knows; use one of {', '.join(SCHEDULERS)} "
                "(names are case-sensitive; 'ddim' is the method's DDIM settings)"
                for key, name in named if name not in SCHEDULERS]
    arch = config.get("classifier", {}).get("arch")
    if arch is not None and arch not in CLASSIFIER_ARCHS:
        problems.append(f"config.classifier.arch: {arch!r} is not a torchvision classification model; use one of "
                        f"{', '.join(CLASSIFIER_ARCHS)}")
    return problems


def size_errors(config: dict) -> list[str]:
    """Sizes that only fail inside a job otherwise: the classifier's crop must fit in its resize (the
    crop would fail on the first batch, after the projector, sampling and generation ran)."""
    classifier = config.get("classifier", {})
    resize, crop = classifier.get("resize"), classifier.get("crop")
    if resize is not None and crop is not None and crop > resize:
        return [f"config.classifier.crop: {crop} is larger than config.classifier.resize {resize} (images are "
                f"resized to {resize} px, then cropped); set crop <= resize (the paper: resize 256, crop 224)"]
    return []


def yaml_problem(path: str | Path) -> str | None:
    """Why a config file is not YAML, as ``<file>:<line>:<column>: ...`` with the fix, or None.

    Snakemake's own message for a config file it cannot parse names neither the file nor the line."""
    try:
        text = Path(path).read_text()
        yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        what = "; ".join(filter(None, [exc.context, exc.problem]))
        tab = " (YAML indents with spaces: replace the tab)" if "\t" in text else ""
        return f"{where}: not valid YAML: {what}{tab}; fix that line"
    except yaml.YAMLError as exc:
        return f"{path}: not valid YAML: {exc}"
    except (OSError, UnicodeDecodeError) as exc:
        return f"{path}: cannot be read as a text file ({exc})"
    return None


def _filling_defaults(validator, properties, instance, schema):
    """jsonschema's ``properties`` keyword that first sets each absent property's default."""
    if isinstance(instance, dict):
        for name, subschema in properties.items():
            if "default" in subschema:
                instance.setdefault(name, copy.deepcopy(subschema["default"]))
    yield from jsonschema.Draft202012Validator.VALIDATORS["properties"](validator, properties, instance, schema)


_DefaultFillingValidator = jsonschema.validators.extend(jsonschema.Draft202012Validator,
                                                        {"properties": _filling_defaults})


def fill_defaults(config: dict, schema: dict) -> dict:
    """Set every key the schema gives a default and config leaves out, in place, at every depth
    (an object's own default first, then its keys' defaults inside it): the jsonschema FAQ's
    recipe, the one ``snakemake.utils.validate`` applies. config must already be valid."""
    _DefaultFillingValidator(schema).validate(config)
    return config


def validate_config(config: dict, schema_path: str | Path) -> None:
    """Check config against the schema, then fill in the schema's defaults (in place), then
    check what a schema cannot (references between keys, folders, mini_data: :func:`mini_data_errors`).
    Raise ConfigError listing every problem, each naming its key."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    problems = schema_errors(config, schema)
    if not problems:
        fill_defaults(config, schema)
        expand_user_paths(config)
        problems = (reference_errors(config) + scheduler_errors(config) + size_errors(config) + path_errors(config)
                    + mini_data_errors(config))
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
