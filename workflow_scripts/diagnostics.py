"""Rule diagnostics: does a variant's sampling infill the real distribution (sdi.evaluation.diagnostics)?

input:  embeddings (embeddings.parquet), samples (SEI variants only), filtered (the variant's filter
        folder), split (the split folder: test.parquet), clip (tiny models only).
output: summary, per_class, duplicates, distances, projection (all in params.out_dir).
params: out_dir; models (the CLIP folder in use); options (config.diagnostics less batch_size). device and
        batch_size come from the config (execution-only).
"""

from sdi.config.validation import execution_settings
from sdi.evaluation.diagnostics import diagnose_variant
from sdi.io.jobs import logged
from sdi.models.loaders import image_encodings

execution = execution_settings(snakemake.config, "diagnostics")
with logged(snakemake.log[0], gpus=snakemake.resources.get("gpu", 0), execution=execution) as log:
    inp, p = snakemake.input, snakemake.params
    o = dict(p.options)
    summary = diagnose_variant(inp.embeddings, inp.get("samples"), inp.filtered, inp.split, p.models["clip"],
                               p.out_dir, device=execution["device"], batch_size=execution["batch_size"],
                               num_workers=max(0, snakemake.threads - 1), k=o["k"],
                               duplicate_threshold=o["duplicate_threshold"],
                               projection_classes=o["projection_classes"], filter_clip=p.filter_clip)
    log.info("diagnostics -> %s: %s; %d CLIP image encodings in this job", p.out_dir, summary, image_encodings())
