"""A miniature Stable Diffusion and CLIP, trained here on the CPU from :mod:`sdi.data.mini_corpus`.

The tiny random models (:mod:`sdi.models.tiny`) check that the code runs; their images are
noise. The mini world's models are trained, so the method's effects can be seen and measured:

- **CLIP** (``clip/``, the clip-vit-large-patch14 layout): a ``CLIPModel``, image and text
  towers, trained contrastively on coloured digits and their captions (the real CLIP BPE
  tokenizer). Captions leave attributes out at random, so a caption is a positive for every image
  it describes: the loss's targets are spread over all such pairs in the batch.
- **Stable Diffusion** (``sd/``, what ``StableDiffusionPipeline.save_pretrained`` writes without a
  safety checker): an ``AutoencoderKL`` (32x32 RGB <-> 8x8x4, its ``scaling_factor`` measured as
  SD's was), a ``UNet2DConditionModel`` trained on the latents with the frozen CLIP text tower's
  ``last_hidden_state`` (77 tokens, as the pipeline passes them), that text tower as the
  pipeline's ``text_encoder`` and the method's DDIM scheduler. Captions are dropped (to ``""`` or
  the method's negative prompt, which is what the pipeline's classifier-free guidance uses as
  the unconditional branch) with probability ``unet_drop_prob``.

Everything is trained from :class:`Recipe` alone, deterministically (fixed seeds and thread
count, ``torch.use_deterministic_algorithms``). :func:`ensure_mini_world` builds a world once per
recipe into ``{root}/{recipe hash}/`` (a temporary folder renamed into place when complete, with
a manifest of every file's size and sha256) and checks it on every later use: a partial or corrupt
world is never trusted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from sdi import NEGATIVE_PROMPT
from sdi.data import mini_corpus as corpus

RECIPE_VERSION = 2  # bump when the training code changes what a recipe builds
MANIFEST = "manifest.json"


class MiniWorldError(RuntimeError):
    """A mini world folder that cannot be trusted (names the file and the fix)."""


@dataclass(frozen=True)
class Recipe:
    """Everything a mini world's weights depend on (with the library versions, see :func:`recipe_hash`).

    Steps are optimizer steps; widths are channels. threads, unet_threads: torch's intra-op threads
    during the build and during its UNet stage (results depend on them). The ``*_steps`` defaults fit
    the 10-minute budget on 2 cores.
    """

    seed: int = 0
    threads: int = 1  # on a loaded 2-core machine 1 thread ran these small models 4x faster than 2
    # ... while CLIP trains in a second process beside the VAE; the UNet trains alone, and there 2 threads
    # took 0.15-0.17 s a step against 0.21-0.22 for 1 (batch 64, 2 cores, bench/README.md)
    unet_threads: int = 2
    # VAE: 32x32x3 <-> 8x8x4 (3 blocks)
    vae_widths: tuple[int, ...] = (16, 32, 32)
    vae_steps: int = 400
    vae_batch: int = 32
    vae_lr: float = 2e-3
    vae_kl_weight: float = 1e-5
    # CLIP: ViT patch 4 on 32x32, causal text tower, both `clip_width` wide
    clip_width: int = 64
    clip_layers: int = 3
    clip_patch: int = 4
    # 800 steps: zero-shot class retrieval 62%, and SDI's kept images had their class 68.5% of the time by
    # the judge; 1200 steps: 87% and 87%, for 130 s more (bench/README.md)
    clip_steps: int = 1200
    clip_batch: int = 128
    clip_lr: float = 1e-3
    # Probability that a caption names each attribute. CLIP captions name them all: with attributes
    # left out at random (0.5, 0.7) the tiny CLIP learned the colours and stayed at chance on the class.
    clip_name_prob: float = 1.0
    # ... except this fraction of captions, which name the class alone: their positives are every image
    # of the class in the batch whatever its look, the strongest signal for the class.
    clip_class_only_prob: float = 0.3  # 0.0: CLIP's zero-shot class retrieval 36%, 0.3: 62% (bench/measurements)
    # UNet: 8x8x4 latents; ResNet blocks at 8x8, ResNet blocks with self- and cross-attention to the 77
    # text tokens at 4x4 (unet_attention per level). Attention at 8x8 too and 8 heads made a step 2.5x
    # slower; in the same time this one, with smaller batches at a higher rate, went from 24% to 80%
    # class accuracy (judge) at guidance 2 on text prompts.
    unet_widths: tuple[int, ...] = (32, 64)
    unet_attention: tuple[bool, ...] = (False, True)
    unet_heads: int = 2
    unet_layers: int = 1
    unet_steps: int = 1500
    unet_batch: int = 64
    unet_lr: float = 2e-3
    unet_name_prob: float = 0.7
    unet_drop_prob: float = 0.1  # caption replaced by "" or the negative prompt (classifier-free guidance)
    unet_ema: float = 0.995
    renders_per_digit: int = 4  # looks per world digit in the UNet's latent corpus
    eval_digits: int = 1000  # held-out digits for the manifest's quality numbers

    def scaled(self, factor: float) -> Recipe:
        """The same recipe with every step count multiplied by factor (at least 1 step): for tests."""
        steps = {k: max(1, int(getattr(self, k) * factor)) for k in ("vae_steps", "clip_steps", "unet_steps")}
        return Recipe(**{**asdict(self), **steps})


def _versions() -> dict[str, str]:
    import diffusers
    import transformers

    return {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "numpy": np.__version__}


def recipe_hash(recipe: Recipe) -> str:
    """sha256 (hex) of the recipe, RECIPE_VERSION and the library versions that compute the weights."""
    blob = json.dumps({"recipe": asdict(recipe), "version": RECIPE_VERSION, "libraries": _versions()},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class MiniWorld:
    """A built world: ``sd`` (StableDiffusionPipeline folder) and ``clip`` (CLIPModel folder)."""

    folder: Path
    manifest: dict = field(repr=False)

    @property
    def sd(self) -> Path:
        return self.folder / "sd"

    @property
    def clip(self) -> Path:
        return self.folder / "clip"


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
# models


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


def train_unet(recipe: Recipe, vae, text_encoder, tokenizer, digits: np.ndarray, labels: np.ndarray, log=print):
    """UNet2DConditionModel on VAE latents of rendered world digits, conditioned on caption hidden states.

    epsilon prediction on SD v1.5's noise schedule, min-SNR-5 loss weights, caption dropout, EMA weights.
    """
    from diffusers import DDPMScheduler, UNet2DConditionModel

    from sdi.models.schedulers import METHOD_DDIM

    rng = _seed(recipe.seed + 3)
    # the latent corpus: renders_per_digit looks of every world digit, encoded once
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
    # hidden states of every caption, then the two unconditional ones
    captions = corpus.all_captions()
    states = caption_states(text_encoder, tokenizer, [*captions, "", NEGATIVE_PROMPT])
    uncond = np.array([len(captions), len(captions) + 1])

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


# ---------------------------------------------------------------------------------------------
# quality (cheap numbers recorded in the manifest; bench/mini_world.py adds the judge)


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


# ---------------------------------------------------------------------------------------------
# saving, the manifest, the cached build


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _files(folder: Path) -> dict[str, dict]:
    return {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST}


def save_world(folder: Path, vae, clip, unet) -> None:
    """clip/ (CLIPModel + image processor + tokenizer) and sd/ (the pipeline), the tiny models' layouts."""
    from sdi.models.random_models import save_component, write_clip_extras, write_sd_extras

    save_component(clip, folder / "clip")
    write_clip_extras(folder / "clip", corpus.IMAGE_SIZE)
    sd = folder / "sd"
    save_component(unet, sd / "unet")
    save_component(vae, sd / "vae")
    save_component(clip.text_model, sd / "text_encoder")  # the frozen text tower is SD's text encoder
    write_sd_extras(sd)


def build_world(folder: str | Path, recipe: Recipe = Recipe(), log=print, *, parallel: bool = True) -> dict:
    """Train the mini world of recipe and write it into folder (which must not exist); returns the manifest.

    parallel: train CLIP in a second Python process while the VAE trains (same weights either way).

    The manifest (written last) holds the recipe, its hash, every file's size and sha256, the
    seconds per stage and the cheap quality numbers (VAE MSE, CLIP retrieval on held-out digits).
    Not atomic by itself: :func:`ensure_mini_world` builds into a temporary folder.
    """
    folder = Path(folder)
    if folder.exists():
        raise MiniWorldError(f"{folder}: exists; build_world writes a new folder")
    seconds: dict[str, float] = {}
    with deterministic(recipe.threads):
        start = time.perf_counter()
        digits, labels = corpus.load_mnist()
        split = corpus.source_split(labels)
        world_digits, world_labels = digits[split["world"]], labels[split["world"]]
        tokenizer = _tokenizer()
        seconds["data"] = time.perf_counter() - start
        # CLIP and the VAE do not depend on each other: CLIP trains in a second process meanwhile
        # (its own seed and threads, so the weights are those of a sequential build).
        clip_job = _ClipJob(recipe, folder.parent) if parallel else None
        start = time.perf_counter()
        vae = train_vae(recipe, world_digits, world_labels, log)
        seconds["vae"] = time.perf_counter() - start
        log(f"vae: {seconds['vae']:.0f} s")
        start = time.perf_counter()
        if clip_job:
            clip, seconds["clip"] = clip_job.result()
            seconds["clip_wait"] = time.perf_counter() - start
        else:
            clip = train_clip(recipe, world_digits, world_labels, tokenizer, log)
            seconds["clip"] = time.perf_counter() - start
        log(f"clip: {seconds['clip']:.0f} s")
        start = time.perf_counter()
        with deterministic(recipe.unet_threads):
            unet = train_unet(recipe, vae, clip.text_model, tokenizer, world_digits, world_labels, log)
        seconds["unet"] = time.perf_counter() - start
        log(f"unet: {seconds['unet']:.0f} s")
        start = time.perf_counter()
        held_out = _eval_set(digits, labels, split["judge"], seed=recipe.seed + 4, n=recipe.eval_digits)
        quality = {"vae_mse": vae_mse(vae, held_out[0]),
                   "clip_retrieval": clip_retrieval(clip, tokenizer, *held_out)}
        seconds["quality"] = time.perf_counter() - start
        start = time.perf_counter()
        save_world(folder, vae, clip, unet)
        seconds["save"] = time.perf_counter() - start
    manifest = {"recipe": asdict(recipe), "recipe_hash": recipe_hash(recipe), "recipe_version": RECIPE_VERSION,
                "libraries": _versions(), "seconds": seconds, "quality": quality, "files": _files(folder)}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


class _ClipJob:
    """``python -m sdi.models.mini_world clip`` in the background: CLIP of recipe, its weights in a file under tmp."""

    def __init__(self, recipe: Recipe, tmp: Path):
        import subprocess
        import sys

        self.out = Path(tempfile.mkdtemp(prefix="clip-", dir=tmp))
        self.log = open(self.out / "log.txt", "w")  # noqa: SIM115 (closed in result())
        # the child imports this very sdi package, wherever it is installed or checked out
        package_root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH"))
                                                            if p)}
        self.proc = subprocess.Popen([sys.executable, "-m", "sdi.models.mini_world", "clip", json.dumps(asdict(recipe)),
                                      str(self.out)], stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def result(self):
        from safetensors.torch import load_file
        from transformers import CLIPModel

        code = self.proc.wait()
        self.log.close()
        if code != 0:
            raise MiniWorldError(f"training the mini CLIP failed (exit {code}); its log:\n"
                                 + (self.out / "log.txt").read_text()[-3000:])
        model = CLIPModel(clip_config(Recipe(**json.loads((self.out / "recipe.json").read_text()))))
        model.load_state_dict(load_file(self.out / "clip.safetensors"))
        seconds = float((self.out / "seconds.txt").read_text())
        shutil.rmtree(self.out, ignore_errors=True)
        return model.eval().requires_grad_(False), seconds


def _exit_with_parent() -> None:
    """End this process when the build that started it is gone (killed), instead of training on as an orphan."""
    import threading

    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _clip_main(recipe_json: str, out: str) -> None:
    from safetensors.torch import save_file

    _exit_with_parent()
    recipe = Recipe(**{k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(recipe_json).items()})
    with deterministic(recipe.threads):
        start = time.perf_counter()
        digits, labels = corpus.load_mnist()
        world = corpus.source_split(labels)["world"]
        model = train_clip(recipe, digits[world], labels[world], _tokenizer())
        seconds = time.perf_counter() - start
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, Path(out) / "clip.safetensors")
    (Path(out) / "recipe.json").write_text(recipe_json)
    (Path(out) / "seconds.txt").write_text(f"{seconds}\n")


def verify_world(folder: str | Path, recipe: Recipe | None = None, *, checksums: bool = True) -> dict:
    """The manifest of a complete world folder, or MiniWorldError naming what is wrong.

    Checks that manifest.json exists and parses, that its recipe hash is recipe's (when given),
    that every file it lists has its size and (checksums=True) its sha256, and that no other
    file is there.
    """
    folder = Path(folder)
    path = folder / MANIFEST
    fix = f"delete {folder} and build it again"
    if not path.is_file():
        raise MiniWorldError(f"{path}: missing, so the build of {folder} never finished; {fix}")
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
    except (ValueError, KeyError) as exc:
        raise MiniWorldError(f"{path}: not a mini world manifest ({exc}); {fix}") from exc
    if recipe is not None and manifest.get("recipe_hash") != recipe_hash(recipe):
        raise MiniWorldError(f"{path}: recipe hash {manifest.get('recipe_hash')} is not this recipe's "
                             f"{recipe_hash(recipe)}; {fix}")
    for rel, want in files.items():
        p = folder / rel
        if not p.is_file():
            raise MiniWorldError(f"{p}: missing from the mini world; {fix}")
        if p.stat().st_size != want["bytes"]:
            raise MiniWorldError(f"{p}: {p.stat().st_size:,} bytes, the manifest says {want['bytes']:,} "
                                 f"(truncated or overwritten); {fix}")
        if checksums and _sha256(p) != want["sha256"]:
            raise MiniWorldError(f"{p}: sha256 differs from the manifest's (corrupt); {fix}")
    extra = sorted(set(_files_quick(folder)) - set(files))
    if extra:
        raise MiniWorldError(f"{folder / extra[0]}: not in the manifest ({len(extra)} such files); {fix}")
    return manifest


def _files_quick(folder: Path) -> list[str]:
    return [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST]


def world_folder(root: str | Path, recipe: Recipe = Recipe()) -> Path:
    """Where :func:`ensure_mini_world` keeps recipe's world: ``{root}/{first 16 hex of the recipe hash}``."""
    return Path(root) / recipe_hash(recipe)[:16]


def ensure_mini_world(root: str | Path, recipe: Recipe = Recipe(), *, rebuild: bool = True,
                      log=print) -> MiniWorld:
    """The world of recipe under root: checked if present, else built (into a temporary folder under
    root, renamed into place only when complete).

    A folder that fails :func:`verify_world` is removed and built again (rebuild=True) or reported
    (MiniWorldError naming the file, rebuild=False). Temporary folders of killed builds
    (``.building-*``) are never read; they are removed once their builder is gone.
    """
    root = Path(root)
    final = world_folder(root, recipe)
    if final.exists():
        try:
            return MiniWorld(final, verify_world(final, recipe))
        except MiniWorldError as exc:
            if not rebuild:
                raise
            log(f"rebuilding the mini world: {exc}")
            shutil.rmtree(final)
    root.mkdir(parents=True, exist_ok=True)
    _remove_dead_builds(root)
    tmp = Path(tempfile.mkdtemp(prefix=f".building-{os.getpid()}-", dir=root))
    try:
        manifest = build_world(tmp / "world", recipe, log)
        try:
            os.rename(tmp / "world", final)
        except OSError:
            if not final.exists():
                raise
            # another build of the same recipe finished first: keep that one
            return MiniWorld(final, verify_world(final, recipe))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return MiniWorld(final, manifest)


def _remove_dead_builds(root: Path) -> None:
    for tmp in root.glob(".building-*"):
        try:
            pid = int(tmp.name.split("-")[1])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, IndexError, PermissionError):
            continue


if __name__ == "__main__":
    import sys

    if len(sys.argv) == 4 and sys.argv[1] == "clip":
        _clip_main(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: python -m sdi.models.mini_world clip RECIPE_JSON OUT_FOLDER (used by build_world)")
