import pandas as pd

from sdi.io.jobs import logged
from sdi.pipeline.sampling import sample_class_embeddings, write_samples

with logged(snakemake.log[0]) as log:
    p, inp, out = snakemake.params, snakemake.input, snakemake.output[0]
    s = p.sampler  # a config.samplers entry, schema defaults filled in
    # The text-only baseline needs only the class counts of the training split.
    table = pd.read_parquet(inp.embeddings if "embeddings" in inp.keys() else f"{inp.split}/train.parquet")
    samples = sample_class_embeddings(
        table, method=s["method"], n_components=s["n_components"], expansion=s["expansion"], seed=s["seed"],
        n_shards=p.shards, cov_eps=s["cov_eps"], per_class_seed=s["per_class_seed"], image_seed=p.run_seed,
    )
    write_samples(samples, out)
    log.info("%d samples for %d classes in %d shards (%s) -> %s", len(samples), samples.label.nunique(), p.shards,
             s, out)
