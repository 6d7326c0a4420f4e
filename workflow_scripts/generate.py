from sdi.config.tracking import TrackingConfig
from sdi.config.validation import execution_settings
from sdi.io.faults import kill_point
from sdi.io.jobs import logged
from sdi.models.generator import GenerationSettings, ImageGenerator
from sdi.pipeline.generation import generate_shard, write_manifest
from sdi.pipeline.sampling import read_samples
from sdi.training.tracking import image_grid, log_image

execution = execution_settings(snakemake.config, "generation")
with logged(snakemake.log[0], gpus=snakemake.resources.get("gpu", 0), execution=execution) as log:
    p = snakemake.params
    samples = read_samples(snakemake.input.samples, shard=p.shard)
    log.info("shard %d: %d samples, mode %s, images under %s/images", p.shard, len(samples), p.mode, p.out_dir)
    options = dict(p.options)  # steps, guidance_scale, resolution; scheduler and dtype are the generator's
    generator = ImageGenerator.from_folders(p.models["sd"], p.models["vae"], scheduler=options.pop("scheduler"),
                                            dtype=options.pop("dtype"), device=execution["device"],
                                            compile=execution["compile"])
    manifest = generate_shard(samples, generator, p.out_dir, GenerationSettings(mode=p.mode, **options),
                              batch_size=execution["batch_size"])
    # A preview for TensorBoard (config.tracking, read at run time): <out_dir>/tensorboard/, one event file per shard.
    log_image(p.out_dir, TrackingConfig.from_config(snakemake.config), f"generation/shard{p.shard}",
              image_grid(manifest.path[:32]), run_name=p.out_dir, job=f"generate-shard{p.shard}")
    write_manifest(manifest, snakemake.output[0])
    kill_point("after_manifest")
    log.info("wrote %s (%d images)", snakemake.output[0], len(manifest))
