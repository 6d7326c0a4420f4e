"""Rule train_projector: train the semantic projector on a dataset's training split.

input:  split (folder with train.parquet); the tiny model folders when models.tiny
output: projector (folder), loss (CSV)
params: models ({sd, vae, clip}; vae is the generation VAE and is not used here),
        checkpoint_dir (not an output: Snakemake keeps it after a failed or killed job, and the
        rerun resumes from it), settings (config.projector); device comes from the config (execution-only)
threads: DataLoader workers (minus the main process)
tracking: config.tracking (read at run time: changing it reruns nothing); TensorBoard events go to
        results/<dataset>/projector/tensorboard/ (beside the loss CSV)
"""

from pathlib import Path

import pandas as pd

from sdi.config import execution_settings
from sdi.tracking import TrackingConfig
from sdi.train_projector import train_projector
from sdi.workflow import logged

SETTINGS = ("epochs", "batch_size", "lr", "weight_decay", "drop_prob", "image_size", "hidden_dim",
            "mixed_precision", "checkpoint_every", "seed", "processes")

execution = execution_settings(snakemake.config)  # noqa: F821
with logged(snakemake.log[0], gpus=snakemake.resources.get("gpu", 0), execution=execution) as log:  # noqa: F821
    inp, out, p = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
    settings = {k: v for k, v in p.settings.items() if k in SETTINGS}
    result = train_projector(
        pd.read_parquet(Path(inp.split) / "train.parquet"), p.models["sd"], p.models["clip"], p.checkpoint_dir,
        **settings, device=execution["device"], loss_csv=out.loss, projector_dir=out.projector,
        num_workers=max(0, snakemake.threads - 1),  # noqa: F821
        tracking=TrackingConfig.from_config(snakemake.config), tracking_dir=Path(out.loss).parent,  # noqa: F821
        run_name=f"{snakemake.wildcards.dataset}/projector",  # noqa: F821
    )
    log.info("projector: %s (resumed from epoch %d, %d steps)", result.projector_dir, result.resumed_from,
             result.global_step)
