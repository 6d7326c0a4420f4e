from pathlib import Path

import pandas as pd

from sdi.config.tracking import TrackingConfig
from sdi.config.validation import execution_settings
from sdi.io.jobs import logged
from sdi.pipeline.filtering import filter_generated
from sdi.training.tracking import log_image

execution = execution_settings(snakemake.config, "filter")
with logged(snakemake.log[0], gpus=snakemake.resources.get("gpu", 0), execution=execution) as log:
    p, out_dir = snakemake.params, snakemake.output[0]
    manifest = pd.concat([pd.read_parquet(f) for f in snakemake.input.shards], ignore_index=True)
    scored = filter_generated(manifest, p.models["clip"], p.keep_ratio, out_dir, batch_size=execution["batch_size"],
                              device=execution["device"], dtype=p.dtype, score=p.score,
                              num_workers=max(0, snakemake.threads - 1), filter_clip=p.filter_clip)
    variant_dir = Path(snakemake.input.shards[0]).parents[1]  # results/<dataset>/sei/<variant>
    log_image(variant_dir, TrackingConfig.from_config(snakemake.config), "filter/kept_and_dropped",
              Path(out_dir) / "grid.png", run_name=str(variant_dir), job="filter")
    log.info("%d generated images in %d classes, %d kept (keep_ratio %s, score %s) -> %s",
             len(scored), scored.label.nunique(), int(scored.kept.sum()), p.keep_ratio, p.score, out_dir)
