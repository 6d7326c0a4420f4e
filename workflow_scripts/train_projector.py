"""Rule train_projector: train the semantic projector on a dataset's training split.

input:  split (folder with train.parquet); the tiny model folders when models.tiny
output: projector (folder), loss (CSV)
params: models ({sd, vae, clip}; vae is the generation VAE and is not used here),
        checkpoint_dir (not an output: Snakemake keeps it after a failed or killed job, and the
        rerun resumes from it), settings (config.projector); device comes from the config (execution-only)
threads: DataLoader workers (minus the main process)
tracking: config.tracking (read at run time: changing it reruns nothing); TensorBoard events go to
        results/<dataset>/projector/tensorboard/ (beside the loss CSV)
The run is sdi.training.projector.run_job, in this process or, with several GPUs, in one torchrun process per GPU.
"""

from dataclasses import asdict
from pathlib import Path

from sdi.config.tracking import TrackingConfig
from sdi.config.validation import execution_settings
from sdi.io.jobs import logged
from sdi.training import distributed

execution = execution_settings(snakemake.config)
with logged(snakemake.log[0], gpus=snakemake.resources.get("gpu", 0), execution=execution):
    inp, out, p = snakemake.input, snakemake.output, snakemake.params
    settings = {**p.settings, "device": execution["device"], "loss_csv": out.loss, "projector_dir": out.projector,
                "num_workers": max(0, snakemake.threads - 1), "tracking_dir": str(Path(out.loss).parent),
                "run_name": f"{snakemake.wildcards.dataset}/projector"}
    job = {"manifest": str(Path(inp.split) / "train.parquet"), "sd_path": p.models["sd"],
           "clip_path": p.models["clip"], "out_dir": p.checkpoint_dir,
           "tracking": asdict(TrackingConfig.from_config(snakemake.config)), "settings": settings}
    distributed.launch("sdi.training.projector", job, distributed.world_size_for(execution["device"]))
