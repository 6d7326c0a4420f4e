from sdi.generation import generate_shard, write_manifest
from sdi.sampling import read_samples
from sdi.workflow import logged

with logged(snakemake.log[0], gpus=snakemake.resources.get("gpu", 0)) as log:  # noqa: F821
    p = snakemake.params  # noqa: F821
    samples = read_samples(snakemake.input.samples, shard=p.shard)  # noqa: F821
    log.info("shard %d: %d samples, mode %s, images under %s/images", p.shard, len(samples), p.mode, p.out_dir)
    manifest = generate_shard(samples, p.models["sd"], p.out_dir, vae_path=p.models["vae"], mode=p.mode,
                              device=p.device, **p.options)
    write_manifest(manifest, snakemake.output[0])  # noqa: F821
    log.info("wrote %s (%d images)", snakemake.output[0], len(manifest))  # noqa: F821
