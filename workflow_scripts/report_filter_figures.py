"""Rule report_filter_figures: sample grid, CLIP score histograms and counts of a variant (sdi.evaluation.report).

input:  split (split folder), filtered (filter folder: manifest.parquet, counts.csv).
output: grid, scores, counts (PNG).
params: grid: config.report (classes, per_row).
"""

from sdi.evaluation.report import filter_figures
from sdi.io.jobs import logged

with logged(snakemake.log[0]) as log:
    inp, out, p = snakemake.input, snakemake.output, snakemake.params
    filter_figures(inp.split, inp.filtered, {"grid": out.grid, "scores": out.scores, "counts": out.counts},
                   n_classes=p.grid["classes"], per_row=p.grid["per_row"])
    log.info("report figures of %s -> %s", inp.filtered, list(out))
