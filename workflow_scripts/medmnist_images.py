from sdi.medmnist import write_medmnist_images
from sdi.workflow import logged

with logged(snakemake.log[0]) as log:  # noqa: F821
    p = snakemake.params  # noqa: F821
    key = f"config.datasets.{snakemake.wildcards.dataset}.root"  # noqa: F821
    index = write_medmnist_images(snakemake.input.npz, snakemake.output[0], p.flag, p.size,  # noqa: F821
                                  threads=snakemake.threads, key=key)  # noqa: F821
    for subset, n in index.groupby("subset").size().items():
        log.info("%s: %d images -> %s/%s/", subset, n, snakemake.output[0], subset)  # noqa: F821
