"""Tiny, randomly initialised Stable Diffusion and CLIP models in the real folder layouts.

They exist so that tests and the demo run the same ``from_pretrained`` code path as a
real SD v1.5 / CLIP ViT-L/14 checkout, offline and in seconds on a CPU. Their outputs are
noise; the code that consumes them is the real code.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPVisionConfig,
)

from sdi.generation import METHOD_DDIM
from sdi.tokenizer import write_clip_tokenizer

TINY_WIDTH = 32  # text hidden size = UNet cross_attention_dim = CLIP projection_dim
TINY_IMAGE_SIZE = 64  # SD resolution of the tiny pipeline (8x8 latents)
TINY_CLIP_IMAGE_SIZE = 32


def _text_config(width: int) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        projection_dim=width,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )


def build_tiny_sd(folder: str | Path, seed: int = 0) -> Path:
    """Save a tiny SD pipeline (unet/ vae/ text_encoder/ tokenizer/ scheduler/ model_index.json)."""
    folder = Path(folder)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=TINY_IMAGE_SIZE // 8,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        mid_block_type=None,
        cross_attention_dim=TINY_WIDTH,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 8, 16, 16),  # 4 blocks: vae scale factor 8
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=TINY_IMAGE_SIZE,
    )
    text_encoder = CLIPTextModel(_text_config(TINY_WIDTH))
    tokenizer = write_clip_tokenizer(folder / "tokenizer")
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDIMScheduler(**METHOD_DDIM),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def build_tiny_clip(folder: str | Path, seed: int = 0) -> Path:
    """Save a tiny CLIPModel + CLIPImageProcessor + tokenizer, laid out like clip-vit-large-patch14."""
    folder = Path(folder)
    torch.manual_seed(seed)
    vision = CLIPVisionConfig(
        hidden_size=TINY_WIDTH,
        intermediate_size=2 * TINY_WIDTH,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=TINY_CLIP_IMAGE_SIZE,
        patch_size=8,
        projection_dim=TINY_WIDTH,
    )
    config = CLIPConfig(
        text_config=_text_config(TINY_WIDTH).to_dict(),
        vision_config=vision.to_dict(),
        projection_dim=TINY_WIDTH,
    )
    CLIPModel(config).save_pretrained(folder, safe_serialization=True)
    CLIPImageProcessor(
        size={"shortest_edge": TINY_CLIP_IMAGE_SIZE},
        crop_size={"height": TINY_CLIP_IMAGE_SIZE, "width": TINY_CLIP_IMAGE_SIZE},
    ).save_pretrained(folder)
    write_clip_tokenizer(folder)
    return folder
