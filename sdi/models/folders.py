"""Model folders on disk: their layout, weight files and dimensions, checked without loading
a model or importing torch (Snakemake runs these checks while it plans the workflow).

:mod:`sdi.models.loaders` loads the models; it re-exports everything here.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

SD_LAYOUT = ("model_index.json", "unet/config.json", "vae/config.json",
             "text_encoder/config.json", "tokenizer", "scheduler/scheduler_config.json")
# The SD components sdi loads (never safety_checker/ or feature_extractor/, whatever model_index.json names),
# with the stem of their weight files (diffusers: diffusion_pytorch_model.*, transformers: model.* / pytorch_model.*).
SD_COMPONENTS = {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model", "text_encoder": "model"}
VAE_LAYOUT = ("config.json",)
CLIP_LAYOUT = ("config.json", "preprocessor_config.json")
CLIP_TOKENIZER_FILES = (("vocab.json", "merges.txt"), ("tokenizer.json",))
WEIGHT_SUFFIXES = (".safetensors", ".bin")
# Weight files as the hub names them: plain (full precision) or a variant (``.fp16.``, ``.non_ema.``), maybe sharded.
WEIGHT_FILE = re.compile(r"^(?:diffusion_pytorch_model|model|pytorch_model)(?:\.(?P<variant>[A-Za-z0-9_]+))?"
                         r"(?:-\d{5}-of-\d{5})?(?P<suffix>\.safetensors|\.bin)$")
PREFERRED_VARIANT = "fp16"  # the variant loaded when a folder has no plain weight files


class ModelFolderError(ValueError):
    """A configured model folder is missing, incomplete or incompatible."""


@dataclass(frozen=True)
class ModelDims:
    """Dimensions the method depends on.

    d_clip: CLIP image embedding size (projection_dim; 768 for ViT-L/14), projector input.
    d_cross: UNet cross_attention_dim = text encoder hidden size (768 for SD v1.5), projector output.
    resolution: native image size of the SD model (sample_size x vae scale factor).
    """

    d_clip: int
    d_cross: int
    resolution: int


def weight_files(folder: str | Path) -> dict[str | None, list[Path]]:
    """Weight files of one model folder by variant (None: the plain files), sorted by name.

    ``diffusion_pytorch_model.safetensors`` -> None, ``model.fp16.safetensors`` -> 'fp16',
    ``pytorch_model.bin`` -> None; shards (``-00001-of-00002``) join their variant.
    """
    found: dict[str | None, list[Path]] = {}
    folder = Path(folder)
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            match = WEIGHT_FILE.match(path.name)
            if match and path.is_file():
                found.setdefault(match["variant"], []).append(path)
    return found


def _has_weights(folder: Path) -> bool:
    return bool(weight_files(folder))


def check_weight_file(path: str | Path) -> str | None:
    """Why a weight file cannot be complete (a cut-short download), or None; reads only its header.

    ``.safetensors``: 8-byte little-endian header length, JSON header, then the tensors; the file
    must end exactly where the largest ``data_offsets`` end says. ``.bin`` (a zip archive since
    torch 1.6): the archive's central directory, at its end, must be readable.
    """
    path = Path(path)
    size = path.stat().st_size
    if path.suffix == ".safetensors":
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return f"{size} bytes, shorter than the 8-byte safetensors header"
            n = int.from_bytes(head, "little")
            if n > size - 8:
                return f"{size:,} bytes, but its header alone is {n:,} bytes long"
            try:
                header = json.loads(fh.read(n))
                end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
            except (ValueError, KeyError, TypeError, IndexError):
                return "its safetensors header is not valid JSON with data_offsets"
        if size != 8 + n + end:
            return f"{size:,} bytes, but its header describes {8 + n + end:,}"
        return None
    with open(path, "rb") as fh:
        is_zip = fh.read(2) == b"PK"
    if is_zip:
        try:
            with zipfile.ZipFile(path):
                pass
        except (zipfile.BadZipFile, OSError) as exc:
            return f"{size:,} bytes, not a complete zip archive ({exc})"
    return None


def _resolve_weights(components: dict[str, tuple[Path, str]], root: Path, key: str, hint: str) -> str | None:
    """The variant to load for components {label: (folder, weight stem)}, after checking the files it loads.

    None when every component has plain weight files; else the variant that every component
    lacking plain files has (PREFERRED_VARIANT first). diffusers and transformers load a component
    without the variant from its plain files. Raises ModelFolderError naming the missing or
    truncated file.
    """
    files = {label: weight_files(folder) for label, (folder, _) in components.items()}
    variant = None
    lacking = [label for label, f in files.items() if f and None not in f]
    if lacking:
        common = set.intersection(*(set(files[label]) for label in lacking))
        if not common:
            have = "; ".join(f"{lab}/ has {', '.join(str(v) for v in files[lab])}" for lab in lacking)
            raise ModelFolderError(f"{key}: folder {root} mixes weight variants with no plain files ({have}); "
                                   f"download the plain (fp32) or the {PREFERRED_VARIANT} files of every component")
        variant = PREFERRED_VARIANT if PREFERRED_VARIANT in common else sorted(common)[0]
    missing = []
    for label, (_, stem) in components.items():
        if not files[label]:
            name = f"{stem}.{variant}.safetensors" if variant else f"{stem}.safetensors"
            where = f"{label}/{name}" if label else name
            why = f" (the {variant} variant the other components have)" if variant else ""
            missing.append(f"{where}{why}")
    if missing:
        raise ModelFolderError(f"{key}: folder {root} is incomplete, missing {', '.join(missing)}: a weight file "
                               f"was not downloaded; download it into that folder, or {hint}")
    for f in files.values():
        group = f[variant] if variant in f else f[None]
        safetensors = [p for p in group if p.suffix == ".safetensors"]
        for path in safetensors or group:  # what the loaders read: safetensors before .bin
            problem = check_weight_file(path)
            if problem:
                raise ModelFolderError(f"{key}: {path} is truncated or corrupt ({problem}): the download was cut "
                                       f"short; delete it and download it again")
    return variant


def sd_weights_variant(path: str | Path, key: str = "models.sd") -> str | None:
    """Weight variant to load from an SD folder (None: the plain files; 'fp16': a variant-only download).

    Checks that unet/, vae/ and text_encoder/ hold the files that variant loads and that they
    are complete (headers only; see :func:`check_weight_file`).
    """
    folder = Path(path)
    return _resolve_weights({sub: (folder / sub, stem) for sub, stem in SD_COMPONENTS.items()}, folder,
                            key, f"set {key} to another SD v1.5 folder")


def weights_variant(path: str | Path, key: str, stem: str = "model") -> str | None:
    """:func:`sd_weights_variant` for a single-model folder (a separate VAE, CLIP)."""
    folder = Path(path)
    return _resolve_weights({"": (folder, stem)}, folder, key, f"set {key} to another folder")


def check_sd_folder(path: str | Path, key: str = "models.sd") -> Path:
    """Raise ModelFolderError naming the config key unless path is a diffusers SD folder.

    Accepts what downloads contain: plain and/or ``fp16`` variant weights, ``.safetensors``
    and/or ``.bin``, a model_index.json naming a safety checker or not (it is never loaded).
    """
    folder = Path(path)
    hint = (f"set {key} to a Stable Diffusion v1.5 folder in diffusers layout "
            "(model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/)")
    if not folder.is_dir():
        raise ModelFolderError(f"{key}: folder {folder} does not exist; {hint}")
    missing = [p for p in SD_LAYOUT if not (folder / p).exists()]
    if missing:
        raise ModelFolderError(f"{key}: folder {folder} is incomplete, missing {', '.join(missing)}; {hint}")
    sd_weights_variant(folder, key)
    return folder


def check_vae_folder(path: str | Path, key: str = "models.vae") -> Path:
    folder = Path(path)
    hint = f"set {key} to a diffusers AutoencoderKL folder (e.g. sd-vae-ft-mse) or to null"
    if not folder.is_dir():
        raise ModelFolderError(f"{key}: folder {folder} does not exist; {hint}")
    if not (folder / "config.json").exists() or not _has_weights(folder):
        raise ModelFolderError(f"{key}: folder {folder} has no config.json or no weights; {hint}")
    config = _config(folder / "config.json")
    if "latent_channels" not in config or "block_out_channels" not in config:
        what = config.get("_class_name") or ", ".join(config.get("architectures") or []) or config.get("model_type")
        raise ModelFolderError(f"{key}: folder {folder} holds {what or 'a model'} (its config.json has no "
                               f"latent_channels), not an AutoencoderKL; {hint}")
    weights_variant(folder, key, "diffusion_pytorch_model")
    return folder


def check_clip_folder(path: str | Path, key: str = "models.clip") -> Path:
    folder = Path(path)
    hint = (f"set {key} to a CLIP folder laid out like clip-vit-large-patch14 "
            "(config.json, weights, preprocessor_config.json, vocab.json + merges.txt or tokenizer.json)")
    if not folder.is_dir():
        raise ModelFolderError(f"{key}: folder {folder} does not exist; {hint}")
    missing = [p for p in CLIP_LAYOUT if not (folder / p).exists()]
    if not _has_weights(folder):
        missing.append("<weights>")
    if not any(all((folder / f).exists() for f in group) for group in CLIP_TOKENIZER_FILES):
        missing.append("vocab.json/merges.txt")
    if missing:
        raise ModelFolderError(f"{key}: folder {folder} is incomplete, missing {', '.join(missing)}; {hint}")
    weights_variant(folder, key)
    return folder


def _config(path: Path) -> dict:
    return json.loads(path.read_text())


def model_dims(sd: str | Path, clip: str | Path, vae: str | Path | None = None) -> ModelDims:
    """Read only the configs (no weights) and check that the models fit together."""
    sd, clip = check_sd_folder(sd), check_clip_folder(clip)
    unet = _config(sd / "unet" / "config.json")
    text = _config(sd / "text_encoder" / "config.json")
    vae_dir = check_vae_folder(vae) if vae else sd / "vae"
    vae_cfg = _config(vae_dir / "config.json")
    clip_cfg = _config(clip / "config.json")
    cross = unet["cross_attention_dim"]
    if isinstance(cross, list):
        cross = cross[0]
    problems = []
    if text["hidden_size"] != cross:
        problems.append(f"text encoder hidden_size {text['hidden_size']} != UNet cross_attention_dim {cross}")
    if vae_cfg["latent_channels"] != unet["in_channels"]:
        problems.append(f"VAE latent_channels {vae_cfg['latent_channels']} != UNet in_channels {unet['in_channels']}")
    d_clip = clip_cfg.get("projection_dim")
    if not d_clip:
        problems.append(f"{clip}/config.json has no projection_dim; is it a CLIPModel checkpoint?")
    if problems:
        raise ModelFolderError(f"models.sd={sd}, models.clip={clip}: models do not fit together: "
                               + "; ".join(problems))
    scale = 2 ** (len(vae_cfg["block_out_channels"]) - 1)
    return ModelDims(d_clip=int(d_clip), d_cross=int(cross), resolution=int(unet["sample_size"]) * scale)


def check_projector_fits(projector_dir: str | Path, sd: str | Path, clip: str | Path,
                         vae: str | Path | None = None, *, sd_key: str = "models.sd",
                         clip_key: str = "models.clip") -> None:
    """Raise ModelFolderError unless a trained projector fits the model folders (configs only).

    The projector maps CLIP image embeddings (its d_clip = the CLIP's projection_dim) to one
    text-conditioning token (its d_cross = the UNet's cross_attention_dim).
    """
    dims = model_dims(sd, clip, vae)
    config_path = Path(projector_dir) / "config.json"
    config = _config(config_path)
    problems = []
    if config.get("d_cross") != dims.d_cross:
        problems.append(f"it was trained for d_cross={config.get('d_cross')} but {sd_key}={sd} has "
                        f"cross_attention_dim {dims.d_cross}")
    if config.get("d_clip") != dims.d_clip:
        problems.append(f"it was trained for d_clip={config.get('d_clip')} but {clip_key}={clip} has "
                        f"projection_dim {dims.d_clip}")
    if problems:
        raise ModelFolderError(f"{config_path}: the projector does not fit the models: {'; '.join(problems)}. "
                               f"Point {sd_key} / {clip_key} at the folders it was trained with, or delete "
                               f"{Path(projector_dir).parent} to train a new projector for these models")


def projector_fit_errors(models: dict, projector_dirs: dict[str, str | Path]) -> list[str]:
    """Problems of :func:`check_projector_fits` for every projector folder that exists.

    models: {'sd', 'clip', 'vae'} folders (sdi.config.settings.model_paths); projector_dirs: {dataset: folder}.
    Nothing is reported while the model folders themselves are missing or broken (the config
    check names those).
    """
    existing = {name: Path(d) for name, d in projector_dirs.items() if (Path(d) / "config.json").is_file()}
    if not existing or not models.get("sd") or not models.get("clip"):
        return []
    try:
        model_dims(models["sd"], models["clip"], models.get("vae"))
    except ModelFolderError:
        return []
    problems = []
    for folder in existing.values():
        try:
            check_projector_fits(folder, models["sd"], models["clip"], models.get("vae"))
        except ModelFolderError as exc:
            problems.append(str(exc))
    return problems


FILTER_CLIP_KEY = "models.filter_clip"


def _register_open_clip_config(spec: dict) -> str:
    """The architecture name, after registering spec['config'] (a JSON model config) with open_clip."""
    import open_clip

    if spec.get("config"):
        open_clip.add_model_config(Path(spec["config"]))  # registered under the file's stem
    return spec["architecture"]


def filter_clip_errors(spec: dict | None) -> list[str]:
    """Problems of a ``models.filter_clip`` entry, from its files alone (nothing is loaded).

    spec: None (the transformers CLIP of models.clip) or ``{architecture, weights, config}``:
    an open_clip model name (``open_clip.list_models()``, e.g. ``ViT-L-14``) or the stem of
    ``config``, a JSON model config for architectures open_clip does not ship; weights: a local
    checkpoint file (.bin / .pt / .safetensors).
    """
    if not spec:
        return []
    import open_clip

    key, problems = FILTER_CLIP_KEY, []
    config = spec.get("config")
    if config:
        config = Path(config)
        if not config.is_file():
            problems.append(f"{key}.config: file {config} does not exist; set it to an open_clip model config "
                            "JSON (embed_dim, vision_cfg, text_cfg) or to null for a built-in architecture")
        elif config.stem != spec.get("architecture"):
            problems.append(f"{key}.architecture: {spec.get('architecture')!r} must be the config file's name "
                            f"without .json ({config.stem!r}), which is what open_clip registers it as")
    elif spec.get("architecture") not in open_clip.list_models():
        close = [m for m in open_clip.list_models() if str(spec.get("architecture", "")).lower() in m.lower()][:5]
        problems.append(f"{key}.architecture: {spec.get('architecture')!r} is not an open_clip model "
                        f"(e.g. {', '.join(close or ['ViT-L-14', 'ViT-H-14', 'ViT-bigG-14'])}); name one, "
                        f"or give {key}.config for a custom architecture")
    weights = Path(spec.get("weights") or "")
    if not spec.get("weights") or not weights.is_file():
        problems.append(f"{key}.weights: file {weights} does not exist; set it to the local open_clip checkpoint "
                        f"of {spec.get('architecture')} (e.g. open_clip_pytorch_model.bin)")
    else:
        problem = check_weight_file(weights)
        if problem:
            problems.append(f"{key}.weights: {weights} is truncated or corrupt ({problem}): the download was cut "
                            "short; delete it and download it again")
    return problems
