"""Rule image_embeddings: CLIP image embeddings of every real image of the split, with the filter's CLIP
(sdi.pipeline.embeddings.embed_split_images), for the linear probe.

input:  split (folder of train/val/test.parquet), the CLIP model folder.
output: results/<dataset>/image_embeddings.parquet (image_id, split, path, label, image_embedding).
params: models (model folders), filter_clip (models.filter_clip), dtype (generation.dtype).
"""

from sdi.config.validation import execution_settings
from sdi.io.jobs import logged
from sdi.pipeline.embeddings import embed_split_images

execution = execution_settings(snakemake.config, "filter")
with logged(snakemake.log[0], gpus=snakemake.resources.get("gpu", 0), execution=execution):
    p = snakemake.params
    embed_split_images(snakemake.input.split, p.models["clip"], snakemake.output[0], filter_clip=p.filter_clip,
                       batch_size=execution["batch_size"], device=execution["device"], dtype=p.dtype,
                       num_workers=max(0, snakemake.threads - 1))
