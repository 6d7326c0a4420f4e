"""Rule training_curves: validation top-1 and training loss per epoch of a dataset's runs (sdi.evaluation.report).

input:  logs (the runs' log.csv, in the order of params.labels). output: one PNG.
params: labels (one per log: method label and seed).
"""

from sdi.evaluation.report import training_curves
from sdi.io.jobs import logged

with logged(snakemake.log[0]) as log:
    inp, p = snakemake.input, snakemake.params
    training_curves(dict(zip(p.labels, inp.logs, strict=True)), snakemake.output[0])
    log.info("%d training curves -> %s", len(inp.logs), snakemake.output[0])
