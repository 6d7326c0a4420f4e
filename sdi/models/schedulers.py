"""The sampler of the method (DDIM with SD v1.5's betas) and the other diffusers schedulers by name."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path


class SchedulerError(ValueError):
    """A scheduler name or config that diffusers cannot build."""


# DDIMScheduler arguments of the method (and of SD v1.5), applied over the SD folder's config.
METHOD_DDIM = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
}


def _scheduler_config(scheduler_config) -> dict:
    if scheduler_config is None:
        return {}
    if isinstance(scheduler_config, Mapping):
        return dict(scheduler_config)
    from diffusers import DDIMScheduler

    folder = Path(scheduler_config)
    if (folder / "scheduler").is_dir():
        folder = folder / "scheduler"
    return dict(DDIMScheduler.load_config(folder))


def make_scheduler(name: str = "ddim", scheduler_config=None):
    """A diffusers scheduler for generation.

    name: ``'ddim'`` (the method: ``DDIMScheduler`` with :data:`METHOD_DDIM` applied over
        scheduler_config) or the class name of any diffusers scheduler (e.g.
        ``'DPMSolverMultistepScheduler'`` for DPM-Solver++), built with ``from_config``.
    scheduler_config: a config mapping (e.g. ``pipe.scheduler.config``), an SD folder or its
        ``scheduler/`` folder, or None (only for 'ddim': the method's settings alone).
    """
    import diffusers

    config = _scheduler_config(scheduler_config)
    if name == "ddim":
        return diffusers.DDIMScheduler.from_config(config, **METHOD_DDIM)
    cls = getattr(diffusers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin)):
        raise SchedulerError(f"generation.scheduler: {name!r} is neither 'ddim' nor a diffusers scheduler class; "
                              "use e.g. 'ddim' or 'DPMSolverMultistepScheduler'")
    if not config:
        raise SchedulerError(f"make_scheduler({name!r}): needs the SD folder's scheduler config")
    return cls.from_config(config)


def scheduler_json(scheduler) -> str:
    """The scheduler's full config as canonical JSON (private ``_`` keys dropped)."""
    return json.dumps({k: v for k, v in scheduler.config.items() if not k.startswith("_")}, sort_keys=True)


def scheduler_from_json(class_name: str, config_json: str):
    """Rebuild a scheduler from a manifest's ``scheduler`` and ``scheduler_config`` columns."""
    import diffusers

    cls = getattr(diffusers, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin)):
        raise SchedulerError(f"manifest column scheduler: {class_name!r} is not a diffusers scheduler class")
    return cls.from_config(json.loads(config_json))
