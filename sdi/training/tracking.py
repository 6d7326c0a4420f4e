"""Experiment tracking: TensorBoard event files (on by default) and, optionally, Weights & Biases.

Config (``tracking:``, see config/schema.yaml)::

    tracking:
      tensorboard: true                         # event files under each run's tensorboard/ folder
      wandb: {project: sdi, mode: offline}      # optional; needs `pip install 'sdi[wandb]'`

Where the event files go (``tensorboard --logdir results`` shows them all):

- ``results/<dataset>/projector/tensorboard/``: projector loss and lr per step, mean loss per epoch;
- ``results/<dataset>/classifier/<method>/seed<k>/tensorboard/``: train loss/top-1, val loss/top-1/
  balanced and lr per epoch, test top-1 at the end;
- ``results/<dataset>/sei/<variant>/tensorboard/``: a grid of generated images per shard and the
  filter's kept/dropped grid.

Both trainers and the grids use :class:`Tracker` (a ``SummaryWriter`` and a plain ``wandb`` run).
Only the main process of a multi-process run writes. Nothing here imports tensorboard or wandb until a
tracker is made, and wandb only when ``tracking.wandb`` is set: ``import sdi.training.tracking`` is light.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from sdi.config.tracking import TrackingConfig, require_wandb

EVENT_PREFIX = "events.out.tfevents."


def clear_events(tensorboard_dir: str | os.PathLike, suffix: str = "") -> None:
    """Remove the event files of an earlier run (a run that starts from scratch) whose names end with
    ``suffix`` (a writer's ``filename_suffix``), nothing else."""
    folder = Path(tensorboard_dir)
    if folder.is_dir():
        for path in folder.glob(f"{EVENT_PREFIX}*{suffix}"):
            path.unlink(missing_ok=True)


def _wandb_init_kwargs(wandb: Mapping, run_name: str, run_dir: Path, config: Mapping | None) -> dict:
    run_dir.mkdir(parents=True, exist_ok=True)
    kwargs = {"name": run_name, "mode": wandb["mode"], "dir": str(run_dir), "config": dict(config or {}),
              "reinit": "finish_previous"}
    if wandb.get("entity"):
        kwargs["entity"] = wandb["entity"]
    return kwargs


class Tracker:
    """TensorBoard and/or W&B for a run (both trainers, the generation and filter grids); a no-op where disabled.

    Args:
        run_dir: the run's folder; event files go to ``run_dir/tensorboard``, W&B's files to ``run_dir/wandb``.
        tracking: what to track (:class:`TrackingConfig`).
        run_name: the W&B run name (e.g. ``demo/classifier/sdi/seed0``).
        config: hyperparameters for W&B.
        resume_step: None for a run from scratch (its earlier event files are removed); else the first step
            this process logs, and events at or after it from a killed run are discarded (``purge_step``).
        events_suffix: ends the names of this writer's event files, and only those are removed for a run
            from scratch (jobs that share a folder, e.g. generation shards, set one each).
        enabled: False on every process but the main one.
    """

    def __init__(self, run_dir: str | os.PathLike, tracking: TrackingConfig, *, run_name: str,
                 config: Mapping | None = None, resume_step: int | None = None, events_suffix: str = "",
                 enabled: bool = True):
        self.writer = self.wandb_run = None
        if not enabled:
            return
        run_dir = Path(run_dir)
        if tracking.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            if resume_step is None:
                clear_events(run_dir / "tensorboard", events_suffix)
            self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step,
                                        filename_suffix=events_suffix)
        if tracking.wandb is not None:
            wandb = require_wandb()
            self.wandb_run = wandb.init(project=tracking.wandb["project"],
                                        **_wandb_init_kwargs(tracking.wandb, run_name, run_dir, config))

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        """Log {tag: number} at step."""
        if self.writer is not None:
            for tag, value in values.items():
                self.writer.add_scalar(tag, float(value), global_step=step)
            self.writer.flush()
        if self.wandb_run is not None:
            self.wandb_run.log({k: float(v) for k, v in values.items()}, step=step)

    def image(self, tag: str, image, step: int = 0) -> None:
        """Log a PIL image (e.g. a sample grid) at step."""
        if self.writer is not None:
            import numpy as np

            self.writer.add_image(tag, np.asarray(image.convert("RGB")), global_step=step, dataformats="HWC")
            self.writer.flush()
        if self.wandb_run is not None:
            import wandb

            self.wandb_run.log({tag: wandb.Image(image)}, step=step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()
        self.writer = self.wandb_run = None

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def image_grid(paths: Sequence[str | os.PathLike], columns: int = 8, thumb: int = 64):
    """A PIL grid of the images at paths (row-major, ``thumb`` px squares): a preview for TensorBoard."""
    from PIL import Image

    from sdi.io.images import load_rgb

    paths = list(paths)
    rows = max(1, -(-len(paths) // columns))
    grid = Image.new("RGB", (min(columns, max(1, len(paths))) * thumb, rows * thumb), "white")
    for i, path in enumerate(paths):
        grid.paste(load_rgb(path).resize((thumb, thumb), Image.Resampling.BICUBIC),
                   ((i % columns) * thumb, (i // columns) * thumb))
    return grid


def log_image(run_dir: str | os.PathLike, tracking: TrackingConfig, tag: str, image, *, run_name: str,
              job: str, step: int = 0) -> None:
    """Log one image (a PIL image, or an image file) to ``run_dir/tensorboard`` in event files of its own,
    named after ``job`` (e.g. ``generate-shard0``): a rerun of the job replaces its own event file and
    leaves the other jobs' alone (several jobs write grids into one variant folder). TensorBoard only:
    a W&B run per generation shard would bury the training runs."""
    if not tracking.tensorboard:
        return
    if isinstance(image, str | os.PathLike):
        from sdi.io.images import load_rgb

        image = load_rgb(image)
    with Tracker(run_dir, TrackingConfig(tensorboard=True), run_name=run_name, events_suffix=f".{job}") as tracker:
        tracker.image(tag, image, step)
