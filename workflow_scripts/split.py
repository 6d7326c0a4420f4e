from sdi.config.settings import dataset_key
from sdi.data.readers import read_dataset
from sdi.data.readers.base import check_images, skipped_text
from sdi.data.split import make_split
from sdi.io.artifacts import write_parquet
from sdi.io.jobs import logged

with logged(snakemake.log[0]) as log:
    p, out = snakemake.params, snakemake.output
    key = dataset_key(snakemake.wildcards.dataset)
    table = read_dataset(p.format, p.root, key, options=p.options, seed=p.seed,
                         # check-only (sdi.config.settings.CHECK_ONLY): read here, not a param
                         allow_missing_test_classes=snakemake.config["split"]["allow_missing_test_classes"])
    log.info("%s: %s", p.root, table.groupby("subset").size().to_dict())
    if table.attrs["missing_test_classes"]:
        missing = table.attrs["missing_test_classes"]
        log.warning("%s: %d of %d class(es) have no test image (config.split.allow_missing_test_classes is true): "
                    "test accuracy is over the other classes only: %s", p.root, len(missing),
                    table.label.nunique(), ", ".join(missing))
    if table.attrs.get("skipped"):
        log.warning("%s: skipped %s", p.root, skipped_text(table.attrs["skipped"]))
    check_images(table, threads=snakemake.threads)
    parts = make_split(table, p.val_fraction, p.seed, p.val_source)
    for name, part in parts.items():
        path = f"{out[0]}/{name}.parquet"
        write_parquet(part, path)
        log.info("%s: %d images, %d classes -> %s", name, len(part), part.label.nunique(), path)
