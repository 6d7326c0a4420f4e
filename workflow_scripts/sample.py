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
        # check-only (sdi.config.settings.CHECK_ONLY): from the config, not a param
        min_images=snakemake.config["samplers"][snakemake.wildcards.sampler]["min_images"],
        key=f"config.samplers.{snakemake.wildcards.sampler}",
    )
    write_samples(samples, out)
    log.info("%d samples for %d classes in %d shards (%s) -> %s", len(samples), samples.label.nunique(), p.shards,
             s, out)
    if samples.attrs["single_image_classes"]:
        log.warning("%d class(es) sampled from one image each (listed above); results/summary.md notes them",
                    len(samples.attrs["single_image_classes"]))
