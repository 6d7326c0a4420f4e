"""Tiny, randomly initialised Stable Diffusion and CLIP models in the real folder layouts.

They exist so that tests and the demo run the same ``from_pretrained`` code path as a
real SD v1.5 / CLIP ViT-L/14 checkout, offline and in seconds on a CPU. Their outputs are
noise; the code that consumes them is the real code. The builders are those of the
full-size random models (:mod:`sdi.models.random_models`) at size ``"tiny"``, in the minimal layout
(no safety checker entries, fp32 safetensors only, the method's DDIM scheduler); pass
``hub_layout=True`` etc. to :func:`sdi.models.random_models.build_random_sd` for the hub's layout.
"""

from __future__ import annotations

from pathlib import Path

from sdi.models.random_models import (
    TINY_CLIP_IMAGE_SIZE,
    TINY_IMAGE_SIZE,
    TINY_WIDTH,
    build_random_clip,
    build_random_sd,
)

__all__ = ["TINY_CLIP_IMAGE_SIZE", "TINY_IMAGE_SIZE", "TINY_WIDTH", "build_tiny_clip", "build_tiny_sd"]


def build_tiny_sd(folder: str | Path, seed: int = 0) -> Path:
    """Save a tiny SD pipeline (unet/ vae/ text_encoder/ tokenizer/ scheduler/ model_index.json)."""
    return build_random_sd(folder, "tiny", seed=seed, precisions=("fp32",), hub_layout=False)


def build_tiny_clip(folder: str | Path, seed: int = 0) -> Path:
    """Save a tiny CLIPModel + CLIPImageProcessor + tokenizer, laid out like clip-vit-large-patch14."""
    return build_random_clip(folder, "tiny", seed=seed, hub_layout=False)
