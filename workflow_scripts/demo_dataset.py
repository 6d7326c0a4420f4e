from sdi.data.demo import write_demo_digits
from sdi.io.jobs import logged

with logged(snakemake.log[0]) as log:
    opts = snakemake.params.options
    root = snakemake.wildcards.root
    write_demo_digits(root, opts["train_per_class"], opts["test_per_class"], opts["image_size"], opts["seed"])
    log.info("wrote scikit-learn digits as a CUB folder at %s", root)
