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

Modules: :mod:`.recipe` (the recipe and its hash), :mod:`.architectures` (the models' configurations,
the tokenizer), :mod:`.training` (the three training loops, determinism), :mod:`.quality` (the
manifest's quality numbers), :mod:`.store` (saving, the manifest, checking a world folder),
:mod:`.build` (the build, CLIP in a second process, the cached build) and ``__main__`` (that second
process: ``python -m sdi.models.mini_world clip ...``).
"""

import importlib

# name -> the module that defines it, imported on first use (as in sdi/__init__.py): the workflow reads the
# world's folder and checks its manifest while it plans (sdi.config.validation), which needs recipe and
# store only, not torch and diffusers.
_NAMES = {
    "clip_config": "architectures", "unet_config": "architectures", "vae_config": "architectures",
    "build_world": "build", "ensure_mini_world": "build",
    "clip_retrieval": "quality", "vae_mse": "quality",
    "RECIPE_VERSION": "recipe", "MiniWorldError": "recipe", "Recipe": "recipe", "recipe_hash": "recipe",
    "MANIFEST": "store", "MiniWorld": "store", "save_world": "store", "verify_world": "store",
    "world_folder": "store",
    "caption_states": "training", "deterministic": "training", "train_clip": "training", "train_unet": "training",
    "train_vae": "training",
}
__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name in _NAMES:
        value = getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
        globals()[name] = value  # later lookups skip __getattr__
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_NAMES})
