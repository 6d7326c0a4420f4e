from sdi.data.mini_corpus import write_target_dataset
from sdi.io.jobs import logged

with logged(snakemake.log[0]) as log:
    opts = snakemake.params.options
    root = snakemake.wildcards.root
    write_target_dataset(root, looks=[tuple(look) for look in opts["looks"]], train_per_class=opts["train_per_class"],
                         test_per_class=opts["test_per_class"], seed=opts["seed"])
    log.info("wrote the mini world's few-shot digits (%d train, %d test per class; looks %s) as a CUB folder at %s",
             opts["train_per_class"], opts["test_per_class"], opts["looks"], root)
