"""The mini world's recipe: everything its weights depend on, and its hash (the world's cache key)."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

RECIPE_VERSION = 2  # bump when the training code changes what a recipe builds


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


# Where each library keeps the version string it reports as ``__version__`` (torch's carries its build,
# e.g. "2.14.1+cu130", which the installed package's metadata leaves out).
_VERSION_FILES = {"torch": "version.py", "diffusers": "__init__.py", "transformers": "__init__.py"}
_VERSION_LINE = re.compile(r"""^__version__\s*(?::\s*str\s*)?=\s*['"]([^'"]+)['"]""", re.MULTILINE)


def library_version(name: str) -> str:
    """``{name}.__version__``, read from the installed package's source when it is not imported yet: the
    recipe hash is computed while Snakemake plans (sdi.config.validation), where importing torch,
    diffusers and transformers would cost seconds of CPU on every call. Imports the library when its
    file does not say."""
    if name not in sys.modules:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            path = Path(next(iter(spec.submodule_search_locations))) / _VERSION_FILES.get(name, "__init__.py")
            found = _VERSION_LINE.search(path.read_text(encoding="utf-8")) if path.is_file() else None
            if found:
                return found.group(1)
    return importlib.import_module(name).__version__


def _versions() -> dict[str, str]:
    return {"torch": library_version("torch"), "diffusers": library_version("diffusers"),
            "transformers": library_version("transformers"), "numpy": np.__version__}


def recipe_hash(recipe: Recipe) -> str:
    """sha256 (hex) of the recipe, RECIPE_VERSION and the library versions that compute the weights."""
    blob = json.dumps({"recipe": asdict(recipe), "version": RECIPE_VERSION, "libraries": _versions()},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()

