"""Training the mini world's VAE, CLIP and UNet, deterministically (fixed seeds, threads and algorithms)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np
import torch

from sdi import NEGATIVE_PROMPT
from sdi.data import mini_corpus as corpus
from sdi.models.mini_world.architectures import _clip_normalize, clip_config, unet_config, vae_config
from sdi.models.mini_world.recipe import Recipe

# ---------------------------------------------------------------------------------------------
# determinism


@contextlib.contextmanager
def deterministic(threads: int) -> Iterator[None]:
    """Fixed intra-op threads and deterministic algorithms inside; the previous settings after."""
    old_threads, old_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)


def _seed(seed: int) -> np.random.Generator:
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def _cosine_lr(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _optimizer(model: torch.nn.Module, lr: float, total: int, warmup: int = 30):
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _cosine_lr(s, total, warmup))
    return opt, sched


# ---------------------------------------------------------------------------------------------
# training


class _Digits:
    """The world's digits and a seeded stream of looks; renders batches."""

    def __init__(self, digits: np.ndarray, labels: np.ndarray, rng: np.random.Generator):
        self.digits, self.labels, self.rng = digits, labels, rng

    def batch(self, n: int):
        """(images [n, 3, 32, 32] in [0, 1], labels, fg, bg, stroke)."""
        i = self.rng.integers(len(self.digits), size=n)
        fg, bg, stroke = corpus.random_looks(n, self.rng)
        images = corpus.render(self.digits[i], fg, bg, stroke)
        return torch.from_numpy(images), self.labels[i], fg, bg, stroke


def train_vae(recipe: Recipe, digits: np.ndarray, labels: np.ndarray, log=print):
    """AutoencoderKL on rendered world digits: MSE on [-1, 1] + a small KL term; scaling_factor set from data."""
    from diffusers import AutoencoderKL

    rng = _seed(recipe.seed + 1)
    vae = AutoencoderKL(**vae_config(recipe))
    opt, sched = _optimizer(vae, recipe.vae_lr, recipe.vae_steps)
    data = _Digits(digits, labels, rng)
    vae.train()
    for step in range(recipe.vae_steps):
        x = data.batch(recipe.vae_batch)[0] * 2 - 1
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample()).sample
        mse = torch.nn.functional.mse_loss(recon, x)
        loss = mse + recipe.vae_kl_weight * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == recipe.vae_steps - 1:
            log(f"vae step {step}: mse {mse.item():.4f}")
    vae.eval().requires_grad_(False)
    # SD's scaling_factor makes the latents unit-variance (0.18215 for SD v1.5): measured the same way here.
    with torch.no_grad():
        x = data.batch(512)[0] * 2 - 1
        std = vae.encode(x).latent_dist.sample().std().item()
    vae.register_to_config(scaling_factor=round(1.0 / std, 5))
    return vae


def _consistent(labels, fg, bg, stroke, named) -> torch.Tensor:
    """[N, N] bool: caption j (naming the attributes in named[j]) describes image i."""
    ok = labels[:, None] == labels[None, :]
    for k, attr in enumerate((fg, bg, stroke)):
        ok &= ~named[None, :, k] | (attr[:, None] == attr[None, :])
    return torch.from_numpy(ok)


def train_clip(recipe: Recipe, digits: np.ndarray, labels: np.ndarray, tokenizer, log=print):
    """CLIPModel trained contrastively on rendered world digits and their captions (soft targets)."""
    from transformers import CLIPModel

    rng = _seed(recipe.seed + 2)
    model = CLIPModel(clip_config(recipe))
    captions = corpus.all_captions()
    tokens = tokenizer(captions, padding=True, return_tensors="pt")
    opt, sched = _optimizer(model, recipe.clip_lr, recipe.clip_steps)
    data = _Digits(digits, labels, rng)
    model.train()
    for step in range(recipe.clip_steps):
        images, lab, fg, bg, stroke = data.batch(recipe.clip_batch)
        idx, named = corpus.caption_indices(lab, fg, bg, stroke, recipe.clip_name_prob, rng)
        if recipe.clip_class_only_prob > 0:
            alone = rng.random(len(lab)) < recipe.clip_class_only_prob
            named[alone] = False
            idx = np.where(alone, [corpus.caption_index(c, None, None, None) for c in lab], idx)
        out = model(input_ids=tokens.input_ids[idx], attention_mask=tokens.attention_mask[idx],
                    pixel_values=_clip_normalize(images))
        target = _consistent(lab, fg, bg, stroke, named).float()
        logits = out.logits_per_image
        loss = 0.5 * (torch.nn.functional.cross_entropy(logits, target / target.sum(1, keepdim=True))
                      + torch.nn.functional.cross_entropy(logits.T, (target / target.sum(0, keepdim=True)).T))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == recipe.clip_steps - 1:
            log(f"clip step {step}: loss {loss.item():.4f}")
    return model.eval().requires_grad_(False)


@torch.no_grad()
def caption_states(text_encoder, tokenizer, texts: list[str], batch: int = 256) -> torch.Tensor:
    """[len(texts), 77, d] last_hidden_state of the texts padded to 77, as the pipeline encodes prompts."""
    out = []
    for i in range(0, len(texts), batch):
        ids = tokenizer(texts[i:i + batch], padding="max_length", max_length=77, truncation=True,
                        return_tensors="pt").input_ids
        out.append(text_encoder(ids).last_hidden_state)
    return torch.cat(out)


def _latent_corpus(recipe: Recipe, vae, digits: np.ndarray, labels: np.ndarray, rng: np.random.Generator):
    """The UNet's latent corpus: renders_per_digit looks of every world digit, encoded once.

    Returns (labels, fg, bg, stroke, posterior means, posterior stds), one row per render.
    """
    n = len(digits) * recipe.renders_per_digit
    which = np.tile(np.arange(len(digits)), recipe.renders_per_digit)
    fg, bg, stroke = corpus.random_looks(n, rng)
    means, stds = [], []
    with torch.no_grad():
        for i in range(0, n, 512):
            sl = slice(i, i + 512)
            x = torch.from_numpy(corpus.render(digits[which[sl]], fg[sl], bg[sl], stroke[sl])) * 2 - 1
            dist = vae.encode(x).latent_dist
            means.append(dist.mean)
            stds.append(dist.std)
    means, stds = torch.cat(means), torch.cat(stds)
    lab = labels[which]
    return lab, fg, bg, stroke, means, stds


def _caption_table(text_encoder, tokenizer) -> tuple[torch.Tensor, np.ndarray]:
    """Hidden states of every caption, then the two unconditional ones; and the rows of those two."""
    captions = corpus.all_captions()
    states = caption_states(text_encoder, tokenizer, [*captions, "", NEGATIVE_PROMPT])
    uncond = np.array([len(captions), len(captions) + 1])
    return states, uncond


def train_unet(recipe: Recipe, vae, text_encoder, tokenizer, digits: np.ndarray, labels: np.ndarray, log=print):
    """UNet2DConditionModel on VAE latents of rendered world digits, conditioned on caption hidden states.

    epsilon prediction on SD v1.5's noise schedule, min-SNR-5 loss weights, caption dropout, EMA weights.
    """
    from diffusers import DDPMScheduler, UNet2DConditionModel

    from sdi.models.schedulers import METHOD_DDIM

    rng = _seed(recipe.seed + 3)
    lab, fg, bg, stroke, means, stds = _latent_corpus(recipe, vae, digits, labels, rng)
    n = len(lab)
    states, uncond = _caption_table(text_encoder, tokenizer)

    ddpm = DDPMScheduler(**{k: v for k, v in METHOD_DDIM.items() if k in ("num_train_timesteps", "beta_start",
                                                                           "beta_end", "beta_schedule")})
    snr = ddpm.alphas_cumprod / (1 - ddpm.alphas_cumprod)
    weight = torch.clamp(snr, max=5.0) / snr
    unet = UNet2DConditionModel(**unet_config(recipe))
    ema = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    opt, sched = _optimizer(unet, recipe.unet_lr, recipe.unet_steps)
    scale = vae.config.scaling_factor
    unet.train()
    for step in range(recipe.unet_steps):
        i = rng.integers(n, size=recipe.unet_batch)
        idx, _ = corpus.caption_indices(lab[i], fg[i], bg[i], stroke[i], recipe.unet_name_prob, rng)
        drop = rng.random(len(i)) < recipe.unet_drop_prob
        idx = np.where(drop, uncond[rng.integers(2, size=len(i))], idx)
        latents = (means[i] + stds[i] * torch.randn(means[i].shape)) * scale
        noise = torch.randn(latents.shape)
        t = torch.from_numpy(rng.integers(ddpm.config.num_train_timesteps, size=len(i)))
        noisy = ddpm.add_noise(latents, noise, t)
        pred = unet(noisy, t, states[idx]).sample
        loss = (weight[t] * (pred - noise).pow(2).mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        decay = min(recipe.unet_ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for k, v in unet.state_dict().items():
                if v.is_floating_point():
                    ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
                else:
                    ema[k].copy_(v)
        if step % 100 == 0 or step == recipe.unet_steps - 1:
            log(f"unet step {step}: loss {loss.item():.4f}")
    unet.load_state_dict(ema)
    return unet.eval().requires_grad_(False)
