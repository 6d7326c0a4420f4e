from sdi.config.validation import dataset_key
from sdi.data.readers.medmnist import write_medmnist_images
from sdi.io.jobs import logged

with logged(snakemake.log[0]) as log:
    p = snakemake.params
    key = dataset_key(snakemake.wildcards.dataset)
    index = write_medmnist_images(snakemake.input.npz, snakemake.output[0], p.flag, p.size,
                                  threads=snakemake.threads, key=key)
    for subset, n in index.groupby("subset").size().items():
        log.info("%s: %d images -> %s/%s/", subset, n, snakemake.output[0], subset)
