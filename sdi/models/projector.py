"""The semantic projector: a CLIP image embedding -> one token of the SD text conditioning.

docs/method.md section 2: ``Linear(d_clip, 1024) -> ReLU -> Linear(1024, d_cross)``. Its
output replaces the ``class</w>`` token's hidden state in the prompt
``"a high quality photo of a class."`` (see :mod:`sdi.models.conditioning`).

It is a diffusers ``ModelMixin``/``ConfigMixin``, so a folder written with
``save_pretrained`` (``config.json`` + ``diffusion_pytorch_model.safetensors``) describes
itself and ``SemanticProjector.from_pretrained(folder)`` loads it offline.
"""

from __future__ import annotations

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn


class SemanticProjector(ModelMixin, ConfigMixin):
    """Two-layer MLP from the CLIP image embedding space to the UNet cross-attention space.

    Args:
        d_clip: CLIP ``projection_dim`` (768 for ViT-L/14), the input size.
        d_cross: UNet ``cross_attention_dim`` (768 for SD v1.5), the output size.
        hidden_dim: width of the hidden layer (1024 in the published method).

    At 768/1024/768 it has 1,574,656 parameters.
    """

    config_name = "config.json"

    @register_to_config
    def __init__(self, d_clip: int = 768, d_cross: int = 768, hidden_dim: int = 1024):
        super().__init__()
        self.linear_1 = nn.Linear(d_clip, hidden_dim)
        self.act = nn.ReLU()
        self.linear_2 = nn.Linear(hidden_dim, d_cross)

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """[B, d_clip] CLIP ``image_embeds`` (not normalised) -> [B, d_cross] token vectors.

        The input is cast to the weights' dtype; the output has that dtype (or the autocast dtype).
        """
        if image_embeds.shape[-1] != self.config.d_clip:
            raise ValueError(f"SemanticProjector expects image embeddings of size {self.config.d_clip} "
                             f"(config d_clip), got shape {tuple(image_embeds.shape)}; was the projector "
                             "trained with a different CLIP model?")
        image_embeds = image_embeds.to(self.linear_1.weight.dtype)
        return self.linear_2(self.act(self.linear_1(image_embeds)))
