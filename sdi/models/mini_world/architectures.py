"""The mini world's model configurations (VAE, CLIP, UNet), CLIP's pixel normalisation and its tokenizer."""

from __future__ import annotations

import tempfile

import torch

from sdi.data import mini_corpus as corpus
from sdi.models.mini_world.recipe import MiniWorldError, Recipe


def vae_config(recipe: Recipe) -> dict:
    n = len(recipe.vae_widths)
    return {"in_channels": 3, "out_channels": 3, "latent_channels": 4, "sample_size": corpus.IMAGE_SIZE,
            "block_out_channels": list(recipe.vae_widths), "down_block_types": ["DownEncoderBlock2D"] * n,
            "up_block_types": ["UpDecoderBlock2D"] * n, "layers_per_block": 1, "norm_num_groups": 8,
            "act_fn": "silu"}


def clip_config(recipe: Recipe):
    from transformers import CLIPConfig

    w, layers = recipe.clip_width, recipe.clip_layers
    text = {"vocab_size": 49408, "hidden_size": w, "intermediate_size": 4 * w, "num_hidden_layers": layers,
            "num_attention_heads": max(1, w // 32), "max_position_embeddings": 77, "projection_dim": w,
            # the real ids: pooling then finds the first <|endoftext|> (padding is <|endoftext|> too)
            "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 49407}
    vision = {"hidden_size": w, "intermediate_size": 4 * w, "num_hidden_layers": layers,
              "num_attention_heads": max(1, w // 32), "image_size": corpus.IMAGE_SIZE, "patch_size": recipe.clip_patch,
              "projection_dim": w}
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=w)


def unet_config(recipe: Recipe) -> dict:
    if len(recipe.unet_attention) != len(recipe.unet_widths):
        raise MiniWorldError(f"Recipe.unet_attention {recipe.unet_attention}: one flag per level of unet_widths "
                             f"{recipe.unet_widths}")
    down = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in recipe.unet_attention]
    up = ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(recipe.unet_attention)]
    # diffusers' attention_head_dim is the number of heads (its historical name)
    return {"sample_size": corpus.IMAGE_SIZE // 2 ** (len(recipe.vae_widths) - 1), "in_channels": 4,
            "out_channels": 4, "block_out_channels": list(recipe.unet_widths), "layers_per_block": recipe.unet_layers,
            "down_block_types": down, "up_block_types": up, "cross_attention_dim": recipe.clip_width,
            "attention_head_dim": recipe.unet_heads, "norm_num_groups": 16}


def _clip_normalize(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] pixels -> CLIPImageProcessor's normalisation (the images are already 32x32)."""
    from sdi.models.random_models import CLIP_MEAN, CLIP_STD

    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (images - mean) / std


def _tokenizer():
    from transformers import CLIPTokenizer

    from sdi.models.tokenizer import write_clip_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        write_clip_tokenizer(tmp)
        return CLIPTokenizer.from_pretrained(tmp, local_files_only=True)
