from sdi.io.jobs import logged
from sdi.models.tiny import build_tiny_clip, build_tiny_sd

with logged(snakemake.log[0]) as log:
    build_tiny_sd(snakemake.output.sd, seed=snakemake.params.seed)
    build_tiny_clip(snakemake.output.clip, seed=snakemake.params.seed)
    log.info("built tiny models in %s and %s", snakemake.output.sd, snakemake.output.clip)
