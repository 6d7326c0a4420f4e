"""A mini world on disk: its folder, files, manifest (every file's size and sha256) and the checks of them."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from sdi.data import mini_corpus as corpus
from sdi.models.mini_world.recipe import MiniWorldError, Recipe, recipe_hash

MANIFEST = "manifest.json"


@dataclass
class MiniWorld:
    """A built world: ``sd`` (StableDiffusionPipeline folder) and ``clip`` (CLIPModel folder)."""

    folder: Path
    manifest: dict = field(repr=False)

    @property
    def sd(self) -> Path:
        return self.folder / "sd"

    @property
    def clip(self) -> Path:
        return self.folder / "clip"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _files(folder: Path) -> dict[str, dict]:
    return {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST}


def save_world(folder: Path, vae, clip, unet) -> None:
    """clip/ (CLIPModel + image processor + tokenizer) and sd/ (the pipeline), the tiny models' layouts."""
    from sdi.models.random_models import save_component, write_clip_extras, write_sd_extras

    save_component(clip, folder / "clip")
    write_clip_extras(folder / "clip", corpus.IMAGE_SIZE)
    sd = folder / "sd"
    save_component(unet, sd / "unet")
    save_component(vae, sd / "vae")
    save_component(clip.text_model, sd / "text_encoder")  # the frozen text tower is SD's text encoder
    write_sd_extras(sd)


def verify_world(folder: str | Path, recipe: Recipe | None = None, *, checksums: bool = True) -> dict:
    """The manifest of a complete world folder, or MiniWorldError naming what is wrong.

    Checks that manifest.json exists and parses, that its recipe hash is recipe's (when given),
    that every file it lists has its size and (checksums=True) its sha256, and that no other
    file is there.
    """
    folder = Path(folder)
    path = folder / MANIFEST
    fix = f"delete {folder} and build it again"
    if not path.is_file():
        raise MiniWorldError(f"{path}: missing, so the build of {folder} never finished; {fix}")
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
    except (ValueError, KeyError) as exc:
        raise MiniWorldError(f"{path}: not a mini world manifest ({exc}); {fix}") from exc
    if recipe is not None and manifest.get("recipe_hash") != recipe_hash(recipe):
        raise MiniWorldError(f"{path}: recipe hash {manifest.get('recipe_hash')} is not this recipe's "
                             f"{recipe_hash(recipe)}; {fix}")
    for rel, want in files.items():
        p = folder / rel
        if not p.is_file():
            raise MiniWorldError(f"{p}: missing from the mini world; {fix}")
        if p.stat().st_size != want["bytes"]:
            raise MiniWorldError(f"{p}: {p.stat().st_size:,} bytes, the manifest says {want['bytes']:,} "
                                 f"(truncated or overwritten); {fix}")
        if checksums and _sha256(p) != want["sha256"]:
            raise MiniWorldError(f"{p}: sha256 differs from the manifest's (corrupt); {fix}")
    extra = sorted(set(_files_quick(folder)) - set(files))
    if extra:
        raise MiniWorldError(f"{folder / extra[0]}: not in the manifest ({len(extra)} such files); {fix}")
    return manifest


def _files_quick(folder: Path) -> list[str]:
    return [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST]


def world_folder(root: str | Path, recipe: Recipe = Recipe()) -> Path:  # noqa: B008 (a frozen dataclass)
    """Where :func:`ensure_mini_world` keeps recipe's world: ``{root}/{first 16 hex of the recipe hash}``."""
    return Path(root) / recipe_hash(recipe)[:16]
