from sdi.config import execution_settings
from sdi.faults import kill_point
from sdi.generation import generate_shard, write_manifest
from sdi.sampling import read_samples
from sdi.tracking import TrackingConfig, image_grid, log_image
from sdi.workflow import logged

execution = execution_settings(snakemake.config, "generation")  # noqa: F821
with logged(snakemake.log[0], gpus=snakemake.resources.get("gpu", 0), execution=execution) as log:  # noqa: F821
    p = snakemake.params  # noqa: F821
    samples = read_samples(snakemake.input.samples, shard=p.shard)  # noqa: F821
    log.info("shard %d: %d samples, mode %s, images under %s/images", p.shard, len(samples), p.mode, p.out_dir)
    manifest = generate_shard(samples, p.models["sd"], p.out_dir, vae_path=p.models["vae"], mode=p.mode,
                              **execution, **p.options)
    # A preview for TensorBoard (config.tracking, read at run time): <out_dir>/tensorboard/, one event file per shard.
    log_image(p.out_dir, TrackingConfig.from_config(snakemake.config), f"generation/shard{p.shard}",  # noqa: F821
              image_grid(manifest.path[:32]), run_name=p.out_dir, job=f"generate-shard{p.shard}")
    write_manifest(manifest, snakemake.output[0])  # noqa: F821
    kill_point("after_manifest")
    log.info("wrote %s (%d images)", snakemake.output[0], len(manifest))  # noqa: F821
