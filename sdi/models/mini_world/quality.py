"""Cheap quality numbers of a mini world, recorded in its manifest (bench/mini_world.py adds the judge)."""

from __future__ import annotations

import numpy as np
import torch

from sdi.data import mini_corpus as corpus
from sdi.models.mini_world.architectures import _clip_normalize


@torch.no_grad()
def vae_mse(vae, images: torch.Tensor) -> float:
    """Reconstruction MSE on [-1, 1] of [0, 1] images [N, 3, 32, 32] (posterior mean)."""
    x = images * 2 - 1
    return torch.nn.functional.mse_loss(vae.decode(vae.encode(x).latent_dist.mean).sample, x).item()


@torch.no_grad()
def clip_retrieval(model, tokenizer, images: torch.Tensor, labels: np.ndarray, fg: np.ndarray, bg: np.ndarray,
                   stroke: np.ndarray) -> dict[str, float]:
    """Zero-shot accuracy of CLIP on [0, 1] images: class among "a photo of a digit X" (10 prompts);
    fg / bg / stroke each among the captions naming the true class and one value of that attribute."""
    img = model.get_image_features(pixel_values=_clip_normalize(images)).pooler_output
    img = torch.nn.functional.normalize(img, dim=-1)

    def text(texts):
        tok = tokenizer(texts, padding=True, return_tensors="pt")
        emb = model.get_text_features(input_ids=tok.input_ids, attention_mask=tok.attention_mask).pooler_output
        return torch.nn.functional.normalize(emb, dim=-1)

    out = {"class": float(((img @ text([corpus.caption(c, None, None, None) for c in range(10)]).T)
                           .argmax(1).numpy() == labels).mean())}
    for name, truth, count in (("fg", fg, len(corpus.FOREGROUNDS)), ("bg", bg, len(corpus.BACKGROUNDS)),
                               ("stroke", stroke, len(corpus.STROKES))):
        def cap(c, v, name=name):
            return corpus.caption(c, v if name == "fg" else None, v if name == "bg" else None,
                                  v if name == "stroke" else None)
        emb = text([cap(c, v) for c in range(10) for v in range(count)]).view(10, count, -1)
        scores = torch.einsum("nd,nvd->nv", img, emb[torch.from_numpy(labels)])
        out[name] = float((scores.argmax(1).numpy() == truth).mean())
    return out


def _eval_set(digits, labels, idx, seed: int, n: int = 1000):
    rng = np.random.default_rng(seed)
    i = rng.choice(idx, size=min(n, len(idx)), replace=False)
    fg, bg, stroke = corpus.random_looks(len(i), rng)
    return torch.from_numpy(corpus.render(digits[i], fg, bg, stroke)), labels[i], fg, bg, stroke
