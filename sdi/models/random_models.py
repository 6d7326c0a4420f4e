"""Randomly initialised Stable Diffusion v1.5, sd-vae-ft-mse and CLIP ViT-L/14, in the hub's folder layouts.

No weights can be downloaded here, but the architectures are public configs: a model built from
them with random weights has exactly the shapes, dtypes, parameter counts, FLOPs and memory of
the real checkpoint, and a folder written the way the hub ships it is exactly what a real
download loads into. Two sizes share the code:

- ``"full"``: SD v1.5 (UNet 859.5M parameters, VAE 83.7M, text encoder 123.1M; 512x512),
  sd-vae-ft-mse (the same VAE architecture), CLIP ViT-L/14 (projection_dim 768, 224 px);
- ``"tiny"``: the 32-wide models of :mod:`sdi.models.tiny` (64x64 images), for tests and the demo.

What a folder holds (``hub_layout=True``, as ``stable-diffusion-v1-5`` ships):

- ``model_index.json`` naming ``safety_checker`` (``StableDiffusionSafetyChecker``) and
  ``feature_extractor`` (``CLIPImageProcessor``), ``scheduler`` as ``PNDMScheduler`` with SD v1.5's
  settings; ``feature_extractor/preprocessor_config.json`` in the hub's legacy format;
  ``safety_checker/config.json`` (a full CLIP ViT-L config; its weights are written for the tiny
  size only: sdi never loads the safety checker, and at full size it would add 1.2 GB per precision);
- per component the plain (fp32) weight files and/or the ``fp16`` variant files
  (``diffusion_pytorch_model.fp16.safetensors``, ``model.fp16.safetensors``), as ``.safetensors``
  and/or ``.bin`` (the hub has both; the loaders take either).

With ``hub_layout=False`` the folder is what ``StableDiffusionPipeline.save_pretrained`` writes for
a pipeline without safety checker (``[null, null]`` entries), with the method's DDIM scheduler.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Sequence
from pathlib import Path

import torch

SIZES = ("full", "tiny")
PRECISIONS = {"fp32": (None, torch.float32), "fp16": ("fp16", torch.float16)}  # name -> (variant, dtype)
FORMATS = ("safetensors", "bin")

# --- SD v1.5 (stable-diffusion-v1-5/stable-diffusion-v1-5): unet/, vae/, text_encoder/ configs
SD15_UNET = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "center_input_sample": False,
    "flip_sin_to_cos": True, "freq_shift": 0,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2, "downsample_padding": 1,
    "mid_block_scale_factor": 1, "act_fn": "silu", "norm_num_groups": 32, "norm_eps": 1e-5,
    "cross_attention_dim": 768, "attention_head_dim": 8,
}
# The same architecture as sd-vae-ft-mse (stabilityai/sd-vae-ft-mse), which only fine-tunes the decoder.
SD15_VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "sample_size": 512,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "act_fn": "silu", "norm_num_groups": 32,
}
# CLIP ViT-L/14's text tower; SD v1.5's text encoder is this model. bos/eos/pad are the
# legacy ids of the hub configs (0, 2, 1): transformers then finds the end token by argmax.
CLIP_L14_TEXT = {
    "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
    "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu", "projection_dim": 768,
    "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
}
CLIP_L14_VISION = {
    "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
    "image_size": 224, "patch_size": 14, "hidden_act": "quick_gelu", "projection_dim": 768,
}
# SD v1.5 ships a PNDM scheduler; generation builds its DDIM scheduler from this config.
SD15_SCHEDULER = {
    "_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
    "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
    "trained_betas": None, "clip_sample": False,
}
# clip-vit-large-patch14/preprocessor_config.json and SD v1.5's feature_extractor/, as the hub has them.
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# --- the tiny counterparts (sdi.models.tiny)
TINY_WIDTH = 32  # text hidden size = UNet cross_attention_dim = CLIP projection_dim
TINY_IMAGE_SIZE = 64  # SD resolution of the tiny pipeline (8x8 latents)
TINY_CLIP_IMAGE_SIZE = 32
TINY_UNET = {
    "sample_size": TINY_IMAGE_SIZE // 8, "block_out_channels": [32, 64], "layers_per_block": 1,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "mid_block_type": None, "cross_attention_dim": TINY_WIDTH, "attention_head_dim": 8, "norm_num_groups": 8,
}
TINY_VAE = {
    "block_out_channels": [8, 8, 16, 16],  # 4 blocks: vae scale factor 8
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "latent_channels": 4, "layers_per_block": 1, "norm_num_groups": 4, "sample_size": TINY_IMAGE_SIZE,
}
TINY_TEXT = {
    "vocab_size": 49408, "hidden_size": TINY_WIDTH, "intermediate_size": 2 * TINY_WIDTH, "num_hidden_layers": 2,
    "num_attention_heads": 2, "max_position_embeddings": 77, "projection_dim": TINY_WIDTH,
    "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 49407,
}
TINY_VISION = {
    "hidden_size": TINY_WIDTH, "intermediate_size": 2 * TINY_WIDTH, "num_hidden_layers": 2, "num_attention_heads": 2,
    "image_size": TINY_CLIP_IMAGE_SIZE, "patch_size": 8, "projection_dim": TINY_WIDTH,
}

ARCHS = {
    "full": {"unet": SD15_UNET, "vae": SD15_VAE, "text": CLIP_L14_TEXT, "vision": CLIP_L14_VISION, "clip_size": 224},
    "tiny": {"unet": TINY_UNET, "vae": TINY_VAE, "text": TINY_TEXT, "vision": TINY_VISION,
             "clip_size": TINY_CLIP_IMAGE_SIZE},
}


def _arch(size: str) -> dict:
    if size not in ARCHS:
        raise ValueError(f"size {size!r} is not one of {SIZES}")
    return ARCHS[size]


def _check_options(precisions: Sequence[str], formats: Sequence[str]) -> None:
    bad = [p for p in precisions if p not in PRECISIONS] + [f for f in formats if f not in FORMATS]
    if bad or not precisions or not formats:
        raise ValueError(f"precisions {list(precisions)} / formats {list(formats)}: choose from "
                         f"{sorted(PRECISIONS)} and {list(FORMATS)}, at least one of each")


def _weights_name(model, fmt: str, variant: str | None) -> str:
    from transformers import PreTrainedModel

    if isinstance(model, PreTrainedModel):  # transformers' names (the safety checker is one too)
        name = "model.safetensors" if fmt == "safetensors" else "pytorch_model.bin"
    else:  # diffusers' names
        name = "diffusion_pytorch_model.safetensors" if fmt == "safetensors" else "diffusion_pytorch_model.bin"
    stem, ext = name.rsplit(".", 1)
    return f"{stem}.{variant}.{ext}" if variant else name


def save_component(model: torch.nn.Module, folder: str | Path, *, precisions: Sequence[str] = ("fp32",),
                   formats: Sequence[str] = ("safetensors",)) -> Path:
    """Write config.json and one weight file per precision and format into folder.

    fp32 writes the plain files (``model.safetensors``, ``diffusion_pytorch_model.bin``, ...), fp16 the
    ``fp16`` variant (``model.fp16.safetensors``, ...), as the hub names them; config.json says fp32.
    The model itself is left as it is (fp32).
    """
    from safetensors.torch import save_file

    _check_options(precisions, formats)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    from transformers import PreTrainedModel

    if isinstance(model, PreTrainedModel):
        model.config.architectures = [type(model).__name__]
        model.config.dtype = torch.float32
        model.config.save_pretrained(folder)
    else:
        model.save_config(folder)
    for precision in precisions:
        variant, dtype = PRECISIONS[precision]
        state = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
                 for k, v in model.state_dict().items()}
        for fmt in formats:
            path = folder / _weights_name(model, fmt, variant)
            if fmt == "safetensors":
                save_file(state, path, metadata={"format": "pt"})
            else:
                torch.save(state, path)
        del state
    return folder


def _write_json(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")


def clip_preprocessor_config(image_size: int) -> dict:
    """The hub's (legacy-format) ``preprocessor_config.json`` of CLIP ViT-L/14, at image_size."""
    return {"crop_size": image_size, "do_center_crop": True, "do_normalize": True, "do_resize": True,
            "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
            "resample": 3, "size": image_size}


def _clip_config(size: str):
    from transformers import CLIPConfig

    arch = _arch(size)
    return CLIPConfig(text_config=dict(arch["text"]), vision_config=dict(arch["vision"]),
                      projection_dim=arch["vision"]["projection_dim"])


def _free(*_models) -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def build_random_sd(folder: str | Path, size: str = "full", *, seed: int = 0,
                    precisions: Sequence[str] = ("fp32", "fp16"), formats: Sequence[str] = ("safetensors",),
                    hub_layout: bool = True, device: str | torch.device = "cpu") -> Path:
    """Write a random Stable Diffusion v1.5 (size 'full') or tiny SD (size 'tiny') folder; returns it.

    precisions: 'fp32' (plain files) and/or 'fp16' (the ``fp16`` variant files).
    formats: 'safetensors' and/or 'bin'.
    hub_layout: True writes model_index.json with safety_checker/feature_extractor entries, their
        folders and SD v1.5's PNDM scheduler (see the module docstring); False the minimal layout
        with ``[null, null]`` entries and the method's DDIM scheduler.
    device: where the random weights are initialised ('cuda' is much faster at full size).
    Components are built, written and freed one at a time (peak memory: the UNet).
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    arch = _arch(size)
    _check_options(precisions, formats)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    with torch.device(device):
        unet = UNet2DConditionModel(**arch["unet"])
    save_component(unet, folder / "unet", precisions=precisions, formats=formats)
    del unet
    _free()
    with torch.device(device):
        vae = AutoencoderKL(**arch["vae"])
    save_component(vae, folder / "vae", precisions=precisions, formats=formats)
    del vae
    with torch.device(device):
        text_encoder = CLIPTextModel(CLIPTextConfig(**arch["text"]))
    save_component(text_encoder, folder / "text_encoder", precisions=precisions, formats=formats)
    del text_encoder
    _free()
    write_sd_extras(folder, size, seed=seed, precisions=precisions, formats=formats, hub_layout=hub_layout)
    return folder


def write_sd_extras(folder: str | Path, size: str = "tiny", *, seed: int = 0, precisions: Sequence[str] = ("fp32",),
                    formats: Sequence[str] = ("safetensors",), hub_layout: bool = False) -> Path:
    """Everything of an SD folder but unet/, vae/ and text_encoder/: tokenizer/, scheduler/, model_index.json
    (and with hub_layout the safety checker and feature extractor of size); see :func:`build_random_sd`.

    For pipelines whose three models are written by :func:`save_component` (random or trained).
    """
    from diffusers import DDIMScheduler, PNDMScheduler

    from sdi.models.schedulers import METHOD_DDIM
    from sdi.models.tokenizer import write_clip_tokenizer

    arch = _arch(size)
    folder = Path(folder)
    write_clip_tokenizer(folder / "tokenizer")

    import diffusers

    index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": diffusers.__version__,
             "scheduler": ["diffusers", "PNDMScheduler" if hub_layout else "DDIMScheduler"],
             "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
             "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]}
    if hub_layout:
        PNDMScheduler.from_config({k: v for k, v in SD15_SCHEDULER.items() if k != "_class_name"}
                                  ).save_pretrained(folder / "scheduler")
        index.update(safety_checker=["stable_diffusion", "StableDiffusionSafetyChecker"],
                     feature_extractor=["transformers", "CLIPImageProcessor"])
        _write_json(folder / "feature_extractor" / "preprocessor_config.json",
                    clip_preprocessor_config(arch["clip_size"]))
        _write_safety_checker(folder / "safety_checker", size, seed=seed, precisions=precisions, formats=formats)
    else:
        DDIMScheduler(**METHOD_DDIM).save_pretrained(folder / "scheduler")
        index.update(safety_checker=[None, None], feature_extractor=[None, None], image_encoder=[None, None],
                     requires_safety_checker=False)
    _write_json(folder / "model_index.json", index)
    return folder


def _write_safety_checker(folder: Path, size: str, *, seed: int, precisions, formats) -> None:
    """safety_checker/: config.json always; weights only at the tiny size (sdi never loads it)."""
    config = _clip_config(size)
    config.architectures = ["StableDiffusionSafetyChecker"]
    if size == "tiny":
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker

        torch.manual_seed(seed)
        save_component(StableDiffusionSafetyChecker(config), folder, precisions=precisions, formats=formats)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        config.save_pretrained(folder)


def build_random_vae(folder: str | Path, size: str = "full", *, seed: int = 1,
                     precisions: Sequence[str] = ("fp32",), formats: Sequence[str] = ("safetensors",),
                     device: str | torch.device = "cpu") -> Path:
    """Write a random AutoencoderKL folder laid out like sd-vae-ft-mse (config.json + weights); returns it."""
    from diffusers import AutoencoderKL

    folder = Path(folder)
    torch.manual_seed(seed)
    with torch.device(device):
        vae = AutoencoderKL(**_arch(size)["vae"])
    save_component(vae, folder, precisions=precisions, formats=formats)
    return folder


def build_random_clip(folder: str | Path, size: str = "full", *, seed: int = 2,
                      precisions: Sequence[str] = ("fp32",), formats: Sequence[str] = ("safetensors",),
                      hub_layout: bool = True, device: str | torch.device = "cpu") -> Path:
    """Write a random CLIPModel folder laid out like clip-vit-large-patch14; returns it.

    config.json, weights, tokenizer (vocab.json, merges.txt, tokenizer.json, tokenizer_config.json) and
    preprocessor_config.json: with hub_layout in the hub's legacy format (``size: 224``,
    ``CLIPFeatureExtractor``), else as ``CLIPImageProcessor.save_pretrained`` writes it.
    """
    from transformers import CLIPModel

    arch = _arch(size)
    folder = Path(folder)
    torch.manual_seed(seed)
    with torch.device(device):
        model = CLIPModel(_clip_config(size))
    save_component(model, folder, precisions=precisions, formats=formats)
    del model
    _free()
    return write_clip_extras(folder, arch["clip_size"], hub_layout=hub_layout)


def write_clip_extras(folder: str | Path, image_size: int, *, hub_layout: bool = False) -> Path:
    """A CLIP folder's preprocessor_config.json (at image_size) and tokenizer, as :func:`build_random_clip`
    writes them beside the model's config.json and weights."""
    from transformers import CLIPImageProcessor

    from sdi.models.tokenizer import write_clip_tokenizer

    folder = Path(folder)
    if hub_layout:
        _write_json(folder / "preprocessor_config.json", clip_preprocessor_config(image_size))
    else:
        CLIPImageProcessor(size={"shortest_edge": image_size},
                           crop_size={"height": image_size, "width": image_size}).save_pretrained(folder)
    write_clip_tokenizer(folder)
    return folder


def build_fullsize_models(root: str | Path, *, sd_precisions: Sequence[str] = ("fp32", "fp16"),
                          formats: Sequence[str] = ("safetensors",), device: str | torch.device = "cpu",
                          seed: int = 0) -> dict[str, Path]:
    """{'sd', 'vae', 'clip'}: SD v1.5, sd-vae-ft-mse and CLIP ViT-L/14 with random weights under root.

    Folder names as the hub's repositories: ``stable-diffusion-v1-5/``, ``sd-vae-ft-mse/``,
    ``clip-vit-large-patch14/``. Disk: SD 4.3 GB (fp32) + 2.1 GB (fp16 variant), VAE 0.33 GB,
    CLIP 1.7 GB per format.
    """
    root = Path(root)
    return {
        "sd": build_random_sd(root / "stable-diffusion-v1-5", "full", seed=seed, precisions=sd_precisions,
                              formats=formats, device=device),
        "vae": build_random_vae(root / "sd-vae-ft-mse", "full", seed=seed + 1, formats=formats, device=device),
        "clip": build_random_clip(root / "clip-vit-large-patch14", "full", seed=seed + 2, formats=formats,
                                  device=device),
    }


# An open_clip architecture of the tiny size (open_clip ships no model this small): for models.filter_clip tests.
TINY_OPEN_CLIP = {
    "embed_dim": 24,  # deliberately not TINY_WIDTH: the filter's CLIP space is its own
    "vision_cfg": {"image_size": TINY_CLIP_IMAGE_SIZE, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def build_tiny_open_clip(folder: str | Path, *, seed: int = 3, name: str = "sdi-tiny-open-clip") -> dict:
    """Write an open_clip model config (``{name}.json``) and random weights (``open_clip_pytorch_model.bin``,
    a torch.save'd state dict as open_clip's releases ship) into folder.

    Returns the ``models.filter_clip`` entry for them: ``{architecture, weights, config}``.
    """
    import open_clip

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / f"{name}.json"
    _write_json(config, TINY_OPEN_CLIP)
    open_clip.add_model_config(config)
    torch.manual_seed(seed)
    model = open_clip.create_model(name, pretrained=None)
    weights = folder / "open_clip_pytorch_model.bin"
    torch.save(model.state_dict(), weights)
    return {"architecture": name, "weights": str(weights), "config": str(config)}
