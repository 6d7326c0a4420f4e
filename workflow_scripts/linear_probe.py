"""Rule linear_probe: the CLIP linear probe of a method (sdi.training.linear_probe), on stored embeddings.

input:  split (train/val/test.parquet), real_embeddings (rule image_embeddings), filtered (with a variant:
        the filter folder, whose image_embeddings.parquet holds every generated image's embedding),
        shards (pool generated: the generation shard manifests).
output: metrics (<out_dir>/metrics.json), log_csv (one row per C), run_config (the run's settings snapshot);
        out_dir also receives train_set.parquet.
params: out_dir; settings (protocol, c_values, max_iter, seed); training_set (method_training_set keywords);
        snapshot (sdi.config.experiments.run_snapshot).
"""

from threadpoolctl import threadpool_limits

from sdi.config.experiments import write_run_config
from sdi.io.jobs import logged
from sdi.training.linear_probe import run_probe_job

with logged(snakemake.log[0]), threadpool_limits(max(1, snakemake.threads)):  # BLAS within the rule's cores
    inp, p = snakemake.input, snakemake.params
    write_run_config(p.snapshot, snakemake.output.run_config)
    run_probe_job({"split": inp.split, "real_embeddings": inp.real_embeddings, "filtered": inp.get("filtered"),
                   "shards": list(inp.get("shards") or []) or None, "training_set": dict(p.training_set),
                   "out_dir": p.out_dir, "settings": dict(p.settings)})
