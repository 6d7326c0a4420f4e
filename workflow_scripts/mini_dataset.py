from sdi.data.mini_corpus import target_classes, write_target_dataset
from sdi.io.jobs import logged

with logged(snakemake.log[0]) as log:
    opts = snakemake.params.options
    root = snakemake.wildcards.root
    looks = [tuple(look) for look in opts["looks"]]
    write_target_dataset(root, looks=looks, train_per_class=opts["train_per_class"],
                         test_per_class=opts["test_per_class"], seed=opts["seed"], classes_by=opts["classes_by"],
                         look_names=opts["look_names"], digits=opts["digits"])
    classes = target_classes(looks, opts["classes_by"], opts["look_names"], opts["digits"])
    log.info("wrote the mini world's few-shot digits (%d classes by %s: %s; %d train, %d test per class; looks %s) "
             "as a CUB folder at %s", len(classes), opts["classes_by"], ", ".join(c.name for c in classes),
             opts["train_per_class"], opts["test_per_class"], opts["looks"], root)
