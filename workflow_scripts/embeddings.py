"""Rule embeddings: CLIP image embedding -> projector, one row per training image.

input:  split (folder with train.parquet), projector (folder); the tiny CLIP folder when models.tiny
output: the embeddings Parquet file (output[0])
params: models ({sd, vae, clip}); batch_size and device come from the config (execution-only)
threads: DataLoader workers (minus the main process)
"""

from pathlib import Path

import pandas as pd

from sdi.config.validation import execution_settings
from sdi.io.jobs import logged
from sdi.models.loaders import image_encodings
from sdi.pipeline.embeddings import extract_embeddings, write_embeddings

execution = execution_settings(snakemake.config, "embeddings")
with logged(snakemake.log[0], gpus=snakemake.resources.get("gpu", 0), execution=execution) as log:
    inp, out, p = snakemake.input, snakemake.output, snakemake.params
    table = extract_embeddings(pd.read_parquet(Path(inp.split) / "train.parquet"), inp.projector, p.models["clip"],
                               batch_size=execution["batch_size"], device=execution["device"],
                               num_workers=max(0, snakemake.threads - 1))
    write_embeddings(table, out[0])
    log.info("%d embeddings -> %s; %d CLIP image encodings in this job", len(table), out[0], image_encodings())
