"""Rule mini_world: check the mini world in the cache (or build it), then write the working
directory's marker that the jobs using it take as input (sdi.config.validation.mini_world_paths)."""

import json
from pathlib import Path

from sdi.io.artifacts import atomic_write
from sdi.io.jobs import logged
from sdi.models.mini_world import Recipe, ensure_mini_world

with logged(snakemake.log[0]) as log:
    world = ensure_mini_world(Path(snakemake.params.root).expanduser(), Recipe(), log=log.info)
    if world.folder.resolve() != Path(snakemake.params.world).resolve():
        raise RuntimeError(f"the mini world was built at {world.folder}, not where the workflow expects it "
                           f"({snakemake.params.world}): the recipe hash changed while planning")
    quality = world.manifest["quality"]
    marker = {"world": str(world.folder), "recipe_hash": world.manifest["recipe_hash"], "quality": quality,
              "files": world.manifest["files"]}
    atomic_write(snakemake.output[0], lambda tmp: tmp.write_text(json.dumps(marker, indent=2) + "\n"))
    log.info("mini world %s: VAE reconstruction MSE %.4f; CLIP zero-shot retrieval %s", world.folder,
             quality["vae_mse"], ", ".join(f"{k} {v:.1%}" for k, v in quality["clip_retrieval"].items()))
