"""Rule summary: the Table 2 summary over datasets x methods x seeds (sdi.evaluation.summary).

input:  metrics (every run's metrics.json), samples (the SEI samplers' tables).
output: csv, md, html, png.
params: runs ([{dataset, method, seed, metrics}]); datasets (column order); labels ({method: row label},
        row order); protocols ({method: evaluation protocol}); stage_benchmarks ({method: [benchmark files
        of its upstream stages]}); samplings ([{dataset, sampler, samples, methods}]: the SEI samplers, whose
        one-image classes the summary notes)
"""

from sdi.evaluation.summary import collect_runs, write_summary
from sdi.io.jobs import logged

with logged(snakemake.log[0]) as log:
    out, p = snakemake.output, snakemake.params
    files = {k: out[k] for k in ("csv", "md", "html", "png")}
    table = write_summary(collect_runs(p.runs), p.datasets, dict(p.labels), files,
                          stage_benchmarks=dict(p.stage_benchmarks), protocols=dict(p.protocols),
                          samplings=list(p.samplings))
    log.info("summary of %d runs -> %s\n%s", len(p.runs), list(out), table.to_string())
