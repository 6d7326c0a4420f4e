"""Load Stable Diffusion and CLIP from local folders and check that they fit together.

The same functions load the tiny models of :mod:`sdi.tiny_models` and real SD v1.5 /
CLIP ViT-L/14 checkouts; only the folder differs. Nothing here touches the network.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

SD_LAYOUT = ("model_index.json", "unet/config.json", "vae/config.json",
             "text_encoder/config.json", "tokenizer", "scheduler/scheduler_config.json")
VAE_LAYOUT = ("config.json",)
CLIP_LAYOUT = ("config.json", "preprocessor_config.json")
CLIP_TOKENIZER_FILES = (("vocab.json", "merges.txt"), ("tokenizer.json",))
WEIGHT_SUFFIXES = (".safetensors", ".bin")


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


def _has_weights(folder: Path) -> bool:
    return any(p.name.endswith(WEIGHT_SUFFIXES) for p in folder.iterdir())


def check_sd_folder(path: str | Path, key: str = "models.sd") -> Path:
    """Raise ModelFolderError naming the config key unless path is a diffusers SD folder."""
    folder = Path(path)
    hint = (f"set {key} to a Stable Diffusion v1.5 folder in diffusers layout "
            "(model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/)")
    if not folder.is_dir():
        raise ModelFolderError(f"{key}: folder {folder} does not exist; {hint}")
    missing = [p for p in SD_LAYOUT if not (folder / p).exists()]
    missing += [f"{sub}/<weights>" for sub in ("unet", "vae", "text_encoder")
                if (folder / sub).is_dir() and not _has_weights(folder / sub)]
    if missing:
        raise ModelFolderError(f"{key}: folder {folder} is incomplete, missing {', '.join(missing)}; {hint}")
    return folder


def check_vae_folder(path: str | Path, key: str = "models.vae") -> Path:
    folder = Path(path)
    hint = f"set {key} to a diffusers AutoencoderKL folder (e.g. sd-vae-ft-mse) or to null"
    if not folder.is_dir():
        raise ModelFolderError(f"{key}: folder {folder} does not exist; {hint}")
    if not (folder / "config.json").exists() or not _has_weights(folder):
        raise ModelFolderError(f"{key}: folder {folder} has no config.json or no weights; {hint}")
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


def _quiet_transformers() -> None:
    # Loading CLIPModel weights into the vision-only class reports every text weight
    # as unexpected; that is the intended use, not a problem.
    from transformers.utils import logging

    logging.set_verbosity_error()


def load_sd_pipeline(sd: str | Path, vae: str | Path | None = None, *,
                     device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                     scheduler=None):
    """Load a StableDiffusionPipeline (no safety checker) from local folders."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline

    _quiet_transformers()
    sd = check_sd_folder(sd)
    kwargs = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False,
              "dtype": dtype, "local_files_only": True}
    if vae:
        kwargs["vae"] = AutoencoderKL.from_pretrained(check_vae_folder(vae), dtype=dtype, local_files_only=True)
    if scheduler is not None:
        kwargs["scheduler"] = scheduler
    pipe = StableDiffusionPipeline.from_pretrained(sd, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def load_clip_vision(clip: str | Path, *, device: str | torch.device = "cpu",
                     dtype: torch.dtype = torch.float32):
    """(CLIPVisionModelWithProjection, CLIPImageProcessor) from a CLIP folder, in eval mode."""
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    _quiet_transformers()
    clip = check_clip_folder(clip)
    model = CLIPVisionModelWithProjection.from_pretrained(clip, dtype=dtype, local_files_only=True)
    processor = CLIPImageProcessor.from_pretrained(clip, local_files_only=True)
    return model.to(device).eval().requires_grad_(False), processor


def load_clip(clip: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """(CLIPModel, CLIPImageProcessor, CLIPTokenizer) from a CLIP folder, in eval mode (the filter)."""
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

    _quiet_transformers()
    clip = check_clip_folder(clip)
    model = CLIPModel.from_pretrained(clip, dtype=dtype, local_files_only=True)
    processor = CLIPImageProcessor.from_pretrained(clip, local_files_only=True)
    tokenizer = CLIPTokenizer.from_pretrained(clip, local_files_only=True)
    return model.to(device).eval().requires_grad_(False), processor, tokenizer


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda when present, else cpu; anything else is passed to torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """Config dtype name -> torch dtype; half precision falls back to fp32 on CPU."""
    if name not in DTYPES:
        raise ValueError(f"dtype {name!r} is not one of {sorted(DTYPES)}")
    if device.type == "cpu" and name == "fp16":
        return torch.float32
    return DTYPES[name]
