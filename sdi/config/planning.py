"""Every check the workflow makes while it plans, in one call: ``check_config``.

``rules/common.smk`` calls it once, before any rule reads the config. Each problem names its key
and the fix; one ConfigError lists them all. Nothing here imports torch or pandas, so a dry run
of a bad config fails in about a second. In order, each stage only when the one before passed:

1. the schema (config/schema.yaml), then its defaults filled in, then references between keys and
   folders that must exist (:func:`sdi.config.validation.validate_config`);
2. the experiment matrix (:func:`sdi.config.experiments.experiment_errors`) and ``tracking``
   (:func:`sdi.config.tracking.tracking_problem`: wandb set but not installed);
3. the models against what is already built: a trained projector fixes the CLIP and SD widths
   (:func:`sdi.models.folders.projector_fit_errors`), and ``models.filter_clip`` must be complete.

:func:`device_problem` (a GPU device this machine lacks) is not here: it holds only for jobs run on
this machine, so the workflow checks it when it starts jobs, not in dry runs or on a login node.
"""

from __future__ import annotations

from pathlib import Path

from sdi.config.experiments import experiment_errors
from sdi.config.tracking import tracking_problem
from sdi.config.validation import ConfigError, device_problem, model_paths, validate_config
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
    projectors = {d: f"results/{d}/projector/final" for d in config["datasets"]}
    _raise(projector_fit_errors(model_paths(config), projectors)
           + [f"config.{e}" for e in filter_clip_errors(config["models"]["filter_clip"])])
