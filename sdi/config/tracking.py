"""What ``config.tracking`` asks for (TensorBoard, W&B), checked at planning without importing either."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

WANDB_MODES = ("offline", "online")


class TrackingError(RuntimeError):
    """Tracking is configured but cannot work (e.g. wandb is not installed)."""


@dataclass(frozen=True)
class TrackingConfig:
    """What to track: ``tensorboard`` (bool) and ``wandb`` (None, or {'project': str, 'mode': 'offline' | 'online',
    optional 'entity'})."""

    tensorboard: bool = True
    wandb: Mapping | None = None

    @classmethod
    def from_config(cls, config: Mapping) -> TrackingConfig:
        """From a workflow config (its ``tracking`` section; defaults when absent)."""
        section = dict(config.get("tracking") or {})
        wandb = section.get("wandb")
        if wandb is not None:
            if not isinstance(wandb, Mapping) or not wandb.get("project"):
                raise TrackingError(f"config.tracking.wandb: {wandb!r} needs a project, e.g. "
                                    "{project: sdi, mode: offline}; remove it to track with TensorBoard only")
            mode = wandb.get("mode", "offline")
            if mode not in WANDB_MODES:
                raise TrackingError(f"config.tracking.wandb.mode: {mode!r} is not one of {list(WANDB_MODES)}")
            wandb = {**wandb, "mode": mode}
        return cls(tensorboard=bool(section.get("tensorboard", True)), wandb=wandb)


def tracking_problem(config: Mapping) -> str | None:
    """Why ``config.tracking`` cannot work here, or None; checked while the workflow is planned, without
    importing wandb (its presence is looked up only)."""
    import importlib.util

    try:
        tracking = TrackingConfig.from_config(config)
    except TrackingError as exc:
        return str(exc)
    if tracking.wandb is not None and importlib.util.find_spec("wandb") is None:
        try:
            require_wandb()
        except TrackingError as exc:
            return str(exc)
    return None


def require_wandb():
    """The ``wandb`` module, or a TrackingError that says how to install it or turn it off."""
    try:
        import wandb
    except ImportError:
        raise TrackingError("config.tracking.wandb is set, but the wandb package is not installed: "
                            "pip install 'sdi[wandb]' (the optional extra in pyproject.toml), or remove "
                            "config.tracking.wandb to track with TensorBoard only") from None
    return wandb
