"""The method's text conditioning: prompt hidden states with one token replaced.

docs/method.md sections 2 and 5: the prompt ``"a high quality photo of a class."`` is padded
to 77 tokens and encoded by the frozen SD text encoder (``last_hidden_state``, as
``StableDiffusionPipeline.encode_prompt`` does without ``clip_skip``); the hidden state at
the ``class</w>`` position is replaced by a projected CLIP image embedding (training) or a
sampled vector (generation).
"""

from __future__ import annotations

import torch

from sdi import PROMPT
from sdi.models.tokenizer import placeholder_position


@torch.no_grad()
def encode_text(tokenizer, text_encoder, prompts: list[str]) -> torch.Tensor:
    """Frozen text encoder ``last_hidden_state`` of prompts padded/truncated to the tokenizer's max length.

    Returns [len(prompts), 77, d_cross] on the text encoder's device, in its dtype.
    No attention mask is passed, as in ``StableDiffusionPipeline`` for SD v1.5 (the CLIP
    text model is causal, so padding does not change the hidden states before it).
    """
    ids = tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    return text_encoder(ids.to(text_encoder.device)).last_hidden_state


def prompt_hidden_states(tokenizer, text_encoder, prompt: str = PROMPT) -> tuple[torch.Tensor, int]:
    """Hidden states of the method's prompt and the index of its ``class</w>`` token.

    Returns (hidden [1, 77, d_cross] on the text encoder's device and dtype, position),
    position being 7 for the method's prompt with the CLIP vocabulary.
    """
    position = placeholder_position(tokenizer, prompt)
    if position >= tokenizer.model_max_length:
        raise ValueError(f"prompt {prompt!r}: the placeholder token is at position {position}, "
                         f"past the {tokenizer.model_max_length} tokens the text encoder sees; shorten the prompt")
    return encode_text(tokenizer, text_encoder, [prompt]), position


def replace_placeholder(hidden: torch.Tensor, vectors: torch.Tensor, position: int) -> torch.Tensor:
    """Copy of ``hidden`` with row ``position`` replaced by ``vectors``, one sequence per vector.

    Args:
        hidden: [1 or B, L, d] prompt hidden states (left untouched).
        vectors: [B, d] replacement vectors; cast to ``hidden``'s device and dtype.
        position: token index to replace, 0 <= position < L.

    Returns [B, L, d] in ``hidden``'s dtype and device. Built out of place (concatenation),
    so gradients flow into ``vectors`` (and into ``hidden`` where it requires them).
    """
    if hidden.ndim != 3 or vectors.ndim != 2:
        raise ValueError(f"replace_placeholder: expected hidden [B, L, d] and vectors [B, d], got "
                         f"{tuple(hidden.shape)} and {tuple(vectors.shape)}")
    batch, length, dim = vectors.shape[0], hidden.shape[1], hidden.shape[2]
    if vectors.shape[1] != dim:
        raise ValueError(f"replace_placeholder: vectors have size {vectors.shape[1]} but the hidden states "
                         f"have size {dim}; the projector's d_cross must equal the text encoder's hidden size")
    if hidden.shape[0] not in (1, batch):
        raise ValueError(f"replace_placeholder: hidden has batch {hidden.shape[0]}, vectors have batch {batch}; "
                         "pass one prompt ([1, L, d]) or one per vector")
    if not 0 <= position < length:
        raise ValueError(f"replace_placeholder: position {position} is outside the {length} tokens")
    hidden = hidden.expand(batch, length, dim)
    token = vectors.to(device=hidden.device, dtype=hidden.dtype)[:, None, :]
    return torch.cat([hidden[:, :position], token, hidden[:, position + 1:]], dim=1)
