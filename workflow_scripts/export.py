"""Rule export: one method's exact training set, with the split's val and test images, as a dataset folder.

input:  split (folder with train/val/test.parquet); filtered (methods with pool kept: the variant's filter
        folder) or shards (pool generated: the variant's generation shard manifests); neither for real-only.
output: the export folder (output[0]): train/ val/ test/ <class>/ files, metadata.csv per split, README.md,
        export.json and, with export.webdataset, webdataset/*.tar (sdi.pipeline.export).
params: training_set: variant, pool, multiples, real_copies, keep_ratio, draw_seed (as train_classifier's);
        settings: what it came from (for its README); options: config.export (webdataset, shard_size,
        link: copy | hardlink | symlink); command: how to rebuild it.
"""

from sdi.io.jobs import logged
from sdi.pipeline.export import export_dataset
from sdi.pipeline.training_set import read_generated

with logged(snakemake.log[0]) as log:
    inp, p, w = snakemake.input, snakemake.params, snakemake.wildcards
    generated, source = read_generated(inp.get("filtered"), inp.get("shards"))
    if generated is not None:
        log.info("synthetic images from %s", source)
    export_dataset(inp.split, snakemake.output[0], generated=generated, **p.training_set,
                   webdataset=p.options["webdataset"], shard_size=p.options["shard_size"], link=p.options["link"],
                   dataset=w.dataset, method=w.export, settings=p.settings, command=p.command)
