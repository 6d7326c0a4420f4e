"""Rule overview: real / SDI kept / SDI dropped / text-only kept images per class
(sdi.evaluation.report.overview_figure)."""

from sdi.evaluation.report import overview_figure
from sdi.io.jobs import logged

with logged(snakemake.log[0]) as log:
    inp = snakemake.input
    overview_figure(inp.split, inp.sdi, inp.text[0] if inp.text else None, snakemake.output[0])
    log.info("overview of %s and %s -> %s", inp.sdi, list(inp.text), snakemake.output[0])
